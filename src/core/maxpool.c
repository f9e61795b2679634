/* Max-pooling layer over square windows, with the argmax cached for backward. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/layer_impl.h"

/* Long enough for any description: three size_t values and the fixed text. */
#define DESCRIPTION_SIZE 128

typedef struct maxpool {
    eq_layer base;
    size_t size, stride;
    /* (N, C, OH, OW): offset ih * W + iw of each window's maximum in its
     * (H, W) input plane. Planes are limited to UINT32_MAX positions. */
    uint32_t *argmax;
    size_t argmax_capacity;
} maxpool;

static size_t maxpool_describe(const eq_layer *layer, char *buf, size_t size)
{
    const maxpool *pool = (const maxpool *)layer;

    return eq_describe_append(buf, size, 0, "maxpool(%zux%zu, stride %zu)", pool->size, pool->size,
                              pool->stride);
}

static eq_status maxpool_output_shape(const eq_layer *layer, eq_shape in, eq_shape *out)
{
    const maxpool *pool = (const maxpool *)layer;
    char name[DESCRIPTION_SIZE], text[EQ_SHAPE_STR_SIZE];
    size_t plane;

    maxpool_describe(layer, name, sizeof name);
    if (eq_shape_numel(in) == 0)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s has a zero dimension or overflows size_t", name,
                        eq_shape_str(in, text));
    if (in.h < pool->size || in.w < pool->size)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s is smaller than the %zux%zu window", name,
                        eq_shape_str(in, text), pool->size, pool->size);
    plane = in.h * in.w; /* cannot overflow: N * C * H * W did not */
    if (plane > UINT32_MAX)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s has %zu positions per channel, at most %lu are supported",
                        name, eq_shape_str(in, text), plane, (unsigned long)UINT32_MAX);

    *out = eq_shape_make(in.n, in.c, (in.h - pool->size) / pool->stride + 1,
                         (in.w - pool->size) / pool->stride + 1);
    return EQ_OK;
}

/* Finds the maximum of the window whose top-left corner is at offset
 * `corner` of the plane x_c (row length W). Ties go to the first maximum in
 * row-major window order, and a NaN wins over any number, so it reaches the
 * output. Returns the plane offset of the maximum. */
static uint32_t window_argmax(const float *x_c, size_t w, size_t corner, size_t size)
{
    size_t best_at = corner;
    float best = x_c[corner];

    for (size_t kh = 0; kh < size; kh++) {
        const float *row = x_c + corner + kh * w;
        for (size_t kw = 0; kw < size; kw++) {
            float v = row[kw];
            if (v > best || (v != v && best == best)) {
                best = v;
                best_at = corner + kh * w + kw;
            }
        }
    }
    return (uint32_t)best_at;
}

static eq_status maxpool_forward(eq_layer *layer, const eq_tensor *x, eq_tensor *y)
{
    maxpool *pool = (maxpool *)layer;
    const eq_shape in = x->shape, out = y->shape;
    const size_t plane = in.h * in.w;
    const size_t out_plane = out.h * out.w;
    const size_t count = eq_shape_numel(out);

    if (count > pool->argmax_capacity) {
        free(pool->argmax);
        pool->argmax = malloc(count * sizeof *pool->argmax);
        pool->argmax_capacity = pool->argmax ? count : 0;
        if (!pool->argmax)
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "maxpool: cannot allocate the argmax buffer of %zu entries",
                            count);
    }

    for (size_t nc = 0; nc < in.n * in.c; nc++) {
        const float *x_nc = x->data + nc * plane;
        float *y_nc = y->data + nc * out_plane;
        uint32_t *argmax_nc = pool->argmax + nc * out_plane;
        for (size_t oh = 0; oh < out.h; oh++) {
            for (size_t ow = 0; ow < out.w; ow++) {
                size_t corner = oh * pool->stride * in.w + ow * pool->stride;
                uint32_t at = window_argmax(x_nc, in.w, corner, pool->size);
                argmax_nc[oh * out.w + ow] = at;
                y_nc[oh * out.w + ow] = x_nc[at];
            }
        }
    }
    return EQ_OK;
}

static eq_status maxpool_backward(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx)
{
    maxpool *pool = (maxpool *)layer;

    if (!dx)
        return EQ_OK;

    const size_t plane = dx->shape.h * dx->shape.w;
    const size_t out_plane = dy->shape.h * dy->shape.w;
    memset(dx->data, 0, eq_shape_numel(dx->shape) * sizeof(float));

    /* Overlapping windows (stride < size) can share a maximum, hence +=. */
    for (size_t nc = 0; nc < dx->shape.n * dx->shape.c; nc++) {
        float *dx_nc = dx->data + nc * plane;
        const float *dy_nc = dy->data + nc * out_plane;
        const uint32_t *argmax_nc = pool->argmax + nc * out_plane;
        for (size_t o = 0; o < out_plane; o++)
            dx_nc[argmax_nc[o]] += dy_nc[o];
    }
    return EQ_OK;
}

static void maxpool_destroy(eq_layer *layer)
{
    maxpool *pool = (maxpool *)layer;

    free(pool->argmax);
    free(pool);
}

static const eq_layer_ops maxpool_ops = {
    .kind = "maxpool",
    .output_shape = maxpool_output_shape,
    .forward = maxpool_forward,
    .backward = maxpool_backward,
    .describe = maxpool_describe,
    .destroy = maxpool_destroy,
};

eq_status eq_maxpool_create(size_t size, size_t stride, eq_layer **out)
{
    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_maxpool_create: out is NULL");
    *out = NULL;
    if (size == 0 || stride == 0)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_maxpool_create: size %zu and stride %zu must both be positive",
                        size, stride);

    maxpool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_maxpool_create: cannot allocate the layer");
    eq_layer_base_init(&pool->base, &maxpool_ops);
    pool->size = size;
    pool->stride = stride;
    *out = &pool->base;
    return EQ_OK;
}
