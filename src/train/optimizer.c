/* SGD with momentum and Adam over every parameter of a layer. */
#include "equivar/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "train/train_internal.h"

/* One parameter and its optimiser state. The state is double-buffered: a
 * step writes candidates into next_* and swaps only if all are finite. */
typedef struct param_state {
    eq_param param;
    float *next_value; /* [count] candidate parameter values */
    float *moment1;    /* [count] SGD velocity or Adam first moment */
    float *next_moment1;
    float *moment2;    /* [count] Adam second moment; NULL for SGD */
    float *next_moment2;
} param_state;

struct eq_optimizer {
    eq_layer *layer; /* whose parameters this optimiser updates */
    eq_optimizer_config config;
    size_t param_count;
    param_state *params; /* [param_count] */
    size_t step_count;
};

eq_optimizer_config eq_optimizer_sgd_default(void)
{
    eq_optimizer_config config = { 0 };

    config.kind = EQ_OPTIMIZER_SGD;
    config.momentum = 0.9f;
    return config;
}

eq_optimizer_config eq_optimizer_adam_default(void)
{
    eq_optimizer_config config = { 0 };

    config.kind = EQ_OPTIMIZER_ADAM;
    config.beta1 = 0.9f;
    config.beta2 = 0.999f;
    config.epsilon = 1e-8f;
    return config;
}

static int in_unit_interval(float value)
{
    return value >= 0.0f && value < 1.0f;
}

static eq_status validate_config(const eq_optimizer_config *config)
{
    if (!(config->weight_decay >= 0.0f) || !isfinite(config->weight_decay))
        return eq_error(EQ_ERR_INVALID_ARGUMENT,
                        "eq_optimizer_create: weight_decay is %g, expected a finite value >= 0",
                        (double)config->weight_decay);

    switch (config->kind) {
    case EQ_OPTIMIZER_SGD:
        if (!in_unit_interval(config->momentum))
            return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_optimizer_create: SGD momentum is %g, expected [0, 1)",
                            (double)config->momentum);
        if (config->nesterov && config->momentum == 0.0f)
            return eq_error(EQ_ERR_INVALID_ARGUMENT,
                            "eq_optimizer_create: Nesterov momentum needs momentum > 0, got 0");
        return EQ_OK;
    case EQ_OPTIMIZER_ADAM:
        if (!in_unit_interval(config->beta1))
            return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_optimizer_create: Adam beta1 is %g, expected [0, 1)",
                            (double)config->beta1);
        if (!in_unit_interval(config->beta2))
            return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_optimizer_create: Adam beta2 is %g, expected [0, 1)",
                            (double)config->beta2);
        if (!(config->epsilon > 0.0f) || !isfinite(config->epsilon))
            return eq_error(EQ_ERR_INVALID_ARGUMENT,
                            "eq_optimizer_create: Adam epsilon is %g, expected a finite value > 0",
                            (double)config->epsilon);
        return EQ_OK;
    }
    return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_optimizer_create: unknown optimizer kind %d", (int)config->kind);
}

void eq_optimizer_destroy(eq_optimizer *optimizer)
{
    if (!optimizer)
        return;
    for (size_t p = 0; p < optimizer->param_count; p++) {
        param_state *state = &optimizer->params[p];
        eq_free(state->next_value);
        eq_free(state->moment1);
        eq_free(state->next_moment1);
        eq_free(state->moment2);
        eq_free(state->next_moment2);
    }
    free(optimizer->params);
    free(optimizer);
}

static eq_status allocate_state(param_state *state, int with_moment2, size_t index)
{
    size_t count = state->param.count;

    if (count == 0)
        return EQ_OK;
    state->next_value = eq_alloc_floats(count);
    state->moment1 = eq_alloc_floats(count);
    state->next_moment1 = eq_alloc_floats(count);
    if (with_moment2) {
        state->moment2 = eq_alloc_floats(count);
        state->next_moment2 = eq_alloc_floats(count);
    }
    if (!state->next_value || !state->moment1 || !state->next_moment1
        || (with_moment2 && (!state->moment2 || !state->next_moment2)))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_optimizer_create: cannot allocate the state of parameter %zu (%s, %zu floats)",
                        index, state->param.name, count);
    return EQ_OK;
}

eq_status eq_optimizer_create(eq_layer *layer, const eq_optimizer_config *config, eq_optimizer **out)
{
    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_optimizer_create: out is NULL");
    *out = NULL;
    if (!layer || !config)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_optimizer_create: layer or config is NULL");
    eq_status status = validate_config(config);
    if (status != EQ_OK)
        return status;

    eq_optimizer *optimizer = calloc(1, sizeof *optimizer);
    if (!optimizer)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_optimizer_create: cannot allocate the optimizer");
    optimizer->layer = layer;
    optimizer->config = *config;

    size_t count = eq_layer_param_count(layer);
    if (count > 0) {
        optimizer->params = calloc(count, sizeof *optimizer->params);
        if (!optimizer->params) {
            free(optimizer);
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_optimizer_create: cannot allocate %zu parameter states", count);
        }
    }
    optimizer->param_count = count;

    for (size_t p = 0; p < count; p++) {
        param_state *state = &optimizer->params[p];
        status = eq_layer_param(layer, p, &state->param);
        if (status == EQ_OK)
            status = allocate_state(state, config->kind == EQ_OPTIMIZER_ADAM, p);
        if (status != EQ_OK) {
            eq_optimizer_destroy(optimizer);
            return status;
        }
    }
    *out = optimizer;
    return EQ_OK;
}

/* Writes candidates for w, v into next_*; returns the first index whose
 * result is not finite, or count when all are. */
static size_t sgd_candidates(const eq_optimizer_config *config, param_state *state, float lr)
{
    const eq_param *param = &state->param;
    float momentum = config->momentum;
    float decay = config->weight_decay;

    for (size_t i = 0; i < param->count; i++) {
        float w = param->value[i];
        float g = param->grad[i] + decay * w;
        float v = momentum * state->moment1[i] + g;
        float direction = config->nesterov ? g + momentum * v : v;
        float next = w - lr * direction;

        if (!isfinite(v) || !isfinite(next))
            return i;
        state->next_moment1[i] = v;
        state->next_value[i] = next;
    }
    return param->count;
}

/* bias1 = 1 - beta1^t and bias2 = 1 - beta2^t for this step t. */
static size_t adam_candidates(const eq_optimizer_config *config, param_state *state, float lr,
                              float bias1, float bias2)
{
    const eq_param *param = &state->param;
    float beta1 = config->beta1, beta2 = config->beta2;
    float decay = config->weight_decay;

    for (size_t i = 0; i < param->count; i++) {
        float w = param->value[i];
        float g = param->grad[i] + decay * w;
        float m = beta1 * state->moment1[i] + (1.0f - beta1) * g;
        float v = beta2 * state->moment2[i] + (1.0f - beta2) * g * g;
        float next = w - lr * (m / bias1) / (sqrtf(v / bias2) + config->epsilon);

        if (!isfinite(m) || !isfinite(v) || !isfinite(next))
            return i;
        state->next_moment1[i] = m;
        state->next_moment2[i] = v;
        state->next_value[i] = next;
    }
    return param->count;
}

static eq_status check_gradients(const eq_optimizer *optimizer)
{
    char text[EQ_SHAPE_STR_SIZE];

    for (size_t p = 0; p < optimizer->param_count; p++) {
        const eq_param *param = &optimizer->params[p].param;
        for (size_t i = 0; i < param->count; i++) {
            if (!isfinite(param->grad[i]))
                return eq_error(EQ_ERR_NUMERIC, "gradient of parameter %zu (%s %s) is %g at element %zu",
                                p, param->name, eq_shape_str(param->shape, text), (double)param->grad[i], i);
        }
    }
    return EQ_OK;
}

static void swap(float **a, float **b)
{
    float *t = *a;
    *a = *b;
    *b = t;
}

eq_status eq_optimizer_step(eq_optimizer *optimizer, float learning_rate)
{
    char text[EQ_SHAPE_STR_SIZE];

    if (!optimizer)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_optimizer_step: optimizer is NULL");
    if (!(learning_rate >= 0.0f) || !isfinite(learning_rate))
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_optimizer_step: learning rate is %g, expected a finite value >= 0",
                        (double)learning_rate);
    eq_status status = check_gradients(optimizer);
    if (status != EQ_OK)
        return status;

    /* Bias corrections in double so that beta^t does not lose precision over
     * long runs; rounded once to float for the update. */
    size_t t = optimizer->step_count + 1;
    float bias1 = (float)(1.0 - pow(optimizer->config.beta1, (double)t));
    float bias2 = (float)(1.0 - pow(optimizer->config.beta2, (double)t));

    for (size_t p = 0; p < optimizer->param_count; p++) {
        param_state *state = &optimizer->params[p];
        size_t bad = optimizer->config.kind == EQ_OPTIMIZER_SGD
                         ? sgd_candidates(&optimizer->config, state, learning_rate)
                         : adam_candidates(&optimizer->config, state, learning_rate, bias1, bias2);
        if (bad < state->param.count)
            return eq_error(EQ_ERR_NUMERIC,
                            "update of parameter %zu (%s %s) at element %zu is not finite (value %g, gradient %g, learning rate %g)",
                            p, state->param.name, eq_shape_str(state->param.shape, text), bad,
                            (double)state->param.value[bad], (double)state->param.grad[bad], (double)learning_rate);
    }

    /* Every candidate is finite: commit. */
    for (size_t p = 0; p < optimizer->param_count; p++) {
        param_state *state = &optimizer->params[p];
        if (state->param.count == 0)
            continue;
        memcpy(state->param.value, state->next_value, state->param.count * sizeof(float));
        swap(&state->moment1, &state->next_moment1);
        swap(&state->moment2, &state->next_moment2);
    }
    optimizer->step_count = t;
    return EQ_OK;
}

size_t eq_optimizer_step_count(const eq_optimizer *optimizer)
{
    return optimizer ? optimizer->step_count : 0;
}

eq_layer *eq_optimizer_layer(const eq_optimizer *optimizer)
{
    return optimizer->layer;
}
