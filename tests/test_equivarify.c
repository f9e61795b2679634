/* Tests for groups, their actions, eq_equivarify and the projection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "equivar.h"
#include "equivar/equivarify.h"
#include "equivarify/fused.h"
#include "testutil.h"

/* --- Fixtures -------------------------------------------------------------- */

static void append_new(eq_layer *seq, eq_layer *layer)
{
    eq_test_append(seq, EQ_OK, &layer);
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

static eq_layer *equivarified(eq_layer *h, const eq_group *group, eq_action action)
{
    eq_layer *layer = NULL;

    assert_int_equal(eq_equivarify(h, group, action, &layer), EQ_OK);
    return layer;
}

/* A scaled-down network of the usual equivarified shape: a lifting
 * conv, a regular conv, then one regular block of conv, pool, dense, dense.
 * Input (N, 1, 9, 9); output (N, n * 5, 1, 1). */
static eq_layer *reference_network(const eq_group *group, uint64_t seed)
{
    size_t n = eq_group_order(group);
    eq_layer *net, *head, *layer;
    eq_rng rng;

    assert_int_equal(eq_sequential_create(&net), EQ_OK);
    append_new(net, equivarified(conv_relu(1, 3), group, EQ_ACTION_PIXELS));
    append_new(net, equivarified(conv_relu(3 * n, 3), group, EQ_ACTION_BLOCKS));

    assert_int_equal(eq_sequential_create(&head), EQ_OK);
    eq_test_append(head, eq_conv2d_create(3 * n, 4, 3, 3, 1, 1, &layer), &layer);
    eq_test_append(head, eq_relu_create(&layer), &layer);
    eq_test_append(head, eq_maxpool_create(2, 2, &layer), &layer);
    eq_test_append(head, eq_flatten_create(&layer), &layer);
    eq_test_append(head, eq_dense_create(4 * 4 * 4, 12, &layer), &layer);
    eq_test_append(head, eq_relu_create(&layer), &layer);
    eq_test_append(head, eq_dense_create(12, 5, &layer), &layer);
    append_new(net, equivarified(head, group, EQ_ACTION_BLOCKS));

    eq_rng_seed(&rng, seed);
    eq_layer_init_he(net, &rng);
    return net;
}

/* Asserts F(k . x) == k . F(x) bit for bit for every element k, with the
 * given actions on the input and the output. */
static void assert_equivariant_with(eq_layer *net, const eq_group *group, eq_action input_action,
                                    eq_action output_action, eq_tensor *x)
{
    eq_tensor *kx = NULL, *y = eq_test_output_for(net, x->shape), *ky = eq_test_output_for(net, x->shape);
    eq_tensor *y_of_kx = eq_test_output_for(net, x->shape);
    size_t count = eq_shape_numel(y->shape);

    assert_int_equal(eq_tensor_create(x->shape, &kx), EQ_OK);
    assert_int_equal(eq_layer_forward(net, x, y), EQ_OK);
    for (size_t k = 0; k < eq_group_order(group); k++) {
        assert_int_equal(eq_group_act(group, input_action, k, x, kx), EQ_OK);
        assert_int_equal(eq_layer_forward(net, kx, y_of_kx), EQ_OK);
        assert_int_equal(eq_group_act(group, output_action, k, y, ky), EQ_OK);
        if (memcmp(y_of_kx->data, ky->data, count * sizeof(float)) != 0)
            fail_msg("F(k x) != k F(x) for element %zu (%s) of %s", k, eq_group_element_name(group, k),
                     eq_group_name(group));
    }

    /* The check above must not pass because the output ignores its input. */
    if (eq_group_order(group) > 1 && output_action != EQ_ACTION_TRIVIAL) {
        assert_int_equal(eq_group_act(group, output_action, 1, y, ky), EQ_OK);
        assert_true(memcmp(y->data, ky->data, count * sizeof(float)) != 0);
    }

    eq_tensor_destroy(kx);
    eq_tensor_destroy(y);
    eq_tensor_destroy(ky);
    eq_tensor_destroy(y_of_kx);
}

static void assert_equivariant(eq_layer *net, const eq_group *group, eq_action input_action, eq_tensor *x)
{
    assert_equivariant_with(net, group, input_action, EQ_ACTION_BLOCKS, x);
}

/* --- Groups and actions ------------------------------------------------------ */

static void c4_rotation_hand_computed_4x4(void **state)
{
    (void)state;
    eq_group *c4;
    eq_tensor *x, *y;
    /* numpy.rot90(arange(16).reshape(4, 4), k) for k = 1, 2, 3 */
    const float expected[3][16] = {
        { 3, 7, 11, 15, 2, 6, 10, 14, 1, 5, 9, 13, 0, 4, 8, 12 },
        { 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0 },
        { 12, 8, 4, 0, 13, 9, 5, 1, 14, 10, 6, 2, 15, 11, 7, 3 },
    };

    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 1, 4, 4), &x), EQ_OK);
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 1, 4, 4), &y), EQ_OK);
    for (int p = 0; p < 16; p++)
        x->data[p] = (float)p;

    assert_int_equal(eq_group_act_pixels(c4, 0, x, y), EQ_OK);
    assert_memory_equal(y->data, x->data, sizeof expected[0]);
    for (size_t k = 1; k < 4; k++) {
        assert_int_equal(eq_group_act_pixels(c4, k, x, y), EQ_OK);
        assert_memory_equal(y->data, expected[k - 1], sizeof expected[0]);
    }
    assert_string_equal(eq_group_element_name(c4, 3), "r3");
    assert_string_equal(eq_group_name(c4), "c4");

    eq_tensor_destroy(x);
    eq_tensor_destroy(y);
    eq_group_destroy(c4);
}

static void assert_group_axioms(const eq_group *group)
{
    size_t n = eq_group_order(group);

    for (size_t a = 0; a < n; a++) {
        assert_int_equal(eq_group_mul(group, 0, a), a);
        assert_int_equal(eq_group_mul(group, a, 0), a);
        assert_true(eq_group_inv(group, a) < n);
        assert_int_equal(eq_group_mul(group, a, eq_group_inv(group, a)), 0);
        assert_int_equal(eq_group_mul(group, eq_group_inv(group, a), a), 0);
        for (size_t b = 0; b < n; b++) {
            assert_true(eq_group_mul(group, a, b) < n);
            for (size_t c = 0; c < n; c++)
                assert_int_equal(eq_group_mul(group, eq_group_mul(group, a, b), c),
                                 eq_group_mul(group, a, eq_group_mul(group, b, c)));
        }
    }
}

/* act(a, act(b, x)) == act(a * b, x) bit for bit, for both actions. */
static void assert_actions_homomorphic(const eq_group *group, size_t size)
{
    size_t n = eq_group_order(group);
    eq_shape shape = eq_shape_make(2, 2 * n, size, size);
    eq_tensor *x = eq_test_random_tensor(shape, 11), *bx, *abx, *direct;
    size_t bytes = eq_shape_numel(shape) * sizeof(float);

    assert_int_equal(eq_tensor_create(shape, &bx), EQ_OK);
    assert_int_equal(eq_tensor_create(shape, &abx), EQ_OK);
    assert_int_equal(eq_tensor_create(shape, &direct), EQ_OK);
    for (size_t a = 0; a < n; a++) {
        for (size_t b = 0; b < n; b++) {
            size_t ab = eq_group_mul(group, a, b);
            assert_int_equal(eq_group_act_pixels(group, b, x, bx), EQ_OK);
            assert_int_equal(eq_group_act_pixels(group, a, bx, abx), EQ_OK);
            assert_int_equal(eq_group_act_pixels(group, ab, x, direct), EQ_OK);
            assert_memory_equal(abx->data, direct->data, bytes);

            assert_int_equal(eq_group_act_blocks(group, b, x, bx), EQ_OK);
            assert_int_equal(eq_group_act_blocks(group, a, bx, abx), EQ_OK);
            assert_int_equal(eq_group_act_blocks(group, ab, x, direct), EQ_OK);
            assert_memory_equal(abx->data, direct->data, bytes);
        }
    }
    eq_tensor_destroy(x);
    eq_tensor_destroy(bx);
    eq_tensor_destroy(abx);
    eq_tensor_destroy(direct);
}

static void builtin_groups_satisfy_axioms(void **state)
{
    (void)state;
    eq_group *trivial, *c4;

    assert_int_equal(eq_group_trivial(&trivial), EQ_OK);
    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    assert_int_equal(eq_group_order(trivial), 1);
    assert_int_equal(eq_group_order(c4), 4);
    assert_group_axioms(trivial);
    assert_group_axioms(c4);
    for (size_t size = 1; size <= 6; size++) {
        assert_actions_homomorphic(trivial, size);
        assert_actions_homomorphic(c4, size);
    }
    eq_group_destroy(trivial);
    eq_group_destroy(c4);
}

static void actions_reject_bad_arguments(void **state)
{
    (void)state;
    eq_group *c4;
    eq_tensor *rect, *square, *odd, *other;

    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 4, 3, 5), &rect), EQ_OK);
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 4, 3, 3), &square), EQ_OK);
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 6, 3, 3), &odd), EQ_OK);
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 6, 3, 3), &other), EQ_OK);

    assert_int_equal(eq_group_act_pixels(c4, 1, rect, rect), EQ_ERR_SHAPE);
    assert_non_null(strstr(eq_last_error(), "square"));
    assert_int_equal(eq_group_act_pixels(c4, 4, square, square), EQ_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(eq_last_error(), "element 4"));
    assert_int_equal(eq_group_act_pixels(c4, 1, square, odd), EQ_ERR_SHAPE);
    assert_int_equal(eq_group_act_blocks(c4, 1, odd, other), EQ_ERR_SHAPE);
    assert_non_null(strstr(eq_last_error(), "6 channels"));
    assert_int_equal(eq_group_act_blocks(NULL, 1, odd, other), EQ_ERR_INVALID_ARGUMENT);

    eq_tensor_destroy(rect);
    eq_tensor_destroy(square);
    eq_tensor_destroy(odd);
    eq_tensor_destroy(other);
    eq_group_destroy(c4);
}

/* --- Equivarify ------------------------------------------------------------ */

static void reference_network_bitwise_equivariant(void **state)
{
    (void)state;
    eq_group *c4;

    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    eq_layer *net = reference_network(c4, 5);
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(3, 1, 9, 9), 6);

    assert_equivariant(net, c4, EQ_ACTION_PIXELS, x);

    /* An even size, where no pixel stays fixed under a quarter turn. */
    eq_tensor *even = eq_test_random_tensor(eq_shape_make(2, 1, 10, 10), 7);
    eq_layer *layer;
    eq_layer *h;
    assert_int_equal(eq_sequential_create(&h), EQ_OK);
    eq_test_append(h, eq_conv2d_create(1, 2, 3, 3, 2, 0, &layer), &layer);
    eq_test_append(h, eq_flatten_create(&layer), &layer);
    eq_test_append(h, eq_dense_create(2 * 4 * 4, 3, &layer), &layer);
    eq_layer *single = equivarified(h, c4, EQ_ACTION_PIXELS);
    eq_rng rng;
    eq_rng_seed(&rng, 8);
    eq_layer_init_he(single, &rng);
    assert_equivariant(single, c4, EQ_ACTION_PIXELS, even);

    eq_tensor_destroy(x);
    eq_tensor_destroy(even);
    eq_layer_destroy(net);
    eq_layer_destroy(single);
    eq_group_destroy(c4);
}

static void regular_layer_bitwise_equivariant(void **state)
{
    (void)state;
    eq_group *c4;
    eq_layer *layer;
    eq_rng rng;

    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    eq_layer *conv = equivarified(conv_relu(8, 3), c4, EQ_ACTION_BLOCKS);
    eq_rng_seed(&rng, 9);
    eq_layer_init_he(conv, &rng);
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(2, 8, 5, 5), 10);
    assert_equivariant(conv, c4, EQ_ACTION_BLOCKS, x);

    /* A dense layer on flat regular features, (N, n * K, 1, 1). */
    assert_int_equal(eq_dense_create(12, 7, &layer), EQ_OK);
    eq_layer *dense = equivarified(layer, c4, EQ_ACTION_BLOCKS);
    eq_layer_init_he(dense, &rng);
    eq_tensor *flat = eq_test_random_tensor(eq_shape_make(4, 12, 1, 1), 12);
    assert_equivariant(dense, c4, EQ_ACTION_BLOCKS, flat);

    eq_tensor_destroy(x);
    eq_tensor_destroy(flat);
    eq_layer_destroy(conv);
    eq_layer_destroy(dense);
    eq_group_destroy(c4);
}

static void projection_recovers_h(void **state)
{
    (void)state;
    eq_group *c4;
    eq_layer *projection;
    eq_rng rng;

    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    eq_layer *h = conv_relu(1, 4);
    eq_layer *f = equivarified(h, c4, EQ_ACTION_PIXELS);
    eq_rng_seed(&rng, 13);
    eq_layer_init_he(f, &rng);
    assert_int_equal(eq_projection_create(4, &projection), EQ_OK);

    eq_tensor *x = eq_test_random_tensor(eq_shape_make(3, 1, 6, 6), 14);
    eq_tensor *fx = eq_test_output_for(f, x->shape);
    eq_tensor *px = eq_test_output_for(projection, fx->shape);
    eq_tensor *hx = eq_test_output_for(h, x->shape);
    assert_true(eq_shape_equal(px->shape, hx->shape));

    assert_int_equal(eq_layer_forward(f, x, fx), EQ_OK);
    assert_int_equal(eq_layer_forward(projection, fx, px), EQ_OK);
    /* h is owned by f, but running it on its own is how p(F(x)) = h(x) is checked. */
    assert_int_equal(eq_layer_forward(h, x, hx), EQ_OK);
    assert_memory_equal(px->data, hx->data, eq_shape_numel(hx->shape) * sizeof(float));

    /* Backward puts dy into block 0 and zeros elsewhere. */
    eq_tensor *dfx = eq_test_output_for(f, x->shape);
    assert_int_equal(eq_layer_backward(projection, px, dfx), EQ_OK);
    size_t block = eq_shape_numel(hx->shape) / 3;
    assert_memory_equal(dfx->data, px->data, block * sizeof(float));
    for (size_t q = block; q < 4 * block; q++)
        assert_true(dfx->data[q] == 0.0f);

    eq_tensor *bad;
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 6, 2, 2), &bad), EQ_OK);
    eq_shape out;
    assert_int_equal(eq_layer_output_shape(projection, bad->shape, &out), EQ_ERR_SHAPE);
    assert_non_null(strstr(eq_last_error(), "multiple of 4"));

    eq_tensor_destroy(bad);
    eq_tensor_destroy(x);
    eq_tensor_destroy(fx);
    eq_tensor_destroy(px);
    eq_tensor_destroy(hx);
    eq_tensor_destroy(dfx);
    eq_layer_destroy(projection);
    eq_layer_destroy(f);
    eq_group_destroy(c4);
}

static void trivial_group_equals_h(void **state)
{
    (void)state;
    eq_group *trivial;
    eq_rng rng;

    assert_int_equal(eq_group_trivial(&trivial), EQ_OK);
    eq_layer *h = conv_relu(2, 3);
    eq_layer *f = equivarified(h, trivial, EQ_ACTION_PIXELS);
    eq_rng_seed(&rng, 15);
    eq_layer_init_he(f, &rng);

    eq_tensor *x = eq_test_random_tensor(eq_shape_make(2, 2, 5, 5), 16);
    eq_tensor *fx = eq_test_output_for(f, x->shape), *hx = eq_test_output_for(h, x->shape);
    assert_int_equal(eq_layer_forward(f, x, fx), EQ_OK);
    assert_int_equal(eq_layer_forward(h, x, hx), EQ_OK);
    assert_memory_equal(fx->data, hx->data, eq_shape_numel(hx->shape) * sizeof(float));

    eq_tensor_destroy(x);
    eq_tensor_destroy(fx);
    eq_tensor_destroy(hx);
    eq_layer_destroy(f);
    eq_group_destroy(trivial);
}

static void equivarified_stack_gradients(void **state)
{
    (void)state;
    eq_group *c4;
    eq_layer *net, *head, *layer;
    eq_gradcheck_result result;
    eq_rng rng;

    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    assert_int_equal(eq_sequential_create(&net), EQ_OK);
    append_new(net, equivarified(conv_relu(1, 2), c4, EQ_ACTION_PIXELS));
    assert_int_equal(eq_sequential_create(&head), EQ_OK);
    eq_test_append(head, eq_conv2d_create(8, 2, 3, 3, 1, 0, &layer), &layer);
    eq_test_append(head, eq_flatten_create(&layer), &layer);
    eq_test_append(head, eq_dense_create(2 * 3 * 3, 3, &layer), &layer);
    append_new(net, equivarified(head, c4, EQ_ACTION_BLOCKS));
    eq_rng_seed(&rng, 17);
    eq_layer_init_he(net, &rng);

    /* 200 ReLU inputs per bias: a step of 1e-4 keeps the chance that one of
     * them crosses the kink small; with this seed none does. */
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(2, 1, 5, 5), 18);
    assert_int_equal(eq_test_gradcheck(net, x, 19, 1e-4, &result), 0);
    if (result.max_error > 2e-2)
        fail_msg("gradient mismatch %g at %s", result.max_error, result.worst);
    assert_true(result.max_abs_gradient > 1e-3);
    assert_true(result.checked > 100);

    eq_tensor_destroy(x);
    eq_layer_destroy(net);
    eq_group_destroy(c4);
}

/* F's parameter gradient is the sum over branches g of h's gradient at
 * g . x with that branch's output gradient. */
static void shared_gradients_sum_branches(void **state)
{
    (void)state;
    eq_group *c4;
    eq_rng rng;
    eq_param param;

    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    eq_layer *h = conv_relu(1, 2);
    eq_layer *f = equivarified(h, c4, EQ_ACTION_PIXELS);
    eq_rng_seed(&rng, 20);
    eq_layer_init_he(f, &rng);

    eq_tensor *x = eq_test_random_tensor(eq_shape_make(1, 1, 5, 5), 21);
    eq_tensor *fx = eq_test_output_for(f, x->shape);
    eq_tensor *dy = eq_test_random_tensor(fx->shape, 22);
    eq_layer_zero_grad(f);
    assert_int_equal(eq_layer_forward(f, x, fx), EQ_OK);
    assert_int_equal(eq_layer_backward(f, dy, NULL), EQ_OK);
    assert_int_equal(eq_layer_param(f, 0, &param), EQ_OK);
    float *f_grad = malloc(param.count * sizeof(float));
    assert_non_null(f_grad);
    memcpy(f_grad, param.grad, param.count * sizeof(float));

    eq_tensor *gx, *hx = eq_test_output_for(h, x->shape);
    assert_int_equal(eq_tensor_create(x->shape, &gx), EQ_OK);
    size_t block = eq_shape_numel(hx->shape);
    eq_layer_zero_grad(h);
    for (size_t g = 0; g < 4; g++) {
        eq_tensor dy_g = { hx->shape, dy->data + g * block };
        assert_int_equal(eq_group_act_pixels(c4, g, x, gx), EQ_OK);
        assert_int_equal(eq_layer_forward(h, gx, hx), EQ_OK);
        assert_int_equal(eq_layer_backward(h, &dy_g, NULL), EQ_OK);
    }
    assert_int_equal(eq_layer_param(h, 0, &param), EQ_OK);
    for (size_t i = 0; i < param.count; i++)
        assert_float_equal(f_grad[i], param.grad[i], 1e-5f * (1.0f + (float)fabs(param.grad[i])));

    free(f_grad);
    eq_tensor_destroy(x);
    eq_tensor_destroy(fx);
    eq_tensor_destroy(dy);
    eq_tensor_destroy(gx);
    eq_tensor_destroy(hx);
    eq_layer_destroy(f);
    eq_group_destroy(c4);
}

static void equivarify_rejects_bad_input(void **state)
{
    (void)state;
    eq_group *c4;
    eq_layer *f, *layer;
    eq_shape out;

    assert_int_equal(eq_group_c4(&c4), EQ_OK);

    /* h is destroyed on failure, which AddressSanitizer's leak check verifies. */
    assert_int_equal(eq_relu_create(&layer), EQ_OK);
    assert_int_equal(eq_equivarify(layer, NULL, EQ_ACTION_PIXELS, &f), EQ_ERR_INVALID_ARGUMENT);
    assert_null(f);
    assert_int_equal(eq_relu_create(&layer), EQ_OK);
    assert_int_equal(eq_equivarify(layer, c4, (eq_action)7, &f), EQ_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(eq_last_error(), "action 7"));
    assert_int_equal(eq_equivarify(NULL, c4, EQ_ACTION_PIXELS, &f), EQ_ERR_INVALID_ARGUMENT);

    f = equivarified(conv_relu(6, 2), c4, EQ_ACTION_BLOCKS);
    assert_int_equal(eq_layer_output_shape(f, eq_shape_make(1, 6, 5, 5), &out), EQ_ERR_SHAPE);
    assert_non_null(strstr(eq_last_error(), "multiple of the group order 4"));
    assert_int_equal(eq_layer_output_shape(f, eq_shape_make(1, 8, 5, 5), &out), EQ_ERR_SHAPE);
    assert_non_null(strstr(eq_last_error(), "conv2d"));
    eq_layer_destroy(f);

    f = equivarified(conv_relu(1, 2), c4, EQ_ACTION_PIXELS);
    assert_int_equal(eq_layer_output_shape(f, eq_shape_make(1, 1, 5, 6), &out), EQ_ERR_SHAPE);
    assert_non_null(strstr(eq_last_error(), "not square"));
    assert_int_equal(eq_layer_output_shape(f, eq_shape_make(2, 1, 5, 5), &out), EQ_OK);
    assert_true(eq_shape_equal(out, eq_shape_make(2, 8, 5, 5)));

    char text[256];
    eq_layer_describe(f, text, sizeof text);
    assert_non_null(strstr(text, "equivarify(c4, pixels, sequential(conv2d(1->2"));
    eq_layer_destroy(f);
    eq_group_destroy(c4);
}

static void d4_reference_network_bitwise_equivariant(void **state)
{
    (void)state;
    eq_group *d4;

    assert_int_equal(eq_group_d4(&d4), EQ_OK);
    eq_layer *net = reference_network(d4, 23);
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(2, 1, 9, 9), 24);
    assert_equivariant(net, d4, EQ_ACTION_PIXELS, x);

    eq_tensor_destroy(x);
    eq_layer_destroy(net);
    eq_group_destroy(d4);
}

/* aligned(pixels) -> aligned(blocks+pixels) -> equivarify(blocks+pixels)
 * head, checked after every layer. */
static void aligned_stack_bitwise_equivariant(void **state)
{
    (void)state;
    const char *groups[] = { "c4", "d4" };

    for (size_t i = 0; i < 2; i++) {
        eq_group *group;
        eq_layer *first, *second, *head, *layer, *net;
        eq_rng rng;

        assert_int_equal(eq_group_by_name(groups[i], &group), EQ_OK);
        size_t n = eq_group_order(group);
        assert_int_equal(eq_equivarify_aligned(conv_relu(1, 3), group, EQ_ACTION_PIXELS, &first), EQ_OK);
        assert_int_equal(eq_equivarify_aligned(conv_relu(3 * n, 2), group, EQ_ACTION_BLOCKS_PIXELS, &second), EQ_OK);
        assert_int_equal(eq_sequential_create(&head), EQ_OK);
        eq_test_append(head, eq_maxpool_create(2, 2, &layer), &layer);
        eq_test_append(head, eq_flatten_create(&layer), &layer);
        eq_test_append(head, eq_dense_create(2 * n * 3 * 3, 4, &layer), &layer);
        head = equivarified(head, group, EQ_ACTION_BLOCKS_PIXELS);

        eq_rng_seed(&rng, 25 + i);
        eq_layer_init_he(first, &rng);
        eq_layer_init_he(second, &rng);
        eq_layer_init_he(head, &rng);
        eq_tensor *x = eq_test_random_tensor(eq_shape_make(2, 1, 7, 7), 27 + i);
        assert_equivariant_with(first, group, EQ_ACTION_PIXELS, EQ_ACTION_BLOCKS_PIXELS, x);

        assert_int_equal(eq_sequential_create(&net), EQ_OK);
        assert_int_equal(eq_equivariant_append(net, first), EQ_OK);
        assert_int_equal(eq_equivariant_append(net, second), EQ_OK);
        assert_equivariant_with(net, group, EQ_ACTION_PIXELS, EQ_ACTION_BLOCKS_PIXELS, x);
        assert_int_equal(eq_equivariant_append(net, head), EQ_OK);
        assert_equivariant_with(net, group, EQ_ACTION_PIXELS, EQ_ACTION_BLOCKS, x);

        eq_tensor_destroy(x);
        eq_layer_destroy(net);
        eq_group_destroy(group);
    }
}

/* An aligned lifting conv is one convolution with the n transformed copies
 * of the filters: g^-1 conv(W, g x) = conv(g^-1 W, x) for stride 1 and
 * "same" padding. The sums run in another order, so compare with a
 * tolerance. */
static void aligned_lift_equals_group_conv(void **state)
{
    (void)state;
    const char *groups[] = { "c4", "d4" };

    for (size_t i = 0; i < 2; i++) {
        eq_group *group;
        eq_layer *conv, *lift, *reference;
        eq_param weight, bias, ref_weight, ref_bias;
        eq_rng rng;

        assert_int_equal(eq_group_by_name(groups[i], &group), EQ_OK);
        size_t n = eq_group_order(group);
        assert_int_equal(eq_conv2d_create(2, 3, 3, 3, 1, 1, &conv), EQ_OK);
        assert_int_equal(eq_equivarify_aligned(conv, group, EQ_ACTION_PIXELS, &lift), EQ_OK);
        eq_rng_seed(&rng, 31);
        eq_layer_init_he(lift, &rng);
        assert_int_equal(eq_layer_param(lift, 0, &weight), EQ_OK);
        assert_int_equal(eq_layer_param(lift, 1, &bias), EQ_OK);
        eq_test_fill_uniform(bias.value, bias.count, &rng, -0.5f, 0.5f);

        eq_tensor *x = eq_test_random_tensor(eq_shape_make(2, 2, 6, 6), 32);
        eq_tensor *y = eq_test_output_for(lift, x->shape);
        assert_int_equal(eq_layer_forward(lift, x, y), EQ_OK);

        assert_int_equal(eq_conv2d_create(2, 3, 3, 3, 1, 1, &reference), EQ_OK);
        assert_int_equal(eq_layer_param(reference, 0, &ref_weight), EQ_OK);
        assert_int_equal(eq_layer_param(reference, 1, &ref_bias), EQ_OK);
        memcpy(ref_bias.value, bias.value, bias.count * sizeof(float));
        eq_tensor *ref_y = eq_test_output_for(reference, x->shape);
        eq_tensor filters = { eq_shape_make(3 * 2, 1, 3, 3), weight.value };
        eq_tensor turned = { filters.shape, ref_weight.value };
        size_t block = eq_shape_numel(ref_y->shape) / 2;

        for (size_t g = 0; g < n; g++) {
            assert_int_equal(eq_group_act_pixels(group, eq_group_inv(group, g), &filters, &turned), EQ_OK);
            assert_int_equal(eq_layer_forward(reference, x, ref_y), EQ_OK);
            for (size_t s = 0; s < 2; s++) {
                for (size_t q = 0; q < block; q++) {
                    float expected = ref_y->data[s * block + q];
                    float actual = y->data[(s * n + g) * block + q];
                    if (fabsf(actual - expected) > 1e-5f + 1e-5f * fabsf(expected))
                        fail_msg("%s element %zu sample %zu [%zu]: %g, expected %g", groups[i], g, s, q,
                                 (double)actual, (double)expected);
                }
            }
        }

        eq_tensor_destroy(x);
        eq_tensor_destroy(y);
        eq_tensor_destroy(ref_y);
        eq_layer_destroy(lift);
        eq_layer_destroy(reference);
        eq_group_destroy(group);
    }
}

static void check_equivariance_measures_error(void **state)
{
    (void)state;
    eq_group *c4;
    eq_layer *plain;
    eq_rng rng;
    float error = -1.0f;
    size_t worst = 99;

    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    eq_layer *f = reference_network(c4, 33);
    eq_tensor *x = eq_test_random_tensor(eq_shape_make(2, 1, 9, 9), 34);
    assert_int_equal(eq_check_equivariance(f, c4, EQ_ACTION_PIXELS, EQ_ACTION_BLOCKS, x, &error, &worst), EQ_OK);
    assert_true(error == 0.0f);
    assert_int_equal(worst, 0);

    /* A plain conv with an asymmetric filter is not rotation-equivariant. */
    assert_int_equal(eq_conv2d_create(1, 2, 3, 3, 1, 1, &plain), EQ_OK);
    eq_rng_seed(&rng, 35);
    eq_layer_init_he(plain, &rng);
    assert_int_equal(eq_check_equivariance(plain, c4, EQ_ACTION_PIXELS, EQ_ACTION_PIXELS, x, &error, &worst), EQ_OK);
    assert_true(error > 1e-3f);
    assert_true(worst >= 1 && worst <= 3);

    assert_int_equal(eq_check_equivariance(plain, c4, EQ_ACTION_BLOCKS, EQ_ACTION_PIXELS, x, &error, &worst),
                     EQ_ERR_SHAPE);
    assert_int_equal(eq_check_equivariance(NULL, c4, EQ_ACTION_PIXELS, EQ_ACTION_PIXELS, x, &error, &worst),
                     EQ_ERR_INVALID_ARGUMENT);

    eq_tensor_destroy(x);
    eq_layer_destroy(f);
    eq_layer_destroy(plain);
    eq_group_destroy(c4);
}

static void invariant_pool_is_invariant(void **state)
{
    (void)state;
    eq_group *d4;
    eq_layer *pool;
    eq_gradcheck_result result;

    assert_int_equal(eq_group_d4(&d4), EQ_OK);
    eq_pool_kind kinds[2] = { EQ_POOL_MAX, EQ_POOL_MEAN };
    for (size_t i = 0; i < 2; i++) {
        eq_layer *net = reference_network(d4, 36);
        assert_int_equal(eq_invariant_pool_create(d4, kinds[i], &pool), EQ_OK);
        assert_int_equal(eq_equivariant_append(net, pool), EQ_OK);
        eq_tensor *x = eq_test_random_tensor(eq_shape_make(2, 1, 9, 9), 37);
        assert_equivariant_with(net, d4, EQ_ACTION_PIXELS, EQ_ACTION_TRIVIAL, x);
        eq_tensor_destroy(x);
        eq_layer_destroy(net);

        /* Gradients of the pool alone, on distinct values away from max ties. */
        assert_int_equal(eq_invariant_pool_create(d4, kinds[i], &pool), EQ_OK);
        eq_tensor *blocks = eq_test_random_tensor(eq_shape_make(2, 16, 1, 3), 38);
        assert_int_equal(eq_test_gradcheck(pool, blocks, 39, 1e-3, &result), 0);
        if (result.max_error > 1e-2)
            fail_msg("pool %zu gradient mismatch %g at %s", i, result.max_error, result.worst);
        assert_true(result.max_abs_gradient > 0.1);
        eq_tensor_destroy(blocks);
        eq_layer_destroy(pool);
    }
    assert_int_equal(eq_invariant_pool_create(d4, (eq_pool_kind)5, &pool), EQ_ERR_INVALID_ARGUMENT);
    eq_group_destroy(d4);
}

static void equivariant_append_checks_actions(void **state)
{
    (void)state;
    eq_group *c4, *d4;
    eq_layer *net, *layer;

    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    assert_int_equal(eq_group_d4(&d4), EQ_OK);
    assert_int_equal(eq_sequential_create(&net), EQ_OK);
    assert_int_equal(eq_equivariant_append(net, equivarified(conv_relu(1, 2), c4, EQ_ACTION_PIXELS)), EQ_OK);
    assert_int_equal(eq_relu_create(&layer), EQ_OK);
    assert_int_equal(eq_equivariant_append(net, layer), EQ_OK);

    assert_int_equal(eq_equivariant_append(net, equivarified(conv_relu(8, 2), c4, EQ_ACTION_PIXELS)), EQ_ERR_GROUP);
    assert_non_null(strstr(eq_last_error(), "expects input action pixels, but the previous equivariant layer outputs blocks"));
    assert_int_equal(eq_equivariant_append(net, equivarified(conv_relu(8, 2), c4, EQ_ACTION_BLOCKS_PIXELS)),
                     EQ_ERR_GROUP);
    assert_int_equal(eq_equivariant_append(net, equivarified(conv_relu(8, 2), d4, EQ_ACTION_BLOCKS)), EQ_ERR_GROUP);
    assert_non_null(strstr(eq_last_error(), "uses group d4, but the previous equivariant layer uses c4"));
    assert_int_equal(eq_dense_create(8, 2, &layer), EQ_OK);
    assert_int_equal(eq_equivariant_append(net, layer), EQ_ERR_GROUP);
    assert_non_null(strstr(eq_last_error(), "does not commute with the blocks action"));

    /* Max-pool acts on each channel alone, so it commutes with the blocks action. */
    assert_int_equal(eq_maxpool_create(2, 2, &layer), EQ_OK);
    assert_int_equal(eq_equivariant_append(net, layer), EQ_OK);
    assert_int_equal(eq_equivariant_append(net, equivarified(conv_relu(8, 2), c4, EQ_ACTION_BLOCKS)), EQ_OK);
    assert_int_equal(eq_sequential_length(net), 4);

    const eq_group *group;
    eq_action in, out;
    assert_int_equal(eq_equivariant_actions(eq_sequential_get(net, 3), &group, &in, &out), EQ_OK);
    assert_int_equal(in, EQ_ACTION_BLOCKS);
    assert_int_equal(out, EQ_ACTION_BLOCKS);
    assert_string_equal(eq_group_name(group), "c4");
    assert_int_equal(eq_equivariant_actions(eq_sequential_get(net, 1), &group, &in, &out), EQ_ERR_INVALID_ARGUMENT);

    /* After an aligned layer the group also rotates pixels, which max-pool
     * and flatten do not commute with bit for bit. */
    assert_int_equal(eq_equivarify_aligned(conv_relu(8, 2), c4, EQ_ACTION_BLOCKS, &layer), EQ_OK);
    assert_int_equal(eq_equivariant_append(net, layer), EQ_OK);
    assert_int_equal(eq_maxpool_create(2, 2, &layer), EQ_OK);
    assert_int_equal(eq_equivariant_append(net, layer), EQ_ERR_GROUP);
    assert_non_null(strstr(eq_last_error(), "commutes with the blocks action only, but the previous equivariant "
                                            "layer outputs blocks+pixels"));
    assert_int_equal(eq_flatten_create(&layer), EQ_OK);
    assert_int_equal(eq_equivariant_append(net, layer), EQ_ERR_GROUP);

    /* Flatten keeps each block a contiguous run of features. */
    eq_layer *flat_net;
    assert_int_equal(eq_sequential_create(&flat_net), EQ_OK);
    assert_int_equal(eq_equivariant_append(flat_net, equivarified(conv_relu(1, 2), c4, EQ_ACTION_PIXELS)), EQ_OK);
    assert_int_equal(eq_flatten_create(&layer), EQ_OK);
    assert_int_equal(eq_equivariant_append(flat_net, layer), EQ_OK);
    eq_layer_destroy(flat_net);

    /* After the projection any layer may follow. */
    assert_int_equal(eq_projection_create(4, &layer), EQ_OK);
    assert_int_equal(eq_equivariant_append(net, layer), EQ_OK);
    assert_int_equal(eq_maxpool_create(2, 2, &layer), EQ_OK);
    assert_int_equal(eq_equivariant_append(net, layer), EQ_OK);

    assert_int_equal(eq_relu_create(&layer), EQ_OK);
    assert_int_equal(eq_equivariant_append(layer, NULL), EQ_ERR_INVALID_ARGUMENT);
    eq_layer_destroy(layer);
    eq_layer_destroy(net);
    eq_group_destroy(c4);
    eq_group_destroy(d4);
}

/* Output, input gradient and weight gradient of one training pass of f
 * with `threads` threads. */
typedef struct thread_run {
    float *y, *dx, *dweight;
    size_t y_bytes, dx_bytes, dweight_bytes;
} thread_run;

static thread_run run_with_threads(eq_layer *f, const eq_tensor *x, int threads)
{
    thread_run run;
    eq_param weight;

    assert_int_equal(eq_set_num_threads(threads), EQ_OK);
    eq_tensor *y = eq_test_output_for(f, x->shape);
    eq_tensor *dy = eq_test_random_tensor(y->shape, 820);
    eq_tensor *dx = NULL;
    assert_int_equal(eq_tensor_create(x->shape, &dx), EQ_OK);

    eq_layer_zero_grad(f);
    assert_int_equal(eq_layer_forward(f, x, y), EQ_OK);
    assert_int_equal(eq_layer_backward(f, dy, dx), EQ_OK);
    assert_int_equal(eq_layer_param(f, 0, &weight), EQ_OK);

    run.y_bytes = eq_shape_numel(y->shape) * sizeof(float);
    run.dx_bytes = eq_shape_numel(x->shape) * sizeof(float);
    run.dweight_bytes = weight.count * sizeof(float);
    run.y = malloc(run.y_bytes);
    run.dx = malloc(run.dx_bytes);
    run.dweight = malloc(run.dweight_bytes);
    assert_true(run.y && run.dx && run.dweight);
    memcpy(run.y, y->data, run.y_bytes);
    memcpy(run.dx, dx->data, run.dx_bytes);
    memcpy(run.dweight, weight.grad, run.dweight_bytes);

    eq_tensor_destroy(dx);
    eq_tensor_destroy(dy);
    eq_tensor_destroy(y);
    return run;
}

static void free_thread_run(thread_run *run)
{
    free(run->y);
    free(run->dx);
    free(run->dweight);
}

/* The generic path stacks the transformed copies of the samples and adds
 * their gradients back in parallel over samples. Inputs large enough to
 * split must give the bits of one thread with two and three. */
static void generic_path_independent_of_threads(void **state)
{
    (void)state;
    int saved = eq_get_num_threads();
    eq_group *c4;

    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    eq_layer *lift = equivarified(conv_relu(1, 2), c4, EQ_ACTION_PIXELS);
    eq_layer *regular = equivarified(conv_relu(4 * 2, 2), c4, EQ_ACTION_BLOCKS);
    assert_int_equal(eq_equivarify_set_fused(lift, 0), EQ_OK);
    assert_int_equal(eq_equivarify_set_fused(regular, 0), EQ_OK);
    eq_layer *layers[2] = { lift, regular };
    eq_tensor *inputs[2] = { eq_test_random_tensor(eq_shape_make(16, 1, 28, 28), 821),
                             eq_test_random_tensor(eq_shape_make(6, 4 * 2, 28, 28), 822) };
    eq_rng rng;

    eq_rng_seed(&rng, 823);
    for (size_t i = 0; i < 2; i++) {
        eq_layer_init_he(layers[i], &rng);
        thread_run one = run_with_threads(layers[i], inputs[i], 1);
        for (int threads = 2; threads <= 3; threads++) {
            thread_run many = run_with_threads(layers[i], inputs[i], threads);
            assert_int_equal(eq_equivarify_used_fused(layers[i]), 0);
            if (memcmp(one.y, many.y, one.y_bytes) != 0)
                fail_msg("layer %zu: output with %d threads differs from 1 thread", i, threads);
            if (memcmp(one.dx, many.dx, one.dx_bytes) != 0)
                fail_msg("layer %zu: input gradient with %d threads differs from 1 thread", i, threads);
            if (memcmp(one.dweight, many.dweight, one.dweight_bytes) != 0)
                fail_msg("layer %zu: weight gradient with %d threads differs from 1 thread", i, threads);
            free_thread_run(&many);
        }
        free_thread_run(&one);
        eq_tensor_destroy(inputs[i]);
        eq_layer_destroy(layers[i]);
    }
    eq_group_destroy(c4);
    assert_int_equal(eq_set_num_threads(saved), EQ_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(c4_rotation_hand_computed_4x4),
        cmocka_unit_test(builtin_groups_satisfy_axioms),
        cmocka_unit_test(actions_reject_bad_arguments),
        cmocka_unit_test(reference_network_bitwise_equivariant),
        cmocka_unit_test(regular_layer_bitwise_equivariant),
        cmocka_unit_test(projection_recovers_h),
        cmocka_unit_test(trivial_group_equals_h),
        cmocka_unit_test(equivarified_stack_gradients),
        cmocka_unit_test(shared_gradients_sum_branches),
        cmocka_unit_test(equivarify_rejects_bad_input),
        cmocka_unit_test(d4_reference_network_bitwise_equivariant),
        cmocka_unit_test(aligned_stack_bitwise_equivariant),
        cmocka_unit_test(aligned_lift_equals_group_conv),
        cmocka_unit_test(check_equivariance_measures_error),
        cmocka_unit_test(invariant_pool_is_invariant),
        cmocka_unit_test(equivariant_append_checks_actions),
        cmocka_unit_test(generic_path_independent_of_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
