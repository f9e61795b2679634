/* The built-in groups: trivial, C4 (quarter turns) and D4 (square symmetries). */
#include "equivarify/group_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static eq_status identity_action(void *user, size_t element, size_t size, size_t *src)
{
    (void)user;
    (void)element;
    for (size_t p = 0; p < size * size; p++)
        src[p] = p;
    return EQ_OK;
}

/* One counter-clockwise quarter turn is out[i][j] = in[j][size-1-i], so the
 * source of pixel (i, j) after k turns follows that step k times. */
static void rotation_source(size_t k, size_t size, size_t i, size_t j, size_t *row, size_t *col)
{
    for (size_t t = 0; t < k; t++) {
        size_t next_row = j, next_col = size - 1 - i;
        i = next_row;
        j = next_col;
    }
    *row = i;
    *col = j;
}

/* Element k < 4 is r^k; element 4 + k is r^k s with the mirror s applied
 * first, so out = r^k(s(in)) and the source of (i, j) is s's source of
 * r^k's source: the column is mirrored last. */
static eq_status square_action(void *user, size_t element, size_t size, size_t *src)
{
    (void)user;
    size_t k = element % 4;
    int mirrored = element >= 4;

    for (size_t i = 0; i < size; i++) {
        for (size_t j = 0; j < size; j++) {
            size_t row, col;
            rotation_source(k, size, i, j, &row, &col);
            if (mirrored)
                col = size - 1 - col;
            src[i * size + j] = row * size + col;
        }
    }
    return EQ_OK;
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
    group->pixel_action = identity_action;
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
    group->pixel_action = square_action;
    *out = group;
    return EQ_OK;
}

eq_status eq_group_d4(eq_group **out)
{
    eq_group *group;

    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_group_d4: out is NULL");
    eq_status status = eq_group_alloc("d4", 8, &group);
    if (status != EQ_OK)
        return status;

    /* (r^a s^m1)(r^b s^m2) = r^(a + (-1)^m1 b) s^(m1 + m2), since s r = r^-1 s. */
    for (size_t x = 0; x < 8; x++) {
        for (size_t y = 0; y < 8; y++) {
            size_t a = x % 4, m1 = x / 4, b = y % 4, m2 = y / 4;
            size_t k = m1 ? (a + 4 - b) % 4 : (a + b) % 4;
            group->mul[x * 8 + y] = k + 4 * (m1 ^ m2);
        }
    }
    for (size_t x = 0; x < 8; x++)
        for (size_t y = 0; y < 8; y++)
            if (group->mul[x * 8 + y] == 0)
                group->inv[x] = y;

    for (size_t k = 0; k < 4; k++) {
        snprintf(group->element_names[k], EQ_GROUP_NAME_SIZE, "r%zu", k);
        if (k == 0)
            snprintf(group->element_names[4], EQ_GROUP_NAME_SIZE, "s");
        else
            snprintf(group->element_names[4 + k], EQ_GROUP_NAME_SIZE, "r%zu s", k);
    }
    group->pixel_action = square_action;
    *out = group;
    return EQ_OK;
}

eq_status eq_group_by_name(const char *name, eq_group **out)
{
    if (!name || !out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_group_by_name: name or out is NULL");
    if (strcmp(name, "trivial") == 0 || strcmp(name, "none") == 0)
        return eq_group_trivial(out);
    if (strcmp(name, "c4") == 0)
        return eq_group_c4(out);
    if (strcmp(name, "d4") == 0)
        return eq_group_d4(out);
    return eq_error(EQ_ERR_INVALID_ARGUMENT, "unknown group '%s', expected trivial, none, c4 or d4", name);
}
