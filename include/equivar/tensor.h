/* Float32 NCHW tensors and the seeded random number generator. */
#ifndef EQUIVAR_TENSOR_H
#define EQUIVAR_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "equivar/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A 4-d shape in NCHW order. A flat feature vector is (N, K, 1, 1). */
typedef struct eq_shape {
    size_t n, c, h, w;
} eq_shape;

/* A contiguous float32 NCHW tensor. Tensors from eq_tensor_create own a
 * 64-byte aligned buffer; a struct filled by hand is a view of the caller's
 * memory and is never passed to eq_tensor_destroy. */
typedef struct eq_tensor {
    eq_shape shape;
    float *data; /* n * c * h * w floats */
} eq_tensor;

/* Returns the shape (n, c, h, w). */
eq_shape eq_shape_make(size_t n, size_t c, size_t h, size_t w);

/* Returns n * c * h * w, or 0 if the product overflows size_t. */
size_t eq_shape_numel(eq_shape shape);

/* Returns 1 if the two shapes are equal, else 0. */
int eq_shape_equal(eq_shape a, eq_shape b);

/* Allocates a zero-filled tensor of the given shape.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT (NULL out or a zero dimension) or
 * EQ_ERR_OUT_OF_MEMORY (allocation failed or the size overflows).
 * The caller owns *out and frees it with eq_tensor_destroy. */
eq_status eq_tensor_create(eq_shape shape, eq_tensor **out);

/* Frees a tensor from eq_tensor_create; NULL is a no-op. */
void eq_tensor_destroy(eq_tensor *tensor);

/* Random number generator (xoshiro256**), seeded by the caller so that
 * every run with the same seed draws the same numbers. */
typedef struct eq_rng {
    uint64_t s[4];
} eq_rng;

void eq_rng_seed(eq_rng *rng, uint64_t seed);
uint64_t eq_rng_u64(eq_rng *rng);

/* Returns a uniform integer in [0, bound); bound must be > 0. */
uint64_t eq_rng_below(eq_rng *rng, uint64_t bound);

/* Returns a uniform float in [0, 1). */
float eq_rng_uniform(eq_rng *rng);

/* Returns a standard normal sample (mean 0, variance 1). */
float eq_rng_normal(eq_rng *rng);

#ifdef __cplusplus
}
#endif

#endif
