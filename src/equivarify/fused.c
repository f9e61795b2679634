/* The fused path of eq_equivarify for a regular input: h's first layer
 * computes all branches from x itself, the rest of h runs as usual. */
#include "equivarify/fused.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/conv2d_impl.h"
#include "core/dense_impl.h"
#include "core/error.h"
#include "core/layer_impl.h"
#include "core/sequential_impl.h"

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static int fused_default = 1;

static void read_default(void)
{
    const char *value = getenv("EQ_EQUIVARIFY_FUSED");

    fused_default = !(value && strcmp(value, "0") == 0);
}

int eq_equivarify_fused_default(void)
{
    pthread_once(&default_once, read_default);
    return fused_default;
}

static int is_fusable(const eq_layer *layer)
{
    return eq_conv2d_is(layer) || eq_dense_is(layer);
}

eq_layer *eq_fused_first_layer(eq_layer *h)
{
    if (is_fusable(h))
        return h;

    eq_layer *first = eq_sequential_get(h, 0);
    return is_fusable(first) ? first : NULL;
}

/* Layers 1.. of a sequential h follow the fused layer. */
static int has_rest(eq_layer *h)
{
    return !is_fusable(h) && eq_sequential_length(h) > 1;
}

/* Grows t->data to `count` floats, dropping the old contents. */
static eq_status reserve(const char *who, eq_tensor *t, size_t *capacity, size_t count)
{
    if (count <= *capacity)
        return EQ_OK;
    eq_free(t->data);
    *capacity = 0;
    t->data = eq_alloc_floats(count);
    if (!t->data)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu floats for the fused layer's output", who,
                        count);
    *capacity = count;
    return EQ_OK;
}

/* sources[g * n + b] = b * g: branch g's block b is block b * g of x,
 * because (g . x)_b = x_(b * g). */
static eq_status build_sources(eq_fused *fused, const char *who, const eq_group *group)
{
    size_t n = eq_group_order(group);

    if (fused->sources)
        return EQ_OK;
    fused->sources = malloc(n * n * sizeof *fused->sources);
    if (!fused->sources)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: cannot allocate the %zu x %zu block source table", who, n, n);
    for (size_t g = 0; g < n; g++)
        for (size_t b = 0; b < n; b++)
            fused->sources[g * n + b] = eq_group_mul(group, b, g);
    return EQ_OK;
}

eq_status eq_fused_forward(eq_fused *fused, const char *who, eq_layer *h, const eq_group *group,
                           const eq_tensor *x, eq_tensor *h_out)
{
    eq_layer *first = eq_fused_first_layer(h);
    size_t n = eq_group_order(group);

    fused->active = 0;
    if (!first)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: h is %s, which the fused path cannot compute", who,
                        eq_layer_kind(h));
    eq_status status = build_sources(fused, who, group);
    if (status != EQ_OK)
        return status;

    /* h's own cache now describes neither path; the fused state replaces it. */
    h->has_forward = 0;

    /* Without a rest, the fused layer writes h's output directly. */
    eq_tensor *target = h_out;
    if (has_rest(h)) {
        eq_shape stacked = eq_shape_make(h_out->shape.n, x->shape.c, x->shape.h, x->shape.w);
        eq_shape shape;
        status = eq_layer_output_shape(first, stacked, &shape);
        if (status == EQ_OK)
            status = reserve(who, &fused->first_out, &fused->first_out_capacity, eq_shape_numel(shape));
        if (status != EQ_OK)
            return status;
        fused->first_out.shape = shape;
        target = &fused->first_out;
    }

    if (eq_conv2d_is(first))
        status = eq_conv2d_forward_blocks(first, n, fused->sources, x, target);
    else
        status = eq_dense_forward_blocks(first, n, fused->sources, x, target);
    if (status == EQ_OK && target != h_out)
        status = eq_sequential_forward_from(h, 1, target, h_out);
    fused->active = status == EQ_OK;
    return status;
}

eq_status eq_fused_backward(eq_fused *fused, const char *who, eq_layer *h, const eq_tensor *dh_out,
                            eq_tensor *dx)
{
    eq_layer *first = eq_fused_first_layer(h);
    const eq_tensor *grad = dh_out;
    eq_status status;

    if (!fused->active || !first)
        return eq_error(EQ_ERR_STATE, "%s: no fused forward call to differentiate", who);

    if (has_rest(h)) {
        status = reserve(who, &fused->dfirst_out, &fused->dfirst_out_capacity,
                         eq_shape_numel(fused->first_out.shape));
        if (status != EQ_OK)
            return status;
        fused->dfirst_out.shape = fused->first_out.shape;
        status = eq_sequential_backward_from(h, 1, dh_out, &fused->dfirst_out);
        if (status != EQ_OK)
            return status;
        grad = &fused->dfirst_out;
    }

    if (eq_conv2d_is(first))
        return eq_conv2d_backward_blocks(first, grad, dx);
    return eq_dense_backward_blocks(first, grad, dx);
}

void eq_fused_release(eq_fused *fused)
{
    free(fused->sources);
    eq_free(fused->first_out.data);
    eq_free(fused->dfirst_out.data);
    memset(fused, 0, sizeof *fused);
}
