/* The parallel conv2d driver: forward over chunks of images or positions,
 * backward over image chunks with their weight gradients added in image
 * order. Both the plain and the multi-branch path run through it. */
#include <string.h>

#include "core/conv2d_chunks.h"
#include "core/dot.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/parallel.h"

/* Maximum size of the weight-gradient parts of one backward round in
 * floats (128 MiB). */
#define PARTS_BUDGET ((size_t)32 << 20)

/* Minimum number of weight gradient elements per reduction task. */
#define REDUCE_GRAIN 4096

typedef struct run_ctx {
    eq_conv2d *conv;
    float *y;
    const float *dy;
    float *dx;
    size_t first; /* first image chunk of the backward round */
    size_t parts; /* image chunks in the round */
} run_ctx;

/* For each branch g: y_g (OC, columns) = sum over b ascending of
 * weight[:, block b] (OC, KB) * cols[block sources[g * n + b]] (KB, columns)
 * plus the bias. The b order is the weights' block order, whatever block of
 * x each product reads, which keeps the multi-branch path exactly
 * equivariant. A single-image chunk writes its rows of y in place. */
static void forward_chunk(const eq_conv2d *conv, eq_conv2d_scratch *scratch, const eq_conv2d_chunk *ch, float *y)
{
    const size_t n = conv->branches;
    const size_t kb = conv->k / n; /* rows of one channel block: B * KH * KW */
    const size_t columns = eq_conv2d_chunk_columns(ch);
    const size_t positions = conv->geom.oh * conv->geom.ow;

    eq_conv2d_lower_chunk(conv, ch, scratch->cols);
    for (size_t g = 0; g < n; g++) {
        float *c = scratch->out;
        size_t ldc = conv->ld;
        if (ch->count == 1) {
            c = y + (ch->n0 * n + g) * conv->oc * positions + ch->p0;
            ldc = positions;
        }

        for (size_t b = 0; b < n; b++) {
            const float *cols_block = scratch->cols + conv->sources[g * n + b] * kb * conv->ld;
            eq_gemm_packed_run(&conv->packs[b], 0, columns, 1.0f, cols_block, conv->ld, b == 0 ? 0.0f : 1.0f, c,
                               ldc);
        }

        if (ch->count > 1) {
            eq_conv2d_store_chunk(conv, ch, g, scratch->out, y);
            continue;
        }
        for (size_t oc = 0; oc < conv->oc; oc++) {
            float *row = c + oc * ldc;
            const float bias = conv->bias[oc];
            for (size_t p = 0; p < columns; p++)
                row[p] += bias;
        }
    }
}

static void forward_items(void *ctx, size_t slot, size_t begin, size_t end)
{
    const run_ctx *run = ctx;
    const size_t tiles = eq_conv2d_tile_count(run->conv);

    for (size_t item = begin; item < end; item++) {
        eq_conv2d_chunk ch = eq_conv2d_chunk_at(run->conv, item / tiles, item % tiles);
        if (run->conv->spectral)
            eq_conv2d_spectral_forward_chunk(run->conv, &run->conv->scratch[slot], &ch, run->y);
        else if (run->conv->rows)
            eq_conv2d_gathered_forward_chunk(run->conv, &run->conv->scratch[slot], &ch, run->y);
        else
            forward_chunk(run->conv, &run->conv->scratch[slot], &ch, run->y);
    }
}

/* Packs weight block b (OC, KB) for every b into packs[b]. */
static eq_status pack_forward_weights(eq_conv2d *conv)
{
    const size_t n = conv->branches, kb = conv->k / n;
    const size_t columns = conv->images_per_chunk * conv->tile;

    for (size_t b = 0; b < n; b++) {
        eq_status status = eq_gemm_pack(&conv->packs[b], 0, conv->oc, kb, conv->weight + b * kb, conv->k, columns);
        if (status != EQ_OK)
            return status;
    }
    return EQ_OK;
}

/* Packs, for every block c of the column matrix, the matrix that maps the
 * output gradients of all branches to that block's gradient: A_c (KB,
 * n * OC) with A_c[r][g * OC + o] = weight[o][b * KB + r] for the b with
 * sources[g * n + b] == c, into packs[n + c]. */
static eq_status pack_input_gradient_weights(eq_conv2d *conv)
{
    const size_t n = conv->branches, kb = conv->k / n, oc = conv->oc;
    const size_t columns = conv->images_per_chunk * conv->tile;

    /* (n * OC, KB): A_c transposed, as many floats as the weights. */
    if (!conv->weight_rows) {
        conv->weight_rows = eq_alloc_floats(oc * conv->k);
        if (!conv->weight_rows)
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "conv2d: cannot allocate %zu floats to pack the weights",
                            oc * conv->k);
    }
    float *rows = conv->weight_rows;

    for (size_t c = 0; c < n; c++) {
        for (size_t g = 0; g < n; g++) {
            size_t b = 0;
            while (conv->sources[g * n + b] != c)
                b++;
            for (size_t o = 0; o < oc; o++)
                memcpy(rows + (g * oc + o) * kb, conv->weight + o * conv->k + b * kb, kb * sizeof(float));
        }
        eq_status status = eq_gemm_pack(&conv->packs[n + c], 1, kb, n * oc, rows, kb, columns);
        if (status != EQ_OK)
            return status;
    }
    return EQ_OK;
}

eq_status eq_conv2d_run_forward(eq_conv2d *conv, float *y)
{
    run_ctx run = { .conv = conv, .y = y };
    size_t items = eq_conv2d_image_chunk_count(conv) * eq_conv2d_tile_count(conv);

    eq_status status;
    if (conv->spectral)
        status = eq_conv2d_spectral_pack(conv, 0);
    else if (conv->rows)
        status = eq_conv2d_gathered_pack(conv, 0);
    else
        status = pack_forward_weights(conv);
    if (status != EQ_OK)
        return status;

    /* One item runs on the caller, whose GEMMs then use every thread. */
    eq_parallel_for_slots(items, 1, conv->scratch_count, forward_items, &run);
    return EQ_OK;
}

/* db[oc] = dy summed over the chunk's samples (every branch) and positions. */
static void bias_part(const eq_conv2d *conv, const eq_conv2d_chunk *ch, const float *dy, double *db)
{
    const size_t positions = conv->geom.oh * conv->geom.ow;
    const size_t first = ch->n0 * conv->branches, last = (ch->n0 + ch->count) * conv->branches;

    for (size_t oc = 0; oc < conv->oc; oc++)
        db[oc] = 0.0;
    for (size_t sample = first; sample < last; sample++)
        for (size_t oc = 0; oc < conv->oc; oc++)
            db[oc] += eq_conv2d_plane_sum(dy + (sample * conv->oc + oc) * positions, positions);
}

/* db[oc] = the gathered dy of a multi-image chunk, out (branches, OC,
 * columns), summed over branches, images and positions. It reads the copy
 * that the weight gradient reads next, which is still in cache. */
static void bias_part_gathered(const eq_conv2d *conv, const eq_conv2d_chunk *ch, const float *out, double *db)
{
    const size_t width = ch->p1 - ch->p0;

    for (size_t oc = 0; oc < conv->oc; oc++) {
        db[oc] = 0.0;
        for (size_t g = 0; g < conv->branches; g++)
            for (size_t i = 0; i < ch->count; i++)
                db[oc] += eq_conv2d_plane_sum(out + (g * conv->oc + oc) * conv->ld + i * width, width);
    }
}

/* Computes the weight gradient of image chunk j into dw (OC, K), its bias
 * gradient into db and, when dx is not NULL, its images' rows of dx. */
static void backward_image_chunk(const eq_conv2d *conv, eq_conv2d_scratch *scratch, size_t j, const float *dy,
                                 float *dx, float *dw, double *db)
{
    const size_t n = conv->branches;
    const size_t kb = conv->k / n;
    const size_t positions = conv->geom.oh * conv->geom.ow;
    const size_t image_size = conv->geom.c * conv->geom.h * conv->geom.w;
    const size_t tiles = eq_conv2d_tile_count(conv);
    eq_conv2d_chunk first = eq_conv2d_chunk_at(conv, j, 0);

    if (first.count == 1)
        bias_part(conv, &first, dy, db);
    if (dx)
        memset(dx + first.n0 * image_size, 0, first.count * image_size * sizeof(float));

    for (size_t t = 0; t < tiles; t++) {
        eq_conv2d_chunk ch = eq_conv2d_chunk_at(conv, j, t);
        const size_t columns = eq_conv2d_chunk_columns(&ch);
        const size_t block = kb * conv->ld; /* floats of one block of cols */
        size_t ld_dy = positions;

        eq_conv2d_lower_chunk(conv, &ch, scratch->cols);
        if (ch.count > 1) {
            /* A multi-image chunk has one tile, so this runs once. */
            for (size_t g = 0; g < n; g++)
                eq_conv2d_gather_chunk(conv, &ch, g, dy, scratch->out + g * conv->oc * conv->ld);
            bias_part_gathered(conv, &ch, scratch->out, db);
            ld_dy = conv->ld;
        }

        /* dw[:, block b] (OC, KB) (+)= sum over g of dy_g (OC, columns) *
         * cols[block sources[g * n + b]]^T, one sum of row products per b
         * with the branches as its terms, starting from zero on the first
         * tile. */
        for (size_t b = 0; b < n; b++) {
            for (size_t g = 0; g < n; g++) {
                const float *dy_g = ch.count > 1 ? scratch->out + g * conv->oc * conv->ld
                                                 : dy + (ch.n0 * n + g) * conv->oc * positions + ch.p0;
                scratch->terms[g] = (eq_dot_term){ dy_g, ld_dy, scratch->cols + conv->sources[g * n + b] * block,
                                                   conv->ld };
            }
            eq_dot_nt(conv->oc, kb, columns, scratch->terms, n, t > 0, dw + b * kb, conv->k);
        }
        if (!dx)
            continue;

        /* dcols[block c] (KB, columns) = A_c (KB, n * OC) * dy (n * OC, columns),
         * the sum over every branch g of weight[:, block b]^T * dy_g for the
         * b that reads block c, as one product with K = n * OC. Written
         * over cols, which the weight gradient no longer needs. The rows
         * (g, o) of dy are those of the chunk's n consecutive samples. */
        const float *dy_all = ch.count > 1 ? scratch->out : dy + ch.n0 * n * conv->oc * positions + ch.p0;
        for (size_t c = 0; c < n; c++)
            eq_gemm_packed_run(&conv->packs[n + c], 0, columns, 1.0f, dy_all, ld_dy, 0.0f,
                               scratch->cols + c * block, conv->ld);
        eq_conv2d_unlower_chunk(conv, &ch, scratch->cols, dx);
    }
}

/* The spectral and gathered twin of backward_image_chunk (see
 * conv2d_spectral.c and conv2d_gathered.c): dw is the spectral gradient
 * on the spectral path. */
static void tiled_backward_image_chunk(const eq_conv2d *conv, eq_conv2d_scratch *scratch, size_t j,
                                       const float *dy, float *dx, float *dw, double *db)
{
    const size_t image_size = conv->geom.c * conv->geom.h * conv->geom.w;
    const size_t tiles = eq_conv2d_tile_count(conv);
    eq_conv2d_chunk first = eq_conv2d_chunk_at(conv, j, 0);

    if (dx)
        memset(dx + first.n0 * image_size, 0, first.count * image_size * sizeof(float));
    for (size_t t = 0; t < tiles; t++) {
        eq_conv2d_chunk ch = eq_conv2d_chunk_at(conv, j, t);
        if (conv->spectral)
            eq_conv2d_spectral_backward_tile(conv, scratch, &ch, t == 0, dy, dx, dw, db);
        else
            eq_conv2d_gathered_backward_tile(conv, scratch, &ch, t == 0, dy, dx, dw, db);
    }
}

static void backward_items(void *ctx, size_t slot, size_t begin, size_t end)
{
    const run_ctx *run = ctx;
    const eq_conv2d *conv = run->conv;

    for (size_t part = begin; part < end; part++) {
        if (conv->spectral || conv->rows) {
            tiled_backward_image_chunk(conv, &conv->scratch[slot], run->first + part, run->dy, run->dx,
                                       conv->dweight_parts + part * conv->oc * conv->k,
                                       conv->dbias_parts + part * conv->oc);
            continue;
        }
        backward_image_chunk(conv, &conv->scratch[slot], run->first + part, run->dy, run->dx,
                             conv->dweight_parts + part * conv->oc * conv->k, conv->dbias_parts + part * conv->oc);
    }
}

/* sum[e] += parts in image order, for e in [begin, end), where sum is
 * dweight, or the spectral gradient on the spectral path. */
static void reduce_weight_parts(void *ctx, size_t begin, size_t end)
{
    const run_ctx *run = ctx;
    const eq_conv2d *conv = run->conv;
    const size_t count = conv->oc * conv->k;
    float *sum = conv->spectral ? conv->dspectral : conv->dweight;

    for (size_t part = 0; part < run->parts; part++) {
        const float *src = conv->dweight_parts + part * count;
        for (size_t e = begin; e < end; e++)
            sum[e] += src[e];
    }
}

/* Grows the gradient parts to `parts` image chunks. */
static eq_status reserve_parts(eq_conv2d *conv, size_t parts)
{
    if (parts <= conv->part_capacity)
        return EQ_OK;

    size_t weight_count, bias_count;
    if (!eq_size_mul(conv->oc * conv->k, parts, &weight_count)
        || !eq_size_mul(conv->oc * sizeof(double), parts + 1, &bias_count))
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "conv2d: weight gradients of %zu image chunks overflow size_t", parts);

    eq_free(conv->dweight_parts);
    eq_free(conv->dbias_parts);
    conv->part_capacity = 0;
    conv->dweight_parts = eq_alloc_floats(weight_count);
    conv->dbias_parts = eq_alloc_aligned(bias_count);
    if (!conv->dweight_parts || !conv->dbias_parts)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "conv2d: cannot allocate weight gradients of %zu image chunks",
                        parts);
    conv->part_capacity = parts;
    return EQ_OK;
}

/* Packs the weights that map the output gradient to the column gradient. */
static eq_status input_gradient_pack(eq_conv2d *conv)
{
    if (conv->spectral)
        return eq_conv2d_spectral_pack(conv, 1);
    if (conv->rows)
        return eq_conv2d_gathered_pack(conv, 1);
    return pack_input_gradient_weights(conv);
}

/* Allocates the spectral gradient sum once and sets it to zero. */
static eq_status reserve_spectral_gradient(eq_conv2d *conv)
{
    const size_t count = conv->oc * conv->k;

    if (!conv->dspectral) {
        conv->dspectral = eq_alloc_floats(count);
        if (!conv->dspectral)
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "conv2d: cannot allocate %zu floats for the spectral gradient",
                            count);
    }
    memset(conv->dspectral, 0, count * sizeof(float));
    return EQ_OK;
}

eq_status eq_conv2d_run_backward(eq_conv2d *conv, const float *dy, float *dx)
{
    const size_t chunks = eq_conv2d_image_chunk_count(conv);
    const size_t slots = conv->scratch_count;

    /* Two chunks per thread and round keep a thread that the OS
     * deschedules from stalling the others for long. The weight-gradient
     * parts of a round are capped at PARTS_BUDGET floats, so on many
     * threads with large weights a round can be shorter than the thread
     * count. The round length never changes the result. */
    size_t round = 2 * slots < chunks ? 2 * slots : chunks;
    size_t budget_parts = PARTS_BUDGET / (conv->oc * conv->k);
    if (round > budget_parts)
        round = budget_parts > 0 ? budget_parts : 1;
    eq_status status = reserve_parts(conv, round);
    if (status == EQ_OK && conv->spectral)
        status = reserve_spectral_gradient(conv);
    if (status == EQ_OK && dx)
        status = input_gradient_pack(conv);
    if (status != EQ_OK)
        return status;

    /* The bias sums stay in double until every chunk is in: row `round`
     * of dbias_parts. */
    double *db_total = conv->dbias_parts + round * conv->oc;
    for (size_t oc = 0; oc < conv->oc; oc++)
        db_total[oc] = 0.0;

    run_ctx run = { .conv = conv, .dy = dy, .dx = dx };
    for (size_t first = 0; first < chunks; first += round) {
        run.first = first;
        run.parts = chunks - first < round ? chunks - first : round;
        eq_parallel_for_slots(run.parts, 1, slots, backward_items, &run);

        eq_parallel_for(conv->oc * conv->k, REDUCE_GRAIN, reduce_weight_parts, &run);
        for (size_t part = 0; part < run.parts; part++)
            for (size_t oc = 0; oc < conv->oc; oc++)
                db_total[oc] += conv->dbias_parts[part * conv->oc + oc];
    }

    if (conv->spectral)
        eq_conv2d_spectral_add_gradient(conv, conv->dspectral);
    for (size_t oc = 0; oc < conv->oc; oc++)
        conv->dbias[oc] += (float)db_total[oc];
    return EQ_OK;
}
