/* The multi-branch conv2d call: one column matrix shared by all branches
 * of a block-permuted input (internal). blocks.h states the convention. */
#ifndef EQ_CORE_CONV2D_IMPL_H
#define EQ_CORE_CONV2D_IMPL_H

#include <stddef.h>

#include "equivar/layer.h"

/* Returns 1 if `layer` is a conv2d layer, else 0. */
int eq_conv2d_is(const eq_layer *layer);

/* Computes, for x (N, IC, H, W) with IC = branches * B,
 *   y[i * branches + g] = sum over b = 0..branches-1 of
 *                         W[:, block b] * cols(x[i])[block sources[g * branches + b]] + bias,
 * where a block of the column matrix is the B * KH * KW rows of B input
 * channels. y is (branches * N, OC, OH, OW). The partial products are added
 * for b = 0, 1, ... in that order, so the sum follows the weights' blocks:
 * two calls whose inputs differ only by a permutation of blocks that the
 * source table absorbs give bitwise equal outputs. Each output still depends
 * only on its own input sample.
 * The layer keeps pointers to x and sources until the matching backward
 * call, and its plain backward is unavailable until its next plain forward.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT (not a conv2d, a NULL argument or a
 * bad source table), EQ_ERR_SHAPE (IC is not a multiple of branches, or y
 * has another shape) or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_conv2d_forward_blocks(eq_layer *layer, size_t branches, const size_t *sources,
                                   const eq_tensor *x, eq_tensor *y);

/* Runs backward for the last eq_conv2d_forward_blocks call: accumulates the
 * weight and bias gradients over all branches and, when dx is not NULL,
 * overwrites dx (N, IC, H, W) with the gradient of x. dy is
 * (branches * N, OC, OH, OW).
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT, EQ_ERR_SHAPE or EQ_ERR_STATE (no
 * multi-branch forward before). */
eq_status eq_conv2d_backward_blocks(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx);

#endif
