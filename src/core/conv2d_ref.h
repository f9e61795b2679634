/* Direct-loop 2-d convolution, forward and backward: the test reference for conv2d. */
#ifndef EQ_CORE_CONV2D_REF_H
#define EQ_CORE_CONV2D_REF_H

#include <stddef.h>

/* Sizes of a convolution (N, IC, H, W) -> (N, OC, OH, OW) with a KH x KW
 * kernel, stride and zero padding, where OH = (H + 2 pad - KH) / stride + 1. */
typedef struct eq_conv2d_ref_dims {
    size_t n, ic, oc;
    size_t h, w;
    size_t kh, kw;
    size_t stride, pad;
} eq_conv2d_ref_dims;

/* y (N, OC, OH, OW) = conv(x (N, IC, H, W), weight (OC, IC, KH, KW)) + bias (OC),
 * every output summed in double. */
void eq_conv2d_ref_forward(const eq_conv2d_ref_dims *dims, const float *x, const float *weight,
                           const float *bias, float *y);

/* Computes the gradients for dy (N, OC, OH, OW): overwrites dx (N, IC, H, W)
 * unless it is NULL, and adds into dweight (OC, IC, KH, KW) and dbias (OC).
 * Every gradient element is summed in double before it is stored. */
void eq_conv2d_ref_backward(const eq_conv2d_ref_dims *dims, const float *x, const float *weight,
                            const float *dy, float *dx, float *dweight, float *dbias);

#endif
