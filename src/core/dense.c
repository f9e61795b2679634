/* Fully connected layer: y = W x + b over the batch, one GEMM per product. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

static eq_status dense_backward(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx)
{
    dense *d = (dense *)layer;
    const size_t n = dy->shape.n;

    /* dW (OUT, IN) += dy^T (OUT, N) * x (N, IN). */
    eq_gemm(1, 0, d->out, d->in, n, 1.0f, dy->data, d->out, d->x, d->in, 1.0f, d->dweight, d->in);

    for (size_t o = 0; o < d->out; o++) {
        double sum = 0.0;
        for (size_t i = 0; i < n; i++)
            sum += dy->data[i * d->out + o];
        d->dbias[o] += (float)sum;
    }

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
