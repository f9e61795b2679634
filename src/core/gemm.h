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

#include "equivar/status.h"

void eq_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
             const float *a, size_t lda, const float *b, size_t ldb, float beta,
             float *c, size_t ldc);

/* Triple loop with a float accumulator in k order; the test reference. */
void eq_gemm_naive(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                   const float *a, size_t lda, const float *b, size_t ldb, float beta,
                   float *c, size_t ldc);

/* op(A) packed once for many products with the same left factor, such as a
 * layer's weights over the chunks of a batch. Zero-initialise it, fill it
 * with eq_gemm_pack and free it with eq_gemm_packed_release. */
typedef struct eq_gemm_packed {
    size_t m, k;
    int trans_a;
    const float *a;                  /* op(A) itself, for the unpacked fallback */
    size_t lda;
    const struct eq_gemm_kernel *kernel;
    const struct eq_gemm_tile *tile; /* the tile shape the panels are cut for */
    size_t kc;                       /* K block length, eq_gemm_k_block(k) */
    float *data;                     /* k * ceil(m / mr) * mr floats */
    size_t capacity;                 /* floats allocated at data */
} eq_gemm_packed;

/* Packs op(A) (m x k, as in eq_gemm) for products with about n_hint
 * columns, reusing the buffer of `packed` when it is big enough. op(A)
 * must stay unchanged while the pack is in use.
 * Returns EQ_OK, or EQ_ERR_OUT_OF_MEMORY after which `packed` is empty. */
eq_status eq_gemm_pack(eq_gemm_packed *packed, int trans_a, size_t m, size_t k, const float *a, size_t lda,
                       size_t n_hint);

/* C (m x n) = alpha * A * op(B) + beta * C for the packed A. Every element
 * gets the bits that eq_gemm gives with the kernel that was active when A
 * was packed. */
void eq_gemm_packed_run(const eq_gemm_packed *a, int trans_b, size_t n, float alpha, const float *b, size_t ldb,
                        float beta, float *c, size_t ldc);

/* eq_gemm_packed_run for an untransposed B whose row k is row b_rows[k] of
 * b (rows ldb apart): C = alpha * A * B' + beta * C with B'[k] = b[b_rows[k]].
 * Every element gets the bits of eq_gemm on the gathered matrix, so a
 * product over a row permutation of a shared matrix equals the product
 * over a permuted copy. */
void eq_gemm_packed_run_rows(const eq_gemm_packed *a, size_t n, float alpha, const float *b, size_t ldb,
                             const size_t *b_rows, float beta, float *c, size_t ldc);

/* Frees the buffer of a pack and empties it. An empty pack is left as is. */
void eq_gemm_packed_release(eq_gemm_packed *packed);

#endif
