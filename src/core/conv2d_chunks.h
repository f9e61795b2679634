/* The conv2d layer struct, its chunked column lowering and its parallel
 * driver, shared by the plain path (conv2d.c) and the multi-branch path
 * (conv2d_blocks.c). */
#ifndef EQ_CORE_CONV2D_CHUNKS_H
#define EQ_CORE_CONV2D_CHUNKS_H

#include <stddef.h>

#include "core/dot.h"
#include "core/gemm.h"
#include "core/im2col.h"
#include "core/layer_impl.h"

/* Buffers of one thread slot (see eq_parallel_for_slots). */
typedef struct eq_conv2d_scratch {
    float *cols;         /* (K, chunk columns), rows conv->ld apart */
    eq_dot_term *terms;  /* one per branch, for the weight gradient */
    float *out;          /* (branches, OC, chunk columns), rows conv->ld apart: GEMM output or gathered dy of a
                          * multi-image chunk */
    float *product;      /* (OC, K): one branch's weight gradient on the gathered path, else NULL */
} eq_conv2d_scratch;

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
    const size_t *sources;   /* branches * branches block sources, owned by the caller or static */
    int blocks_forward;      /* the last forward was a multi-branch call */
    int spectral;            /* nonzero when the call runs in a cyclic Fourier basis (conv2d_spectral.c) */
    const size_t *rows;      /* branches * K column-matrix rows of the gathered path (conv2d_gathered.c), or NULL */
    const size_t *positions; /* branches * OH * OW output positions of the gathered path */
    eq_conv_geom geom;
    size_t images_per_chunk; /* whole images per chunk, 1 when tiled */
    size_t tile;             /* output positions per image in a chunk */
    size_t ld;               /* row length of the chunk buffers: the columns of a full chunk, rounded up to 16 */

    eq_conv2d_scratch *scratch; /* scratch_count slots */
    size_t scratch_count;
    size_t cols_capacity;    /* floats of each slot's cols */
    size_t terms_capacity;   /* entries of each slot's terms */
    size_t out_capacity;     /* floats of each slot's out */
    size_t product_capacity; /* floats of each slot's product */

    /* Weight block b packed for the forward (packs[b]), and the weights
     * that map the output gradient to block c of the column gradient
     * (packs[branches + c]), built in weight_rows (OC * K floats). On the
     * spectral path, weight_rows contains the spectral weights instead. */
    eq_gemm_packed *packs;
    size_t pack_count;
    float *weight_rows;
    float *dspectral;        /* OC * K: the spectral weight gradient of one backward call */
    float *gathered_weights; /* branches * OC * K: the weights in each branch's row order (gathered path) */

    /* Weight and bias gradients of single image chunks, added to dweight
     * and dbias in image order after each round of chunks. */
    float *dweight_parts;    /* part_capacity * OC * K */
    double *dbias_parts;     /* (part_capacity + 1) * OC, the last row for the running totals */
    size_t part_capacity;
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
 * size out.h x out.w, caches the geometry and N, and grows the scratch of
 * every thread slot to fit the largest chunk. conv->branches must be set.
 * The chunking depends on the layer, the input shape and the branch count
 * only, never on the thread count.
 * Returns EQ_OK or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_conv2d_plan_chunks(eq_conv2d *conv, eq_shape in, eq_shape out);

/* Frees the scratch and the gradient parts. */
void eq_conv2d_release_scratch(eq_conv2d *conv);

/* Returns the number of image chunks of the planned input. */
size_t eq_conv2d_image_chunk_count(const eq_conv2d *conv);

/* Returns the number of position tiles per image chunk. */
size_t eq_conv2d_tile_count(const eq_conv2d *conv);

/* Returns tile `t` of image chunk `j`. */
eq_conv2d_chunk eq_conv2d_chunk_at(const eq_conv2d *conv, size_t j, size_t t);

/* Lowers the chunk's part of x (N, IC, H, W) into cols (K, columns), rows
 * conv->ld apart like every chunk buffer below. */
void eq_conv2d_lower_chunk(const eq_conv2d *conv, const eq_conv2d_chunk *ch, float *cols);

/* Adds the chunk's column gradient, held in cols, into dx (N, IC, H, W). */
void eq_conv2d_unlower_chunk(const eq_conv2d *conv, const eq_conv2d_chunk *ch, const float *cols, float *dx);

/* Writes out (OC, columns) plus the bias into y for branch g: image
 * n0 + i of the chunk is output sample (n0 + i) * branches + g. */
void eq_conv2d_store_chunk(const eq_conv2d *conv, const eq_conv2d_chunk *ch, size_t g, const float *out,
                           float *y);

/* The adjoint of eq_conv2d_store_chunk without the bias: gathers branch g's
 * part of dy into out (OC, columns). */
void eq_conv2d_gather_chunk(const eq_conv2d *conv, const eq_conv2d_chunk *ch, size_t g, const float *dy,
                            float *out);

/* Returns the sum of a plane of `count` floats in double, in 8 lanes of
 * positions p mod 8 added in a fixed order, so the compiler can vectorise
 * it without changing the result. */
double eq_conv2d_plane_sum(const float *plane, size_t count);

/* The spectral path (conv2d_spectral.c). */

/* Rows (of conv->ld floats) of the chunk output buffer that the spectral
 * path needs. */
size_t eq_conv2d_spectral_out_rows(const eq_conv2d *conv);

/* Computes the spectral weights from conv->weight and packs them for the
 * forward (backward = 0), or packs their transposes for the input gradient
 * (backward = 1, after a spectral forward).
 * Returns EQ_OK or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_conv2d_spectral_pack(eq_conv2d *conv, int backward);

/* Writes every branch of the chunk's output into y. */
void eq_conv2d_spectral_forward_chunk(const eq_conv2d *conv, eq_conv2d_scratch *scratch,
                                      const eq_conv2d_chunk *ch, float *y);

/* Runs one tile of an image chunk backward: sets (first_tile) or adds the
 * spectral weight gradient dspec (OC * K floats) and the bias gradient db
 * (OC), and when dx is not NULL adds the tile's input gradient into dx. */
void eq_conv2d_spectral_backward_tile(const eq_conv2d *conv, eq_conv2d_scratch *scratch, const eq_conv2d_chunk *ch,
                                      int first_tile, const float *dy, float *dx, float *dspec, double *db);

/* Adds to dweight the weight gradient that the spectral gradient dspec maps to. */
void eq_conv2d_spectral_add_gradient(eq_conv2d *conv, const float *dspec);

/* The gathered path (conv2d_gathered.c). */

/* Packs the weights for the forward (backward = 0) or for the input
 * gradient of every branch (backward = 1).
 * Returns EQ_OK or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_conv2d_gathered_pack(eq_conv2d *conv, int backward);

/* Writes every branch of the chunk's output into y. */
void eq_conv2d_gathered_forward_chunk(const eq_conv2d *conv, eq_conv2d_scratch *scratch,
                                      const eq_conv2d_chunk *ch, float *y);

/* Runs one tile of an image chunk backward: sets (first_tile) or adds the
 * weight gradient dw (OC * K) and the bias gradient db (OC), and when dx
 * is not NULL adds the tile's input gradient into dx. */
void eq_conv2d_gathered_backward_tile(const eq_conv2d *conv, eq_conv2d_scratch *scratch, const eq_conv2d_chunk *ch,
                                      int first_tile, const float *dy, float *dx, float *dw, double *db);

/* Runs the planned forward over x = conv->x into y (N * branches, OC, OH,
 * OW), parallel over chunks.
 * Returns EQ_OK or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_conv2d_run_forward(eq_conv2d *conv, float *y);

/* Runs the backward of the last forward: accumulates dweight and dbias and,
 * when dx is not NULL, overwrites dx (N, IC, H, W). Image chunks run in
 * parallel, and their gradients are added in image order, so the result
 * does not depend on the thread count.
 * Returns EQ_OK or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_conv2d_run_backward(eq_conv2d *conv, const float *dy, float *dx);

#endif
