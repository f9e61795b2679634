/* The multi-branch dense call: all branches of a block-permuted input read
 * the shared input in place (internal). blocks.h states the convention. */
#ifndef EQ_CORE_DENSE_IMPL_H
#define EQ_CORE_DENSE_IMPL_H

#include <stddef.h>

#include "equivar/layer.h"

/* Returns 1 if `layer` is a dense layer, else 0. */
int eq_dense_is(const eq_layer *layer);

/* Computes, for x (N, C, H, W) read as (N, IN) with IN = C * H * W and
 * C = branches * B, so that block b is features [b * IN / branches,
 * (b + 1) * IN / branches),
 *   y[i * branches + g] = sum over b = 0..branches-1 of
 *                         W[:, block b] * x[i][block sources[g * branches + b]] + bias.
 * y is (branches * N, OUT, 1, 1). The partial products are added for
 * b = 0, 1, ... in that order, so the sum follows the weights' blocks, and
 * each output depends only on its own input sample.
 * The layer keeps pointers to x and sources until the matching backward
 * call, and its plain backward is unavailable until its next plain forward.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT (not a dense layer, a NULL
 * argument or a bad source table), EQ_ERR_SHAPE (C is not a multiple of
 * branches, C * H * W is not IN, or y has another shape) or
 * EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_dense_forward_blocks(eq_layer *layer, size_t branches, const size_t *sources,
                                  const eq_tensor *x, eq_tensor *y);

/* Runs backward for the last eq_dense_forward_blocks call: accumulates the
 * weight and bias gradients over all branches and, when dx is not NULL,
 * overwrites dx (x's shape) with the gradient of x. dy is
 * (branches * N, OUT, 1, 1).
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT, EQ_ERR_SHAPE or EQ_ERR_STATE (no
 * multi-branch forward before). */
eq_status eq_dense_backward_blocks(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx);

#endif
