/* Generic layer functions: argument and shape checks around the vtable. */
#include "core/layer_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"

void eq_layer_base_init(eq_layer *layer, const eq_layer_ops *ops)
{
    memset(layer, 0, sizeof *layer);
    layer->ops = ops;
}

size_t eq_describe_append(char *buf, size_t size, size_t used, const char *format, ...)
{
    va_list args;
    char *dest = NULL;
    size_t room = 0;

    if (used < size) {
        dest = buf + used;
        room = size - used;
    }
    va_start(args, format);
    int written = vsnprintf(dest, room, format, args);
    va_end(args);
    return written > 0 ? used + (size_t)written : used;
}

eq_status eq_layer_output_shape(const eq_layer *layer, eq_shape in, eq_shape *out)
{
    if (!layer || !out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_layer_output_shape: layer or out is NULL");
    return layer->ops->output_shape(layer, in, out);
}

eq_status eq_layer_forward(eq_layer *layer, const eq_tensor *x, eq_tensor *y)
{
    char have[EQ_SHAPE_STR_SIZE], want[EQ_SHAPE_STR_SIZE], in[EQ_SHAPE_STR_SIZE];
    eq_shape expected;

    if (!layer || !x || !y || !x->data || !y->data)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_layer_forward: layer, x or y is NULL");

    eq_status status = layer->ops->output_shape(layer, x->shape, &expected);
    if (status != EQ_OK)
        return status;
    if (!eq_shape_equal(expected, y->shape))
        return eq_error(EQ_ERR_SHAPE, "%s forward: output tensor has shape %s, expected %s for input %s",
                        layer->ops->kind, eq_shape_str(y->shape, have), eq_shape_str(expected, want),
                        eq_shape_str(x->shape, in));

    layer->has_forward = 0;
    status = layer->ops->forward(layer, x, y);
    if (status != EQ_OK)
        return status;
    layer->in_shape = x->shape;
    layer->out_shape = y->shape;
    layer->has_forward = 1;
    return EQ_OK;
}

eq_status eq_layer_backward(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx)
{
    char have[EQ_SHAPE_STR_SIZE], want[EQ_SHAPE_STR_SIZE];

    if (!layer || !dy || !dy->data || (dx && !dx->data))
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_layer_backward: layer or dy is NULL");
    if (!layer->has_forward)
        return eq_error(EQ_ERR_STATE, "%s backward: no forward call to differentiate; call eq_layer_forward first",
                        layer->ops->kind);
    if (!eq_shape_equal(dy->shape, layer->out_shape))
        return eq_error(EQ_ERR_SHAPE, "%s backward: dy has shape %s, expected the forward output shape %s",
                        layer->ops->kind, eq_shape_str(dy->shape, have), eq_shape_str(layer->out_shape, want));
    if (dx && !eq_shape_equal(dx->shape, layer->in_shape))
        return eq_error(EQ_ERR_SHAPE, "%s backward: dx has shape %s, expected the forward input shape %s",
                        layer->ops->kind, eq_shape_str(dx->shape, have), eq_shape_str(layer->in_shape, want));
    return layer->ops->backward(layer, dy, dx);
}

size_t eq_layer_param_count(const eq_layer *layer)
{
    if (!layer || !layer->ops->param_count)
        return 0;
    return layer->ops->param_count(layer);
}

eq_status eq_layer_param(eq_layer *layer, size_t index, eq_param *out)
{
    if (!layer || !out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_layer_param: layer or out is NULL");
    size_t count = eq_layer_param_count(layer);
    if (index >= count)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_layer_param: index %zu out of range, the %s layer has %zu parameters",
                        index, layer->ops->kind, count);
    *out = layer->ops->param(layer, index);
    return EQ_OK;
}

void eq_layer_zero_grad(eq_layer *layer)
{
    size_t count = eq_layer_param_count(layer);

    for (size_t i = 0; i < count; i++) {
        eq_param param = layer->ops->param(layer, i);
        memset(param.grad, 0, param.count * sizeof(float));
    }
}

void eq_layer_init_he(eq_layer *layer, eq_rng *rng)
{
    if (layer && rng && layer->ops->init_he)
        layer->ops->init_he(layer, rng);
}

const char *eq_layer_kind(const eq_layer *layer)
{
    return layer ? layer->ops->kind : "(null)";
}

size_t eq_layer_describe(const eq_layer *layer, char *buf, size_t size)
{
    if (!layer)
        return eq_describe_append(buf, size, 0, "(null)");
    if (!layer->ops->describe)
        return eq_describe_append(buf, size, 0, "%s", layer->ops->kind);
    return layer->ops->describe(layer, buf, size);
}

void eq_layer_destroy(eq_layer *layer)
{
    if (layer)
        layer->ops->destroy(layer);
}
