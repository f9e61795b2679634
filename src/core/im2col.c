/* Column (im2col) lowering of a 2-d convolution and its adjoint (col2im). */
#include "core/im2col.h"

#include "core/cpu.h"

#include <stddef.h>
#include <string.h>


static size_t ceil_div(size_t a, size_t b)
{
    return a / b + (a % b != 0);
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

static size_t max_size(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* Finds the output indices o in [0, out) whose input coordinate
 * o * stride + k - pad lies inside [0, size), as the range [*lo, *hi). The
 * other outputs read the zero padding for kernel offset k. */
static void valid_range(size_t k, size_t pad, size_t stride, size_t size, size_t out,
                        size_t *lo, size_t *hi)
{
    size_t first = k >= pad ? 0 : ceil_div(pad - k, stride);
    size_t end = pad + size > k ? ceil_div(pad + size - k, stride) : 0;

    first = min_size(first, out);
    end = min_size(end, out);
    *lo = first;
    *hi = max_size(first, end);
}

/* One output row segment ow in [begin, end) of one column-matrix row:
 * dst[ow - begin] = input row at ow * stride + kw - pad, zero outside
 * [lo, hi). src_row is NULL when the whole output row reads padding.
 * Plain loops rather than memcpy and memset calls, because segments are
 * one output row long (often under 32 floats), where a call costs more
 * than the copy. */
static inline void gather_segment(float *dst, const float *src_row, size_t begin, size_t end,
                                  size_t lo, size_t hi, size_t stride, size_t kw, size_t pad)
{
    if (!src_row) {
        for (size_t ow = begin; ow < end; ow++)
            dst[ow - begin] = 0.0f;
        return;
    }

    size_t a = min_size(max_size(lo, begin), end);
    size_t b = max_size(min_size(hi, end), a);
    for (size_t ow = begin; ow < a; ow++)
        dst[ow - begin] = 0.0f;
    if (stride == 1) {
        for (size_t ow = a; ow < b; ow++)
            dst[ow - begin] = src_row[ow + kw - pad];
    } else {
        for (size_t ow = a; ow < b; ow++)
            dst[ow - begin] = src_row[ow * stride + kw - pad];
    }
    for (size_t ow = b; ow < end; ow++)
        dst[ow - begin] = 0.0f;
}

/* The adjoint of gather_segment: dx_row[ow * stride + kw - pad] += src for
 * ow in [max(lo, begin), min(hi, end)). */
static inline void scatter_segment(float *dx_row, const float *src, size_t begin, size_t end,
                                   size_t lo, size_t hi, size_t stride, size_t kw, size_t pad)
{
    size_t a = max_size(lo, begin);
    size_t b = min_size(hi, end);

    if (a >= b)
        return;
    if (stride == 1) {
        for (size_t ow = a; ow < b; ow++)
            dx_row[ow + kw - pad] += src[ow - begin];
    } else {
        for (size_t ow = a; ow < b; ow++)
            dx_row[ow * stride + kw - pad] += src[ow - begin];
    }
}

/* Returns 1 for stride 1 with an output as large as the input ("same"
 * padding), where output position p and input offset p + d line up for
 * every kernel offset d. The kernel offsets then run from -pad to pad, and
 * the shifted-plane paths assume that each of them is smaller than the
 * image in both directions. */
static int same_stride1(const eq_conv_geom *geom)
{
    return geom->stride == 1 && geom->oh == geom->h && geom->ow == geom->w && geom->pad < geom->h &&
           geom->pad < geom->w;
}

/* How row (c, kh, kw) of a same_stride1 column matrix reads the input
 * plane of channel c, for output positions [p0, p1). */
typedef struct plane_shift {
    ptrdiff_t d;           /* output position p reads input offset p + d, d = (kh - pad) * W + (kw - pad) */
    size_t a, b;           /* positions in [p0, p1) on output rows that read input rows inside the image */
    size_t col_lo, col_hi; /* columns of an output row that read the image, not wrapped around a row edge */
} plane_shift;

/* Zeroes columns [from, to) of the output rows in positions [a, b) of a
 * column-matrix row that starts at position p0. The loop runs down each
 * column, W floats a step: along a row the runs are at most pad floats
 * long, and the compiler would turn each into a memset call. */
static void zero_columns(float *row, size_t p0, size_t w, size_t a, size_t b, size_t from, size_t to)
{
    for (size_t ow = from; ow < to; ow++) {
        for (size_t p = (a / w) * w + ow; p < b; p += w) {
            if (p >= a)
                row[p - p0] = 0.0f;
        }
    }
}

/* Returns the plane_shift of row (c, kh, kw), the same for every c. */
static plane_shift shift_of(const eq_conv_geom *geom, size_t kh, size_t kw, size_t p0, size_t p1)
{
    const size_t w = geom->w;
    const ptrdiff_t dh = (ptrdiff_t)kh - (ptrdiff_t)geom->pad;
    const ptrdiff_t dw = (ptrdiff_t)kw - (ptrdiff_t)geom->pad;
    const size_t r_lo = dh < 0 ? (size_t)-dh : 0;
    const size_t r_hi = dh > 0 ? geom->h - (size_t)dh : geom->h;
    plane_shift shift;

    shift.d = dh * (ptrdiff_t)w + dw;
    shift.a = min_size(max_size(r_lo * w, p0), p1);
    shift.b = max_size(min_size(r_hi * w, p1), shift.a);
    shift.col_lo = dw < 0 ? (size_t)-dw : 0;
    shift.col_hi = dw > 0 ? w - (size_t)dw : w;
    return shift;
}

/* im2col for same_stride1 geometries: row (c, kh, kw) of the column matrix
 * is the input plane shifted by d, with zeros where the source row is
 * outside the image and in the columns that the shift wraps around a row
 * edge. One long copy per row replaces a copy per output row. */
static void im2col_same_stride1(const eq_conv_geom *geom, const float *x, size_t p0, size_t p1,
                                float *cols, size_t ld_cols)
{
    const size_t w = geom->w, plane = geom->h * geom->w;

    for (size_t c = 0; c < geom->c; c++) {
        const float *x_c = x + c * plane;
        for (size_t kh = 0; kh < geom->kh; kh++) {
            for (size_t kw = 0; kw < geom->kw; kw++) {
                const plane_shift s = shift_of(geom, kh, kw, p0, p1);
                float *row = cols + ((c * geom->kh + kh) * geom->kw + kw) * ld_cols;

                /* [start, end): the positions in [a, b) whose source offset
                 * p + d lies inside the plane. */
                size_t start = s.d < 0 ? max_size(s.a, min_size((size_t)-s.d, s.b)) : s.a;
                size_t end = s.d > 0 ? max_size(min_size(s.b, plane - (size_t)s.d), start) : s.b;

                /* Library calls here: the runs are hundreds of floats long,
                 * and memcpy uses the widest vectors the CPU has. */
                memset(row, 0, (start - p0) * sizeof(float));
                if (end > start)
                    memcpy(row + (start - p0), x_c + ((ptrdiff_t)start + s.d), (end - start) * sizeof(float));
                memset(row + (end - p0), 0, (p1 - end) * sizeof(float));

                /* The wrapped columns read padding. */
                zero_columns(row, p0, w, s.a, s.b, 0, s.col_lo);
                zero_columns(row, p0, w, s.a, s.b, s.col_hi, w);
            }
        }
    }
}

void eq_im2col(const eq_conv_geom *geom, const float *x, size_t p0, size_t p1,
               float *cols, size_t ld_cols)
{
    const size_t plane = geom->h * geom->w;

    if (same_stride1(geom)) {
        im2col_same_stride1(geom, x, p0, p1, cols, ld_cols);
        return;
    }
    const size_t oh_first = p0 / geom->ow, ow_first = p0 % geom->ow;

    for (size_t c = 0; c < geom->c; c++) {
        const float *x_c = x + c * plane; /* (H, W) */
        for (size_t kh = 0; kh < geom->kh; kh++) {
            size_t oh_lo, oh_hi;
            valid_range(kh, geom->pad, geom->stride, geom->h, geom->oh, &oh_lo, &oh_hi);
            for (size_t kw = 0; kw < geom->kw; kw++) {
                size_t ow_lo, ow_hi;
                valid_range(kw, geom->pad, geom->stride, geom->w, geom->ow, &ow_lo, &ow_hi);
                float *row = cols + ((c * geom->kh + kh) * geom->kw + kw) * ld_cols;

                /* [p0, p1) may start and end inside an output row. */
                size_t oh = oh_first, begin = ow_first;
                for (size_t p = p0; p < p1; oh++, begin = 0) {
                    size_t end = min_size(geom->ow, begin + (p1 - p));
                    const float *src_row = NULL;
                    if (oh >= oh_lo && oh < oh_hi)
                        src_row = x_c + (oh * geom->stride + kh - geom->pad) * geom->w;
                    gather_segment(row + (p - p0), src_row, begin, end, ow_lo, ow_hi,
                                   geom->stride, kw, geom->pad);
                    p += end - begin;
                }
            }
        }
    }
}

/* Adds src[0, n) to dst[0, n). */
static inline void add_run(float *restrict dst, const float *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}

/* col2im for same_stride1 geometries, the adjoint of im2col_same_stride1.
 * Row (c, kh, kw) adds to the input plane shifted by d. With no horizontal
 * shift that is one long run. Otherwise each output row skips the columns
 * that wrapped into the neighbouring row, which read padding. */
static void col2im_same_stride1(const eq_conv_geom *geom, const float *cols, size_t ld_cols, size_t p0,
                                size_t p1, float *dx)
{
    const size_t w = geom->w, plane = geom->h * geom->w;

    for (size_t c = 0; c < geom->c; c++) {
        float *dx_c = dx + c * plane;
        for (size_t kh = 0; kh < geom->kh; kh++) {
            for (size_t kw = 0; kw < geom->kw; kw++) {
                const plane_shift s = shift_of(geom, kh, kw, p0, p1);
                const float *row = cols + ((c * geom->kh + kh) * geom->kw + kw) * ld_cols;

                if (s.col_lo == 0 && s.col_hi == w) {
                    add_run(dx_c + ((ptrdiff_t)s.a + s.d), row + (s.a - p0), s.b - s.a);
                    continue;
                }
                for (size_t oh = s.a / w; oh * w < s.b; oh++) {
                    size_t from = max_size(s.a, oh * w + s.col_lo);
                    size_t to = min_size(s.b, oh * w + s.col_hi);
                    if (to > from)
                        add_run(dx_c + ((ptrdiff_t)from + s.d), row + (from - p0), to - from);
                }
            }
        }
    }
}

EQ_VECTOR_CLONES
void eq_col2im_add(const eq_conv_geom *geom, const float *cols, size_t ld_cols,
                   size_t p0, size_t p1, float *dx)
{
    const size_t plane = geom->h * geom->w;

    if (same_stride1(geom)) {
        col2im_same_stride1(geom, cols, ld_cols, p0, p1, dx);
        return;
    }
    const size_t oh_first = p0 / geom->ow, ow_first = p0 % geom->ow;

    for (size_t c = 0; c < geom->c; c++) {
        float *dx_c = dx + c * plane; /* (H, W) */
        for (size_t kh = 0; kh < geom->kh; kh++) {
            size_t oh_lo, oh_hi;
            valid_range(kh, geom->pad, geom->stride, geom->h, geom->oh, &oh_lo, &oh_hi);
            for (size_t kw = 0; kw < geom->kw; kw++) {
                size_t ow_lo, ow_hi;
                valid_range(kw, geom->pad, geom->stride, geom->w, geom->ow, &ow_lo, &ow_hi);
                const float *row = cols + ((c * geom->kh + kh) * geom->kw + kw) * ld_cols;

                size_t oh = oh_first, begin = ow_first;
                for (size_t p = p0; p < p1; oh++, begin = 0) {
                    size_t end = min_size(geom->ow, begin + (p1 - p));
                    if (oh >= oh_lo && oh < oh_hi) {
                        float *dx_row = dx_c + (oh * geom->stride + kh - geom->pad) * geom->w;
                        scatter_segment(dx_row, row + (p - p0), begin, end, ow_lo, ow_hi,
                                        geom->stride, kw, geom->pad);
                    }
                    p += end - begin;
                }
            }
        }
    }
}
