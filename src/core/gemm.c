/* GEMM driver: cache blocking, packing, tile choice and the split of C into
 * tasks for the thread pool. The element recipe that keeps results
 * independent of all of these is documented in gemm_kernel.h. */
#include "core/gemm.h"

#include <pthread.h>
#include <string.h>

#include "core/error.h"
#include "core/gemm_kernel.h"
#include "core/gemm_pack.h"
#include "core/parallel.h"
#include "equivar/threads.h"

/* Rows of op(A) per task: their packed K block (MC_MAX x KC_MAX floats,
 * 256 KiB) stays in L2 while the micro-kernels sweep it. */
#define EQ_GEMM_MC_MAX 256

/* Columns of C per task: their packed op(B) K block (KC_MAX x NC_MAX
 * floats, 1 MiB) is meant to stay in L2 (or L3) while every row tile of the
 * task reads it. */
#define EQ_GEMM_NC_MAX 1024

/* Below this many multiply-adds a call runs on the calling thread alone:
 * waking a worker takes microseconds. */
#define EQ_GEMM_PARALLEL_MIN_MACS (256.0 * 1024.0)

/* op(B) is read in place, without packing, when a task has at most
 * DIRECT_B_ROWS rows of C or its op(B) K block is at most DIRECT_B_BYTES.
 * Few rows use each B element only a few times, which does not repay a
 * copy, and a small block stays in L2 between the micro-kernel calls. On a
 * 2-core AVX-512 Xeon, reading in place was up to 2x faster for 8-48 rows
 * and packing 10-25% faster for 64-160 rows of 784 columns with K >= 720. */
#define EQ_GEMM_DIRECT_B_ROWS 48
#define EQ_GEMM_DIRECT_B_BYTES (256u * 1024u)

#define EQ_GEMM_SCRATCH_FLOATS (EQ_GEMM_MC_MAX * EQ_GEMM_KC_MAX + EQ_GEMM_KC_MAX * EQ_GEMM_NC_MAX)

size_t eq_gemm_k_block(size_t k)
{
    size_t blocks = (k + EQ_GEMM_KC_MAX - 1) / EQ_GEMM_KC_MAX;

    return (k + blocks - 1) / blocks;
}

typedef struct gemm_call {
    int trans_a, trans_b;
    size_t m, n, k;
    float alpha, beta;
    const float *a, *b;
    float *c;
    size_t lda, ldb, ldc;

    int fused;
    const eq_gemm_tile *tile;
    const eq_gemm_packed *packed; /* op(A) packed in advance, or NULL */
    const size_t *b_rows;      /* row k of an untransposed B is row b_rows[k], or NULL */
    size_t kc;                 /* K block length, eq_gemm_k_block(k) */
    size_t m_tiles, n_tiles;   /* ceil(m / mr), ceil(n / nr) */
    size_t m_blocks, n_blocks; /* task grid: m_blocks x n_blocks tasks */
} gemm_call;

/* Packing buffers of each thread: EQ_GEMM_SCRATCH_FLOATS floats (1.25 MiB),
 * allocated on the thread's first GEMM and freed when the thread exits
 * (pool workers exit when eq_set_num_threads resizes the pool). */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void create_scratch_key(void)
{
    scratch_key_ok = pthread_key_create(&scratch_key, eq_free) == 0;
}

/* Returns this thread's packing buffers, or NULL if they cannot be had. */
static float *get_scratch(void)
{
    pthread_once(&scratch_once, create_scratch_key);
    if (!scratch_key_ok)
        return NULL;

    float *scratch = pthread_getspecific(scratch_key);
    if (scratch)
        return scratch;
    scratch = eq_alloc_floats(EQ_GEMM_SCRATCH_FLOATS);
    if (scratch && pthread_setspecific(scratch_key, scratch) != 0) {
        eq_free(scratch);
        scratch = NULL;
    }
    return scratch;
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

static size_t ceil_div(size_t a, size_t b)
{
    return a / b + (a % b != 0);
}

/* Computes the C block of rows [i0, i1) and columns [j0, j1) in scalar code,
 * for when the packing buffers cannot be allocated (eq_gemm cannot report
 * an error). Same bits, much slower. */
static void run_block_unpacked(const gemm_call *call, size_t i0, size_t i1, size_t j0, size_t j1)
{
    const float *a = call->trans_a ? call->a + i0 : call->a + i0 * call->lda;
    const float *b = call->trans_b ? call->b + j0 * call->ldb : call->b + j0;

    eq_gemm_unpacked_rows(call->fused, call->trans_a, call->trans_b, i1 - i0, j1 - j0, call->k, call->alpha, a,
                          call->lda, b, call->ldb, call->b_rows, call->beta, call->c + i0 * call->ldc + j0,
                          call->ldc);
}

/* Computes the C block of row tiles [t0, t1) and column tiles [u0, u1).
 * Per K block: pack the block's op(A) panels (unless A was packed in
 * advance), pack (or point at) its op(B) panels, then sweep column tiles
 * outside and row tiles inside. One B panel then stays in L1 while the A
 * panels, which the micro-kernel reads one float per row and k, stream
 * from L2. */
static void run_block(const gemm_call *call, size_t t0, size_t t1, size_t u0, size_t u1)
{
    size_t mr = call->tile->mr, nr = call->tile->nr;
    size_t i_end = min_size(t1 * mr, call->m);
    size_t j_end = min_size(u1 * nr, call->n);
    float *scratch = get_scratch();

    if (!scratch) {
        run_block_unpacked(call, t0 * mr, i_end, u0 * nr, j_end);
        return;
    }
    float *a_pack = scratch;                                   /* t1 - t0 panels, kc x mr, unless prepacked */
    float *b_pack = scratch + EQ_GEMM_MC_MAX * EQ_GEMM_KC_MAX; /* u1 - u0 panels, kc x nr */

    /* Column tiles [u0, packed_u0) read an untransposed B in place; the
     * rest are packed. A partial last tile is always packed, because the
     * micro-kernel reads whole tile rows, which in place would run past the
     * last column of B (and past the end of B on its last row). */
    size_t packed_u0 = u0;
    if (!call->trans_b && !call->b_rows) {
        size_t block_bytes = call->kc * (j_end - u0 * nr) * sizeof(float);
        int direct =
            (i_end - t0 * mr) <= EQ_GEMM_DIRECT_B_ROWS || block_bytes <= EQ_GEMM_DIRECT_B_BYTES;
        if (direct)
            packed_u0 = call->n % nr != 0 && u1 == call->n_tiles ? u1 - 1 : u1;
    }

    for (size_t k0 = 0; k0 < call->k; k0 += call->kc) {
        size_t kc = min_size(call->kc, call->k - k0);
        int first = k0 == 0;

        /* A prepacked block starts after k0 / kc full blocks of every row
         * tile, and its panels are indexed by the absolute row tile. */
        const float *a_block = NULL;
        if (call->packed) {
            a_block = call->packed->data + k0 * call->m_tiles * mr;
        } else {
            for (size_t t = t0; t < t1; t++) {
                size_t i0 = t * mr;
                eq_gemm_pack_a(call->trans_a, call->a, call->lda, i0, min_size(mr, call->m - i0), k0,
                               kc, mr, a_pack + (t - t0) * mr * kc);
            }
        }
        if (packed_u0 < u1)
            eq_gemm_pack_b(call->trans_b, call->b, call->ldb, call->b_rows, k0, kc, packed_u0 * nr,
                           j_end - packed_u0 * nr, nr, b_pack);

        for (size_t u = u0; u < u1; u++) {
            size_t j0 = u * nr;
            const float *b_panel = b_pack + (u - packed_u0) * kc * nr;
            size_t ldb_panel = nr;

            if (u < packed_u0) {
                b_panel = call->b + k0 * call->ldb + j0;
                ldb_panel = call->ldb;
            }
            for (size_t t = t0; t < t1; t++) {
                size_t i0 = t * mr;
                size_t rows = min_size(mr, call->m - i0);
                const float *a_panel =
                    a_block ? a_block + t * mr * kc : a_pack + (t - t0) * mr * kc;

                call->tile->micro(kc, a_panel, b_panel, ldb_panel, call->c + i0 * call->ldc + j0,
                                  call->ldc, rows, min_size(nr, call->n - j0), call->alpha,
                                  call->beta, first);
            }
        }
    }
}

static void run_tasks(void *ctx, size_t begin, size_t end)
{
    const gemm_call *call = ctx;

    for (size_t task = begin; task < end; task++) {
        size_t mb = task / call->n_blocks, nb = task % call->n_blocks;

        /* Balanced split: block sizes differ by at most one tile. */
        size_t t0 = call->m_tiles * mb / call->m_blocks;
        size_t t1 = call->m_tiles * (mb + 1) / call->m_blocks;
        size_t u0 = call->n_tiles * nb / call->n_blocks;
        size_t u1 = call->n_tiles * (nb + 1) / call->n_blocks;
        run_block(call, t0, t1, u0, u1);
    }
}

/* Picks the tile shape with the least estimated time: the padded tile area
 * divided by the tile's speed. Ties go to the earlier shape in the list. */
static const eq_gemm_tile *choose_tile(const eq_gemm_kernel *kernel, size_t m, size_t n)
{
    const eq_gemm_tile *forced = eq_gemm_forced_tile(kernel);
    if (forced)
        return forced;

    const eq_gemm_tile *best = &kernel->tiles[0];
    double best_cost = 0.0;
    for (size_t i = 0; i < kernel->tile_count; i++) {
        const eq_gemm_tile *tile = &kernel->tiles[i];
        double padded_m = (double)(ceil_div(m, tile->mr) * tile->mr);
        double padded_n = (double)(ceil_div(n, tile->nr) * tile->nr);
        double cost = padded_m * padded_n / tile->speed;
        if (i == 0 || cost < best_cost) {
            best = tile;
            best_cost = cost;
        }
    }
    return best;
}

/* Chooses the task grid: blocks of at most MC_MAX rows and NC_MAX columns.
 * With several threads it then adds column blocks (row blocks once the
 * columns run out) until the task count is a multiple of the thread count,
 * so that tasks of equal size keep every thread busy to the end. */
static void plan_tasks(gemm_call *call, size_t threads)
{
    size_t mr = call->tile->mr, nr = call->tile->nr;

    call->m_tiles = ceil_div(call->m, mr);
    call->n_tiles = ceil_div(call->n, nr);
    call->m_blocks = ceil_div(call->m_tiles, EQ_GEMM_MC_MAX / mr);
    call->n_blocks = ceil_div(call->n_tiles, EQ_GEMM_NC_MAX / nr);
    if (threads <= 1)
        return;

    size_t target = ceil_div(call->m_blocks * call->n_blocks, threads) * threads;
    call->n_blocks = min_size(ceil_div(target, call->m_blocks), call->n_tiles);
    if (call->m_blocks * call->n_blocks < target)
        call->m_blocks = min_size(ceil_div(target, call->n_blocks), call->m_tiles);
}

/* Runs a prepared call: the thread count, the task grid and the tasks. */
static void run_call(gemm_call *call)
{
    /* The product in double cannot overflow; it only picks the thread count. */
    double macs = (double)call->m * (double)call->n * (double)call->k;
    size_t threads = macs < EQ_GEMM_PARALLEL_MIN_MACS ? 1 : (size_t)eq_get_num_threads();
    plan_tasks(call, threads);

    size_t tasks = call->m_blocks * call->n_blocks;
    if (threads <= 1)
        run_tasks(call, 0, tasks);
    else
        eq_parallel_for(tasks, 1, run_tasks, call);
}

void eq_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha, const float *a,
             size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc)
{
    if (m == 0 || n == 0)
        return;

    const eq_gemm_kernel *kernel = eq_gemm_current_kernel();
    if (k == 0) {
        eq_gemm_unpacked(kernel->fused, trans_a, trans_b, m, n, 0, alpha, a, lda, b, ldb, beta, c,
                         ldc);
        return;
    }

    gemm_call call = {
        .trans_a = trans_a,
        .trans_b = trans_b,
        .m = m,
        .n = n,
        .k = k,
        .alpha = alpha,
        .beta = beta,
        .a = a,
        .b = b,
        .c = c,
        .lda = lda,
        .ldb = ldb,
        .ldc = ldc,
        .fused = kernel->fused,
        .kc = eq_gemm_k_block(k),
    };
    call.tile = choose_tile(kernel, m, n);
    run_call(&call);
}

eq_status eq_gemm_pack(eq_gemm_packed *packed, int trans_a, size_t m, size_t k, const float *a, size_t lda,
                       size_t n_hint)
{
    const eq_gemm_kernel *kernel = eq_gemm_current_kernel();
    const eq_gemm_tile *tile = choose_tile(kernel, m, n_hint > 0 ? n_hint : 1);
    size_t mr = tile->mr;
    size_t m_tiles = ceil_div(m, mr);
    size_t count;

    if (!eq_size_mul(m_tiles * mr, k, &count)) {
        eq_gemm_packed_release(packed);
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "GEMM: packing a %zu x %zu matrix overflows size_t", m, k);
    }
    if (count > packed->capacity) {
        eq_gemm_packed_release(packed);
        packed->data = eq_alloc_floats(count > 0 ? count : 1);
        if (!packed->data)
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "GEMM: cannot allocate %zu floats to pack a %zu x %zu matrix",
                            count, m, k);
        packed->capacity = count;
    }

    packed->m = m;
    packed->k = k;
    packed->trans_a = trans_a;
    packed->a = a;
    packed->lda = lda;
    packed->kernel = kernel;
    packed->tile = tile;
    packed->kc = k > 0 ? eq_gemm_k_block(k) : 0;

    /* Block p holds its m_tiles panels of kc_p x mr floats after p full
     * blocks, the layout run_block reads. */
    for (size_t k0 = 0; k0 < k; k0 += packed->kc) {
        size_t kc = min_size(packed->kc, k - k0);
        float *block = packed->data + k0 * m_tiles * mr;
        for (size_t t = 0; t < m_tiles; t++)
            eq_gemm_pack_a(trans_a, a, lda, t * mr, min_size(mr, m - t * mr), k0, kc, mr, block + t * mr * kc);
    }
    return EQ_OK;
}

/* Runs C = alpha * A * op(B) + beta * C for a packed A; b_rows as in
 * eq_gemm_packed_run_rows, or NULL. */
static void packed_run(const eq_gemm_packed *a, int trans_b, size_t n, float alpha, const float *b, size_t ldb,
                       const size_t *b_rows, float beta, float *c, size_t ldc)
{
    if (a->m == 0 || n == 0)
        return;

    const eq_gemm_kernel *kernel = a->kernel;
    if (a->k == 0) {
        eq_gemm_unpacked(kernel->fused, a->trans_a, trans_b, a->m, n, 0, alpha, a->a, a->lda, b, ldb, beta, c,
                         ldc);
        return;
    }

    gemm_call call = {
        .trans_a = a->trans_a,
        .trans_b = trans_b,
        .m = a->m,
        .n = n,
        .k = a->k,
        .alpha = alpha,
        .beta = beta,
        .a = a->a,
        .b = b,
        .c = c,
        .lda = a->lda,
        .ldb = ldb,
        .ldc = ldc,
        .fused = kernel->fused,
        .tile = a->tile,
        .packed = a,
        .b_rows = b_rows,
        .kc = a->kc,
    };
    run_call(&call);
}

void eq_gemm_packed_run(const eq_gemm_packed *a, int trans_b, size_t n, float alpha, const float *b, size_t ldb,
                        float beta, float *c, size_t ldc)
{
    packed_run(a, trans_b, n, alpha, b, ldb, NULL, beta, c, ldc);
}

void eq_gemm_packed_run_rows(const eq_gemm_packed *a, size_t n, float alpha, const float *b, size_t ldb,
                             const size_t *b_rows, float beta, float *c, size_t ldc)
{
    packed_run(a, 0, n, alpha, b, ldb, b_rows, beta, c, ldc);
}

void eq_gemm_packed_release(eq_gemm_packed *packed)
{
    eq_free(packed->data);
    memset(packed, 0, sizeof *packed);
}
