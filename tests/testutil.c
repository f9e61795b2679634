/* Shared test helpers: random fixtures and the finite-difference checker. */
#include "testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void eq_test_fill_uniform(float *data, size_t count, eq_rng *rng, float low, float high)
{
    for (size_t i = 0; i < count; i++)
        data[i] = low + (high - low) * eq_rng_uniform(rng);
}

/* L = sum(r * layer(x)) in double. */
static int loss_at(eq_layer *layer, eq_tensor *x, eq_tensor *y, const float *r, double *loss)
{
    if (eq_layer_forward(layer, x, y) != EQ_OK)
        return -1;

    size_t count = eq_shape_numel(y->shape);
    double sum = 0.0;
    for (size_t i = 0; i < count; i++)
        sum += (double)r[i] * (double)y->data[i];
    *loss = sum;
    return 0;
}

static void compare(eq_gradcheck_result *result, double analytic, double numeric, const char *what, size_t index)
{
    double error = fabs(analytic - numeric) / fmax(1.0, fabs(numeric));

    if (error > result->max_error || result->checked == 0) {
        result->max_error = error;
        snprintf(result->worst, sizeof result->worst, "%s [%zu]: analytic %.6g, numeric %.6g",
                 what, index, analytic, numeric);
    }
    if (fabs(numeric) > result->max_abs_gradient)
        result->max_abs_gradient = fabs(numeric);
    result->checked++;
}

/* Central difference of L with respect to *value. */
static int numeric_derivative(eq_layer *layer, eq_tensor *x, eq_tensor *y, const float *r,
                              float *value, double step, double *derivative)
{
    float saved = *value;
    double plus, minus;

    *value = (float)(saved + step);
    double up = (double)*value - saved;
    if (loss_at(layer, x, y, r, &plus) != 0)
        return -1;
    *value = (float)(saved - step);
    double down = saved - (double)*value;
    if (loss_at(layer, x, y, r, &minus) != 0)
        return -1;
    *value = saved;

    /* Divide by the steps actually taken after rounding to float. */
    *derivative = (plus - minus) / (up + down);
    return 0;
}

int eq_test_gradcheck(eq_layer *layer, eq_tensor *x, uint64_t seed, double step,
                      eq_gradcheck_result *result)
{
    eq_shape out_shape;
    eq_tensor *y = NULL, *dy = NULL, *dx = NULL;
    float **grads = NULL;
    size_t param_count = 0;
    int rc = -1;
    eq_rng rng;

    memset(result, 0, sizeof *result);
    if (eq_layer_output_shape(layer, x->shape, &out_shape) != EQ_OK)
        return -1;
    if (eq_tensor_create(out_shape, &y) != EQ_OK || eq_tensor_create(out_shape, &dy) != EQ_OK
        || eq_tensor_create(x->shape, &dx) != EQ_OK)
        goto done;

    /* Analytic gradients, with dy = r. */
    eq_rng_seed(&rng, seed);
    eq_test_fill_uniform(dy->data, eq_shape_numel(out_shape), &rng, -1.0f, 1.0f);
    eq_layer_zero_grad(layer);
    if (eq_layer_forward(layer, x, y) != EQ_OK || eq_layer_backward(layer, dy, dx) != EQ_OK)
        goto done;

    param_count = eq_layer_param_count(layer);
    grads = calloc(param_count + 1, sizeof *grads);
    if (!grads)
        goto done;
    for (size_t p = 0; p < param_count; p++) {
        eq_param param;
        eq_layer_param(layer, p, &param);
        grads[p] = malloc(param.count * sizeof(float));
        if (!grads[p])
            goto done;
        memcpy(grads[p], param.grad, param.count * sizeof(float));
    }

    /* Numeric gradients, one scalar at a time. */
    size_t x_count = eq_shape_numel(x->shape);
    for (size_t i = 0; i < x_count; i++) {
        double numeric;
        if (numeric_derivative(layer, x, y, dy->data, &x->data[i], step, &numeric) != 0)
            goto done;
        compare(result, dx->data[i], numeric, "input", i);
    }
    for (size_t p = 0; p < param_count; p++) {
        eq_param param;
        char what[64];
        eq_layer_param(layer, p, &param);
        snprintf(what, sizeof what, "param %zu (%s)", p, param.name);
        for (size_t i = 0; i < param.count; i++) {
            double numeric;
            if (numeric_derivative(layer, x, y, dy->data, &param.value[i], step, &numeric) != 0)
                goto done;
            compare(result, grads[p][i], numeric, what, i);
        }
    }
    rc = 0;

done:
    if (grads) {
        for (size_t p = 0; p < param_count; p++)
            free(grads[p]);
        free(grads);
    }
    eq_tensor_destroy(y);
    eq_tensor_destroy(dy);
    eq_tensor_destroy(dx);
    return rc;
}

const char *eq_test_data_path(const char *name)
{
    static char path[4096];

    snprintf(path, sizeof path, "%s/%s", EQ_TEST_DATA_DIR, name);
    return path;
}

eq_tensor *eq_test_random_tensor(eq_shape shape, uint64_t seed)
{
    eq_tensor *t = NULL;
    eq_rng rng;

    assert_int_equal(eq_tensor_create(shape, &t), EQ_OK);
    eq_rng_seed(&rng, seed);
    eq_test_fill_uniform(t->data, eq_shape_numel(shape), &rng, -1.0f, 1.0f);
    return t;
}

eq_tensor *eq_test_output_for(eq_layer *layer, eq_shape in)
{
    eq_shape out;
    eq_tensor *t = NULL;

    assert_int_equal(eq_layer_output_shape(layer, in, &out), EQ_OK);
    assert_int_equal(eq_tensor_create(out, &t), EQ_OK);
    return t;
}

void eq_test_append(eq_layer *seq, eq_status created, eq_layer **layer)
{
    if (created != EQ_OK)
        fail_msg("creating a layer failed: %s", eq_last_error());
    if (eq_sequential_append(seq, *layer) != EQ_OK)
        fail_msg("eq_sequential_append failed: %s", eq_last_error());
}
