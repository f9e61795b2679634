/* Tests for softmax cross-entropy and argmax. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#include <cmocka.h>

#include "equivar.h"
#include "testutil.h"

static eq_tensor *new_logits(size_t n, size_t k, const float *values)
{
    eq_tensor *t = NULL;

    assert_int_equal(eq_tensor_create(eq_shape_make(n, k, 1, 1), &t), EQ_OK);
    if (values)
        memcpy(t->data, values, n * k * sizeof(float));
    return t;
}

static int message_contains(const char *needle)
{
    if (strstr(eq_last_error(), needle))
        return 1;
    print_error("message \"%s\" does not contain \"%s\"\n", eq_last_error(), needle);
    return 0;
}

static void assert_near(double got, double expected, double tolerance)
{
    if (!(fabs(got - expected) <= tolerance))
        fail_msg("got %.9g, expected %.9g within %.3g", got, expected, tolerance);
}

static void loss_matches_hand_computed(void **state)
{
    (void)state;
    const float values[6] = { 1.0f, 2.0f, 3.0f, 1.0f, 1.0f, 1.0f };
    const int32_t labels[2] = { 2, 0 };
    eq_tensor *logits = new_logits(2, 3, values);
    eq_tensor *dlogits = new_logits(2, 3, NULL);
    float loss = 0.0f;

    assert_int_equal(eq_softmax_cross_entropy(logits, labels, &loss, dlogits), EQ_OK);

    /* Sample 0: log(1 + e^-1 + e^-2) = 0.4076059644. Sample 1: log(3) =
     * 1.0986122887. The mean is 0.7531091266. */
    assert_near(loss, 0.7531091266, 1e-6);

    /* (softmax - one_hot) / N with softmax(1, 2, 3) = (0.0900306, 0.2447285,
     * 0.6652410) and softmax(1, 1, 1) = 1/3 each. */
    const double expected[6] = { 0.0450152866, 0.1223642355, -0.1673795221,
                                 -0.3333333333, 0.1666666667, 0.1666666667 };
    for (size_t i = 0; i < 6; i++)
        assert_near(dlogits->data[i], expected[i], 1e-7);

    /* dlogits may be NULL when only the loss is needed. */
    float loss_only = 0.0f;
    assert_int_equal(eq_softmax_cross_entropy(logits, labels, &loss_only, NULL), EQ_OK);
    assert_true(loss_only == loss);

    eq_tensor_destroy(dlogits);
    eq_tensor_destroy(logits);
}

static void loss_stable_for_large_logits(void **state)
{
    (void)state;
    /* exp(1000) overflows double. With the max subtracted, the loss is
     * log(1 + e^-1) = 0.3132616875 for the larger logit's class. */
    const float values[4] = { 1000.0f, 999.0f, -1000.0f, -999.0f };
    const int32_t labels[2] = { 0, 1 };
    eq_tensor *logits = new_logits(2, 2, values);
    eq_tensor *dlogits = new_logits(2, 2, NULL);
    float loss = 0.0f;

    assert_int_equal(eq_softmax_cross_entropy(logits, labels, &loss, dlogits), EQ_OK);
    assert_near(loss, 0.3132616875, 1e-6);
    /* softmax of the larger logit is 1 / (1 + e^-1) = 0.7310585786. */
    assert_near(dlogits->data[0], (0.7310585786 - 1.0) / 2, 1e-7);
    assert_near(dlogits->data[3], (0.7310585786 - 1.0) / 2, 1e-7);

    eq_tensor_destroy(dlogits);
    eq_tensor_destroy(logits);
}

/* Compares dlogits with central differences of the loss. The loss comes
 * back as a float (about 1e-7 relative), so a step of 1e-3 gives derivative
 * errors near 1e-4 at most. The truncation error is O(step^2). */
static void loss_gradient_matches_finite_differences(void **state)
{
    (void)state;
    const size_t n = 4, k = 6;
    const int32_t labels[4] = { 0, 5, 2, 2 };
    const float step = 1e-3f;
    eq_tensor *logits = new_logits(n, k, NULL);
    eq_tensor *dlogits = new_logits(n, k, NULL);
    float loss = 0.0f;
    double max_abs_gradient = 0.0;
    eq_rng rng;

    eq_rng_seed(&rng, 3);
    eq_test_fill_uniform(logits->data, n * k, &rng, -3.0f, 3.0f);
    assert_int_equal(eq_softmax_cross_entropy(logits, labels, &loss, dlogits), EQ_OK);

    for (size_t i = 0; i < n * k; i++) {
        float saved = logits->data[i];
        float plus, minus;
        logits->data[i] = saved + step;
        double up = (double)logits->data[i] - saved;
        assert_int_equal(eq_softmax_cross_entropy(logits, labels, &plus, NULL), EQ_OK);
        logits->data[i] = saved - step;
        double down = saved - (double)logits->data[i];
        assert_int_equal(eq_softmax_cross_entropy(logits, labels, &minus, NULL), EQ_OK);
        logits->data[i] = saved;

        double numeric = ((double)plus - minus) / (up + down);
        assert_near(dlogits->data[i], numeric, 5e-4);
        max_abs_gradient = fmax(max_abs_gradient, fabs(numeric));
    }
    assert_true(max_abs_gradient > 0.01);

    eq_tensor_destroy(dlogits);
    eq_tensor_destroy(logits);
}

static void loss_rejects_label_out_of_range(void **state)
{
    (void)state;
    const float values[6] = { 0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f };
    eq_tensor *logits = new_logits(2, 3, values);
    eq_tensor *dlogits = new_logits(2, 3, NULL);
    float loss = 42.0f;

    const int32_t too_large[2] = { 0, 3 };
    assert_int_equal(eq_softmax_cross_entropy(logits, too_large, &loss, dlogits), EQ_ERR_INVALID_ARGUMENT);
    assert_true(message_contains("sample 1 has label 3"));
    assert_true(message_contains("[0, 3)"));

    const int32_t negative[2] = { -1, 0 };
    assert_int_equal(eq_softmax_cross_entropy(logits, negative, &loss, dlogits), EQ_ERR_INVALID_ARGUMENT);
    assert_true(message_contains("sample 0 has label -1"));

    /* Nothing is written on failure. */
    assert_true(loss == 42.0f);
    for (size_t i = 0; i < 6; i++)
        assert_true(dlogits->data[i] == 0.0f);

    eq_tensor_destroy(dlogits);
    eq_tensor_destroy(logits);
}

static void loss_rejects_non_finite_logits(void **state)
{
    (void)state;
    const int32_t labels[2] = { 0, 1 };
    eq_tensor *logits = new_logits(2, 3, NULL);
    float loss = 42.0f;

    logits->data[5] = NAN;
    assert_int_equal(eq_softmax_cross_entropy(logits, labels, &loss, NULL), EQ_ERR_NUMERIC);
    assert_true(message_contains("sample 1"));
    assert_true(message_contains("class 2"));
    assert_true(message_contains("nan"));

    logits->data[5] = 0.0f;
    logits->data[1] = -INFINITY;
    assert_int_equal(eq_softmax_cross_entropy(logits, labels, &loss, NULL), EQ_ERR_NUMERIC);
    assert_true(message_contains("sample 0"));
    assert_true(message_contains("class 1"));
    assert_true(loss == 42.0f);

    eq_tensor_destroy(logits);
}

static void loss_rejects_bad_shapes_and_nulls(void **state)
{
    (void)state;
    const int32_t labels[2] = { 0, 1 };
    eq_tensor *logits = new_logits(2, 3, NULL);
    eq_tensor *wrong = new_logits(3, 2, NULL);
    eq_tensor *image = NULL;
    float loss;

    assert_int_equal(eq_softmax_cross_entropy(logits, labels, &loss, wrong), EQ_ERR_SHAPE);
    assert_true(message_contains("dlogits have shape (3, 2, 1, 1), expected the logits shape (2, 3, 1, 1)"));

    assert_int_equal(eq_tensor_create(eq_shape_make(2, 3, 2, 1), &image), EQ_OK);
    assert_int_equal(eq_softmax_cross_entropy(image, labels, &loss, NULL), EQ_ERR_SHAPE);
    assert_true(message_contains("expected (N, K, 1, 1)"));

    assert_int_equal(eq_softmax_cross_entropy(NULL, labels, &loss, NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_softmax_cross_entropy(logits, NULL, &loss, NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_softmax_cross_entropy(logits, labels, NULL, NULL), EQ_ERR_INVALID_ARGUMENT);

    eq_tensor_destroy(image);
    eq_tensor_destroy(wrong);
    eq_tensor_destroy(logits);
}

static void argmax_picks_first_of_ties(void **state)
{
    (void)state;
    const float values[12] = {
        1.0f, 5.0f, 5.0f, 2.0f, /* tie between classes 1 and 2 */
        7.0f, 7.0f, 7.0f, 7.0f, /* all equal */
        0.0f, -1.0f, 3.0f, 2.0f,
    };
    eq_tensor *logits = new_logits(3, 4, values);
    int32_t predictions[3] = { -1, -1, -1 };

    assert_int_equal(eq_argmax(logits, predictions), EQ_OK);
    assert_int_equal(predictions[0], 1);
    assert_int_equal(predictions[1], 0);
    assert_int_equal(predictions[2], 2);
    eq_tensor_destroy(logits);
}

static void argmax_skips_nan(void **state)
{
    (void)state;
    const float values[6] = { NAN, 1.0f, 2.0f, 3.0f, NAN, 1.0f };
    eq_tensor *logits = new_logits(2, 3, values);
    int32_t predictions[2];

    assert_int_equal(eq_argmax(logits, predictions), EQ_OK);
    assert_int_equal(predictions[0], 2);
    assert_int_equal(predictions[1], 0);
    eq_tensor_destroy(logits);
}

static void argmax_rejects_bad_arguments(void **state)
{
    (void)state;
    eq_tensor *logits = new_logits(2, 3, NULL);
    eq_tensor *image = NULL;
    int32_t predictions[2];

    assert_int_equal(eq_argmax(NULL, predictions), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_argmax(logits, NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_tensor_create(eq_shape_make(2, 3, 1, 2), &image), EQ_OK);
    assert_int_equal(eq_argmax(image, predictions), EQ_ERR_SHAPE);
    assert_true(message_contains("eq_argmax"));

    eq_tensor_destroy(image);
    eq_tensor_destroy(logits);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loss_matches_hand_computed),
        cmocka_unit_test(loss_stable_for_large_logits),
        cmocka_unit_test(loss_gradient_matches_finite_differences),
        cmocka_unit_test(loss_rejects_label_out_of_range),
        cmocka_unit_test(loss_rejects_non_finite_logits),
        cmocka_unit_test(loss_rejects_bad_shapes_and_nulls),
        cmocka_unit_test(argmax_picks_first_of_ties),
        cmocka_unit_test(argmax_skips_nan),
        cmocka_unit_test(argmax_rejects_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
