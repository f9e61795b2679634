/* ReLU layer: elementwise max(x, 0). */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/layer_impl.h"

typedef struct relu {
    eq_layer base;
    const float *x; /* input of the last forward, owned by the caller */
} relu;

static eq_status relu_output_shape(const eq_layer *layer, eq_shape in, eq_shape *out)
{
    char text[EQ_SHAPE_STR_SIZE];

    (void)layer;
    if (eq_shape_numel(in) == 0)
        return eq_error(EQ_ERR_SHAPE, "relu: input %s has a zero dimension or overflows size_t",
                        eq_shape_str(in, text));
    *out = in;
    return EQ_OK;
}

static eq_status relu_forward(eq_layer *layer, const eq_tensor *x, eq_tensor *y)
{
    relu *r = (relu *)layer;
    const size_t count = eq_shape_numel(x->shape);
    const float *in = x->data;
    float *out = y->data;

    r->x = x->data;

    /* A NaN fails `< 0` and passes through, so the loss can report it. */
    for (size_t i = 0; i < count; i++)
        out[i] = in[i] < 0.0f ? 0.0f : in[i];
    return EQ_OK;
}

static eq_status relu_backward(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx)
{
    relu *r = (relu *)layer;

    if (!dx)
        return EQ_OK;

    /* The derivative at x == 0 is taken as 0. */
    const size_t count = eq_shape_numel(dy->shape);
    const float *x = r->x;
    const float *grad_out = dy->data;
    float *grad_in = dx->data;
    for (size_t i = 0; i < count; i++)
        grad_in[i] = x[i] > 0.0f ? grad_out[i] : 0.0f;
    return EQ_OK;
}

static void relu_destroy(eq_layer *layer)
{
    free(layer);
}

static const eq_layer_ops relu_ops = {
    .kind = "relu",
    .output_shape = relu_output_shape,
    .forward = relu_forward,
    .backward = relu_backward,
    .destroy = relu_destroy,
};

eq_status eq_relu_create(eq_layer **out)
{
    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_relu_create: out is NULL");

    relu *r = calloc(1, sizeof *r);
    *out = NULL;
    if (!r)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_relu_create: cannot allocate the layer");
    eq_layer_base_init(&r->base, &relu_ops);
    *out = &r->base;
    return EQ_OK;
}
