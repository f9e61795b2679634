/* Tests for eq_dot_nt: every kernel against a double-precision reference
 * and bit for bit against the element recipe, and the thread split. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/dot.h"
#include "core/gemm_kernel.h"
#include "equivar.h"
#include "testutil.h"

#define MAX_TERMS 4

/* Unit roundoff of float. */
#define FLOAT_U 5.9604644775390625e-8

typedef struct dot_case {
    size_t m, n, k, term_count;
    size_t pad_a, pad_b, pad_c; /* extra elements per row */
    int accumulate;
} dot_case;

/* Operands of one case: term_count pairs of A (m x k) and B (n x k), and C. */
typedef struct operands {
    dot_case spec;
    eq_dot_term terms[MAX_TERMS];
    float *a[MAX_TERMS], *b[MAX_TERMS];
    float *c0; /* C before the call */
    size_t ldc;
} operands;

static operands make_operands(const dot_case *spec, uint64_t seed)
{
    operands ops = { .spec = *spec, .ldc = spec->n + spec->pad_c };
    eq_rng rng;

    eq_rng_seed(&rng, seed);
    for (size_t t = 0; t < spec->term_count; t++) {
        size_t lda = spec->k + spec->pad_a, ldb = spec->k + spec->pad_b;
        ops.a[t] = malloc((spec->m * lda + 1) * sizeof(float));
        ops.b[t] = malloc((spec->n * ldb + 1) * sizeof(float));
        assert_non_null(ops.a[t]);
        assert_non_null(ops.b[t]);
        eq_test_fill_uniform(ops.a[t], spec->m * lda, &rng, -1.0f, 1.0f);
        eq_test_fill_uniform(ops.b[t], spec->n * ldb, &rng, -1.0f, 1.0f);
        ops.terms[t] = (eq_dot_term){ ops.a[t], lda, ops.b[t], ldb };
    }
    ops.c0 = malloc((spec->m * ops.ldc + 1) * sizeof(float));
    assert_non_null(ops.c0);
    eq_test_fill_uniform(ops.c0, spec->m * ops.ldc, &rng, -1.0f, 1.0f);
    if (!spec->accumulate) {
        /* Without accumulate the old C must be ignored, NaN included. */
        for (size_t i = 0; i < spec->m * ops.ldc; i++)
            ops.c0[i] = NAN;
    }
    return ops;
}

static void free_operands(operands *ops)
{
    for (size_t t = 0; t < ops->spec.term_count; t++) {
        free(ops->a[t]);
        free(ops->b[t]);
    }
    free(ops->c0);
}

static float *copy_c(const operands *ops)
{
    size_t count = ops->spec.m * ops->ldc;
    float *c = malloc((count + 1) * sizeof(float));

    assert_non_null(c);
    memcpy(c, ops->c0, count * sizeof(float));
    return c;
}

static void run_dot(const operands *ops, float *c)
{
    const dot_case *s = &ops->spec;

    eq_dot_nt(s->m, s->n, s->k, ops->terms, s->term_count, s->accumulate, c, ops->ldc);
}

/* Shapes: empty k, a single lane group and its edges, tiles cut at every
 * edge (m not a multiple of 4 or 2, n not of 5 or 2), and the
 * weight-gradient shapes of the C4 networks, reduced where the reference is
 * slow. */
static const dot_case cases[] = {
    { 1, 1, 0, 1, 0, 0, 0, 1 },      { 1, 1, 1, 1, 0, 0, 0, 0 },      { 3, 5, 15, 2, 1, 2, 3, 1 },
    { 4, 6, 16, 1, 0, 0, 0, 0 },     { 5, 7, 17, 3, 0, 5, 1, 1 },     { 16, 72, 196, 4, 0, 0, 0, 1 },
    { 8, 9, 784, 1, 0, 0, 0, 0 },    { 9, 13, 157, 4, 3, 0, 2, 1 },   { 1, 25, 33, 2, 0, 0, 0, 0 },
    { 17, 1, 40, 1, 0, 1, 0, 1 },    { 80, 30, 157, 4, 627, 0, 0, 0 },
};

/* Compares eq_dot_nt with a double-precision sum. The lane sums and the
 * tree reorder the k * terms products; the bound is 16 u sqrt(K) ||p|| as
 * for the GEMM, plus 1e-5 relative for the final addition to C. */
static void check_against_double(const dot_case *spec, uint64_t seed)
{
    operands ops = make_operands(spec, seed);
    float *got = copy_c(&ops);

    run_dot(&ops, got);
    for (size_t i = 0; i < spec->m; i++) {
        for (size_t j = 0; j < spec->n; j++) {
            double sum = 0.0, norm = 0.0;
            for (size_t t = 0; t < spec->term_count; t++) {
                for (size_t p = 0; p < spec->k; p++) {
                    double product = (double)ops.a[t][i * ops.terms[t].lda + p] * ops.b[t][j * ops.terms[t].ldb + p];
                    sum += product;
                    norm += product * product;
                }
            }
            double expected = spec->accumulate ? ops.c0[i * ops.ldc + j] + sum : sum;
            double actual = got[i * ops.ldc + j];
            double tolerance = 16.0 * FLOAT_U * sqrt((double)(spec->k * spec->term_count)) * sqrt(norm) +
                               1e-5 * fabs(expected) + 1e-30;
            if (!(fabs(actual - expected) <= tolerance))
                fail_msg("%s: C[%zu][%zu] = %.9g, expected %.9g, tolerance %.3g (m %zu n %zu k %zu terms %zu)",
                         eq_gemm_kernel_name(), i, j, actual, expected, tolerance, spec->m, spec->n, spec->k,
                         spec->term_count);
        }
        for (size_t j = spec->n; j < ops.ldc; j++)
            assert_memory_equal(&got[i * ops.ldc + j], &ops.c0[i * ops.ldc + j], sizeof(float));
    }
    free(got);
    free_operands(&ops);
}

/* Checks eq_dot_nt bit for bit against the scalar recipe with the
 * kernel's rounding. */
static void check_against_recipe(const dot_case *spec, uint64_t seed)
{
    operands ops = make_operands(spec, seed);
    float *got = copy_c(&ops);
    float *expected = copy_c(&ops);

    run_dot(&ops, got);
    eq_dot_nt_recipe(eq_gemm_current_kernel()->fused, spec->m, spec->n, spec->k, ops.terms, spec->term_count,
                     spec->accumulate, expected, ops.ldc);
    if (memcmp(got, expected, spec->m * ops.ldc * sizeof(float)) != 0)
        fail_msg("%s: result differs from the element recipe (m %zu n %zu k %zu terms %zu)", eq_gemm_kernel_name(),
                 spec->m, spec->n, spec->k, spec->term_count);
    free(expected);
    free(got);
    free_operands(&ops);
}

static const char *const kernel_names[] = { "generic", "avx2", "avx512" };

static void kernels_match_double(void **state)
{
    (void)state;

    for (size_t i = 0; i < 3; i++) {
        if (!eq_gemm_kernel_available(kernel_names[i]))
            continue;
        assert_int_equal(eq_gemm_force_kernel(kernel_names[i]), EQ_OK);
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
            check_against_double(&cases[c], 10 + c);
    }
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
}

static void kernels_match_recipe(void **state)
{
    (void)state;

    for (size_t i = 0; i < 3; i++) {
        if (!eq_gemm_kernel_available(kernel_names[i]))
            continue;
        assert_int_equal(eq_gemm_force_kernel(kernel_names[i]), EQ_OK);
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
            check_against_recipe(&cases[c], 30 + c);
    }
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
}

/* Both SIMD kernels add the same lanes in the same order with FMA. */
static void avx2_and_avx512_agree(void **state)
{
    (void)state;
    if (!eq_gemm_kernel_available("avx2") || !eq_gemm_kernel_available("avx512"))
        skip();

    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        operands ops = make_operands(&cases[c], 50 + c);
        float *avx2 = copy_c(&ops), *avx512 = copy_c(&ops);

        assert_int_equal(eq_gemm_force_kernel("avx2"), EQ_OK);
        run_dot(&ops, avx2);
        assert_int_equal(eq_gemm_force_kernel("avx512"), EQ_OK);
        run_dot(&ops, avx512);
        assert_memory_equal(avx2, avx512, cases[c].m * ops.ldc * sizeof(float));
        free(avx2);
        free(avx512);
        free_operands(&ops);
    }
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
}

/* Large enough to split over threads: 1, 2 and 3 give the same bits. */
static void thread_count_does_not_change_bits(void **state)
{
    (void)state;
    static const dot_case big = { 80, 100, 400, 4, 0, 0, 0, 1 };
    int saved = eq_get_num_threads();

    for (size_t i = 0; i < 3; i++) {
        if (!eq_gemm_kernel_available(kernel_names[i]))
            continue;
        assert_int_equal(eq_gemm_force_kernel(kernel_names[i]), EQ_OK);
        operands ops = make_operands(&big, 70 + i);
        float *one = copy_c(&ops);

        assert_int_equal(eq_set_num_threads(1), EQ_OK);
        run_dot(&ops, one);
        for (int threads = 2; threads <= 3; threads++) {
            float *many = copy_c(&ops);
            assert_int_equal(eq_set_num_threads(threads), EQ_OK);
            run_dot(&ops, many);
            if (memcmp(one, many, big.m * ops.ldc * sizeof(float)) != 0)
                fail_msg("%s: %d threads differ from 1 thread", kernel_names[i], threads);
            free(many);
        }
        free(one);
        free_operands(&ops);
    }
    assert_int_equal(eq_set_num_threads(saved), EQ_OK);
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kernels_match_double),
        cmocka_unit_test(kernels_match_recipe),
        cmocka_unit_test(avx2_and_avx512_agree),
        cmocka_unit_test(thread_count_does_not_change_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
