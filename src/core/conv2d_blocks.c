/* The multi-branch conv2d calls: argument checks around the chunked driver
 * (conv2d_run.c), which computes every branch from one column matrix, with
 * block sums anchored to the weights' blocks or with gathered rows. */
#include "core/conv2d_impl.h"

#include <stdlib.h>
#include <string.h>

#include "core/blocks.h"
#include "core/conv2d_chunks.h"
#include "core/error.h"

/* Checks y against the output shape of the batch x with every sample
 * repeated per branch, and writes that shape. */
static eq_status check_output(const char *who, eq_layer *layer, size_t branches, const eq_tensor *x,
                              const eq_tensor *y, eq_shape *expected)
{
    char have[EQ_SHAPE_STR_SIZE], want[EQ_SHAPE_STR_SIZE], text[EQ_SHAPE_STR_SIZE];
    eq_shape stacked = x->shape;

    if (!eq_size_mul(x->shape.n, branches, &stacked.n))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: batch %zu times %zu branches overflows size_t", who,
                        x->shape.n, branches);
    eq_status status = eq_layer_output_shape(layer, stacked, expected);
    if (status != EQ_OK)
        return status;
    if (!eq_shape_equal(y->shape, *expected))
        return eq_error(EQ_ERR_SHAPE, "%s: output tensor has shape %s, expected %s for input %s and %zu branches",
                        who, eq_shape_str(y->shape, have), eq_shape_str(*expected, want),
                        eq_shape_str(x->shape, text), branches);
    return EQ_OK;
}

/* Plans the chunks for x and runs the multi-branch forward that the
 * fields set by the caller describe. */
static eq_status plan_and_run(eq_conv2d *conv, const eq_tensor *x, eq_shape expected, eq_tensor *y)
{
    eq_shape per_image = expected;

    per_image.n = x->shape.n;
    eq_status status = eq_conv2d_plan_chunks(conv, x->shape, per_image);
    if (status != EQ_OK)
        return status;
    conv->x = x->data;

    status = eq_conv2d_run_forward(conv, y->data);
    conv->blocks_forward = status == EQ_OK;
    return status;
}

eq_status eq_conv2d_forward_blocks(eq_layer *layer, size_t branches, const size_t *sources,
                                   const eq_tensor *x, eq_tensor *y)
{
    static const char who[] = "eq_conv2d_forward_blocks";
    char text[EQ_SHAPE_STR_SIZE];
    eq_conv2d *conv = (eq_conv2d *)layer;
    eq_shape expected;

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

    status = check_output(who, layer, branches, x, y, &expected);
    if (status != EQ_OK)
        return status;

    layer->has_forward = 0;
    conv->blocks_forward = 0;
    conv->branches = branches;
    conv->sources = sources;
    conv->spectral = eq_block_sources_spectral(branches, sources);
    conv->rows = NULL;
    conv->positions = NULL;
    return plan_and_run(conv, x, expected, y);
}

/* Checks that each of the `count` rows of `length` entries of table is a
 * permutation of 0..length-1. */
static eq_status check_permutations(const char *who, const char *what, size_t count, size_t length,
                                    const size_t *table)
{
    unsigned char *seen = malloc(length);
    if (!seen)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu flags to check the %s table", who, length,
                        what);

    eq_status status = EQ_OK;
    for (size_t r = 0; r < count && status == EQ_OK; r++) {
        memset(seen, 0, length);
        for (size_t q = 0; q < length; q++) {
            size_t value = table[r * length + q];
            if (value >= length || seen[value]) {
                status = eq_error(EQ_ERR_INVALID_ARGUMENT,
                                  "%s: %s table row %zu is not a permutation of 0..%zu: entry %zu is %zu", who,
                                  what, r, length - 1, q, value);
                break;
            }
            seen[value] = 1;
        }
    }
    free(seen);
    return status;
}

eq_status eq_conv2d_forward_gathered(eq_layer *layer, size_t branches, const size_t *rows, const size_t *positions,
                                     const eq_tensor *x, eq_tensor *y)
{
    static const char who[] = "eq_conv2d_forward_gathered";
    eq_conv2d *conv = (eq_conv2d *)layer;
    eq_shape expected;

    if (!eq_conv2d_is(layer))
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: layer is %s, expected a conv2d", who, eq_layer_kind(layer));
    if (!x || !y || !x->data || !y->data || !rows || !positions)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: x, y or a table is NULL", who);
    if (branches == 0)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: branch count is 0, expected at least 1", who);

    eq_status status = check_output(who, layer, branches, x, y, &expected);
    if (status == EQ_OK)
        status = check_permutations(who, "row", branches, conv->k, rows);
    if (status == EQ_OK)
        status = check_permutations(who, "position", branches, expected.h * expected.w, positions);
    if (status != EQ_OK)
        return status;

    layer->has_forward = 0;
    conv->blocks_forward = 0;
    conv->branches = branches;
    conv->sources = NULL;
    conv->spectral = 0;
    conv->rows = rows;
    conv->positions = positions;
    return plan_and_run(conv, x, expected, y);
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

    return eq_conv2d_run_backward(conv, dy->data, dx ? dx->data : NULL);
}
