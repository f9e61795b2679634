/* AVX-512 GEMM micro-kernels: 16-float vectors along N, FMA accumulators. */
#include "core/gemm_kernel.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define EQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define EQ_INLINE static inline __attribute__((always_inline))

/* Lanes of the v-th 16-float vector of a tile row that lie inside C. */
EQ_INLINE EQ_AVX512 __mmask16 column_mask(size_t cols, size_t v)
{
    size_t start = v * 16;

    if (cols <= start)
        return 0;
    if (cols - start >= 16)
        return 0xFFFF;
    return (__mmask16)((1u << (cols - start)) - 1u);
}

/* The tile body for MR rows and NV vectors; MR and NV are constants at every
 * call site, so the accumulators stay in registers. */
EQ_INLINE EQ_AVX512 void micro_tile(size_t mr, size_t nv, size_t kc, const float *a, const float *b,
                                    size_t ldb, float *c, size_t ldc, size_t rows, size_t cols,
                                    float alpha, float beta, int first)
{
    __m512 acc[EQ_GEMM_MR_MAX][4];

#pragma GCC unroll 16
    for (size_t r = 0; r < mr; r++)
#pragma GCC unroll 4
        for (size_t v = 0; v < nv; v++)
            acc[r][v] = _mm512_setzero_ps();

    for (size_t p = 0; p < kc; p++) {
        __m512 bv[4];

#pragma GCC unroll 4
        for (size_t v = 0; v < nv; v++)
            bv[v] = _mm512_loadu_ps(b + v * 16);
#pragma GCC unroll 16
        for (size_t r = 0; r < mr; r++) {
            __m512 av = _mm512_set1_ps(a[r]);
#pragma GCC unroll 4
            for (size_t v = 0; v < nv; v++)
                acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
        a += mr;
        b += ldb;
    }

    /* The epilogue reads the sums back from memory: indexing registers by
     * the run-time row count would make the compiler keep the accumulators
     * in memory inside the k loop as well. */
    _Alignas(64) float sums[EQ_GEMM_MR_MAX * 4 * 16];
#pragma GCC unroll 16
    for (size_t r = 0; r < mr; r++)
#pragma GCC unroll 4
        for (size_t v = 0; v < nv; v++)
            _mm512_store_ps(sums + (r * nv + v) * 16, acc[r][v]);

    __m512 alpha_v = _mm512_set1_ps(alpha);
    __m512 beta_v = _mm512_set1_ps(beta);
    for (size_t r = 0; r < mr; r++) {
        if (r >= rows)
            break;
        float *row = c + r * ldc;
        for (size_t v = 0; v < nv; v++) {
            __mmask16 mask = column_mask(cols, v);
            __m512 scaled = _mm512_mul_ps(alpha_v, _mm512_load_ps(sums + (r * nv + v) * 16));
            __m512 out;

            if (first && beta == 0.0f) {
                out = scaled;
            } else if (first) {
                __m512 beta_c = _mm512_mul_ps(beta_v, _mm512_maskz_loadu_ps(mask, row + v * 16));
                out = _mm512_add_ps(scaled, beta_c);
            } else {
                out = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, row + v * 16), scaled);
            }
            _mm512_mask_storeu_ps(row + v * 16, mask, out);
        }
    }
}

#define EQ_DEFINE_MICRO(MR, NV)                                                                    \
    static EQ_AVX512 void micro_##MR##x##NV(size_t kc, const float *a, const float *b, size_t ldb, \
                                            float *c, size_t ldc, size_t rows, size_t cols,        \
                                            float alpha, float beta, int first)                    \
    {                                                                                              \
        micro_tile(MR, NV, kc, a, b, ldb, c, ldc, rows, cols, alpha, beta, first);                 \
    }

EQ_DEFINE_MICRO(8, 3)
EQ_DEFINE_MICRO(14, 2)
EQ_DEFINE_MICRO(8, 2)
EQ_DEFINE_MICRO(16, 1)

/* Relative speeds: in-cache throughput of each tile, from gemm_bench
 * --tiles --cpu-time on a 2-core AVX-512 Xeon (Sapphire Rapids class, 14x32
 * at 180-200 GFLOP/s). The driver weighs them against zero padding. */
static const eq_gemm_tile avx512_tiles[] = {
    { 14, 32, 1.00, micro_14x2 },
    { 8, 32, 0.97, micro_8x2 },
    { 16, 16, 0.91, micro_16x1 },
    { 8, 48, 0.88, micro_8x3 },
};

const eq_gemm_kernel eq_gemm_kernel_avx512 = {
    .name = "avx512",
    .fused = 1,
    .tile_count = sizeof avx512_tiles / sizeof avx512_tiles[0],
    .tiles = avx512_tiles,
};

#endif
