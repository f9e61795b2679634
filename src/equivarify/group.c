/* Finite groups: storage, queries and the two actions (pixels and blocks). */
#include "equivarify/group_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "equivar/equivarify.h"

eq_status eq_group_alloc(const char *name, size_t order, eq_group **out)
{
    if (order == 0 || order > EQ_GROUP_MAX_ORDER)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "group '%s': order %zu is outside 1..%d", name, order,
                        EQ_GROUP_MAX_ORDER);

    eq_group *group = calloc(1, sizeof *group);
    if (!group)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "group '%s': out of memory", name);
    group->order = order;
    group->mul = calloc(order * order, sizeof *group->mul);
    group->inv = calloc(order, sizeof *group->inv);
    group->element_names = calloc(order, sizeof *group->element_names);
    if (!group->mul || !group->inv || !group->element_names) {
        eq_group_destroy(group);
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "group '%s': out of memory", name);
    }
    snprintf(group->name, sizeof group->name, "%s", name);
    *out = group;
    return EQ_OK;
}

eq_status eq_group_clone(const eq_group *group, eq_group **out)
{
    eq_group *copy;
    size_t n = group->order;

    eq_status status = eq_group_alloc(group->name, n, &copy);
    if (status != EQ_OK)
        return status;
    memcpy(copy->mul, group->mul, n * n * sizeof *copy->mul);
    memcpy(copy->inv, group->inv, n * sizeof *copy->inv);
    memcpy(copy->element_names, group->element_names, n * sizeof *copy->element_names);
    copy->pixel_action = group->pixel_action;
    copy->user = group->user;
    copy->pixel_size = group->pixel_size;
    if (group->pixel_table) {
        size_t count = n * group->pixel_size * group->pixel_size;
        copy->pixel_table = malloc(count * sizeof *copy->pixel_table);
        if (!copy->pixel_table) {
            eq_group_destroy(copy);
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "group '%s': out of memory", group->name);
        }
        memcpy(copy->pixel_table, group->pixel_table, count * sizeof *copy->pixel_table);
    }
    *out = copy;
    return EQ_OK;
}

void eq_group_destroy(eq_group *group)
{
    if (!group)
        return;
    free(group->mul);
    free(group->inv);
    free(group->element_names);
    free(group->pixel_table);
    free(group);
}

size_t eq_group_order(const eq_group *group)
{
    return group ? group->order : 0;
}

size_t eq_group_mul(const eq_group *group, size_t a, size_t b)
{
    return group->mul[a * group->order + b];
}

size_t eq_group_inv(const eq_group *group, size_t a)
{
    return group->inv[a];
}

const char *eq_group_name(const eq_group *group)
{
    return group ? group->name : "(null)";
}

const char *eq_group_element_name(const eq_group *group, size_t a)
{
    if (!group || a >= group->order)
        return "(invalid element)";
    return group->element_names[a];
}

int eq_group_has_pixel_action(const eq_group *group)
{
    return group->pixel_table != NULL || group->pixel_action != NULL;
}

eq_status eq_group_pixel_permutation(const eq_group *group, size_t a, size_t size, size_t *src)
{
    size_t plane = size * size;

    if (group->pixel_table) {
        if (size != group->pixel_size)
            return eq_error(EQ_ERR_SHAPE, "group '%s': the pixel action is defined for %zux%zu images, not %zux%zu",
                            group->name, group->pixel_size, group->pixel_size, size, size);
        memcpy(src, group->pixel_table + a * plane, plane * sizeof *src);
        return EQ_OK;
    }
    if (!group->pixel_action)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "group '%s' has no pixel action", group->name);

    eq_status status = group->pixel_action(group->user, a, size, src);
    if (status != EQ_OK)
        return eq_error(status, "group '%s': the pixel action callback failed for element %zu on %zux%zu images (%s)",
                        group->name, a, size, size, eq_status_string(status));
    for (size_t p = 0; p < plane; p++)
        if (src[p] >= plane)
            return eq_error(EQ_ERR_GROUP, "group '%s': element %zu maps pixel %zu to source %zu, outside the %zux%zu image",
                            group->name, a, p, src[p], size, size);
    return EQ_OK;
}

eq_status eq_group_act_pixels(const eq_group *group, size_t a, const eq_tensor *x, eq_tensor *y)
{
    return eq_group_act(group, EQ_ACTION_PIXELS, a, x, y);
}

eq_status eq_group_act_blocks(const eq_group *group, size_t a, const eq_tensor *x, eq_tensor *y)
{
    return eq_group_act(group, EQ_ACTION_BLOCKS, a, x, y);
}
