/* AVX2 GEMM micro-kernels: 8-float vectors along N, FMA accumulators. */
#include "core/gemm_kernel.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define EQ_AVX2 __attribute__((target("avx2,fma")))
#define EQ_INLINE static inline __attribute__((always_inline))

/* Load/store mask for the v-th 8-float vector of a tile row: lane l is
 * active (sign bit set) when column v * 8 + l lies inside C. */
EQ_INLINE EQ_AVX2 __m256i column_mask(size_t cols, size_t v)
{
    size_t start = v * 8;
    int valid = 0;
    if (cols >= start + 8)
        valid = 8;
    else if (cols > start)
        valid = (int)(cols - start);
    __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);

    return _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), lanes);
}

/* The tile body for MR rows and NV vectors; MR and NV are constants at every
 * call site, so the accumulators stay in registers. */
EQ_INLINE EQ_AVX2 void micro_tile(size_t mr, size_t nv, size_t kc, const float *a, const float *b,
                                  size_t ldb, float *c, size_t ldc, size_t rows, size_t cols,
                                  float alpha, float beta, int first)
{
    __m256 acc[EQ_GEMM_MR_MAX][3];

#pragma GCC unroll 16
    for (size_t r = 0; r < mr; r++)
#pragma GCC unroll 4
        for (size_t v = 0; v < nv; v++)
            acc[r][v] = _mm256_setzero_ps();

    for (size_t p = 0; p < kc; p++) {
        __m256 bv[3];

#pragma GCC unroll 4
        for (size_t v = 0; v < nv; v++)
            bv[v] = _mm256_loadu_ps(b + v * 8);
#pragma GCC unroll 16
        for (size_t r = 0; r < mr; r++) {
            __m256 av = _mm256_broadcast_ss(a + r);
#pragma GCC unroll 4
            for (size_t v = 0; v < nv; v++)
                acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
        }
        a += mr;
        b += ldb;
    }

    /* The epilogue reads the sums back from memory: indexing registers by
     * the run-time row count would make the compiler keep the accumulators
     * in memory inside the k loop as well. */
    _Alignas(64) float sums[EQ_GEMM_MR_MAX * 3 * 8];
#pragma GCC unroll 16
    for (size_t r = 0; r < mr; r++)
#pragma GCC unroll 4
        for (size_t v = 0; v < nv; v++)
            _mm256_store_ps(sums + (r * nv + v) * 8, acc[r][v]);

    __m256 alpha_v = _mm256_set1_ps(alpha);
    __m256 beta_v = _mm256_set1_ps(beta);
    for (size_t r = 0; r < mr; r++) {
        if (r >= rows)
            break;
        float *row = c + r * ldc;
        for (size_t v = 0; v < nv; v++) {
            __m256i mask = column_mask(cols, v);
            __m256 scaled = _mm256_mul_ps(alpha_v, _mm256_load_ps(sums + (r * nv + v) * 8));
            __m256 out;

            if (first && beta == 0.0f) {
                out = scaled;
            } else if (first) {
                __m256 beta_c = _mm256_mul_ps(beta_v, _mm256_maskload_ps(row + v * 8, mask));
                out = _mm256_add_ps(scaled, beta_c);
            } else {
                out = _mm256_add_ps(_mm256_maskload_ps(row + v * 8, mask), scaled);
            }
            _mm256_maskstore_ps(row + v * 8, mask, out);
        }
    }
}

#define EQ_DEFINE_MICRO(MR, NV)                                                                    \
    static EQ_AVX2 void micro_##MR##x##NV(size_t kc, const float *a, const float *b, size_t ldb,   \
                                          float *c, size_t ldc, size_t rows, size_t cols,          \
                                          float alpha, float beta, int first)                      \
    {                                                                                              \
        micro_tile(MR, NV, kc, a, b, ldb, c, ldc, rows, cols, alpha, beta, first);                 \
    }

EQ_DEFINE_MICRO(6, 2)
EQ_DEFINE_MICRO(4, 3)
EQ_DEFINE_MICRO(8, 1)

/* Relative speeds: in-cache throughput of each tile, from gemm_bench
 * --tiles --cpu-time on the same AVX-512 Xeon running this kernel (6x16 at
 * 100-107 GFLOP/s). */
static const eq_gemm_tile avx2_tiles[] = {
    { 6, 16, 1.00, micro_6x2 },
    { 4, 24, 0.96, micro_4x3 },
    { 8, 8, 0.91, micro_8x1 },
};

const eq_gemm_kernel eq_gemm_kernel_avx2 = {
    .name = "avx2",
    .fused = 1,
    .tile_count = sizeof avx2_tiles / sizeof avx2_tiles[0],
    .tiles = avx2_tiles,
};

#endif
