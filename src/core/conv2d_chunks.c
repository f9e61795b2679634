/* Column-buffer chunking of conv2d: the plan, the lowering of one chunk and
 * the moves between a chunk's GEMM buffer and the output tensor. */
#include "core/conv2d_chunks.h"

#include <string.h>

#include "core/error.h"

/* Maximum size of the column buffer in floats (4 MiB). The batch is lowered
 * one chunk of whole images at a time, so memory stays bounded for any batch
 * size. An image whose column matrix alone is larger is split into tiles of
 * output positions, with tile sizes that depend only on the layer and the
 * image size. */
#define COLS_BUDGET ((size_t)1 << 20)

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
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

eq_status eq_conv2d_plan_chunks(eq_conv2d *conv, eq_shape in, eq_shape out)
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

size_t eq_conv2d_chunk_count(const eq_conv2d *conv)
{
    size_t positions = conv->geom.oh * conv->geom.ow;
    size_t image_chunks = (conv->n + conv->images_per_chunk - 1) / conv->images_per_chunk;

    return image_chunks * ((positions + conv->tile - 1) / conv->tile);
}

eq_conv2d_chunk eq_conv2d_chunk_at(const eq_conv2d *conv, size_t index)
{
    size_t positions = conv->geom.oh * conv->geom.ow;
    size_t tiles = (positions + conv->tile - 1) / conv->tile;
    eq_conv2d_chunk ch;

    ch.n0 = index / tiles * conv->images_per_chunk;
    ch.count = min_size(conv->images_per_chunk, conv->n - ch.n0);
    ch.p0 = index % tiles * conv->tile;
    ch.p1 = min_size(ch.p0 + conv->tile, positions);
    return ch;
}

void eq_conv2d_lower_chunk(eq_conv2d *conv, const eq_conv2d_chunk *ch)
{
    const size_t image_size = conv->geom.c * conv->geom.h * conv->geom.w;
    const size_t width = ch->p1 - ch->p0;
    const size_t columns = eq_conv2d_chunk_columns(ch);

    for (size_t i = 0; i < ch->count; i++)
        eq_im2col(&conv->geom, conv->x + (ch->n0 + i) * image_size, ch->p0, ch->p1,
                  conv->cols + i * width, columns);
}

void eq_conv2d_store_chunk(eq_conv2d *conv, const eq_conv2d_chunk *ch, size_t g, float *y)
{
    const size_t positions = conv->geom.oh * conv->geom.ow;
    const size_t width = ch->p1 - ch->p0;
    const size_t columns = eq_conv2d_chunk_columns(ch);

    for (size_t i = 0; i < ch->count; i++) {
        size_t sample = (ch->n0 + i) * conv->branches + g;
        for (size_t oc = 0; oc < conv->oc; oc++) {
            float *y_nc = y + (sample * conv->oc + oc) * positions + ch->p0;
            const float *src = conv->chunk_out + oc * columns + i * width;
            const float b = conv->bias[oc];
            for (size_t p = 0; p < width; p++)
                y_nc[p] = src[p] + b;
        }
    }
}

void eq_conv2d_gather_chunk(eq_conv2d *conv, const eq_conv2d_chunk *ch, size_t g, const float *dy)
{
    const size_t positions = conv->geom.oh * conv->geom.ow;
    const size_t width = ch->p1 - ch->p0;
    const size_t columns = eq_conv2d_chunk_columns(ch);

    for (size_t i = 0; i < ch->count; i++) {
        size_t sample = (ch->n0 + i) * conv->branches + g;
        for (size_t oc = 0; oc < conv->oc; oc++) {
            const float *dy_nc = dy + (sample * conv->oc + oc) * positions + ch->p0;
            memcpy(conv->chunk_out + oc * columns + i * width, dy_nc, width * sizeof(float));
        }
    }
}

void eq_conv2d_bias_gradient(eq_conv2d *conv, const float *dy)
{
    const size_t positions = conv->geom.oh * conv->geom.ow;
    const size_t samples = conv->n * conv->branches;

    for (size_t oc = 0; oc < conv->oc; oc++) {
        double sum = 0.0;
        for (size_t n = 0; n < samples; n++) {
            const float *dy_nc = dy + (n * conv->oc + oc) * positions;
            for (size_t p = 0; p < positions; p++)
                sum += dy_nc[p];
        }
        conv->dbias[oc] += (float)sum;
    }
}

void eq_conv2d_unlower_chunk(eq_conv2d *conv, const eq_conv2d_chunk *ch, float *dx)
{
    const size_t image_size = conv->geom.c * conv->geom.h * conv->geom.w;
    const size_t width = ch->p1 - ch->p0;
    const size_t columns = eq_conv2d_chunk_columns(ch);

    for (size_t i = 0; i < ch->count; i++)
        eq_col2im_add(&conv->geom, conv->cols + i * width, columns, ch->p0, ch->p1,
                      dx + (ch->n0 + i) * image_size);
}
