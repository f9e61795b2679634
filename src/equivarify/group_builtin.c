/* The built-in groups: trivial and C4 (rotations by quarter turns). */
#include "equivarify/group_impl.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"

static void identity_map(size_t a, size_t size, size_t *src)
{
    (void)a;
    for (size_t p = 0; p < size * size; p++)
        src[p] = p;
}

/* Composes k counter-clockwise quarter turns. One turn is
 * out[i][j] = in[j][size-1-i], so out[p] = in[turn(p)] with turn(i, j) =
 * (j, size-1-i); k turns follow the chain of source pixels k times. */
static void rotation_map(size_t k, size_t size, size_t *src)
{
    for (size_t i = 0; i < size; i++) {
        for (size_t j = 0; j < size; j++) {
            size_t row = i, col = j;
            for (size_t t = 0; t < k; t++) {
                size_t next_row = col, next_col = size - 1 - row;
                row = next_row;
                col = next_col;
            }
            src[i * size + j] = row * size + col;
        }
    }
}

eq_status eq_group_trivial(eq_group **out)
{
    eq_group *group;

    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_group_trivial: out is NULL");
    eq_status status = eq_group_alloc("trivial", 1, &group);
    if (status != EQ_OK)
        return status;
    group->mul[0] = 0;
    group->inv[0] = 0;
    snprintf(group->element_names[0], EQ_GROUP_NAME_SIZE, "e");
    group->pixel_map = identity_map;
    *out = group;
    return EQ_OK;
}

eq_status eq_group_c4(eq_group **out)
{
    eq_group *group;

    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_group_c4: out is NULL");
    eq_status status = eq_group_alloc("c4", 4, &group);
    if (status != EQ_OK)
        return status;
    for (size_t a = 0; a < 4; a++) {
        for (size_t b = 0; b < 4; b++)
            group->mul[a * 4 + b] = (a + b) % 4;
        group->inv[a] = (4 - a) % 4;
        snprintf(group->element_names[a], EQ_GROUP_NAME_SIZE, "r%zu", a);
    }
    group->pixel_map = rotation_map;
    *out = group;
    return EQ_OK;
}
