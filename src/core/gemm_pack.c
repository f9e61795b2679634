/* Packing of op(A) and op(B) panels: plain copies where the source runs
 * along the panel's rows, 4 x 4 transposes where it runs along K. */
#include "core/gemm_pack.h"

#include <string.h>

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

/* Transposes a rows x cols block: dst[c * ldd + r] = src[r * lds + c].
 * SSE (baseline on x86-64) moves 4 x 4 sub-blocks; the edges are scalar. */
static void transpose(const float *src, size_t lds, size_t rows, size_t cols, float *dst,
                      size_t ldd)
{
    size_t r = 0;

#if defined(__x86_64__)
    for (; r + 4 <= rows; r += 4) {
        const float *s = src + r * lds;
        size_t c = 0;

        for (; c + 4 <= cols; c += 4) {
            __m128 row0 = _mm_loadu_ps(s + c);
            __m128 row1 = _mm_loadu_ps(s + lds + c);
            __m128 row2 = _mm_loadu_ps(s + 2 * lds + c);
            __m128 row3 = _mm_loadu_ps(s + 3 * lds + c);
            _MM_TRANSPOSE4_PS(row0, row1, row2, row3);
            _mm_storeu_ps(dst + c * ldd + r, row0);
            _mm_storeu_ps(dst + (c + 1) * ldd + r, row1);
            _mm_storeu_ps(dst + (c + 2) * ldd + r, row2);
            _mm_storeu_ps(dst + (c + 3) * ldd + r, row3);
        }
        for (; c < cols; c++)
            for (size_t q = 0; q < 4; q++)
                dst[c * ldd + r + q] = s[q * lds + c];
    }
#endif

    for (; r < rows; r++)
        for (size_t c = 0; c < cols; c++)
            dst[c * ldd + r] = src[r * lds + c];
}

/* Zeroes columns [from, to) of a count x ld row-major block. */
static void zero_columns(float *dst, size_t ld, size_t count, size_t from, size_t to)
{
    if (from == to)
        return;
    for (size_t p = 0; p < count; p++)
        memset(dst + p * ld + from, 0, (to - from) * sizeof *dst);
}

void eq_gemm_pack_a(int trans_a, const float *a, size_t lda, size_t i0, size_t rows, size_t k0,
                    size_t kc, size_t mr, float *out)
{
    if (trans_a) {
        /* A is K x M: row k0 + p of A contains the panel's rows contiguously. */
        for (size_t p = 0; p < kc; p++)
            memcpy(out + p * mr, a + (k0 + p) * lda + i0, rows * sizeof *out);
    } else {
        transpose(a + i0 * lda + k0, lda, rows, kc, out, mr);
    }
    zero_columns(out, mr, kc, rows, mr);
}

void eq_gemm_pack_b(int trans_b, const float *b, size_t ldb, const size_t *rows, size_t k0, size_t kc, size_t j0,
                    size_t cols, size_t nr, float *out)
{
    size_t panels = (cols + nr - 1) / nr;

    if (!trans_b) {
        /* Row by row across all panels: each row of B is read as one
         * sequential run, which the hardware prefetchers stream well. */
        for (size_t p = 0; p < kc; p++) {
            const float *src = b + (rows ? rows[k0 + p] : k0 + p) * ldb + j0;
            for (size_t q = 0; q < panels; q++) {
                size_t width = cols - q * nr < nr ? cols - q * nr : nr;
                memcpy(out + q * kc * nr + p * nr, src + q * nr, width * sizeof *out);
            }
        }
    }

    for (size_t q = 0; q < panels; q++) {
        size_t first = j0 + q * nr;
        size_t width = cols - q * nr < nr ? cols - q * nr : nr;
        float *panel = out + q * kc * nr;

        /* B is N x K: row `first + j` of B is column j of the panel. */
        if (trans_b)
            transpose(b + first * ldb + k0, ldb, width, kc, panel, nr);
        zero_columns(panel, nr, kc, width, nr);
    }
}
