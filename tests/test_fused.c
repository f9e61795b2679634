/* Tests for the fused path of eq_equivarify and the core multi-branch calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "equivar.h"
#include "equivar/equivarify.h"
#include "core/blocks.h"
#include "core/conv2d_impl.h"
#include "core/dense_impl.h"
#include "core/sequential_impl.h"
#include "equivarify/fused.h"
#include "testutil.h"

/* The fused and the generic path add the same products in other groupings.
 * The fused one sums n partial products of K / n terms each, while the
 * generic one sums K terms in one run (K up to 2880 here). Weight gradients
 * also split their reduction per branch. In float32 that moves a sum by a
 * few ulps of its partial sums, which is about sqrt(K) * 2^-24 = 3e-6
 * relative, hence RTOL. An output that cancels to near zero keeps the
 * absolute rounding of its summands, so ATOL is relative to the largest
 * value of the tensor. With the triple-loop GEMM the largest difference
 * seen here is 1.7e-6 of the largest value, for the 320-channel layer. */
#define RTOL 1e-5
#define ATOL_SCALE 1e-5

/* --- Fixtures -------------------------------------------------------------- */

static eq_layer *conv(size_t in_channels, size_t out_channels, size_t stride)
{
    eq_layer *layer = NULL;

    assert_int_equal(eq_conv2d_create(in_channels, out_channels, 3, 3, stride, 1, &layer), EQ_OK);
    return layer;
}

static eq_layer *dense(size_t in_features, size_t out_features)
{
    eq_layer *layer = NULL;

    assert_int_equal(eq_dense_create(in_features, out_features, &layer), EQ_OK);
    return layer;
}

/* h = conv(in_channels -> out_channels, 3x3, pad 1), relu */
static eq_layer *conv_relu(size_t in_channels, size_t out_channels)
{
    eq_layer *seq, *layer;

    assert_int_equal(eq_sequential_create(&seq), EQ_OK);
    eq_test_append(seq, eq_conv2d_create(in_channels, out_channels, 3, 3, 1, 1, &layer), &layer);
    eq_test_append(seq, eq_relu_create(&layer), &layer);
    return seq;
}

/* h = conv(in_channels -> 3, 3x3, stride, pad 1), relu, maxpool 2,
 * flatten, dense(-> 6), for size x size inputs. */
static eq_layer *conv_pool_dense(size_t in_channels, size_t size, size_t stride)
{
    eq_layer *seq, *layer;
    size_t pooled = ((size - 1) / stride + 1) / 2;

    assert_int_equal(eq_sequential_create(&seq), EQ_OK);
    eq_test_append(seq, eq_conv2d_create(in_channels, 3, 3, 3, stride, 1, &layer), &layer);
    eq_test_append(seq, eq_relu_create(&layer), &layer);
    eq_test_append(seq, eq_maxpool_create(2, 2, &layer), &layer);
    eq_test_append(seq, eq_flatten_create(&layer), &layer);
    eq_test_append(seq, eq_dense_create(3 * pooled * pooled, 6, &layer), &layer);
    return seq;
}

/* Wraps h for a regular input and draws its weights and nonzero biases,
 * so that the bias terms are compared too. */
static eq_layer *regular(eq_layer *h, const eq_group *group, uint64_t seed)
{
    eq_layer *f = NULL;
    eq_rng rng;

    assert_int_equal(eq_equivarify(h, group, EQ_ACTION_BLOCKS, &f), EQ_OK);
    eq_rng_seed(&rng, seed);
    eq_layer_init_he(f, &rng);
    for (size_t p = 0; p < eq_layer_param_count(f); p++) {
        eq_param param;
        assert_int_equal(eq_layer_param(f, p, &param), EQ_OK);
        if (strcmp(param.name, "bias") == 0)
            eq_test_fill_uniform(param.value, param.count, &rng, -0.1f, 0.1f);
    }
    return f;
}

/* --- Fused against generic ------------------------------------------------- */

/* Everything one forward and backward produce. */
typedef struct run_result {
    float *y, *dx;
    size_t y_count, x_count;
    size_t param_count;
    float **grads;
    size_t *grad_counts;
} run_result;

static float *copy_floats(const float *data, size_t count)
{
    float *copy = malloc(count * sizeof(float));

    assert_non_null(copy);
    memcpy(copy, data, count * sizeof(float));
    return copy;
}

/* Runs a layer forward and backward (dy drawn from `seed`) from zeroed
 * gradients, and copies the output and all gradients. */
static run_result run_layer(eq_layer *layer, const eq_tensor *x, uint64_t seed)
{
    run_result r;
    eq_tensor *y = eq_test_output_for(layer, x->shape), *dx = NULL;
    eq_tensor *dy = eq_test_random_tensor(y->shape, seed);

    assert_int_equal(eq_tensor_create(x->shape, &dx), EQ_OK);
    /* backward overwrites dx, so stale values must not leak into it. */
    for (size_t i = 0; i < eq_shape_numel(x->shape); i++)
        dx->data[i] = NAN;
    eq_layer_zero_grad(layer);
    assert_int_equal(eq_layer_forward(layer, x, y), EQ_OK);
    assert_int_equal(eq_layer_backward(layer, dy, dx), EQ_OK);

    r.y_count = eq_shape_numel(y->shape);
    r.x_count = eq_shape_numel(x->shape);
    r.y = copy_floats(y->data, r.y_count);
    r.dx = copy_floats(dx->data, r.x_count);
    r.param_count = eq_layer_param_count(layer);
    r.grads = calloc(r.param_count, sizeof *r.grads);
    r.grad_counts = calloc(r.param_count, sizeof *r.grad_counts);
    assert_non_null(r.grads);
    assert_non_null(r.grad_counts);
    for (size_t p = 0; p < r.param_count; p++) {
        eq_param param;
        assert_int_equal(eq_layer_param(layer, p, &param), EQ_OK);
        r.grads[p] = copy_floats(param.grad, param.count);
        r.grad_counts[p] = param.count;
    }

    eq_tensor_destroy(y);
    eq_tensor_destroy(dx);
    eq_tensor_destroy(dy);
    return r;
}

/* run_layer on the chosen path of an equivarify layer f. */
static run_result run_path(eq_layer *f, int fused, const eq_tensor *x, uint64_t seed)
{
    assert_int_equal(eq_equivarify_set_fused(f, fused), EQ_OK);
    run_result r = run_layer(f, x, seed);
    assert_int_equal(eq_equivarify_used_fused(f), fused);
    return r;
}

static void run_result_free(run_result *r)
{
    for (size_t p = 0; p < r->param_count; p++)
        free(r->grads[p]);
    free(r->grads);
    free(r->grad_counts);
    free(r->y);
    free(r->dx);
}

/* Asserts |actual - expected| <= ATOL_SCALE * max|expected| + RTOL |expected|
 * elementwise, and that expected is not all zero, which would make the
 * comparison pass for any code. */
static void assert_close(const char *label, const char *what, const float *actual, const float *expected,
                         size_t count)
{
    double scale = 0.0;

    for (size_t i = 0; i < count; i++)
        scale = fmax(scale, fabs((double)expected[i]));
    if (scale == 0.0)
        fail_msg("%s: %s of the generic path is all zero", label, what);

    for (size_t i = 0; i < count; i++) {
        double error = fabs((double)actual[i] - (double)expected[i]);
        /* Written so that a NaN on either side fails. */
        if (!(error <= ATOL_SCALE * scale + RTOL * fabs((double)expected[i])))
            fail_msg("%s: %s [%zu] is %.9g on the fused path, %.9g on the generic one", label, what, i,
                     (double)actual[i], (double)expected[i]);
    }
}

/* Compares the fused path of f with its generic path on the same weights,
 * input and output gradient: output, input gradient, every parameter
 * gradient. */
static void assert_paths_agree(eq_layer *f, const eq_tensor *x, uint64_t seed, const char *label)
{
    run_result fused = run_path(f, 1, x, seed);
    run_result generic = run_path(f, 0, x, seed);

    assert_close(label, "output", fused.y, generic.y, generic.y_count);
    assert_close(label, "input gradient", fused.dx, generic.dx, generic.x_count);
    assert_int_equal(fused.param_count, generic.param_count);
    for (size_t p = 0; p < generic.param_count; p++) {
        char what[64];
        snprintf(what, sizeof what, "gradient of parameter %zu", p);
        assert_close(label, what, fused.grads[p], generic.grads[p], generic.grad_counts[p]);
    }

    run_result_free(&fused);
    run_result_free(&generic);
}

static const char *const group_names[] = { "c4", "d4" };

static void conv_fused_matches_generic(void **state)
{
    (void)state;
    const size_t batches[] = { 1, 3 }, strides[] = { 1, 2 };

    for (size_t gi = 0; gi < 2; gi++) {
        eq_group *group;
        assert_int_equal(eq_group_by_name(group_names[gi], &group), EQ_OK);
        size_t n = eq_group_order(group);
        for (size_t bi = 0; bi < 2; bi++) {
            for (size_t si = 0; si < 2; si++) {
                char label[64];
                snprintf(label, sizeof label, "%s conv N=%zu stride %zu", group_names[gi], batches[bi], strides[si]);
                eq_layer *f = regular(conv(3 * n, 4, strides[si]), group, 40 + bi + 2 * si);
                eq_tensor *x = eq_test_random_tensor(eq_shape_make(batches[bi], 3 * n, 7, 7), 50 + bi);
                assert_paths_agree(f, x, 60 + si, label);
                eq_tensor_destroy(x);
                eq_layer_destroy(f);
            }
        }
        eq_group_destroy(group);
    }
}

static void dense_fused_matches_generic(void **state)
{
    (void)state;
    const size_t batches[] = { 1, 3 };

    for (size_t gi = 0; gi < 2; gi++) {
        eq_group *group;
        assert_int_equal(eq_group_by_name(group_names[gi], &group), EQ_OK);
        size_t n = eq_group_order(group);
        for (size_t bi = 0; bi < 2; bi++) {
            char label[64];

            /* A flat input (N, n * 5, 1, 1) and an image input read as flat. */
            snprintf(label, sizeof label, "%s dense flat N=%zu", group_names[gi], batches[bi]);
            eq_layer *f = regular(dense(5 * n, 7), group, 70 + bi);
            eq_tensor *x = eq_test_random_tensor(eq_shape_make(batches[bi], 5 * n, 1, 1), 71 + bi);
            assert_paths_agree(f, x, 72, label);
            eq_tensor_destroy(x);
            eq_layer_destroy(f);

            snprintf(label, sizeof label, "%s dense image N=%zu", group_names[gi], batches[bi]);
            f = regular(dense(2 * n * 3 * 3, 5), group, 73 + bi);
            x = eq_test_random_tensor(eq_shape_make(batches[bi], 2 * n, 3, 3), 74 + bi);
            assert_paths_agree(f, x, 75, label);
            eq_tensor_destroy(x);
            eq_layer_destroy(f);
        }
        eq_group_destroy(group);
    }
}

static void sequential_fused_matches_generic(void **state)
{
    (void)state;
    const size_t batches[] = { 1, 3 }, strides[] = { 1, 2 };

    for (size_t gi = 0; gi < 2; gi++) {
        eq_group *group;
        assert_int_equal(eq_group_by_name(group_names[gi], &group), EQ_OK);
        size_t n = eq_group_order(group);
        for (size_t bi = 0; bi < 2; bi++) {
            for (size_t si = 0; si < 2; si++) {
                char label[80];
                snprintf(label, sizeof label, "%s conv-relu-maxpool-flatten-dense N=%zu stride %zu",
                         group_names[gi], batches[bi], strides[si]);
                eq_layer *f = regular(conv_pool_dense(2 * n, 8, strides[si]), group, 80 + bi + 2 * si);
                eq_tensor *x = eq_test_random_tensor(eq_shape_make(batches[bi], 2 * n, 8, 8), 84 + bi);
                assert_paths_agree(f, x, 86 + si, label);
                eq_tensor_destroy(x);
                eq_layer_destroy(f);
            }
        }

        /* A sequential h of one layer, whose fused output is h's output. */
        eq_layer *h, *layer = dense(3 * n, 4);
        assert_int_equal(eq_sequential_create(&h), EQ_OK);
        eq_test_append(h, EQ_OK, &layer);
        eq_layer *f = regular(h, group, 88);
        eq_tensor *x = eq_test_random_tensor(eq_shape_make(2, 3 * n, 1, 1), 89);
        assert_paths_agree(f, x, 90, "sequential(dense)");
        eq_tensor_destroy(x);
        eq_layer_destroy(f);

        /* A flatten before the dense layer is skipped, with and without
         * layers after the dense one. */
        for (size_t rest = 0; rest < 2; rest++) {
            assert_int_equal(eq_sequential_create(&h), EQ_OK);
            eq_test_append(h, eq_flatten_create(&layer), &layer);
            layer = dense(2 * n * 3 * 3, 5);
            eq_test_append(h, EQ_OK, &layer);
            if (rest) {
                eq_test_append(h, eq_relu_create(&layer), &layer);
                layer = dense(5, 3);
                eq_test_append(h, EQ_OK, &layer);
            }
            f = regular(h, group, 91 + rest);
            x = eq_test_random_tensor(eq_shape_make(3, 2 * n, 3, 3), 93 + rest);
            assert_paths_agree(f, x, 95 + rest, rest ? "flatten-dense-relu-dense" : "flatten-dense");
            eq_tensor_destroy(x);
            eq_layer_destroy(f);
        }
        eq_group_destroy(group);
    }
}

/* Layers large enough for conv2d's bounded column buffer. 4 * 80 input
 * channels at 28x28 need 2880 x 784 columns per image, more than the
 * buffer, so each image is lowered in tiles of output positions. 4 * 20
 * channels at 14x14 fit three images per chunk, so a batch of 20 ends in a
 * partial chunk. */
static void chunked_conv_fused_matches_generic(void **state)
{
    (void)state;
    eq_group *c4;

    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    eq_layer *f = regular(conv(4 * 80, 4, 1), c4, 91);
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(2, 4 * 80, 28, 28), 92);
    assert_paths_agree(f, x, 93, "conv 320->4 at 28x28, tiled");
    eq_tensor_destroy(x);
    eq_layer_destroy(f);

    f = regular(conv_relu(4 * 20, 3), c4, 94);
    x = eq_test_random_tensor(eq_shape_make(20, 4 * 20, 14, 14), 95);
    assert_paths_agree(f, x, 96, "conv 80->3 at 14x14, chunks of 3 images");
    eq_tensor_destroy(x);
    eq_layer_destroy(f);
    eq_group_destroy(c4);
}

/* --- Exactness and gradients ------------------------------------------------ */

/* A lifting conv on pixels, a regular conv and a regular head of conv,
 * pool, flatten, dense, dense, from (N, 1, 9, 9) to (N, n * 5, 1, 1).
 * Layers 1 and 2 take the fused path, layer 0 the generic one. */
static eq_layer *three_layer_network(const eq_group *group, uint64_t seed)
{
    size_t n = eq_group_order(group);
    eq_layer *net, *lift, *middle, *head, *layer;
    eq_rng rng;

    assert_int_equal(eq_sequential_create(&net), EQ_OK);
    assert_int_equal(eq_equivarify(conv_relu(1, 3), group, EQ_ACTION_PIXELS, &lift), EQ_OK);
    eq_test_append(net, EQ_OK, &lift);
    assert_int_equal(eq_equivarify(conv_relu(3 * n, 3), group, EQ_ACTION_BLOCKS, &middle), EQ_OK);
    eq_test_append(net, EQ_OK, &middle);

    assert_int_equal(eq_sequential_create(&head), EQ_OK);
    eq_test_append(head, eq_conv2d_create(3 * n, 4, 3, 3, 1, 1, &layer), &layer);
    eq_test_append(head, eq_relu_create(&layer), &layer);
    eq_test_append(head, eq_maxpool_create(2, 2, &layer), &layer);
    eq_test_append(head, eq_flatten_create(&layer), &layer);
    eq_test_append(head, eq_dense_create(4 * 4 * 4, 12, &layer), &layer);
    eq_test_append(head, eq_relu_create(&layer), &layer);
    eq_test_append(head, eq_dense_create(12, 5, &layer), &layer);
    assert_int_equal(eq_equivarify(head, group, EQ_ACTION_BLOCKS, &layer), EQ_OK);
    eq_test_append(net, EQ_OK, &layer);

    for (size_t i = 0; i < 3; i++)
        assert_int_equal(eq_equivarify_set_fused(eq_sequential_get(net, i), 1), EQ_OK);
    eq_rng_seed(&rng, seed);
    eq_layer_init_he(net, &rng);
    return net;
}

/* Asserts F(k . x) == k . F(x) bit for bit for every element k, with the
 * regular action on the output. */
static void assert_bitwise_equivariant(eq_layer *net, const eq_group *group, eq_action input_action,
                                       const eq_tensor *x, const char *label)
{
    eq_tensor *kx = NULL, *y = eq_test_output_for(net, x->shape), *ky = eq_test_output_for(net, x->shape);
    eq_tensor *y_of_kx = eq_test_output_for(net, x->shape);
    size_t bytes = eq_shape_numel(y->shape) * sizeof(float);

    assert_int_equal(eq_tensor_create(x->shape, &kx), EQ_OK);
    assert_int_equal(eq_layer_forward(net, x, y), EQ_OK);
    for (size_t k = 0; k < eq_group_order(group); k++) {
        assert_int_equal(eq_group_act(group, input_action, k, x, kx), EQ_OK);
        assert_int_equal(eq_layer_forward(net, kx, y_of_kx), EQ_OK);
        assert_int_equal(eq_group_act(group, EQ_ACTION_BLOCKS, k, y, ky), EQ_OK);
        if (memcmp(y_of_kx->data, ky->data, bytes) != 0)
            fail_msg("%s: F(k x) != k F(x) for element %zu (%s) of %s", label, k, eq_group_element_name(group, k),
                     eq_group_name(group));
    }

    /* The check above must not pass because the output ignores its input. */
    assert_int_equal(eq_group_act(group, EQ_ACTION_BLOCKS, 1, y, ky), EQ_OK);
    assert_true(memcmp(y->data, ky->data, bytes) != 0);

    eq_tensor_destroy(kx);
    eq_tensor_destroy(y);
    eq_tensor_destroy(ky);
    eq_tensor_destroy(y_of_kx);
}

static void fused_network_bitwise_equivariant(void **state)
{
    (void)state;

    for (size_t gi = 0; gi < 2; gi++) {
        eq_group *group;
        assert_int_equal(eq_group_by_name(group_names[gi], &group), EQ_OK);
        size_t n = eq_group_order(group);

        eq_layer *net = three_layer_network(group, 100 + gi);
        eq_tensor *x = eq_test_random_tensor(eq_shape_make(3, 1, 9, 9), 102 + gi);
        assert_bitwise_equivariant(net, group, EQ_ACTION_PIXELS, x, "three-layer network");
        assert_int_equal(eq_equivarify_used_fused(eq_sequential_get(net, 0)), 0);
        assert_int_equal(eq_equivarify_used_fused(eq_sequential_get(net, 1)), 1);
        assert_int_equal(eq_equivarify_used_fused(eq_sequential_get(net, 2)), 1);
        eq_tensor_destroy(x);
        eq_layer_destroy(net);

        /* The head above starts with a conv; a regular dense layer fuses too. */
        eq_layer *f = regular(dense(5 * n, 7), group, 104 + gi);
        assert_int_equal(eq_equivarify_set_fused(f, 1), EQ_OK);
        x = eq_test_random_tensor(eq_shape_make(3, 5 * n, 1, 1), 106 + gi);
        assert_bitwise_equivariant(f, group, EQ_ACTION_BLOCKS, x, "dense");
        assert_int_equal(eq_equivarify_used_fused(f), 1);
        eq_tensor_destroy(x);
        eq_layer_destroy(f);

        /* So does a flatten followed by a dense layer, on a spatial input. */
        eq_layer *h, *layer;
        assert_int_equal(eq_sequential_create(&h), EQ_OK);
        eq_test_append(h, eq_flatten_create(&layer), &layer);
        layer = dense(2 * n * 3 * 3, 7);
        eq_test_append(h, EQ_OK, &layer);
        f = regular(h, group, 108 + gi);
        assert_int_equal(eq_equivarify_set_fused(f, 1), EQ_OK);
        x = eq_test_random_tensor(eq_shape_make(2, 2 * n, 3, 3), 110 + gi);
        assert_bitwise_equivariant(f, group, EQ_ACTION_BLOCKS, x, "flatten-dense");
        assert_int_equal(eq_equivarify_used_fused(f), 1);
        eq_tensor_destroy(x);
        eq_layer_destroy(f);
        eq_group_destroy(group);
    }
}

static void fused_stack_gradients(void **state)
{
    (void)state;
    eq_group *c4;
    eq_layer *net, *lift, *head, *layer;
    eq_gradcheck_result result;
    eq_rng rng;

    /* lift(conv, relu) -> regular(conv, flatten, dense) -> regular(dense) */
    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    assert_int_equal(eq_sequential_create(&net), EQ_OK);
    assert_int_equal(eq_equivarify(conv_relu(1, 2), c4, EQ_ACTION_PIXELS, &lift), EQ_OK);
    eq_test_append(net, EQ_OK, &lift);
    assert_int_equal(eq_sequential_create(&head), EQ_OK);
    eq_test_append(head, eq_conv2d_create(8, 2, 3, 3, 1, 0, &layer), &layer);
    eq_test_append(head, eq_flatten_create(&layer), &layer);
    eq_test_append(head, eq_dense_create(2 * 3 * 3, 3, &layer), &layer);
    assert_int_equal(eq_equivarify(head, c4, EQ_ACTION_BLOCKS, &layer), EQ_OK);
    eq_test_append(net, EQ_OK, &layer);
    assert_int_equal(eq_equivarify(dense(12, 2), c4, EQ_ACTION_BLOCKS, &layer), EQ_OK);
    eq_test_append(net, EQ_OK, &layer);
    for (size_t i = 1; i < 3; i++)
        assert_int_equal(eq_equivarify_set_fused(eq_sequential_get(net, i), 1), EQ_OK);
    eq_rng_seed(&rng, 110);
    eq_layer_init_he(net, &rng);

    /* 200 ReLU inputs per bias in the lift: a step of 1e-4 keeps the chance
     * that one crosses the kink small. With this seed none does. */
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(2, 1, 5, 5), 111);
    assert_int_equal(eq_test_gradcheck(net, x, 112, 1e-4, &result), 0);
    assert_int_equal(eq_equivarify_used_fused(eq_sequential_get(net, 1)), 1);
    assert_int_equal(eq_equivarify_used_fused(eq_sequential_get(net, 2)), 1);
    if (result.max_error > 2e-2)
        fail_msg("gradient mismatch %g at %s", result.max_error, result.worst);
    assert_true(result.max_abs_gradient > 1e-3);
    assert_true(result.checked > 100);

    eq_tensor_destroy(x);
    eq_layer_destroy(net);
    eq_group_destroy(c4);
}

/* A fused conv alone is linear, so central differences are exact up to
 * rounding and the bound can be tight. */
static void fused_linear_gradients(void **state)
{
    (void)state;
    eq_group *d4;
    eq_gradcheck_result result;

    assert_int_equal(eq_group_d4(&d4), EQ_OK);
    eq_layer *f = regular(conv(8, 2, 2), d4, 113);
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(2, 8, 5, 5), 114);
    assert_int_equal(eq_equivarify_set_fused(f, 1), EQ_OK);
    assert_int_equal(eq_test_gradcheck(f, x, 115, 1e-2, &result), 0);
    assert_int_equal(eq_equivarify_used_fused(f), 1);
    if (result.max_error > 1e-3)
        fail_msg("conv gradient mismatch %g at %s", result.max_error, result.worst);
    assert_true(result.max_abs_gradient > 1e-2);
    eq_tensor_destroy(x);
    eq_layer_destroy(f);
    eq_group_destroy(d4);
}

/* --- The switch -------------------------------------------------------------- */

static void fused_default_follows_environment(void **state)
{
    (void)state;
    eq_group *c4;
    const char *value = getenv("EQ_EQUIVARIFY_FUSED");
    int expected = !(value && strcmp(value, "0") == 0);

    assert_int_equal(eq_equivarify_fused_default(), expected);
    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    eq_layer *f = regular(conv(4, 2, 1), c4, 120);
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(1, 4, 4, 4), 121);
    eq_tensor *y = eq_test_output_for(f, x->shape);
    assert_int_equal(eq_layer_forward(f, x, y), EQ_OK);
    assert_int_equal(eq_equivarify_used_fused(f), expected);

    eq_tensor_destroy(x);
    eq_tensor_destroy(y);
    eq_layer_destroy(f);
    eq_group_destroy(c4);
}

/* Only a regular input and an h that starts with conv2d or dense fuse. */
/* h = conv(in_channels -> out_channels, 3x3, pad 1), relu, maxpool 2 */
static eq_layer *conv_relu_pool(size_t in_channels, size_t out_channels)
{
    eq_layer *seq = conv_relu(in_channels, out_channels), *layer;

    eq_test_append(seq, eq_maxpool_create(2, 2, &layer), &layer);
    return seq;
}

/* The gathered path multiplies the same rows in the same order as the
 * generic path's plain conv on the transformed copies, so its outputs are
 * the same bits. Its gradients add the branches in another order. */
static void gathered_matches_generic_bitwise(void **state)
{
    (void)state;
    eq_group *c4, *d4;

    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    assert_int_equal(eq_group_d4(&d4), EQ_OK);
    struct {
        eq_group *group;
        eq_action action;
        int aligned;
        size_t channels, out_channels, size, batch; /* input (batch, channels, size, size) */
        const char *label;
    } cases[] = {
        { c4, EQ_ACTION_PIXELS, 0, 1, 2, 9, 3, "C4 lift" },
        { c4, EQ_ACTION_PIXELS, 1, 2, 3, 8, 2, "C4 aligned on pixels" },
        { c4, EQ_ACTION_BLOCKS_PIXELS, 1, 4 * 3, 2, 8, 2, "C4 aligned on blocks and pixels" },
        { d4, EQ_ACTION_BLOCKS_PIXELS, 1, 8 * 2, 3, 6, 2, "D4 aligned on blocks and pixels" },
        { c4, EQ_ACTION_BLOCKS, 1, 4 * 2, 3, 6, 2, "C4 aligned on blocks" },
        /* 64 channels of 32 x 32 are cut into position tiles. */
        { c4, EQ_ACTION_BLOCKS_PIXELS, 1, 4 * 16, 2, 32, 1, "C4 aligned, tiled" },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eq_layer *f = NULL;
        eq_layer *h = conv_relu_pool(cases[i].channels, cases[i].out_channels);
        eq_rng rng;

        if (cases[i].aligned)
            assert_int_equal(eq_equivarify_aligned(h, cases[i].group, cases[i].action, &f), EQ_OK);
        else
            assert_int_equal(eq_equivarify(h, cases[i].group, cases[i].action, &f), EQ_OK);
        eq_rng_seed(&rng, 190 + i);
        eq_layer_init_he(f, &rng);
        eq_tensor *x = eq_test_random_tensor(
            eq_shape_make(cases[i].batch, cases[i].channels, cases[i].size, cases[i].size), 200 + i);

        run_result gathered = run_path(f, 1, x, 210 + i);
        run_result generic = run_path(f, 0, x, 210 + i);
        if (memcmp(gathered.y, generic.y, generic.y_count * sizeof(float)) != 0)
            fail_msg("%s: the gathered output differs from the generic one", cases[i].label);
        assert_close(cases[i].label, "input gradient", gathered.dx, generic.dx, generic.x_count);
        for (size_t p = 0; p < generic.param_count; p++)
            assert_close(cases[i].label, "parameter gradient", gathered.grads[p], generic.grads[p],
                         generic.grad_counts[p]);

        run_result_free(&gathered);
        run_result_free(&generic);
        eq_tensor_destroy(x);
        eq_layer_destroy(f);
    }
    eq_group_destroy(c4);
    eq_group_destroy(d4);
}

/* Runs f with its fused switch on and checks which path it took, then
 * destroys f. */
static void assert_takes_fused(eq_layer *f, const eq_tensor *x, int fused)
{
    assert_int_equal(eq_equivarify_set_fused(f, 1), EQ_OK);
    eq_tensor *y = eq_test_output_for(f, x->shape);
    assert_int_equal(eq_layer_forward(f, x, y), EQ_OK);
    assert_int_equal(eq_equivarify_used_fused(f), fused);
    eq_tensor_destroy(y);
    eq_layer_destroy(f);
}

static void fused_path_only_where_exact(void **state)
{
    (void)state;
    eq_group *c4;
    eq_layer *f, *h, *layer;

    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    eq_tensor *image = eq_test_random_tensor(eq_shape_make(1, 4, 5, 5), 130);
    eq_tensor *y = NULL;

    /* Pixel input action: the gathered path. */
    assert_int_equal(eq_equivarify(conv(4, 2, 1), c4, EQ_ACTION_PIXELS, &f), EQ_OK);
    assert_takes_fused(f, image, 1);

    /* The aligned variant on blocks: the gathered path. */
    assert_int_equal(eq_equivarify_aligned(conv(4, 2, 1), c4, EQ_ACTION_BLOCKS, &f), EQ_OK);
    assert_takes_fused(f, image, 1);

    /* A lifting conv 1 -> 3 has K = 9 < 4 * OC rows: generic. */
    eq_tensor *gray = eq_test_random_tensor(eq_shape_make(1, 1, 5, 5), 134);
    assert_int_equal(eq_equivarify(conv(1, 3, 1), c4, EQ_ACTION_PIXELS, &f), EQ_OK);
    assert_takes_fused(f, gray, 0);
    eq_tensor_destroy(gray);

    /* Stride 2 on a 6 x 6 image puts the windows off centre, so a quarter
     * turn does not map them onto each other: generic. */
    eq_tensor *even = eq_test_random_tensor(eq_shape_make(1, 4, 6, 6), 133);
    assert_int_equal(eq_equivarify(conv(4, 2, 2), c4, EQ_ACTION_PIXELS, &f), EQ_OK);
    assert_takes_fused(f, even, 0);
    eq_tensor_destroy(even);

    /* h that starts with relu: generic. */
    assert_int_equal(eq_sequential_create(&h), EQ_OK);
    eq_test_append(h, eq_relu_create(&layer), &layer);
    eq_test_append(h, eq_conv2d_create(4, 2, 3, 3, 1, 1, &layer), &layer);
    f = regular(h, c4, 131);
    assert_int_equal(eq_equivarify_set_fused(f, 1), EQ_OK);
    y = eq_test_output_for(f, image->shape);
    assert_int_equal(eq_layer_forward(f, image, y), EQ_OK);
    assert_int_equal(eq_equivarify_used_fused(f), 0);

    /* Switched off, the layer takes the generic path, and switched on the fused one. */
    eq_layer_destroy(f);
    f = regular(conv(4, 2, 1), c4, 132);
    assert_int_equal(eq_equivarify_set_fused(f, 0), EQ_OK);
    assert_int_equal(eq_layer_forward(f, image, y), EQ_OK);
    assert_int_equal(eq_equivarify_used_fused(f), 0);
    assert_int_equal(eq_equivarify_set_fused(f, 1), EQ_OK);
    assert_int_equal(eq_layer_forward(f, image, y), EQ_OK);
    assert_int_equal(eq_equivarify_used_fused(f), 1);

    /* The switch and the query on other layers. */
    assert_int_equal(eq_relu_create(&layer), EQ_OK);
    assert_int_equal(eq_equivarify_set_fused(layer, 1), EQ_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(eq_last_error(), "layer is relu, expected an equivarify layer"));
    assert_int_equal(eq_equivarify_set_fused(NULL, 1), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_equivarify_used_fused(layer), 0);
    assert_int_equal(eq_equivarify_used_fused(NULL), 0);
    eq_layer_destroy(layer);

    eq_tensor_destroy(image);
    eq_tensor_destroy(y);
    eq_layer_destroy(f);
    eq_group_destroy(c4);
}

/* Backward follows the path of the forward it differentiates, even when
 * the switch changes in between. */
static void backward_follows_forward_path(void **state)
{
    (void)state;
    eq_group *c4;
    eq_param param;

    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    eq_layer *f = regular(conv_pool_dense(8, 6, 1), c4, 140);
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(2, 8, 6, 6), 141);
    run_result reference = run_path(f, 1, x, 142);

    eq_tensor *y = eq_test_output_for(f, x->shape), *dy = eq_test_random_tensor(y->shape, 142), *dx = NULL;
    assert_int_equal(eq_tensor_create(x->shape, &dx), EQ_OK);
    eq_layer_zero_grad(f);
    assert_int_equal(eq_equivarify_set_fused(f, 1), EQ_OK);
    assert_int_equal(eq_layer_forward(f, x, y), EQ_OK);
    assert_int_equal(eq_equivarify_set_fused(f, 0), EQ_OK);
    assert_int_equal(eq_layer_backward(f, dy, dx), EQ_OK);

    assert_memory_equal(dx->data, reference.dx, reference.x_count * sizeof(float));
    for (size_t p = 0; p < reference.param_count; p++) {
        assert_int_equal(eq_layer_param(f, p, &param), EQ_OK);
        assert_memory_equal(param.grad, reference.grads[p], param.count * sizeof(float));
    }

    run_result_free(&reference);
    eq_tensor_destroy(x);
    eq_tensor_destroy(y);
    eq_tensor_destroy(dy);
    eq_tensor_destroy(dx);
    eq_layer_destroy(f);
    eq_group_destroy(c4);
}

/* --- Core multi-branch calls --------------------------------------------------- */

/* Rows that are permutations but not a group table (row 0 is not the
 * identity), checked against the plain layer on explicit copies. */
static const size_t odd_sources[3 * 3] = { 2, 0, 1, 1, 2, 0, 2, 1, 0 };

/* stacked[i * n + g] block b = x[i] block sources[g * n + b]. */
static eq_tensor *stack_copies(const eq_tensor *x, size_t n, const size_t *sources)
{
    eq_tensor *stacked = NULL;
    size_t sample = eq_shape_numel(x->shape) / x->shape.n, block = sample / n;

    assert_int_equal(eq_tensor_create(eq_shape_make(n * x->shape.n, x->shape.c, x->shape.h, x->shape.w), &stacked),
                     EQ_OK);
    for (size_t i = 0; i < x->shape.n; i++)
        for (size_t g = 0; g < n; g++)
            for (size_t b = 0; b < n; b++)
                memcpy(stacked->data + (i * n + g) * sample + b * block,
                       x->data + i * sample + sources[g * n + b] * block, block * sizeof(float));
    return stacked;
}

/* The adjoint of stack_copies. */
static void unstack_add(const eq_tensor *dstacked, size_t n, const size_t *sources, eq_tensor *dx)
{
    size_t sample = eq_shape_numel(dx->shape) / dx->shape.n, block = sample / n;

    memset(dx->data, 0, eq_shape_numel(dx->shape) * sizeof(float));
    for (size_t i = 0; i < dx->shape.n; i++)
        for (size_t g = 0; g < n; g++)
            for (size_t b = 0; b < n; b++)
                for (size_t q = 0; q < block; q++)
                    dx->data[i * sample + sources[g * n + b] * block + q]
                        += dstacked->data[(i * n + g) * sample + b * block + q];
}

typedef eq_status (*forward_blocks_fn)(eq_layer *, size_t, const size_t *, const eq_tensor *, eq_tensor *);
typedef eq_status (*backward_blocks_fn)(eq_layer *, const eq_tensor *, eq_tensor *);

static void assert_blocks_match_copies(eq_layer *layer, forward_blocks_fn forward, backward_blocks_fn backward,
                                       size_t n, const size_t *sources, const eq_tensor *x, const char *label)
{
    eq_tensor *stacked = stack_copies(x, n, sources);
    eq_tensor *y = eq_test_output_for(layer, stacked->shape), *y_ref = eq_test_output_for(layer, stacked->shape);
    eq_tensor *dy = eq_test_random_tensor(y->shape, 150), *dstacked = NULL, *dx = NULL, *dx_ref = NULL;
    eq_param weight;

    assert_int_equal(eq_tensor_create(stacked->shape, &dstacked), EQ_OK);
    assert_int_equal(eq_tensor_create(x->shape, &dx), EQ_OK);
    assert_int_equal(eq_tensor_create(x->shape, &dx_ref), EQ_OK);
    assert_int_equal(eq_layer_param(layer, 0, &weight), EQ_OK);

    eq_layer_zero_grad(layer);
    assert_int_equal(eq_layer_forward(layer, stacked, y_ref), EQ_OK);
    assert_int_equal(eq_layer_backward(layer, dy, dstacked), EQ_OK);
    unstack_add(dstacked, n, sources, dx_ref);
    float *dweight_ref = copy_floats(weight.grad, weight.count);

    eq_layer_zero_grad(layer);
    assert_int_equal(forward(layer, n, sources, x, y), EQ_OK);
    assert_int_equal(backward(layer, dy, dx), EQ_OK);

    assert_close(label, "output", y->data, y_ref->data, eq_shape_numel(y->shape));
    assert_close(label, "input gradient", dx->data, dx_ref->data, eq_shape_numel(x->shape));
    assert_close(label, "weight gradient", weight.grad, dweight_ref, weight.count);

    free(dweight_ref);
    eq_tensor_destroy(stacked);
    eq_tensor_destroy(y);
    eq_tensor_destroy(y_ref);
    eq_tensor_destroy(dy);
    eq_tensor_destroy(dstacked);
    eq_tensor_destroy(dx);
    eq_tensor_destroy(dx_ref);
}

static void core_blocks_match_copies(void **state)
{
    (void)state;
    eq_rng rng;

    eq_layer *c = conv(6, 4, 1);
    eq_rng_seed(&rng, 151);
    eq_layer_init_he(c, &rng);
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(2, 6, 5, 5), 152);
    assert_blocks_match_copies(c, eq_conv2d_forward_blocks, eq_conv2d_backward_blocks, 3, odd_sources, x,
                               "conv2d, 3 branches");
    eq_tensor_destroy(x);
    eq_layer_destroy(c);

    eq_layer *d = dense(3 * 2 * 2 * 2, 5);
    eq_layer_init_he(d, &rng);
    x = eq_test_random_tensor(eq_shape_make(2, 3 * 2, 2, 2), 153);
    assert_blocks_match_copies(d, eq_dense_forward_blocks, eq_dense_backward_blocks, 3, odd_sources, x,
                               "dense, 3 branches");
    eq_tensor_destroy(x);
    eq_layer_destroy(d);
}

/* Cyclic source tables, sources[g * n + b] = (b + g) mod n, take the
 * spectral path; the table of the Klein four-group does not. */
static const size_t cyclic2[2 * 2] = { 0, 1, 1, 0 };
static const size_t cyclic4[4 * 4] = { 0, 1, 2, 3, 1, 2, 3, 0, 2, 3, 0, 1, 3, 0, 1, 2 };
static const size_t klein4[4 * 4] = { 0, 1, 2, 3, 1, 0, 3, 2, 2, 3, 0, 1, 3, 2, 1, 0 };

typedef struct spectral_case {
    size_t n;
    const size_t *sources;
    size_t channels, out_channels, size, batch; /* input (batch, channels, size, size) */
    int spectral;                               /* the path's switch for this case */
    const char *label;
} spectral_case;

static void spectral_blocks_match_copies(void **state)
{
    (void)state;
    /* 64 channels of 32 x 32 lower to 576 x 1024 columns. That is more than
     * one column buffer fits, so this case runs in position tiles. The
     * small cases run as one chunk of several images. */
    const spectral_case cases[] = {
        { 2, cyclic2, 6, 5, 5, 3, 1, "conv2d, 2 cyclic branches, spectral" },
        { 4, cyclic4, 8, 5, 6, 3, 1, "conv2d, 4 cyclic branches, spectral" },
        { 4, cyclic4, 64, 7, 32, 2, 1, "conv2d, 4 cyclic branches, spectral, tiled" },
        { 4, cyclic4, 8, 32, 6, 3, 1, "conv2d, 4 cyclic branches, spectral, 32 outputs" },
        { 2, cyclic2, 4, 40, 6, 2, 1, "conv2d, 2 cyclic branches, spectral, 40 outputs" },
        { 4, cyclic4, 8, 5, 6, 3, 0, "conv2d, 4 cyclic branches, block path" },
        { 4, klein4, 8, 5, 6, 3, 1, "conv2d, 4 branches of the Klein table" },
    };
    eq_rng rng;

    eq_rng_seed(&rng, 170);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const spectral_case *sc = &cases[i];
        eq_layer *c = conv(sc->channels, sc->out_channels, 1);
        eq_tensor *x = eq_test_random_tensor(eq_shape_make(sc->batch, sc->channels, sc->size, sc->size), 171 + i);
        eq_param bias;

        eq_layer_init_he(c, &rng);
        assert_int_equal(eq_layer_param(c, 1, &bias), EQ_OK);
        for (size_t o = 0; o < bias.count; o++)
            bias.value[o] = 0.1f * (float)o - 0.2f;

        eq_blocks_set_spectral(sc->spectral);
        assert_int_equal(eq_block_sources_spectral(sc->n, sc->sources), sc->spectral && sc->sources != klein4);
        assert_blocks_match_copies(c, eq_conv2d_forward_blocks, eq_conv2d_backward_blocks, sc->n, sc->sources, x,
                                   sc->label);
        eq_blocks_set_spectral(1);

        eq_tensor_destroy(x);
        eq_layer_destroy(c);
    }
    assert_int_equal(eq_block_sources_spectral(3, odd_sources), 0);

    /* Dense layers read the blocks as features: 4 blocks of 2 channels of
     * 3 x 3, and 2 blocks of 5 features. */
    for (size_t spectral = 0; spectral <= 1; spectral++) {
        eq_layer *d = dense(4 * 2 * 3 * 3, 6);
        eq_tensor *x = eq_test_random_tensor(eq_shape_make(5, 4 * 2, 3, 3), 176);
        eq_layer_init_he(d, &rng);
        eq_blocks_set_spectral((int)spectral);
        assert_blocks_match_copies(d, eq_dense_forward_blocks, eq_dense_backward_blocks, 4, cyclic4, x,
                                   spectral ? "dense, 4 cyclic branches, spectral" : "dense, 4 cyclic branches");
        eq_blocks_set_spectral(1);
        eq_tensor_destroy(x);
        eq_layer_destroy(d);
    }
    eq_layer *d = dense(2 * 5, 3);
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(4, 2 * 5, 1, 1), 177);
    eq_layer_init_he(d, &rng);
    assert_blocks_match_copies(d, eq_dense_forward_blocks, eq_dense_backward_blocks, 2, cyclic2, x,
                               "dense, 2 cyclic branches, spectral");
    eq_tensor_destroy(x);
    eq_layer_destroy(d);
}

/* Shifting the input blocks by one, x_c -> x_(c+1), shifts the branches of
 * the spectral output, y_g -> y_(g+1), bit for bit. The input has exact
 * zeros, equal blocks and a zero bias, where the sign of a zero could
 * leak into the output. */
static void spectral_blocks_bitwise_shift(void **state)
{
    (void)state;
    eq_rng rng;

    eq_rng_seed(&rng, 180);
    for (size_t n = 2; n <= 4; n += 2) {
        const size_t *sources = n == 2 ? cyclic2 : cyclic4;
        const size_t block_channels = 3, batch = 2, size = 7;
        eq_layer *c = conv(n * block_channels, 4, 1);
        eq_tensor *x = eq_test_random_tensor(eq_shape_make(batch, n * block_channels, size, size), 181 + n);
        eq_tensor *shifted = NULL;
        eq_shape stacked = eq_shape_make(n * batch, n * block_channels, size, size);
        eq_tensor *y = eq_test_output_for(c, stacked), *y_shifted = eq_test_output_for(c, stacked);
        size_t plane = size * size, block = block_channels * plane, sample = n * block;
        size_t out_sample = eq_shape_numel(y->shape) / y->shape.n;

        eq_layer_init_he(c, &rng);
        assert_int_equal(eq_tensor_create(x->shape, &shifted), EQ_OK);
        for (size_t i = 0; i < batch; i++) {
            float *xi = x->data + i * sample;
            /* Channel 0 of every block is the same plane, the upper rows of
             * every channel are zero and so is every fifth value. */
            for (size_t b = 1; b < n; b++)
                memcpy(xi + b * block, xi, plane * sizeof(float));
            for (size_t ch = 0; ch < n * block_channels; ch++)
                memset(xi + ch * plane, 0, 3 * size * sizeof(float));
            for (size_t q = 0; q < sample; q += 5)
                xi[q] = 0.0f;
            for (size_t b = 0; b < n; b++)
                memcpy(shifted->data + i * sample + b * block, xi + (b + 1) % n * block, block * sizeof(float));
        }

        assert_int_equal(eq_conv2d_forward_blocks(c, n, sources, x, y), EQ_OK);
        assert_int_equal(eq_conv2d_forward_blocks(c, n, sources, shifted, y_shifted), EQ_OK);
        for (size_t i = 0; i < batch; i++)
            for (size_t g = 0; g < n; g++)
                assert_memory_equal(y_shifted->data + (i * n + g) * out_sample,
                                    y->data + (i * n + (g + 1) % n) * out_sample, out_sample * sizeof(float));

        /* The same input through a dense layer, with every bias zero. */
        eq_layer *d = dense(sample, 5);
        eq_tensor *z = eq_test_output_for(d, stacked), *z_shifted = eq_test_output_for(d, stacked);
        eq_layer_init_he(d, &rng);
        assert_int_equal(eq_dense_forward_blocks(d, n, sources, x, z), EQ_OK);
        assert_int_equal(eq_dense_forward_blocks(d, n, sources, shifted, z_shifted), EQ_OK);
        for (size_t i = 0; i < batch; i++)
            for (size_t g = 0; g < n; g++)
                assert_memory_equal(z_shifted->data + (i * n + g) * 5, z->data + (i * n + (g + 1) % n) * 5,
                                    5 * sizeof(float));

        eq_tensor_destroy(x);
        eq_tensor_destroy(shifted);
        eq_tensor_destroy(y);
        eq_tensor_destroy(y_shifted);
        eq_tensor_destroy(z);
        eq_tensor_destroy(z_shifted);
        eq_layer_destroy(c);
        eq_layer_destroy(d);
    }
}

static void core_blocks_reject_bad_input(void **state)
{
    (void)state;
    const size_t identity[2 * 2] = { 0, 1, 0, 1 }, repeated[2 * 2] = { 0, 1, 1, 1 }, outside[2 * 2] = { 0, 1, 2, 0 };
    const size_t cyclic[4 * 4] = { 0, 1, 2, 3, 1, 2, 3, 0, 2, 3, 0, 1, 3, 0, 1, 2 };
    eq_layer *c = conv(4, 3, 1), *d = dense(4 * 2 * 2, 3), *relu;
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(1, 4, 2, 2), 160);
    eq_tensor *odd = eq_test_random_tensor(eq_shape_make(1, 3, 2, 2), 161);
    eq_tensor *y = NULL, *wrong = NULL, *dy = NULL;

    assert_int_equal(eq_tensor_create(eq_shape_make(2, 3, 2, 2), &y), EQ_OK);
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 3, 2, 2), &wrong), EQ_OK);
    assert_int_equal(eq_relu_create(&relu), EQ_OK);

    /* Before any multi-branch forward. */
    assert_int_equal(eq_conv2d_backward_blocks(c, y, NULL), EQ_ERR_STATE);
    assert_non_null(strstr(eq_last_error(), "eq_conv2d_forward_blocks first"));
    assert_int_equal(eq_dense_backward_blocks(d, y, NULL), EQ_ERR_STATE);

    /* Source tables. */
    assert_int_equal(eq_conv2d_forward_blocks(c, 2, repeated, x, y), EQ_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(eq_last_error(), "row 1 is not a permutation of 0..1: entry 1 is 1"));
    assert_int_equal(eq_conv2d_forward_blocks(c, 2, outside, x, y), EQ_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(eq_last_error(), "entry 0 is 2"));
    assert_int_equal(eq_conv2d_forward_blocks(c, 0, identity, x, y), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_conv2d_forward_blocks(c, 2, NULL, x, y), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_dense_forward_blocks(d, 2, repeated, x, y), EQ_ERR_INVALID_ARGUMENT);

    /* Gathered tables: 2 branches of K = 36 rows and 4 positions. */
    size_t rows[2 * 36], positions[2 * 4];
    for (size_t q = 0; q < 2 * 36; q++)
        rows[q] = q % 36;
    for (size_t q = 0; q < 2 * 4; q++)
        positions[q] = q % 4;
    assert_int_equal(eq_conv2d_forward_gathered(c, 2, rows, positions, x, y), EQ_OK);
    assert_int_equal(eq_conv2d_backward_blocks(c, y, NULL), EQ_OK);
    rows[36 + 5] = 4;
    assert_int_equal(eq_conv2d_forward_gathered(c, 2, rows, positions, x, y), EQ_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(eq_last_error(), "row table row 1 is not a permutation of 0..35: entry 5 is 4"));
    rows[36 + 5] = 5;
    positions[0] = 4;
    assert_int_equal(eq_conv2d_forward_gathered(c, 2, rows, positions, x, y), EQ_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(eq_last_error(), "position table row 0 is not a permutation of 0..3: entry 0 is 4"));
    assert_int_equal(eq_conv2d_forward_gathered(c, 2, NULL, positions, x, y), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_conv2d_forward_gathered(c, 0, rows, positions, x, y), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_conv2d_forward_gathered(relu, 2, rows, positions, x, y), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_conv2d_forward_gathered(c, 2, rows, positions, x, wrong), EQ_ERR_SHAPE);

    /* Layer kinds and shapes. */
    assert_int_equal(eq_conv2d_forward_blocks(relu, 2, identity, x, y), EQ_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(eq_last_error(), "layer is relu, expected a conv2d"));
    assert_int_equal(eq_dense_forward_blocks(c, 2, identity, x, y), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_conv2d_forward_blocks(c, 2, identity, NULL, y), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_conv2d_forward_blocks(c, 2, identity, x, wrong), EQ_ERR_SHAPE);
    assert_non_null(strstr(eq_last_error(), "expected (2, 3, 2, 2)"));
    assert_int_equal(eq_conv2d_forward_blocks(c, 4, cyclic, odd, y), EQ_ERR_SHAPE);
    assert_non_null(strstr(eq_last_error(), "expected a multiple of 4 branches"));

    /* After a multi-branch forward, the plain backward is unavailable and
     * the multi-branch backward checks its shapes. */
    assert_int_equal(eq_conv2d_forward_blocks(c, 2, identity, x, y), EQ_OK);
    assert_int_equal(eq_layer_backward(c, y, NULL), EQ_ERR_STATE);
    assert_int_equal(eq_conv2d_backward_blocks(c, wrong, NULL), EQ_ERR_SHAPE);
    assert_non_null(strstr(eq_last_error(), "expected the forward output shape (2, 3, 2, 2)"));
    assert_int_equal(eq_conv2d_backward_blocks(c, y, wrong), EQ_ERR_SHAPE);
    assert_int_equal(eq_conv2d_backward_blocks(c, y, NULL), EQ_OK);

    eq_tensor_destroy(y);
    assert_int_equal(eq_tensor_create(eq_shape_make(2, 3, 1, 1), &y), EQ_OK);
    assert_int_equal(eq_dense_forward_blocks(d, 2, identity, x, y), EQ_OK);
    assert_int_equal(eq_layer_backward(d, y, NULL), EQ_ERR_STATE);
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 3, 1, 1), &dy), EQ_OK);
    assert_int_equal(eq_dense_backward_blocks(d, dy, NULL), EQ_ERR_SHAPE);
    assert_int_equal(eq_dense_backward_blocks(d, y, odd), EQ_ERR_SHAPE);
    assert_int_equal(eq_dense_backward_blocks(d, y, NULL), EQ_OK);

    /* A plain forward makes the multi-branch backward unavailable again. */
    eq_tensor *plain_y = eq_test_output_for(d, x->shape);
    assert_int_equal(eq_layer_forward(d, x, plain_y), EQ_OK);
    assert_int_equal(eq_dense_backward_blocks(d, y, NULL), EQ_ERR_STATE);

    eq_tensor_destroy(plain_y);
    eq_tensor_destroy(x);
    eq_tensor_destroy(odd);
    eq_tensor_destroy(y);
    eq_tensor_destroy(wrong);
    eq_tensor_destroy(dy);
    eq_layer_destroy(c);
    eq_layer_destroy(d);
    eq_layer_destroy(relu);
}

static void sequential_from_rejects_bad_input(void **state)
{
    (void)state;
    eq_layer *seq, *layer;
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(1, 2, 3, 3), 170), *y = NULL, *other = NULL;

    assert_int_equal(eq_tensor_create(x->shape, &y), EQ_OK);
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 2, 3, 4), &other), EQ_OK);
    assert_int_equal(eq_sequential_create(&seq), EQ_OK);
    eq_test_append(seq, eq_relu_create(&layer), &layer);

    assert_int_equal(eq_sequential_forward_from(seq, 2, x, y), EQ_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(eq_last_error(), "first child 2 is past the end of 1 children"));
    assert_int_equal(eq_sequential_forward_from(layer, 0, x, y), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_sequential_forward_from(seq, 1, x, other), EQ_ERR_SHAPE);
    assert_int_equal(eq_sequential_backward_from(seq, 0, x, y), EQ_ERR_STATE);

    /* first == count copies; first == 0 runs the relu. */
    assert_int_equal(eq_sequential_forward_from(seq, 1, x, y), EQ_OK);
    assert_memory_equal(y->data, x->data, eq_shape_numel(x->shape) * sizeof(float));
    assert_int_equal(eq_sequential_forward_from(seq, 0, x, y), EQ_OK);
    for (size_t i = 0; i < eq_shape_numel(x->shape); i++)
        assert_true(y->data[i] == (x->data[i] > 0.0f ? x->data[i] : 0.0f));
    assert_int_equal(eq_sequential_backward_from(seq, 0, x, other), EQ_ERR_SHAPE);
    assert_int_equal(eq_sequential_backward_from(seq, 0, x, y), EQ_OK);

    eq_tensor_destroy(x);
    eq_tensor_destroy(y);
    eq_tensor_destroy(other);
    eq_layer_destroy(seq);
}

/* --- Threads ------------------------------------------------------------------ */

/* Asserts that a run with `threads` threads reproduced the reference run
 * bit for bit. */
static void assert_runs_bitwise_equal(const run_result *run, const run_result *reference, int threads,
                                      const char *label)
{
    if (memcmp(run->y, reference->y, reference->y_count * sizeof(float)) != 0)
        fail_msg("%s: output with %d threads differs from 1 thread", label, threads);
    if (memcmp(run->dx, reference->dx, reference->x_count * sizeof(float)) != 0)
        fail_msg("%s: input gradient with %d threads differs from 1 thread", label, threads);
    for (size_t p = 0; p < reference->param_count; p++) {
        if (memcmp(run->grads[p], reference->grads[p], reference->grad_counts[p] * sizeof(float)) != 0)
            fail_msg("%s: gradient of parameter %zu with %d threads differs from 1 thread", label, p, threads);
    }
}

/* The fused path only adds GEMM calls, whose results do not depend on the
 * thread count, so outputs and gradients are bitwise equal for any count.
 * The 320-channel layer's GEMMs are large enough to run on several
 * threads. */
/* Runs a three-layer network and a wide conv of `group` on 1, 2 and 3
 * threads and checks that every result has the same bits. */
static void assert_fused_independent_of_threads(const eq_group *group)
{
    int saved = eq_get_num_threads();
    eq_layer *net = three_layer_network(group, 180);
    eq_layer *wide = regular(conv(4 * 80, 4, 1), group, 181);
    eq_layer *aligned = NULL;
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(3, 1, 9, 9), 182);
    eq_tensor *wide_x = eq_test_random_tensor(eq_shape_make(1, 4 * 80, 28, 28), 183);
    eq_tensor *aligned_x = eq_test_random_tensor(eq_shape_make(2, eq_group_order(group) * 8, 20, 20), 186);
    run_result net_reference, wide_reference, aligned_reference;
    eq_rng rng;

    /* An aligned layer on blocks and pixels takes the gathered path. */
    assert_int_equal(eq_equivarify_aligned(conv_relu(eq_group_order(group) * 8, 6), group, EQ_ACTION_BLOCKS_PIXELS,
                                           &aligned),
                     EQ_OK);
    eq_rng_seed(&rng, 187);
    eq_layer_init_he(aligned, &rng);

    for (int threads = 1; threads <= 3; threads++) {
        assert_int_equal(eq_set_num_threads(threads), EQ_OK);
        run_result net_run = run_layer(net, x, 184);
        run_result wide_run = run_path(wide, 1, wide_x, 185);
        run_result aligned_run = run_path(aligned, 1, aligned_x, 188);
        if (threads == 1) {
            net_reference = net_run;
            wide_reference = wide_run;
            aligned_reference = aligned_run;
            continue;
        }
        assert_runs_bitwise_equal(&net_run, &net_reference, threads, "three-layer network");
        assert_runs_bitwise_equal(&wide_run, &wide_reference, threads, "conv 320->4");
        assert_runs_bitwise_equal(&aligned_run, &aligned_reference, threads, "aligned conv");
        run_result_free(&net_run);
        run_result_free(&wide_run);
        run_result_free(&aligned_run);
    }

    assert_int_equal(eq_set_num_threads(saved), EQ_OK);
    run_result_free(&net_reference);
    run_result_free(&wide_reference);
    run_result_free(&aligned_reference);
    eq_tensor_destroy(x);
    eq_tensor_destroy(wide_x);
    eq_tensor_destroy(aligned_x);
    eq_layer_destroy(net);
    eq_layer_destroy(wide);
    eq_layer_destroy(aligned);
}

/* D4 runs the block path, C4 the spectral one. */
static void fused_results_independent_of_threads(void **state)
{
    (void)state;
    eq_group *d4, *c4;

    assert_int_equal(eq_group_d4(&d4), EQ_OK);
    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    assert_fused_independent_of_threads(d4);
    assert_fused_independent_of_threads(c4);
    eq_group_destroy(d4);
    eq_group_destroy(c4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fused_default_follows_environment),
        cmocka_unit_test(conv_fused_matches_generic),
        cmocka_unit_test(dense_fused_matches_generic),
        cmocka_unit_test(sequential_fused_matches_generic),
        cmocka_unit_test(chunked_conv_fused_matches_generic),
        cmocka_unit_test(fused_network_bitwise_equivariant),
        cmocka_unit_test(fused_stack_gradients),
        cmocka_unit_test(fused_linear_gradients),
        cmocka_unit_test(gathered_matches_generic_bitwise),
        cmocka_unit_test(fused_path_only_where_exact),
        cmocka_unit_test(backward_follows_forward_path),
        cmocka_unit_test(core_blocks_match_copies),
        cmocka_unit_test(spectral_blocks_match_copies),
        cmocka_unit_test(spectral_blocks_bitwise_shift),
        cmocka_unit_test(core_blocks_reject_bad_input),
        cmocka_unit_test(sequential_from_rejects_bad_input),
        cmocka_unit_test(fused_results_independent_of_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
