/* The group struct shared by the group constructors and the equivarify layer. */
#ifndef EQ_EQUIVARIFY_GROUP_IMPL_H
#define EQ_EQUIVARIFY_GROUP_IMPL_H

#include "equivar/group.h"

#define EQ_GROUP_MAX_ORDER 64
#define EQ_GROUP_NAME_SIZE 32


struct eq_group {
    char name[EQ_GROUP_NAME_SIZE];
    size_t order;
    size_t *mul;       /* order x order Cayley table, mul[a * order + b] = a * b */
    size_t *inv;       /* order inverses */
    char (*element_names)[EQ_GROUP_NAME_SIZE];

    /* Pixel action: a built-in map, a user callback, or a user table of
     * permutations for one image size (pixel_size x pixel_size). */
    eq_pixel_action_fn pixel_action;
    void *user;
    size_t pixel_size;
    size_t *pixel_table; /* order x pixel_size^2 source indices, or NULL */
};

/* Allocates a group with an order x order table to be filled in. */
eq_status eq_group_alloc(const char *name, size_t order, eq_group **out);

/* Returns a deep copy, so that a layer can own its group. */
eq_status eq_group_clone(const eq_group *group, eq_group **out);

/* Computes the pixel permutation of element a for size x size images,
 * out[p] = in[src[p]]. Returns EQ_ERR_SHAPE if the group's action is not
 * defined for that size, or the callback's status. */
eq_status eq_group_pixel_permutation(const eq_group *group, size_t a, size_t size, size_t *src);

/* Returns 1 if the group can act on images. */
int eq_group_has_pixel_action(const eq_group *group);

#endif
