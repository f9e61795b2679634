/* The multi-branch conv2d for a cyclic source table, computed in the real
 * Fourier basis of the branch index.
 *
 * With sources[g * n + b] = (b + g) mod n, branch g computes
 *     y_g = sum over b of W_b x_(b+g) + bias,
 * where W_b is weight block b (OC, KB) and x_c column block c (KB, columns).
 * The real Fourier transform over the block index turns this correlation
 * into independent products, one per frequency:
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
 * n = 4; the transforms are additions.
 *
 * Exactness. Shifting the input blocks by one, x_c -> x_(c+1), maps
 * (x^0, x^1) to (x^0, -x^1) and (x^0, x^2, a, b) to (x^0, -x^2, b, -a)
 * exactly, because IEEE addition is commutative and negation is exact.
 * Every GEMM element depends only on its own row and column (gemm.h), and
 * negating a column negates the result exactly. The products therefore
 * become (u0, -u1) and (u0, -u2, Q, -P). The outputs then come out shifted,
 * (y1, y0) and (y1, y2, y3, y0), bit for bit. The sign of an exact zero can differ
 * along the way; adding +0 to each output maps -0 to +0, so the outputs
 * equal bit for bit. Under this source table the path is as exactly
 * equivariant as the block path.
 *
 * Backward runs the adjoints of the same steps: the output gradient is
 * transformed, the products are transposed, and the column gradient is
 * transformed back. The weight gradient is gathered for (U0, U1) or
 * (U0, U2, A, B) in the image-chunk parts and mapped to the weight blocks
 * once, after the parts are added. */
#include <string.h>

#include "core/conv2d_chunks.h"
#include "core/error.h"

/* The path is on unless a test or benchmark turns it off. Read without a
 * lock: switching while a conv2d call runs is not supported. */
static int spectral_enabled = 1;

void eq_conv2d_set_spectral(int enabled)
{
    spectral_enabled = enabled != 0;
}

int eq_conv2d_spectral_applies(size_t branches, const size_t *sources)
{
    if (!spectral_enabled || (branches != 2 && branches != 4))
        return 0;
    for (size_t g = 0; g < branches; g++)
        for (size_t b = 0; b < branches; b++)
            if (sources[g * branches + b] != (b + g) % branches)
                return 0;
    return 1;
}

size_t eq_conv2d_spectral_out_rows(const eq_conv2d *conv)
{
    /* Forward for n = 4: u0, u2 (OC rows each), then [A a; B a] and
     * [A b; B b] (2 OC each). Backward needs 5 OC. */
    return (conv->branches == 4 ? 6 : 2) * conv->oc;
}

/* The spectral weights, (n * OC, KB) in conv->weight_rows:
 * n = 2: [U0; U1]; n = 4: [U0; U2; A; B]. */
static void transform_weights(const eq_conv2d *conv, float *spec)
{
    const size_t n = conv->branches, kb = conv->k / n, oc = conv->oc;
    const size_t block = oc * kb; /* floats of one spectral matrix */

    for (size_t o = 0; o < oc; o++) {
        const float *w0 = conv->weight + o * conv->k, *w1 = w0 + kb;
        float *s0 = spec + o * kb;

        if (n == 2) {
            for (size_t r = 0; r < kb; r++) {
                s0[r] = (w0[r] + w1[r]) * 0.5f;
                s0[block + r] = (w0[r] - w1[r]) * 0.5f;
            }
            continue;
        }

        const float *w2 = w1 + kb, *w3 = w2 + kb;
        for (size_t r = 0; r < kb; r++) {
            float even = w0[r] + w2[r], odd = w1[r] + w3[r];
            s0[r] = (even + odd) * 0.25f;
            s0[block + r] = (even - odd) * 0.25f;
            s0[2 * block + r] = (w0[r] - w2[r]) * 0.5f;
            s0[3 * block + r] = (w3[r] - w1[r]) * 0.5f;
        }
    }
}

eq_status eq_conv2d_spectral_pack(eq_conv2d *conv, int backward)
{
    const size_t n = conv->branches, kb = conv->k / n, oc = conv->oc;
    const size_t columns = conv->images_per_chunk * conv->tile;
    float *spec;

    if (!conv->weight_rows) {
        conv->weight_rows = eq_alloc_floats(oc * conv->k);
        if (!conv->weight_rows)
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "conv2d: cannot allocate %zu floats for the spectral weights",
                            oc * conv->k);
    }
    spec = conv->weight_rows;

    /* Forward: packs[0..n) hold U0, U1 (n = 2) or U0, U2, [A; B] (n = 4).
     * Backward: packs[n..2n) hold their transposes, from the spectral
     * weights of the forward call that backward differentiates. */
    size_t count = n == 4 ? 3 : 2;
    size_t first = backward ? n : 0;
    if (!backward)
        transform_weights(conv, spec);
    for (size_t i = 0; i < count; i++) {
        size_t rows = i == 2 ? 2 * oc : oc;
        const float *a = spec + i * oc * kb;
        eq_status status = backward ? eq_gemm_pack(&conv->packs[first + i], 1, kb, rows, a, kb, columns)
                                    : eq_gemm_pack(&conv->packs[first + i], 0, rows, kb, a, kb, columns);
        if (status != EQ_OK)
            return status;
    }
    return EQ_OK;
}

/* Replaces the n column blocks (KB rows each, rows ld apart) by their
 * transform: [x^0, x^1] or [x^0, x^2, a, b]. */
static void transform_columns(size_t n, size_t kb, size_t ld, size_t columns, float *cols)
{
    for (size_t r = 0; r < kb; r++) {
        float *x0 = cols + r * ld, *x1 = x0 + kb * ld;

        if (n == 2) {
            for (size_t p = 0; p < columns; p++) {
                float sum = x0[p] + x1[p], diff = x0[p] - x1[p];
                x0[p] = sum;
                x1[p] = diff;
            }
            continue;
        }

        float *x2 = x1 + kb * ld, *x3 = x2 + kb * ld;
        for (size_t p = 0; p < columns; p++) {
            float even = x0[p] + x2[p], odd = x1[p] + x3[p];
            float a = x0[p] - x2[p], b = x1[p] - x3[p];
            x0[p] = even + odd;
            x1[p] = even - odd;
            x2[p] = a;
            x3[p] = b;
        }
    }
}

/* The adjoint of transform_columns, in place: the column gradients of the
 * spectral blocks become those of the n input blocks. */
static void untransform_columns(size_t n, size_t kb, size_t ld, size_t columns, float *cols)
{
    for (size_t r = 0; r < kb; r++) {
        float *x0 = cols + r * ld, *x1 = x0 + kb * ld;

        if (n == 2) {
            for (size_t p = 0; p < columns; p++) {
                float sum = x0[p] + x1[p], diff = x0[p] - x1[p];
                x0[p] = sum;
                x1[p] = diff;
            }
            continue;
        }

        float *x2 = x1 + kb * ld, *x3 = x2 + kb * ld;
        for (size_t p = 0; p < columns; p++) {
            float even = x0[p] + x1[p], odd = x0[p] - x1[p]; /* d(x^0) + d(x^2), d(x^0) - d(x^2) */
            float da = x2[p], db = x3[p];
            x0[p] = even + da;
            x2[p] = even - da;
            x1[p] = odd + db;
            x3[p] = odd - db;
        }
    }
}

/* Row oc of branch g's output (or gradient) for image i of the chunk. */
static float *sample_row(const eq_conv2d *conv, const eq_conv2d_chunk *ch, float *base, size_t i, size_t g,
                         size_t oc)
{
    const size_t positions = conv->geom.oh * conv->geom.ow;
    const size_t sample = (ch->n0 + i) * conv->branches + g;

    return base + (sample * conv->oc + oc) * positions + ch->p0;
}

/* Writes the n branch outputs of the chunk into y from the products in
 * out, plus the bias and +0 (see the top of the file). */
static void store_outputs(const eq_conv2d *conv, const eq_conv2d_chunk *ch, const float *out, float *y)
{
    const size_t oc_count = conv->oc, ld = conv->ld;
    const size_t width = ch->p1 - ch->p0;

    for (size_t i = 0; i < ch->count; i++) {
        for (size_t oc = 0; oc < oc_count; oc++) {
            const float bias = conv->bias[oc];
            const float *u0 = out + oc * ld + i * width;
            const float *u1 = u0 + oc_count * ld; /* u1, or u2 for n = 4 */
            float *y0 = sample_row(conv, ch, y, i, 0, oc);
            float *y1 = sample_row(conv, ch, y, i, 1, oc);

            if (conv->branches == 2) {
                for (size_t p = 0; p < width; p++) {
                    y0[p] = ((u0[p] + u1[p]) + bias) + 0.0f;
                    y1[p] = ((u0[p] - u1[p]) + bias) + 0.0f;
                }
                continue;
            }

            const float *aa = u0 + 2 * oc_count * ld, *ba = aa + oc_count * ld; /* A a, B a */
            const float *ab = ba + oc_count * ld, *bb = ab + oc_count * ld;     /* A b, B b */
            float *y2 = sample_row(conv, ch, y, i, 2, oc);
            float *y3 = sample_row(conv, ch, y, i, 3, oc);
            for (size_t p = 0; p < width; p++) {
                float sum = u0[p] + u1[p], diff = u0[p] - u1[p];
                float re = aa[p] - bb[p], im = ab[p] + ba[p]; /* P, Q */
                y0[p] = ((sum + re) + bias) + 0.0f;
                y1[p] = ((diff + im) + bias) + 0.0f;
                y2[p] = ((sum - re) + bias) + 0.0f;
                y3[p] = ((diff - im) + bias) + 0.0f;
            }
        }
    }
}

void eq_conv2d_spectral_forward_chunk(const eq_conv2d *conv, eq_conv2d_scratch *scratch,
                                      const eq_conv2d_chunk *ch, float *y)
{
    const size_t n = conv->branches, kb = conv->k / n, oc = conv->oc, ld = conv->ld;
    const size_t columns = eq_conv2d_chunk_columns(ch);
    const size_t block = kb * ld; /* floats of one column block */
    float *cols = scratch->cols, *out = scratch->out;

    eq_conv2d_lower_chunk(conv, ch, cols);
    transform_columns(n, kb, ld, columns, cols);

    eq_gemm_packed_run(&conv->packs[0], 0, columns, 1.0f, cols, ld, 0.0f, out, ld);
    eq_gemm_packed_run(&conv->packs[1], 0, columns, 1.0f, cols + block, ld, 0.0f, out + oc * ld, ld);
    if (n == 4) {
        eq_gemm_packed_run(&conv->packs[2], 0, columns, 1.0f, cols + 2 * block, ld, 0.0f, out + 2 * oc * ld, ld);
        eq_gemm_packed_run(&conv->packs[2], 0, columns, 1.0f, cols + 3 * block, ld, 0.0f, out + 4 * oc * ld, ld);
    }

    store_outputs(conv, ch, out, y);
}

/* Fills out with the transformed output gradient of the chunk, rows ld
 * apart: n = 2: [du0; du1]; n = 4: [du0; du2; dP; dQ; -dP], OC rows each. */
static void transform_gradients(const eq_conv2d *conv, const eq_conv2d_chunk *ch, const float *dy, float *out)
{
    const size_t oc_count = conv->oc, ld = conv->ld;
    const size_t width = ch->p1 - ch->p0;
    float *base = (float *)dy; /* sample_row does not write */

    for (size_t i = 0; i < ch->count; i++) {
        for (size_t oc = 0; oc < oc_count; oc++) {
            const float *dy0 = sample_row(conv, ch, base, i, 0, oc);
            const float *dy1 = sample_row(conv, ch, base, i, 1, oc);
            float *du0 = out + oc * ld + i * width;
            float *du1 = du0 + oc_count * ld; /* du1, or du2 for n = 4 */

            if (conv->branches == 2) {
                for (size_t p = 0; p < width; p++) {
                    du0[p] = dy0[p] + dy1[p];
                    du1[p] = dy0[p] - dy1[p];
                }
                continue;
            }

            const float *dy2 = sample_row(conv, ch, base, i, 2, oc);
            const float *dy3 = sample_row(conv, ch, base, i, 3, oc);
            float *dre = du1 + oc_count * ld, *dim = dre + oc_count * ld, *neg_dre = dim + oc_count * ld;
            for (size_t p = 0; p < width; p++) {
                float even = dy0[p] + dy2[p], odd = dy1[p] + dy3[p];
                du0[p] = even + odd;
                du1[p] = even - odd;
                dre[p] = dy0[p] - dy2[p];
                dim[p] = dy1[p] - dy3[p];
                neg_dre[p] = dy2[p] - dy0[p];
            }
        }
    }
}

void eq_conv2d_spectral_backward_tile(const eq_conv2d *conv, eq_conv2d_scratch *scratch, const eq_conv2d_chunk *ch,
                                      int first_tile, const float *dy, float *dx, float *dspec, double *db)
{
    const size_t n = conv->branches, kb = conv->k / n, oc = conv->oc, ld = conv->ld;
    const size_t columns = eq_conv2d_chunk_columns(ch);
    const size_t block = kb * ld; /* floats of one column block */
    const size_t spec_block = oc * kb; /* floats of one spectral matrix */
    float *cols = scratch->cols, *out = scratch->out;

    eq_conv2d_lower_chunk(conv, ch, cols);
    transform_columns(n, kb, ld, columns, cols);
    transform_gradients(conv, ch, dy, out);

    /* Every branch's gradient is in du0, the sum over the branches. */
    for (size_t o = 0; o < oc; o++) {
        double total = eq_conv2d_plane_sum(out + o * ld, columns);
        db[o] = first_tile ? total : db[o] + total;
    }

    /* dU0 = du0 x^0^T and dU1 = du1 x^1^T (dU2 = du2 x^2^T for n = 4), each
     * (OC, KB). For n = 4, [dA; dB] (2 OC, KB) = [dP; dQ] a^T + [dQ; -dP] b^T. */
    eq_dot_term terms[2];
    terms[0] = (eq_dot_term){ out, ld, cols, ld };
    eq_dot_nt(oc, kb, columns, terms, 1, !first_tile, dspec, kb);
    terms[0] = (eq_dot_term){ out + oc * ld, ld, cols + block, ld };
    eq_dot_nt(oc, kb, columns, terms, 1, !first_tile, dspec + spec_block, kb);
    if (n == 4) {
        terms[0] = (eq_dot_term){ out + 2 * oc * ld, ld, cols + 2 * block, ld };
        terms[1] = (eq_dot_term){ out + 3 * oc * ld, ld, cols + 3 * block, ld };
        eq_dot_nt(2 * oc, kb, columns, terms, 2, !first_tile, dspec + 2 * spec_block, kb);
    }
    if (!dx)
        return;

    /* d(x^0) = U0^T du0, d(x^1) = U1^T du1 (d(x^2) = U2^T du2), and for
     * n = 4: da = [A^T B^T] [dP; dQ], db = [A^T B^T] [dQ; -dP]. Written over
     * cols, which the weight gradient no longer needs. */
    eq_gemm_packed_run(&conv->packs[n], 0, columns, 1.0f, out, ld, 0.0f, cols, ld);
    eq_gemm_packed_run(&conv->packs[n + 1], 0, columns, 1.0f, out + oc * ld, ld, 0.0f, cols + block, ld);
    if (n == 4) {
        eq_gemm_packed_run(&conv->packs[n + 2], 0, columns, 1.0f, out + 2 * oc * ld, ld, 0.0f, cols + 2 * block, ld);
        eq_gemm_packed_run(&conv->packs[n + 2], 0, columns, 1.0f, out + 3 * oc * ld, ld, 0.0f, cols + 3 * block, ld);
    }
    untransform_columns(n, kb, ld, columns, cols);
    eq_conv2d_unlower_chunk(conv, ch, cols, dx);
}

void eq_conv2d_spectral_add_gradient(eq_conv2d *conv, const float *dspec)
{
    const size_t n = conv->branches, kb = conv->k / n, oc = conv->oc;
    const size_t block = oc * kb;

    for (size_t o = 0; o < oc; o++) {
        float *dw0 = conv->dweight + o * conv->k, *dw1 = dw0 + kb;
        const float *d0 = dspec + o * kb;

        if (n == 2) {
            for (size_t r = 0; r < kb; r++) {
                dw0[r] += (d0[r] + d0[block + r]) * 0.5f;
                dw1[r] += (d0[r] - d0[block + r]) * 0.5f;
            }
            continue;
        }

        float *dw2 = dw1 + kb, *dw3 = dw2 + kb;
        for (size_t r = 0; r < kb; r++) {
            float sum = (d0[r] + d0[block + r]) * 0.25f, diff = (d0[r] - d0[block + r]) * 0.25f;
            float da = d0[2 * block + r] * 0.5f, db = d0[3 * block + r] * 0.5f;
            dw0[r] += sum + da;
            dw1[r] += diff - db;
            dw2[r] += sum - da;
            dw3[r] += diff + db;
        }
    }
}
