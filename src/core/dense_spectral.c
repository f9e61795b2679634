/* The multi-branch dense call for a cyclic source table, in the Fourier
 * basis of the branch index (spectral.h). The input blocks of each sample
 * are transformed, and the products run as GEMMs over the batch. The branch
 * outputs are then combined per sample. */
#include "core/dense_spectral.h"

#include "core/error.h"
#include "core/gemm.h"
#include "core/spectral.h"

/* Grows *buf to `count` floats, dropping the old contents. */
static eq_status reserve(float **buf, size_t *capacity, size_t count, const char *buffer_name)
{
    if (eq_grow_floats(buf, capacity, count))
        return EQ_OK;
    return eq_error(EQ_ERR_OUT_OF_MEMORY, "dense: cannot allocate %zu floats for the spectral %s", count,
                    buffer_name);
}

/* Work rows of OUT floats: the forward products need 6 N for n = 4 (u0,
 * u2, then [A a, B a] and [A b, B b] of 2 OUT per sample), backward 5 N. */
static size_t work_rows(size_t branches, size_t samples)
{
    return (branches == 4 ? 6 : 2) * samples;
}

eq_status eq_dense_spectral_forward(eq_dense_spectral *sp, size_t branches, size_t out, size_t in, size_t samples,
                                    const float *weight, const float *bias, const float *x, float *y)
{
    const size_t n = branches, kb = in / n;
    const size_t block = samples * kb; /* floats of one transformed input matrix (N, KB) */
    size_t work_count;

    if (!eq_size_mul(work_rows(n, samples), out, &work_count))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "dense: spectral buffers for %zu samples overflow size_t", samples);
    eq_status status = reserve(&sp->weights, &sp->weights_capacity, out * in, "weights");
    if (status == EQ_OK)
        status = reserve(&sp->x, &sp->x_capacity, samples * in, "input");
    if (status == EQ_OK)
        status = reserve(&sp->work, &sp->work_capacity, work_count, "products");
    if (status != EQ_OK)
        return status;

    eq_spectral_weights(n, out, kb, weight, in, sp->weights);

    /* X_b (N, KB) = block b of every sample, then transformed in place. */
    for (size_t i = 0; i < samples; i++) {
        float *rows[4];
        for (size_t b = 0; b < n; b++) {
            rows[b] = sp->x + b * block + i * kb;
            for (size_t r = 0; r < kb; r++)
                rows[b][r] = x[i * in + b * kb + r];
        }
        eq_spectral_transform(n, kb, rows);
    }

    /* u0 (N, OUT) = X^0 U0^T and u1 (or u2) = X^1 U1^T; for n = 4 also
     * [A a, B a] (N, 2 OUT) = a [A; B]^T and [A b, B b] = b [A; B]^T. */
    const size_t spec_block = out * kb;
    float *work = sp->work;
    eq_gemm(0, 1, samples, out, kb, 1.0f, sp->x, kb, sp->weights, kb, 0.0f, work, out);
    eq_gemm(0, 1, samples, out, kb, 1.0f, sp->x + block, kb, sp->weights + spec_block, kb, 0.0f,
            work + samples * out, out);
    if (n == 4) {
        eq_gemm(0, 1, samples, 2 * out, kb, 1.0f, sp->x + 2 * block, kb, sp->weights + 2 * spec_block, kb, 0.0f,
                work + 2 * samples * out, 2 * out);
        eq_gemm(0, 1, samples, 2 * out, kb, 1.0f, sp->x + 3 * block, kb, sp->weights + 2 * spec_block, kb, 0.0f,
                work + 4 * samples * out, 2 * out);
    }

    for (size_t i = 0; i < samples; i++) {
        const float *u[6];
        float *y_g[4];

        u[0] = work + i * out;
        u[1] = work + (samples + i) * out;
        if (n == 4) {
            u[2] = work + 2 * samples * out + i * 2 * out;
            u[3] = u[2] + out;
            u[4] = work + 4 * samples * out + i * 2 * out;
            u[5] = u[4] + out;
        }
        for (size_t g = 0; g < n; g++)
            y_g[g] = y + (i * n + g) * out;
        eq_spectral_outputs(n, out, u, bias, 1, y_g);
    }
    return EQ_OK;
}

eq_status eq_dense_spectral_backward(eq_dense_spectral *sp, size_t branches, size_t out, size_t in, size_t samples,
                                     const float *dy, float *dweight, float *dx)
{
    const size_t n = branches, kb = in / n;
    const size_t block = samples * kb, spec_block = out * kb, rows = samples * out;

    eq_status status = reserve(&sp->dweights, &sp->dweights_capacity, out * in, "weight gradient");
    if (status != EQ_OK)
        return status;

    /* du0, du1 (or du2), then dP, dQ and -dP for n = 4: (N, OUT) each. */
    float *du = sp->work;
    for (size_t i = 0; i < samples; i++) {
        const float *dy_g[4];
        float *du_q[5];

        for (size_t g = 0; g < n; g++)
            dy_g[g] = dy + (i * n + g) * out;
        for (size_t q = 0; q < (n == 4 ? 5u : 2u); q++)
            du_q[q] = du + q * rows + i * out;
        eq_spectral_output_gradients(n, out, dy_g, du_q);
    }

    /* dU0 (OUT, KB) = du0^T X^0 and dU1 = du1^T X^1; for n = 4,
     * dA = [dP; dQ]^T [a; b] and dB = [dQ; -dP]^T [a; b], with the
     * transformed blocks a and b adjacent in sp->x. */
    float *dspec = sp->dweights;
    eq_gemm(1, 0, out, kb, samples, 1.0f, du, out, sp->x, kb, 0.0f, dspec, kb);
    eq_gemm(1, 0, out, kb, samples, 1.0f, du + rows, out, sp->x + block, kb, 0.0f, dspec + spec_block, kb);
    if (n == 4) {
        eq_gemm(1, 0, out, kb, 2 * samples, 1.0f, du + 2 * rows, out, sp->x + 2 * block, kb, 0.0f,
                dspec + 2 * spec_block, kb);
        eq_gemm(1, 0, out, kb, 2 * samples, 1.0f, du + 3 * rows, out, sp->x + 2 * block, kb, 0.0f,
                dspec + 3 * spec_block, kb);
    }
    eq_spectral_add_gradient(n, out, kb, dspec, dweight, in);
    if (!dx)
        return EQ_OK;

    /* d(X^0) (N, KB) = du0 U0 and d(X^1) = du1 U1; for n = 4,
     * da = dP A + dQ B and db = dQ A - dP B. Written over sp->x, which the
     * weight gradient no longer needs. */
    const float *a_w = sp->weights + 2 * spec_block, *b_w = sp->weights + 3 * spec_block;
    eq_gemm(0, 0, samples, kb, out, 1.0f, du, out, sp->weights, kb, 0.0f, sp->x, kb);
    eq_gemm(0, 0, samples, kb, out, 1.0f, du + rows, out, sp->weights + spec_block, kb, 0.0f, sp->x + block, kb);
    if (n == 4) {
        eq_gemm(0, 0, samples, kb, out, 1.0f, du + 2 * rows, out, a_w, kb, 0.0f, sp->x + 2 * block, kb);
        eq_gemm(0, 0, samples, kb, out, 1.0f, du + 3 * rows, out, b_w, kb, 1.0f, sp->x + 2 * block, kb);
        eq_gemm(0, 0, samples, kb, out, 1.0f, du + 3 * rows, out, a_w, kb, 0.0f, sp->x + 3 * block, kb);
        eq_gemm(0, 0, samples, kb, out, 1.0f, du + 4 * rows, out, b_w, kb, 1.0f, sp->x + 3 * block, kb);
    }

    for (size_t i = 0; i < samples; i++) {
        float *grads[4];
        for (size_t b = 0; b < n; b++)
            grads[b] = sp->x + b * block + i * kb;
        eq_spectral_transform_adjoint(n, kb, grads);
        for (size_t b = 0; b < n; b++)
            for (size_t r = 0; r < kb; r++)
                dx[i * in + b * kb + r] = grads[b][r];
    }
    return EQ_OK;
}

void eq_dense_spectral_release(eq_dense_spectral *sp)
{
    eq_free(sp->weights);
    eq_free(sp->dweights);
    eq_free(sp->x);
    eq_free(sp->work);
    *sp = (eq_dense_spectral){ 0 };
}
