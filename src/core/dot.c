/* Sums of row products: kernel choice, the split over threads, the
 * portable kernel and the scalar recipe. */
#include "core/dot.h"

#include <math.h>
#include <string.h>

#include "core/gemm_kernel.h"
#include "core/parallel.h"

/* Below this many multiply-adds a call runs on the calling thread alone:
 * waking a worker takes microseconds. */
#define DOT_PARALLEL_MIN_MACS (256.0 * 1024.0)

/* Columns of C per parallel task, a multiple of every kernel's tile width. */
#define DOT_TASK_COLUMNS 20

#define LANES 16

/* The fixed tree over the 16 lane sums. */
static float lanes_total(const float s[LANES])
{
    float r[8], q[4], u[2];

    for (size_t l = 0; l < 8; l++)
        r[l] = s[l] + s[l + 8];
    for (size_t l = 0; l < 4; l++)
        q[l] = r[l] + r[l + 4];
    for (size_t l = 0; l < 2; l++)
        u[l] = q[l] + q[l + 2];
    return u[0] + u[1];
}

static void store(float total, int accumulate, float *c)
{
    *c = accumulate ? *c + total : total;
}

void eq_dot_nt_recipe(int fused, size_t m, size_t n, size_t k, const eq_dot_term *terms, size_t term_count,
                      int accumulate, float *c, size_t ldc)
{
    for (size_t i = 0; i < m; i++) {
        for (size_t j = 0; j < n; j++) {
            float s[LANES] = { 0.0f };
            for (size_t t = 0; t < term_count; t++) {
                const float *a = terms[t].a + i * terms[t].lda;
                const float *b = terms[t].b + j * terms[t].ldb;
                for (size_t p = 0; p < k; p++) {
                    if (fused) {
                        s[p % LANES] = fmaf(a[p], b[p], s[p % LANES]);
                    } else {
                        float product = a[p] * b[p];
                        s[p % LANES] = s[p % LANES] + product;
                    }
                }
            }
            store(lanes_total(s), accumulate, c + i * ldc + j);
        }
    }
}

/* The portable kernel: the recipe with separate roundings, written as
 * whole groups of 16 lanes so that the compiler vectorises the lane loop. */
static void dot_block_generic(size_t i0, size_t i1, size_t j0, size_t j1, size_t k, const eq_dot_term *terms,
                              size_t term_count, int accumulate, float *c, size_t ldc)
{
    const size_t full = k / LANES * LANES;

    for (size_t i = i0; i < i1; i++) {
        for (size_t j = j0; j < j1; j++) {
            float s[LANES] = { 0.0f };
            for (size_t t = 0; t < term_count; t++) {
                const float *a = terms[t].a + i * terms[t].lda;
                const float *b = terms[t].b + j * terms[t].ldb;
                for (size_t p = 0; p < full; p += LANES) {
                    for (size_t l = 0; l < LANES; l++) {
                        float product = a[p + l] * b[p + l];
                        s[l] = s[l] + product;
                    }
                }
                for (size_t p = full; p < k; p++) {
                    float product = a[p] * b[p];
                    s[p - full] = s[p - full] + product;
                }
            }
            store(lanes_total(s), accumulate, c + i * ldc + j);
        }
    }
}

typedef struct dot_call {
    eq_dot_block_fn block;
    size_t m, n, k;
    const eq_dot_term *terms;
    size_t term_count;
    int accumulate;
    float *c;
    size_t ldc;
} dot_call;

/* Runs the column blocks [begin, end) of DOT_TASK_COLUMNS columns each. */
static void run_column_blocks(void *ctx, size_t begin, size_t end)
{
    const dot_call *call = ctx;
    size_t j0 = begin * DOT_TASK_COLUMNS;
    size_t j1 = end * DOT_TASK_COLUMNS < call->n ? end * DOT_TASK_COLUMNS : call->n;

    call->block(0, call->m, j0, j1, call->k, call->terms, call->term_count, call->accumulate, call->c, call->ldc);
}

static eq_dot_block_fn choose_block(void)
{
#if defined(__x86_64__)
    const char *name = eq_gemm_kernel_name();
    if (strcmp(name, "avx512") == 0)
        return eq_dot_block_avx512;
    if (strcmp(name, "avx2") == 0)
        return eq_dot_block_avx2;
#endif
    return dot_block_generic;
}

void eq_dot_nt(size_t m, size_t n, size_t k, const eq_dot_term *terms, size_t term_count, int accumulate,
               float *c, size_t ldc)
{
    if (m == 0 || n == 0)
        return;

    dot_call call = { choose_block(), m, n, k, terms, term_count, accumulate, c, ldc };
    size_t blocks = (n + DOT_TASK_COLUMNS - 1) / DOT_TASK_COLUMNS;

    /* The product in double cannot overflow; it only picks the thread count. */
    double macs = (double)m * (double)n * (double)k * (double)term_count;
    if (macs < DOT_PARALLEL_MIN_MACS)
        run_column_blocks(&call, 0, blocks);
    else
        eq_parallel_for(blocks, 1, run_column_blocks, &call);
}
