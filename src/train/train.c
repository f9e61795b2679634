/* The mini-batch training loop and learning-rate schedules. */
#include "equivar/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "equivar/loss.h"
#include "train/train_internal.h"

eq_train_config eq_train_config_default(void)
{
    eq_train_config config = { 0 };

    config.epochs = 1;
    config.batch_size = 64;
    config.seed = 1;
    config.shuffle = 1;
    config.schedule.kind = EQ_LR_CONSTANT;
    config.schedule.base_lr = 0.01f;
    return config;
}

float eq_lr_schedule_value(const eq_lr_schedule *schedule, size_t step, size_t total_steps)
{
    if (!schedule)
        return 0.0f;
    if (schedule->kind != EQ_LR_WARMUP_COSINE)
        return schedule->base_lr;

    size_t warmup = schedule->warmup_steps;
    if (step < warmup)
        return (float)((double)schedule->base_lr * (double)(step + 1) / (double)warmup);
    if (total_steps <= warmup)
        return schedule->base_lr;

    const double pi = 3.14159265358979323846;
    double progress = (double)(step - warmup) / (double)(total_steps - warmup);
    if (progress > 1.0)
        progress = 1.0;
    return (float)((double)schedule->base_lr * 0.5 * (1.0 + cos(pi * progress)));
}

static eq_status validate_config(const eq_train_config *config)
{
    const eq_lr_schedule *schedule = &config->schedule;

    if (config->epochs == 0)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_train: epochs is 0, expected at least 1");
    if (config->batch_size == 0)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_train: batch size is 0, expected at least 1");
    if (schedule->kind != EQ_LR_CONSTANT && schedule->kind != EQ_LR_WARMUP_COSINE)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_train: unknown learning-rate schedule kind %d",
                        (int)schedule->kind);
    if (!(schedule->base_lr > 0.0f) || !isfinite(schedule->base_lr))
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_train: base learning rate is %g, expected a finite value > 0",
                        (double)schedule->base_lr);
    return EQ_OK;
}

/* Buffers of one run, sized for a full batch; a smaller last batch uses
 * their first rows through views. */
typedef struct train_buffers {
    size_t *order;  /* [count] image indices of the current epoch */
    float *x;       /* (B, C, H, W) */
    float *logits;  /* (B, K, 1, 1) */
    float *dlogits; /* (B, K, 1, 1) */
    int32_t *labels; /* [B] */
} train_buffers;

static void free_buffers(train_buffers *buffers)
{
    free(buffers->order);
    eq_free(buffers->x);
    eq_free(buffers->logits);
    eq_free(buffers->dlogits);
    free(buffers->labels);
}

static eq_status alloc_buffers(train_buffers *buffers, size_t count, size_t batch, size_t image_size,
                               size_t classes)
{
    size_t x_count, logit_count;

    memset(buffers, 0, sizeof *buffers);
    if (!eq_size_mul(batch, image_size, &x_count) || !eq_size_mul(batch, classes, &logit_count))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_train: a batch of %zu overflows size_t", batch);
    if (count <= SIZE_MAX / sizeof(size_t))
        buffers->order = malloc(count * sizeof(size_t));
    buffers->x = eq_alloc_floats(x_count);
    buffers->logits = eq_alloc_floats(logit_count);
    buffers->dlogits = eq_alloc_floats(logit_count);
    buffers->labels = malloc(batch * sizeof(int32_t));
    if (!buffers->order || !buffers->x || !buffers->logits || !buffers->dlogits || !buffers->labels) {
        free_buffers(buffers);
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_train: cannot allocate buffers for batches of %zu images", batch);
    }
    return EQ_OK;
}

/* Fisher-Yates over the identity, so the order of an epoch depends only on
 * the RNG state, not on earlier epochs' orders. */
static void fill_order(size_t *order, size_t count, eq_rng *rng, int shuffle)
{
    for (size_t i = 0; i < count; i++)
        order[i] = i;
    if (!shuffle)
        return;
    for (size_t i = count - 1; i > 0; i--) {
        size_t j = (size_t)eq_rng_below(rng, (uint64_t)i + 1);
        size_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* Where in the run a batch is, for error messages. */
typedef struct batch_position {
    size_t epoch, epochs;   /* 1-based */
    size_t batch, batches;  /* 1-based */
} batch_position;

/* Prefixes the current error message with the batch position. */
static eq_status batch_error(eq_status status, const batch_position *at)
{
    char cause[512];

    snprintf(cause, sizeof cause, "%s", eq_last_error());
    return eq_error(status, "eq_train: epoch %zu of %zu, batch %zu of %zu: %s",
                    at->epoch, at->epochs, at->batch, at->batches, cause);
}

/* Runs forward, loss, backward and one optimiser step on batch rows
 * order[0..size-1]; stores the batch's mean loss in *loss. */
static eq_status train_batch(eq_layer *network, eq_optimizer *optimizer, const eq_labelled_set *data,
                             const size_t *order, size_t size, size_t image_size, size_t classes,
                             train_buffers *buffers, float learning_rate, float *loss)
{
    for (size_t i = 0; i < size; i++) {
        memcpy(buffers->x + i * image_size, data->images + order[i] * image_size, image_size * sizeof(float));
        buffers->labels[i] = data->labels[order[i]];
    }
    eq_tensor x = { eq_shape_make(size, data->channels, data->height, data->width), buffers->x };
    eq_tensor logits = { eq_shape_make(size, classes, 1, 1), buffers->logits };
    eq_tensor dlogits = { eq_shape_make(size, classes, 1, 1), buffers->dlogits };

    eq_layer_zero_grad(network);
    eq_status status = eq_layer_forward(network, &x, &logits);
    if (status != EQ_OK)
        return status;
    status = eq_softmax_cross_entropy(&logits, buffers->labels, loss, &dlogits);
    if (status != EQ_OK)
        return status;
    if (!isfinite(*loss))
        return eq_error(EQ_ERR_NUMERIC, "loss is %g", (double)*loss);
    status = eq_layer_backward(network, &dlogits, NULL);
    if (status != EQ_OK)
        return status;
    return eq_optimizer_step(optimizer, learning_rate);
}

eq_status eq_train(eq_layer *network, eq_optimizer *optimizer, const eq_labelled_set *data,
                   const eq_train_config *config, eq_train_result *result)
{
    size_t classes, image_size;
    train_buffers buffers;
    eq_train_result totals = { 0 };

    if (result)
        *result = totals;
    if (!network || !optimizer || !data || !config)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_train: network, optimizer, data or config is NULL");
    if (eq_optimizer_layer(optimizer) != network)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_train: the optimizer was created for another layer (%s), not this network (%s)",
                        eq_layer_kind(eq_optimizer_layer(optimizer)), eq_layer_kind(network));
    eq_status status = validate_config(config);
    if (status == EQ_OK)
        status = eq_train_check_set("eq_train", network, data, config->batch_size, &classes, &image_size);
    if (status != EQ_OK)
        return status;

    size_t batch = config->batch_size;
    size_t batches = data->count / batch + (data->count % batch != 0);
    size_t total_steps;
    if (!eq_size_mul(batches, config->epochs, &total_steps))
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_train: %zu epochs of %zu batches overflow size_t",
                        config->epochs, batches);
    status = alloc_buffers(&buffers, data->count, batch, image_size, classes);
    if (status != EQ_OK)
        return status;

    eq_rng rng;
    eq_rng_seed(&rng, config->seed);
    size_t step = 0;

    for (size_t epoch = 0; epoch < config->epochs && status == EQ_OK; epoch++) {
        double epoch_start = eq_train_now_seconds();
        double loss_sum = 0.0; /* sum over images of the per-image loss */
        float learning_rate = 0.0f;

        fill_order(buffers.order, data->count, &rng, config->shuffle);
        for (size_t b = 0; b < batches; b++) {
            size_t start = b * batch;
            size_t size = data->count - start < batch ? data->count - start : batch;
            float loss;

            learning_rate = eq_lr_schedule_value(&config->schedule, step, total_steps);
            status = train_batch(network, optimizer, data, buffers.order + start, size, image_size, classes,
                                 &buffers, learning_rate, &loss);
            if (status != EQ_OK) {
                batch_position at = { epoch + 1, config->epochs, b + 1, batches };
                status = batch_error(status, &at);
                break;
            }
            loss_sum += (double)loss * (double)size;
            step++;
        }
        if (status != EQ_OK)
            break;

        eq_epoch_report report;
        report.epoch = epoch + 1;
        report.epochs = config->epochs;
        report.mean_loss = loss_sum / (double)data->count;
        report.seconds = eq_train_now_seconds() - epoch_start;
        report.images_per_second = report.seconds > 0.0 ? (double)data->count / report.seconds : 0.0;
        report.learning_rate = learning_rate;
        totals.epochs = epoch + 1;
        totals.seconds += report.seconds;
        totals.last_mean_loss = report.mean_loss;
        if (config->on_epoch)
            config->on_epoch(&report, config->user_data);
    }

    totals.steps = step;
    if (totals.seconds > 0.0)
        totals.images_per_second = (double)totals.epochs * (double)data->count / totals.seconds;
    if (result)
        *result = totals;
    free_buffers(&buffers);
    return status;
}
