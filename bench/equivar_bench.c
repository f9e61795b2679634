/* Benchmark of libequivar: FP32 FMA peak, per-layer GFLOP/s and images/s of two C4 networks. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86_FMA_LOOPS 1
#endif

#include "equivar.h"
#include "equivar/equivarify.h"
#include "equivar/group.h"
#include "core/blocks.h"      /* internal: the switch between the spectral and the block path */
#include "equivarify/fused.h" /* internal: the switch between the fused and the generic path */

#define IMAGE_SIZE 28
#define GROUP_ORDER 4 /* C4 */

/* Share of the block products that the GEMMs of the spectral path run for
 * C4: 6 of 16 (core/spectral.h). */
#define SPECTRAL_SHARE (6.0 / 16.0)
#define MAX_OPS 8
#define MAX_RESULTS 64
#define MAX_ITERATIONS 100
#define SEED 20240601u
#define LEARNING_RATE 0.001f

static const size_t batch_sizes[] = { 64, 200 };
#define BATCH_COUNT (sizeof batch_sizes / sizeof batch_sizes[0])

/* --- Options --------------------------------------------------------------- */

typedef struct options {
    int quick;
    int threads;          /* the "all threads" count */
    const char *json_path;
    const char *network;  /* "small", "reference" or "all" */
    int iterations;       /* timed iterations after one warm-up, at least */
    double min_seconds;   /* more timed iterations until they add up to this, up to MAX_ITERATIONS */
    double max_seconds;   /* time limit per measurement */
    size_t layer_batch;   /* batch of the per-layer measurements */
} options;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: equivar_bench [--quick] [--threads N] [--json FILE] [--network small|reference|all]\n"
            "                     [--iterations N] [--min-seconds S] [--max-seconds S] [--layer-batch N]\n"
            "  --quick          2 timed iterations, 0.2 s of them, 10 s limit, per-layer batch 4 (a smoke run)\n"
            "  --threads N      thread count of the multi-threaded runs (default: online CPUs)\n"
            "  --json FILE      also write every figure to FILE as JSON\n"
            "  --network NAME   run only one network (default: all)\n"
            "  --iterations N   timed iterations after one warm-up, at least (default 5)\n"
            "  --min-seconds S  more timed iterations until they add up to S seconds, up to 100\n"
            "                   (default 1); medians of many short iterations resist noise\n"
            "  --max-seconds S  time limit per measurement in seconds (default 60); a measurement\n"
            "                   whose batch-1 probe predicts more than S/2 per iteration is skipped\n"
            "  --layer-batch N  batch size of the per-layer measurements (default 16)\n");
}

static void fail_usage(const char *message, const char *value)
{
    fprintf(stderr, "equivar_bench: %s: %s\n", message, value);
    usage(stderr);
    exit(2);
}

static long parse_positive(const char *option, const char *text, long max)
{
    char *end = NULL;

    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < 1 || value > max) {
        fprintf(stderr, "equivar_bench: invalid value '%s' for %s, expected an integer in 1..%ld\n", text,
                option, max);
        exit(2);
    }
    return value;
}

static options parse_options(int argc, char **argv)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    options opt = { 0, online > 0 ? (int)online : 1, NULL, "all", 5, 1.0, 60.0, 16 };
    int iterations_set = 0, min_seconds_set = 0, seconds_set = 0, layer_batch_set = 0;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        int takes_value = strcmp(arg, "--threads") == 0 || strcmp(arg, "--json") == 0
                          || strcmp(arg, "--network") == 0 || strcmp(arg, "--iterations") == 0
                          || strcmp(arg, "--min-seconds") == 0 || strcmp(arg, "--max-seconds") == 0
                          || strcmp(arg, "--layer-batch") == 0;

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(arg, "--quick") == 0) {
            opt.quick = 1;
            continue;
        }
        if (!takes_value)
            fail_usage("unknown option", arg);
        if (!value)
            fail_usage("missing value for", arg);
        i++;
        if (strcmp(arg, "--threads") == 0) {
            opt.threads = (int)parse_positive(arg, value, 256);
        } else if (strcmp(arg, "--json") == 0) {
            opt.json_path = value;
        } else if (strcmp(arg, "--network") == 0) {
            if (strcmp(value, "small") != 0 && strcmp(value, "reference") != 0 && strcmp(value, "all") != 0)
                fail_usage("unknown network, expected small, reference or all", value);
            opt.network = value;
        } else if (strcmp(arg, "--iterations") == 0) {
            opt.iterations = (int)parse_positive(arg, value, MAX_ITERATIONS);
            iterations_set = 1;
        } else if (strcmp(arg, "--min-seconds") == 0) {
            char *end = NULL;
            errno = 0;
            opt.min_seconds = strtod(value, &end);
            if (errno != 0 || end == value || *end != '\0' || !(opt.min_seconds >= 0.0 && opt.min_seconds <= 3600.0))
                fail_usage("expected a number of seconds from 0 to 3600 for", arg);
            min_seconds_set = 1;
        } else if (strcmp(arg, "--max-seconds") == 0) {
            opt.max_seconds = (double)parse_positive(arg, value, 86400);
            seconds_set = 1;
        } else {
            opt.layer_batch = (size_t)parse_positive(arg, value, 4096);
            layer_batch_set = 1;
        }
    }

    /* --quick changes only the defaults, so explicit values still win. */
    if (opt.quick) {
        if (!iterations_set)
            opt.iterations = 2;
        if (!min_seconds_set)
            opt.min_seconds = 0.2;
        if (!seconds_set)
            opt.max_seconds = 10.0;
        if (!layer_batch_set)
            opt.layer_batch = 4;
    }
    return opt;
}

static void check(eq_status status, const char *call)
{
    if (status == EQ_OK)
        return;
    fprintf(stderr, "equivar_bench: %s failed: %s: %s\n", call, eq_status_string(status), eq_last_error());
    exit(1);
}

/* --- Timing and memory ----------------------------------------------------- */

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts values in place; the median of an even count is the mean of the middle two. */
static double median(double *values, size_t count)
{
    qsort(values, count, sizeof *values, compare_doubles);
    if (count % 2 == 1)
        return values[count / 2];
    return 0.5 * (values[count / 2 - 1] + values[count / 2]);
}

/* Returns the peak resident set size in MiB since the last reset_peak_rss:
 * VmHWM from /proc/self/status, else ru_maxrss (KiB on Linux). */
static double peak_rss_mib(void)
{
    FILE *file = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;

    while (file && fgets(line, sizeof line, file)) {
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    }
    if (file)
        fclose(file);
    if (kib < 0) {
        struct rusage usage;
        if (getrusage(RUSAGE_SELF, &usage) != 0)
            return NAN;
        kib = usage.ru_maxrss;
    }
    return (double)kib / 1024.0;
}

/* The highest peak read before a reset, because a reset lowers VmHWM and
 * ru_maxrss alike. */
static double peak_before_resets_mib;

/* Resets the peak resident set size (VmHWM) of this process to its current
 * size, so the next reading covers only what runs after the reset. Linux
 * only; returns 0 when the kernel does not allow it. */
/* Returns the time the hypervisor gave to other guests while this one
 * wanted to run, summed over all CPUs, in seconds ("steal" in /proc/stat),
 * or NaN where the file or the field is missing. */
static double steal_seconds(void)
{
    FILE *file = fopen("/proc/stat", "r");
    unsigned long long user, nice, system, idle, iowait, irq, softirq, steal;
    double seconds = NAN;
    long ticks = sysconf(_SC_CLK_TCK);

    if (!file)
        return NAN;
    if (fscanf(file, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &system, &idle, &iowait, &irq,
               &softirq, &steal) == 8 && ticks > 0)
        seconds = (double)steal / (double)ticks;
    fclose(file);
    return seconds;
}

static int reset_peak_rss(void)
{
    double peak = peak_rss_mib();
    if (peak > peak_before_resets_mib)
        peak_before_resets_mib = peak;

    FILE *file = fopen("/proc/self/clear_refs", "w");
    if (!file)
        return 0;
    int ok = fputs("5", file) >= 0;
    return fclose(file) == 0 && ok;
}

/* Returns the peak resident set size of the whole run in MiB. */
static double process_peak_rss_mib(void)
{
    double peak = peak_rss_mib();
    return peak > peak_before_resets_mib ? peak : peak_before_resets_mib;
}

/* Returns the 1-minute load average from /proc/loadavg (NaN elsewhere), which
 * shows how busy the machine was: on a shared machine other processes take
 * cores away from the multi-threaded runs. */
static double load_average(void)
{
    FILE *file = fopen("/proc/loadavg", "r");
    double load = NAN;

    if (file) {
        if (fscanf(file, "%lf", &load) != 1)
            load = NAN;
        fclose(file);
    }
    return load;
}

/* --- FP32 FMA peak ---------------------------------------------------------- */

/* Independent accumulator chains per loop. A core with two FMA units of
 * 4-cycle latency needs at least 8 chains to keep both busy. 12 leaves a
 * margin and still fits in the 16 vector registers of AVX2. */
#define FMA_CHAINS 12

static volatile float fma_sink;

#ifdef HAVE_X86_FMA_LOOPS
/* acc = acc * 0.999999 + 1e-6 converges to 1, so no value overflows or turns
 * subnormal however long the loop runs. */
__attribute__((target("avx512f"))) static float fma_loop_avx512(size_t rounds)
{
    const __m512 scale = _mm512_set1_ps(0.999999f), bias = _mm512_set1_ps(1e-6f);
    __m512 acc[FMA_CHAINS];

    for (int i = 0; i < FMA_CHAINS; i++)
        acc[i] = _mm512_set1_ps((float)i);
    for (size_t r = 0; r < rounds; r++)
        for (int i = 0; i < FMA_CHAINS; i++)
            acc[i] = _mm512_fmadd_ps(acc[i], scale, bias);
    for (int i = 1; i < FMA_CHAINS; i++)
        acc[0] = _mm512_add_ps(acc[0], acc[i]);
    return _mm512_reduce_add_ps(acc[0]);
}

__attribute__((target("avx2,fma"))) static float fma_loop_avx2(size_t rounds)
{
    const __m256 scale = _mm256_set1_ps(0.999999f), bias = _mm256_set1_ps(1e-6f);
    __m256 acc[FMA_CHAINS];
    float lanes[8];

    for (int i = 0; i < FMA_CHAINS; i++)
        acc[i] = _mm256_set1_ps((float)i);
    for (size_t r = 0; r < rounds; r++)
        for (int i = 0; i < FMA_CHAINS; i++)
            acc[i] = _mm256_fmadd_ps(acc[i], scale, bias);
    for (int i = 1; i < FMA_CHAINS; i++)
        acc[0] = _mm256_add_ps(acc[0], acc[i]);
    _mm256_storeu_ps(lanes, acc[0]);
    return lanes[0] + lanes[7];
}
#endif

typedef struct fma_kernel {
    const char *isa;      /* "avx512", "avx2" or "none" */
    size_t lanes;         /* floats per vector */
    float (*loop)(size_t rounds);
} fma_kernel;

static fma_kernel pick_fma_kernel(void)
{
    fma_kernel kernel = { "none", 0, NULL };

#ifdef HAVE_X86_FMA_LOOPS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        kernel = (fma_kernel){ "avx512", 16, fma_loop_avx512 };
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        kernel = (fma_kernel){ "avx2", 8, fma_loop_avx2 };
    }
#endif
    return kernel;
}

typedef struct fma_worker {
    const fma_kernel *kernel;
    size_t rounds;
    pthread_barrier_t *start;
} fma_worker;

static void *fma_worker_main(void *arg)
{
    fma_worker *worker = arg;

    pthread_barrier_wait(worker->start);
    fma_sink = worker->kernel->loop(worker->rounds);
    return NULL;
}

/* Runs the loop on `threads` threads at once; returns the wall time in seconds. */
static double time_fma(const fma_kernel *kernel, size_t rounds, int threads)
{
    pthread_t ids[256];
    pthread_barrier_t start;
    fma_worker worker = { kernel, rounds, &start };

    if (pthread_barrier_init(&start, NULL, (unsigned)threads + 1) != 0) {
        fprintf(stderr, "equivar_bench: pthread_barrier_init failed\n");
        exit(1);
    }
    for (int t = 0; t < threads; t++) {
        if (pthread_create(&ids[t], NULL, fma_worker_main, &worker) != 0) {
            fprintf(stderr, "equivar_bench: cannot start FMA thread %d of %d\n", t + 1, threads);
            exit(1);
        }
    }
    pthread_barrier_wait(&start);
    double begin = now_seconds();
    for (int t = 0; t < threads; t++)
        pthread_join(ids[t], NULL);
    double seconds = now_seconds() - begin;
    pthread_barrier_destroy(&start);
    return seconds;
}

/* FP32 GFLOP/s of the FMA loop over repeated runs, an FMA counted as 2
 * FLOPs. Other processes on a shared machine only ever slow the loop down,
 * so the maximum is the peak and the median shows the typical share. */
typedef struct fma_peak {
    double max_gflops;
    double median_gflops;
} fma_peak;

/* Returns zeros when the CPU has neither AVX-512 nor AVX2. */
static fma_peak measure_fma_peak(const fma_kernel *kernel, int threads, int quick)
{
    fma_peak peak = { 0.0, 0.0 };
    double samples[9];
    int repeats = quick ? 3 : 9;
    size_t rounds = 1u << 16;

    if (!kernel->loop)
        return peak;

    /* Grow the loop until one run takes 0.1 s (0.03 s quick), long enough
     * that thread start-up and timer resolution do not matter. */
    double target = quick ? 0.03 : 0.1;
    while (time_fma(kernel, rounds, 1) < target && rounds < ((size_t)1 << 40))
        rounds *= 2;

    double flops = 2.0 * (double)rounds * FMA_CHAINS * (double)kernel->lanes * threads;
    for (int i = 0; i < repeats; i++) {
        samples[i] = flops / time_fma(kernel, rounds, threads) * 1e-9;
        if (samples[i] > peak.max_gflops)
            peak.max_gflops = samples[i];
    }
    peak.median_gflops = median(samples, (size_t)repeats);
    return peak;
}

/* --- Network descriptions -------------------------------------------------- */

typedef enum op_kind { OP_CONV3X3, OP_RELU, OP_MAXPOOL, OP_FLATTEN, OP_DENSE } op_kind;

/* conv: channels in -> out, 3x3, stride 1, pad 1; maxpool: window `in`,
 * stride `in`; dense: features in -> out. */
typedef struct op_spec {
    op_kind kind;
    size_t in, out;
} op_spec;

/* One equivarified layer F = equivarify(h, C4, action), h = ops in order. */
typedef struct layer_spec {
    eq_action action;
    size_t op_count;
    op_spec ops[MAX_OPS];
} layer_spec;

typedef struct network_spec {
    const char *name;
    size_t layer_count;
    layer_spec layers[3];
} network_spec;

/* An h on the blocks action takes all four blocks of the previous layer's
 * output as its input, hence the GROUP_ORDER * C input sizes. */
static const network_spec small_network = {
    "small", 3,
    { { EQ_ACTION_PIXELS, 3, { { OP_CONV3X3, 1, 8 }, { OP_RELU, 0, 0 }, { OP_MAXPOOL, 2, 0 } } },
      { EQ_ACTION_BLOCKS, 3,
        { { OP_CONV3X3, GROUP_ORDER * 8, 16 }, { OP_RELU, 0, 0 }, { OP_MAXPOOL, 2, 0 } } },
      { EQ_ACTION_BLOCKS, 2, { { OP_FLATTEN, 0, 0 }, { OP_DENSE, GROUP_ORDER * 16 * 7 * 7, 10 } } } }
};

static const network_spec reference_network = {
    "reference", 3,
    { { EQ_ACTION_PIXELS, 2, { { OP_CONV3X3, 1, 80 }, { OP_RELU, 0, 0 } } },
      { EQ_ACTION_BLOCKS, 2, { { OP_CONV3X3, GROUP_ORDER * 80, 80 }, { OP_RELU, 0, 0 } } },
      { EQ_ACTION_BLOCKS, 7,
        { { OP_CONV3X3, GROUP_ORDER * 80, 32 },
          { OP_RELU, 0, 0 },
          { OP_MAXPOOL, 4, 0 },
          { OP_FLATTEN, 0, 0 },
          { OP_DENSE, 32 * 7 * 7, 1024 },
          { OP_RELU, 0, 0 },
          { OP_DENSE, 1024, 10 } } } }
};

static eq_layer *build_op(const op_spec *op)
{
    eq_layer *layer = NULL;

    switch (op->kind) {
    case OP_CONV3X3:
        check(eq_conv2d_create(op->in, op->out, 3, 3, 1, 1, &layer), "eq_conv2d_create");
        break;
    case OP_RELU:
        check(eq_relu_create(&layer), "eq_relu_create");
        break;
    case OP_MAXPOOL:
        check(eq_maxpool_create(op->in, op->in, &layer), "eq_maxpool_create");
        break;
    case OP_FLATTEN:
        check(eq_flatten_create(&layer), "eq_flatten_create");
        break;
    case OP_DENSE:
        check(eq_dense_create(op->in, op->out, &layer), "eq_dense_create");
        break;
    }
    return layer;
}

static eq_layer *build_h(const layer_spec *spec, eq_rng *rng)
{
    eq_layer *h = NULL;

    check(eq_sequential_create(&h), "eq_sequential_create");
    for (size_t i = 0; i < spec->op_count; i++)
        check(eq_sequential_append(h, build_op(&spec->ops[i])), "eq_sequential_append");
    eq_layer_init_he(h, rng);
    return h;
}

static eq_layer *build_equivarified(const layer_spec *spec, const eq_group *group, eq_rng *rng)
{
    eq_layer *layer = NULL;

    check(eq_equivarify(build_h(spec, rng), group, spec->action, &layer), "eq_equivarify");
    return layer;
}

static eq_layer *build_network(const network_spec *spec, const eq_group *group, uint64_t seed)
{
    eq_layer *net = NULL;
    eq_rng rng;

    eq_rng_seed(&rng, seed);
    check(eq_sequential_create(&net), "eq_sequential_create");
    for (size_t i = 0; i < spec->layer_count; i++)
        check(eq_equivariant_append(net, build_equivarified(&spec->layers[i], group, &rng)),
              "eq_equivariant_append");
    return net;
}

/* --- FLOP counts from the shapes ------------------------------------------- */

/* GEMM FLOPs (2 per multiply-add) of one pass; bias, ReLU, pooling and the
 * group action are not counted. */
typedef struct flop_count {
    double forward;
    double backward; /* weight gradient, plus the input gradient where it runs */
} flop_count;

/* Counts the FLOPs of the sequential h on input shape `in`. A layer with a
 * weight (OUT, IN...) does numel(output) * IN... multiply-adds forward, and
 * as many for the weight gradient. Its input gradient costs as many again,
 * but is skipped for h's first layer when h's input gradient is not needed. */
static flop_count count_h_flops(eq_layer *h, eq_shape in, int input_grad)
{
    flop_count count = { 0.0, 0.0 };
    eq_shape shape = in;

    for (size_t i = 0; i < eq_sequential_length(h); i++) {
        eq_layer *child = eq_sequential_get(h, i);
        eq_shape out;
        check(eq_layer_output_shape(child, shape, &out), "eq_layer_output_shape");
        if (eq_layer_param_count(child) > 0) {
            eq_param weight;
            check(eq_layer_param(child, 0, &weight), "eq_layer_param");
            double macs = (double)eq_shape_numel(out) * (double)(weight.count / weight.shape.n);
            count.forward += 2.0 * macs;
            count.backward += 2.0 * macs;
            if (i > 0 || input_grad)
                count.backward += 2.0 * macs;
        }
        shape = out;
    }
    return count;
}

/* Per-image figures of one equivarified layer of a network. */
typedef struct layer_info {
    eq_shape in;       /* F's input for one image */
    flop_count flops;  /* of F for one image, i.e. of h on GROUP_ORDER images */
    int input_grad;    /* training computes F's input gradient */
} layer_info;

typedef struct network_info {
    const network_spec *spec;
    layer_info layers[3];
    flop_count flops;  /* whole network, one image */
    size_t params;     /* trainable floats */
} network_info;

static network_info describe_network(const network_spec *spec, const eq_group *group)
{
    network_info info;
    eq_layer *net = build_network(spec, group, SEED);
    eq_shape shape = eq_shape_make(1, 1, IMAGE_SIZE, IMAGE_SIZE);
    eq_rng rng;

    memset(&info, 0, sizeof info);
    info.spec = spec;
    eq_rng_seed(&rng, SEED);
    for (size_t i = 0; i < spec->layer_count; i++) {
        layer_info *layer = &info.layers[i];
        eq_layer *h = build_h(&spec->layers[i], &rng);
        eq_shape stacked = eq_shape_make(GROUP_ORDER, shape.c, shape.h, shape.w);

        /* Training skips the gradient of the network's input, which is layer 1's input. */
        layer->in = shape;
        layer->input_grad = i > 0;
        layer->flops = count_h_flops(h, stacked, layer->input_grad);
        info.flops.forward += layer->flops.forward;
        info.flops.backward += layer->flops.backward;
        check(eq_layer_output_shape(eq_sequential_get(net, i), shape, &shape), "eq_layer_output_shape");
        eq_layer_destroy(h);
    }
    for (size_t i = 0; i < eq_layer_param_count(net); i++) {
        eq_param param;
        check(eq_layer_param(net, i, &param), "eq_layer_param");
        info.params += param.count;
    }
    eq_layer_destroy(net);
    return info;
}

/* --- Measurement ------------------------------------------------------------- */

/* Runs one step of a workload and returns the seconds of its timed part. */
typedef double (*step_fn)(void *ctx);

typedef struct measurement {
    int skipped;        /* the estimate exceeded half the time limit */
    double estimate_s;  /* one step, scaled from the batch-1 probe */
    size_t count;       /* timed steps */
    double median_s;
} measurement;

/* Runs one warm-up step, then up to opt->iterations timed steps while the
 * time limit lasts, and keeps the median. A workload whose estimated step
 * time is above half the limit is skipped, because a warm-up and one timed
 * step would not fit. */
static measurement measure(const options *opt, step_fn step, void *ctx, double estimate_s)
{
    measurement m = { 0, estimate_s, 0, NAN };
    double samples[MAX_ITERATIONS];

    if (2.0 * estimate_s > opt->max_seconds) {
        m.skipped = 1;
        return m;
    }

    /* At least opt->iterations samples, and more while they add up to less
     * than opt->min_seconds, so that a short step gets enough samples for
     * its median to ride out a burst of load from outside. */
    double begin = now_seconds(), timed = 0.0;
    step(ctx);
    while (m.count < MAX_ITERATIONS) {
        double seconds = step(ctx);
        samples[m.count++] = seconds;
        timed += seconds;
        if (now_seconds() - begin > opt->max_seconds)
            break;
        if (m.count >= (size_t)opt->iterations && timed >= opt->min_seconds)
            break;
    }
    m.median_s = median(samples, m.count);
    return m;
}

static void fill_uniform(eq_tensor *t, eq_rng *rng)
{
    size_t count = eq_shape_numel(t->shape);

    for (size_t i = 0; i < count; i++)
        t->data[i] = eq_rng_uniform(rng);
}

static eq_tensor *new_tensor(eq_shape shape)
{
    eq_tensor *t = NULL;

    check(eq_tensor_create(shape, &t), "eq_tensor_create");
    return t;
}

/* One layer (F or h alone) with its input, output and gradients. */
typedef struct layer_run {
    eq_layer *layer;
    eq_tensor *x, *y, *dy;
    eq_tensor *dx; /* NULL when training would not compute the input gradient */
} layer_run;

static layer_run layer_run_create(eq_layer *layer, eq_shape in, int input_grad, eq_rng *rng)
{
    layer_run run = { layer, new_tensor(in), NULL, NULL, NULL };
    eq_shape out;

    check(eq_layer_output_shape(layer, in, &out), "eq_layer_output_shape");
    run.y = new_tensor(out);
    run.dy = new_tensor(out);
    if (input_grad)
        run.dx = new_tensor(in);
    fill_uniform(run.x, rng);
    fill_uniform(run.dy, rng);
    return run;
}

/* Frees the tensors; the layer stays with the caller. */
static void layer_run_release(layer_run *run)
{
    eq_tensor_destroy(run->x);
    eq_tensor_destroy(run->y);
    eq_tensor_destroy(run->dy);
    eq_tensor_destroy(run->dx);
}

static double step_layer_forward(void *ctx)
{
    layer_run *run = ctx;
    double begin = now_seconds();

    check(eq_layer_forward(run->layer, run->x, run->y), "eq_layer_forward");
    return now_seconds() - begin;
}

/* Times the backward pass only; the forward before it fills the caches. */
static double step_layer_backward(void *ctx)
{
    layer_run *run = ctx;

    check(eq_layer_forward(run->layer, run->x, run->y), "eq_layer_forward");
    double begin = now_seconds();
    check(eq_layer_backward(run->layer, run->dy, run->dx), "eq_layer_backward");
    return now_seconds() - begin;
}

/* A whole network with a batch of random images and joint labels. */
typedef struct network_run {
    eq_layer *net;
    eq_tensor *x, *logits, *dlogits;
    int32_t *labels;
} network_run;

static network_run network_run_create(const network_spec *spec, const eq_group *group, size_t batch)
{
    network_run run;
    eq_shape out;
    eq_rng rng;

    eq_rng_seed(&rng, SEED + batch);
    run.net = build_network(spec, group, SEED);
    run.x = new_tensor(eq_shape_make(batch, 1, IMAGE_SIZE, IMAGE_SIZE));
    check(eq_layer_output_shape(run.net, run.x->shape, &out), "eq_layer_output_shape");
    run.logits = new_tensor(out);
    run.dlogits = new_tensor(out);
    run.labels = malloc(batch * sizeof *run.labels);
    if (!run.labels) {
        fprintf(stderr, "equivar_bench: cannot allocate %zu labels\n", batch);
        exit(1);
    }
    fill_uniform(run.x, &rng);
    /* Joint (element, class) labels over the out.c = 4 * 10 logits. */
    for (size_t i = 0; i < batch; i++)
        run.labels[i] = (int32_t)eq_rng_below(&rng, out.c);
    return run;
}

static void network_run_destroy(network_run *run)
{
    eq_layer_destroy(run->net);
    eq_tensor_destroy(run->x);
    eq_tensor_destroy(run->logits);
    eq_tensor_destroy(run->dlogits);
    free(run->labels);
}

static double step_inference(void *ctx)
{
    network_run *run = ctx;
    double begin = now_seconds();

    check(eq_layer_forward(run->net, run->x, run->logits), "eq_layer_forward");
    return now_seconds() - begin;
}

/* Forward, loss, backward and a plain SGD step (no momentum). */
static double step_training(void *ctx)
{
    network_run *run = ctx;
    float loss;
    double begin = now_seconds();

    check(eq_layer_forward(run->net, run->x, run->logits), "eq_layer_forward");
    check(eq_softmax_cross_entropy(run->logits, run->labels, &loss, run->dlogits), "eq_softmax_cross_entropy");
    eq_layer_zero_grad(run->net);
    check(eq_layer_backward(run->net, run->dlogits, NULL), "eq_layer_backward");
    for (size_t i = 0; i < eq_layer_param_count(run->net); i++) {
        eq_param param;
        check(eq_layer_param(run->net, i, &param), "eq_layer_param");
        for (size_t j = 0; j < param.count; j++)
            param.value[j] -= LEARNING_RATE * param.grad[j];
    }
    return now_seconds() - begin;
}

/* --- Results ------------------------------------------------------------------ */

typedef struct layer_result {
    int threads;
    size_t layer;      /* 1-based */
    const char *part;  /* "F spectral", "F blocks", "F gathered", "F generic" (F on that path) or "h" (h alone) */
    const char *pass;  /* "forward" or "backward" */
    size_t batch;      /* F's batch; h alone runs on GROUP_ORDER times as many */
    double flops;      /* per step, of the direct products (n * n blocks for a fused layer) */
    double executed;   /* per step, of the products the GEMMs run: less on the spectral path */
    double peak_gflops;
    measurement m;
} layer_result;

typedef struct run_result {
    const char *network;
    const char *mode;  /* "train" or "infer" */
    size_t batch;
    int threads;
    double flops_per_image;
    double peak_rss_mib; /* NaN when the peak could not be reset before the run */
    double steal_s;      /* CPU time stolen by the hypervisor during the measurement, NaN if unknown */
    measurement m;
} run_result;

typedef struct results {
    double load_start, load_end; /* 1-minute load averages */
    const char *isa;
    fma_peak peak_1;
    fma_peak peak_all;
    int thread_counts[2];
    size_t thread_count_n;
    network_info networks[2];
    size_t network_n;
    layer_result layers[MAX_RESULTS];
    size_t layer_n;
    run_result runs[MAX_RESULTS];
    size_t run_n;
} results;

static double peak_for(const results *r, int threads)
{
    return threads == 1 ? r->peak_1.max_gflops : r->peak_all.max_gflops;
}

static void set_threads(int threads)
{
    check(eq_set_num_threads(threads), "eq_set_num_threads");
}

/* --- Per-layer measurement ------------------------------------------------------ */

/* Estimates a step at batch `batch` from the second step at batch 1 (the
 * first one allocates the layer's buffers). */
static double probe_layer(eq_layer *layer, const layer_info *info, int alone, step_fn step, size_t batch)
{
    eq_rng rng;
    eq_shape in = info->in;

    eq_rng_seed(&rng, SEED);
    in.n = alone ? GROUP_ORDER : 1;
    layer_run run = layer_run_create(layer, in, info->input_grad, &rng);
    step(&run);
    double seconds = step(&run);
    layer_run_release(&run);
    return seconds * (double)batch;
}

static void print_layer_result(const layer_result *lr, double peak)
{
    printf("%7d  %5zu  %-10s  %-8s  %7.3f", lr->threads, lr->layer, lr->part, lr->pass, lr->flops * 1e-9);
    if (lr->m.skipped) {
        printf("  skipped: estimated %.1f s per step\n", lr->m.estimate_s);
        return;
    }
    double gflops = lr->flops / lr->m.median_s * 1e-9;
    double executed = lr->executed / lr->m.median_s * 1e-9;
    printf("  %9.2f  %8.2f  %8.2f  %6.1f%%\n", lr->m.median_s * 1e3, gflops, executed,
           peak > 0.0 ? 100.0 * executed / peak : NAN);
}

typedef enum layer_variant {
    VARIANT_F,         /* F on the path the library picks */
    VARIANT_F_BLOCKS,  /* F fused, with the spectral path switched off */
    VARIANT_F_GENERIC, /* F with the fused path switched off */
    VARIANT_H          /* h alone on the stacked batch */
} layer_variant;

static eq_layer *build_variant(const layer_spec *spec, const eq_group *group, layer_variant variant, eq_rng *rng)
{
    if (variant == VARIANT_H)
        return build_h(spec, rng);

    eq_layer *layer = build_equivarified(spec, group, rng);
    if (variant == VARIANT_F_GENERIC)
        check(eq_equivarify_set_fused(layer, 0), "eq_equivarify_set_fused");
    return layer;
}

/* Measures one pass (0 forward, 1 backward) of one variant of layer l and
 * records it. Returns 1 if F took the fused path. */
static int measure_layer(const options *opt, results *r, const network_info *info, const eq_group *group, size_t l,
                         layer_variant variant, int pass, int threads)
{
    static const char *const passes[] = { "forward", "backward" };
    const step_fn steps[] = { step_layer_forward, step_layer_backward };
    const layer_info *li = &info->layers[l];
    int alone = variant == VARIANT_H;
    eq_rng rng;

    /* The C4 source table of a fused layer on blocks is cyclic, so its
     * fused path is spectral unless switched off here. */
    eq_blocks_set_spectral(variant != VARIANT_F_BLOCKS);
    eq_rng_seed(&rng, SEED + l);
    eq_layer *layer = build_variant(&info->spec->layers[l], group, variant, &rng);
    double estimate = probe_layer(layer, li, alone, steps[pass], opt->layer_batch);
    int fused = !alone && eq_equivarify_used_fused(layer);

    eq_shape in = li->in;
    in.n = (alone ? GROUP_ORDER : 1) * opt->layer_batch;
    layer_run run = layer_run_create(layer, in, li->input_grad, &rng);
    layer_result *lr = &r->layers[r->layer_n++];
    double flops = (pass == 0 ? li->flops.forward : li->flops.backward) * (double)opt->layer_batch;
    int blocks = info->spec->layers[l].action == EQ_ACTION_BLOCKS;
    int spectral = fused && blocks && variant == VARIANT_F;
    const char *part = "h";
    if (!alone && !fused)
        part = "F generic";
    else if (!alone && !blocks)
        part = "F gathered";
    else if (!alone)
        part = spectral ? "F spectral" : "F blocks";
    *lr = (layer_result){ threads,
                          l + 1,
                          part,
                          passes[pass],
                          opt->layer_batch,
                          flops,
                          spectral ? flops * SPECTRAL_SHARE : flops,
                          peak_for(r, threads),
                          measure(opt, steps[pass], &run, estimate) };
    layer_run_release(&run);
    eq_layer_destroy(layer);
    eq_blocks_set_spectral(1);

    print_layer_result(lr, lr->peak_gflops);
    fflush(stdout);
    return fused;
}

static void run_layer_benchmarks(const options *opt, results *r, const network_info *info, const eq_group *group)
{
    printf("\nPer-layer GEMM GFLOP/s, %s network, batch %zu (h alone: batch %zu), medians\n", info->spec->name,
           opt->layer_batch, GROUP_ORDER * opt->layer_batch);
    printf("GFLOP counts the direct products: n * n weight blocks for a fused layer. The spectral path's GEMMs\n"
           "run %.0f%% of them; 'executed' and 'of peak' count only those.\n", 100.0 * SPECTRAL_SHARE);
    printf("threads  layer  part        pass        GFLOP    time ms   GFLOP/s  executed  of peak\n");

    for (size_t t = 0; t < r->thread_count_n; t++) {
        int threads = r->thread_counts[t];
        set_threads(threads);
        for (size_t l = 0; l < info->spec->layer_count; l++) {
            for (int pass = 0; pass < 2; pass++) {
                /* The block and the generic path run only where the default
                 * took the fused one. */
                if (measure_layer(opt, r, info, group, l, VARIANT_F, pass, threads)) {
                    if (info->spec->layers[l].action == EQ_ACTION_BLOCKS)
                        measure_layer(opt, r, info, group, l, VARIANT_F_BLOCKS, pass, threads);
                    measure_layer(opt, r, info, group, l, VARIANT_F_GENERIC, pass, threads);
                }
                measure_layer(opt, r, info, group, l, VARIANT_H, pass, threads);
            }
        }
    }
}

/* --- Whole-network measurement ----------------------------------------------------- */

static void print_run_result(const run_result *rr)
{
    printf("%-10s  %-5s  %5zu  %7d", rr->network, rr->mode, rr->batch, rr->threads);
    if (rr->m.skipped) {
        printf("  skipped: estimated %.1f s per iteration (%.2f images/s)\n", rr->m.estimate_s,
               (double)rr->batch / rr->m.estimate_s);
        return;
    }
    double images = (double)rr->batch / rr->m.median_s;
    printf("  %9.2f  %9.1f  %8.2f  %9.0f  %5zu  %7.2f\n", images, rr->m.median_s * 1e3,
           images * rr->flops_per_image * 1e-9, rr->peak_rss_mib, rr->m.count, rr->steal_s);
}

static void run_network_benchmarks(const options *opt, results *r, const network_info *info, const eq_group *group)
{
    static const char *const modes[] = { "train", "infer" };
    const step_fn steps[] = { step_training, step_inference };

    for (size_t t = 0; t < r->thread_count_n; t++) {
        int threads = r->thread_counts[t];
        set_threads(threads);
        for (int mode = 0; mode < 2; mode++) {
            /* The first step allocates the buffers, so the second is the probe. */
            network_run probe = network_run_create(info->spec, group, 1);
            steps[mode](&probe);
            double seconds_per_image = steps[mode](&probe);
            network_run_destroy(&probe);

            for (size_t b = 0; b < BATCH_COUNT; b++) {
                size_t batch = batch_sizes[b];
                run_result *rr = &r->runs[r->run_n++];
                int reset = reset_peak_rss();
                network_run run = network_run_create(info->spec, group, batch);

                double steal_start = steal_seconds();
                *rr = (run_result){ info->spec->name, modes[mode], batch, threads,
                                    mode == 0 ? info->flops.forward + info->flops.backward : info->flops.forward,
                                    NAN, NAN, measure(opt, steps[mode], &run, seconds_per_image * (double)batch) };
                rr->steal_s = steal_seconds() - steal_start;
                if (reset)
                    rr->peak_rss_mib = peak_rss_mib();
                network_run_destroy(&run);
                print_run_result(rr);
                fflush(stdout);
            }
        }
    }
}

/* Returns images/s of the matching run, or NaN if it was skipped or not run. */
static double images_per_second(const results *r, const char *network, const char *mode, size_t batch, int threads)
{
    for (size_t i = 0; i < r->run_n; i++) {
        const run_result *rr = &r->runs[i];
        if (strcmp(rr->network, network) == 0 && strcmp(rr->mode, mode) == 0 && rr->batch == batch
            && rr->threads == threads && !rr->m.skipped)
            return (double)rr->batch / rr->m.median_s;
    }
    return NAN;
}

/* Prints the ratio, or n/a when either run was skipped. */
static void print_ratio(const char *label, double ratio)
{
    if (isfinite(ratio))
        printf("  %s %.2f", label, ratio);
    else
        printf("  %s n/a", label);
}

static void print_thread_ratios(const results *r)
{
    if (r->thread_count_n < 2)
        return;
    int all = r->thread_counts[1];

    printf("\n%d-vs-1 thread ratio of images/s\n", all);
    for (size_t n = 0; n < r->network_n; n++) {
        for (size_t b = 0; b < BATCH_COUNT; b++) {
            const char *name = r->networks[n].spec->name;
            size_t batch = batch_sizes[b];
            printf("  %-10s batch %3zu", name, batch);
            print_ratio("train", images_per_second(r, name, "train", batch, all)
                                     / images_per_second(r, name, "train", batch, 1));
            print_ratio("infer", images_per_second(r, name, "infer", batch, all)
                                     / images_per_second(r, name, "infer", batch, 1));
            printf("\n");
        }
    }
}

/* --- JSON ------------------------------------------------------------------------ */

/* Writes a number, or null for NaN and infinities, which JSON cannot hold. */
static void json_number(FILE *out, double value)
{
    if (isfinite(value))
        fprintf(out, "%.6g", value);
    else
        fputs("null", out);
}

static void json_measurement(FILE *out, const measurement *m, double batch_or_zero)
{
    fprintf(out, "\"skipped\": %s, \"estimated_seconds\": ", m->skipped ? "true" : "false");
    json_number(out, m->estimate_s);
    fprintf(out, ", \"iterations\": %zu, \"median_seconds\": ", m->count);
    json_number(out, m->median_s);
    if (batch_or_zero > 0.0) {
        fputs(", \"images_per_second\": ", out);
        json_number(out, m->skipped ? NAN : batch_or_zero / m->median_s);
    }
}

/* Opens the JSON file before any measurement, so a bad path fails at once. */
static FILE *open_json(const char *path)
{
    FILE *out = fopen(path, "w");
    if (!out) {
        fprintf(stderr, "equivar_bench: cannot open %s for writing: %s\n", path, strerror(errno));
        exit(1);
    }
    return out;
}

static void write_json(FILE *out, const options *opt, const results *r)
{
    fprintf(out, "{\n  \"program\": \"equivar_bench\",\n  \"quick\": %s,\n  \"iterations\": %d,\n", opt->quick ? "true" : "false",
            opt->iterations);
    fprintf(out, "  \"min_seconds\": %g,\n  \"max_seconds\": %g,\n  \"threads\": %d,\n", opt->min_seconds,
            opt->max_seconds, opt->threads);
    fputs("  \"load_average_start\": ", out);
    json_number(out, r->load_start);
    fputs(",\n  \"load_average_end\": ", out);
    json_number(out, r->load_end);
    fputs(",\n", out);
    fprintf(out, "  \"peak\": {\"isa\": \"%s\", \"gflops_1_thread\": ", r->isa);
    json_number(out, r->peak_1.max_gflops);
    fputs(", \"gflops_all_threads\": ", out);
    json_number(out, r->peak_all.max_gflops);
    fputs(", \"median_gflops_1_thread\": ", out);
    json_number(out, r->peak_1.median_gflops);
    fputs(", \"median_gflops_all_threads\": ", out);
    json_number(out, r->peak_all.median_gflops);
    fputs("},\n  \"networks\": [\n", out);
    for (size_t i = 0; i < r->network_n; i++) {
        const network_info *n = &r->networks[i];
        fprintf(out, "    {\"name\": \"%s\", \"group\": \"c4\", \"params\": %zu, \"flops_forward_per_image\": ",
                n->spec->name, n->params);
        json_number(out, n->flops.forward);
        fputs(", \"flops_train_per_image\": ", out);
        json_number(out, n->flops.forward + n->flops.backward);
        fprintf(out, "}%s\n", i + 1 < r->network_n ? "," : "");
    }

    fputs("  ],\n  \"layers\": [\n", out);
    for (size_t i = 0; i < r->layer_n; i++) {
        const layer_result *lr = &r->layers[i];
        fprintf(out, "    {\"network\": \"reference\", \"layer\": %zu, \"part\": \"%s\", \"pass\": \"%s\", ", lr->layer,
                lr->part, lr->pass);
        fprintf(out, "\"batch\": %zu, \"threads\": %d, \"flops\": ", lr->batch, lr->threads);
        json_number(out, lr->flops);
        fputs(", \"gflops\": ", out);
        json_number(out, lr->m.skipped ? NAN : lr->flops / lr->m.median_s * 1e-9);
        fputs(", \"executed_flops\": ", out);
        json_number(out, lr->executed);
        fputs(", \"share_of_peak\": ", out);
        json_number(out, lr->m.skipped ? NAN : lr->executed / lr->m.median_s * 1e-9 / lr->peak_gflops);
        fputs(", ", out);
        json_measurement(out, &lr->m, 0.0);
        fprintf(out, "}%s\n", i + 1 < r->layer_n ? "," : "");
    }

    fputs("  ],\n  \"runs\": [\n", out);
    for (size_t i = 0; i < r->run_n; i++) {
        const run_result *rr = &r->runs[i];
        fprintf(out, "    {\"network\": \"%s\", \"mode\": \"%s\", \"batch\": %zu, \"threads\": %d, ", rr->network,
                rr->mode, rr->batch, rr->threads);
        json_measurement(out, &rr->m, (double)rr->batch);
        fputs(", \"gflops\": ", out);
        json_number(out, rr->m.skipped ? NAN : (double)rr->batch * rr->flops_per_image / rr->m.median_s * 1e-9);
        fputs(", \"peak_rss_mib\": ", out);
        json_number(out, rr->peak_rss_mib);
        fputs(", \"steal_seconds\": ", out);
        json_number(out, rr->steal_s);
        fprintf(out, "}%s\n", i + 1 < r->run_n ? "," : "");
    }
    fputs("  ],\n  \"max_rss_mib\": ", out);
    json_number(out, process_peak_rss_mib());
    fputs("\n}\n", out);

    if (fclose(out) != 0) {
        fprintf(stderr, "equivar_bench: cannot write %s: %s\n", opt->json_path, strerror(errno));
        exit(1);
    }
}

/* --- Main ------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    options opt = parse_options(argc, argv);
    results r;
    eq_group *group = NULL;
    fma_kernel kernel = pick_fma_kernel();

    FILE *json = opt.json_path ? open_json(opt.json_path) : NULL;

    memset(&r, 0, sizeof r);
    check(eq_group_c4(&group), "eq_group_c4");
    r.isa = kernel.isa;
    r.thread_counts[r.thread_count_n++] = 1;
    if (opt.threads > 1)
        r.thread_counts[r.thread_count_n++] = opt.threads;

    printf("libequivar benchmark: %d timed iterations after 1 warm-up, limit %.0f s per measurement%s\n",
           opt.iterations, opt.max_seconds, opt.quick ? " (quick)" : "");
    r.load_start = load_average();
    printf("online CPUs %ld, multi-threaded runs use %d threads, 1-minute load average %.2f\n",
           sysconf(_SC_NPROCESSORS_ONLN), opt.threads, r.load_start);
#ifndef __OPTIMIZE__
    /* Unoptimised, the FMA loop keeps its accumulators in memory. */
    printf("NOTE: built without optimisation, so the FMA peak is far too low; use a Release build\n");
#endif

    r.peak_1 = measure_fma_peak(&kernel, 1, opt.quick);
    r.peak_all = opt.threads > 1 ? measure_fma_peak(&kernel, opt.threads, opt.quick) : r.peak_1;
    printf("\nFP32 FMA peak (%s register-only loop; maximum and median of the runs)\n", kernel.isa);
    printf("  1 thread   %8.1f GFLOP/s  (median %.1f)\n", r.peak_1.max_gflops, r.peak_1.median_gflops);
    printf("  %d threads  %8.1f GFLOP/s  (median %.1f)\n", opt.threads, r.peak_all.max_gflops,
           r.peak_all.median_gflops);

    const network_spec *specs[2] = { &small_network, &reference_network };
    printf("\nNetworks (C4, every layer equivarified, input 1x%dx%d), GEMM FLOPs from the layer shapes\n",
           IMAGE_SIZE, IMAGE_SIZE);
    for (size_t i = 0; i < 2; i++) {
        if (strcmp(opt.network, "all") != 0 && strcmp(opt.network, specs[i]->name) != 0)
            continue;
        network_info *info = &r.networks[r.network_n++];
        *info = describe_network(specs[i], group);
        printf("  %-10s  forward %.4f GFLOP/image, training %.4f GFLOP/image, %zu parameters\n", info->spec->name,
               info->flops.forward * 1e-9, (info->flops.forward + info->flops.backward) * 1e-9, info->params);
    }

    for (size_t i = 0; i < r.network_n; i++)
        if (r.networks[i].spec == &reference_network)
            run_layer_benchmarks(&opt, &r, &r.networks[i], group);

    printf("\nImages/s, medians (training: forward, loss, backward, SGD step)\n");
    printf("GFLOP/s counts the direct products, as the network GFLOP above; the spectral path runs fewer.\n");
    printf("'steal s' is the CPU time the hypervisor gave to other guests during the measurement.\n");
    printf("network     mode   batch  threads   images/s    ms/iter   GFLOP/s   peak MiB  iters  steal s\n");
    for (size_t i = 0; i < r.network_n; i++)
        run_network_benchmarks(&opt, &r, &r.networks[i], group);
    print_thread_ratios(&r);
    r.load_end = load_average();
    printf("\npeak resident memory of the process: %.0f MiB\n", process_peak_rss_mib());
    printf("1-minute load average at the end: %.2f\n", r.load_end);

    if (json)
        write_json(json, &opt, &r);
    eq_group_destroy(group);
    return 0;
}
