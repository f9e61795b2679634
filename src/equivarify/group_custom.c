/* User-defined groups and the validation of any group: axioms and action. */
#include "equivarify/group_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "equivar/equivarify.h"

static eq_status check_axioms(const eq_group *group)
{
    size_t n = group->order;
    const char *name = group->name;

    for (size_t a = 0; a < n; a++)
        for (size_t b = 0; b < n; b++)
            if (group->mul[a * n + b] >= n)
                return eq_error(EQ_ERR_GROUP, "group '%s' is not closed: %zu * %zu = %zu is outside 0..%zu", name, a,
                                b, group->mul[a * n + b], n - 1);
    for (size_t a = 0; a < n; a++)
        if (group->mul[a] != a || group->mul[a * n] != a)
            return eq_error(EQ_ERR_GROUP,
                            "group '%s': element 0 is not the identity: 0 * %zu = %zu and %zu * 0 = %zu, expected %zu",
                            name, a, group->mul[a], a, group->mul[a * n], a);
    for (size_t a = 0; a < n; a++) {
        for (size_t b = 0; b < n; b++) {
            size_t ab = group->mul[a * n + b];
            for (size_t c = 0; c < n; c++) {
                size_t left = group->mul[ab * n + c], right = group->mul[a * n + group->mul[b * n + c]];
                if (left != right)
                    return eq_error(EQ_ERR_GROUP,
                                    "group '%s' is not associative: (%zu * %zu) * %zu = %zu but %zu * (%zu * %zu) = %zu",
                                    name, a, b, c, left, a, b, c, right);
            }
        }
    }
    for (size_t a = 0; a < n; a++) {
        size_t inverse = n;
        for (size_t b = 0; b < n && inverse == n; b++)
            if (group->mul[a * n + b] == 0 && group->mul[b * n + a] == 0)
                inverse = b;
        if (inverse == n)
            return eq_error(EQ_ERR_GROUP, "group '%s': element %zu has no inverse (no b with %zu * b = b * %zu = 0)",
                            name, a, a, a);
        if (group->inv[a] != inverse)
            return eq_error(EQ_ERR_GROUP, "group '%s': the stored inverse of element %zu is %zu, expected %zu", name,
                            a, group->inv[a], inverse);
    }
    return EQ_OK;
}

static eq_status check_permutations(const eq_group *group, size_t size, const size_t *maps)
{
    size_t plane = size * size;
    unsigned char *seen = calloc(plane, 1);

    if (!seen)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "group '%s': out of memory", group->name);
    for (size_t a = 0; a < group->order; a++) {
        memset(seen, 0, plane);
        for (size_t p = 0; p < plane; p++) {
            size_t src = maps[a * plane + p];
            if (seen[src]) {
                free(seen);
                return eq_error(EQ_ERR_GROUP,
                                "group '%s': the pixel map of element %zu (%s) is not a permutation, source pixel %zu "
                                "is used twice on %zux%zu images",
                                group->name, a, group->element_names[a], src, size, size);
            }
            seen[src] = 1;
        }
    }
    free(seen);
    return EQ_OK;
}

/* act(a, act(b, x)) == act(a * b, x) bit for bit on a random image. */
static eq_status check_homomorphism(const eq_group *group, size_t size, const size_t *maps, uint64_t seed)
{
    size_t n = group->order, plane = size * size;
    float *x = malloc(3 * plane * sizeof *x);
    eq_rng rng;

    if (!x)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "group '%s': out of memory", group->name);
    float *bx = x + plane, *abx = x + 2 * plane;
    eq_rng_seed(&rng, seed);
    for (size_t p = 0; p < plane; p++)
        x[p] = eq_rng_uniform(&rng);

    for (size_t a = 0; a < n; a++) {
        for (size_t b = 0; b < n; b++) {
            const size_t *src_a = maps + a * plane, *src_b = maps + b * plane;
            const size_t *src_ab = maps + group->mul[a * n + b] * plane;
            for (size_t p = 0; p < plane; p++)
                bx[p] = x[src_b[p]];
            for (size_t p = 0; p < plane; p++)
                abx[p] = bx[src_a[p]];
            for (size_t p = 0; p < plane; p++) {
                if (abx[p] != x[src_ab[p]]) {
                    size_t ab = group->mul[a * n + b];
                    free(x);
                    return eq_error(EQ_ERR_GROUP,
                                    "group '%s': the pixel action is not a homomorphism, act(%s, act(%s, x)) differs "
                                    "from act(%s * %s = %s, x) at pixel %zu of a %zux%zu image",
                                    group->name, group->element_names[a], group->element_names[b],
                                    group->element_names[a], group->element_names[b], group->element_names[ab], p,
                                    size, size);
                }
            }
        }
    }
    free(x);
    return EQ_OK;
}

eq_status eq_group_validate(const eq_group *group, size_t size, uint64_t seed)
{
    if (!group)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_group_validate: group is NULL");
    eq_status status = check_axioms(group);
    if (status != EQ_OK || size == 0 || !eq_group_has_pixel_action(group))
        return status;

    size_t plane, count;
    if (!eq_size_mul(size, size, &plane) || !eq_size_mul(plane, group->order, &count))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_group_validate: size %zu overflows", size);
    size_t *maps = malloc(count * sizeof *maps);
    if (!maps)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_group_validate: out of memory for %zux%zu maps", size, size);
    for (size_t a = 0; a < group->order && status == EQ_OK; a++)
        status = eq_group_pixel_permutation(group, a, size, maps + a * plane);
    if (status == EQ_OK)
        status = check_permutations(group, size, maps);
    if (status == EQ_OK)
        status = check_homomorphism(group, size, maps, seed);
    free(maps);
    return status;
}

static eq_status copy_spec(const eq_group_spec *spec, eq_group *group)
{
    size_t n = spec->order;

    memcpy(group->mul, spec->table, n * n * sizeof *group->mul);
    for (size_t a = 0; a < n; a++) {
        if (spec->element_names && spec->element_names[a])
            snprintf(group->element_names[a], EQ_GROUP_NAME_SIZE, "%s", spec->element_names[a]);
        else
            snprintf(group->element_names[a], EQ_GROUP_NAME_SIZE, "g%zu", a);
    }

    /* Inverses are derived here; an element without one keeps n, which
     * check_axioms then reports. */
    for (size_t a = 0; a < n; a++) {
        group->inv[a] = n;
        for (size_t b = 0; b < n; b++)
            if (spec->table[a * n + b] == 0 && spec->table[b * n + a] == 0)
                group->inv[a] = b;
    }

    if (spec->pixel_permutations) {
        size_t plane = spec->pixel_size * spec->pixel_size;
        for (size_t q = 0; q < n * plane; q++)
            if (spec->pixel_permutations[q] >= plane)
                return eq_error(EQ_ERR_GROUP,
                                "group '%s': the pixel map of element %zu sends pixel %zu to source %zu, outside the "
                                "%zux%zu image",
                                group->name, q / plane, q % plane, spec->pixel_permutations[q], spec->pixel_size,
                                spec->pixel_size);
        group->pixel_table = malloc(n * plane * sizeof *group->pixel_table);
        if (!group->pixel_table)
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "group '%s': out of memory", group->name);
        memcpy(group->pixel_table, spec->pixel_permutations, n * plane * sizeof *group->pixel_table);
        group->pixel_size = spec->pixel_size;
    } else {
        group->pixel_action = spec->pixel_action;
        group->user = spec->user;
    }
    return EQ_OK;
}

eq_status eq_group_create(const eq_group_spec *spec, eq_group **out)
{
    eq_group *group = NULL;

    if (out)
        *out = NULL;
    if (!spec || !out || !spec->table)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_group_create: spec, its table or out is NULL");
    const char *name = spec->name ? spec->name : "custom";
    if (strlen(name) >= EQ_GROUP_NAME_SIZE)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_group_create: name '%s' is longer than %d characters", name,
                        EQ_GROUP_NAME_SIZE - 1);
    if (spec->pixel_permutations && spec->pixel_size == 0)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_group_create: group '%s' has pixel permutations but pixel_size 0",
                        name);

    eq_status status = eq_group_alloc(name, spec->order, &group);
    if (status == EQ_OK)
        status = copy_spec(spec, group);
    if (status == EQ_OK) {
        size_t size = spec->pixel_permutations ? spec->pixel_size : 5;
        status = eq_group_validate(group, size, 0x5eed);
    }
    if (status != EQ_OK) {
        eq_group_destroy(group);
        return status;
    }
    *out = group;
    return EQ_OK;
}
