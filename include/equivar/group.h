/* Finite groups and their actions on images and on blocks of channels. */
#ifndef EQUIVAR_GROUP_H
#define EQUIVAR_GROUP_H

#include <stddef.h>
#include <stdint.h>

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

/* D4, the symmetries of the square: elements 0..3 are r^k, elements 4..7 are
 * r^k s, where s mirrors left-right (out[i][j] = in[i][H-1-j]) and is
 * applied first. */
eq_status eq_group_d4(eq_group **out);

/* Returns a built-in group by name: "trivial" (or "none"), "c4" or "d4".
 * Returns EQ_ERR_INVALID_ARGUMENT naming the unknown name. */
eq_status eq_group_by_name(const char *name, eq_group **out);

/* A pixel action given as a callback: fills src[0..size*size-1] with the
 * permutation of element `element` on size x size images, so that
 * out[p] = in[src[p]] with p = row * size + col. Returns EQ_OK, or an error
 * status for a size the action does not support. The library's message
 * then names the group, the element, the size and that status. */
typedef eq_status (*eq_pixel_action_fn)(void *user, size_t element, size_t size, size_t *src);

/* A user-defined group: its Cayley table and, optionally, its pixel action,
 * either as one permutation per element for one image size or a callback. */
typedef struct eq_group_spec {
    const char *name;                  /* up to 31 characters */
    size_t order;                      /* n, 1 to 64 */
    const size_t *table;               /* n * n: table[a * n + b] = a * b */
    const char *const *element_names;  /* n names, or NULL for "g0".."g<n-1>" */

    size_t pixel_size;                 /* H of pixel_permutations */
    const size_t *pixel_permutations;  /* n * H * H source indices, or NULL */

    eq_pixel_action_fn pixel_action;   /* used when pixel_permutations is NULL */
    void *user;                        /* passed to pixel_action */
} eq_group_spec;

/* Builds a group from a spec and validates it with eq_group_validate (for
 * a callback action, on 5x5 images). Element 0 must be the identity.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT, EQ_ERR_GROUP (the table or the
 * action breaks an axiom; the message names the failing elements) or
 * EQ_ERR_OUT_OF_MEMORY. The caller frees *out with eq_group_destroy. */
eq_status eq_group_create(const eq_group_spec *spec, eq_group **out);

/* Checks the group axioms (element 0 is the identity, closure,
 * associativity, inverses) and, if the group acts on pixels, that the action
 * is a homomorphism bit for bit, act(a, act(b, x)) == act(a * b, x), on a
 * random size x size image drawn from `seed`, and that it is a permutation.
 * size 0 skips the pixel check. Returns EQ_OK or EQ_ERR_GROUP with a message
 * naming the failing elements (or the codes of the pixel action). */
eq_status eq_group_validate(const eq_group *group, size_t size, uint64_t seed);

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
