/* Shared test helpers: random fixtures and the finite-difference checker. */
#ifndef EQ_TESTUTIL_H
#define EQ_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "equivar/layer.h"

/* Fills data[0..count-1] with uniform floats in [low, high). */
void eq_test_fill_uniform(float *data, size_t count, eq_rng *rng, float low, float high);

/* Result of a gradient check: the worst mismatch between the analytic and
 * the central-difference gradient, over the input and every parameter. */
typedef struct eq_gradcheck_result {
    double max_error;        /* max |analytic - numeric| / max(1, |numeric|) */
    double max_abs_gradient; /* max |numeric|, to catch all-zero gradients */
    size_t checked;          /* number of scalar derivatives compared */
    char worst[256];         /* where max_error occurred, e.g. "param 0 [17]" */
} eq_gradcheck_result;

/* Compares the gradients of L = sum(r * layer(x)), r a fixed random tensor
 * drawn from `seed`, with central differences of step `step`, accumulated in
 * double. Checks every element of x and of every parameter. x is restored
 * before return. Returns 0 on success, -1 if a layer call failed. */
int eq_test_gradcheck(eq_layer *layer, eq_tensor *x, uint64_t seed, double step,
                      eq_gradcheck_result *result);

/* The helpers below fail the running cmocka test on error. */

/* Returns a new tensor of `shape` filled with uniform values in [-1, 1)
 * drawn from `seed`. */
eq_tensor *eq_test_random_tensor(eq_shape shape, uint64_t seed);

/* Returns a zeroed tensor of the output shape of `layer` for input `in`. */
eq_tensor *eq_test_output_for(eq_layer *layer, eq_shape in);

/* Appends *layer to seq after checking `created`, the status of the call
 * that created it; passing the address makes the read happen after that
 * call, whatever the argument evaluation order. */
void eq_test_append(eq_layer *seq, eq_status created, eq_layer **layer);

/* Returns "<data dir>/<name>" in a static buffer; the data dir is the
 * repository's data/mnist. */
const char *eq_test_data_path(const char *name);

#endif
