/* Training: optimisers (SGD with momentum, Adam), learning-rate schedules,
 * the mini-batch training loop and evaluation by argmax. */
#ifndef EQUIVAR_TRAIN_H
#define EQUIVAR_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "equivar/layer.h"
#include "equivar/status.h"
#include "equivar/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- Optimisers ---------------------------------------------------------- */

typedef enum eq_optimizer_kind {
    EQ_OPTIMIZER_SGD, /* SGD with optional (Nesterov) momentum */
    EQ_OPTIMIZER_ADAM /* Adam with bias correction */
} eq_optimizer_kind;

/* Hyperparameters of an optimiser. The learning rate is not here: it is
 * passed to every eq_optimizer_step so that a schedule can drive it.
 *
 * Both kinds first add weight decay to the gradient, g = grad + weight_decay
 * * w (L2 regularisation, as torch.optim.SGD and torch.optim.Adam do).
 * SGD:  v = momentum * v + g (v starts at 0), then w -= lr * v, or with
 *       nesterov, w -= lr * (g + momentum * v).
 * Adam: m = beta1 * m + (1 - beta1) * g, v = beta2 * v + (1 - beta2) * g^2,
 *       w -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + epsilon)
 *       at step t = 1, 2, ... */
typedef struct eq_optimizer_config {
    eq_optimizer_kind kind;
    float weight_decay; /* >= 0; 0 turns it off */
    float momentum;     /* SGD: in [0, 1); 0 is plain SGD */
    int nesterov;       /* SGD: nonzero for Nesterov momentum; needs momentum > 0 */
    float beta1;        /* Adam: in [0, 1) */
    float beta2;        /* Adam: in [0, 1) */
    float epsilon;      /* Adam: > 0 */
} eq_optimizer_config;

/* Returns SGD with momentum 0.9, no weight decay, no Nesterov. */
eq_optimizer_config eq_optimizer_sgd_default(void);

/* Returns Adam with beta1 0.9, beta2 0.999, epsilon 1e-8, no weight decay. */
eq_optimizer_config eq_optimizer_adam_default(void);

/* An optimiser bound to every parameter of one layer (nested layers
 * included), with its own state buffers (momentum, Adam moments). */
typedef struct eq_optimizer eq_optimizer;

/* Creates an optimiser for all parameters of `layer`. The layer must outlive
 * the optimiser and keep its parameter list unchanged.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT (NULL pointer, a hyperparameter out
 * of range; the message names it and its value) or EQ_ERR_OUT_OF_MEMORY.
 * The caller frees *out with eq_optimizer_destroy. */
eq_status eq_optimizer_create(eq_layer *layer, const eq_optimizer_config *config, eq_optimizer **out);

/* Applies one update with the gradients now in the layer's parameters and
 * the given learning rate (>= 0, finite). Gradients are not cleared: call
 * eq_layer_zero_grad before the next backward.
 * The step is all or nothing: if a gradient is NaN or infinite, or an
 * updated value or state would be, nothing is written and the call returns
 * EQ_ERR_NUMERIC with a message naming the parameter, the element and the
 * value. Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT or EQ_ERR_NUMERIC. */
eq_status eq_optimizer_step(eq_optimizer *optimizer, float learning_rate);

/* Returns the number of successful steps so far. */
size_t eq_optimizer_step_count(const eq_optimizer *optimizer);

/* Frees the optimiser (not the layer); NULL is a no-op. */
void eq_optimizer_destroy(eq_optimizer *optimizer);

/* --- Learning-rate schedules --------------------------------------------- */

typedef enum eq_lr_schedule_kind {
    EQ_LR_CONSTANT,     /* base_lr at every step */
    EQ_LR_WARMUP_COSINE /* linear warm-up, then cosine decay to 0 */
} eq_lr_schedule_kind;

/* With EQ_LR_WARMUP_COSINE, step s of T (s = 0..T-1, W = warmup_steps) has
 * lr = base_lr * (s + 1) / W for s < W, then
 * lr = base_lr * (1 + cos(pi * (s - W) / (T - W))) / 2, which falls from
 * base_lr towards 0 at the end of training. */
typedef struct eq_lr_schedule {
    eq_lr_schedule_kind kind;
    float base_lr;       /* > 0 */
    size_t warmup_steps; /* EQ_LR_WARMUP_COSINE only; may be 0 */
} eq_lr_schedule;

/* Returns the learning rate of step `step` (0-based) of `total_steps`, or 0
 * for a NULL schedule. */
float eq_lr_schedule_value(const eq_lr_schedule *schedule, size_t step, size_t total_steps);

/* --- Data ---------------------------------------------------------------- */

/* An in-memory labelled image set. The caller owns both arrays. */
typedef struct eq_labelled_set {
    const float *images;   /* (count, channels, height, width), contiguous */
    const int32_t *labels; /* count labels in [0, K), K the network's outputs */
    size_t count;
    size_t channels, height, width;
} eq_labelled_set;

/* --- Training loop ------------------------------------------------------- */

/* What the per-epoch callback receives. */
typedef struct eq_epoch_report {
    size_t epoch;             /* 1-based */
    size_t epochs;            /* total epochs of the run */
    double mean_loss;         /* mean cross-entropy over the epoch's images */
    double seconds;           /* wall time of the epoch */
    double images_per_second; /* training throughput of the epoch */
    float learning_rate;      /* of the epoch's last step */
} eq_epoch_report;

/* Called after every epoch, e.g. to print progress. */
typedef void (*eq_epoch_callback)(const eq_epoch_report *report, void *user_data);

typedef struct eq_train_config {
    size_t epochs;     /* >= 1 */
    size_t batch_size; /* >= 1; the last batch of an epoch may be smaller */
    uint64_t seed;     /* seeds the shuffling; same seed, same run bit for bit */
    int shuffle;       /* nonzero: a new random order every epoch, 0: the set's order */
    eq_lr_schedule schedule;
    eq_epoch_callback on_epoch; /* may be NULL */
    void *user_data;            /* passed to on_epoch */
} eq_train_config;

/* Returns 1 epoch, batch size 64, seed 1, shuffling on, and a constant
 * learning rate of 0.01 with no callback. */
eq_train_config eq_train_config_default(void);

/* Totals of a training run. */
typedef struct eq_train_result {
    size_t epochs;            /* epochs completed */
    size_t steps;             /* optimiser steps taken */
    double last_mean_loss;    /* mean loss of the last completed epoch */
    double seconds;           /* wall time of the completed epochs, callbacks excluded */
    double images_per_second; /* images trained on per second, overall */
} eq_train_result;

/* Trains `network` with softmax cross-entropy on `data` for config->epochs
 * epochs of shuffled mini-batches, stepping `optimizer` (created for this
 * network) once per batch with the learning rate of the schedule. The
 * network maps (B, C, H, W) to logits (B, K, 1, 1); every label must lie in
 * [0, K). The last batch of an epoch contains the remaining count % batch_size
 * images, so every image is used in every epoch. The network's parameters
 * should be initialised (eq_layer_init_he) before the call.
 *
 * If a loss or a gradient becomes NaN or infinite, training stops with
 * EQ_ERR_NUMERIC, a message naming the epoch, the batch and the value, and
 * the parameters and optimiser state as they were after the last good step.
 *
 * result may be NULL; on failure it holds the epochs completed so far.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT (NULL pointer, zero epochs or batch
 * size, a label outside [0, K); the message names the index and value),
 * EQ_ERR_SHAPE (images do not fit the network, or its output is not
 * (B, K, 1, 1); the message names both shapes), EQ_ERR_NUMERIC or
 * EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_train(eq_layer *network, eq_optimizer *optimizer, const eq_labelled_set *data,
                   const eq_train_config *config, eq_train_result *result);

/* --- Evaluation ---------------------------------------------------------- */

/* Accuracy of argmax predictions, overall and per class. */
typedef struct eq_eval_result {
    size_t count;          /* images evaluated */
    size_t correct;        /* images whose argmax equals the label */
    double accuracy;       /* correct / count */
    size_t classes;        /* K, the network's number of outputs */
    size_t *class_count;   /* [K]: images with label k */
    size_t *class_correct; /* [K]: of those, predicted correctly */
} eq_eval_result;

/* Runs `network` forward on `data` in batches of batch_size and compares the
 * argmax of every image's logits with its label (first maximum on ties).
 * When predictions is not NULL it receives data->count predicted classes.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT, EQ_ERR_SHAPE (as eq_train) or
 * EQ_ERR_OUT_OF_MEMORY. The caller frees *out with eq_eval_result_destroy. */
eq_status eq_evaluate(eq_layer *network, const eq_labelled_set *data, size_t batch_size,
                      int32_t *predictions, eq_eval_result **out);

/* Returns the accuracy on class k, or 0 when no image has label k (or k is
 * out of range). */
double eq_eval_class_accuracy(const eq_eval_result *result, size_t k);

/* Frees the result; NULL is a no-op. */
void eq_eval_result_destroy(eq_eval_result *result);

#ifdef __cplusplus
}
#endif

#endif
