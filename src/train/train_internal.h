/* Helpers shared by the training loop and evaluation (internal). */
#ifndef EQ_TRAIN_INTERNAL_H
#define EQ_TRAIN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "equivar/train.h"

/* Returns the layer the optimiser was created for. */
eq_layer *eq_optimizer_layer(const eq_optimizer *optimizer);

/* Checks that `data` is a well-formed set whose images fit `network` in
 * batches of batch_size, that the network's output is (B, K, 1, 1) and that
 * every label lies in [0, K). Stores K in *classes and the floats per image
 * in *image_size. Messages start with `caller`.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT, EQ_ERR_SHAPE or
 * EQ_ERR_OUT_OF_MEMORY (a size overflows). */
eq_status eq_train_check_set(const char *caller, eq_layer *network, const eq_labelled_set *data,
                             size_t batch_size, size_t *classes, size_t *image_size);

/* Returns a monotonic clock in seconds. */
double eq_train_now_seconds(void);

#endif
