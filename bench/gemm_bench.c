/* GEMM benchmark: the machine's FP32 FMA peak per core, then eq_gemm
 * GFLOP/s and share of peak on the library's conv and dense shapes, for
 * each kernel and thread count. Prints medians of several runs. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/gemm.h"
#include "core/gemm_kernel.h"
#include "equivar.h"

#define RUNS 7
#define MIN_RUN_SECONDS 0.02

typedef struct bench_shape {
    const char *name;
    int trans_a, trans_b;
    size_t m, n, k;
} bench_shape;

/* Per image for conv (MNIST-sized layers, OC and IC up to 80 and 320 after
 * equivarification), per batch for dense. */
static const bench_shape shapes[] = {
    { "conv fwd 1->8, 28x28", 0, 0, 8, 784, 9 },
    { "conv fwd 16->32, 14x14", 0, 0, 32, 196, 144 },
    { "conv fwd 32->64, 7x7", 0, 0, 64, 49, 288 },
    { "conv fwd 80->80, 7x7", 0, 0, 80, 49, 720 },
    { "conv fwd 320->80, 28x28", 0, 0, 80, 784, 2880 },
    { "conv dW 320->80, 28x28", 0, 1, 80, 2880, 784 },
    { "conv dX 320->80, 28x28", 1, 0, 2880, 784, 80 },
    { "conv dW 16->32, 14x14", 0, 1, 32, 144, 196 },
    { "dense fwd 15680->128, b256", 0, 1, 256, 128, 15680 },
    { "dense fwd 1024->1024, b1024", 0, 1, 1024, 1024, 1024 },
    { "dense fwd 128->10, b64", 0, 1, 64, 10, 128 },
    { "dense dW 15680->128, b256", 1, 0, 128, 15680, 256 },
    { "dense dX 15680->128, b256", 0, 0, 256, 15680, 128 },
};

/* CLOCK_MONOTONIC, or with --cpu-time CLOCK_PROCESS_CPUTIME_ID: the CPU
 * time of all threads, which on a machine shared with other jobs measures
 * what the cores did rather than how long the scheduler let them run. */
static clockid_t bench_clock = CLOCK_MONOTONIC;

static double now_seconds(void)
{
    struct timespec now;

    clock_gettime(bench_clock, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, size_t count)
{
    qsort(values, count, sizeof *values, compare_doubles);
    return values[count / 2];
}

#if defined(__x86_64__)
#define EQ_FMA_ZMM(i) "vfmadd231ps %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define EQ_FMA_YMM(i) "vfmadd231ps %%ymm14, %%ymm15, %%ymm" #i "\n\t"

/* Runs 24 independent FMA chains on zmm registers only and returns the
 * seconds taken. Two FMA pipes with a latency of 4 need at least 8. */
__attribute__((target("avx512f"))) static double fma_loop_avx512(long iterations)
{
    double start = now_seconds();

    __asm__ volatile("vxorps %%xmm30, %%xmm30, %%xmm30\n\t"
                     "vxorps %%xmm31, %%xmm31, %%xmm31\n\t"
                     "1:\n\t"
                     EQ_FMA_ZMM(0) EQ_FMA_ZMM(1) EQ_FMA_ZMM(2) EQ_FMA_ZMM(3)
                     EQ_FMA_ZMM(4) EQ_FMA_ZMM(5) EQ_FMA_ZMM(6) EQ_FMA_ZMM(7)
                     EQ_FMA_ZMM(8) EQ_FMA_ZMM(9) EQ_FMA_ZMM(10) EQ_FMA_ZMM(11)
                     EQ_FMA_ZMM(12) EQ_FMA_ZMM(13) EQ_FMA_ZMM(14) EQ_FMA_ZMM(15)
                     EQ_FMA_ZMM(16) EQ_FMA_ZMM(17) EQ_FMA_ZMM(18) EQ_FMA_ZMM(19)
                     EQ_FMA_ZMM(20) EQ_FMA_ZMM(21) EQ_FMA_ZMM(22) EQ_FMA_ZMM(23)
                     "dec %0\n\t"
                     "jnz 1b\n\t"
                     : "+r"(iterations)
                     :
                     : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
                       "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
                       "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23",
                       "xmm30", "xmm31", "cc");
    return now_seconds() - start;
}

/* Runs 12 independent FMA chains on ymm0-ymm11 (ymm14 and ymm15 are the
 * inputs); returns the seconds taken. */
__attribute__((target("avx2,fma"))) static double fma_loop_avx2(long iterations)
{
    double start = now_seconds();

    __asm__ volatile("vxorps %%xmm14, %%xmm14, %%xmm14\n\t"
                     "vxorps %%xmm15, %%xmm15, %%xmm15\n\t"
                     "1:\n\t"
                     EQ_FMA_YMM(0) EQ_FMA_YMM(1) EQ_FMA_YMM(2) EQ_FMA_YMM(3)
                     EQ_FMA_YMM(4) EQ_FMA_YMM(5) EQ_FMA_YMM(6) EQ_FMA_YMM(7)
                     EQ_FMA_YMM(8) EQ_FMA_YMM(9) EQ_FMA_YMM(10) EQ_FMA_YMM(11)
                     "dec %0\n\t"
                     "jnz 1b\n\t"
                     : "+r"(iterations)
                     :
                     : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
                       "xmm8", "xmm9", "xmm10", "xmm11", "xmm14", "xmm15", "cc");
    return now_seconds() - start;
}
#endif

/* Returns the median GFLOP/s of an FMA loop doing flops_per_iteration per turn. */
static double measure_peak(double (*loop)(long), double flops_per_iteration)
{
    double gflops[RUNS];
    long iterations = 1000000;

    while (loop(iterations) < 0.05)
        iterations *= 2;
    for (int run = 0; run < RUNS; run++)
        gflops[run] = flops_per_iteration * (double)iterations / loop(iterations) / 1e9;
    return median(gflops, RUNS);
}

static float *random_floats(size_t count, unsigned seed)
{
    float *data = malloc(count * sizeof *data);

    if (!data) {
        fprintf(stderr, "gemm_bench: out of memory for %zu floats\n", count);
        exit(1);
    }
    srand(seed);
    for (size_t i = 0; i < count; i++)
        data[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    return data;
}

/* Returns the median GFLOP/s of eq_gemm on `shape` with the current kernel
 * and thread count. */
static double measure_shape(const bench_shape *shape)
{
    size_t lda = shape->trans_a ? shape->m : shape->k;
    size_t ldb = shape->trans_b ? shape->k : shape->n;
    float *a = random_floats(shape->m * shape->k, 1);
    float *b = random_floats(shape->k * shape->n, 2);
    float *c = random_floats(shape->m * shape->n, 3);
    double flops = 2.0 * (double)shape->m * (double)shape->n * (double)shape->k;
    double gflops[RUNS];
    long reps = 1;

    /* Warm-up, which also sizes a run to at least MIN_RUN_SECONDS. */
    for (;;) {
        double start = now_seconds();
        for (long r = 0; r < reps; r++)
            eq_gemm(shape->trans_a, shape->trans_b, shape->m, shape->n, shape->k, 1.0f, a, lda, b,
                    ldb, 0.0f, c, shape->n);
        if (now_seconds() - start >= MIN_RUN_SECONDS)
            break;
        reps *= 2;
    }

    for (int run = 0; run < RUNS; run++) {
        double start = now_seconds();
        for (long r = 0; r < reps; r++)
            eq_gemm(shape->trans_a, shape->trans_b, shape->m, shape->n, shape->k, 1.0f, a, lda, b,
                    ldb, 0.0f, c, shape->n);
        gflops[run] = flops * (double)reps / (now_seconds() - start) / 1e9;
    }

    free(a);
    free(b);
    free(c);
    return median(gflops, RUNS);
}

/* Prints the in-cache throughput of every tile shape of the current kernel:
 * 10 A panels x 9 B panels with K = 240, all in L1/L2, C written once per
 * call. The tile speeds in the kernel tables come from this. */
static void measure_tiles(const eq_gemm_kernel *kernel)
{
    const size_t kc = 240, a_panels = 10, b_panels = 9;

    for (size_t t = 0; t < kernel->tile_count; t++) {
        const eq_gemm_tile *tile = &kernel->tiles[t];
        float *a = random_floats(a_panels * tile->mr * kc, 4);
        float *b = random_floats(b_panels * tile->nr * kc, 5);
        size_t ldc = b_panels * tile->nr;
        float *c = random_floats(a_panels * tile->mr * ldc, 6);
        double flops = 2.0 * (double)(tile->mr * tile->nr * kc * a_panels * b_panels);
        double gflops[RUNS];

        for (int run = 0; run < RUNS; run++) {
            double start = now_seconds();
            for (int rep = 0; rep < 200; rep++)
                for (size_t i = 0; i < a_panels; i++)
                    for (size_t j = 0; j < b_panels; j++)
                        tile->micro(kc, a + i * tile->mr * kc, b + j * tile->nr * kc, tile->nr,
                                    c + i * tile->mr * ldc + j * tile->nr, ldc, tile->mr, tile->nr,
                                    1.0f, 0.0f, 1);
            gflops[run] = 200.0 * flops / (now_seconds() - start) / 1e9;
        }
        printf("tile %-7s %2zux%-3zu %7.1f GFLOP/s\n", kernel->name, tile->mr, tile->nr,
               median(gflops, RUNS));
        free(a);
        free(b);
        free(c);
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: gemm_bench [--kernel generic|avx2|avx512] [--threads N] [--tiles] [--cpu-time]\n"
            "  --kernel   benchmark one kernel (default: every kernel this CPU has)\n"
            "  --threads  benchmark N threads only (default: 1 and 2)\n"
            "  --tiles    print the in-cache speed of each micro-kernel tile instead\n"
            "  --cpu-time divide by process CPU seconds instead of wall seconds, which gives\n"
            "             GFLOP/s per busy core; %%peak then compares with one core's peak\n");
}

int main(int argc, char **argv)
{
    const char *only_kernel = NULL;
    int only_threads = 0, tiles = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--kernel") == 0 && i + 1 < argc) {
            only_kernel = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            only_threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--tiles") == 0) {
            tiles = 1;
        } else if (strcmp(argv[i], "--cpu-time") == 0) {
            bench_clock = CLOCK_PROCESS_CPUTIME_ID;
        } else {
            usage();
            return 2;
        }
    }

    static const char *const kernels[] = { "generic", "avx2", "avx512" };
    double peak_avx512 = 0.0, peak_avx2 = 0.0;
#if defined(__x86_64__)
    if (eq_gemm_kernel_available("avx512"))
        peak_avx512 = measure_peak(fma_loop_avx512, 24.0 * 16.0 * 2.0);
    if (eq_gemm_kernel_available("avx2"))
        peak_avx2 = measure_peak(fma_loop_avx2, 12.0 * 8.0 * 2.0);
#endif
    printf("FP32 FMA peak per core (register-only loop, median of %d): AVX-512 %.1f GFLOP/s, "
           "AVX2 %.1f GFLOP/s\n",
           RUNS, peak_avx512, peak_avx2);
    printf("timing: %s\n", bench_clock == CLOCK_MONOTONIC
                               ? "wall clock, %peak against threads x per-core peak"
                               : "process CPU time, %peak against one core's peak");
    int peak_scales = bench_clock == CLOCK_MONOTONIC;
    double machine_peak = peak_avx512 > 0.0 ? peak_avx512 : peak_avx2;

    for (size_t kn = 0; kn < 3; kn++) {
        if (only_kernel && strcmp(only_kernel, kernels[kn]) != 0)
            continue;
        if (eq_gemm_force_kernel(kernels[kn]) != EQ_OK) {
            printf("kernel %s: not supported by this CPU\n", kernels[kn]);
            continue;
        }
        if (tiles) {
            measure_tiles(eq_gemm_current_kernel());
            continue;
        }

        double isa_peak = 0.0;
        if (kn == 1)
            isa_peak = peak_avx2;
        else if (kn == 2)
            isa_peak = peak_avx512;
        printf("\n%-28s %5s %5s %5s %2s %-7s %3s %8s %7s %7s\n", "shape", "M", "N", "K", "tr",
               "kernel", "thr", "GFLOP/s", "%peak", "%isa");
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            for (int t = 0; t < 2; t++) {
                int threads = only_threads ? only_threads : t + 1;
                if (only_threads && t > 0)
                    break;
                if (eq_set_num_threads(threads) != EQ_OK) {
                    fprintf(stderr, "gemm_bench: %s\n", eq_last_error());
                    return 1;
                }
                const bench_shape *shape = &shapes[s];
                double gflops = measure_shape(shape);
                printf("%-28s %5zu %5zu %5zu %c%c %-7s %3d %8.1f", shape->name, shape->m, shape->n,
                       shape->k, shape->trans_a ? 'T' : 'N', shape->trans_b ? 'T' : 'N',
                       kernels[kn], threads, gflops);
                if (machine_peak > 0.0)
                    printf(" %6.1f%%", 100.0 * gflops / (machine_peak * (peak_scales ? threads : 1)));
                if (isa_peak > 0.0)
                    printf(" %6.1f%%", 100.0 * gflops / (isa_peak * (peak_scales ? threads : 1)));
                printf("\n");
                fflush(stdout);
            }
        }
    }
    return 0;
}
