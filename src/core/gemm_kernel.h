/* GEMM micro-kernels, the kernel registry and the kernel override (internal).
 *
 * Every kernel computes each element of C the same way, which is what makes
 * the exactness contract in gemm.h hold:
 *
 *   K is cut into blocks by eq_gemm_k_block (a function of K alone);
 *   for each block p:  s = +0; for k in the block, in order: s = s (+) a_ik * b_kj
 *                      C_ij = p == 0 ? (beta == 0 ? alpha * s : alpha * s + beta * C_ij)
 *                                    : C_ij + alpha * s
 *
 * where (+) is a fused multiply-add in the SIMD kernels (fused == 1) and a
 * rounded multiply followed by a rounded add in the portable kernel. The
 * epilogue uses separate multiplies and adds in every kernel. Tile shapes,
 * packing, zero padding and threads change which instructions run side by
 * side, never this sequence of roundings, so the AVX2 and AVX-512 kernels
 * return the same bits as each other. */
#ifndef EQ_CORE_GEMM_KERNEL_H
#define EQ_CORE_GEMM_KERNEL_H

#include <stddef.h>

#include "equivar/status.h"

/* Upper bound on the K block length; see eq_gemm_k_block. */
#define EQ_GEMM_KC_MAX 256

/* Largest MR of any micro-kernel, for the kernels' accumulator arrays. */
#define EQ_GEMM_MR_MAX 16

/* Computes one MR x NR tile over one K block.
 *   a: packed op(A) panel, kc x MR, a[k * MR + r], rows past the matrix zero
 *   b: op(B) panel, kc x NR, b[k * ldb + j]: packed (ldb = NR, columns past
 *      the matrix zero) or, for a full-width tile of an untransposed B,
 *      read in place (ldb of B)
 *   c: the tile's top-left element in C, row stride ldc; only the first
 *      `rows` rows and `cols` columns are read or written
 *   first: nonzero for the first K block, which applies beta; later blocks
 *      add alpha * s to C. */
typedef void (*eq_gemm_micro_fn)(size_t kc, const float *a, const float *b, size_t ldb, float *c,
                                 size_t ldc, size_t rows, size_t cols, float alpha, float beta,
                                 int first);

/* One register tile shape of a kernel. */
typedef struct eq_gemm_tile {
    size_t mr;
    size_t nr;
    double speed; /* throughput relative to the kernel's fastest tile */
    eq_gemm_micro_fn micro;
} eq_gemm_tile;

/* A kernel is an instruction set with its tile shapes; the driver picks the
 * shape per call, which cannot change results (see above). */
typedef struct eq_gemm_kernel {
    const char *name; /* "generic", "avx2" or "avx512" */
    int fused;        /* 1 if s (+) a * b is a fused multiply-add */
    size_t tile_count;
    const eq_gemm_tile *tiles;
} eq_gemm_kernel;

extern const eq_gemm_kernel eq_gemm_kernel_generic;
#if defined(__x86_64__)
extern const eq_gemm_kernel eq_gemm_kernel_avx2;
extern const eq_gemm_kernel eq_gemm_kernel_avx512;
#endif

/* Returns the K block length for K >= 1: K is cut into ceil(K / KC_MAX)
 * blocks of this length, the last one possibly shorter. */
size_t eq_gemm_k_block(size_t k);

/* Selects the kernel eq_gemm uses from now on, for tests and benchmarks:
 * "generic", "avx2", "avx512", or NULL for the automatic choice (the best
 * one the CPU supports, unless the EQ_GEMM_KERNEL environment variable names
 * another supported one). Returns EQ_OK, or EQ_ERR_INVALID_ARGUMENT for an
 * unknown name or a kernel this CPU cannot run. Not safe while another
 * thread is inside eq_gemm. */
eq_status eq_gemm_force_kernel(const char *name);

/* Returns whether this CPU can run the named kernel (0 for unknown names). */
int eq_gemm_kernel_available(const char *name);

/* Returns the name of the kernel eq_gemm uses now. */
const char *eq_gemm_kernel_name(void);

/* Returns the kernel eq_gemm uses now (never NULL). */
const eq_gemm_kernel *eq_gemm_current_kernel(void);

/* Makes eq_gemm use tile shape `index` of whichever kernel is active, for
 * tests and benchmarks; -1 (or an index past the kernel's tile count)
 * restores the automatic choice. */
void eq_gemm_force_tile(int index);

/* Returns the forced tile of `kernel`, or NULL for the automatic choice. */
const eq_gemm_tile *eq_gemm_forced_tile(const eq_gemm_kernel *kernel);

/* Computes C with the element recipe above in plain scalar code, without
 * packing or allocation: the fallback when eq_gemm cannot get its packing
 * buffers, and the bitwise oracle in tests. Slow. fused selects the
 * rounding of (+), so fused = 1 matches the SIMD kernels and fused = 0 the
 * portable one. */
void eq_gemm_unpacked(int fused, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                      float alpha, const float *a, size_t lda, const float *b, size_t ldb,
                      float beta, float *c, size_t ldc);

/* eq_gemm_unpacked with row k of an untransposed B read from row
 * b_rows[k] (b_rows NULL: row k). */
void eq_gemm_unpacked_rows(int fused, int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                           const float *a, size_t lda, const float *b, size_t ldb, const size_t *b_rows, float beta,
                           float *c, size_t ldc);

#endif
