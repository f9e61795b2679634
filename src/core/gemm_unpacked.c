/* The GEMM element recipe in scalar code: the allocation-free fallback of
 * eq_gemm and the bitwise oracle for its kernels. */
#include <math.h>

#include "core/gemm.h"
#include "core/gemm_kernel.h"

/* One element: the K blocks and roundings documented in gemm_kernel.h. */
static float element(int fused, int trans_a, int trans_b, size_t i, size_t j, size_t k, float alpha,
                     const float *a, size_t lda, const float *b, size_t ldb, const size_t *b_rows, float beta,
                     float old)
{
    size_t kc = eq_gemm_k_block(k);
    float out = old;

    for (size_t p0 = 0; p0 < k; p0 += kc) {
        size_t p1 = k - p0 < kc ? k : p0 + kc;
        float s = 0.0f;

        for (size_t p = p0; p < p1; p++) {
            float av = trans_a ? a[p * lda + i] : a[i * lda + p];
            float bv = trans_b ? b[j * ldb + p] : b[(b_rows ? b_rows[p] : p) * ldb + j];
            if (fused) {
                s = fmaf(av, bv, s);
            } else {
                float product = av * bv;
                s = s + product;
            }
        }

        float scaled = alpha * s;
        if (p0 != 0) {
            out = out + scaled;
        } else if (beta == 0.0f) {
            out = scaled;
        } else {
            float beta_c = beta * out;
            out = scaled + beta_c;
        }
    }
    return out;
}

void eq_gemm_unpacked(int fused, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                      float alpha, const float *a, size_t lda, const float *b, size_t ldb,
                      float beta, float *c, size_t ldc)
{
    eq_gemm_unpacked_rows(fused, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, NULL, beta, c, ldc);
}

void eq_gemm_unpacked_rows(int fused, int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                           const float *a, size_t lda, const float *b, size_t ldb, const size_t *b_rows, float beta,
                           float *c, size_t ldc)
{
    for (size_t i = 0; i < m; i++) {
        for (size_t j = 0; j < n; j++) {
            float *cij = c + i * ldc + j;

            if (k == 0) {
                /* One empty block: s = 0. */
                float scaled = alpha * 0.0f;
                *cij = beta == 0.0f ? scaled : scaled + beta * *cij;
            } else {
                *cij = element(fused, trans_a, trans_b, i, j, k, alpha, a, lda, b, ldb, b_rows, beta, *cij);
            }
        }
    }
}
