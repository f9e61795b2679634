/* Softmax cross-entropy loss over any number of classes. */
#ifndef EQUIVAR_LOSS_H
#define EQUIVAR_LOSS_H

#include <stdint.h>

#include "equivar/status.h"
#include "equivar/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Computes the mean softmax cross-entropy of logits (N, K, 1, 1) against
 * labels[0..N-1] in [0, K), and, when dlogits is not NULL, its gradient with
 * respect to the logits, (softmax - one_hot) / N, written to dlogits
 * (same shape as logits). The softmax is computed stably (max subtracted).
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT (a label outside [0, K); the message
 * names the sample and the label), EQ_ERR_SHAPE or EQ_ERR_NUMERIC (a NaN or
 * infinite logit; the message names the sample and the class). */
eq_status eq_softmax_cross_entropy(const eq_tensor *logits, const int32_t *labels,
                                   float *loss, eq_tensor *dlogits);

/* Writes the index of the largest logit of each sample to predictions[0..N-1]
 * (the first one on ties). */
eq_status eq_argmax(const eq_tensor *logits, int32_t *predictions);

#ifdef __cplusplus
}
#endif

#endif
