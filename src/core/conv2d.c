/* 2-d convolution layer: im2col + GEMM forward, row products for the
 * weight gradient and GEMM + col2im for the input gradient, through the
 * chunked driver in conv2d_run.c. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/conv2d_chunks.h"
#include "core/conv2d_impl.h"
#include "core/error.h"

/* Long enough for any description: six size_t values and the fixed text. */
#define DESCRIPTION_SIZE 192

static size_t conv2d_describe(const eq_layer *layer, char *buf, size_t size)
{
    const eq_conv2d *conv = (const eq_conv2d *)layer;

    return eq_describe_append(buf, size, 0, "conv2d(%zu->%zu, %zux%zu, stride %zu, pad %zu)",
                              conv->ic, conv->oc, conv->kh, conv->kw, conv->stride, conv->pad);
}

static eq_status conv2d_output_shape(const eq_layer *layer, eq_shape in, eq_shape *out)
{
    const eq_conv2d *conv = (const eq_conv2d *)layer;
    char name[DESCRIPTION_SIZE], text[EQ_SHAPE_STR_SIZE];

    conv2d_describe(layer, name, sizeof name);
    if (in.c != conv->ic)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s has %zu channels, expected %zu", name,
                        eq_shape_str(in, text), in.c, conv->ic);
    if (eq_shape_numel(in) == 0)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s has a zero dimension or overflows size_t", name,
                        eq_shape_str(in, text));
    if (conv->pad > (SIZE_MAX - in.h) / 2 || conv->pad > (SIZE_MAX - in.w) / 2)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s overflows size_t when padded", name,
                        eq_shape_str(in, text));

    size_t padded_h = in.h + 2 * conv->pad;
    size_t padded_w = in.w + 2 * conv->pad;
    if (padded_h < conv->kh || padded_w < conv->kw)
        return eq_error(EQ_ERR_SHAPE, "%s: input %s padded to %zux%zu is smaller than the %zux%zu kernel",
                        name, eq_shape_str(in, text), padded_h, padded_w, conv->kh, conv->kw);

    eq_shape shape = eq_shape_make(in.n, conv->oc, (padded_h - conv->kh) / conv->stride + 1,
                                   (padded_w - conv->kw) / conv->stride + 1);
    if (eq_shape_numel(shape) == 0)
        return eq_error(EQ_ERR_SHAPE, "%s: output shape %s overflows size_t", name,
                        eq_shape_str(shape, text));
    *out = shape;
    return EQ_OK;
}

/* The plain layer is the multi-branch driver with one branch. */
static const size_t single_source[1] = { 0 };

static eq_status conv2d_forward(eq_layer *layer, const eq_tensor *x, eq_tensor *y)
{
    eq_conv2d *conv = (eq_conv2d *)layer;

    conv->blocks_forward = 0;
    conv->branches = 1;
    conv->sources = single_source;
    conv->spectral = 0;
    conv->rows = NULL;
    conv->positions = NULL;
    eq_status status = eq_conv2d_plan_chunks(conv, x->shape, y->shape);
    if (status != EQ_OK)
        return status;
    conv->x = x->data;

    /* Each output depends only on its weight row and its column, which keeps
     * a sample's output independent of the batch around it. */
    return eq_conv2d_run_forward(conv, y->data);
}

static eq_status conv2d_backward(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx)
{
    /* A multi-branch forward clears has_forward, so layer.c rejects this
     * call after one and the cached state here is always a plain one. */
    return eq_conv2d_run_backward((eq_conv2d *)layer, dy->data, dx ? dx->data : NULL);
}

static size_t conv2d_param_count(const eq_layer *layer)
{
    (void)layer;
    return 2;
}

static eq_param conv2d_param(eq_layer *layer, size_t index)
{
    eq_conv2d *conv = (eq_conv2d *)layer;
    eq_param param;

    if (index == 0) {
        param.name = "weight";
        param.shape = eq_shape_make(conv->oc, conv->ic, conv->kh, conv->kw);
        param.count = conv->oc * conv->k;
        param.value = conv->weight;
        param.grad = conv->dweight;
    } else {
        param.name = "bias";
        param.shape = eq_shape_make(conv->oc, 1, 1, 1);
        param.count = conv->oc;
        param.value = conv->bias;
        param.grad = conv->dbias;
    }
    return param;
}

static void conv2d_init_he(eq_layer *layer, eq_rng *rng)
{
    eq_conv2d *conv = (eq_conv2d *)layer;
    const float std = (float)sqrt(2.0 / (double)conv->k); /* fan_in = IC * KH * KW */

    for (size_t i = 0; i < conv->oc * conv->k; i++)
        conv->weight[i] = std * eq_rng_normal(rng);
    memset(conv->bias, 0, conv->oc * sizeof(float));
}

static void conv2d_destroy(eq_layer *layer)
{
    eq_conv2d *conv = (eq_conv2d *)layer;

    eq_free(conv->weight);
    eq_free(conv->dweight);
    eq_free(conv->bias);
    eq_free(conv->dbias);
    eq_conv2d_release_scratch(conv);
    free(conv);
}

static const eq_layer_ops conv2d_ops = {
    .kind = "conv2d",
    .output_shape = conv2d_output_shape,
    .forward = conv2d_forward,
    .backward = conv2d_backward,
    .param_count = conv2d_param_count,
    .param = conv2d_param,
    .init_he = conv2d_init_he,
    .describe = conv2d_describe,
    .destroy = conv2d_destroy,
};

eq_status eq_conv2d_create(size_t in_channels, size_t out_channels,
                           size_t kernel_h, size_t kernel_w,
                           size_t stride, size_t padding, eq_layer **out)
{
    size_t k, weight_count;

    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_conv2d_create: out is NULL");
    *out = NULL;
    if (in_channels == 0 || out_channels == 0 || kernel_h == 0 || kernel_w == 0 || stride == 0)
        return eq_error(EQ_ERR_INVALID_ARGUMENT,
                        "eq_conv2d_create: channels %zu->%zu, kernel %zux%zu and stride %zu must all be positive",
                        in_channels, out_channels, kernel_h, kernel_w, stride);
    if (!eq_size_mul(in_channels, kernel_h, &k) || !eq_size_mul(k, kernel_w, &k)
        || !eq_size_mul(k, out_channels, &weight_count))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_conv2d_create: weight shape (%zu, %zu, %zu, %zu) overflows size_t",
                        out_channels, in_channels, kernel_h, kernel_w);

    eq_conv2d *conv = calloc(1, sizeof *conv);
    if (!conv)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_conv2d_create: cannot allocate the layer");
    eq_layer_base_init(&conv->base, &conv2d_ops);
    conv->ic = in_channels;
    conv->oc = out_channels;
    conv->kh = kernel_h;
    conv->kw = kernel_w;
    conv->stride = stride;
    conv->pad = padding;
    conv->k = k;
    conv->weight = eq_alloc_floats(weight_count);
    conv->dweight = eq_alloc_floats(weight_count);
    conv->bias = eq_alloc_floats(out_channels);
    conv->dbias = eq_alloc_floats(out_channels);
    if (!conv->weight || !conv->dweight || !conv->bias || !conv->dbias) {
        conv2d_destroy(&conv->base);
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_conv2d_create: cannot allocate %zu weights", weight_count);
    }
    *out = &conv->base;
    return EQ_OK;
}

void eq_conv2d_geometry(const eq_layer *layer, size_t *kh, size_t *kw, size_t *stride, size_t *pad)
{
    const eq_conv2d *conv = (const eq_conv2d *)layer;

    *kh = conv->kh;
    *kw = conv->kw;
    *stride = conv->stride;
    *pad = conv->pad;
}

int eq_conv2d_is(const eq_layer *layer)
{
    return layer && layer->ops == &conv2d_ops;
}
