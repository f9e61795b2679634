/* GEMM driver: cache blocking, packing, tile choice and the split of C into
 * tasks for the thread pool. The element recipe that keeps results
 * independent of all of these is documented in gemm_kernel.h. */
#include "core/gemm.h"

#include <pthread.h>

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

    eq_gemm_unpacked(call->fused, call->trans_a, call->trans_b, i1 - i0, j1 - j0, call->k,
                     call->alpha, a, call->lda, b, call->ldb, call->beta,
                     call->c + i0 * call->ldc + j0, call->ldc);
}

/* Computes the C block of row tiles [t0, t1) and column tiles [u0, u1).
 * Per K block: pack the block's op(A) panels, pack (or point at) its op(B)
 * panels, then sweep row tiles outside and column tiles inside, so one A
 * panel stays in L1 while the B panels stream from L2. */
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
    float *a_pack = scratch;                                   /* t1 - t0 panels, kc x mr */
    float *b_pack = scratch + EQ_GEMM_MC_MAX * EQ_GEMM_KC_MAX; /* u1 - u0 panels, kc x nr */

    /* Column tiles [u0, packed_u0) read an untransposed B in place; the
     * rest are packed. A partial last tile is always packed, because the
     * micro-kernel reads whole tile rows, which in place would run past the
     * last column of B (and past the end of B on its last row). */
    size_t packed_u0 = u0;
    if (!call->trans_b) {
        size_t block_bytes = call->kc * (j_end - u0 * nr) * sizeof(float);
        int direct =
            (i_end - t0 * mr) <= EQ_GEMM_DIRECT_B_ROWS || block_bytes <= EQ_GEMM_DIRECT_B_BYTES;
        if (direct)
            packed_u0 = call->n % nr != 0 && u1 == call->n_tiles ? u1 - 1 : u1;
    }

    for (size_t k0 = 0; k0 < call->k; k0 += call->kc) {
        size_t kc = min_size(call->kc, call->k - k0);
        int first = k0 == 0;

        for (size_t t = t0; t < t1; t++) {
            size_t i0 = t * mr;
            eq_gemm_pack_a(call->trans_a, call->a, call->lda, i0, min_size(mr, call->m - i0), k0,
                           kc, mr, a_pack + (t - t0) * mr * kc);
        }
        if (packed_u0 < u1)
            eq_gemm_pack_b(call->trans_b, call->b, call->ldb, k0, kc, packed_u0 * nr,
                           j_end - packed_u0 * nr, nr, b_pack);

        for (size_t t = t0; t < t1; t++) {
            size_t i0 = t * mr;
            size_t rows = min_size(mr, call->m - i0);
            const float *a_panel = a_pack + (t - t0) * mr * kc;

            for (size_t u = u0; u < u1; u++) {
                size_t j0 = u * nr;
                const float *b_panel = b_pack + (u - packed_u0) * kc * nr;
                size_t ldb_panel = nr;

                if (u < packed_u0) {
                    b_panel = call->b + k0 * call->ldb + j0;
                    ldb_panel = call->ldb;
                }
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

    /* The product in double cannot overflow; it only picks the thread count. */
    double macs = (double)m * (double)n * (double)k;
    size_t threads = macs < EQ_GEMM_PARALLEL_MIN_MACS ? 1 : (size_t)eq_get_num_threads();
    plan_tasks(&call, threads);

    size_t tasks = call.m_blocks * call.n_blocks;
    if (threads <= 1)
        run_tasks(&call, 0, tasks);
    else
        eq_parallel_for(tasks, 1, run_tasks, &call);
}
