/* Group actions on one sample, with the pixel maps precomputed. */
#ifndef EQ_EQUIVARIFY_ACTION_H
#define EQ_EQUIVARIFY_ACTION_H

#include "equivar/equivarify.h"

/* Everything needed to apply any element to a sample of shape (C, H, W). */
typedef struct eq_action_maps {
    const eq_group *group;
    eq_action action;
    eq_shape sample;     /* (1, C, H, W) */
    size_t *pixel_src;   /* n maps of H * W source indices, for pixel actions */
} eq_action_maps;

/* Checks that the action fits the sample shape (square images for pixel
 * actions, C a multiple of n for block actions) and computes the maps. A
 * call with the same group, action and shape keeps the maps. `who` prefixes
 * error messages. */
eq_status eq_action_maps_prepare(eq_action_maps *maps, const char *who, const eq_group *group,
                                 eq_action action, eq_shape sample);
void eq_action_maps_release(eq_action_maps *maps);

/* out = a . in for one sample; in and out must not overlap. */
void eq_action_apply(const eq_action_maps *maps, size_t a, const float *in, float *out);

/* out += (a .)^T in, the adjoint of the action (a permutation, so its
 * transpose is the inverse permutation). */
void eq_action_apply_adjoint_add(const eq_action_maps *maps, size_t a, const float *in, float *out);

#endif
