/* Direct-loop 2-d convolution, forward and backward, kept as the test reference. */
#include "core/conv2d_ref.h"

static size_t out_size(size_t in, size_t k, size_t stride, size_t pad)
{
    return (in + 2 * pad - k) / stride + 1;
}

/* Stores in *in the input coordinate o * stride + k - pad of output o and
 * returns 1, or returns 0 when it falls into the padding. */
static int input_coord(size_t o, size_t k, size_t stride, size_t pad, size_t size, size_t *in)
{
    size_t shifted = o * stride + k;

    if (shifted < pad || shifted - pad >= size)
        return 0;
    *in = shifted - pad;
    return 1;
}

void eq_conv2d_ref_forward(const eq_conv2d_ref_dims *d, const float *x, const float *weight,
                           const float *bias, float *y)
{
    const size_t oh_count = out_size(d->h, d->kh, d->stride, d->pad);
    const size_t ow_count = out_size(d->w, d->kw, d->stride, d->pad);

    for (size_t n = 0; n < d->n; n++) {
        for (size_t oc = 0; oc < d->oc; oc++) {
            float *y_nc = y + (n * d->oc + oc) * oh_count * ow_count;
            for (size_t oh = 0; oh < oh_count; oh++) {
                for (size_t ow = 0; ow < ow_count; ow++) {
                    double sum = bias[oc];
                    for (size_t ic = 0; ic < d->ic; ic++) {
                        const float *x_nc = x + (n * d->ic + ic) * d->h * d->w;
                        const float *w_oi = weight + (oc * d->ic + ic) * d->kh * d->kw;
                        for (size_t kh = 0; kh < d->kh; kh++) {
                            size_t ih, iw;
                            if (!input_coord(oh, kh, d->stride, d->pad, d->h, &ih))
                                continue;
                            for (size_t kw = 0; kw < d->kw; kw++) {
                                if (input_coord(ow, kw, d->stride, d->pad, d->w, &iw))
                                    sum += (double)w_oi[kh * d->kw + kw] * x_nc[ih * d->w + iw];
                            }
                        }
                    }
                    y_nc[oh * ow_count + ow] = (float)sum;
                }
            }
        }
    }
}

/* dx[n][ic][ih][iw] = sum over (oc, kh, kw) of weight * dy at the output
 * position that reads (ih, iw) through (kh, kw), if there is one. */
static void input_gradient(const eq_conv2d_ref_dims *d, const float *weight, const float *dy,
                           float *dx)
{
    const size_t oh_count = out_size(d->h, d->kh, d->stride, d->pad);
    const size_t ow_count = out_size(d->w, d->kw, d->stride, d->pad);

    for (size_t n = 0; n < d->n; n++) {
        for (size_t ic = 0; ic < d->ic; ic++) {
            float *dx_nc = dx + (n * d->ic + ic) * d->h * d->w;
            for (size_t ih = 0; ih < d->h; ih++) {
                for (size_t iw = 0; iw < d->w; iw++) {
                    double sum = 0.0;
                    for (size_t oc = 0; oc < d->oc; oc++) {
                        const float *dy_nc = dy + (n * d->oc + oc) * oh_count * ow_count;
                        const float *w_oi = weight + (oc * d->ic + ic) * d->kh * d->kw;
                        for (size_t kh = 0; kh < d->kh; kh++) {
                            /* ih = oh * stride + kh - pad, solved for oh. */
                            size_t row = ih + d->pad;
                            if (row < kh || (row - kh) % d->stride != 0 || (row - kh) / d->stride >= oh_count)
                                continue;
                            size_t oh = (row - kh) / d->stride;
                            for (size_t kw = 0; kw < d->kw; kw++) {
                                size_t col = iw + d->pad;
                                if (col < kw || (col - kw) % d->stride != 0 || (col - kw) / d->stride >= ow_count)
                                    continue;
                                size_t ow = (col - kw) / d->stride;
                                sum += (double)w_oi[kh * d->kw + kw] * dy_nc[oh * ow_count + ow];
                            }
                        }
                    }
                    dx_nc[ih * d->w + iw] = (float)sum;
                }
            }
        }
    }
}

void eq_conv2d_ref_backward(const eq_conv2d_ref_dims *d, const float *x, const float *weight,
                            const float *dy, float *dx, float *dweight, float *dbias)
{
    const size_t oh_count = out_size(d->h, d->kh, d->stride, d->pad);
    const size_t ow_count = out_size(d->w, d->kw, d->stride, d->pad);
    const size_t out_plane = oh_count * ow_count;

    for (size_t oc = 0; oc < d->oc; oc++) {
        double sum = 0.0;
        for (size_t n = 0; n < d->n; n++) {
            const float *dy_nc = dy + (n * d->oc + oc) * out_plane;
            for (size_t p = 0; p < out_plane; p++)
                sum += dy_nc[p];
        }
        dbias[oc] += (float)sum;
    }

    for (size_t oc = 0; oc < d->oc; oc++) {
        for (size_t ic = 0; ic < d->ic; ic++) {
            float *dw_oi = dweight + (oc * d->ic + ic) * d->kh * d->kw;
            for (size_t kh = 0; kh < d->kh; kh++) {
                for (size_t kw = 0; kw < d->kw; kw++) {
                    double sum = 0.0;
                    for (size_t n = 0; n < d->n; n++) {
                        const float *x_nc = x + (n * d->ic + ic) * d->h * d->w;
                        const float *dy_nc = dy + (n * d->oc + oc) * out_plane;
                        for (size_t oh = 0; oh < oh_count; oh++) {
                            size_t ih, iw;
                            if (!input_coord(oh, kh, d->stride, d->pad, d->h, &ih))
                                continue;
                            for (size_t ow = 0; ow < ow_count; ow++) {
                                if (input_coord(ow, kw, d->stride, d->pad, d->w, &iw))
                                    sum += (double)x_nc[ih * d->w + iw] * dy_nc[oh * ow_count + ow];
                            }
                        }
                    }
                    dw_oi[kh * d->kw + kw] += (float)sum;
                }
            }
        }
    }

    if (dx)
        input_gradient(d, weight, dy, dx);
}
