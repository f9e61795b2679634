/* Layers: the generic layer interface and the core layer kinds.
 *
 * A layer maps an input tensor to an output tensor, runs backward to get the
 * input gradient and the parameter gradients, and lists its parameters. A
 * sequential layer is itself a layer, so any function below that takes a
 * layer also takes a whole sub-network.
 *
 * Ownership: constructors return a layer that the caller frees with
 * eq_layer_destroy. Functions that take a layer into another layer
 * (eq_sequential_append, eq_equivarify) take ownership of it whether or not
 * they succeed, so a failed build leaks nothing.
 *
 * Threads: one layer is used by one thread at a time. */
#ifndef EQUIVAR_LAYER_H
#define EQUIVAR_LAYER_H

#include <stddef.h>

#include "equivar/status.h"
#include "equivar/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct eq_layer eq_layer;

/* A trainable parameter: value and gradient buffers of `count` floats,
 * owned by the layer. Weights are (OC, IC, KH, KW) for conv2d and
 * (OUT, IN, 1, 1) for dense; biases are (OC, 1, 1, 1). */
typedef struct eq_param {
    const char *name; /* "weight" or "bias" */
    eq_shape shape;
    size_t count;
    float *value;
    float *grad;
} eq_param;

/* --- Generic interface --------------------------------------------------- */

/* Computes the output shape for an input shape.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT or EQ_ERR_SHAPE (the input does not
 * fit the layer; the message names the expected and actual shapes). */
eq_status eq_layer_output_shape(const eq_layer *layer, eq_shape in, eq_shape *out);

/* Runs the layer forward: y = layer(x). y must have the shape returned by
 * eq_layer_output_shape for x->shape. The layer keeps a pointer to x and
 * caches what backward needs, so x must stay unchanged until the matching
 * eq_layer_backward call.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT, EQ_ERR_SHAPE or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_layer_forward(eq_layer *layer, const eq_tensor *x, eq_tensor *y);

/* Runs the layer backward for the last forward call. dy has the output shape
 * of that call. The input gradient is written to dx (overwriting it), which
 * has the input shape; dx may be NULL when the input gradient is not needed.
 * Parameter gradients are accumulated (+=), so call eq_layer_zero_grad
 * between optimiser steps.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT, EQ_ERR_SHAPE, EQ_ERR_OUT_OF_MEMORY
 * or EQ_ERR_STATE (no forward call before). */
eq_status eq_layer_backward(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx);

/* Returns the number of parameters, counting those of nested layers. */
size_t eq_layer_param_count(const eq_layer *layer);

/* Fills *out with parameter `index` (0 <= index < eq_layer_param_count).
 * Returns EQ_OK or EQ_ERR_INVALID_ARGUMENT. */
eq_status eq_layer_param(eq_layer *layer, size_t index, eq_param *out);

/* Sets every parameter gradient to zero. */
void eq_layer_zero_grad(eq_layer *layer);

/* Draws weights from N(0, 2 / fan_in) (He initialisation) and sets biases to
 * zero, for this layer and every nested layer. */
void eq_layer_init_he(eq_layer *layer, eq_rng *rng);

/* Returns the layer kind, e.g. "conv2d", "sequential", "equivarify". */
const char *eq_layer_kind(const eq_layer *layer);

/* Writes a one-line description of the layer and its nested layers, such as
 * "sequential(conv2d(1->8, 3x3, stride 1, pad 1), relu)", to buf (always
 * NUL-terminated when size > 0). Returns the length the full description
 * needs, not counting the NUL, as snprintf does. */
size_t eq_layer_describe(const eq_layer *layer, char *buf, size_t size);

/* Frees the layer and every layer it owns; NULL is a no-op. */
void eq_layer_destroy(eq_layer *layer);

/* --- Core layer kinds ---------------------------------------------------- */

/* 2-d convolution (cross-correlation, as in PyTorch) with bias:
 * (N, IC, H, W) -> (N, OC, OH, OW), OH = (H + 2 padding - KH) / stride + 1.
 * Weights start at zero; call eq_layer_init_he.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT (a zero size or stride) or
 * EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_conv2d_create(size_t in_channels, size_t out_channels,
                           size_t kernel_h, size_t kernel_w,
                           size_t stride, size_t padding, eq_layer **out);

/* Fully connected layer with bias: (N, IN, 1, 1) -> (N, OUT, 1, 1),
 * y = W x + b with W of shape (OUT, IN). An input (N, C, H, W) with
 * C * H * W == IN is accepted as if flattened. */
eq_status eq_dense_create(size_t in_features, size_t out_features, eq_layer **out);

/* Elementwise max(x, 0); the shape is unchanged. A NaN passes through, -0
 * becomes +0, and the derivative at 0 is taken as 0. */
eq_status eq_relu_create(eq_layer **out);

/* Max-pooling with a size x size window and the given stride:
 * (N, C, H, W) -> (N, C, (H - size) / stride + 1, (W - size) / stride + 1).
 * Ties go to the first maximum in row-major window order. */
eq_status eq_maxpool_create(size_t size, size_t stride, eq_layer **out);

/* (N, C, H, W) -> (N, C * H * W, 1, 1); the data is not moved. */
eq_status eq_flatten_create(eq_layer **out);

/* A sequence of layers applied in order; starts empty, and an empty
 * sequential layer is the identity. A ReLU directly followed by a max-pool
 * runs as the max-pool, then the ReLU, which gives the same bits with less
 * work. */
eq_status eq_sequential_create(eq_layer **out);

/* Appends `layer` to the sequential layer `seq`, taking ownership of it
 * (it is destroyed if the call fails, except when layer == seq, which is
 * rejected and left to the caller).
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT (seq is not sequential or layer is
 * NULL) or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_sequential_append(eq_layer *seq, eq_layer *layer);

/* Returns the number of layers in a sequential layer (0 for other kinds). */
size_t eq_sequential_length(const eq_layer *seq);

/* Returns layer `index` of a sequential layer, or NULL if out of range. The
 * sequential layer keeps ownership. */
eq_layer *eq_sequential_get(eq_layer *seq, size_t index);

#ifdef __cplusplus
}
#endif

#endif
