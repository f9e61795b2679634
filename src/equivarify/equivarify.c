/* The equivarify layer: F(x)_g = h(g . x), all branches through one h.
 *
 * The n transformed copies of each sample are stacked into the batch,
 * sample-major: stacked[i * n + g] = g . x[i]. One call of h on that batch of
 * n * N then writes its output, (n * N, C', H', W'), straight into y, whose
 * memory is exactly (N, n * C', H', W') with block g = h(g . x[i]). Because
 * every branch runs the same h on the same batch, its parameter gradients sum
 * over the branches without extra code, and because each layer's output for a
 * sample depends only on that sample (not on its batch position), F(a . x)
 * equals a . F(x) bit for bit. */
#include "equivar/equivarify.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/layer_impl.h"
#include "equivarify/group_impl.h"

typedef struct equivarify_layer {
    eq_layer base;
    eq_layer *h;
    eq_group *group;
    eq_action input_action;

    eq_tensor stacked;   /* (n * N, C, H, W): g . x for every sample and element */
    eq_tensor dstacked;  /* (n * N, C, H, W): gradient of h's input */
    size_t capacity;     /* floats allocated in stacked and dstacked */
    size_t *pixel_src;   /* n maps of H * H source indices, for pixel actions */
    size_t pixel_size;   /* H of the cached maps, 0 if none */
} equivarify_layer;

static eq_status stacked_input_shape(const equivarify_layer *layer, eq_shape in, eq_shape *stacked)
{
    char text[EQ_SHAPE_STR_SIZE];
    size_t n = layer->group->order;

    if (layer->input_action == EQ_ACTION_PIXELS && in.h != in.w)
        return eq_error(EQ_ERR_SHAPE,
                        "equivarify(%s, pixels): input %s is not square, but the pixel action needs H == W",
                        layer->group->name, eq_shape_str(in, text));
    if (layer->input_action == EQ_ACTION_BLOCKS && in.c % n != 0)
        return eq_error(EQ_ERR_SHAPE,
                        "equivarify(%s, blocks): input %s has %zu channels, expected a multiple of the group order %zu",
                        layer->group->name, eq_shape_str(in, text), in.c, n);
    if (!eq_size_mul(in.n, n, &stacked->n))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "equivarify: batch %zu times group order %zu overflows", in.n, n);
    stacked->c = in.c;
    stacked->h = in.h;
    stacked->w = in.w;
    return EQ_OK;
}

static eq_status equivarify_output_shape(const eq_layer *base, eq_shape in, eq_shape *out)
{
    const equivarify_layer *layer = (const equivarify_layer *)base;
    eq_shape stacked, h_out;

    eq_status status = stacked_input_shape(layer, in, &stacked);
    if (status != EQ_OK)
        return status;
    status = eq_layer_output_shape(layer->h, stacked, &h_out);
    if (status != EQ_OK)
        return status;

    /* h_out.n == n * N for any per-sample h; its n rows per sample become blocks. */
    size_t n = layer->group->order;
    if (h_out.n != stacked.n)
        return eq_error(EQ_ERR_SHAPE, "equivarify: h changed the batch size from %zu to %zu", stacked.n, h_out.n);
    out->n = in.n;
    if (!eq_size_mul(h_out.c, n, &out->c))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "equivarify: %zu channels times group order %zu overflows", h_out.c, n);
    out->h = h_out.h;
    out->w = h_out.w;
    return EQ_OK;
}

static eq_status reserve(equivarify_layer *layer, eq_shape stacked)
{
    size_t count = eq_shape_numel(stacked);

    if (count == 0)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "equivarify: stacked input size overflows");
    layer->stacked.shape = stacked;
    layer->dstacked.shape = stacked;
    if (count <= layer->capacity)
        return EQ_OK;

    eq_free(layer->stacked.data);
    eq_free(layer->dstacked.data);
    layer->stacked.data = eq_alloc_floats(count);
    layer->dstacked.data = eq_alloc_floats(count);
    layer->capacity = 0;
    if (!layer->stacked.data || !layer->dstacked.data)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "equivarify: cannot allocate 2 x %zu floats for the stacked input", count);
    layer->capacity = count;
    return EQ_OK;
}

static eq_status cache_pixel_maps(equivarify_layer *layer, size_t size)
{
    size_t n = layer->group->order, plane = size * size;

    if (layer->pixel_size == size)
        return EQ_OK;
    free(layer->pixel_src);
    layer->pixel_size = 0;
    layer->pixel_src = malloc(n * plane * sizeof *layer->pixel_src);
    if (!layer->pixel_src)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "equivarify: cannot allocate pixel maps for %zux%zu images", size, size);
    for (size_t g = 0; g < n; g++)
        eq_group_pixel_permutation(layer->group, g, size, layer->pixel_src + g * plane);
    layer->pixel_size = size;
    return EQ_OK;
}

/* stacked[i * n + g] = g . x[i] */
static void stack_transformed(const equivarify_layer *layer, const eq_tensor *x)
{
    size_t n = layer->group->order;
    size_t sample = x->shape.c * x->shape.h * x->shape.w;

    if (layer->input_action == EQ_ACTION_PIXELS) {
        size_t plane = x->shape.h * x->shape.w;
        for (size_t i = 0; i < x->shape.n; i++) {
            for (size_t g = 0; g < n; g++) {
                const size_t *src = layer->pixel_src + g * plane;
                float *out = layer->stacked.data + (i * n + g) * sample;
                const float *in = x->data + i * sample;
                for (size_t c = 0; c < x->shape.c; c++)
                    for (size_t p = 0; p < plane; p++)
                        out[c * plane + p] = in[c * plane + src[p]];
            }
        }
        return;
    }

    /* Regular action: block b of g . x is block b * g of x. */
    size_t block = sample / n;
    for (size_t i = 0; i < x->shape.n; i++) {
        const float *in = x->data + i * sample;
        for (size_t g = 0; g < n; g++) {
            float *out = layer->stacked.data + (i * n + g) * sample;
            for (size_t b = 0; b < n; b++)
                memcpy(out + b * block, in + eq_group_mul(layer->group, b, g) * block, block * sizeof(float));
        }
    }
}

/* dx[i] = sum over g of the adjoint of the g-action applied to
 * dstacked[i * n + g], added in element order g = 0..n-1. */
static void unstack_gradient(const equivarify_layer *layer, eq_tensor *dx)
{
    size_t n = layer->group->order;
    size_t sample = dx->shape.c * dx->shape.h * dx->shape.w;

    memset(dx->data, 0, eq_shape_numel(dx->shape) * sizeof(float));
    if (layer->input_action == EQ_ACTION_PIXELS) {
        size_t plane = dx->shape.h * dx->shape.w;
        for (size_t i = 0; i < dx->shape.n; i++) {
            float *out = dx->data + i * sample;
            for (size_t g = 0; g < n; g++) {
                const size_t *src = layer->pixel_src + g * plane;
                const float *in = layer->dstacked.data + (i * n + g) * sample;
                for (size_t c = 0; c < dx->shape.c; c++)
                    for (size_t p = 0; p < plane; p++)
                        out[c * plane + src[p]] += in[c * plane + p];
            }
        }
        return;
    }

    size_t block = sample / n;
    for (size_t i = 0; i < dx->shape.n; i++) {
        float *out = dx->data + i * sample;
        for (size_t g = 0; g < n; g++) {
            const float *in = layer->dstacked.data + (i * n + g) * sample;
            for (size_t b = 0; b < n; b++) {
                float *dst = out + eq_group_mul(layer->group, b, g) * block;
                const float *grad = in + b * block;
                for (size_t q = 0; q < block; q++)
                    dst[q] += grad[q];
            }
        }
    }
}

/* Views y (N, n * C', H', W') as h's output (n * N, C', H', W'). */
static eq_tensor branch_view(const equivarify_layer *layer, const eq_tensor *t)
{
    size_t n = layer->group->order;
    eq_tensor view = { eq_shape_make(t->shape.n * n, t->shape.c / n, t->shape.h, t->shape.w), t->data };
    return view;
}

static eq_status equivarify_forward(eq_layer *base, const eq_tensor *x, eq_tensor *y)
{
    equivarify_layer *layer = (equivarify_layer *)base;
    eq_shape stacked;

    eq_status status = stacked_input_shape(layer, x->shape, &stacked);
    if (status == EQ_OK)
        status = reserve(layer, stacked);
    if (status == EQ_OK && layer->input_action == EQ_ACTION_PIXELS)
        status = cache_pixel_maps(layer, x->shape.h);
    if (status != EQ_OK)
        return status;

    stack_transformed(layer, x);
    eq_tensor h_out = branch_view(layer, y);
    return eq_layer_forward(layer->h, &layer->stacked, &h_out);
}

static eq_status equivarify_backward(eq_layer *base, const eq_tensor *dy, eq_tensor *dx)
{
    equivarify_layer *layer = (equivarify_layer *)base;
    eq_tensor dh_out = branch_view(layer, dy);

    eq_status status = eq_layer_backward(layer->h, &dh_out, dx ? &layer->dstacked : NULL);
    if (status != EQ_OK || !dx)
        return status;
    unstack_gradient(layer, dx);
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

static const char *action_name(eq_action action)
{
    return action == EQ_ACTION_PIXELS ? "pixels" : "blocks";
}

static size_t equivarify_describe(const eq_layer *base, char *buf, size_t size)
{
    const equivarify_layer *layer = (const equivarify_layer *)base;
    size_t used = eq_describe_append(buf, size, 0, "equivarify(%s, %s, ", layer->group->name,
                                     action_name(layer->input_action));
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
    free(layer->pixel_src);
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

eq_status eq_equivarify(eq_layer *h, const eq_group *group, eq_action input_action, eq_layer **out)
{
    equivarify_layer *layer = NULL;
    eq_status status;

    if (out)
        *out = NULL;
    if (!h || !group || !out) {
        eq_layer_destroy(h);
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_equivarify: h, group or out is NULL");
    }
    if (input_action != EQ_ACTION_PIXELS && input_action != EQ_ACTION_BLOCKS) {
        eq_layer_destroy(h);
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_equivarify: unknown input action %d", (int)input_action);
    }
    if (input_action == EQ_ACTION_PIXELS && !group->pixel_map) {
        eq_layer_destroy(h);
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_equivarify: group %s has no pixel action", group->name);
    }

    layer = calloc(1, sizeof *layer);
    if (!layer) {
        eq_layer_destroy(h);
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_equivarify: out of memory");
    }
    eq_layer_base_init(&layer->base, &equivarify_ops);
    layer->h = h;
    layer->input_action = input_action;
    status = eq_group_clone(group, &layer->group);
    if (status != EQ_OK) {
        equivarify_destroy(&layer->base);
        return status;
    }
    *out = &layer->base;
    return EQ_OK;
}
