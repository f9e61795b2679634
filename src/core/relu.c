/* ReLU layer: elementwise max(x, 0). */
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/error.h"
#include "core/layer_impl.h"
#include "core/parallel.h"

/* Elements per parallel task: enough to repay waking a thread. */
#define RELU_GRAIN 32768

typedef struct relu {
    eq_layer base;
    const float *x; /* input of the last forward, owned by the caller */
} relu;

static eq_status relu_output_shape(const eq_layer *layer, eq_shape in, eq_shape *out)
{
    char text[EQ_SHAPE_STR_SIZE];

    (void)layer;
    if (eq_shape_numel(in) == 0)
        return eq_error(EQ_ERR_SHAPE, "relu: input %s has a zero dimension or overflows size_t",
                        eq_shape_str(in, text));
    *out = in;
    return EQ_OK;
}

typedef struct relu_task {
    const float *x;  /* forward input */
    const float *in; /* x in forward, dy in backward */
    float *out;      /* y in forward, dx in backward */
} relu_task;

/* Returns max(v, 0), with a NaN passed through (it fails `< 0`), so the
 * loss can report it. The + 0 turns -0 into +0, so that ReLU commutes
 * bitwise with max-pooling: a window of -1 and -0 gives +0 in either order. */
static inline float relu_value(float v)
{
    /* The add comes before the select because GCC vectorizes this order
     * and compiled the other one into a branch. */
    float w = v + 0.0f;

    return w < 0.0f ? 0.0f : w;
}

EQ_VECTOR_CLONES
static void forward_range(void *ctx, size_t begin, size_t end)
{
    const relu_task *task = ctx;
    const float *restrict in = task->in;
    float *restrict out = task->out;

    for (size_t i = begin; i < end; i++)
        out[i] = relu_value(in[i]);
}

EQ_VECTOR_CLONES
static void backward_range(void *ctx, size_t begin, size_t end)
{
    const relu_task *task = ctx;
    const float *restrict x = task->x;
    const float *restrict dy = task->in;
    float *restrict dx = task->out;

    /* The derivative at x == 0 is taken as 0. dy is loaded whatever the
     * sign, so the compiler can use a vector select instead of a branch. */
    for (size_t i = begin; i < end; i++) {
        float g = dy[i];
        dx[i] = x[i] > 0.0f ? g : 0.0f;
    }
}

static eq_status relu_forward(eq_layer *layer, const eq_tensor *x, eq_tensor *y)
{
    relu *r = (relu *)layer;
    relu_task task = { x->data, x->data, y->data };

    r->x = x->data;
    eq_parallel_for(eq_shape_numel(x->shape), RELU_GRAIN, forward_range, &task);
    return EQ_OK;
}

static eq_status relu_backward(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx)
{
    relu *r = (relu *)layer;

    if (!dx)
        return EQ_OK;

    relu_task task = { r->x, dy->data, dx->data };
    eq_parallel_for(eq_shape_numel(dy->shape), RELU_GRAIN, backward_range, &task);
    return EQ_OK;
}

static void relu_destroy(eq_layer *layer)
{
    free(layer);
}

static const eq_layer_ops relu_ops = {
    .kind = "relu",
    .output_shape = relu_output_shape,
    .forward = relu_forward,
    .backward = relu_backward,
    .destroy = relu_destroy,
};

eq_status eq_relu_create(eq_layer **out)
{
    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_relu_create: out is NULL");

    relu *r = calloc(1, sizeof *r);
    *out = NULL;
    if (!r)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_relu_create: cannot allocate the layer");
    eq_layer_base_init(&r->base, &relu_ops);
    *out = &r->base;
    return EQ_OK;
}
