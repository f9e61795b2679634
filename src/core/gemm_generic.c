/* Portable C GEMM micro-kernel, the only one on non-x86 targets. Plain
 * multiply and add (no fmaf, a slow library call without hardware FMA);
 * the compiler vectorises the column loops with the baseline SIMD. */
#include "core/gemm_kernel.h"

#define MR 4
#define NR 8

static void micro_generic(size_t kc, const float *a, const float *b, size_t ldb, float *c,
                          size_t ldc, size_t rows, size_t cols, float alpha, float beta, int first)
{
    float acc[MR][NR] = { { 0.0f } };

    for (size_t p = 0; p < kc; p++) {
        for (size_t r = 0; r < MR; r++) {
            for (size_t j = 0; j < NR; j++) {
                float product = a[r] * b[j];
                acc[r][j] = acc[r][j] + product;
            }
        }
        a += MR;
        b += ldb;
    }

    for (size_t r = 0; r < rows; r++) {
        float *row = c + r * ldc;
        for (size_t j = 0; j < cols; j++) {
            float scaled = alpha * acc[r][j];
            if (!first)
                row[j] = row[j] + scaled;
            else if (beta == 0.0f)
                row[j] = scaled;
            else
                row[j] = scaled + beta * row[j];
        }
    }
}

static const eq_gemm_tile generic_tiles[] = {
    { MR, NR, 1.0, micro_generic },
};

const eq_gemm_kernel eq_gemm_kernel_generic = {
    .name = "generic",
    .fused = 0,
    .tile_count = sizeof generic_tiles / sizeof generic_tiles[0],
    .tiles = generic_tiles,
};
