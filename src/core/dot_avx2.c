/* AVX2 kernel of the row products: each group of 16 lanes as two 8-float
 * vectors, in tiles of 2 rows of A by 2 rows of B, so that it returns the
 * bits of the AVX-512 kernel. */
#include "core/dot.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define EQ_AVX2 __attribute__((target("avx2,fma")))
#define EQ_INLINE static inline __attribute__((always_inline))

#define TILE_M 2
#define TILE_N 2

/* The tree of the recipe on lanes 0-7 (lo) and 8-15 (hi). */
EQ_INLINE EQ_AVX2 float tree_total(__m256 lo, __m256 hi)
{
    __m256 r = _mm256_add_ps(lo, hi);
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
    __m128 u = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 1)));
}

/* Load mask for lanes [first, first + 8) of a group with `valid` lanes
 * inside k: a lane is loaded when its sign bit is set. */
EQ_INLINE EQ_AVX2 __m256i lane_mask(size_t valid, size_t first)
{
    int count = 0;
    if (valid >= first + 8)
        count = 8;
    else if (valid > first)
        count = (int)(valid - first);

    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* As the AVX-512 tile: rows past the edge repeat the last row, masked
 * lanes load zeros, which leave the lane sums as they are. */
static EQ_AVX2 void dot_tile(size_t i0, size_t rows, size_t j0, size_t cols, size_t k, const eq_dot_term *terms,
                             size_t term_count, int accumulate, float *c, size_t ldc)
{
    const size_t full = k / 16 * 16;
    const __m256i mask_lo = lane_mask(k - full, 0), mask_hi = lane_mask(k - full, 8);
    __m256 lo[TILE_M][TILE_N], hi[TILE_M][TILE_N];

    for (size_t r = 0; r < TILE_M; r++) {
        for (size_t q = 0; q < TILE_N; q++) {
            lo[r][q] = _mm256_setzero_ps();
            hi[r][q] = _mm256_setzero_ps();
        }
    }

    for (size_t t = 0; t < term_count; t++) {
        const float *a[TILE_M], *b[TILE_N];
        for (size_t r = 0; r < TILE_M; r++)
            a[r] = terms[t].a + (i0 + (r < rows ? r : rows - 1)) * terms[t].lda;
        for (size_t q = 0; q < TILE_N; q++)
            b[q] = terms[t].b + (j0 + (q < cols ? q : cols - 1)) * terms[t].ldb;

        /* Whole groups of 16, then the group that k ends in, masked. */
        for (size_t p = 0; p < k; p += 16) {
            const int whole = p < full;
            __m256 a_lo[TILE_M], a_hi[TILE_M], b_lo[TILE_N], b_hi[TILE_N];
            for (size_t r = 0; r < TILE_M; r++) {
                a_lo[r] = whole ? _mm256_loadu_ps(a[r] + p) : _mm256_maskload_ps(a[r] + p, mask_lo);
                a_hi[r] = whole ? _mm256_loadu_ps(a[r] + p + 8) : _mm256_maskload_ps(a[r] + p + 8, mask_hi);
            }
            for (size_t q = 0; q < TILE_N; q++) {
                b_lo[q] = whole ? _mm256_loadu_ps(b[q] + p) : _mm256_maskload_ps(b[q] + p, mask_lo);
                b_hi[q] = whole ? _mm256_loadu_ps(b[q] + p + 8) : _mm256_maskload_ps(b[q] + p + 8, mask_hi);
            }
            for (size_t r = 0; r < TILE_M; r++) {
                for (size_t q = 0; q < TILE_N; q++) {
                    lo[r][q] = _mm256_fmadd_ps(a_lo[r], b_lo[q], lo[r][q]);
                    hi[r][q] = _mm256_fmadd_ps(a_hi[r], b_hi[q], hi[r][q]);
                }
            }
        }
    }

    for (size_t r = 0; r < rows; r++) {
        for (size_t q = 0; q < cols; q++) {
            float total = tree_total(lo[r][q], hi[r][q]);
            float *out = c + (i0 + r) * ldc + j0 + q;
            *out = accumulate ? *out + total : total;
        }
    }
}

void eq_dot_block_avx2(size_t i0, size_t i1, size_t j0, size_t j1, size_t k, const eq_dot_term *terms,
                       size_t term_count, int accumulate, float *c, size_t ldc)
{
    for (size_t j = j0; j < j1; j += TILE_N) {
        size_t cols = j1 - j < TILE_N ? j1 - j : TILE_N;
        for (size_t i = i0; i < i1; i += TILE_M) {
            size_t rows = i1 - i < TILE_M ? i1 - i : TILE_M;
            dot_tile(i, rows, j, cols, k, terms, term_count, accumulate, c, ldc);
        }
    }
}

#endif
