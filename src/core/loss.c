/* Softmax cross-entropy loss and argmax over logits (N, K, 1, 1). */
#include "equivar/loss.h"

#include <math.h>

#include "core/error.h"

/* Checks that logits is a non-empty (N, K, 1, 1) tensor. `caller` names the
 * function in the message. */
static eq_status check_logits(const eq_tensor *logits, const char *caller)
{
    char text[EQ_SHAPE_STR_SIZE];

    if (logits->shape.h != 1 || logits->shape.w != 1 || eq_shape_numel(logits->shape) == 0)
        return eq_error(EQ_ERR_SHAPE, "%s: logits have shape %s, expected (N, K, 1, 1) with N, K > 0",
                        caller, eq_shape_str(logits->shape, text));
    if (logits->shape.c > INT32_MAX)
        return eq_error(EQ_ERR_SHAPE, "%s: logits have %zu classes, at most %ld are supported", caller,
                        logits->shape.c, (long)INT32_MAX);
    return EQ_OK;
}

/* Rejects bad labels and non-finite logits before anything is written. */
static eq_status check_samples(const float *logits, size_t n, size_t k, const int32_t *labels)
{
    for (size_t i = 0; i < n; i++) {
        if (labels[i] < 0 || (size_t)labels[i] >= k)
            return eq_error(EQ_ERR_INVALID_ARGUMENT,
                            "eq_softmax_cross_entropy: sample %zu has label %ld, expected a class in [0, %zu)", i,
                            (long)labels[i], k);

        const float *row = logits + i * k;
        for (size_t j = 0; j < k; j++) {
            if (!isfinite(row[j]))
                return eq_error(EQ_ERR_NUMERIC, "eq_softmax_cross_entropy: sample %zu has logit %g for class %zu",
                                i, (double)row[j], j);
        }
    }
    return EQ_OK;
}

eq_status eq_softmax_cross_entropy(const eq_tensor *logits, const int32_t *labels,
                                   float *loss, eq_tensor *dlogits)
{
    char have[EQ_SHAPE_STR_SIZE], want[EQ_SHAPE_STR_SIZE];

    if (!logits || !logits->data || !labels || !loss || (dlogits && !dlogits->data))
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_softmax_cross_entropy: logits, labels, loss or dlogits data is NULL");
    eq_status status = check_logits(logits, "eq_softmax_cross_entropy");
    if (status != EQ_OK)
        return status;
    if (dlogits && !eq_shape_equal(dlogits->shape, logits->shape))
        return eq_error(EQ_ERR_SHAPE, "eq_softmax_cross_entropy: dlogits have shape %s, expected the logits shape %s",
                        eq_shape_str(dlogits->shape, have), eq_shape_str(logits->shape, want));

    const size_t n = logits->shape.n;
    const size_t k = logits->shape.c;
    status = check_samples(logits->data, n, k, labels);
    if (status != EQ_OK)
        return status;

    /* Per sample: loss = log(sum_j exp(x_j - max)) - (x_label - max). The
     * max shift keeps every exp in (0, 1], and the sums run in double. */
    double total = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float *row = logits->data + i * k;
        float max = row[0];
        for (size_t j = 1; j < k; j++)
            max = row[j] > max ? row[j] : max;

        double sum = 0.0;
        for (size_t j = 0; j < k; j++)
            sum += exp((double)row[j] - max);
        total += log(sum) - ((double)row[labels[i]] - max);

        if (dlogits) {
            float *d_row = dlogits->data + i * k;
            for (size_t j = 0; j < k; j++) {
                double p = exp((double)row[j] - max) / sum;
                double target = (size_t)labels[i] == j ? 1.0 : 0.0;
                d_row[j] = (float)((p - target) / (double)n);
            }
        }
    }
    *loss = (float)(total / (double)n);
    return EQ_OK;
}

eq_status eq_argmax(const eq_tensor *logits, int32_t *predictions)
{
    if (!logits || !logits->data || !predictions)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_argmax: logits, logits data or predictions is NULL");
    eq_status status = check_logits(logits, "eq_argmax");
    if (status != EQ_OK)
        return status;

    const size_t k = logits->shape.c;
    for (size_t i = 0; i < logits->shape.n; i++) {
        const float *row = logits->data + i * k;
        size_t best = 0;
        /* Strict > keeps the first of equal maxima. A NaN never wins over a
         * number, and a row of NaN gives class 0. */
        for (size_t j = 1; j < k; j++) {
            if (row[j] > row[best] || (row[best] != row[best] && row[j] == row[j]))
                best = j;
        }
        predictions[i] = (int32_t)best;
    }
    return EQ_OK;
}
