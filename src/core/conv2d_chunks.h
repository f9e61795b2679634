/* The conv2d layer struct and its chunked column lowering, shared by the
 * plain path (conv2d.c) and the multi-branch path (conv2d_blocks.c). */
#ifndef EQ_CORE_CONV2D_CHUNKS_H
#define EQ_CORE_CONV2D_CHUNKS_H

#include <stddef.h>

#include "core/im2col.h"
#include "core/layer_impl.h"

typedef struct eq_conv2d {
    eq_layer base;
    size_t ic, oc, kh, kw, stride, pad;
    size_t k;                /* IC * KH * KW, the GEMM reduction length */
    float *weight, *dweight; /* (OC, IC, KH, KW), also read as (OC, K) */
    float *bias, *dbias;     /* (OC) */

    /* Cached by forward for backward. */
    const float *x;          /* (N, IC, H, W), owned by the caller */
    size_t n;                /* N, images in x */
    size_t branches;         /* output samples per image: 1, or the branches of a multi-branch call */
    const size_t *sources;   /* branches * branches block sources owned by the caller, or NULL */
    int blocks_forward;      /* the last forward was a multi-branch call */
    eq_conv_geom geom;
    size_t images_per_chunk; /* whole images per chunk, 1 when tiled */
    size_t tile;             /* output positions per image in a chunk */
    int cols_cached;         /* cols contains the column matrix of the whole batch */

    float *cols;             /* (K, chunk columns) */
    size_t cols_capacity;
    float *chunk_out;        /* (OC, chunk columns): GEMM output, or the chunk's dy */
    size_t chunk_out_capacity;
} eq_conv2d;

/* One chunk: output positions [p0, p1) of images [n0, n0 + count). Its
 * columns are image-major, count * (p1 - p0) of them. */
typedef struct eq_conv2d_chunk {
    size_t n0, count, p0, p1;
} eq_conv2d_chunk;

static inline size_t eq_conv2d_chunk_columns(const eq_conv2d_chunk *ch)
{
    return ch->count * (ch->p1 - ch->p0);
}

/* Chooses the chunking for an input of shape `in` (N images) and output
 * size out.h x out.w, caches the geometry and N, and grows the buffers to
 * fit the largest chunk. Returns EQ_OK or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_conv2d_plan_chunks(eq_conv2d *conv, eq_shape in, eq_shape out);

/* Returns the number of chunks of the planned input. */
size_t eq_conv2d_chunk_count(const eq_conv2d *conv);

/* Returns chunk `index` in the order: image chunks outer, tiles inner. */
eq_conv2d_chunk eq_conv2d_chunk_at(const eq_conv2d *conv, size_t index);

/* Lowers the chunk's part of x (N, IC, H, W) into cols (K, columns). */
void eq_conv2d_lower_chunk(eq_conv2d *conv, const eq_conv2d_chunk *ch);

/* Adds the chunk's column gradient, held in cols, into dx (N, IC, H, W). */
void eq_conv2d_unlower_chunk(eq_conv2d *conv, const eq_conv2d_chunk *ch, float *dx);

/* Writes chunk_out (OC, columns) plus the bias into y for branch g: image
 * n0 + i of the chunk is output sample (n0 + i) * branches + g. */
void eq_conv2d_store_chunk(eq_conv2d *conv, const eq_conv2d_chunk *ch, size_t g, float *y);

/* The adjoint of eq_conv2d_store_chunk without the bias: gathers branch g's
 * part of dy into chunk_out (OC, columns). */
void eq_conv2d_gather_chunk(eq_conv2d *conv, const eq_conv2d_chunk *ch, size_t g, const float *dy);

/* dbias += dy summed over its N * branches samples and all positions. */
void eq_conv2d_bias_gradient(eq_conv2d *conv, const float *dy);

#endif
