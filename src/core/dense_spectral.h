/* The multi-branch dense call for a cyclic source table, in the Fourier
 * basis of the branch index (internal). conv2d_spectral.c derives the
 * transforms and why they keep the outputs exactly equivariant; this is the
 * same computation with samples in place of column positions. */
#ifndef EQ_CORE_DENSE_SPECTRAL_H
#define EQ_CORE_DENSE_SPECTRAL_H

#include <stddef.h>

#include "equivar/status.h"

/* Buffers of the spectral path, owned by the dense layer. Zero-initialise. */
typedef struct eq_dense_spectral {
    float *weights;  /* (n * OUT, IN / n): [U0; U1] or [U0; U2; A; B] */
    float *dweights; /* the gradient of weights, same shape */
    float *x;        /* n matrices (N, IN / n): the transformed input blocks */
    float *work;     /* (2 N, OUT) or (6 N, OUT): products, then the transformed output gradient */
    size_t weights_capacity, dweights_capacity, x_capacity, work_capacity; /* floats */
} eq_dense_spectral;

/* Computes y (n * N, OUT), sample i * n + g for branch g, from x (N, IN)
 * for n = 2 or 4 branches and the cyclic source table, with weight (OUT, IN)
 * and bias (OUT). Keeps the transformed input and weights for backward.
 * Returns EQ_OK or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_dense_spectral_forward(eq_dense_spectral *sp, size_t branches, size_t out, size_t in, size_t samples,
                                    const float *weight, const float *bias, const float *x, float *y);

/* Runs backward for the last eq_dense_spectral_forward: adds the weight
 * gradient to dweight (OUT, IN) and, when dx is not NULL, overwrites dx
 * (N, IN). dy is (n * N, OUT). The bias gradient is the caller's.
 * Returns EQ_OK or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_dense_spectral_backward(eq_dense_spectral *sp, size_t branches, size_t out, size_t in, size_t samples,
                                     const float *dy, float *dweight, float *dx);

/* Frees the buffers and empties sp. */
void eq_dense_spectral_release(eq_dense_spectral *sp);

#endif
