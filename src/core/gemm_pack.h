/* Packing of op(A) and op(B) panels for the GEMM micro-kernels (internal). */
#ifndef EQ_CORE_GEMM_PACK_H
#define EQ_CORE_GEMM_PACK_H

#include <stddef.h>

/* Packs rows [i0, i0 + rows) of op(A), K range [k0, k0 + kc), as one
 * micro-panel: out[p * mr + r] = op(A)[i0 + r][k0 + p], rows r >= `rows`
 * zero. rows <= mr. */
void eq_gemm_pack_a(int trans_a, const float *a, size_t lda, size_t i0, size_t rows, size_t k0,
                    size_t kc, size_t mr, float *out);

/* Packs columns [j0, j0 + cols) of op(B), K range [k0, k0 + kc), as
 * consecutive micro-panels of kc x nr floats: panel q at out + q * kc * nr
 * contains out[q * kc * nr + p * nr + j] = op(B)[k0 + p][j0 + q * nr + j],
 * columns past j0 + cols zero. With rows (untransposed B only), row k of
 * op(B) is row rows[k] of B. */
void eq_gemm_pack_b(int trans_b, const float *b, size_t ldb, const size_t *rows, size_t k0, size_t kc, size_t j0,
                    size_t cols, size_t nr, float *out);

#endif
