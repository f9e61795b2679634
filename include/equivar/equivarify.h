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

/* How the group acts on a tensor. */
typedef enum eq_action {
    EQ_ACTION_PIXELS, /* every channel transformed as an image; needs H == W */
    EQ_ACTION_BLOCKS  /* regular: n channel blocks, (a . x)_g = x_(g * a) */
} eq_action;

/* Wraps h into F with F(x)_g = h(g . x) for g = 0..n-1, the n output blocks
 * concatenated along channels in element order, so F(a . x) = a . F(x) bit
 * for bit with the EQ_ACTION_BLOCKS action on the output. Every branch uses
 * the same h, so h's parameters are F's parameters and their gradients sum
 * over the branches. `input_action` says how G acts on h's input. F takes
 * ownership of h (destroyed on failure too) and keeps its own reference to
 * the group, so the caller may destroy the group afterwards.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_equivarify(eq_layer *h, const eq_group *group, eq_action input_action, eq_layer **out);

/* The projection p: (N, n * B, H, W) -> (N, B, H, W), keeping the identity's
 * block, so p(F(x)) = h(x). */
eq_status eq_projection_create(size_t group_order, eq_layer **out);

#ifdef __cplusplus
}
#endif

#endif
