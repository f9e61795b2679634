/* Finite groups and their actions on images and on blocks of channels. */
#ifndef EQUIVAR_GROUP_H
#define EQUIVAR_GROUP_H

#include <stddef.h>

#include "equivar/status.h"
#include "equivar/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A finite group of order n: elements 0..n-1, element 0 the identity, with a
 * Cayley table and an action on square images. Immutable once built, so one
 * group may be shared by threads and layers. */
typedef struct eq_group eq_group;

/* The trivial group {e}: equivarifying with it gives the plain network. */
eq_status eq_group_trivial(eq_group **out);

/* C4: element k is r^k, k counter-clockwise quarter turns. One turn maps an
 * H x H image as out[i][j] = in[j][H-1-i] (numpy.rot90 with k=1). */
eq_status eq_group_c4(eq_group **out);

void eq_group_destroy(eq_group *group);

/* Returns n. */
size_t eq_group_order(const eq_group *group);

/* Returns the index of a * b (apply b first, then a). */
size_t eq_group_mul(const eq_group *group, size_t a, size_t b);

/* Returns the index of the inverse of a. */
size_t eq_group_inv(const eq_group *group, size_t a);

/* Returns the group name, e.g. "c4". */
const char *eq_group_name(const eq_group *group);

/* Returns the name of element a, e.g. "r0", "r1", "r1 s". */
const char *eq_group_element_name(const eq_group *group, size_t a);

/* Transforms the pixels of every channel of every image: y = a . x.
 * x and y have the same shape (N, C, H, H) and must not overlap.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT or EQ_ERR_SHAPE (H != W, or shapes
 * differ). */
eq_status eq_group_act_pixels(const eq_group *group, size_t a, const eq_tensor *x, eq_tensor *y);

/* The regular action on channel blocks: x is (N, n * B, H, W), n blocks of B
 * channels, and (a . x)_g = x_(g * a). x and y must not overlap. */
eq_status eq_group_act_blocks(const eq_group *group, size_t a, const eq_tensor *x, eq_tensor *y);

#ifdef __cplusplus
}
#endif

#endif
