/* Sums of row products for weight gradients (internal).
 *
 * C (m x n) = [C +] sum over terms t of A_t (m x k) * B_t (n x k)^T, with
 * the rows of every A_t and B_t contiguous along k. This is the shape of a
 * weight gradient, dW = dy * cols^T, where k (positions) is long and m and
 * n are small: the rows are read in place, without the transposes that the
 * GEMM packing would need.
 *
 * Element recipe, the same for every kernel and thread count:
 *
 *   16 lane sums s_0..s_15 start at +0; for each term in order and each p
 *   in [0, k) ascending, lane l = p mod 16 does s_l = s_l (+) a[p] * b[p];
 *   then r_l = s_l + s_(l+8), q_l = r_l + r_(l+4), u_l = q_l + q_(l+2) and
 *   total = u_0 + u_1; C = accumulate ? C + total : total.
 *
 * (+) is a fused multiply-add in the AVX2 and AVX-512 kernels, which
 * therefore agree bit for bit, and a rounded multiply and add in the
 * portable one. The value of an element depends only on its rows, k, the
 * terms and the old C. */
#ifndef EQ_CORE_DOT_H
#define EQ_CORE_DOT_H

#include <stddef.h>

/* One term: rows i of A at a + i * lda, rows j of B at b + j * ldb. */
typedef struct eq_dot_term {
    const float *a;
    size_t lda;
    const float *b;
    size_t ldb;
} eq_dot_term;

/* Computes C as above with the kernel of the active GEMM kernel's
 * instruction set (see eq_gemm_force_kernel), on the thread pool when the
 * product is large enough. k may be 0 (every total is +0). */
void eq_dot_nt(size_t m, size_t n, size_t k, const eq_dot_term *terms, size_t term_count, int accumulate,
               float *c, size_t ldc);

/* The element recipe in scalar code: fused = 1 uses fmaf and matches the
 * SIMD kernels, fused = 0 matches the portable one. The bitwise oracle in
 * tests. */
void eq_dot_nt_recipe(int fused, size_t m, size_t n, size_t k, const eq_dot_term *terms, size_t term_count,
                      int accumulate, float *c, size_t ldc);

/* A kernel computes the output block of rows [i0, i1) and columns
 * [j0, j1) of C. */
typedef void (*eq_dot_block_fn)(size_t i0, size_t i1, size_t j0, size_t j1, size_t k, const eq_dot_term *terms,
                                size_t term_count, int accumulate, float *c, size_t ldc);

#if defined(__x86_64__)
void eq_dot_block_avx2(size_t i0, size_t i1, size_t j0, size_t j1, size_t k, const eq_dot_term *terms,
                       size_t term_count, int accumulate, float *c, size_t ldc);
void eq_dot_block_avx512(size_t i0, size_t i1, size_t j0, size_t j1, size_t k, const eq_dot_term *terms,
                         size_t term_count, int accumulate, float *c, size_t ldc);
#endif

#endif
