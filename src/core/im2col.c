/* Column (im2col) lowering of a 2-d convolution and its adjoint (col2im). */
#include "core/im2col.h"

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
 * [lo, hi). src_row is NULL when the whole output row reads padding. */
static void gather_segment(float *dst, const float *src_row, size_t begin, size_t end,
                           size_t lo, size_t hi, size_t stride, size_t kw, size_t pad)
{
    if (!src_row) {
        memset(dst, 0, (end - begin) * sizeof(float));
        return;
    }

    size_t a = min_size(max_size(lo, begin), end);
    size_t b = max_size(min_size(hi, end), a);
    memset(dst, 0, (a - begin) * sizeof(float));
    if (stride == 1 && b > a) {
        memcpy(dst + (a - begin), src_row + (a + kw - pad), (b - a) * sizeof(float));
    } else {
        for (size_t ow = a; ow < b; ow++)
            dst[ow - begin] = src_row[ow * stride + kw - pad];
    }
    memset(dst + (b - begin), 0, (end - b) * sizeof(float));
}

/* The adjoint of gather_segment: dx_row[ow * stride + kw - pad] += src for
 * ow in [max(lo, begin), min(hi, end)). */
static void scatter_segment(float *dx_row, const float *src, size_t begin, size_t end,
                            size_t lo, size_t hi, size_t stride, size_t kw, size_t pad)
{
    size_t a = max_size(lo, begin);
    size_t b = min_size(hi, end);

    if (a >= b)
        return;
    if (stride == 1) {
        float *dst = dx_row + (a + kw - pad);
        const float *from = src + (a - begin);
        for (size_t i = 0; a + i < b; i++)
            dst[i] += from[i];
    } else {
        for (size_t ow = a; ow < b; ow++)
            dx_row[ow * stride + kw - pad] += src[ow - begin];
    }
}

void eq_im2col(const eq_conv_geom *geom, const float *x, size_t p0, size_t p1,
               float *cols, size_t ld_cols)
{
    const size_t plane = geom->h * geom->w;

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
                for (size_t p = p0; p < p1;) {
                    size_t oh = p / geom->ow;
                    size_t begin = p % geom->ow;
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

void eq_col2im_add(const eq_conv_geom *geom, const float *cols, size_t ld_cols,
                   size_t p0, size_t p1, float *dx)
{
    const size_t plane = geom->h * geom->w;

    for (size_t c = 0; c < geom->c; c++) {
        float *dx_c = dx + c * plane; /* (H, W) */
        for (size_t kh = 0; kh < geom->kh; kh++) {
            size_t oh_lo, oh_hi;
            valid_range(kh, geom->pad, geom->stride, geom->h, geom->oh, &oh_lo, &oh_hi);
            for (size_t kw = 0; kw < geom->kw; kw++) {
                size_t ow_lo, ow_hi;
                valid_range(kw, geom->pad, geom->stride, geom->w, geom->ow, &ow_lo, &ow_hi);
                const float *row = cols + ((c * geom->kh + kh) * geom->kw + kw) * ld_cols;

                for (size_t p = p0; p < p1;) {
                    size_t oh = p / geom->ow;
                    size_t begin = p % geom->ow;
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
