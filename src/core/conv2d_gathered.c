/* The multi-branch conv2d for inputs that each branch reads through a row
 * permutation of the shared column matrix (conv2d_impl.h). Every branch
 * multiplies the full weight matrix with its gathered rows in one GEMM.
 * Its outputs therefore have the bits of the plain layer on the
 * transformed copy. */
#include <string.h>

#include "core/conv2d_chunks.h"
#include "core/error.h"

/* Packs W (OC, K) for the forward (packs[0]) and, for backward,
 * A = [W_0; ...; W_(n-1)]^T (K, n * OC) into packs[n], where
 * W_g[o][rows_g[k]] = W[o][k]: the map from every branch's output
 * gradient to the shared column gradient. */
eq_status eq_conv2d_gathered_pack(eq_conv2d *conv, int backward)
{
    const size_t n = conv->branches, k = conv->k, oc = conv->oc;
    const size_t columns = conv->images_per_chunk * conv->tile;

    if (!backward)
        return eq_gemm_pack(&conv->packs[0], 0, oc, k, conv->weight, k, columns);

    if (!conv->gathered_weights) {
        conv->gathered_weights = eq_alloc_floats(n * oc * k);
        if (!conv->gathered_weights)
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "conv2d: cannot allocate %zu floats for the branch weights",
                            n * oc * k);
    }
    for (size_t g = 0; g < n; g++) {
        const size_t *rows = conv->rows + g * k;
        for (size_t o = 0; o < oc; o++) {
            const float *w = conv->weight + o * k;
            float *w_g = conv->gathered_weights + (g * oc + o) * k;
            for (size_t q = 0; q < k; q++)
                w_g[rows[q]] = w[q];
        }
    }
    return eq_gemm_pack(&conv->packs[n], 1, k, n * oc, conv->gathered_weights, k, columns);
}

/* Returns where column p of the chunk goes in branch g's output plane. */
static size_t position(const eq_conv2d *conv, size_t g, size_t p)
{
    return conv->positions[g * conv->geom.oh * conv->geom.ow + p];
}

void eq_conv2d_gathered_forward_chunk(const eq_conv2d *conv, eq_conv2d_scratch *scratch,
                                      const eq_conv2d_chunk *ch, float *y)
{
    const size_t n = conv->branches, ld = conv->ld;
    const size_t plane = conv->geom.oh * conv->geom.ow;
    const size_t columns = eq_conv2d_chunk_columns(ch), width = ch->p1 - ch->p0;

    eq_conv2d_lower_chunk(conv, ch, scratch->cols);
    for (size_t g = 0; g < n; g++) {
        /* out (OC, columns) = W * cols[rows_g], then scattered to the
         * branch's output positions with the bias. */
        eq_gemm_packed_run_rows(&conv->packs[0], columns, 1.0f, scratch->cols, ld, conv->rows + g * conv->k, 0.0f,
                                scratch->out, ld);
        for (size_t i = 0; i < ch->count; i++) {
            size_t sample = (ch->n0 + i) * n + g;
            for (size_t oc = 0; oc < conv->oc; oc++) {
                const float *src = scratch->out + oc * ld + i * width;
                float *y_nc = y + (sample * conv->oc + oc) * plane;
                const float bias = conv->bias[oc];
                for (size_t p = 0; p < width; p++)
                    y_nc[position(conv, g, ch->p0 + p)] = src[p] + bias;
            }
        }
    }
}

void eq_conv2d_gathered_backward_tile(const eq_conv2d *conv, eq_conv2d_scratch *scratch, const eq_conv2d_chunk *ch,
                                      int first_tile, const float *dy, float *dx, float *dw, double *db)
{
    const size_t n = conv->branches, k = conv->k, oc_count = conv->oc, ld = conv->ld;
    const size_t plane = conv->geom.oh * conv->geom.ow;
    const size_t columns = eq_conv2d_chunk_columns(ch), width = ch->p1 - ch->p0;

    eq_conv2d_lower_chunk(conv, ch, scratch->cols);

    /* out (n * OC, columns): every branch's dy in the chunk's column order. */
    for (size_t g = 0; g < n; g++) {
        for (size_t i = 0; i < ch->count; i++) {
            size_t sample = (ch->n0 + i) * n + g;
            for (size_t oc = 0; oc < oc_count; oc++) {
                const float *dy_nc = dy + (sample * oc_count + oc) * plane;
                float *dst = scratch->out + (g * oc_count + oc) * ld + i * width;
                for (size_t p = 0; p < width; p++)
                    dst[p] = dy_nc[position(conv, g, ch->p0 + p)];
            }
        }
    }

    for (size_t oc = 0; oc < oc_count; oc++) {
        double total = first_tile ? 0.0 : db[oc];
        for (size_t g = 0; g < n; g++)
            total += eq_conv2d_plane_sum(scratch->out + (g * oc_count + oc) * ld, columns);
        db[oc] = total;
    }

    /* dW[o][k] (+)= sum over branches g of (dy_g cols^T)[o][rows_g[k]]. */
    for (size_t g = 0; g < n; g++) {
        const size_t *rows = conv->rows + g * k;
        eq_gemm(0, 1, oc_count, k, columns, 1.0f, scratch->out + g * oc_count * ld, ld, scratch->cols, ld, 0.0f,
                scratch->product, k);
        for (size_t o = 0; o < oc_count; o++) {
            const float *src = scratch->product + o * k;
            float *dw_o = dw + o * k;
            if (first_tile && g == 0) {
                for (size_t q = 0; q < k; q++)
                    dw_o[q] = src[rows[q]];
            } else {
                for (size_t q = 0; q < k; q++)
                    dw_o[q] += src[rows[q]];
            }
        }
    }
    if (!dx)
        return;

    /* dcols (K, columns) = A (K, n * OC) * out, written over cols. */
    eq_gemm_packed_run(&conv->packs[n], 0, columns, 1.0f, scratch->out, ld, 0.0f, scratch->cols, ld);
    eq_conv2d_unlower_chunk(conv, ch, scratch->cols, dx);
}
