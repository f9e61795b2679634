/* The multi-branch conv2d call: one column matrix shared by all branches
 * of a block-permuted input (internal). blocks.h states the convention. */
#ifndef EQ_CORE_CONV2D_IMPL_H
#define EQ_CORE_CONV2D_IMPL_H

#include <stddef.h>

#include "equivar/layer.h"

/* Returns 1 if `layer` is a conv2d layer, else 0. */
int eq_conv2d_is(const eq_layer *layer);

/* Writes the kernel size, stride and padding of a conv2d layer. */
void eq_conv2d_geometry(const eq_layer *layer, size_t *kh, size_t *kw, size_t *stride, size_t *pad);

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

/* Computes, for x (N, IC, H, W) and cols(x[i]) its (K, OH * OW) column
 * matrix, every branch g's output from the gathered rows of that matrix:
 *   z_g = W * cols_g,  cols_g[k][p] = cols(x[i])[rows[g * K + k]][p],
 *   y[i * branches + g][:, positions[g * OH * OW + p]] = z_g[:, p] + bias.
 * Let cols_g be the column matrix of a transformed copy of x[i] with its
 * columns permuted by positions. Then y equals the plain layer on that copy
 * bit for bit, because each element is one GEMM over K in the weights'
 * order (gemm.h).
 * Each row of rows must be a permutation of 0..K-1 and each row of
 * positions a permutation of 0..OH*OW-1; the layer keeps pointers to x,
 * rows and positions until the matching eq_conv2d_backward_blocks call.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT (not a conv2d, a NULL argument or
 * a bad table), EQ_ERR_SHAPE (y has another shape) or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_conv2d_forward_gathered(eq_layer *layer, size_t branches, const size_t *rows, const size_t *positions,
                                     const eq_tensor *x, eq_tensor *y);

/* Runs backward for the last eq_conv2d_forward_blocks or
 * eq_conv2d_forward_gathered call: accumulates the
 * weight and bias gradients over all branches and, when dx is not NULL,
 * overwrites dx (N, IC, H, W) with the gradient of x. dy is
 * (branches * N, OC, OH, OW).
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT, EQ_ERR_SHAPE or EQ_ERR_STATE (no
 * multi-branch forward before). */
eq_status eq_conv2d_backward_blocks(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx);

#endif
