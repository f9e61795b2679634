/* Invariant head: max or mean over the n blocks of a regular feature map. */
#include "equivar/equivarify.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/layer_impl.h"
#include "equivarify/group_impl.h"
#include "equivarify/query.h"

typedef struct invariant_pool_layer {
    eq_layer base;
    eq_group *group;
    eq_pool_kind kind;
    size_t *argmax;   /* (N, B, H, W) winning block per output, max only */
    size_t argmax_capacity;
} invariant_pool_layer;

static eq_status pool_output_shape(const eq_layer *base, eq_shape in, eq_shape *out)
{
    const invariant_pool_layer *layer = (const invariant_pool_layer *)base;
    char text[EQ_SHAPE_STR_SIZE];
    size_t n = layer->group->order;

    if (in.c % n != 0)
        return eq_error(EQ_ERR_SHAPE, "invariant_pool(%s): input %s has %zu channels, expected a multiple of %zu",
                        layer->group->name, eq_shape_str(in, text), in.c, n);
    *out = eq_shape_make(in.n, in.c / n, in.h, in.w);
    return EQ_OK;
}

static int compare_floats(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static eq_status pool_forward(eq_layer *base, const eq_tensor *x, eq_tensor *y)
{
    invariant_pool_layer *layer = (invariant_pool_layer *)base;
    size_t n = layer->group->order;
    size_t block = y->shape.c * y->shape.h * y->shape.w;
    size_t count = eq_shape_numel(y->shape);
    float values[EQ_GROUP_MAX_ORDER];

    if (layer->kind == EQ_POOL_MAX && count > layer->argmax_capacity) {
        free(layer->argmax);
        layer->argmax_capacity = 0;
        layer->argmax = malloc(count * sizeof *layer->argmax);
        if (!layer->argmax)
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "invariant_pool: cannot allocate %zu indices", count);
        layer->argmax_capacity = count;
    }

    for (size_t i = 0; i < y->shape.n; i++) {
        const float *in = x->data + i * n * block;
        float *out = y->data + i * block;
        for (size_t q = 0; q < block; q++) {
            if (layer->kind == EQ_POOL_MAX) {
                /* The maximum value is the same whichever block holds it. */
                size_t best = 0;
                for (size_t g = 1; g < n; g++)
                    if (in[g * block + q] > in[best * block + q])
                        best = g;
                out[q] = in[best * block + q];
                layer->argmax[i * block + q] = best;
                continue;
            }
            /* Adding in ascending order makes the rounding independent of the block order. */
            for (size_t g = 0; g < n; g++)
                values[g] = in[g * block + q];
            qsort(values, n, sizeof values[0], compare_floats);
            float sum = 0.0f;
            for (size_t g = 0; g < n; g++)
                sum += values[g];
            out[q] = sum / (float)n;
        }
    }
    return EQ_OK;
}

static eq_status pool_backward(eq_layer *base, const eq_tensor *dy, eq_tensor *dx)
{
    invariant_pool_layer *layer = (invariant_pool_layer *)base;
    size_t n = layer->group->order;
    size_t block = dy->shape.c * dy->shape.h * dy->shape.w;

    if (!dx)
        return EQ_OK;
    memset(dx->data, 0, eq_shape_numel(dx->shape) * sizeof(float));
    for (size_t i = 0; i < dy->shape.n; i++) {
        const float *grad = dy->data + i * block;
        float *out = dx->data + i * n * block;
        for (size_t q = 0; q < block; q++) {
            if (layer->kind == EQ_POOL_MAX) {
                out[layer->argmax[i * block + q] * block + q] = grad[q];
                continue;
            }
            for (size_t g = 0; g < n; g++)
                out[g * block + q] = grad[q] / (float)n;
        }
    }
    return EQ_OK;
}

static size_t pool_describe(const eq_layer *base, char *buf, size_t size)
{
    const invariant_pool_layer *layer = (const invariant_pool_layer *)base;
    return eq_describe_append(buf, size, 0, "invariant_pool(%s, %s)", layer->group->name,
                              layer->kind == EQ_POOL_MAX ? "max" : "mean");
}

static void pool_destroy(eq_layer *base)
{
    invariant_pool_layer *layer = (invariant_pool_layer *)base;

    eq_group_destroy(layer->group);
    free(layer->argmax);
    free(layer);
}

static const eq_layer_ops invariant_pool_ops = {
    .kind = "invariant_pool",
    .output_shape = pool_output_shape,
    .forward = pool_forward,
    .backward = pool_backward,
    .describe = pool_describe,
    .destroy = pool_destroy,
};

eq_status eq_invariant_pool_create(const eq_group *group, eq_pool_kind kind, eq_layer **out)
{
    if (out)
        *out = NULL;
    if (!group || !out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_invariant_pool_create: group or out is NULL");
    if (kind != EQ_POOL_MAX && kind != EQ_POOL_MEAN)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_invariant_pool_create: unknown pool kind %d, expected max or mean",
                        (int)kind);

    invariant_pool_layer *layer = calloc(1, sizeof *layer);
    if (!layer)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_invariant_pool_create: out of memory");
    eq_layer_base_init(&layer->base, &invariant_pool_ops);
    layer->kind = kind;
    eq_status status = eq_group_clone(group, &layer->group);
    if (status != EQ_OK) {
        free(layer);
        return status;
    }
    *out = &layer->base;
    return EQ_OK;
}

int eq_invariant_pool_query(const eq_layer *base, const eq_group **group)
{
    if (!base || base->ops != &invariant_pool_ops)
        return 0;
    *group = ((const invariant_pool_layer *)base)->group;
    return 1;
}
