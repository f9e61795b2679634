/* Evaluation: batched forward passes, argmax and per-class accuracy. */
#include "equivar/train.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "equivar/loss.h"
#include "train/train_internal.h"

void eq_eval_result_destroy(eq_eval_result *result)
{
    if (!result)
        return;
    free(result->class_count);
    free(result->class_correct);
    free(result);
}

double eq_eval_class_accuracy(const eq_eval_result *result, size_t k)
{
    if (!result || k >= result->classes || result->class_count[k] == 0)
        return 0.0;
    return (double)result->class_correct[k] / (double)result->class_count[k];
}

static eq_eval_result *alloc_result(size_t classes)
{
    eq_eval_result *result = calloc(1, sizeof *result);

    if (!result)
        return NULL;
    result->classes = classes;
    result->class_count = calloc(classes, sizeof(size_t));
    result->class_correct = calloc(classes, sizeof(size_t));
    if (!result->class_count || !result->class_correct) {
        eq_eval_result_destroy(result);
        return NULL;
    }
    return result;
}

eq_status eq_evaluate(eq_layer *network, const eq_labelled_set *data, size_t batch_size,
                      int32_t *predictions, eq_eval_result **out)
{
    size_t classes, image_size, logit_count, x_count;

    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_evaluate: out is NULL");
    *out = NULL;
    eq_status status = eq_train_check_set("eq_evaluate", network, data, batch_size, &classes, &image_size);
    if (status != EQ_OK)
        return status;
    if (!eq_size_mul(batch_size, classes, &logit_count) || !eq_size_mul(batch_size, image_size, &x_count))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_evaluate: a batch of %zu overflows size_t", batch_size);

    eq_eval_result *result = alloc_result(classes);
    float *images = eq_alloc_floats(x_count);     /* (B, C, H, W) */
    float *logits = eq_alloc_floats(logit_count); /* (B, K, 1, 1) */
    int32_t *batch_predictions = malloc(batch_size * sizeof(int32_t));
    if (!result || !images || !logits || !batch_predictions) {
        eq_eval_result_destroy(result);
        eq_free(images);
        eq_free(logits);
        free(batch_predictions);
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_evaluate: cannot allocate buffers for batches of %zu images",
                        batch_size);
    }

    for (size_t start = 0; start < data->count; start += batch_size) {
        size_t size = data->count - start < batch_size ? data->count - start : batch_size;

        /* Copied, not viewed in place, because tensors are 64-byte aligned
         * and the caller's images need not be. */
        memcpy(images, data->images + start * image_size, size * image_size * sizeof(float));
        eq_tensor x = { eq_shape_make(size, data->channels, data->height, data->width), images };
        eq_tensor y = { eq_shape_make(size, classes, 1, 1), logits };

        status = eq_layer_forward(network, &x, &y);
        if (status == EQ_OK)
            status = eq_argmax(&y, batch_predictions);
        if (status != EQ_OK)
            break;

        for (size_t i = 0; i < size; i++) {
            int32_t label = data->labels[start + i];
            int correct = batch_predictions[i] == label;
            result->class_count[label]++;
            result->class_correct[label] += (size_t)correct;
            result->correct += (size_t)correct;
        }
        if (predictions)
            memcpy(predictions + start, batch_predictions, size * sizeof(int32_t));
    }

    eq_free(images);
    eq_free(logits);
    free(batch_predictions);
    if (status != EQ_OK) {
        eq_eval_result_destroy(result);
        return status;
    }
    result->count = data->count;
    result->accuracy = (double)result->correct / (double)data->count;
    *out = result;
    return EQ_OK;
}
