/* 2-d convolution layer: im2col + GEMM forward, GEMM + col2im backward. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/gemm.h"
#include "core/im2col.h"
#include "core/layer_impl.h"

/* Maximum size of the column buffer in floats (4 MiB). The batch is lowered
 * one chunk of whole images at a time, so memory stays bounded for any batch
 * size. An image whose column matrix alone is larger is split into tiles of
 * output positions, with tile sizes that depend only on the layer and the
 * image size. */
#define COLS_BUDGET ((size_t)1 << 20)

/* Long enough for any description: six size_t values and the fixed text. */
#define DESCRIPTION_SIZE 192

typedef struct conv2d {
    eq_layer base;
    size_t ic, oc, kh, kw, stride, pad;
    size_t k;                /* IC * KH * KW, the GEMM reduction length */
    float *weight, *dweight; /* (OC, IC, KH, KW), also read as (OC, K) */
    float *bias, *dbias;     /* (OC) */

    /* Cached by forward for backward. */
    const float *x;          /* (N, IC, H, W), owned by the caller */
    size_t n;
    eq_conv_geom geom;
    size_t images_per_chunk; /* whole images per chunk, 1 when tiled */
    size_t tile;             /* output positions per image in a chunk */
    int cols_cached;         /* cols contains the column matrix of the whole batch */

    float *cols;             /* (K, chunk columns) */
    size_t cols_capacity;
    float *chunk_out;        /* (OC, chunk columns): GEMM output, or the chunk's dy */
    size_t chunk_out_capacity;
} conv2d;

/* One chunk: output positions [p0, p1) of images [n0, n0 + count). Its
 * columns are image-major, count * (p1 - p0) of them. */
typedef struct chunk {
    size_t n0, count, p0, p1;
} chunk;

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

static size_t conv2d_describe(const eq_layer *layer, char *buf, size_t size)
{
    const conv2d *conv = (const conv2d *)layer;

    return eq_describe_append(buf, size, 0, "conv2d(%zu->%zu, %zux%zu, stride %zu, pad %zu)",
                              conv->ic, conv->oc, conv->kh, conv->kw, conv->stride, conv->pad);
}

static eq_status conv2d_output_shape(const eq_layer *layer, eq_shape in, eq_shape *out)
{
    const conv2d *conv = (const conv2d *)layer;
    char name[DESCRIPTION_SIZE], text[EQ_SHAPE_STR_SIZE];

    conv2d_describe(layer, name, sizeof name);
    if (in.c != conv->ic)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s has %zu channels, expected %zu", name,
                        eq_shape_str(in, text), in.c, conv->ic);
    if (eq_shape_numel(in) == 0)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s has a zero dimension or overflows size_t", name,
                        eq_shape_str(in, text));
    if (conv->pad > (SIZE_MAX - in.h) / 2 || conv->pad > (SIZE_MAX - in.w) / 2)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s overflows size_t when padded", name,
                        eq_shape_str(in, text));

    size_t padded_h = in.h + 2 * conv->pad;
    size_t padded_w = in.w + 2 * conv->pad;
    if (padded_h < conv->kh || padded_w < conv->kw)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s padded to %zux%zu is smaller than the %zux%zu kernel",
                        name, eq_shape_str(in, text), padded_h, padded_w, conv->kh, conv->kw);

    eq_shape shape = eq_shape_make(in.n, conv->oc, (padded_h - conv->kh) / conv->stride + 1,
                                   (padded_w - conv->kw) / conv->stride + 1);
    if (eq_shape_numel(shape) == 0)
        return eq_error(EQ_ERR_SHAPE, "%s: output shape %s overflows size_t", name,
                        eq_shape_str(shape, text));
    *out = shape;
    return EQ_OK;
}

/* Grows *buf to at least `count` floats. The old contents are dropped. */
static eq_status reserve(float **buf, size_t *capacity, size_t count, const char *buffer_name)
{
    if (count <= *capacity)
        return EQ_OK;

    eq_free(*buf);
    *buf = eq_alloc_floats(count);
    *capacity = *buf ? count : 0;
    if (!*buf)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "conv2d: cannot allocate the %s buffer of %zu floats",
                        buffer_name, count);
    return EQ_OK;
}

/* Chooses the chunking for an input of shape `in` and grows the buffers to
 * fit the largest chunk. */
static eq_status plan_chunks(conv2d *conv, eq_shape in, eq_shape out)
{
    eq_conv_geom geom = { in.c, in.h, in.w, conv->kh, conv->kw, conv->stride, conv->pad, out.h, out.w };
    size_t positions = out.h * out.w;
    size_t image_cols; /* K * OH * OW */

    conv->geom = geom;
    conv->n = in.n;
    if (eq_size_mul(conv->k, positions, &image_cols) && image_cols <= COLS_BUDGET) {
        conv->images_per_chunk = min_size(COLS_BUDGET / image_cols, in.n);
        conv->tile = positions;
    } else {
        /* Equal tiles, each at most max_tile columns (at least one). */
        size_t max_tile = COLS_BUDGET / conv->k > 0 ? COLS_BUDGET / conv->k : 1;
        size_t tiles = (positions + max_tile - 1) / max_tile;
        conv->images_per_chunk = 1;
        conv->tile = (positions + tiles - 1) / tiles;
    }

    size_t columns = conv->images_per_chunk * conv->tile; /* no overflow: bounded by N * OH * OW */
    size_t cols_count, out_count;
    if (!eq_size_mul(conv->k, columns, &cols_count) || !eq_size_mul(conv->oc, columns, &out_count))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "conv2d: chunk buffers for %zu columns overflow size_t", columns);

    eq_status status = reserve(&conv->cols, &conv->cols_capacity, cols_count, "column");
    if (status != EQ_OK)
        return status;
    return reserve(&conv->chunk_out, &conv->chunk_out_capacity, out_count, "chunk output");
}

static size_t chunk_columns(const chunk *ch)
{
    return ch->count * (ch->p1 - ch->p0);
}

static size_t chunk_total(const conv2d *conv)
{
    size_t positions = conv->geom.oh * conv->geom.ow;
    size_t image_chunks = (conv->n + conv->images_per_chunk - 1) / conv->images_per_chunk;

    return image_chunks * ((positions + conv->tile - 1) / conv->tile);
}

/* Returns chunk `index` in the order: image chunks outer, tiles inner. */
static chunk chunk_at(const conv2d *conv, size_t index)
{
    size_t positions = conv->geom.oh * conv->geom.ow;
    size_t tiles = (positions + conv->tile - 1) / conv->tile;
    chunk ch;

    ch.n0 = index / tiles * conv->images_per_chunk;
    ch.count = min_size(conv->images_per_chunk, conv->n - ch.n0);
    ch.p0 = index % tiles * conv->tile;
    ch.p1 = min_size(ch.p0 + conv->tile, positions);
    return ch;
}

/* Lowers the chunk's part of x (N, IC, H, W) into cols (K, columns). */
static void lower_chunk(conv2d *conv, const chunk *ch)
{
    const size_t image_size = conv->geom.c * conv->geom.h * conv->geom.w;
    const size_t width = ch->p1 - ch->p0;
    const size_t columns = chunk_columns(ch);

    for (size_t i = 0; i < ch->count; i++)
        eq_im2col(&conv->geom, conv->x + (ch->n0 + i) * image_size, ch->p0, ch->p1,
                  conv->cols + i * width, columns);
}

static void forward_chunk(conv2d *conv, const chunk *ch, float *y)
{
    const size_t positions = conv->geom.oh * conv->geom.ow;
    const size_t width = ch->p1 - ch->p0;
    const size_t columns = chunk_columns(ch);

    lower_chunk(conv, ch);

    /* chunk_out (OC, columns) = weight (OC, K) * cols (K, columns). Each
     * output depends only on its weight row and its column, which keeps a
     * sample's output independent of the batch around it. */
    eq_gemm(0, 0, conv->oc, columns, conv->k, 1.0f, conv->weight, conv->k, conv->cols, columns,
            0.0f, conv->chunk_out, columns);

    for (size_t i = 0; i < ch->count; i++) {
        for (size_t oc = 0; oc < conv->oc; oc++) {
            float *y_nc = y + ((ch->n0 + i) * conv->oc + oc) * positions + ch->p0;
            const float *src = conv->chunk_out + oc * columns + i * width;
            const float b = conv->bias[oc];
            for (size_t p = 0; p < width; p++)
                y_nc[p] = src[p] + b;
        }
    }
}

static eq_status conv2d_forward(eq_layer *layer, const eq_tensor *x, eq_tensor *y)
{
    conv2d *conv = (conv2d *)layer;

    conv->cols_cached = 0;
    eq_status status = plan_chunks(conv, x->shape, y->shape);
    if (status != EQ_OK)
        return status;
    conv->x = x->data;

    size_t total = chunk_total(conv);
    for (size_t index = 0; index < total; index++) {
        chunk ch = chunk_at(conv, index);
        forward_chunk(conv, &ch, y->data);
    }

    /* With a single chunk, cols still contains the whole batch for backward. */
    conv->cols_cached = total == 1;
    return EQ_OK;
}

static void bias_gradient(conv2d *conv, const float *dy)
{
    const size_t positions = conv->geom.oh * conv->geom.ow;

    for (size_t oc = 0; oc < conv->oc; oc++) {
        double sum = 0.0;
        for (size_t n = 0; n < conv->n; n++) {
            const float *dy_nc = dy + (n * conv->oc + oc) * positions;
            for (size_t p = 0; p < positions; p++)
                sum += dy_nc[p];
        }
        conv->dbias[oc] += (float)sum;
    }
}

static void backward_chunk(conv2d *conv, const chunk *ch, const float *dy, float *dx)
{
    const size_t positions = conv->geom.oh * conv->geom.ow;
    const size_t image_size = conv->geom.c * conv->geom.h * conv->geom.w;
    const size_t width = ch->p1 - ch->p0;
    const size_t columns = chunk_columns(ch);

    /* Gather the chunk's dy into chunk_out (OC, columns). */
    for (size_t i = 0; i < ch->count; i++) {
        for (size_t oc = 0; oc < conv->oc; oc++) {
            const float *dy_nc = dy + ((ch->n0 + i) * conv->oc + oc) * positions + ch->p0;
            memcpy(conv->chunk_out + oc * columns + i * width, dy_nc, width * sizeof(float));
        }
    }
    if (!conv->cols_cached)
        lower_chunk(conv, ch);

    /* dweight (OC, K) += dy (OC, columns) * cols^T (columns, K). */
    eq_gemm(0, 1, conv->oc, conv->k, columns, 1.0f, conv->chunk_out, columns, conv->cols, columns,
            1.0f, conv->dweight, conv->k);
    if (!dx)
        return;

    /* dcols (K, columns) = weight^T (K, OC) * dy (OC, columns), written over
     * cols, which this chunk no longer needs. */
    eq_gemm(1, 0, conv->k, columns, conv->oc, 1.0f, conv->weight, conv->k, conv->chunk_out, columns,
            0.0f, conv->cols, columns);
    conv->cols_cached = 0;
    for (size_t i = 0; i < ch->count; i++)
        eq_col2im_add(&conv->geom, conv->cols + i * width, columns, ch->p0, ch->p1,
                      dx + (ch->n0 + i) * image_size);
}

static eq_status conv2d_backward(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx)
{
    conv2d *conv = (conv2d *)layer;

    bias_gradient(conv, dy->data);
    if (dx)
        memset(dx->data, 0, eq_shape_numel(dx->shape) * sizeof(float));

    size_t total = chunk_total(conv);
    for (size_t index = 0; index < total; index++) {
        chunk ch = chunk_at(conv, index);
        backward_chunk(conv, &ch, dy->data, dx ? dx->data : NULL);
    }
    return EQ_OK;
}

static size_t conv2d_param_count(const eq_layer *layer)
{
    (void)layer;
    return 2;
}

static eq_param conv2d_param(eq_layer *layer, size_t index)
{
    conv2d *conv = (conv2d *)layer;
    eq_param param;

    if (index == 0) {
        param.name = "weight";
        param.shape = eq_shape_make(conv->oc, conv->ic, conv->kh, conv->kw);
        param.count = conv->oc * conv->k;
        param.value = conv->weight;
        param.grad = conv->dweight;
    } else {
        param.name = "bias";
        param.shape = eq_shape_make(conv->oc, 1, 1, 1);
        param.count = conv->oc;
        param.value = conv->bias;
        param.grad = conv->dbias;
    }
    return param;
}

static void conv2d_init_he(eq_layer *layer, eq_rng *rng)
{
    conv2d *conv = (conv2d *)layer;
    const float std = (float)sqrt(2.0 / (double)conv->k); /* fan_in = IC * KH * KW */

    for (size_t i = 0; i < conv->oc * conv->k; i++)
        conv->weight[i] = std * eq_rng_normal(rng);
    memset(conv->bias, 0, conv->oc * sizeof(float));
}

static void conv2d_destroy(eq_layer *layer)
{
    conv2d *conv = (conv2d *)layer;

    eq_free(conv->weight);
    eq_free(conv->dweight);
    eq_free(conv->bias);
    eq_free(conv->dbias);
    eq_free(conv->cols);
    eq_free(conv->chunk_out);
    free(conv);
}

static const eq_layer_ops conv2d_ops = {
    .kind = "conv2d",
    .output_shape = conv2d_output_shape,
    .forward = conv2d_forward,
    .backward = conv2d_backward,
    .param_count = conv2d_param_count,
    .param = conv2d_param,
    .init_he = conv2d_init_he,
    .describe = conv2d_describe,
    .destroy = conv2d_destroy,
};

eq_status eq_conv2d_create(size_t in_channels, size_t out_channels,
                           size_t kernel_h, size_t kernel_w,
                           size_t stride, size_t padding, eq_layer **out)
{
    size_t k, weight_count;

    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_conv2d_create: out is NULL");
    *out = NULL;
    if (in_channels == 0 || out_channels == 0 || kernel_h == 0 || kernel_w == 0 || stride == 0)
        return eq_error(EQ_ERR_INVALID_ARGUMENT,
                        "eq_conv2d_create: channels %zu->%zu, kernel %zux%zu and stride %zu must all be positive",
                        in_channels, out_channels, kernel_h, kernel_w, stride);
    if (!eq_size_mul(in_channels, kernel_h, &k) || !eq_size_mul(k, kernel_w, &k)
        || !eq_size_mul(k, out_channels, &weight_count))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_conv2d_create: weight shape (%zu, %zu, %zu, %zu) overflows size_t",
                        out_channels, in_channels, kernel_h, kernel_w);

    conv2d *conv = calloc(1, sizeof *conv);
    if (!conv)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_conv2d_create: cannot allocate the layer");
    eq_layer_base_init(&conv->base, &conv2d_ops);
    conv->ic = in_channels;
    conv->oc = out_channels;
    conv->kh = kernel_h;
    conv->kw = kernel_w;
    conv->stride = stride;
    conv->pad = padding;
    conv->k = k;
    conv->weight = eq_alloc_floats(weight_count);
    conv->dweight = eq_alloc_floats(weight_count);
    conv->bias = eq_alloc_floats(out_channels);
    conv->dbias = eq_alloc_floats(out_channels);
    if (!conv->weight || !conv->dweight || !conv->bias || !conv->dbias) {
        conv2d_destroy(&conv->base);
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_conv2d_create: cannot allocate %zu weights", weight_count);
    }
    *out = &conv->base;
    return EQ_OK;
}
