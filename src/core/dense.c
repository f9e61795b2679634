/* Fully connected layer: y = W x + b over the batch, one GEMM per product,
 * or one GEMM per branch and weight block for a block-permuted input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/blocks.h"
#include "core/dense_impl.h"
#include "core/dense_spectral.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/layer_impl.h"

/* Long enough for any description: two size_t values and the fixed text. */
#define DESCRIPTION_SIZE 96

typedef struct dense {
    eq_layer base;
    size_t in, out;
    float *weight, *dweight; /* (OUT, IN) */
    float *bias, *dbias;     /* (OUT) */
    const float *x;          /* (N, IN) of the last forward, owned by the caller */

    /* Cached by a multi-branch forward for its backward. */
    eq_shape x_shape;        /* shape of x */
    size_t branches;
    const size_t *sources;   /* branches * branches block sources, owned by the caller */
    int blocks_forward;      /* the last forward was a multi-branch call */
    int spectral;            /* ... and ran in the Fourier basis of a cyclic table */
    eq_dense_spectral spectral_state;
} dense;

static size_t dense_describe(const eq_layer *layer, char *buf, size_t size)
{
    const dense *d = (const dense *)layer;

    return eq_describe_append(buf, size, 0, "dense(%zu->%zu)", d->in, d->out);
}

static eq_status dense_output_shape(const eq_layer *layer, eq_shape in, eq_shape *out)
{
    const dense *d = (const dense *)layer;
    char name[DESCRIPTION_SIZE], text[EQ_SHAPE_STR_SIZE];
    size_t features;

    dense_describe(layer, name, sizeof name);
    if (eq_shape_numel(in) == 0)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s has a zero dimension or overflows size_t", name,
                        eq_shape_str(in, text));

    /* Cannot overflow: N * C * H * W did not. */
    features = in.c * in.h * in.w;
    if (features != d->in)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s has %zu features per sample (C * H * W), expected %zu",
                        name, eq_shape_str(in, text), features, d->in);

    eq_shape shape = eq_shape_make(in.n, d->out, 1, 1);
    if (eq_shape_numel(shape) == 0)
        return eq_error(EQ_ERR_SHAPE, "%s: output shape %s overflows size_t", name, eq_shape_str(shape, text));
    *out = shape;
    return EQ_OK;
}

static eq_status dense_forward(eq_layer *layer, const eq_tensor *x, eq_tensor *y)
{
    dense *d = (dense *)layer;
    const size_t n = x->shape.n;

    d->x = x->data;
    d->blocks_forward = 0;

    /* y (N, OUT) = x (N, IN) * W^T (IN, OUT). Each output depends only on its
     * sample's row and one weight row, whatever the batch around it. */
    eq_gemm(0, 1, n, d->out, d->in, 1.0f, x->data, d->in, d->weight, d->in, 0.0f, y->data, d->out);

    for (size_t i = 0; i < n; i++) {
        float *y_n = y->data + i * d->out;
        for (size_t o = 0; o < d->out; o++)
            y_n[o] += d->bias[o];
    }
    return EQ_OK;
}

/* dbias += dy (samples, OUT) summed over the samples. */
static void bias_gradient(dense *d, const float *dy, size_t samples)
{
    for (size_t o = 0; o < d->out; o++) {
        double sum = 0.0;
        for (size_t i = 0; i < samples; i++)
            sum += dy[i * d->out + o];
        d->dbias[o] += (float)sum;
    }
}

static eq_status dense_backward(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx)
{
    dense *d = (dense *)layer;
    const size_t n = dy->shape.n;

    /* dW (OUT, IN) += dy^T (OUT, N) * x (N, IN). */
    eq_gemm(1, 0, d->out, d->in, n, 1.0f, dy->data, d->out, d->x, d->in, 1.0f, d->dweight, d->in);
    bias_gradient(d, dy->data, n);

    /* dx (N, IN) = dy (N, OUT) * W (OUT, IN). */
    if (dx)
        eq_gemm(0, 0, n, d->in, d->out, 1.0f, dy->data, d->out, d->weight, d->in, 0.0f, dx->data, d->in);
    return EQ_OK;
}

static size_t dense_param_count(const eq_layer *layer)
{
    (void)layer;
    return 2;
}

static eq_param dense_param(eq_layer *layer, size_t index)
{
    dense *d = (dense *)layer;
    eq_param param;

    if (index == 0) {
        param.name = "weight";
        param.shape = eq_shape_make(d->out, d->in, 1, 1);
        param.count = d->out * d->in;
        param.value = d->weight;
        param.grad = d->dweight;
    } else {
        param.name = "bias";
        param.shape = eq_shape_make(d->out, 1, 1, 1);
        param.count = d->out;
        param.value = d->bias;
        param.grad = d->dbias;
    }
    return param;
}

static void dense_init_he(eq_layer *layer, eq_rng *rng)
{
    dense *d = (dense *)layer;
    const float std = (float)sqrt(2.0 / (double)d->in); /* fan_in = IN */

    for (size_t i = 0; i < d->out * d->in; i++)
        d->weight[i] = std * eq_rng_normal(rng);
    memset(d->bias, 0, d->out * sizeof(float));
}

static void dense_destroy(eq_layer *layer)
{
    dense *d = (dense *)layer;

    eq_free(d->weight);
    eq_free(d->dweight);
    eq_free(d->bias);
    eq_free(d->dbias);
    eq_dense_spectral_release(&d->spectral_state);
    free(d);
}

static const eq_layer_ops dense_ops = {
    .kind = "dense",
    .output_shape = dense_output_shape,
    .forward = dense_forward,
    .backward = dense_backward,
    .param_count = dense_param_count,
    .param = dense_param,
    .init_he = dense_init_he,
    .describe = dense_describe,
    .destroy = dense_destroy,
};

eq_status eq_dense_create(size_t in_features, size_t out_features, eq_layer **out)
{
    size_t weight_count;

    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_dense_create: out is NULL");
    *out = NULL;
    if (in_features == 0 || out_features == 0)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_dense_create: features %zu->%zu must both be positive",
                        in_features, out_features);
    if (!eq_size_mul(in_features, out_features, &weight_count))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_dense_create: weight shape (%zu, %zu) overflows size_t",
                        out_features, in_features);

    dense *d = calloc(1, sizeof *d);
    if (!d)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_dense_create: cannot allocate the layer");
    eq_layer_base_init(&d->base, &dense_ops);
    d->in = in_features;
    d->out = out_features;
    d->weight = eq_alloc_floats(weight_count);
    d->dweight = eq_alloc_floats(weight_count);
    d->bias = eq_alloc_floats(out_features);
    d->dbias = eq_alloc_floats(out_features);
    if (!d->weight || !d->dweight || !d->bias || !d->dbias) {
        dense_destroy(&d->base);
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_dense_create: cannot allocate %zu weights", weight_count);
    }
    *out = &d->base;
    return EQ_OK;
}

/* --- Multi-branch calls ---------------------------------------------------- */

int eq_dense_is(const eq_layer *layer)
{
    return layer && layer->ops == &dense_ops;
}

eq_status eq_dense_forward_blocks(eq_layer *layer, size_t branches, const size_t *sources,
                                  const eq_tensor *x, eq_tensor *y)
{
    static const char who[] = "eq_dense_forward_blocks";
    char have[EQ_SHAPE_STR_SIZE], want[EQ_SHAPE_STR_SIZE], text[EQ_SHAPE_STR_SIZE];
    dense *d = (dense *)layer;
    eq_shape expected;

    if (!eq_dense_is(layer))
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: layer is %s, expected a dense layer", who,
                        eq_layer_kind(layer));
    if (!x || !y || !x->data || !y->data)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: x or y is NULL", who);
    eq_status status = eq_block_sources_check(who, branches, sources);
    if (status != EQ_OK)
        return status;
    if (x->shape.c % branches != 0)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s has %zu channels, expected a multiple of %zu branches", who,
                        eq_shape_str(x->shape, text), x->shape.c, branches);
    status = dense_output_shape(layer, x->shape, &expected);
    if (status != EQ_OK)
        return status;
    if (!eq_size_mul(expected.n, branches, &expected.n))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: batch %zu times %zu branches overflows size_t", who,
                        x->shape.n, branches);
    if (!eq_shape_equal(y->shape, expected))
        return eq_error(EQ_ERR_SHAPE, "%s: output tensor has shape %s, expected %s for input %s and %zu branches",
                        who, eq_shape_str(y->shape, have), eq_shape_str(expected, want),
                        eq_shape_str(x->shape, text), branches);

    const size_t n = x->shape.n, in_block = d->in / branches, ld_y = branches * d->out;
    layer->has_forward = 0;
    d->x = x->data;
    d->x_shape = x->shape;
    d->branches = branches;
    d->sources = sources;
    d->spectral = eq_block_sources_spectral(branches, sources);
    if (d->spectral) {
        status = eq_dense_spectral_forward(&d->spectral_state, branches, d->out, d->in, n, d->weight, d->bias,
                                           x->data, y->data);
        d->blocks_forward = status == EQ_OK;
        return status;
    }

    /* y_g (N, OUT), rows i * branches + g of y, = sum over b ascending of
     * x[:, block sources[g * branches + b]] (N, IN / branches) * W[:, block b]^T.
     * The order follows the weights' blocks, whatever block of x each
     * product reads. */
    for (size_t g = 0; g < branches; g++) {
        float *y_g = y->data + g * d->out;
        for (size_t b = 0; b < branches; b++) {
            const float *x_block = x->data + sources[g * branches + b] * in_block;
            eq_gemm(0, 1, n, d->out, in_block, 1.0f, x_block, d->in, d->weight + b * in_block, d->in,
                    b == 0 ? 0.0f : 1.0f, y_g, ld_y);
        }
    }

    for (size_t i = 0; i < n * branches; i++) {
        float *y_n = y->data + i * d->out;
        for (size_t o = 0; o < d->out; o++)
            y_n[o] += d->bias[o];
    }
    d->blocks_forward = 1;
    return EQ_OK;
}

eq_status eq_dense_backward_blocks(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx)
{
    static const char who[] = "eq_dense_backward_blocks";
    char have[EQ_SHAPE_STR_SIZE], want[EQ_SHAPE_STR_SIZE];
    dense *d = (dense *)layer;

    if (!eq_dense_is(layer))
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: layer is %s, expected a dense layer", who,
                        eq_layer_kind(layer));
    if (!dy || !dy->data || (dx && !dx->data))
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: dy is NULL or dx has no data", who);
    if (!d->blocks_forward)
        return eq_error(EQ_ERR_STATE, "%s: no multi-branch forward call to differentiate; "
                        "call eq_dense_forward_blocks first", who);

    const size_t branches = d->branches, n = d->x_shape.n;
    eq_shape dy_shape = eq_shape_make(n * branches, d->out, 1, 1);
    if (!eq_shape_equal(dy->shape, dy_shape))
        return eq_error(EQ_ERR_SHAPE, "%s: dy has shape %s, expected the forward output shape %s", who,
                        eq_shape_str(dy->shape, have), eq_shape_str(dy_shape, want));
    if (dx && !eq_shape_equal(dx->shape, d->x_shape))
        return eq_error(EQ_ERR_SHAPE, "%s: dx has shape %s, expected the forward input shape %s", who,
                        eq_shape_str(dx->shape, have), eq_shape_str(d->x_shape, want));

    const size_t in_block = d->in / branches, ld_dy = branches * d->out;
    const size_t *sources = d->sources;

    if (d->spectral) {
        bias_gradient(d, dy->data, n * branches);
        return eq_dense_spectral_backward(&d->spectral_state, branches, d->out, d->in, n, dy->data, d->dweight,
                                          dx ? dx->data : NULL);
    }

    /* dW[:, block b] (OUT, IN / branches) += dy_g^T (OUT, N) * x[:, block sources[g * branches + b]]. */
    for (size_t g = 0; g < branches; g++) {
        const float *dy_g = dy->data + g * d->out;
        for (size_t b = 0; b < branches; b++)
            eq_gemm(1, 0, d->out, in_block, n, 1.0f, dy_g, ld_dy, d->x + sources[g * branches + b] * in_block,
                    d->in, 1.0f, d->dweight + b * in_block, d->in);
    }
    bias_gradient(d, dy->data, n * branches);
    if (!dx)
        return EQ_OK;

    /* dx[:, block sources[g * branches + b]] += dy_g (N, OUT) * W[:, block b]. Every
     * row of the source table is a permutation, so branch 0 writes each
     * block once with beta 0 before the other branches add to it. */
    for (size_t g = 0; g < branches; g++) {
        const float *dy_g = dy->data + g * d->out;
        for (size_t b = 0; b < branches; b++)
            eq_gemm(0, 0, n, in_block, d->out, 1.0f, dy_g, ld_dy, d->weight + b * in_block, d->in,
                    g == 0 ? 0.0f : 1.0f, dx->data + sources[g * branches + b] * in_block, d->in);
    }
    return EQ_OK;
}
