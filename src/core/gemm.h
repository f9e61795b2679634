/* Single-precision matrix multiply (internal).
 *
 * Row-major: C (M x N) = alpha * op(A) * op(B) + beta * C, where op(A) is
 * M x K (A itself if !trans_a with lda >= K, else A is K x M with lda >= M)
 * and op(B) is K x N (B itself if !trans_b with ldb >= N, else B is N x K
 * with ldb >= K). beta == 0 ignores the old C (NaN included).
 *
 * Exactness contract, relied on by the bitwise equivariance guarantee: the
 * value stored in C[i][j] depends only on row i of op(A), column j of op(B),
 * K, alpha, beta and the old C[i][j]. It does not depend on i, j, M, N, the
 * leading dimensions or the thread count, because every element is reduced
 * over k in the same order with the same instructions. */
#ifndef EQ_CORE_GEMM_H
#define EQ_CORE_GEMM_H

#include <stddef.h>

void eq_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
             const float *a, size_t lda, const float *b, size_t ldb, float beta,
             float *c, size_t ldc);

/* Triple loop with a float accumulator in k order; the test reference. */
void eq_gemm_naive(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                   const float *a, size_t lda, const float *b, size_t ldb, float beta,
                   float *c, size_t ldc);

#endif
