/* The Fourier transform over the branch index of a cyclic source table:
 * weights, inputs, outputs and their adjoints (see spectral.h). */
#include "core/spectral.h"

#include "core/cpu.h"

void eq_spectral_weights(size_t n, size_t rows, size_t kb, const float *w, size_t ldw, float *spec)
{
    const size_t block = rows * kb; /* floats of one spectral matrix */

    for (size_t o = 0; o < rows; o++) {
        const float *w0 = w + o * ldw, *w1 = w0 + kb;
        float *s = spec + o * kb;

        if (n == 2) {
            for (size_t r = 0; r < kb; r++) {
                s[r] = (w0[r] + w1[r]) * 0.5f;
                s[block + r] = (w0[r] - w1[r]) * 0.5f;
            }
            continue;
        }

        const float *w2 = w1 + kb, *w3 = w2 + kb;
        for (size_t r = 0; r < kb; r++) {
            float even = w0[r] + w2[r], odd = w1[r] + w3[r];
            s[r] = (even + odd) * 0.25f;
            s[block + r] = (even - odd) * 0.25f;
            s[2 * block + r] = (w0[r] - w2[r]) * 0.5f;
            s[3 * block + r] = (w3[r] - w1[r]) * 0.5f;
        }
    }
}

void eq_spectral_add_gradient(size_t n, size_t rows, size_t kb, const float *dspec, float *dw, size_t ldw)
{
    const size_t block = rows * kb;

    for (size_t o = 0; o < rows; o++) {
        float *dw0 = dw + o * ldw, *dw1 = dw0 + kb;
        const float *d = dspec + o * kb;

        if (n == 2) {
            for (size_t r = 0; r < kb; r++) {
                dw0[r] += (d[r] + d[block + r]) * 0.5f;
                dw1[r] += (d[r] - d[block + r]) * 0.5f;
            }
            continue;
        }

        float *dw2 = dw1 + kb, *dw3 = dw2 + kb;
        for (size_t r = 0; r < kb; r++) {
            float sum = (d[r] + d[block + r]) * 0.25f, diff = (d[r] - d[block + r]) * 0.25f;
            float da = d[2 * block + r] * 0.5f, db = d[3 * block + r] * 0.5f;
            dw0[r] += sum + da;
            dw1[r] += diff - db;
            dw2[r] += sum - da;
            dw3[r] += diff + db;
        }
    }
}

EQ_VECTOR_CLONES
void eq_spectral_transform(size_t n, size_t len, float *const v[4])
{
    float *x0 = v[0], *x1 = v[1];

    if (n == 2) {
        for (size_t p = 0; p < len; p++) {
            float sum = x0[p] + x1[p], diff = x0[p] - x1[p];
            x0[p] = sum;
            x1[p] = diff;
        }
        return;
    }

    float *x2 = v[2], *x3 = v[3];
    for (size_t p = 0; p < len; p++) {
        float even = x0[p] + x2[p], odd = x1[p] + x3[p];
        float a = x0[p] - x2[p], b = x1[p] - x3[p];
        x0[p] = even + odd;
        x1[p] = even - odd;
        x2[p] = a;
        x3[p] = b;
    }
}

EQ_VECTOR_CLONES
void eq_spectral_transform_adjoint(size_t n, size_t len, float *const v[4])
{
    /* The transform for n = 2 is symmetric, so it is its own adjoint. */
    if (n == 2) {
        eq_spectral_transform(n, len, v);
        return;
    }

    /* d0, d1, d2, d3 contain the gradients of x^0, x^2, a and b. */
    float *d0 = v[0], *d1 = v[1], *d2 = v[2], *d3 = v[3];
    for (size_t p = 0; p < len; p++) {
        float even = d0[p] + d1[p], odd = d0[p] - d1[p];
        float da = d2[p], db = d3[p];
        d0[p] = even + da;
        d2[p] = even - da;
        d1[p] = odd + db;
        d3[p] = odd - db;
    }
}

EQ_VECTOR_CLONES
void eq_spectral_outputs(size_t n, size_t len, const float *const u[6], const float *bias, size_t bias_step,
                         float *const y[4])
{
    const float *u0 = u[0], *u1 = u[1];

    if (n == 2) {
        for (size_t p = 0; p < len; p++) {
            float b = bias[p * bias_step];
            y[0][p] = ((u0[p] + u1[p]) + b) + 0.0f;
            y[1][p] = ((u0[p] - u1[p]) + b) + 0.0f;
        }
        return;
    }

    /* u1 is u2 here; then A a, B a, A b and B b. */
    const float *aa = u[2], *ba = u[3], *ab = u[4], *bb = u[5];
    for (size_t p = 0; p < len; p++) {
        float b = bias[p * bias_step];
        float sum = u0[p] + u1[p], diff = u0[p] - u1[p];
        float re = aa[p] - bb[p], im = ab[p] + ba[p]; /* P, Q */
        y[0][p] = ((sum + re) + b) + 0.0f;
        y[1][p] = ((diff + im) + b) + 0.0f;
        y[2][p] = ((sum - re) + b) + 0.0f;
        y[3][p] = ((diff - im) + b) + 0.0f;
    }
}

EQ_VECTOR_CLONES
void eq_spectral_output_gradients(size_t n, size_t len, const float *const dy[4], float *const du[5])
{
    const float *dy0 = dy[0], *dy1 = dy[1];

    if (n == 2) {
        for (size_t p = 0; p < len; p++) {
            du[0][p] = dy0[p] + dy1[p];
            du[1][p] = dy0[p] - dy1[p];
        }
        return;
    }

    const float *dy2 = dy[2], *dy3 = dy[3];
    for (size_t p = 0; p < len; p++) {
        float even = dy0[p] + dy2[p], odd = dy1[p] + dy3[p];
        du[0][p] = even + odd;
        du[1][p] = even - odd;
        du[2][p] = dy0[p] - dy2[p];
        du[3][p] = dy1[p] - dy3[p];
        du[4][p] = dy2[p] - dy0[p];
    }
}
