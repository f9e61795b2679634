/* Equivarification: F(x)_g = h(g . x) for any layer h and finite group G. */
#ifndef EQUIVAR_EQUIVARIFY_H
#define EQUIVAR_EQUIVARIFY_H

#include <stddef.h>

#include "equivar/group.h"
#include "equivar/layer.h"
#include "equivar/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How the group acts on a tensor (N, C, H, W). */
typedef enum eq_action {
    EQ_ACTION_PIXELS,        /* every channel transformed as an image; needs H == W */
    EQ_ACTION_BLOCKS,        /* regular: n channel blocks, (a . x)_g = x_(g * a) */
    EQ_ACTION_BLOCKS_PIXELS, /* both: (a . x)_g = a applied to the pixels of x_(g * a) */
    EQ_ACTION_TRIVIAL        /* the group does not change the tensor (invariant features) */
} eq_action;

/* Returns "pixels", "blocks", "blocks+pixels" or "trivial". */
const char *eq_action_name(eq_action action);

/* Applies element a to x under the given action: y = a . x. x and y have
 * the same shape and must not overlap.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT or EQ_ERR_SHAPE. */
eq_status eq_group_act(const eq_group *group, eq_action action, size_t a, const eq_tensor *x, eq_tensor *y);

/* Wraps h into F with F(x)_g = h(g . x) for g = 0..n-1, the n output blocks
 * concatenated along channels in element order, so F(a . x) = a . F(x) bit
 * for bit with the EQ_ACTION_BLOCKS action on the output. Every branch uses
 * the same h, so h's parameters are F's parameters and their gradients sum
 * over the branches. `input_action` says how G acts on h's input. F takes
 * ownership of h (destroyed on failure too) and keeps its own reference to
 * the group, so the caller may destroy the group afterwards.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_equivarify(eq_layer *h, const eq_group *group, eq_action input_action, eq_layer **out);

/* The aligned variant, in which group convolution is a special case:
 * F(x)_g = g^-1 applied to the pixels of h(g . x). Its output action is
 * EQ_ACTION_BLOCKS_PIXELS, so h's output must be square. For a conv h with
 * stride 1 and "same" padding on a pixel input this equals one convolution
 * with the n transformed copies of the filters. Ownership as eq_equivarify. */
eq_status eq_equivarify_aligned(eq_layer *h, const eq_group *group, eq_action input_action, eq_layer **out);

/* Reports how a layer built by this module transforms: the group's action
 * on its input and on its output. Returns EQ_ERR_INVALID_ARGUMENT for a layer
 * of another kind. The group pointer stays owned by the layer. */
eq_status eq_equivariant_actions(const eq_layer *layer, const eq_group **group, eq_action *input_action,
                                 eq_action *output_action);

/* Appends `layer` to the sequential layer `seq` like eq_sequential_append,
 * after checking that it expects the input action that the last
 * equivariant layer in seq produces, over the same group. Between two
 * equivariant layers "relu" (pointwise, so it commutes with every action)
 * is accepted, and "maxpool" and "flatten" after a layer whose output
 * carries the blocks action. A mismatch is EQ_ERR_GROUP naming both
 * actions; the layer is destroyed on failure. */
eq_status eq_equivariant_append(eq_layer *seq, eq_layer *layer);

/* Measures how far a layer is from equivariance on the input x:
 * max over a of max |F(a . x) - a . F(x)|, with the given actions on input
 * and output. Writes that maximum to *max_error and the element where it
 * occurs to *worst_element (0 when the layer is exact).
 * Returns EQ_OK or the codes of the forward call and the actions. */
eq_status eq_check_equivariance(eq_layer *layer, const eq_group *group, eq_action input_action,
                                eq_action output_action, const eq_tensor *x, float *max_error,
                                size_t *worst_element);

/* Pooling over the n blocks: (N, n * B, H, W) -> (N, B, H, W), the maximum
 * or the mean of the n values at each position. Its output is G-invariant
 * when the input action is EQ_ACTION_BLOCKS. The mean adds the n values in
 * ascending order, so that permuting the blocks cannot change its rounding. */
typedef enum eq_pool_kind { EQ_POOL_MAX, EQ_POOL_MEAN } eq_pool_kind;
eq_status eq_invariant_pool_create(const eq_group *group, eq_pool_kind kind, eq_layer **out);

/* The projection p: (N, n * B, H, W) -> (N, B, H, W), keeping the identity's
 * block, so p(F(x)) = h(x). */
eq_status eq_projection_create(size_t group_order, eq_layer **out);

#ifdef __cplusplus
}
#endif

#endif
