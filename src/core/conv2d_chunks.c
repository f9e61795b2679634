/* Column-buffer chunking of conv2d: the plan, the per-thread scratch, the
 * lowering of one chunk and the moves between a chunk's GEMM buffer and the
 * output tensor. */
#include "core/conv2d_chunks.h"

#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/error.h"
#include "equivar/threads.h"

/* Maximum size of a column buffer in floats (2 MiB), one per thread. The
 * batch is lowered one chunk of whole images at a time, so memory stays
 * bounded for any batch size. An image whose column matrix alone is larger
 * is split into tiles of output positions, with tile sizes that depend only
 * on the layer and the image size. On a 2-core AVX-512 Xeon with 2 MiB of
 * L2 per core, the 320-channel layers of the C4 reference network ran as
 * fast with 2 MiB as with 4 MiB (within the noise of a shared machine), and
 * 5-10% slower with 1 MiB. */
#define COLS_BUDGET ((size_t)1 << 19)

/* Batches are cut into at least this many chunks of whole images where the
 * batch and the column budget allow; a constant, so that the chunks, and
 * with them the order of the weight-gradient sums, never depend on the
 * thread count. */
#define MIN_CHUNKS 8

/* Positions per tile are rounded down to a multiple of this: 32 floats are
 * two 64-byte cache lines and the width of the widest GEMM tiles. */
#define TILE_ALIGN 32

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Replaces *buf with a new buffer of `count` floats. */
static eq_status reserve(float **buf, size_t count, const char *buffer_name)
{
    eq_free(*buf);
    *buf = eq_alloc_floats(count);
    if (!*buf)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "conv2d: cannot allocate the %s buffer of %zu floats",
                        buffer_name, count);
    return EQ_OK;
}

/* Gives each of `slots` thread slots a cols buffer of cols_count floats, an
 * out buffer of out_count floats and, when product_count > 0, a product
 * buffer of that many floats, reusing buffers that are big enough. */
static eq_status reserve_scratch(eq_conv2d *conv, size_t slots, size_t cols_count, size_t out_count,
                                 size_t product_count)
{
    if (slots > conv->scratch_count) {
        eq_conv2d_scratch *grown = realloc(conv->scratch, slots * sizeof *grown);
        if (!grown)
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "conv2d: cannot allocate scratch for %zu threads", slots);
        for (size_t s = conv->scratch_count; s < slots; s++)
            grown[s] = (eq_conv2d_scratch){ NULL, NULL, NULL, NULL };

        /* New slots start empty, so every slot is sized again below. */
        conv->scratch = grown;
        conv->scratch_count = slots;
        conv->cols_capacity = 0;
        conv->terms_capacity = 0;
        conv->out_capacity = 0;
        conv->product_capacity = 0;
    }

    eq_status status = EQ_OK;
    if (cols_count > conv->cols_capacity) {
        for (size_t s = 0; s < conv->scratch_count && status == EQ_OK; s++)
            status = reserve(&conv->scratch[s].cols, cols_count, "column");
        conv->cols_capacity = status == EQ_OK ? cols_count : 0;
    }
    if (status == EQ_OK && conv->branches > conv->terms_capacity) {
        for (size_t s = 0; s < conv->scratch_count && status == EQ_OK; s++) {
            free(conv->scratch[s].terms);
            conv->scratch[s].terms = malloc(conv->branches * sizeof *conv->scratch[s].terms);
            if (!conv->scratch[s].terms)
                status = eq_error(EQ_ERR_OUT_OF_MEMORY, "conv2d: cannot allocate %zu product terms",
                                  conv->branches);
        }
        conv->terms_capacity = status == EQ_OK ? conv->branches : 0;
    }
    if (status == EQ_OK && out_count > conv->out_capacity) {
        for (size_t s = 0; s < conv->scratch_count && status == EQ_OK; s++)
            status = reserve(&conv->scratch[s].out, out_count, "chunk output");
        conv->out_capacity = status == EQ_OK ? out_count : 0;
    }
    if (status == EQ_OK && product_count > conv->product_capacity) {
        for (size_t s = 0; s < conv->scratch_count && status == EQ_OK; s++)
            status = reserve(&conv->scratch[s].product, product_count, "weight product");
        conv->product_capacity = status == EQ_OK ? product_count : 0;
    }
    return status;
}

void eq_conv2d_release_scratch(eq_conv2d *conv)
{
    for (size_t s = 0; s < conv->scratch_count; s++) {
        eq_free(conv->scratch[s].cols);
        free(conv->scratch[s].terms);
        eq_free(conv->scratch[s].out);
        eq_free(conv->scratch[s].product);
    }
    free(conv->scratch);
    conv->scratch = NULL;
    conv->scratch_count = 0;
    conv->cols_capacity = 0;
    conv->terms_capacity = 0;
    conv->out_capacity = 0;
    conv->product_capacity = 0;

    for (size_t i = 0; i < conv->pack_count; i++)
        eq_gemm_packed_release(&conv->packs[i]);
    free(conv->packs);
    conv->packs = NULL;
    conv->pack_count = 0;
    eq_free(conv->weight_rows);
    conv->weight_rows = NULL;
    eq_free(conv->dspectral);
    conv->dspectral = NULL;
    eq_free(conv->gathered_weights);
    conv->gathered_weights = NULL;

    eq_free(conv->dweight_parts);
    eq_free(conv->dbias_parts);
    conv->dweight_parts = NULL;
    conv->dbias_parts = NULL;
    conv->part_capacity = 0;
}

eq_status eq_conv2d_plan_chunks(eq_conv2d *conv, eq_shape in, eq_shape out)
{
    eq_conv_geom geom = { in.c, in.h, in.w, conv->kh, conv->kw, conv->stride, conv->pad, out.h, out.w };
    size_t positions = out.h * out.w;
    size_t image_cols; /* K * OH * OW */

    conv->geom = geom;
    conv->n = in.n;
    if (eq_size_mul(conv->k, positions, &image_cols) && image_cols <= COLS_BUDGET) {
        /* Chunks of equal size, at least MIN_CHUNKS of them when the batch
         * allows, so that the threads finish together. */
        size_t chunks = (in.n + COLS_BUDGET / image_cols - 1) / (COLS_BUDGET / image_cols);
        chunks = min_size(in.n, chunks > MIN_CHUNKS ? chunks : MIN_CHUNKS);
        conv->images_per_chunk = (in.n + chunks - 1) / chunks;
        conv->tile = positions;
    } else {
        /* Tiles of at most max_tile columns (at least one), a multiple of
         * TILE_ALIGN when that fits, so that the tiles of a row start on a
         * 64-byte boundary and fill whole micro-kernel tiles. */
        size_t max_tile = COLS_BUDGET / conv->k > 0 ? COLS_BUDGET / conv->k : 1;
        conv->images_per_chunk = 1;
        conv->tile = max_tile >= TILE_ALIGN ? max_tile / TILE_ALIGN * TILE_ALIGN : max_tile;
    }

    /* Rows 64 bytes apart keep the vector loads of the GEMM and of the row
     * products on single cache lines. No overflow: bounded by N * OH * OW. */
    size_t columns = conv->images_per_chunk * conv->tile;
    conv->ld = (columns + 15) / 16 * 16;
    size_t cols_count, out_count;
    if (!eq_size_mul(conv->k, conv->ld, &cols_count) || !eq_size_mul(conv->oc, conv->ld, &out_count)
        || !eq_size_mul(out_count, conv->branches, &out_count))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "conv2d: chunk buffers for %zu columns overflow size_t", columns);

    /* A single-image chunk of the block path writes y and reads dy in
     * place; the spectral path always works in the buffer. */
    if (conv->spectral && !eq_size_mul(conv->ld, eq_conv2d_spectral_out_rows(conv), &out_count))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "conv2d: chunk buffers for %zu columns overflow size_t", columns);
    else if (!conv->spectral && !conv->rows && conv->images_per_chunk == 1)
        out_count = 1;

    /* The gathered path keeps every branch's output gradient and one
     * branch's weight gradient per slot. */
    size_t product_count = 0;
    if (conv->rows)
        product_count = conv->oc * conv->k;
    if (2 * conv->branches > conv->pack_count) {
        eq_gemm_packed *grown = realloc(conv->packs, 2 * conv->branches * sizeof *grown);
        if (!grown)
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "conv2d: cannot allocate %zu weight packs", 2 * conv->branches);
        memset(grown + conv->pack_count, 0, (2 * conv->branches - conv->pack_count) * sizeof *grown);
        conv->packs = grown;
        conv->pack_count = 2 * conv->branches;
    }
    return reserve_scratch(conv, (size_t)eq_get_num_threads(), cols_count, out_count, product_count);
}

double eq_conv2d_plane_sum(const float *plane, size_t count)
{
    double lanes[8] = { 0.0 };
    size_t p = 0;

    for (; p + 8 <= count; p += 8)
        for (size_t l = 0; l < 8; l++)
            lanes[l] += plane[p + l];
    for (size_t l = 0; p < count; p++, l++)
        lanes[l] += plane[p];
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

size_t eq_conv2d_image_chunk_count(const eq_conv2d *conv)
{
    return (conv->n + conv->images_per_chunk - 1) / conv->images_per_chunk;
}

size_t eq_conv2d_tile_count(const eq_conv2d *conv)
{
    size_t positions = conv->geom.oh * conv->geom.ow;

    return (positions + conv->tile - 1) / conv->tile;
}

eq_conv2d_chunk eq_conv2d_chunk_at(const eq_conv2d *conv, size_t j, size_t t)
{
    size_t positions = conv->geom.oh * conv->geom.ow;
    eq_conv2d_chunk ch;

    ch.n0 = j * conv->images_per_chunk;
    ch.count = min_size(conv->images_per_chunk, conv->n - ch.n0);
    ch.p0 = t * conv->tile;
    ch.p1 = min_size(ch.p0 + conv->tile, positions);
    return ch;
}

void eq_conv2d_lower_chunk(const eq_conv2d *conv, const eq_conv2d_chunk *ch, float *cols)
{
    const size_t image_size = conv->geom.c * conv->geom.h * conv->geom.w;
    const size_t width = ch->p1 - ch->p0;

    for (size_t i = 0; i < ch->count; i++)
        eq_im2col(&conv->geom, conv->x + (ch->n0 + i) * image_size, ch->p0, ch->p1, cols + i * width, conv->ld);
}

EQ_VECTOR_CLONES
void eq_conv2d_store_chunk(const eq_conv2d *conv, const eq_conv2d_chunk *ch, size_t g, const float *out,
                           float *y)
{
    const size_t positions = conv->geom.oh * conv->geom.ow;
    const size_t width = ch->p1 - ch->p0;

    for (size_t i = 0; i < ch->count; i++) {
        size_t sample = (ch->n0 + i) * conv->branches + g;
        for (size_t oc = 0; oc < conv->oc; oc++) {
            float *y_nc = y + (sample * conv->oc + oc) * positions + ch->p0;
            const float *src = out + oc * conv->ld + i * width;
            const float b = conv->bias[oc];
            for (size_t p = 0; p < width; p++)
                y_nc[p] = src[p] + b;
        }
    }
}

void eq_conv2d_gather_chunk(const eq_conv2d *conv, const eq_conv2d_chunk *ch, size_t g, const float *dy,
                            float *out)
{
    const size_t positions = conv->geom.oh * conv->geom.ow;
    const size_t width = ch->p1 - ch->p0;

    for (size_t i = 0; i < ch->count; i++) {
        size_t sample = (ch->n0 + i) * conv->branches + g;
        for (size_t oc = 0; oc < conv->oc; oc++) {
            const float *dy_nc = dy + (sample * conv->oc + oc) * positions + ch->p0;
            memcpy(out + oc * conv->ld + i * width, dy_nc, width * sizeof(float));
        }
    }
}

void eq_conv2d_unlower_chunk(const eq_conv2d *conv, const eq_conv2d_chunk *ch, const float *cols, float *dx)
{
    const size_t image_size = conv->geom.c * conv->geom.h * conv->geom.w;
    const size_t width = ch->p1 - ch->p0;

    for (size_t i = 0; i < ch->count; i++)
        eq_col2im_add(&conv->geom, cols + i * width, conv->ld, ch->p0, ch->p1,
                      dx + (ch->n0 + i) * image_size);
}
