/* The multi-branch conv2d path: every branch of a block-permuted input
 * from one column matrix, with sums anchored to the weights' blocks. */
#include "core/conv2d_impl.h"

#include <string.h>

#include "core/blocks.h"
#include "core/conv2d_chunks.h"
#include "core/error.h"
#include "core/gemm.h"

/* For each branch g: chunk_out (OC, columns) = sum over b of
 * weight[:, block b] (OC, KB) * cols[block sources[g * n + b]] (KB, columns),
 * then y with the bias. One lowering serves all n branches. */
static void forward_blocks_chunk(eq_conv2d *conv, const eq_conv2d_chunk *ch, float *y)
{
    const size_t n = conv->branches;
    const size_t kb = conv->k / n; /* rows of one channel block: B * KH * KW */
    const size_t columns = eq_conv2d_chunk_columns(ch);

    eq_conv2d_lower_chunk(conv, ch);
    for (size_t g = 0; g < n; g++) {
        /* b ascending with beta 0 first: the order of the weights' blocks,
         * whatever block of x each one reads. */
        for (size_t b = 0; b < n; b++) {
            const float *cols_block = conv->cols + conv->sources[g * n + b] * kb * columns;
            eq_gemm(0, 0, conv->oc, columns, kb, 1.0f, conv->weight + b * kb, conv->k, cols_block, columns,
                    b == 0 ? 0.0f : 1.0f, conv->chunk_out, columns);
        }
        eq_conv2d_store_chunk(conv, ch, g, y);
    }
}

static void backward_blocks_chunk(eq_conv2d *conv, const eq_conv2d_chunk *ch, const float *dy, float *dx)
{
    const size_t n = conv->branches;
    const size_t kb = conv->k / n;
    const size_t columns = eq_conv2d_chunk_columns(ch);
    const size_t block = kb * columns; /* floats of one block of cols */

    if (!conv->cols_cached)
        eq_conv2d_lower_chunk(conv, ch);

    /* dweight[:, block b] (OC, KB) += dy_g (OC, columns) * cols[block sources[g * n + b]]^T. */
    for (size_t g = 0; g < n; g++) {
        eq_conv2d_gather_chunk(conv, ch, g, dy);
        for (size_t b = 0; b < n; b++)
            eq_gemm(0, 1, conv->oc, kb, columns, 1.0f, conv->chunk_out, columns,
                    conv->cols + conv->sources[g * n + b] * block, columns, 1.0f, conv->dweight + b * kb, conv->k);
    }
    if (!dx)
        return;

    /* dcols[block sources[g * n + b]] += weight[:, block b]^T (KB, OC) * dy_g (OC, columns),
     * written over cols, which the weight gradient no longer needs. Every
     * row of the source table is a permutation, so branch 0 writes each
     * block once with beta 0 before the other branches add to it. */
    for (size_t g = 0; g < n; g++) {
        eq_conv2d_gather_chunk(conv, ch, g, dy);
        for (size_t b = 0; b < n; b++)
            eq_gemm(1, 0, kb, columns, conv->oc, 1.0f, conv->weight + b * kb, conv->k, conv->chunk_out, columns,
                    g == 0 ? 0.0f : 1.0f, conv->cols + conv->sources[g * n + b] * block, columns);
    }
    conv->cols_cached = 0;
    eq_conv2d_unlower_chunk(conv, ch, dx);
}

eq_status eq_conv2d_forward_blocks(eq_layer *layer, size_t branches, const size_t *sources,
                                   const eq_tensor *x, eq_tensor *y)
{
    static const char who[] = "eq_conv2d_forward_blocks";
    char have[EQ_SHAPE_STR_SIZE], want[EQ_SHAPE_STR_SIZE], text[EQ_SHAPE_STR_SIZE];
    eq_conv2d *conv = (eq_conv2d *)layer;
    eq_shape stacked, expected;

    if (!eq_conv2d_is(layer))
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: layer is %s, expected a conv2d", who, eq_layer_kind(layer));
    if (!x || !y || !x->data || !y->data)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: x or y is NULL", who);
    eq_status status = eq_block_sources_check(who, branches, sources);
    if (status != EQ_OK)
        return status;
    if (x->shape.c % branches != 0)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s has %zu channels, expected a multiple of %zu branches", who,
                        eq_shape_str(x->shape, text), x->shape.c, branches);

    /* y is the output for the batch with every sample repeated per branch. */
    stacked = x->shape;
    if (!eq_size_mul(x->shape.n, branches, &stacked.n))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: batch %zu times %zu branches overflows size_t", who,
                        x->shape.n, branches);
    status = eq_layer_output_shape(layer, stacked, &expected);
    if (status != EQ_OK)
        return status;
    if (!eq_shape_equal(y->shape, expected))
        return eq_error(EQ_ERR_SHAPE, "%s: output tensor has shape %s, expected %s for input %s and %zu branches",
                        who, eq_shape_str(y->shape, have), eq_shape_str(expected, want),
                        eq_shape_str(x->shape, text), branches);

    layer->has_forward = 0;
    conv->cols_cached = 0;
    conv->blocks_forward = 0;
    eq_shape per_image = expected;
    per_image.n = x->shape.n;
    status = eq_conv2d_plan_chunks(conv, x->shape, per_image);
    if (status != EQ_OK)
        return status;
    conv->x = x->data;
    conv->branches = branches;
    conv->sources = sources;

    size_t total = eq_conv2d_chunk_count(conv);
    for (size_t index = 0; index < total; index++) {
        eq_conv2d_chunk ch = eq_conv2d_chunk_at(conv, index);
        forward_blocks_chunk(conv, &ch, y->data);
    }
    conv->cols_cached = total == 1;
    conv->blocks_forward = 1;
    return EQ_OK;
}

eq_status eq_conv2d_backward_blocks(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx)
{
    static const char who[] = "eq_conv2d_backward_blocks";
    char have[EQ_SHAPE_STR_SIZE], want[EQ_SHAPE_STR_SIZE];
    eq_conv2d *conv = (eq_conv2d *)layer;

    if (!eq_conv2d_is(layer))
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: layer is %s, expected a conv2d", who, eq_layer_kind(layer));
    if (!dy || !dy->data || (dx && !dx->data))
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: dy is NULL or dx has no data", who);
    if (!conv->blocks_forward)
        return eq_error(EQ_ERR_STATE, "%s: no multi-branch forward call to differentiate; "
                        "call eq_conv2d_forward_blocks first", who);

    const eq_conv_geom *geom = &conv->geom;
    eq_shape dy_shape = eq_shape_make(conv->n * conv->branches, conv->oc, geom->oh, geom->ow);
    eq_shape dx_shape = eq_shape_make(conv->n, geom->c, geom->h, geom->w);
    if (!eq_shape_equal(dy->shape, dy_shape))
        return eq_error(EQ_ERR_SHAPE, "%s: dy has shape %s, expected the forward output shape %s", who,
                        eq_shape_str(dy->shape, have), eq_shape_str(dy_shape, want));
    if (dx && !eq_shape_equal(dx->shape, dx_shape))
        return eq_error(EQ_ERR_SHAPE, "%s: dx has shape %s, expected the forward input shape %s", who,
                        eq_shape_str(dx->shape, have), eq_shape_str(dx_shape, want));

    eq_conv2d_bias_gradient(conv, dy->data);
    if (dx)
        memset(dx->data, 0, eq_shape_numel(dx->shape) * sizeof(float));

    size_t total = eq_conv2d_chunk_count(conv);
    for (size_t index = 0; index < total; index++) {
        eq_conv2d_chunk ch = eq_conv2d_chunk_at(conv, index);
        backward_blocks_chunk(conv, &ch, dy->data, dx ? dx->data : NULL);
    }
    return EQ_OK;
}
