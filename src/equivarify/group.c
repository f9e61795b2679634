/* Finite groups: storage, queries and the two actions (pixels and blocks). */
#include "equivarify/group_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

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
    copy->pixel_map = group->pixel_map;
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

void eq_group_pixel_permutation(const eq_group *group, size_t a, size_t size, size_t *src)
{
    group->pixel_map(a, size, src);
}

static eq_status check_action_args(const char *function, const eq_group *group, size_t a,
                                   const eq_tensor *x, const eq_tensor *y)
{
    char xs[EQ_SHAPE_STR_SIZE], ys[EQ_SHAPE_STR_SIZE];

    if (!group || !x || !y || !x->data || !y->data)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: group, x or y is NULL", function);
    if (a >= group->order)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: element %zu is outside group %s of order %zu",
                        function, a, group->name, group->order);
    if (!eq_shape_equal(x->shape, y->shape))
        return eq_error(EQ_ERR_SHAPE, "%s: y has shape %s, expected the shape of x %s", function,
                        eq_shape_str(y->shape, ys), eq_shape_str(x->shape, xs));
    return EQ_OK;
}

eq_status eq_group_act_pixels(const eq_group *group, size_t a, const eq_tensor *x, eq_tensor *y)
{
    char xs[EQ_SHAPE_STR_SIZE];

    eq_status status = check_action_args("eq_group_act_pixels", group, a, x, y);
    if (status != EQ_OK)
        return status;
    if (x->shape.h != x->shape.w)
        return eq_error(EQ_ERR_SHAPE, "eq_group_act_pixels: images must be square, x has shape %s",
                        eq_shape_str(x->shape, xs));

    size_t size = x->shape.h, plane = size * size;
    size_t *src = malloc(plane * sizeof *src);
    if (!src)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_group_act_pixels: out of memory for a %zux%zu map", size, size);
    group->pixel_map(a, size, src);

    size_t planes = x->shape.n * x->shape.c;
    for (size_t q = 0; q < planes; q++) {
        const float *in = x->data + q * plane;
        float *out = y->data + q * plane;
        for (size_t p = 0; p < plane; p++)
            out[p] = in[src[p]];
    }
    free(src);
    return EQ_OK;
}

eq_status eq_group_act_blocks(const eq_group *group, size_t a, const eq_tensor *x, eq_tensor *y)
{
    char xs[EQ_SHAPE_STR_SIZE];

    eq_status status = check_action_args("eq_group_act_blocks", group, a, x, y);
    if (status != EQ_OK)
        return status;
    size_t n = group->order;
    if (x->shape.c % n != 0)
        return eq_error(EQ_ERR_SHAPE, "eq_group_act_blocks: %zu channels of %s do not split into %zu blocks of group %s",
                        x->shape.c, eq_shape_str(x->shape, xs), n, group->name);

    /* (a . x)_g = x_(g * a): block g of y is block g * a of x. */
    size_t block = (x->shape.c / n) * x->shape.h * x->shape.w;
    for (size_t i = 0; i < x->shape.n; i++) {
        const float *in = x->data + i * n * block;
        float *out = y->data + i * n * block;
        for (size_t g = 0; g < n; g++)
            memcpy(out + g * block, in + eq_group_mul(group, g, a) * block, block * sizeof(float));
    }
    return EQ_OK;
}
