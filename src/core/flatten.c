/* Flatten layer: (N, C, H, W) -> (N, C * H * W, 1, 1), floats in the same order. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/layer_impl.h"

/* No state: forward and backward only copy. */
typedef struct flatten {
    eq_layer base;
} flatten;

static eq_status flatten_output_shape(const eq_layer *layer, eq_shape in, eq_shape *out)
{
    char text[EQ_SHAPE_STR_SIZE];

    (void)layer;
    if (eq_shape_numel(in) == 0)
        return eq_error(EQ_ERR_SHAPE, "flatten: input %s has a zero dimension or overflows size_t",
                        eq_shape_str(in, text));

    /* Cannot overflow: N * C * H * W did not. */
    *out = eq_shape_make(in.n, in.c * in.h * in.w, 1, 1);
    return EQ_OK;
}

/* NCHW is contiguous, so the flattened tensor has the input's memory layout
 * and both directions are a plain copy. memmove allows y to be x itself. */
static eq_status flatten_forward(eq_layer *layer, const eq_tensor *x, eq_tensor *y)
{
    (void)layer;
    memmove(y->data, x->data, eq_shape_numel(x->shape) * sizeof(float));
    return EQ_OK;
}

static eq_status flatten_backward(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx)
{
    (void)layer;
    if (dx)
        memmove(dx->data, dy->data, eq_shape_numel(dy->shape) * sizeof(float));
    return EQ_OK;
}

static void flatten_destroy(eq_layer *layer)
{
    free(layer);
}

static const eq_layer_ops flatten_ops = {
    .kind = "flatten",
    .output_shape = flatten_output_shape,
    .forward = flatten_forward,
    .backward = flatten_backward,
    .destroy = flatten_destroy,
};

eq_status eq_flatten_create(eq_layer **out)
{
    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_flatten_create: out is NULL");

    flatten *f = calloc(1, sizeof *f);
    *out = NULL;
    if (!f)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_flatten_create: cannot allocate the layer");
    eq_layer_base_init(&f->base, &flatten_ops);
    *out = &f->base;
    return EQ_OK;
}
