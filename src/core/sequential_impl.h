/* Running part of a sequential layer, for callers that compute its first
 * children another way (internal). */
#ifndef EQ_CORE_SEQUENTIAL_IMPL_H
#define EQ_CORE_SEQUENTIAL_IMPL_H

#include <stddef.h>

#include "equivar/layer.h"

/* Runs children first..count-1 of `seq` forward. x is the input of child
 * `first` and y the output of the last child. With first == count the call
 * copies x into y, which must then have x's shape. Each child checks its
 * shapes as eq_layer_forward does.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT (seq is not sequential, or first is
 * past the end), EQ_ERR_SHAPE or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_sequential_forward_from(eq_layer *seq, size_t first, const eq_tensor *x, eq_tensor *y);

/* Runs children count-1..first backward after eq_sequential_forward_from
 * with the same `first`. dy is the gradient of the last child's output. dx,
 * the gradient of child first's input, is overwritten and may be NULL.
 * Parameter gradients accumulate.
 * Returns the codes of eq_sequential_forward_from or EQ_ERR_STATE. */
eq_status eq_sequential_backward_from(eq_layer *seq, size_t first, const eq_tensor *dy, eq_tensor *dx);

#endif
