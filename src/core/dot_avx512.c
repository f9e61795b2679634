/* AVX-512 kernel of the row products: 16-float vectors along k, one per
 * lane group, in tiles of 4 rows of A by 5 rows of B. */
#include "core/dot.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define EQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define EQ_INLINE static inline __attribute__((always_inline))

/* 20 accumulators and 9 loaded vectors fit the 32 registers. 4 x 6 spilled
 * and ran about 5% slower. */
#define TILE_M 4
#define TILE_N 5

/* The tree of the recipe: lanes l + 8, then l + 4, l + 2 and l + 1. */
EQ_INLINE EQ_AVX512 float tree_total(__m512 s)
{
    __m256 r = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
    __m128 u = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 1)));
}

/* Computes the tile of rows [i0, i0 + rows) and columns [j0, j0 + cols),
 * rows <= TILE_M and cols <= TILE_N. Rows past the edge repeat the last
 * row, so every tile runs the full register block; their sums are
 * dropped. Masked lanes past k load zeros, and s + 0 * 0 leaves a lane sum
 * as it is (a sum that starts at +0 never becomes -0). */
static EQ_AVX512 void dot_tile(size_t i0, size_t rows, size_t j0, size_t cols, size_t k, const eq_dot_term *terms,
                               size_t term_count, int accumulate, float *c, size_t ldc)
{
    const size_t full = k / 16 * 16;
    const __mmask16 tail = (__mmask16)((1u << (k - full)) - 1u);
    __m512 acc[TILE_M][TILE_N];

#pragma GCC unroll 4
    for (size_t r = 0; r < TILE_M; r++)
#pragma GCC unroll 5
        for (size_t q = 0; q < TILE_N; q++)
            acc[r][q] = _mm512_setzero_ps();

    for (size_t t = 0; t < term_count; t++) {
        const float *a[TILE_M], *b[TILE_N];
#pragma GCC unroll 4
        for (size_t r = 0; r < TILE_M; r++)
            a[r] = terms[t].a + (i0 + (r < rows ? r : rows - 1)) * terms[t].lda;
#pragma GCC unroll 5
        for (size_t q = 0; q < TILE_N; q++)
            b[q] = terms[t].b + (j0 + (q < cols ? q : cols - 1)) * terms[t].ldb;

#pragma GCC unroll 2
        for (size_t p = 0; p < full; p += 16) {
            __m512 av[TILE_M], bv[TILE_N];
#pragma GCC unroll 4
            for (size_t r = 0; r < TILE_M; r++)
                av[r] = _mm512_loadu_ps(a[r] + p);
#pragma GCC unroll 5
            for (size_t q = 0; q < TILE_N; q++)
                bv[q] = _mm512_loadu_ps(b[q] + p);
#pragma GCC unroll 4
            for (size_t r = 0; r < TILE_M; r++)
#pragma GCC unroll 5
                for (size_t q = 0; q < TILE_N; q++)
                    acc[r][q] = _mm512_fmadd_ps(av[r], bv[q], acc[r][q]);
        }
        if (tail) {
            __m512 av[TILE_M], bv[TILE_N];
#pragma GCC unroll 4
            for (size_t r = 0; r < TILE_M; r++)
                av[r] = _mm512_maskz_loadu_ps(tail, a[r] + full);
#pragma GCC unroll 5
            for (size_t q = 0; q < TILE_N; q++)
                bv[q] = _mm512_maskz_loadu_ps(tail, b[q] + full);
#pragma GCC unroll 4
            for (size_t r = 0; r < TILE_M; r++)
#pragma GCC unroll 5
                for (size_t q = 0; q < TILE_N; q++)
                    acc[r][q] = _mm512_fmadd_ps(av[r], bv[q], acc[r][q]);
        }
    }

    /* The sums go through memory, because indexing registers by the
     * run-time tile size would keep the accumulators in memory inside the
     * loop as well. */
    _Alignas(64) float sums[TILE_M * TILE_N * 16];
#pragma GCC unroll 4
    for (size_t r = 0; r < TILE_M; r++)
#pragma GCC unroll 5
        for (size_t q = 0; q < TILE_N; q++)
            _mm512_store_ps(sums + (r * TILE_N + q) * 16, acc[r][q]);

    for (size_t r = 0; r < rows; r++) {
        for (size_t q = 0; q < cols; q++) {
            float total = tree_total(_mm512_load_ps(sums + (r * TILE_N + q) * 16));
            float *out = c + (i0 + r) * ldc + j0 + q;
            *out = accumulate ? *out + total : total;
        }
    }
}

void eq_dot_block_avx512(size_t i0, size_t i1, size_t j0, size_t j1, size_t k, const eq_dot_term *terms,
                         size_t term_count, int accumulate, float *c, size_t ldc)
{
    /* Column tiles outside: the B rows of a tile stay in L1 while the
     * tiles of A rows stream past them. */
    for (size_t j = j0; j < j1; j += TILE_N) {
        size_t cols = j1 - j < TILE_N ? j1 - j : TILE_N;
        for (size_t i = i0; i < i1; i += TILE_M) {
            size_t rows = i1 - i < TILE_M ? i1 - i : TILE_M;
            dot_tile(i, rows, j, cols, k, terms, term_count, accumulate, c, ldc);
        }
    }
}

#endif
