/* Building equivariant networks: action queries, checked append, and the
 * numeric equivariance check for users' own layers and groups. */
#include "equivar/equivarify.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "equivarify/group_impl.h"
#include "equivarify/query.h"

eq_status eq_equivariant_actions(const eq_layer *layer, const eq_group **group, eq_action *input_action,
                                 eq_action *output_action)
{
    if (!layer || !group || !input_action || !output_action)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_equivariant_actions: an argument is NULL");
    if (eq_equivarify_query(layer, group, input_action, output_action))
        return EQ_OK;
    if (eq_invariant_pool_query(layer, group)) {
        *input_action = EQ_ACTION_BLOCKS;
        *output_action = EQ_ACTION_TRIVIAL;
        return EQ_OK;
    }
    return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_equivariant_actions: a %s layer has no group action",
                    eq_layer_kind(layer));
}

static int same_group(const eq_group *a, const eq_group *b)
{
    return a->order == b->order && memcmp(a->mul, b->mul, a->order * a->order * sizeof *a->mul) == 0
           && strcmp(a->name, b->name) == 0;
}

/* The state after the layers already in seq: whether an equivariant layer
 * came before, and which action and group its output carries. */
typedef struct chain_state {
    int constrained;
    const eq_group *group;
    eq_action action;
} chain_state;

static void advance(chain_state *state, const eq_layer *layer)
{
    const eq_group *group;
    eq_action in, out;

    if (eq_equivarify_query(layer, &group, &in, &out)) {
        *state = (chain_state){ 1, group, out };
    } else if (eq_invariant_pool_query(layer, &group)) {
        eq_action next = state->constrained && state->action == EQ_ACTION_BLOCKS_PIXELS ? EQ_ACTION_PIXELS
                                                                                          : EQ_ACTION_TRIVIAL;
        *state = (chain_state){ 1, group, next };
    } else if (eq_projection_query(layer)) {
        state->constrained = 0; /* p ends the equivariant part on purpose */
    }
}

static eq_status check_append(const chain_state *state, eq_layer *layer, size_t position)
{
    const eq_group *group;
    eq_action in, out;
    char text[256];

    eq_layer_describe(layer, text, sizeof text);
    if (!state->constrained || state->action == EQ_ACTION_TRIVIAL)
        return EQ_OK;

    int is_pool = eq_invariant_pool_query(layer, &group);
    if (eq_equivarify_query(layer, &group, &in, &out) || is_pool) {
        if (!same_group(group, state->group))
            return eq_error(EQ_ERR_GROUP, "layer %zu (%s) uses group %s, but the previous equivariant layer uses %s",
                            position, text, group->name, state->group->name);
        if (is_pool) {
            if (state->action == EQ_ACTION_BLOCKS || state->action == EQ_ACTION_BLOCKS_PIXELS)
                return EQ_OK;
            return eq_error(EQ_ERR_GROUP,
                            "layer %zu (%s) expects input action blocks or blocks+pixels, but the previous "
                            "equivariant layer outputs %s",
                            position, text, eq_action_name(state->action));
        }
        if (in != state->action)
            return eq_error(EQ_ERR_GROUP,
                            "layer %zu (%s) expects input action %s, but the previous equivariant layer outputs %s",
                            position, text, eq_action_name(in), eq_action_name(state->action));
        return EQ_OK;
    }
    if (strcmp(eq_layer_kind(layer), "relu") == 0 || eq_projection_query(layer))
        return EQ_OK;

    /* Max-pool works on each channel alone, and flatten keeps every block
     * a contiguous run of features, so both commute with permuting blocks.
     * They are kept out of the pixel actions: a rotation changes a
     * window's scan order and so the winner of a tie (-0 against +0), and
     * a flattened tensor has no pixels left to rotate. */
    int per_channel = strcmp(eq_layer_kind(layer), "maxpool") == 0 || strcmp(eq_layer_kind(layer), "flatten") == 0;
    if (per_channel && state->action == EQ_ACTION_BLOCKS)
        return EQ_OK;
    if (per_channel)
        return eq_error(EQ_ERR_GROUP,
                        "layer %zu (%s) commutes with the blocks action only, but the previous equivariant layer "
                        "outputs %s; wrap it with eq_equivarify",
                        position, text, eq_action_name(state->action));
    return eq_error(EQ_ERR_GROUP,
                    "layer %zu (%s) does not commute with the %s action of group %s; wrap it with eq_equivarify",
                    position, text, eq_action_name(state->action), state->group->name);
}

eq_status eq_equivariant_append(eq_layer *seq, eq_layer *layer)
{
    chain_state state = { 0, NULL, EQ_ACTION_TRIVIAL };

    if (!seq || !layer || strcmp(eq_layer_kind(seq), "sequential") != 0) {
        eq_layer_destroy(layer);
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_equivariant_append: seq must be a sequential layer and layer non-NULL");
    }
    size_t length = eq_sequential_length(seq);
    for (size_t i = 0; i < length; i++)
        advance(&state, eq_sequential_get(seq, i));

    eq_status status = check_append(&state, layer, length);
    if (status != EQ_OK) {
        eq_layer_destroy(layer);
        return status;
    }
    return eq_sequential_append(seq, layer);
}

eq_status eq_check_equivariance(eq_layer *layer, const eq_group *group, eq_action input_action,
                                eq_action output_action, const eq_tensor *x, float *max_error,
                                size_t *worst_element)
{
    eq_tensor *ax = NULL, *y = NULL, *ay = NULL, *y_of_ax = NULL;
    eq_shape out;

    if (!layer || !group || !x || !max_error || !worst_element)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_check_equivariance: an argument is NULL");
    *max_error = 0.0f;
    *worst_element = 0;

    eq_status status = eq_layer_output_shape(layer, x->shape, &out);
    if (status == EQ_OK)
        status = eq_tensor_create(x->shape, &ax);
    if (status == EQ_OK)
        status = eq_tensor_create(out, &y);
    if (status == EQ_OK)
        status = eq_tensor_create(out, &ay);
    if (status == EQ_OK)
        status = eq_tensor_create(out, &y_of_ax);
    if (status == EQ_OK)
        status = eq_layer_forward(layer, x, y);

    size_t count = eq_shape_numel(out);
    for (size_t a = 0; status == EQ_OK && a < group->order; a++) {
        status = eq_group_act(group, input_action, a, x, ax);
        if (status == EQ_OK)
            status = eq_layer_forward(layer, ax, y_of_ax);
        if (status == EQ_OK)
            status = eq_group_act(group, output_action, a, y, ay);
        if (status != EQ_OK)
            break;

        for (size_t q = 0; q < count; q++) {
            float error = fabsf(y_of_ax->data[q] - ay->data[q]);
            /* NaN compares false, so it is caught by the inequality below. */
            if (!(error <= *max_error)) {
                *max_error = isnan(error) ? INFINITY : error;
                *worst_element = a;
            }
        }
    }

    eq_tensor_destroy(ax);
    eq_tensor_destroy(y);
    eq_tensor_destroy(ay);
    eq_tensor_destroy(y_of_ax);
    return status;
}
