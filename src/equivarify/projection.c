/* The projection p: keeps the identity element's block, so p(F(x)) = h(x). */
#include "equivar/equivarify.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/layer_impl.h"
#include "equivarify/query.h"

typedef struct projection_layer {
    eq_layer base;
    size_t order;
} projection_layer;

static eq_status projection_output_shape(const eq_layer *base, eq_shape in, eq_shape *out)
{
    const projection_layer *layer = (const projection_layer *)base;
    char text[EQ_SHAPE_STR_SIZE];

    if (in.c % layer->order != 0)
        return eq_error(EQ_ERR_SHAPE, "projection(%zu): input %s has %zu channels, expected a multiple of %zu",
                        layer->order, eq_shape_str(in, text), in.c, layer->order);
    *out = eq_shape_make(in.n, in.c / layer->order, in.h, in.w);
    return EQ_OK;
}

static eq_status projection_forward(eq_layer *base, const eq_tensor *x, eq_tensor *y)
{
    (void)base;
    size_t block = y->shape.c * y->shape.h * y->shape.w;
    size_t sample = x->shape.c * x->shape.h * x->shape.w;

    /* Block 0 of each sample is the identity element's branch. */
    for (size_t i = 0; i < x->shape.n; i++)
        memcpy(y->data + i * block, x->data + i * sample, block * sizeof(float));
    return EQ_OK;
}

static eq_status projection_backward(eq_layer *base, const eq_tensor *dy, eq_tensor *dx)
{
    (void)base;
    if (!dx)
        return EQ_OK;

    size_t block = dy->shape.c * dy->shape.h * dy->shape.w;
    size_t sample = dx->shape.c * dx->shape.h * dx->shape.w;
    memset(dx->data, 0, eq_shape_numel(dx->shape) * sizeof(float));
    for (size_t i = 0; i < dx->shape.n; i++)
        memcpy(dx->data + i * sample, dy->data + i * block, block * sizeof(float));
    return EQ_OK;
}

static size_t projection_describe(const eq_layer *base, char *buf, size_t size)
{
    return eq_describe_append(buf, size, 0, "projection(%zu)", ((const projection_layer *)base)->order);
}

static void projection_destroy(eq_layer *base)
{
    free(base);
}

static const eq_layer_ops projection_ops = {
    .kind = "projection",
    .output_shape = projection_output_shape,
    .forward = projection_forward,
    .backward = projection_backward,
    .describe = projection_describe,
    .destroy = projection_destroy,
};

eq_status eq_projection_create(size_t group_order, eq_layer **out)
{
    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_projection_create: out is NULL");
    *out = NULL;
    if (group_order == 0)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_projection_create: group order is 0, expected at least 1");

    projection_layer *layer = calloc(1, sizeof *layer);
    if (!layer)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_projection_create: out of memory");
    eq_layer_base_init(&layer->base, &projection_ops);
    layer->order = group_order;
    *out = &layer->base;
    return EQ_OK;
}

int eq_projection_query(const eq_layer *layer)
{
    return layer && layer->ops == &projection_ops;
}
