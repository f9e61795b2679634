/* Tests for eq_gemm: every kernel against the naive reference, the
 * exactness contract bit for bit, and the kernel override. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/gemm.h"
#include "core/gemm_kernel.h"
#include "equivar.h"
#include "testutil.h"

/* Unit roundoff of float. */
#define FLOAT_U 5.9604644775390625e-8

typedef struct gemm_case {
    int trans_a, trans_b;
    size_t m, n, k;
    size_t pad_a, pad_b, pad_c; /* extra leading-dimension elements */
    float alpha, beta;
} gemm_case;

/* Operands of one case, with the leading dimensions it requests. */
typedef struct operands {
    gemm_case spec;
    size_t lda, ldb, ldc;
    float *a, *b, *c0; /* c0: C before the call */
} operands;

static size_t a_rows(const gemm_case *spec)
{
    return spec->trans_a ? spec->k : spec->m;
}

static size_t b_rows(const gemm_case *spec)
{
    return spec->trans_b ? spec->n : spec->k;
}

static operands make_operands(const gemm_case *spec, uint64_t seed)
{
    operands ops = { .spec = *spec };
    eq_rng rng;

    ops.lda = (spec->trans_a ? spec->m : spec->k) + spec->pad_a;
    ops.ldb = (spec->trans_b ? spec->k : spec->n) + spec->pad_b;
    ops.ldc = spec->n + spec->pad_c;
    ops.a = malloc((a_rows(spec) * ops.lda + 1) * sizeof(float));
    ops.b = malloc((b_rows(spec) * ops.ldb + 1) * sizeof(float));
    ops.c0 = malloc((spec->m * ops.ldc + 1) * sizeof(float));
    assert_non_null(ops.a);
    assert_non_null(ops.b);
    assert_non_null(ops.c0);

    eq_rng_seed(&rng, seed);
    eq_test_fill_uniform(ops.a, a_rows(spec) * ops.lda, &rng, -1.0f, 1.0f);
    eq_test_fill_uniform(ops.b, b_rows(spec) * ops.ldb, &rng, -1.0f, 1.0f);
    eq_test_fill_uniform(ops.c0, spec->m * ops.ldc, &rng, -1.0f, 1.0f);
    if (spec->beta == 0.0f) {
        /* beta == 0 must ignore the old C, NaN included. */
        for (size_t i = 0; i < spec->m * ops.ldc; i++)
            ops.c0[i] = NAN;
    }
    return ops;
}

static void free_operands(operands *ops)
{
    free(ops->a);
    free(ops->b);
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

static void run_gemm(const operands *ops, float *c)
{
    const gemm_case *s = &ops->spec;

    eq_gemm(s->trans_a, s->trans_b, s->m, s->n, s->k, s->alpha, ops->a, ops->lda, ops->b, ops->ldb,
            s->beta, c, ops->ldc);
}

static float op_a(const operands *ops, size_t i, size_t p)
{
    return ops->spec.trans_a ? ops->a[p * ops->lda + i] : ops->a[i * ops->lda + p];
}

static float op_b(const operands *ops, size_t p, size_t j)
{
    return ops->spec.trans_b ? ops->b[j * ops->ldb + p] : ops->b[p * ops->ldb + j];
}

/* Compares eq_gemm with eq_gemm_naive element by element.
 *
 * Tolerance: both compute in float but sum the K products in different
 * orders (K blocks, FMA or not). Under the usual random-walk model each
 * sum is off by about u * sqrt(K / 2) * ||p||, where p is the vector of the
 * K products of the element and u = 2^-24; the bound below is 16 times
 * u * sqrt(K) * ||p|| * |alpha|, plus 1e-5 relative for the few roundings of
 * the alpha/beta epilogue. For K = 2880 and inputs in [-1, 1] it is about
 * 1e-3, while a wrong or missing product (|a b| about 0.25) is 100 times
 * larger. Padding between rows must be left untouched. */
static void check_against_naive(const gemm_case *spec, uint64_t seed)
{
    operands ops = make_operands(spec, seed);
    float *got = copy_c(&ops);
    float *ref = copy_c(&ops);

    run_gemm(&ops, got);
    eq_gemm_naive(spec->trans_a, spec->trans_b, spec->m, spec->n, spec->k, spec->alpha, ops.a,
                  ops.lda, ops.b, ops.ldb, spec->beta, ref, ops.ldc);

    for (size_t i = 0; i < spec->m; i++) {
        for (size_t j = 0; j < spec->n; j++) {
            double norm = 0.0;
            for (size_t p = 0; p < spec->k; p++) {
                double product = (double)op_a(&ops, i, p) * (double)op_b(&ops, p, j);
                norm += product * product;
            }
            double expected = ref[i * ops.ldc + j];
            double actual = got[i * ops.ldc + j];
            double tolerance =
                16.0 * FLOAT_U * sqrt((double)spec->k) * sqrt(norm) * fabs(spec->alpha) +
                1e-5 * fabs(expected) + 1e-30;

            if (!(fabs(actual - expected) <= tolerance))
                fail_msg("%s: C[%zu][%zu] = %.9g, naive %.9g, tolerance %.3g (m %zu n %zu k %zu "
                         "trans %d%d alpha %g beta %g)",
                         eq_gemm_kernel_name(), i, j, actual, expected, tolerance, spec->m, spec->n,
                         spec->k, spec->trans_a, spec->trans_b, spec->alpha, spec->beta);
        }
        for (size_t j = spec->n; j < ops.ldc; j++)
            assert_memory_equal(&got[i * ops.ldc + j], &ops.c0[i * ops.ldc + j], sizeof(float));
    }

    free(got);
    free(ref);
    free_operands(&ops);
}

/* Shapes: tiny, prime, just over every tile size and K block, the
 * library's conv and dense shapes (reduced where the naive loop is slow). */
static const size_t shapes[][3] = {
    { 1, 1, 1 },     { 1, 1, 7 },     { 2, 3, 1 },     { 17, 31, 29 },   { 13, 7, 257 },
    { 5, 97, 3 },    { 97, 5, 11 },   { 9, 17, 33 },   { 15, 49, 64 },   { 17, 65, 256 },
    { 7, 33, 513 },  { 15, 49, 300 }, { 8, 784, 9 },   { 16, 196, 144 }, { 80, 49, 2880 },
    { 72, 49, 16 },  { 64, 10, 500 }, { 1, 1000, 40 }, { 1000, 1, 40 },  { 130, 90, 70 },
    { 193, 20, 20 }, { 23, 1030, 5 }, { 3, 5, 1200 },  { 56, 500, 300 },
};

static const float alpha_beta[][2] = {
    { 1.0f, 0.0f }, { 0.5f, 1.0f }, { -1.5f, 0.25f }, { 1.0f, 1.0f }, { 2.0f, 0.0f },
};

/* Selects `name` for the test, or skips the test if the CPU lacks it. */
static void use_kernel(const char *name)
{
    if (!eq_gemm_kernel_available(name))
        skip();
    assert_int_equal(eq_gemm_force_kernel(name), EQ_OK);
    assert_string_equal(eq_gemm_kernel_name(), name);
}

static void check_kernel_against_naive(const char *name)
{
    use_kernel(name);
    uint64_t seed = 1;

    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int trans = 0; trans < 4; trans++) {
            for (size_t ab = 0; ab < sizeof alpha_beta / sizeof alpha_beta[0]; ab++) {
                gemm_case spec = {
                    .trans_a = trans & 1,
                    .trans_b = trans >> 1,
                    .m = shapes[s][0],
                    .n = shapes[s][1],
                    .k = shapes[s][2],
                    .pad_a = (s + ab) % 3 == 0 ? 3 : 0,
                    .pad_b = (s + ab) % 2 == 0 ? 5 : 0,
                    .pad_c = ab % 2 == 0 ? 2 : 0,
                    .alpha = alpha_beta[ab][0],
                    .beta = alpha_beta[ab][1],
                };
                check_against_naive(&spec, seed++);
            }
        }
    }
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
}

static void generic_matches_naive(void **state)
{
    (void)state;
    check_kernel_against_naive("generic");
}

static void avx2_matches_naive(void **state)
{
    (void)state;
    check_kernel_against_naive("avx2");
}

static void avx512_matches_naive(void **state)
{
    (void)state;
    check_kernel_against_naive("avx512");
}

/* A large-K conv shape once per kernel: K = 2880 spans twelve K blocks. */
static void large_k_matches_naive(void **state)
{
    (void)state;
    static const char *const names[] = { "generic", "avx2", "avx512" };

    for (size_t i = 0; i < 3; i++) {
        if (!eq_gemm_kernel_available(names[i]))
            continue;
        assert_int_equal(eq_gemm_force_kernel(names[i]), EQ_OK);
        for (int trans = 0; trans < 4; trans++) {
            gemm_case spec = { .trans_a = trans & 1,
                               .trans_b = trans >> 1,
                               .m = 20,
                               .n = 70,
                               .k = 2880,
                               .pad_a = 1,
                               .alpha = 1.0f,
                               .beta = 0.5f };
            check_against_naive(&spec, 100 + (uint64_t)trans);
        }
    }
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
}

/* Every tile shape of every kernel gives exactly the bits of the scalar
 * element recipe (eq_gemm_unpacked): the recipe is the whole contract. */
static void tiles_match_element_recipe(void **state)
{
    (void)state;
    static const char *const names[] = { "generic", "avx2", "avx512" };
    static const size_t recipe_shapes[][3] = {
        { 1, 1, 1 },     { 17, 31, 29 }, { 33, 97, 300 },
        { 80, 50, 600 }, { 9, 784, 18 }, { 200, 10, 7 },
    };

    for (size_t i = 0; i < 3; i++) {
        if (!eq_gemm_kernel_available(names[i]))
            continue;
        assert_int_equal(eq_gemm_force_kernel(names[i]), EQ_OK);
        const eq_gemm_kernel *kernel = eq_gemm_current_kernel();

        for (size_t t = 0; t < kernel->tile_count; t++) {
            eq_gemm_force_tile((int)t);
            for (size_t s = 0; s < sizeof recipe_shapes / sizeof recipe_shapes[0]; s++) {
                for (int trans = 0; trans < 4; trans++) {
                    gemm_case spec = { .trans_a = trans & 1,
                                       .trans_b = trans >> 1,
                                       .m = recipe_shapes[s][0],
                                       .n = recipe_shapes[s][1],
                                       .k = recipe_shapes[s][2],
                                       .pad_c = 1,
                                       .alpha = 0.75f,
                                       .beta = s % 2 ? 0.0f : -1.25f };
                    operands ops = make_operands(&spec, 7 * s + (uint64_t)trans);
                    float *got = copy_c(&ops);
                    float *want = copy_c(&ops);

                    run_gemm(&ops, got);
                    eq_gemm_unpacked(kernel->fused, spec.trans_a, spec.trans_b, spec.m, spec.n,
                                     spec.k, spec.alpha, ops.a, ops.lda, ops.b, ops.ldb, spec.beta,
                                     want, ops.ldc);
                    assert_memory_equal(got, want, spec.m * ops.ldc * sizeof(float));

                    free(got);
                    free(want);
                    free_operands(&ops);
                }
            }
        }
        eq_gemm_force_tile(-1);
    }
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
}

/* With many rows and a large op(B) K block, the driver packs an
 * untransposed B instead of reading it in place. That path must give the
 * recipe's bits too, for every kernel and thread count. */
static void packed_b_matches_element_recipe(void **state)
{
    (void)state;
    static const char *const names[] = { "generic", "avx2", "avx512" };
    gemm_case spec = { .m = 56, .n = 500, .k = 300, .pad_b = 4, .alpha = 1.0f, .beta = 0.5f };

    for (size_t i = 0; i < 3; i++) {
        if (!eq_gemm_kernel_available(names[i]))
            continue;
        assert_int_equal(eq_gemm_force_kernel(names[i]), EQ_OK);
        for (int threads = 1; threads <= 2; threads++) {
            operands ops = make_operands(&spec, 11);
            float *got = copy_c(&ops);
            float *want = copy_c(&ops);

            assert_int_equal(eq_set_num_threads(threads), EQ_OK);
            run_gemm(&ops, got);
            eq_gemm_unpacked(eq_gemm_current_kernel()->fused, 0, 0, spec.m, spec.n, spec.k,
                             spec.alpha, ops.a, ops.lda, ops.b, ops.ldb, spec.beta, want, ops.ldc);
            assert_memory_equal(got, want, spec.m * ops.ldc * sizeof(float));

            free(got);
            free(want);
            free_operands(&ops);
        }
    }
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
}

/* Computes C (m x n) for rows of op(A) and columns of op(B) embedded at
 * offsets (row0, col0) inside bigger operands (big_m x K and K x big_n),
 * with C at the same offsets inside a bigger C. */
static void gemm_embedded(int trans_a, int trans_b, size_t m, size_t n, size_t k,
                          const float *a_small, const float *b_small, const float *c_small,
                          size_t big_m, size_t big_n, size_t row0, size_t col0, float alpha,
                          float beta, float *c_out)
{
    eq_rng rng;
    size_t lda = (trans_a ? big_m : k) + 1, ldb = (trans_b ? k : big_n) + 2, ldc = big_n + 3;
    float *a = malloc((trans_a ? k : big_m) * lda * sizeof(float));
    float *b = malloc((trans_b ? big_n : k) * ldb * sizeof(float));
    float *c = malloc(big_m * ldc * sizeof(float));

    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    eq_rng_seed(&rng, 99);
    eq_test_fill_uniform(a, (trans_a ? k : big_m) * lda, &rng, -1.0f, 1.0f);
    eq_test_fill_uniform(b, (trans_b ? big_n : k) * ldb, &rng, -1.0f, 1.0f);
    eq_test_fill_uniform(c, big_m * ldc, &rng, -1.0f, 1.0f);

    /* The small operands are op(A) as m x k and op(B) as k x n, row-major. */
    for (size_t i = 0; i < m; i++)
        for (size_t p = 0; p < k; p++)
            a[trans_a ? p * lda + row0 + i : (row0 + i) * lda + p] = a_small[i * k + p];
    for (size_t p = 0; p < k; p++)
        for (size_t j = 0; j < n; j++)
            b[trans_b ? (col0 + j) * ldb + p : p * ldb + col0 + j] = b_small[p * n + j];
    for (size_t i = 0; i < m; i++)
        memcpy(c + (row0 + i) * ldc + col0, c_small + i * n, n * sizeof(float));

    eq_gemm(trans_a, trans_b, big_m, big_n, k, alpha, a, lda, b, ldb, beta, c, ldc);

    for (size_t i = 0; i < m; i++)
        memcpy(c_out + i * n, c + (row0 + i) * ldc + col0, n * sizeof(float));
    free(a);
    free(b);
    free(c);
}

/* Contract (a): C[i][j] depends on row i of op(A) and column j of op(B),
 * not on where they sit, M, N or the leading dimensions. Bigger shapes
 * also pick other tile shapes and task splits. */
static void position_does_not_change_bits(void **state)
{
    (void)state;
    static const char *const names[] = { "generic", "avx2", "avx512" };
    static const size_t placements[][4] = {
        /* big_m, big_n, row0, col0 */
        { 13, 37, 0, 0 },      { 14, 38, 1, 1 },    { 40, 100, 11, 5 },  { 200, 61, 150, 24 },
        { 13, 1100, 0, 1000 }, { 300, 37, 287, 0 }, { 27, 530, 7, 333 },
    };
    const size_t m = 13, n = 37, k = 300;
    float a[13 * 300], b[300 * 37], c0[13 * 37], first[13 * 37], other[13 * 37];
    eq_rng rng;

    eq_rng_seed(&rng, 5);
    eq_test_fill_uniform(a, m * k, &rng, -1.0f, 1.0f);
    eq_test_fill_uniform(b, k * n, &rng, -1.0f, 1.0f);
    eq_test_fill_uniform(c0, m * n, &rng, -1.0f, 1.0f);

    for (size_t i = 0; i < 3; i++) {
        if (!eq_gemm_kernel_available(names[i]))
            continue;
        assert_int_equal(eq_gemm_force_kernel(names[i]), EQ_OK);
        for (int trans = 0; trans < 4; trans++) {
            for (int beta_case = 0; beta_case < 2; beta_case++) {
                float beta = beta_case ? 0.5f : 0.0f;
                gemm_embedded(trans & 1, trans >> 1, m, n, k, a, b, c0, m, n, 0, 0, 1.25f, beta,
                              first);
                for (size_t p = 1; p < sizeof placements / sizeof placements[0]; p++) {
                    gemm_embedded(trans & 1, trans >> 1, m, n, k, a, b, c0, placements[p][0],
                                  placements[p][1], placements[p][2], placements[p][3], 1.25f, beta,
                                  other);
                    assert_memory_equal(first, other, sizeof first);
                }
            }
        }
    }
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
}

/* Contract (b): 1, 2 and 3 threads give the same bits, on shapes large
 * enough to be split into several tasks. */
static void thread_count_does_not_change_bits(void **state)
{
    (void)state;
    static const char *const names[] = { "generic", "avx2", "avx512" };
    static const gemm_case cases[] = {
        { .m = 80, .n = 784, .k = 300, .alpha = 1.0f, .beta = 0.0f },
        { .trans_b = 1, .m = 300, .n = 200, .k = 520, .pad_b = 3, .alpha = 1.0f, .beta = 1.0f },
        { .trans_a = 1, .m = 1000, .n = 10, .k = 100, .alpha = 0.5f, .beta = 0.0f },
        { .trans_a = 1, .trans_b = 1, .m = 144, .n = 196, .k = 64, .alpha = 1.0f, .beta = 2.0f },
    };

    for (size_t i = 0; i < 3; i++) {
        if (!eq_gemm_kernel_available(names[i]))
            continue;
        assert_int_equal(eq_gemm_force_kernel(names[i]), EQ_OK);
        for (size_t s = 0; s < sizeof cases / sizeof cases[0]; s++) {
            operands ops = make_operands(&cases[s], 40 + s);
            size_t bytes = cases[s].m * ops.ldc * sizeof(float);
            float *one = copy_c(&ops);

            assert_int_equal(eq_set_num_threads(1), EQ_OK);
            run_gemm(&ops, one);
            for (int threads = 2; threads <= 3; threads++) {
                float *many = copy_c(&ops);
                assert_int_equal(eq_set_num_threads(threads), EQ_OK);
                run_gemm(&ops, many);
                assert_memory_equal(one, many, bytes);
                free(many);
            }
            free(one);
            free_operands(&ops);
        }
    }
    assert_int_equal(eq_set_num_threads(2), EQ_OK);
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
}

/* A prepacked A gives the bits of eq_gemm with the same kernel, for any
 * column count (also one other than the packing hint), both B layouts and
 * 1 to 3 threads; C outside the m x n block stays untouched. */
static void packed_a_matches_gemm(void **state)
{
    (void)state;
    static const char *const names[] = { "generic", "avx2", "avx512" };
    static const gemm_case cases[] = {
        { .m = 1, .n = 1, .k = 1, .alpha = 1.0f, .beta = 0.0f },
        { .m = 17, .n = 31, .k = 29, .pad_a = 2, .pad_c = 3, .alpha = 0.5f, .beta = 1.0f },
        { .trans_a = 1, .m = 80, .n = 262, .k = 720, .pad_a = 5, .alpha = 1.0f, .beta = 1.0f },
        { .trans_b = 1, .m = 33, .n = 70, .k = 513, .pad_b = 1, .alpha = -1.5f, .beta = 0.25f },
        { .trans_a = 1, .trans_b = 1, .m = 130, .n = 90, .k = 70, .alpha = 1.0f, .beta = 0.0f },
        { .m = 80, .n = 784, .k = 300, .pad_c = 16, .alpha = 1.0f, .beta = 0.0f },
    };
    eq_gemm_packed packed = { 0 };

    for (size_t i = 0; i < 3; i++) {
        if (!eq_gemm_kernel_available(names[i]))
            continue;
        assert_int_equal(eq_gemm_force_kernel(names[i]), EQ_OK);
        for (size_t s = 0; s < sizeof cases / sizeof cases[0]; s++) {
            const gemm_case *spec = &cases[s];
            operands ops = make_operands(spec, 60 + s);
            size_t bytes = spec->m * ops.ldc * sizeof(float);
            float *expected = copy_c(&ops);

            assert_int_equal(eq_set_num_threads(1), EQ_OK);
            run_gemm(&ops, expected);
            for (size_t hint = 0; hint < 2; hint++) {
                size_t n_hint = hint == 0 ? spec->n : 16 * spec->n + 1;
                assert_int_equal(eq_gemm_pack(&packed, spec->trans_a, spec->m, spec->k, ops.a, ops.lda, n_hint),
                                 EQ_OK);
                for (int threads = 1; threads <= 3; threads++) {
                    float *got = copy_c(&ops);
                    assert_int_equal(eq_set_num_threads(threads), EQ_OK);
                    eq_gemm_packed_run(&packed, spec->trans_b, spec->n, spec->alpha, ops.b, ops.ldb, spec->beta,
                                       got, ops.ldc);
                    if (memcmp(got, expected, bytes) != 0)
                        fail_msg("%s: prepacked A differs from eq_gemm (case %zu, hint %zu, %d threads)",
                                 names[i], s, n_hint, threads);
                    free(got);
                }
            }
            free(expected);
            free_operands(&ops);
        }
    }
    eq_gemm_packed_release(&packed);
    eq_gemm_packed_release(&packed);
    assert_null(packed.data);
    assert_int_equal(eq_set_num_threads(2), EQ_OK);
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
}

/* A product over gathered rows of B equals eq_gemm on a gathered copy bit
 * for bit, for every kernel and with rows read several times or not at all. */
static void gathered_rows_match_copy(void **state)
{
    (void)state;
    static const char *const names[] = { "generic", "avx2", "avx512" };
    const size_t m = 37, n = 300, k = 530, b_rows_total = 600, ldb = 310;
    float *a = malloc(m * k * sizeof(float)), *b = malloc(b_rows_total * ldb * sizeof(float));
    float *copy = malloc(k * n * sizeof(float));
    float *expected = malloc(m * n * sizeof(float)), *got = malloc(m * n * sizeof(float));
    size_t *rows = malloc(k * sizeof *rows);
    eq_rng rng;
    eq_gemm_packed packed = { 0 };

    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(copy);
    assert_non_null(expected);
    assert_non_null(got);
    assert_non_null(rows);
    eq_rng_seed(&rng, 70);
    for (size_t q = 0; q < m * k; q++)
        a[q] = eq_rng_normal(&rng);
    for (size_t q = 0; q < b_rows_total * ldb; q++)
        b[q] = eq_rng_normal(&rng);
    for (size_t q = 0; q < k; q++)
        rows[q] = (q * 7 + 3) % b_rows_total;
    for (size_t q = 0; q < k; q++)
        memcpy(copy + q * n, b + rows[q] * ldb, n * sizeof(float));

    for (size_t i = 0; i < 3; i++) {
        if (!eq_gemm_kernel_available(names[i]))
            continue;
        assert_int_equal(eq_gemm_force_kernel(names[i]), EQ_OK);
        for (int threads = 1; threads <= 2; threads++) {
            assert_int_equal(eq_set_num_threads(threads), EQ_OK);
            eq_gemm(0, 0, m, n, k, 1.0f, a, k, copy, n, 0.0f, expected, n);
            assert_int_equal(eq_gemm_pack(&packed, 0, m, k, a, k, n), EQ_OK);
            eq_gemm_packed_run_rows(&packed, n, 1.0f, b, ldb, rows, 0.0f, got, n);
            if (memcmp(got, expected, m * n * sizeof(float)) != 0)
                fail_msg("%s: gathered rows differ from the gathered copy (%d threads)", names[i], threads);

            /* The scalar fallback follows the same recipe. */
            eq_gemm_unpacked_rows(eq_gemm_current_kernel()->fused, 0, 0, m, n, k, 1.0f, a, k, b, ldb, rows, 0.0f,
                                  got, n);
            if (memcmp(got, expected, m * n * sizeof(float)) != 0)
                fail_msg("%s: the unpacked gathered product differs from the gathered copy", names[i]);
        }
    }

    eq_gemm_packed_release(&packed);
    free(a);
    free(b);
    free(copy);
    free(expected);
    free(got);
    free(rows);
    assert_int_equal(eq_set_num_threads(2), EQ_OK);
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
}

/* Both SIMD kernels use the same K blocks and one FMA per product, so they
 * agree bit for bit. */
static void avx2_and_avx512_agree(void **state)
{
    (void)state;
    if (!eq_gemm_kernel_available("avx2") || !eq_gemm_kernel_available("avx512"))
        skip();

    gemm_case spec = {
        .trans_b = 1, .m = 45, .n = 77, .k = 1000, .pad_a = 2, .alpha = 0.3f, .beta = 1.0f
    };
    operands ops = make_operands(&spec, 77);
    float *with_avx2 = copy_c(&ops);
    float *with_avx512 = copy_c(&ops);

    assert_int_equal(eq_gemm_force_kernel("avx2"), EQ_OK);
    run_gemm(&ops, with_avx2);
    assert_int_equal(eq_gemm_force_kernel("avx512"), EQ_OK);
    run_gemm(&ops, with_avx512);
    assert_memory_equal(with_avx2, with_avx512, spec.m * ops.ldc * sizeof(float));

    free(with_avx2);
    free(with_avx512);
    free_operands(&ops);
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
}

static void zero_k_scales_c(void **state)
{
    (void)state;
    float a[1] = { 1.0f }, b[1] = { 1.0f };
    float c[6] = { 1.0f, -2.0f, 3.0f, NAN, NAN, NAN };

    eq_gemm(0, 0, 1, 3, 0, 1.0f, a, 1, b, 3, 0.5f, c, 3);
    assert_true(c[0] == 0.5f);
    assert_true(c[1] == -1.0f);
    assert_true(c[2] == 1.5f);

    eq_gemm(0, 0, 1, 3, 0, 1.0f, a, 1, b, 3, 0.0f, c + 3, 3);
    assert_true(c[3] == 0.0f);
    assert_true(c[4] == 0.0f);
    assert_true(c[5] == 0.0f);
}

static void empty_output_leaves_c(void **state)
{
    (void)state;
    float a[4] = { 1.0f, 2.0f, 3.0f, 4.0f }, b[4] = { 1.0f, 2.0f, 3.0f, 4.0f };
    float c[4] = { 7.0f, 7.0f, 7.0f, 7.0f };

    eq_gemm(0, 0, 0, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
    eq_gemm(0, 0, 2, 0, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
    for (size_t i = 0; i < 4; i++)
        assert_true(c[i] == 7.0f);
}

static void force_kernel_rejects_unknown(void **state)
{
    (void)state;

    assert_int_equal(eq_gemm_force_kernel("sse9"), EQ_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(eq_last_error(), "\"sse9\""));
    assert_non_null(strstr(eq_last_error(), "expected generic, avx2 or avx512"));
    assert_int_equal(eq_gemm_kernel_available("sse9"), 0);
    assert_int_equal(eq_gemm_kernel_available(NULL), 0);
    assert_int_equal(eq_gemm_kernel_available("generic"), 1);
}

static void environment_selects_kernel(void **state)
{
    (void)state;

    assert_int_equal(setenv("EQ_GEMM_KERNEL", "generic", 1), 0);
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
    assert_string_equal(eq_gemm_kernel_name(), "generic");

    /* An unknown value falls back to the automatic choice. */
    assert_int_equal(setenv("EQ_GEMM_KERNEL", "bogus", 1), 0);
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
    const char *automatic = eq_gemm_kernel_available("avx512") ? "avx512"
                            : eq_gemm_kernel_available("avx2") ? "avx2"
                                                               : "generic";
    assert_string_equal(eq_gemm_kernel_name(), automatic);

    assert_int_equal(unsetenv("EQ_GEMM_KERNEL"), 0);
    assert_int_equal(eq_gemm_force_kernel(NULL), EQ_OK);
    assert_string_equal(eq_gemm_kernel_name(), automatic);
}

static void k_block_depends_on_k_only(void **state)
{
    (void)state;

    assert_int_equal(eq_gemm_k_block(1), 1);
    assert_int_equal(eq_gemm_k_block(EQ_GEMM_KC_MAX), EQ_GEMM_KC_MAX);
    assert_int_equal(eq_gemm_k_block(EQ_GEMM_KC_MAX + 1), EQ_GEMM_KC_MAX / 2 + 1);
    assert_int_equal(eq_gemm_k_block(2880), 240);
    for (size_t k = 1; k < 5000; k += 37) {
        size_t kc = eq_gemm_k_block(k);
        assert_true(kc >= 1);
        assert_true(kc <= EQ_GEMM_KC_MAX);
        assert_true((k + kc - 1) / kc == (k + EQ_GEMM_KC_MAX - 1) / EQ_GEMM_KC_MAX);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generic_matches_naive),
        cmocka_unit_test(avx2_matches_naive),
        cmocka_unit_test(avx512_matches_naive),
        cmocka_unit_test(large_k_matches_naive),
        cmocka_unit_test(tiles_match_element_recipe),
        cmocka_unit_test(packed_b_matches_element_recipe),
        cmocka_unit_test(position_does_not_change_bits),
        cmocka_unit_test(thread_count_does_not_change_bits),
        cmocka_unit_test(packed_a_matches_gemm),
        cmocka_unit_test(gathered_rows_match_copy),
        cmocka_unit_test(avx2_and_avx512_agree),
        cmocka_unit_test(zero_k_scales_c),
        cmocka_unit_test(empty_output_leaves_c),
        cmocka_unit_test(force_kernel_rejects_unknown),
        cmocka_unit_test(environment_selects_kernel),
        cmocka_unit_test(k_block_depends_on_k_only),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
