/* The equivarify layer: F(x)_g = h(g . x), all branches through one h.
 *
 * The n transformed copies of each sample are stacked into the batch,
 * sample-major: stacked[i * n + g] = g . x[i]. One call of h on that batch of
 * n * N then writes its output, (n * N, C', H', W'), straight into y, whose
 * memory is exactly (N, n * C', H', W') with block g = h(g . x[i]). Because
 * every branch runs the same h on the same batch, its parameter gradients sum
 * over the branches without extra code, and because each layer's output for a
 * sample depends only on that sample (not on its batch position), F(a . x)
 * equals a . F(x) bit for bit.
 *
 * The aligned variant then turns block g back by g^-1 on its pixels.
 *
 * For a regular input and an h that starts with a conv2d or dense layer
 * (flatten-dense included), the fused path (fused.c) skips the copies:
 * that layer computes every branch from x itself, with the same output
 * layout. */
#include "equivar/equivarify.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/layer_impl.h"
#include "core/parallel.h"
#include "equivarify/action.h"
#include "equivarify/fused.h"
#include "equivarify/group_impl.h"
#include "equivarify/query.h"

typedef struct equivarify_layer {
    eq_layer base;
    eq_layer *h;
    eq_group *group;
    eq_action input_action;
    int aligned;

    eq_tensor stacked;   /* (n * N, C, H, W): g . x for every sample and element */
    size_t stacked_capacity;
    eq_tensor dstacked;  /* (n * N, C, H, W): gradient of h's input */
    size_t dstacked_capacity;
    eq_tensor dh_out;    /* (n * N, C', H', W'): h's output gradient, aligned only */
    size_t dh_out_capacity;
    float *scratch;      /* one output block, aligned only */
    size_t scratch_capacity;

    eq_action_maps in_maps;  /* input action on one sample of x */
    eq_action_maps out_maps; /* pixel action on one block of h's output, aligned only */

    int fused_enabled;       /* the fused switch, see eq_equivarify_set_fused */
    eq_fused fused;
} equivarify_layer;

static const char *layer_name(const equivarify_layer *layer)
{
    return layer->aligned ? "equivarify_aligned" : "equivarify";
}

static eq_status stacked_input_shape(const equivarify_layer *layer, eq_shape in, eq_shape *stacked)
{
    size_t n = layer->group->order;

    if (!eq_size_mul(in.n, n, &stacked->n))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: batch %zu times group order %zu overflows", layer_name(layer),
                        in.n, n);
    stacked->c = in.c;
    stacked->h = in.h;
    stacked->w = in.w;
    return EQ_OK;
}

static eq_status check_input(const equivarify_layer *layer, eq_shape in)
{
    char text[EQ_SHAPE_STR_SIZE];
    eq_action action = layer->input_action;
    size_t n = layer->group->order;

    if ((action == EQ_ACTION_PIXELS || action == EQ_ACTION_BLOCKS_PIXELS) && in.h != in.w)
        return eq_error(EQ_ERR_SHAPE, "%s(%s, %s): input %s is not square, but the action needs H == W",
                        layer_name(layer), layer->group->name, eq_action_name(action), eq_shape_str(in, text));
    if ((action == EQ_ACTION_BLOCKS || action == EQ_ACTION_BLOCKS_PIXELS) && in.c % n != 0)
        return eq_error(EQ_ERR_SHAPE,
                        "%s(%s, %s): input %s has %zu channels, expected a multiple of the group order %zu",
                        layer_name(layer), layer->group->name, eq_action_name(action), eq_shape_str(in, text),
                        in.c, n);
    return EQ_OK;
}

static eq_status equivarify_output_shape(const eq_layer *base, eq_shape in, eq_shape *out)
{
    const equivarify_layer *layer = (const equivarify_layer *)base;
    char text[EQ_SHAPE_STR_SIZE];
    eq_shape stacked, h_out;
    size_t n = layer->group->order;

    eq_status status = check_input(layer, in);
    if (status == EQ_OK)
        status = stacked_input_shape(layer, in, &stacked);
    if (status == EQ_OK)
        status = eq_layer_output_shape(layer->h, stacked, &h_out);
    if (status != EQ_OK)
        return status;

    /* Each sample's n rows of h's output become its n blocks. */
    if (h_out.n != stacked.n)
        return eq_error(EQ_ERR_SHAPE, "%s: h changed the batch size from %zu to %zu", layer_name(layer), stacked.n,
                        h_out.n);
    if (layer->aligned && h_out.h != h_out.w)
        return eq_error(EQ_ERR_SHAPE, "%s(%s): h's output %s is not square, but the aligned variant turns it back",
                        layer_name(layer), layer->group->name, eq_shape_str(h_out, text));
    out->n = in.n;
    if (!eq_size_mul(h_out.c, n, &out->c))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: %zu channels times group order %zu overflows", layer_name(layer),
                        h_out.c, n);
    out->h = h_out.h;
    out->w = h_out.w;
    return EQ_OK;
}

/* Grows buffer *data to hold `count` floats, reusing it when it is big enough. */
static eq_status reserve(const equivarify_layer *layer, float **data, size_t *capacity, size_t count)
{
    if (eq_grow_floats(data, capacity, count))
        return EQ_OK;
    return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu floats", layer_name(layer), count);
}

/* Views t (N, n * C', H', W') as h's output (n * N, C', H', W'). */
static eq_tensor branch_view(const equivarify_layer *layer, eq_shape shape, float *data)
{
    size_t n = layer->group->order;
    eq_tensor view = { eq_shape_make(shape.n * n, shape.c / n, shape.h, shape.w), data };
    return view;
}

/* y_g = g^-1 . y_g (pixels) for every sample and block. */
static void turn_blocks_back(equivarify_layer *layer, eq_tensor *y)
{
    size_t n = layer->group->order;
    size_t block = y->shape.c / n * y->shape.h * y->shape.w;

    for (size_t i = 0; i < y->shape.n; i++) {
        for (size_t g = 1; g < n; g++) {
            float *data = y->data + (i * n + g) * block;
            eq_action_apply(&layer->out_maps, eq_group_inv(layer->group, g), data, layer->scratch);
            memcpy(data, layer->scratch, block * sizeof(float));
        }
    }
}

/* Floats copied per parallel task of the stacking and unstacking loops:
 * enough to repay waking a thread. */
#define STACK_GRAIN_FLOATS 16384

typedef struct stack_task {
    const equivarify_layer *layer;
    size_t sample; /* floats per sample of x */
    const float *x;
    float *dx;
} stack_task;

/* stacked[i * n + g] = g . x[i] for items i * n + g in [begin, end). */
static void stack_items(void *ctx, size_t begin, size_t end)
{
    const stack_task *task = ctx;
    const size_t n = task->layer->group->order;

    for (size_t item = begin; item < end; item++)
        eq_action_apply(&task->layer->in_maps, item % n, task->x + item / n * task->sample,
                        task->layer->stacked.data + item * task->sample);
}

/* dx[i] = sum over g, in element order, of the adjoint of g applied to
 * dstacked[i * n + g], for samples i in [begin, end). */
static void unstack_samples(void *ctx, size_t begin, size_t end)
{
    const stack_task *task = ctx;
    const size_t n = task->layer->group->order;

    memset(task->dx + begin * task->sample, 0, (end - begin) * task->sample * sizeof(float));
    for (size_t i = begin; i < end; i++)
        for (size_t g = 0; g < n; g++)
            eq_action_apply_adjoint_add(&task->layer->in_maps, g,
                                        task->layer->dstacked.data + (i * n + g) * task->sample,
                                        task->dx + i * task->sample);
}

/* Returns the number of items of `floats` floats each per parallel task. */
static size_t items_per_task(size_t floats)
{
    return floats >= STACK_GRAIN_FLOATS ? 1 : STACK_GRAIN_FLOATS / floats;
}

/* The block path (and its spectral form) needs the regular action, because
 * its source table is the block permutation, and a plain output. */
static int takes_fused_path(equivarify_layer *layer)
{
    return layer->fused_enabled && !layer->aligned && layer->input_action == EQ_ACTION_BLOCKS
           && eq_fused_first_layer(layer->h) != NULL;
}

/* The gathered path covers the other actions and the aligned variant when
 * h starts with a conv2d whose windows the pixel action maps onto each
 * other (see eq_fused_gathered_prepare). */
static int takes_gathered_path(equivarify_layer *layer, eq_shape in)
{
    return layer->fused_enabled && eq_fused_gathered_prepare(&layer->fused, layer->h, layer->group,
                                                              layer->input_action, in);
}

/* Turns every output block g back by g^-1 on its pixels: the last step of
 * the aligned variant's forward. */
static eq_status finish_aligned(equivarify_layer *layer, eq_tensor *y, eq_shape h_out)
{
    eq_status status = eq_action_maps_prepare(&layer->out_maps, layer_name(layer), layer->group, EQ_ACTION_PIXELS,
                                              h_out);
    if (status == EQ_OK)
        status = reserve(layer, &layer->scratch, &layer->scratch_capacity, eq_shape_numel(h_out) / h_out.n);
    if (status != EQ_OK)
        return status;
    turn_blocks_back(layer, y);
    return EQ_OK;
}

static eq_status equivarify_forward(eq_layer *base, const eq_tensor *x, eq_tensor *y)
{
    equivarify_layer *layer = (equivarify_layer *)base;
    size_t n = layer->group->order;
    eq_shape stacked;

    layer->fused.active = 0;
    if (takes_fused_path(layer)) {
        eq_tensor h_out = branch_view(layer, y->shape, y->data);
        return eq_fused_forward(&layer->fused, layer_name(layer), layer->h, layer->group, x, &h_out);
    }
    if (takes_gathered_path(layer, x->shape)) {
        eq_tensor h_out = branch_view(layer, y->shape, y->data);
        eq_status status = eq_fused_gathered_forward(&layer->fused, layer_name(layer), layer->h, layer->group, x,
                                                     &h_out);
        if (status != EQ_OK || !layer->aligned)
            return status;
        return finish_aligned(layer, y, h_out.shape);
    }

    eq_status status = stacked_input_shape(layer, x->shape, &stacked);
    size_t count = eq_shape_numel(stacked);
    if (status == EQ_OK)
        status = eq_action_maps_prepare(&layer->in_maps, layer_name(layer), layer->group, layer->input_action,
                                        x->shape);
    if (status == EQ_OK)
        status = reserve(layer, &layer->stacked.data, &layer->stacked_capacity, count);
    if (status != EQ_OK)
        return status;
    layer->stacked.shape = stacked;

    stack_task task = { .layer = layer, .sample = x->shape.c * x->shape.h * x->shape.w, .x = x->data };
    eq_parallel_for(x->shape.n * n, items_per_task(task.sample), stack_items, &task);

    eq_tensor h_out = branch_view(layer, y->shape, y->data);
    status = eq_layer_forward(layer->h, &layer->stacked, &h_out);
    if (status != EQ_OK || !layer->aligned)
        return status;
    return finish_aligned(layer, y, h_out.shape);
}

static eq_status equivarify_backward(eq_layer *base, const eq_tensor *dy, eq_tensor *dx)
{
    equivarify_layer *layer = (equivarify_layer *)base;
    size_t n = layer->group->order;
    eq_tensor dh_out = branch_view(layer, dy->shape, dy->data);
    eq_status status;

    if (layer->fused.active && !layer->aligned)
        return eq_fused_backward(&layer->fused, layer_name(layer), layer->h, &dh_out, dx);

    /* Aligned: h's output gradient is the adjoint of g^-1 applied to dy_g. */
    if (layer->aligned) {
        size_t count = eq_shape_numel(dy->shape), block = count / (dy->shape.n * n);
        status = reserve(layer, &layer->dh_out.data, &layer->dh_out_capacity, count);
        if (status != EQ_OK)
            return status;
        memset(layer->dh_out.data, 0, count * sizeof(float));
        for (size_t i = 0; i < dy->shape.n; i++)
            for (size_t g = 0; g < n; g++)
                eq_action_apply_adjoint_add(&layer->out_maps, eq_group_inv(layer->group, g),
                                            dy->data + (i * n + g) * block, layer->dh_out.data + (i * n + g) * block);
        dh_out.data = layer->dh_out.data;
    }
    if (layer->fused.active)
        return eq_fused_backward(&layer->fused, layer_name(layer), layer->h, &dh_out, dx);

    eq_tensor *dstacked = NULL;
    if (dx) {
        size_t count = eq_shape_numel(layer->stacked.shape);
        status = reserve(layer, &layer->dstacked.data, &layer->dstacked_capacity, count);
        if (status != EQ_OK)
            return status;
        layer->dstacked.shape = layer->stacked.shape;
        dstacked = &layer->dstacked;
    }
    status = eq_layer_backward(layer->h, &dh_out, dstacked);
    if (status != EQ_OK || !dx)
        return status;

    stack_task task = { .layer = layer, .sample = dx->shape.c * dx->shape.h * dx->shape.w, .dx = dx->data };
    eq_parallel_for(dx->shape.n, items_per_task(n * task.sample), unstack_samples, &task);
    return EQ_OK;
}

static size_t equivarify_param_count(const eq_layer *base)
{
    return eq_layer_param_count(((const equivarify_layer *)base)->h);
}

static eq_param equivarify_param(eq_layer *base, size_t index)
{
    eq_param param;

    eq_layer_param(((equivarify_layer *)base)->h, index, &param);
    return param;
}

static void equivarify_init_he(eq_layer *base, eq_rng *rng)
{
    eq_layer_init_he(((equivarify_layer *)base)->h, rng);
}

static size_t equivarify_describe(const eq_layer *base, char *buf, size_t size)
{
    const equivarify_layer *layer = (const equivarify_layer *)base;
    size_t used = eq_describe_append(buf, size, 0, "%s(%s, %s, ", layer_name(layer), layer->group->name,
                                     eq_action_name(layer->input_action));
    used += eq_layer_describe(layer->h, used < size ? buf + used : NULL, used < size ? size - used : 0);
    return eq_describe_append(buf, size, used, ")");
}

static void equivarify_destroy(eq_layer *base)
{
    equivarify_layer *layer = (equivarify_layer *)base;

    eq_layer_destroy(layer->h);
    eq_group_destroy(layer->group);
    eq_free(layer->stacked.data);
    eq_free(layer->dstacked.data);
    eq_free(layer->dh_out.data);
    eq_free(layer->scratch);
    eq_action_maps_release(&layer->in_maps);
    eq_action_maps_release(&layer->out_maps);
    eq_fused_release(&layer->fused);
    free(layer);
}

static const eq_layer_ops equivarify_ops = {
    .kind = "equivarify",
    .output_shape = equivarify_output_shape,
    .forward = equivarify_forward,
    .backward = equivarify_backward,
    .param_count = equivarify_param_count,
    .param = equivarify_param,
    .init_he = equivarify_init_he,
    .describe = equivarify_describe,
    .destroy = equivarify_destroy,
};

static eq_status create(eq_layer *h, const eq_group *group, eq_action input_action, int aligned,
                        eq_layer **out)
{
    const char *who = aligned ? "eq_equivarify_aligned" : "eq_equivarify";
    equivarify_layer *layer = NULL;
    eq_status status = EQ_OK;

    if (out)
        *out = NULL;
    if (!h || !group || !out)
        status = eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: h, group or out is NULL", who);
    else if (input_action != EQ_ACTION_PIXELS && input_action != EQ_ACTION_BLOCKS
             && input_action != EQ_ACTION_BLOCKS_PIXELS && input_action != EQ_ACTION_TRIVIAL)
        status = eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: unknown input action %d", who, (int)input_action);
    else if ((input_action == EQ_ACTION_PIXELS || input_action == EQ_ACTION_BLOCKS_PIXELS || aligned)
             && !eq_group_has_pixel_action(group))
        status = eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: group %s has no pixel action", who, group->name);
    if (status != EQ_OK) {
        eq_layer_destroy(h);
        return status;
    }

    layer = calloc(1, sizeof *layer);
    if (!layer) {
        eq_layer_destroy(h);
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
    }
    eq_layer_base_init(&layer->base, &equivarify_ops);
    layer->h = h;
    layer->input_action = input_action;
    layer->aligned = aligned;
    layer->fused_enabled = eq_equivarify_fused_default();
    status = eq_group_clone(group, &layer->group);
    if (status != EQ_OK) {
        equivarify_destroy(&layer->base);
        return status;
    }
    *out = &layer->base;
    return EQ_OK;
}

eq_status eq_equivarify(eq_layer *h, const eq_group *group, eq_action input_action, eq_layer **out)
{
    return create(h, group, input_action, 0, out);
}

eq_status eq_equivarify_aligned(eq_layer *h, const eq_group *group, eq_action input_action, eq_layer **out)
{
    return create(h, group, input_action, 1, out);
}

/* Used by eq_equivariant_actions; NULL for layers of other kinds. */
int eq_equivarify_query(const eq_layer *base, const eq_group **group, eq_action *input_action,
                        eq_action *output_action)
{
    if (!base || base->ops != &equivarify_ops)
        return 0;
    const equivarify_layer *layer = (const equivarify_layer *)base;
    *group = layer->group;
    *input_action = layer->input_action;
    *output_action = layer->aligned ? EQ_ACTION_BLOCKS_PIXELS : EQ_ACTION_BLOCKS;
    return 1;
}

eq_status eq_equivarify_set_fused(eq_layer *base, int enabled)
{
    if (!base || base->ops != &equivarify_ops)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_equivarify_set_fused: layer is %s, expected an equivarify layer",
                        eq_layer_kind(base));
    ((equivarify_layer *)base)->fused_enabled = enabled != 0;
    return EQ_OK;
}

int eq_equivarify_used_fused(const eq_layer *base)
{
    if (!base || base->ops != &equivarify_ops)
        return 0;
    return ((const equivarify_layer *)base)->fused.active;
}
