/* Column (im2col) lowering of a 2-d convolution and its adjoint (col2im). */
#ifndef EQ_CORE_IM2COL_H
#define EQ_CORE_IM2COL_H

#include <stddef.h>

/* Geometry of one image of a convolution: input (C, H, W), kernel KH x KW,
 * stride and zero padding, output OH x OW. The caller fills oh and ow as
 * (H + 2 pad - KH) / stride + 1 and the same for W, with the padded input at
 * least as large as the kernel. */
typedef struct eq_conv_geom {
    size_t c, h, w;
    size_t kh, kw;
    size_t stride, pad;
    size_t oh, ow;
} eq_conv_geom;

/* Writes columns p0..p1-1 of the column matrix of one image x (C, H, W).
 * The column matrix has C * KH * KW rows in (c, kh, kw) order, the order of
 * a flattened (OC, IC, KH, KW) weight row, and one column per output
 * position p = oh * OW + ow. Column p lands at cols[row * ld_cols + p - p0],
 * and positions in the padding read as zero. Requires p0 <= p1 <= OH * OW and
 * ld_cols >= p1 - p0. */
void eq_im2col(const eq_conv_geom *geom, const float *x, size_t p0, size_t p1,
               float *cols, size_t ld_cols);

/* Adds columns p0..p1-1 of a column matrix, laid out as eq_im2col writes it,
 * into the image gradient dx (C, H, W): the adjoint of eq_im2col. Entries
 * that fall into the padding are dropped. The additions into one dx element
 * run in (kh, kw, p) order, so the result depends only on the arguments. */
void eq_col2im_add(const eq_conv_geom *geom, const float *cols, size_t ld_cols,
                   size_t p0, size_t p1, float *dx);

#endif
