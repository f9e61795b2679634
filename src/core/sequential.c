/* Sequential layer: children in order, with reused activation and gradient buffers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/layer_impl.h"
#include "core/sequential_impl.h"

typedef struct slot {
    eq_layer *layer;
    /* Output of this child, the next child's input. Unused for the last
     * child, whose output is the caller's y. */
    eq_tensor out;
    size_t out_capacity; /* floats allocated at out.data */
} slot;

typedef struct sequential {
    eq_layer base;
    slot *slots;
    size_t count, capacity;

    /* Input gradients of children 1..count-1 alternate between two buffers:
     * child i reads its dy from one and writes its dx into the other. */
    float *grad[2];
    size_t grad_capacity[2];
} sequential;

static const eq_layer_ops sequential_ops;

/* Returns whether children i and i + 1 are a ReLU and a max-pool, which run
 * swapped: max-pool on the ReLU's input, then ReLU on the pooled values.
 * ReLU is monotone and maps -0 to +0, so both orders give the same bits,
 * NaNs included. The gradients match too, because a window whose
 * maximum is not positive gets a zero gradient in either order. The ReLU
 * then reads only the pooled values (a quarter of the data for 2 x 2
 * windows), and its buffer contains those instead of a full-size output. */
static int runs_swapped(const sequential *seq, size_t i)
{
    return i + 1 < seq->count && strcmp(seq->slots[i].layer->ops->kind, "relu") == 0 &&
           strcmp(seq->slots[i + 1].layer->ops->kind, "maxpool") == 0;
}

static eq_status sequential_output_shape(const eq_layer *layer, eq_shape in, eq_shape *out)
{
    const sequential *seq = (const sequential *)layer;
    char text[EQ_SHAPE_STR_SIZE];
    eq_shape shape = in;

    if (eq_shape_numel(in) == 0)
        return eq_error(EQ_ERR_SHAPE, "sequential: input %s has a zero dimension or overflows size_t",
                        eq_shape_str(in, text));

    for (size_t i = 0; i < seq->count; i++) {
        eq_status status = eq_layer_output_shape(seq->slots[i].layer, shape, &shape);
        if (status != EQ_OK) {
            /* Copied first, because eq_error overwrites the buffer it is in. */
            char message[512];
            snprintf(message, sizeof message, "%s", eq_last_error());
            return eq_error(status, "sequential layer %zu: %s", i, message);
        }
    }
    *out = shape;
    return EQ_OK;
}

/* Grows a buffer to at least `count` floats. The old contents are dropped. */
static eq_status reserve(float **buf, size_t *capacity, size_t count)
{
    if (eq_grow_floats(buf, capacity, count))
        return EQ_OK;
    return eq_error(EQ_ERR_OUT_OF_MEMORY, "sequential: cannot allocate an activation buffer of %zu floats", count);
}

/* Sizes the activations of children first..count-2 for input shape `in` of
 * child `first`. Buffers only grow, so a smaller batch after a larger one
 * allocates nothing. */
static eq_status plan_activations(sequential *seq, size_t first, eq_shape in)
{
    eq_shape shape = in;

    for (size_t i = first; i + 1 < seq->count; i++) {
        slot *s = &seq->slots[i];
        eq_status status = eq_layer_output_shape(s->layer, shape, &shape);
        if (status != EQ_OK)
            return status;
        s->out.shape = shape;

        /* A swapped ReLU's buffer contains the pooled values before the ReLU. */
        eq_shape stored = shape;
        if (runs_swapped(seq, i)) {
            status = eq_layer_output_shape(seq->slots[i + 1].layer, shape, &stored);
            if (status != EQ_OK)
                return status;
        }
        status = reserve(&s->out.data, &s->out_capacity, eq_shape_numel(stored));
        if (status != EQ_OK)
            return status;
    }
    return EQ_OK;
}

static eq_status forward_from(sequential *seq, size_t first, const eq_tensor *x, eq_tensor *y)
{
    /* An empty remainder is the identity. */
    if (first == seq->count) {
        memmove(y->data, x->data, eq_shape_numel(x->shape) * sizeof(float));
        return EQ_OK;
    }

    eq_status status = plan_activations(seq, first, x->shape);
    if (status != EQ_OK)
        return status;

    const eq_tensor *in = x;
    for (size_t i = first; i < seq->count; i++) {
        if (runs_swapped(seq, i)) {
            /* Max-pool on the ReLU's input into the ReLU's buffer, then the
             * ReLU from there. The ReLU keeps a pointer to its input for
             * backward, so that input is internal, never the caller's y. */
            eq_tensor *out = i + 2 < seq->count ? &seq->slots[i + 1].out : y;
            eq_tensor pooled = { .shape = out->shape, .data = seq->slots[i].out.data };
            status = eq_layer_forward(seq->slots[i + 1].layer, in, &pooled);
            if (status == EQ_OK)
                status = eq_layer_forward(seq->slots[i].layer, &pooled, out);
            if (status != EQ_OK)
                return status;
            in = out;
            i++;
            continue;
        }
        eq_tensor *out = i + 1 < seq->count ? &seq->slots[i].out : y;
        status = eq_layer_forward(seq->slots[i].layer, in, out);
        if (status != EQ_OK)
            return status;
        in = out;
    }
    return EQ_OK;
}

static eq_status sequential_forward(eq_layer *layer, const eq_tensor *x, eq_tensor *y)
{
    return forward_from((sequential *)layer, 0, x, y);
}

static eq_status backward_from(sequential *seq, size_t first, const eq_tensor *dy, eq_tensor *dx)
{
    if (first == seq->count) {
        if (dx)
            memmove(dx->data, dy->data, eq_shape_numel(dy->shape) * sizeof(float));
        return EQ_OK;
    }

    /* Gradient buffers are sized on the first backward for a batch size, so
     * a forward-only (evaluation) run never allocates them. */
    for (size_t i = first; i + 1 < seq->count; i++) {
        eq_status status = reserve(&seq->grad[i % 2], &seq->grad_capacity[i % 2],
                                   eq_shape_numel(seq->slots[i].out.shape));
        if (status != EQ_OK)
            return status;
    }

    const eq_tensor *grad_out = dy;
    eq_tensor views[2];
    for (size_t i = seq->count; i-- > first;) {
        /* Child i writes the gradient of its input, which is child i-1's
         * output (buffer (i-1) % 2), or the caller's dx for child first. */
        eq_tensor *grad_in = dx;
        if (i > first) {
            grad_in = &views[(i - 1) % 2];
            grad_in->shape = seq->slots[i - 1].out.shape;
            grad_in->data = seq->grad[(i - 1) % 2];
        }

        eq_status status;
        if (i > first && runs_swapped(seq, i - 1)) {
            /* Child i is a max-pool that ran before ReLU i - 1, so the ReLU
             * goes first here, into buffer (i - 1) % 2, which is sized for
             * the ReLU's output. The max-pool then writes the gradient of
             * child i - 2's output (buffer i % 2, free once the ReLU has
             * read grad_out) or the caller's dx. */
            eq_tensor pooled = { .shape = grad_out->shape, .data = seq->grad[(i - 1) % 2] };
            status = eq_layer_backward(seq->slots[i - 1].layer, grad_out, &pooled);
            if (status != EQ_OK)
                return status;

            /* Set only now: grad_out may be the same view. */
            eq_tensor *relu_in = dx;
            if (i - 1 > first) {
                relu_in = &views[i % 2];
                relu_in->shape = seq->slots[i - 2].out.shape;
                relu_in->data = seq->grad[i % 2];
            }
            status = eq_layer_backward(seq->slots[i].layer, &pooled, relu_in);
            if (status != EQ_OK)
                return status;
            grad_out = relu_in;
            i--;
            continue;
        }
        status = eq_layer_backward(seq->slots[i].layer, grad_out, grad_in);
        if (status != EQ_OK)
            return status;
        grad_out = grad_in;
    }
    return EQ_OK;
}

static eq_status sequential_backward(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx)
{
    return backward_from((sequential *)layer, 0, dy, dx);
}

static size_t sequential_param_count(const eq_layer *layer)
{
    const sequential *seq = (const sequential *)layer;
    size_t total = 0;

    for (size_t i = 0; i < seq->count; i++)
        total += eq_layer_param_count(seq->slots[i].layer);
    return total;
}

/* Parameters are numbered through the children in order. The caller
 * (eq_layer_param) has checked that index is in range. */
static eq_param sequential_param(eq_layer *layer, size_t index)
{
    sequential *seq = (sequential *)layer;
    eq_param param;

    memset(&param, 0, sizeof param);
    for (size_t i = 0; i < seq->count; i++) {
        size_t count = eq_layer_param_count(seq->slots[i].layer);
        if (index < count) {
            eq_layer_param(seq->slots[i].layer, index, &param);
            break;
        }
        index -= count;
    }
    return param;
}

static void sequential_init_he(eq_layer *layer, eq_rng *rng)
{
    sequential *seq = (sequential *)layer;

    for (size_t i = 0; i < seq->count; i++)
        eq_layer_init_he(seq->slots[i].layer, rng);
}

static size_t sequential_describe(const eq_layer *layer, char *buf, size_t size)
{
    const sequential *seq = (const sequential *)layer;
    size_t used = eq_describe_append(buf, size, 0, "sequential(");

    for (size_t i = 0; i < seq->count; i++) {
        if (i > 0)
            used = eq_describe_append(buf, size, used, ", ");
        /* A child that does not fit is measured but not written. */
        if (used < size)
            used += eq_layer_describe(seq->slots[i].layer, buf + used, size - used);
        else
            used += eq_layer_describe(seq->slots[i].layer, NULL, 0);
    }
    return eq_describe_append(buf, size, used, ")");
}

static void sequential_destroy(eq_layer *layer)
{
    sequential *seq = (sequential *)layer;

    for (size_t i = 0; i < seq->count; i++) {
        eq_layer_destroy(seq->slots[i].layer);
        eq_free(seq->slots[i].out.data);
    }
    free(seq->slots);
    eq_free(seq->grad[0]);
    eq_free(seq->grad[1]);
    free(seq);
}

static const eq_layer_ops sequential_ops = {
    .kind = "sequential",
    .output_shape = sequential_output_shape,
    .forward = sequential_forward,
    .backward = sequential_backward,
    .param_count = sequential_param_count,
    .param = sequential_param,
    .init_he = sequential_init_he,
    .describe = sequential_describe,
    .destroy = sequential_destroy,
};

eq_status eq_sequential_create(eq_layer **out)
{
    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_sequential_create: out is NULL");

    sequential *seq = calloc(1, sizeof *seq);
    *out = NULL;
    if (!seq)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_sequential_create: cannot allocate the layer");
    eq_layer_base_init(&seq->base, &sequential_ops);
    *out = &seq->base;
    return EQ_OK;
}

eq_status eq_sequential_append(eq_layer *seq_layer, eq_layer *layer)
{
    if (!layer)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_sequential_append: layer is NULL");
    if (layer == seq_layer) {
        /* NOTE: not destroyed, because destroying it would free the caller's sequence. */
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_sequential_append: cannot append a sequential layer to itself");
    }
    if (!seq_layer || seq_layer->ops != &sequential_ops) {
        eq_layer_destroy(layer);
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_sequential_append: seq is %s, expected a sequential layer",
                        seq_layer ? seq_layer->ops->kind : "NULL");
    }

    sequential *seq = (sequential *)seq_layer;
    if (seq->count == seq->capacity) {
        size_t capacity = seq->capacity ? 2 * seq->capacity : 8;
        slot *slots = realloc(seq->slots, capacity * sizeof *slots);
        if (!slots) {
            eq_layer_destroy(layer);
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_sequential_append: cannot grow the sequence to %zu layers",
                            capacity);
        }
        seq->slots = slots;
        seq->capacity = capacity;
    }

    memset(&seq->slots[seq->count], 0, sizeof seq->slots[seq->count]);
    seq->slots[seq->count].layer = layer;
    seq->count++;

    /* The cached activations belong to the old sequence. */
    seq->base.has_forward = 0;
    return EQ_OK;
}

size_t eq_sequential_length(const eq_layer *seq)
{
    if (!seq || seq->ops != &sequential_ops)
        return 0;
    return ((const sequential *)seq)->count;
}

eq_layer *eq_sequential_get(eq_layer *seq, size_t index)
{
    if (!seq || seq->ops != &sequential_ops)
        return NULL;

    sequential *s = (sequential *)seq;
    return index < s->count ? s->slots[index].layer : NULL;
}

/* Checks the arguments of the *_from functions; `who` names the caller. */
static eq_status check_from(const char *who, const eq_layer *seq, size_t first, const eq_tensor *in,
                            const eq_tensor *out)
{
    if (!seq || !in || !in->data || (out && !out->data))
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: seq or a tensor is NULL", who);
    if (seq->ops != &sequential_ops)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: seq is %s, expected a sequential layer", who,
                        seq->ops->kind);

    size_t count = ((const sequential *)seq)->count;
    if (first > count)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: first child %zu is past the end of %zu children", who,
                        first, count);
    if (first == count && out && !eq_shape_equal(in->shape, out->shape)) {
        char have[EQ_SHAPE_STR_SIZE], want[EQ_SHAPE_STR_SIZE];
        return eq_error(EQ_ERR_SHAPE, "%s: no children to run, so the output %s must have the input shape %s",
                        who, eq_shape_str(out->shape, have), eq_shape_str(in->shape, want));
    }
    return EQ_OK;
}

eq_status eq_sequential_forward_from(eq_layer *seq, size_t first, const eq_tensor *x, eq_tensor *y)
{
    if (!y)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_sequential_forward_from: y is NULL");
    eq_status status = check_from("eq_sequential_forward_from", seq, first, x, y);
    if (status != EQ_OK)
        return status;

    /* The sequence's own cache no longer matches its children. */
    seq->has_forward = 0;
    return forward_from((sequential *)seq, first, x, y);
}

eq_status eq_sequential_backward_from(eq_layer *seq, size_t first, const eq_tensor *dy, eq_tensor *dx)
{
    eq_status status = check_from("eq_sequential_backward_from", seq, first, dy, dx);
    if (status != EQ_OK)
        return status;

    const sequential *s = (const sequential *)seq;
    for (size_t i = first; i < s->count; i++) {
        if (!s->slots[i].layer->has_forward)
            return eq_error(EQ_ERR_STATE, "eq_sequential_backward_from: child %zu (%s) has no forward call",
                            i, s->slots[i].layer->ops->kind);
    }
    return backward_from((sequential *)seq, first, dy, dx);
}
