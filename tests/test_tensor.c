/* Tests for tensors, shapes, the RNG and error reporting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "equivar.h"

static void tensor_create_zeroed_aligned(void **state)
{
    (void)state;
    eq_tensor *t = NULL;

    assert_int_equal(eq_tensor_create(eq_shape_make(2, 3, 5, 7), &t), EQ_OK);
    assert_non_null(t);
    assert_int_equal(((uintptr_t)t->data) % 64, 0);
    for (size_t i = 0; i < 2 * 3 * 5 * 7; i++)
        assert_true(t->data[i] == 0.0f);
    eq_tensor_destroy(t);
    eq_tensor_destroy(NULL);
}

static void tensor_create_rejects_bad_shapes(void **state)
{
    (void)state;
    eq_tensor *t = (eq_tensor *)1;

    assert_int_equal(eq_tensor_create(eq_shape_make(2, 0, 5, 7), &t), EQ_ERR_INVALID_ARGUMENT);
    assert_null(t);
    assert_non_null(strstr(eq_last_error(), "(2, 0, 5, 7)"));

    assert_int_equal(eq_tensor_create(eq_shape_make(SIZE_MAX / 2, 4, 1, 1), &t), EQ_ERR_OUT_OF_MEMORY);
    assert_non_null(strstr(eq_last_error(), "overflow"));
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 1, 1, 1), NULL), EQ_ERR_INVALID_ARGUMENT);
}

static void shape_numel_detects_overflow(void **state)
{
    (void)state;
    assert_int_equal(eq_shape_numel(eq_shape_make(2, 3, 4, 5)), 120);
    assert_int_equal(eq_shape_numel(eq_shape_make(SIZE_MAX, 2, 1, 1)), 0);
    assert_true(eq_shape_equal(eq_shape_make(1, 2, 3, 4), eq_shape_make(1, 2, 3, 4)));
    assert_false(eq_shape_equal(eq_shape_make(1, 2, 3, 4), eq_shape_make(1, 2, 4, 3)));
}

static void rng_same_seed_same_stream(void **state)
{
    (void)state;
    eq_rng a, b, c;

    eq_rng_seed(&a, 42);
    eq_rng_seed(&b, 42);
    eq_rng_seed(&c, 43);
    int differs = 0;
    for (int i = 0; i < 100; i++) {
        uint64_t va = eq_rng_u64(&a);
        assert_true(va == eq_rng_u64(&b));
        differs |= va != eq_rng_u64(&c);
    }
    assert_true(differs);
}

static void rng_distributions_have_expected_moments(void **state)
{
    (void)state;
    eq_rng rng;
    const int count = 200000;
    double sum_u = 0, sum_n = 0, sum_n2 = 0;
    size_t histogram[7] = { 0 };

    eq_rng_seed(&rng, 7);
    for (int i = 0; i < count; i++) {
        float u = eq_rng_uniform(&rng);
        assert_true(u >= 0.0f && u < 1.0f);
        sum_u += u;
        double z = eq_rng_normal(&rng);
        sum_n += z;
        sum_n2 += z * z;
        histogram[eq_rng_below(&rng, 7)]++;
    }
    assert_true(sum_u / count > 0.49 && sum_u / count < 0.51);
    assert_true(sum_n / count > -0.01 && sum_n / count < 0.01);
    assert_true(sum_n2 / count > 0.98 && sum_n2 / count < 1.02);
    for (int b = 0; b < 7; b++) {
        assert_true(histogram[b] > (size_t)(count / 7 - 1500));
        assert_true(histogram[b] < (size_t)(count / 7 + 1500));
    }
}

static void status_strings_are_named(void **state)
{
    (void)state;
    assert_string_equal(eq_status_string(EQ_OK), "EQ_OK");
    assert_string_equal(eq_status_string(EQ_ERR_FORMAT), "EQ_ERR_FORMAT");
    assert_string_equal(eq_status_string((eq_status)999), "EQ_ERR_UNKNOWN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tensor_create_zeroed_aligned),
        cmocka_unit_test(tensor_create_rejects_bad_shapes),
        cmocka_unit_test(shape_numel_detects_overflow),
        cmocka_unit_test(rng_same_seed_same_stream),
        cmocka_unit_test(rng_distributions_have_expected_moments),
        cmocka_unit_test(status_strings_are_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
