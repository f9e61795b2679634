/* The group struct shared by the group constructors and the equivarify layer. */
#ifndef EQ_EQUIVARIFY_GROUP_IMPL_H
#define EQ_EQUIVARIFY_GROUP_IMPL_H

#include "equivar/group.h"

#define EQ_GROUP_MAX_ORDER 64
#define EQ_GROUP_NAME_SIZE 32

/* Fills src[0..size*size-1] so that transforming a size x size image by
 * element a is out[p] = in[src[p]], p = row * size + col. */
typedef void (*eq_pixel_map_fn)(size_t a, size_t size, size_t *src);

struct eq_group {
    char name[EQ_GROUP_NAME_SIZE];
    size_t order;
    size_t *mul;       /* order x order Cayley table, mul[a * order + b] = a * b */
    size_t *inv;       /* order inverses */
    char (*element_names)[EQ_GROUP_NAME_SIZE];
    eq_pixel_map_fn pixel_map;
};

/* Allocates a group with an order x order table to be filled in. */
eq_status eq_group_alloc(const char *name, size_t order, eq_group **out);

/* Returns a deep copy, so that a layer can own its group. */
eq_status eq_group_clone(const eq_group *group, eq_group **out);

/* Computes the pixel permutation of element a for size x size images:
 * out[p] = in[src[p]]. */
void eq_group_pixel_permutation(const eq_group *group, size_t a, size_t size, size_t *src);

#endif
