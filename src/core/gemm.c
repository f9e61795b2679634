/* GEMM entry point. A placeholder that forwards to the reference loop until
 * the blocked SIMD kernels land. */
#include "core/gemm.h"

void eq_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
             const float *a, size_t lda, const float *b, size_t ldb, float beta,
             float *c, size_t ldc)
{
    eq_gemm_naive(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
