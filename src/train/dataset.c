/* Validation of labelled sets against a network, and the wall clock. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <time.h>

#include "core/error.h"
#include "train/train_internal.h"

eq_status eq_train_check_set(const char *caller, eq_layer *network, const eq_labelled_set *data,
                             size_t batch_size, size_t *classes, size_t *image_size)
{
    char in_text[EQ_SHAPE_STR_SIZE], out_text[EQ_SHAPE_STR_SIZE];

    if (!network || !data)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: network or data is NULL", caller);
    if (!data->images || !data->labels)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: data->images or data->labels is NULL", caller);
    if (data->count == 0)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: the data set is empty (count 0)", caller);
    if (batch_size == 0)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: batch size is 0, expected at least 1", caller);

    eq_shape image = eq_shape_make(1, data->channels, data->height, data->width);
    if (data->channels == 0 || data->height == 0 || data->width == 0)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: image shape %s has a zero dimension",
                        caller, eq_shape_str(image, in_text));
    size_t per_image = eq_shape_numel(image);
    size_t total;
    if (per_image == 0 || !eq_size_mul(per_image, data->count, &total)
        || !eq_size_mul(per_image, batch_size, &total))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: %zu images of shape %s or a batch of %zu overflow size_t",
                        caller, data->count, eq_shape_str(image, in_text), batch_size);

    /* The output shape must not depend on the batch size beyond N, so one
     * query with the full batch covers the smaller last batch too. */
    eq_shape batch = eq_shape_make(batch_size, data->channels, data->height, data->width);
    eq_shape out;
    eq_status status = eq_layer_output_shape(network, batch, &out);
    if (status != EQ_OK) {
        char cause[512];
        snprintf(cause, sizeof cause, "%s", eq_last_error());
        return eq_error(status, "%s: images of shape %s do not fit the network: %s",
                        caller, eq_shape_str(batch, in_text), cause);
    }
    if (out.n != batch_size || out.c == 0 || out.h != 1 || out.w != 1)
        return eq_error(EQ_ERR_SHAPE, "%s: the network maps %s to %s, expected logits of shape (%zu, K, 1, 1)",
                        caller, eq_shape_str(batch, in_text), eq_shape_str(out, out_text), batch_size);
    if (out.c > INT32_MAX)
        return eq_error(EQ_ERR_SHAPE, "%s: the network has %zu outputs, more than int32 labels can name",
                        caller, out.c);

    for (size_t i = 0; i < data->count; i++) {
        int32_t label = data->labels[i];
        if (label < 0 || (size_t)label >= out.c)
            return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: label %d of image %zu is outside [0, %zu), the network's outputs",
                            caller, (int)label, i, out.c);
    }

    *classes = out.c;
    *image_size = per_image;
    return EQ_OK;
}

double eq_train_now_seconds(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}
