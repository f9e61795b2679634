/* The real Fourier transform over the branch index of a cyclic source
 * table, shared by the spectral conv2d and dense paths (internal).
 *
 * With sources[g * n + b] = (b + g) mod n, branch g of a multi-branch call
 * computes y_g = sum over b of W_b x_(b+g) + bias. For n = 2 and n = 4 the
 * transform turns that into independent products:
 *
 *   n = 2:  x^0 = x0 + x1,  x^1 = x0 - x1,
 *           u0 = U0 x^0,  u1 = U1 x^1,
 *           y0 = u0 + u1,  y1 = u0 - u1,
 *           U0 = (W0 + W1) / 2,  U1 = (W0 - W1) / 2;
 *
 *   n = 4:  x^0 = (x0 + x2) + (x1 + x3),  x^2 = (x0 + x2) - (x1 + x3),
 *           a = x0 - x2,  b = x1 - x3,
 *           u0 = U0 x^0,  u2 = U2 x^2,  P = A a - B b,  Q = A b + B a,
 *           y0 = (u0 + u2) + P,  y1 = (u0 - u2) + Q,
 *           y2 = (u0 + u2) - P,  y3 = (u0 - u2) - Q,
 *           U0 = (W0 + W1 + W2 + W3) / 4,  U2 = (W0 - W1 + W2 - W3) / 4,
 *           A = (W0 - W2) / 2,  B = (W3 - W1) / 2.
 *
 * That is 2 block products instead of 4 for n = 2, and 6 instead of 16 for
 * n = 4 (A and B applied to a and to b); the transforms are additions.
 *
 * Exactness. Shifting the input blocks by one, x_c -> x_(c+1), maps
 * (x^0, x^1) to (x^0, -x^1) and (x^0, x^2, a, b) to (x^0, -x^2, b, -a)
 * exactly, because IEEE addition is commutative and negation is exact.
 * Every GEMM element depends only on its own row and column (gemm.h), and
 * negating a column negates the result exactly. The products therefore
 * become (u0, -u1) and (u0, -u2, Q, -P). The outputs then come out shifted,
 * (y1, y0) and (y1, y2, y3, y0), bit for bit. Only the sign of an exact
 * zero can differ on the way, and adding +0 to each output maps -0 to +0.
 * So a spectral call is as exactly equivariant as the block path. */
#ifndef EQ_CORE_SPECTRAL_H
#define EQ_CORE_SPECTRAL_H

#include <stddef.h>

/* Computes the spectral weights of W (rows, n * KB), rows ldw apart, into
 * spec: n matrices (rows, KB), [U0; U1] or [U0; U2; A; B]. */
void eq_spectral_weights(size_t n, size_t rows, size_t kb, const float *w, size_t ldw, float *spec);

/* Adds to dw (rows, n * KB), rows ldw apart, the weight gradient that the
 * gradient dspec of the spectral weights (laid out as spec above) maps to. */
void eq_spectral_add_gradient(size_t n, size_t rows, size_t kb, const float *dspec, float *dw, size_t ldw);

/* Replaces the n vectors v[b] of len floats by their transform, in place:
 * (x^0, x^1) or (x^0, x^2, a, b). */
void eq_spectral_transform(size_t n, size_t len, float *const v[4]);

/* The adjoint of eq_spectral_transform, in place: gradients of the
 * transformed vectors become gradients of the input blocks. */
void eq_spectral_transform_adjoint(size_t n, size_t len, float *const v[4]);

/* Writes the branch outputs y[g] (len floats each) from the products u:
 * (u0, u1), or (u0, u2, A a, B a, A b, B b) for n = 4. Element p adds
 * bias[p * bias_step] and +0. */
void eq_spectral_outputs(size_t n, size_t len, const float *const u[6], const float *bias, size_t bias_step,
                         float *const y[4]);

/* Writes the gradients of the products from the branch output gradients
 * dy[g]: (du0, du1), or (du0, du2, dP, dQ, -dP) for n = 4. */
void eq_spectral_output_gradients(size_t n, size_t len, const float *const dy[4], float *const du[5]);

#endif
