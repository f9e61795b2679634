/* Max-pooling layer over square windows, with the argmax cached for backward. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/layer_impl.h"
#include "core/parallel.h"

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

/* Input floats per parallel task: enough to repay waking a thread. */
#define POOL_GRAIN_FLOATS 16384

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

/* Returns whether v replaces best as the window's running maximum: a larger
 * number, or the first NaN, so a NaN reaches the output. Ties keep the
 * earlier element. */
static inline int takes_over(float v, float best)
{
    return (v > best) | ((v != v) & (best == best));
}

/* Finds the maximum of the window whose top-left corner is at offset
 * `corner` of the plane x_c (row length W), scanning in row-major window
 * order. Returns the plane offset of the maximum. */
static uint32_t window_argmax(const float *x_c, size_t w, size_t corner, size_t size)
{
    size_t best_at = corner;
    float best = x_c[corner];

    for (size_t kh = 0; kh < size; kh++) {
        const float *row = x_c + corner + kh * w;
        for (size_t kw = 0; kw < size; kw++) {
            float v = row[kw];
            int take = takes_over(v, best);
            best = take ? v : best;
            best_at = take ? corner + kh * w + kw : best_at;
        }
    }
    return (uint32_t)best_at;
}

#if defined(__x86_64__)
/* The SSE2 code below, which every x86-64 CPU runs, pools four windows at
 * a time: lane l computes window ow + l with the scan order, tie rule and
 * NaN rule of window_argmax, and selects without branches. */

/* Replaces best by v where take is set, in both the values and their
 * offsets. */
static inline void select_sse2(__m128 take, __m128 v, __m128i at, __m128 *best, __m128i *best_at)
{
    __m128i take_i = _mm_castps_si128(take);

    *best = _mm_or_ps(_mm_and_ps(take, v), _mm_andnot_ps(take, *best));
    *best_at = _mm_or_si128(_mm_and_si128(take_i, at), _mm_andnot_si128(take_i, *best_at));
}

/* Returns the lanes where v replaces best (see takes_over). */
static inline __m128 takes_over_sse2(__m128 v, __m128 best)
{
    return _mm_or_ps(_mm_cmpgt_ps(v, best), _mm_and_ps(_mm_cmpunord_ps(v, v), _mm_cmpord_ps(best, best)));
}

/* The 2 x 2, stride 2 case of pool4_sse2: two loads per input row give
 * four windows, split into their even and odd columns by shuffles. */
static inline void pool4_2x2_sse2(const float *x_c, size_t w, size_t c0, float *y, uint32_t *argmax)
{
    const float *top = x_c + c0, *bottom = top + w;
    __m128 top_a = _mm_loadu_ps(top), top_b = _mm_loadu_ps(top + 4);
    __m128 bottom_a = _mm_loadu_ps(bottom), bottom_b = _mm_loadu_ps(bottom + 4);
    __m128i at = _mm_add_epi32(_mm_set1_epi32((int)c0), _mm_setr_epi32(0, 2, 4, 6));
    __m128i one = _mm_set1_epi32(1), below = _mm_set1_epi32((int)w);

    /* Row-major window order: top-left, top-right, bottom-left, bottom-right. */
    __m128 best = _mm_shuffle_ps(top_a, top_b, _MM_SHUFFLE(2, 0, 2, 0));
    __m128i best_at = at;
    __m128 v = _mm_shuffle_ps(top_a, top_b, _MM_SHUFFLE(3, 1, 3, 1));
    select_sse2(takes_over_sse2(v, best), v, _mm_add_epi32(at, one), &best, &best_at);
    v = _mm_shuffle_ps(bottom_a, bottom_b, _MM_SHUFFLE(2, 0, 2, 0));
    select_sse2(takes_over_sse2(v, best), v, _mm_add_epi32(at, below), &best, &best_at);
    v = _mm_shuffle_ps(bottom_a, bottom_b, _MM_SHUFFLE(3, 1, 3, 1));
    select_sse2(takes_over_sse2(v, best), v, _mm_add_epi32(_mm_add_epi32(at, below), one), &best, &best_at);

    _mm_storeu_ps(y, best);
    _mm_storeu_si128((__m128i *)argmax, best_at);
}

/* Pools the four windows whose top-left corners are c0 + l * stride. */
static inline void pool4_sse2(const float *x_c, size_t w, size_t c0, size_t size, size_t stride, float *y,
                              uint32_t *argmax)
{
    const size_t c1 = c0 + stride, c2 = c1 + stride, c3 = c2 + stride;
    __m128 best = _mm_set_ps(x_c[c3], x_c[c2], x_c[c1], x_c[c0]);
    __m128i best_at = _mm_set_epi32((int)c3, (int)c2, (int)c1, (int)c0);

    for (size_t kh = 0; kh < size; kh++) {
        for (size_t kw = kh == 0 ? 1 : 0; kw < size; kw++) {
            const size_t off = kh * w + kw;
            __m128 v = _mm_set_ps(x_c[c3 + off], x_c[c2 + off], x_c[c1 + off], x_c[c0 + off]);
            __m128i at = _mm_set_epi32((int)(c3 + off), (int)(c2 + off), (int)(c1 + off), (int)(c0 + off));
            select_sse2(takes_over_sse2(v, best), v, at, &best, &best_at);
        }
    }
    _mm_storeu_ps(y, best);
    _mm_storeu_si128((__m128i *)argmax, best_at);
}

/* Pools a whole output row of at least four windows. A width that is not
 * a multiple of four ends with a group that overlaps the previous one. A
 * window depends on its own inputs only, so one done twice gets the same
 * bits, and no window takes the slower, branchy scalar loop. */
static void pool_row_sse2(const float *x_c, size_t w, size_t row_corner, size_t ow_count, size_t size,
                          size_t stride, float *y_row, uint32_t *argmax_row)
{
    const int two_by_two = size == 2 && stride == 2;

    for (size_t ow = 0;; ow += 4) {
        if (ow + 4 > ow_count)
            ow = ow_count - 4;
        if (two_by_two)
            pool4_2x2_sse2(x_c, w, row_corner + 2 * ow, y_row + ow, argmax_row + ow);
        else
            pool4_sse2(x_c, w, row_corner + ow * stride, size, stride, y_row + ow, argmax_row + ow);
        if (ow + 4 == ow_count)
            return;
    }
}
#endif

typedef struct pool_task {
    const maxpool *pool;
    eq_shape in, out;
    const float *x; /* forward input */
    float *y;       /* forward output */
    const float *dy;
    float *dx;
} pool_task;

/* Pools planes [begin, end) of the (N * C) input planes. */
static void forward_planes(void *ctx, size_t begin, size_t end)
{
    const pool_task *task = ctx;
    const maxpool *pool = task->pool;
    const size_t plane = task->in.h * task->in.w;
    const size_t out_plane = task->out.h * task->out.w;

    for (size_t nc = begin; nc < end; nc++) {
        const float *x_nc = task->x + nc * plane;
        float *y_nc = task->y + nc * out_plane;
        uint32_t *argmax_nc = pool->argmax + nc * out_plane;

        for (size_t oh = 0; oh < task->out.h; oh++) {
#if defined(__x86_64__)
            if (task->out.w >= 4) {
                pool_row_sse2(x_nc, task->in.w, oh * pool->stride * task->in.w, task->out.w, pool->size,
                              pool->stride, y_nc + oh * task->out.w, argmax_nc + oh * task->out.w);
                continue;
            }
#endif
            for (size_t ow = 0; ow < task->out.w; ow++) {
                size_t corner = oh * pool->stride * task->in.w + ow * pool->stride;
                uint32_t at = window_argmax(x_nc, task->in.w, corner, pool->size);
                argmax_nc[oh * task->out.w + ow] = at;
                y_nc[oh * task->out.w + ow] = x_nc[at];
            }
        }
    }
}

/* Planes per task, so that a task reads at least POOL_GRAIN_FLOATS. */
static size_t plane_grain(size_t plane)
{
    return plane >= POOL_GRAIN_FLOATS ? 1 : POOL_GRAIN_FLOATS / plane;
}

static eq_status maxpool_forward(eq_layer *layer, const eq_tensor *x, eq_tensor *y)
{
    maxpool *pool = (maxpool *)layer;
    const eq_shape in = x->shape, out = y->shape;
    const size_t count = eq_shape_numel(out);

    if (count > pool->argmax_capacity) {
        free(pool->argmax);
        pool->argmax = malloc(count * sizeof *pool->argmax);
        pool->argmax_capacity = pool->argmax ? count : 0;
        if (!pool->argmax)
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "maxpool: cannot allocate the argmax buffer of %zu entries",
                            count);
    }

    pool_task task = { .pool = pool, .in = in, .out = out, .x = x->data, .y = y->data };
    eq_parallel_for(in.n * in.c, plane_grain(in.h * in.w), forward_planes, &task);
    return EQ_OK;
}

#if defined(__x86_64__)
/* Writes the 2 x 8 input block under windows ow to ow + 3 of output row
 * oh of a 2 x 2, stride 2 pooling: each element gets 0 + dy where it is its
 * window's maximum and zero elsewhere, in one pass instead of zeroing and
 * adding. The + 0 turns a dy of -0 into +0, as adding it to a zeroed
 * gradient does. */
static inline void unpool4_2x2_sse2(float *dx_c, size_t w, size_t oh, size_t ow, const float *dy_row,
                                    const uint32_t *argmax_row)
{
    const size_t c0 = 2 * oh * w + 2 * ow;
    __m128 grad = _mm_loadu_ps(dy_row + ow);
    __m128i at = _mm_loadu_si128((const __m128i *)(argmax_row + ow));
    __m128i tl = _mm_add_epi32(_mm_set1_epi32((int)c0), _mm_setr_epi32(0, 2, 4, 6));
    __m128i one = _mm_set1_epi32(1), below = _mm_set1_epi32((int)w);
    __m128i bl = _mm_add_epi32(tl, below);
    grad = _mm_add_ps(_mm_setzero_ps(), grad);

    __m128 v_tl = _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(at, tl)), grad);
    __m128 v_tr = _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(at, _mm_add_epi32(tl, one))), grad);
    __m128 v_bl = _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(at, bl)), grad);
    __m128 v_br = _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(at, _mm_add_epi32(bl, one))), grad);

    float *top = dx_c + c0, *bottom = top + w;
    _mm_storeu_ps(top, _mm_unpacklo_ps(v_tl, v_tr));
    _mm_storeu_ps(top + 4, _mm_unpackhi_ps(v_tl, v_tr));
    _mm_storeu_ps(bottom, _mm_unpacklo_ps(v_bl, v_br));
    _mm_storeu_ps(bottom + 4, _mm_unpackhi_ps(v_bl, v_br));
}

/* The input gradient of one plane of a 2 x 2, stride 2 pooling. The
 * windows do not overlap, so every element is written once, except that a
 * row width not a multiple of four ends with a group overlapping the
 * previous one, which writes the same values again. */
static void unpool_plane_2x2(float *dx_c, const pool_task *task, const float *dy_c, const uint32_t *argmax_c)
{
    const size_t w = task->in.w, oh_count = task->out.h, ow_count = task->out.w;

    for (size_t oh = 0; oh < oh_count; oh++) {
        const float *dy_row = dy_c + oh * ow_count;
        const uint32_t *argmax_row = argmax_c + oh * ow_count;

        if (ow_count < 4) {
            memset(dx_c + 2 * oh * w, 0, 2 * w * sizeof(float));
            for (size_t ow = 0; ow < ow_count; ow++)
                dx_c[argmax_row[ow]] = 0.0f + dy_row[ow];
            continue;
        }
        for (size_t ow = 0;; ow += 4) {
            if (ow + 4 > ow_count)
                ow = ow_count - 4;
            unpool4_2x2_sse2(dx_c, w, oh, ow, dy_row, argmax_row);
            if (ow + 4 == ow_count)
                break;
        }
        /* An odd last column is in no window. */
        if (w > 2 * ow_count) {
            dx_c[2 * oh * w + w - 1] = 0.0f;
            dx_c[(2 * oh + 1) * w + w - 1] = 0.0f;
        }
    }

    /* An odd last row is in no window. */
    memset(dx_c + 2 * oh_count * w, 0, (task->in.h - 2 * oh_count) * w * sizeof(float));
}
#endif

/* Writes the input gradient of planes [begin, end): zero except at each
 * window's maximum. Overlapping windows (stride < size) can share a
 * maximum, hence +=. */
static void backward_planes(void *ctx, size_t begin, size_t end)
{
    const pool_task *task = ctx;
    const size_t plane = task->in.h * task->in.w;
    const size_t out_plane = task->out.h * task->out.w;

#if defined(__x86_64__)
    if (task->pool->size == 2 && task->pool->stride == 2) {
        for (size_t nc = begin; nc < end; nc++)
            unpool_plane_2x2(task->dx + nc * plane, task, task->dy + nc * out_plane,
                             task->pool->argmax + nc * out_plane);
        return;
    }
#endif

    memset(task->dx + begin * plane, 0, (end - begin) * plane * sizeof(float));
    for (size_t nc = begin; nc < end; nc++) {
        float *dx_nc = task->dx + nc * plane;
        const float *dy_nc = task->dy + nc * out_plane;
        const uint32_t *argmax_nc = task->pool->argmax + nc * out_plane;
        for (size_t o = 0; o < out_plane; o++)
            dx_nc[argmax_nc[o]] += dy_nc[o];
    }
}

static eq_status maxpool_backward(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx)
{
    maxpool *pool = (maxpool *)layer;

    if (!dx)
        return EQ_OK;

    pool_task task = { .pool = pool, .in = dx->shape, .out = dy->shape, .dy = dy->data, .dx = dx->data };
    eq_parallel_for(dx->shape.n * dx->shape.c, plane_grain(dx->shape.h * dx->shape.w), backward_planes, &task);
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
