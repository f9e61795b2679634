/* Group actions on samples: pixels, blocks, both, or none. */
#include "equivarify/action.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "equivarify/group_impl.h"

static int has_pixels(eq_action action)
{
    return action == EQ_ACTION_PIXELS || action == EQ_ACTION_BLOCKS_PIXELS;
}

static int has_blocks(eq_action action)
{
    return action == EQ_ACTION_BLOCKS || action == EQ_ACTION_BLOCKS_PIXELS;
}

const char *eq_action_name(eq_action action)
{
    switch (action) {
    case EQ_ACTION_PIXELS: return "pixels";
    case EQ_ACTION_BLOCKS: return "blocks";
    case EQ_ACTION_BLOCKS_PIXELS: return "blocks+pixels";
    case EQ_ACTION_TRIVIAL: return "trivial";
    }
    return "unknown";
}

eq_status eq_action_maps_prepare(eq_action_maps *maps, const char *who, const eq_group *group,
                                 eq_action action, eq_shape sample)
{
    char text[EQ_SHAPE_STR_SIZE];
    size_t n = group->order;

    sample.n = 1;
    if (maps->group == group && maps->action == action && eq_shape_equal(maps->sample, sample))
        return EQ_OK;
    if (action != EQ_ACTION_PIXELS && action != EQ_ACTION_BLOCKS && action != EQ_ACTION_BLOCKS_PIXELS
        && action != EQ_ACTION_TRIVIAL)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: unknown action %d", who, (int)action);
    if (has_pixels(action) && sample.h != sample.w)
        return eq_error(EQ_ERR_SHAPE, "%s: the %s action needs square images, but the sample %s is not square",
                        who, eq_action_name(action), eq_shape_str(sample, text));
    if (has_blocks(action) && sample.c % n != 0)
        return eq_error(EQ_ERR_SHAPE,
                        "%s: the %s action needs channels in %zu blocks, but the sample %s has %zu channels, "
                        "expected a multiple of the group order %zu",
                        who, eq_action_name(action), n, eq_shape_str(sample, text), sample.c, n);

    eq_action_maps_release(maps);
    if (has_pixels(action)) {
        size_t plane = sample.h * sample.w;
        maps->pixel_src = malloc(n * plane * sizeof *maps->pixel_src);
        if (!maps->pixel_src)
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: cannot allocate pixel maps for %zux%zu images", who,
                            sample.h, sample.w);
        for (size_t a = 0; a < n; a++) {
            eq_status status = eq_group_pixel_permutation(group, a, sample.h, maps->pixel_src + a * plane);
            if (status != EQ_OK) {
                eq_action_maps_release(maps);
                return status;
            }
        }
    }
    maps->group = group;
    maps->action = action;
    maps->sample = sample;
    return EQ_OK;
}

void eq_action_maps_release(eq_action_maps *maps)
{
    free(maps->pixel_src);
    memset(maps, 0, sizeof *maps);
}

/* Splits a sample into `blocks` blocks of `channels` planes of `plane` floats. */
static void layout(const eq_action_maps *maps, size_t *blocks, size_t *channels, size_t *plane)
{
    *blocks = has_blocks(maps->action) ? maps->group->order : 1;
    *channels = maps->sample.c / *blocks;
    *plane = maps->sample.h * maps->sample.w;
}

/* (a . x)_b = a (pixels) applied to x_(b * a); either part may be absent. */
void eq_action_apply(const eq_action_maps *maps, size_t a, const float *in, float *out)
{
    size_t blocks, channels, plane;

    layout(maps, &blocks, &channels, &plane);
    size_t block = channels * plane;
    const size_t *src = maps->pixel_src ? maps->pixel_src + a * plane : NULL;

    for (size_t b = 0; b < blocks; b++) {
        size_t from = blocks > 1 ? eq_group_mul(maps->group, b, a) : b;
        const float *in_block = in + from * block;
        float *out_block = out + b * block;
        if (!src) {
            memcpy(out_block, in_block, block * sizeof(float));
            continue;
        }
        for (size_t c = 0; c < channels; c++) {
            const float *in_plane = in_block + c * plane;
            float *out_plane = out_block + c * plane;
            for (size_t p = 0; p < plane; p++)
                out_plane[p] = in_plane[src[p]];
        }
    }
}

void eq_action_apply_adjoint_add(const eq_action_maps *maps, size_t a, const float *in, float *out)
{
    size_t blocks, channels, plane;

    layout(maps, &blocks, &channels, &plane);
    size_t block = channels * plane;
    const size_t *src = maps->pixel_src ? maps->pixel_src + a * plane : NULL;

    for (size_t b = 0; b < blocks; b++) {
        size_t to = blocks > 1 ? eq_group_mul(maps->group, b, a) : b;
        const float *in_block = in + b * block;
        float *out_block = out + to * block;
        for (size_t c = 0; c < channels; c++) {
            const float *in_plane = in_block + c * plane;
            float *out_plane = out_block + c * plane;
            if (src) {
                for (size_t p = 0; p < plane; p++)
                    out_plane[src[p]] += in_plane[p];
            } else {
                for (size_t p = 0; p < plane; p++)
                    out_plane[p] += in_plane[p];
            }
        }
    }
}

eq_status eq_group_act(const eq_group *group, eq_action action, size_t a, const eq_tensor *x, eq_tensor *y)
{
    char xs[EQ_SHAPE_STR_SIZE], ys[EQ_SHAPE_STR_SIZE];
    eq_action_maps maps = { 0 };

    if (!group || !x || !y || !x->data || !y->data)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_group_act: group, x or y is NULL");
    if (a >= group->order)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_group_act: element %zu is outside group %s of order %zu", a,
                        group->name, group->order);
    if (!eq_shape_equal(x->shape, y->shape))
        return eq_error(EQ_ERR_SHAPE, "eq_group_act: y has shape %s, expected the shape of x %s",
                        eq_shape_str(y->shape, ys), eq_shape_str(x->shape, xs));

    eq_status status = eq_action_maps_prepare(&maps, "eq_group_act", group, action, x->shape);
    if (status != EQ_OK)
        return status;
    size_t sample = x->shape.c * x->shape.h * x->shape.w;
    for (size_t i = 0; i < x->shape.n; i++)
        eq_action_apply(&maps, a, x->data + i * sample, y->data + i * sample);
    eq_action_maps_release(&maps);
    return EQ_OK;
}
