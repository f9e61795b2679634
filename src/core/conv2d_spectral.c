/* The multi-branch conv2d for a cyclic source table, computed in the real
 * Fourier basis of the branch index (spectral.h has the transform and why
 * the outputs stay exactly equivariant). The column blocks of a chunk are
 * transformed in place after the lowering, the products run as packed
 * GEMMs, and the outputs are combined per branch. Backward runs the adjoints
 * of the same steps. The weight gradient is gathered for (U0, U1) or
 * (U0, U2, A, B) in the image-chunk parts and mapped to the weight blocks
 * once, after the parts are added. */

#include "core/conv2d_chunks.h"
#include "core/error.h"
#include "core/spectral.h"

/* From GEMM_GRADIENT_MIN_OC output channels on, the weight gradient runs
 * as a packed GEMM, which keeps its sums in registers across a tile.
 * Below, it runs on the row-product kernel, which needs no packing. On the AMD EPYC
 * of docs/BENCHMARKS.md the GEMM made the C4 backward of conv 320->32 7%
 * faster, and the row products made the small network's training (conv
 * 32->16) 3-5% faster. */
#define GEMM_GRADIENT_MIN_OC 32

size_t eq_conv2d_spectral_out_rows(const eq_conv2d *conv)
{
    /* Forward for n = 4: u0, u2 (OC rows each), then [A a; B a] and
     * [A b; B b] (2 OC each). Backward needs 5 OC. */
    return (conv->branches == 4 ? 6 : 2) * conv->oc;
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

    /* Forward: packs[0..n) contain U0, U1 (n = 2) or U0, U2, [A; B] (n = 4).
     * Backward: packs[n..2n) contain their transposes, from the spectral
     * weights of the forward call that backward differentiates. */
    size_t count = n == 4 ? 3 : 2;
    size_t first = backward ? n : 0;
    if (!backward)
        eq_spectral_weights(n, oc, kb, conv->weight, conv->k, spec);
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

/* Transforms the n column blocks (KB rows each, rows ld apart) in place,
 * or (adjoint != 0) runs the adjoint transform on their gradients. */
static void transform_columns(size_t n, size_t kb, size_t ld, size_t columns, float *cols, int adjoint)
{
    for (size_t r = 0; r < kb; r++) {
        float *rows[4];
        for (size_t b = 0; b < n; b++)
            rows[b] = cols + (b * kb + r) * ld;
        if (adjoint)
            eq_spectral_transform_adjoint(n, columns, rows);
        else
            eq_spectral_transform(n, columns, rows);
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
 * out: u0, u1 (or u2), then for n = 4 [A a; B a] and [A b; B b]. */
static void store_outputs(const eq_conv2d *conv, const eq_conv2d_chunk *ch, const float *out, float *y)
{
    const size_t n = conv->branches, ld = conv->ld;
    const size_t width = ch->p1 - ch->p0;
    const size_t products = n == 4 ? 6 : 2;

    for (size_t i = 0; i < ch->count; i++) {
        for (size_t oc = 0; oc < conv->oc; oc++) {
            const float *u[6];
            float *y_g[4];

            for (size_t q = 0; q < products; q++)
                u[q] = out + (q * conv->oc + oc) * ld + i * width;
            for (size_t g = 0; g < n; g++)
                y_g[g] = sample_row(conv, ch, y, i, g, oc);
            eq_spectral_outputs(n, width, u, &conv->bias[oc], 0, y_g);
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
    transform_columns(n, kb, ld, columns, cols, 0);

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
    const size_t n = conv->branches, ld = conv->ld;
    const size_t width = ch->p1 - ch->p0;
    const size_t products = n == 4 ? 5 : 2;
    float *base = (float *)dy; /* sample_row does not write */

    for (size_t i = 0; i < ch->count; i++) {
        for (size_t oc = 0; oc < conv->oc; oc++) {
            const float *dy_g[4];
            float *du[5];

            for (size_t g = 0; g < n; g++)
                dy_g[g] = sample_row(conv, ch, base, i, g, oc);
            for (size_t q = 0; q < products; q++)
                du[q] = out + (q * conv->oc + oc) * ld + i * width;
            eq_spectral_output_gradients(n, width, dy_g, du);
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
    transform_columns(n, kb, ld, columns, cols, 0);
    transform_gradients(conv, ch, dy, out);

    /* Every branch's gradient is in du0, the sum over the branches. */
    for (size_t o = 0; o < oc; o++) {
        double total = eq_conv2d_plane_sum(out + o * ld, columns);
        db[o] = first_tile ? total : db[o] + total;
    }

    /* dU0 = du0 x^0^T and dU1 = du1 x^1^T (dU2 = du2 x^2^T for n = 4), each
     * (OC, KB). For n = 4, [dA; dB] (2 OC, KB) = [dP; dQ] a^T + [dQ; -dP] b^T. */
    if (oc >= GEMM_GRADIENT_MIN_OC) {
        const float beta = first_tile ? 0.0f : 1.0f;
        eq_gemm(0, 1, oc, kb, columns, 1.0f, out, ld, cols, ld, beta, dspec, kb);
        eq_gemm(0, 1, oc, kb, columns, 1.0f, out + oc * ld, ld, cols + block, ld, beta, dspec + spec_block, kb);
        if (n == 4) {
            eq_gemm(0, 1, 2 * oc, kb, columns, 1.0f, out + 2 * oc * ld, ld, cols + 2 * block, ld, beta,
                    dspec + 2 * spec_block, kb);
            eq_gemm(0, 1, 2 * oc, kb, columns, 1.0f, out + 3 * oc * ld, ld, cols + 3 * block, ld, 1.0f,
                    dspec + 2 * spec_block, kb);
        }
    } else {
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
    transform_columns(n, kb, ld, columns, cols, 1);
    eq_conv2d_unlower_chunk(conv, ch, cols, dx);
}

void eq_conv2d_spectral_add_gradient(eq_conv2d *conv, const float *dspec)
{
    eq_spectral_add_gradient(conv->branches, conv->oc, conv->k / conv->branches, dspec, conv->dweight, conv->k);
}
