/* mnist_equivar: trains an equivarified CNN on upright MNIST and evaluates
 * it on upright and randomly transformed test images. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "equivar.h"

#ifndef EQ_MNIST_DATA_DIR
#define EQ_MNIST_DATA_DIR "data/mnist"
#endif

#define DIGITS 10

/* Order of the largest test group (D4) that the per-element table covers. */
#define MAX_ELEMENTS 8

/* MNIST training-set pixel mean and standard deviation on the [0, 1] scale.
 * A pixelwise affine map commutes with pixel permutations, so standardising
 * keeps the network exactly equivariant. */
#define MNIST_MEAN 0.1307f
#define MNIST_STD 0.3081f

/* Checkpoint metadata starts with this tag and a version of its own.
 * Version 1 had no variant field, because every network was a lift network. */
#define METADATA_TAG "mnist_equivar"
#define METADATA_VERSION 2

/* --- Options -------------------------------------------------------------- */

typedef enum command { COMMAND_BOTH, COMMAND_TRAIN, COMMAND_EVAL } command;

/* The two network designs, which build_network describes. */
typedef enum variant { VARIANT_LIFT, VARIANT_ALIGNED } variant;

static const char *const variant_names[] = { "lift", "aligned" };

typedef struct options {
    command command;
    char group[32];      /* "c4", "d4" or "none" */
    char test_group[32]; /* "": the network's group, or c4 for a plain CNN */
    variant variant;
    size_t epochs;       /* 0 until set, then the group's default */
    size_t batch;
    double lr;
    double weight_decay; /* L2 coefficient added to the gradient */
    size_t warmup;       /* steps */
    uint64_t seed;
    int threads;         /* 0: the library's default */
    size_t widths[3];    /* per branch: conv 1 and conv 2 channels, hidden units; 0 until set */
    const char *data_dir;
    const char *checkpoint;
    const char *json;
} options;

/* The network size of each group when --epochs and --widths are not given,
 * chosen from the runs in docs/RESULTS.md for accuracy within a time budget. */
typedef struct group_defaults {
    const char *group;
    size_t epochs;
    size_t widths[3];
} group_defaults;

static const group_defaults defaults_by_group[] = {
    { "c4", 3, { 4, 16, 128 } },
    { "d4", 2, { 4, 8, 64 } },
    { "none", 3, { 4, 16, 128 } },
};

#define DEFAULT_VARIANT VARIANT_ALIGNED

static const group_defaults *find_group_defaults(const char *group)
{
    for (size_t i = 0; i < sizeof defaults_by_group / sizeof defaults_by_group[0]; i++) {
        if (strcmp(defaults_by_group[i].group, group) == 0)
            return &defaults_by_group[i];
    }
    return &defaults_by_group[0];
}

static void set_defaults(options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->command = COMMAND_BOTH;
    snprintf(opts->group, sizeof opts->group, "c4");
    opts->variant = DEFAULT_VARIANT;
    opts->batch = 64;
    opts->lr = 0.05;
    opts->warmup = 200;
    opts->seed = 1;
    opts->data_dir = EQ_MNIST_DATA_DIR;
    opts->checkpoint = "mnist_equivar.ckpt";
}

/* Fills the epochs and widths that the command line left unset. */
static void apply_group_defaults(options *opts)
{
    const group_defaults *defaults = find_group_defaults(opts->group);

    if (opts->epochs == 0)
        opts->epochs = defaults->epochs;
    if (opts->widths[0] == 0)
        memcpy(opts->widths, defaults->widths, sizeof opts->widths);
}

static void print_help(FILE *out)
{
    fprintf(out,
            "Usage: mnist_equivar [train|eval] [options]\n"
            "\n"
            "Trains an exactly equivariant CNN on the 60,000 upright MNIST training images\n"
            "(train), evaluates a checkpoint on the 10,000 test images, upright and each\n"
            "transformed by a random group element (eval), or both (no command).\n"
            "For a group of order n the network outputs n blocks of 10 logits; argmax a\n"
            "decodes to the element a / 10 that turns the input upright and the digit a %% 10.\n"
            "\n"
            "Options:\n"
            "  --group NAME        symmetry group of the network: c4, d4 or none (a plain\n"
            "                      CNN of the same widths); default c4. eval takes the\n"
            "                      group, variant and widths from the checkpoint.\n"
            "  --variant NAME      lift: only the first layer transforms pixels, later\n"
            "                      layers permute channel blocks; aligned: the two conv\n"
            "                      layers turn each output block back (group convolution),\n"
            "                      so the group permutes blocks and transforms pixels;\n"
            "                      default %s\n"
            "  --test-group NAME   group whose random elements transform the test images:\n"
            "                      c4 or d4; default: the network's group, or c4 for none\n"
            "  --epochs N          passes over the training set; default by group:\n"
            "                     ",
            variant_names[DEFAULT_VARIANT]);
    for (size_t i = 0; i < sizeof defaults_by_group / sizeof defaults_by_group[0]; i++)
        fprintf(out, "%s %s %zu", i ? "," : "", defaults_by_group[i].group, defaults_by_group[i].epochs);
    fprintf(out,
            "\n"
            "  --batch N           images per mini-batch; default 64\n"
            "  --lr X              peak learning rate of SGD with momentum 0.9; default 0.05\n"
            "  --weight-decay X    L2 weight decay added to the gradient; default 0\n"
            "  --warmup N          optimiser steps of linear warm-up before the cosine decay\n"
            "                      to 0; default 200\n"
            "  --widths A,B,C      per-branch channels of conv 1 and conv 2 and hidden units\n"
            "                      of the dense layer; default by group:\n"
            "                     ");
    for (size_t i = 0; i < sizeof defaults_by_group / sizeof defaults_by_group[0]; i++) {
        const size_t *widths = defaults_by_group[i].widths;
        fprintf(out, "%s %s %zu,%zu,%zu", i ? "," : "", defaults_by_group[i].group, widths[0], widths[1],
                widths[2]);
    }
    fprintf(out,
            "\n"
            "  --seed N            seeds initialisation, shuffling and the test transforms;\n"
            "                      default 1\n"
            "  --threads N         worker threads; default: EQ_NUM_THREADS or the number of\n"
            "                      online CPUs\n"
            "  --data DIR          directory with the four MNIST .gz files; default\n"
            "                      %s\n"
            "  --checkpoint FILE   checkpoint written by train, read by eval; default\n"
            "                      mnist_equivar.ckpt\n"
            "  --json FILE         also write the results as one JSON object to FILE\n"
            "  --help              show this help and exit\n",
            EQ_MNIST_DATA_DIR);
}

/* Prints a usage error and returns exit status 2. */
static int usage_error(const char *format, const char *detail, const char *value)
{
    fprintf(stderr, "mnist_equivar: ");
    fprintf(stderr, format, detail, value);
    fprintf(stderr, "\nTry 'mnist_equivar --help'.\n");
    return 2;
}

static int parse_size(const char *text, size_t *out)
{
    char *end;

    if (!text || *text < '0' || *text > '9')
        return 0;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || value == 0 || value > SIZE_MAX)
        return 0;
    *out = (size_t)value;
    return 1;
}

static int parse_widths(const char *text, size_t widths[3])
{
    char copy[64];
    char *save = NULL;

    if (!text || strlen(text) >= sizeof copy)
        return 0;
    snprintf(copy, sizeof copy, "%s", text);
    char *part = strtok_r(copy, ",", &save);
    for (int i = 0; i < 3; i++, part = strtok_r(NULL, ",", &save)) {
        if (!part || !parse_size(part, &widths[i]) || widths[i] > 4096)
            return 0;
    }
    return part == NULL;
}

static int known_group(const char *name)
{
    return strcmp(name, "c4") == 0 || strcmp(name, "d4") == 0 || strcmp(name, "none") == 0;
}

static int parse_count(const char *name, const char *value, size_t max, size_t *out)
{
    if (!parse_size(value, out) || *out > max)
        return usage_error("%s: invalid value '%s', expected a positive integer", name, value);
    return 0;
}

/* Returns 1 and sets *out if name is "lift" or "aligned", else 0. */
static int find_variant(const char *name, variant *out)
{
    for (size_t i = 0; i < sizeof variant_names / sizeof variant_names[0]; i++) {
        if (strcmp(name, variant_names[i]) == 0) {
            *out = (variant)i;
            return 1;
        }
    }
    return 0;
}

static int parse_variant(const char *name, const char *value, variant *out)
{
    if (find_variant(value, out))
        return 0;
    return usage_error("%s: unknown variant '%s', expected lift or aligned", name, value);
}

static int parse_group(const char *name, const char *value, int allow_none, char out[32])
{
    if (strcmp(value, "c4") != 0 && strcmp(value, "d4") != 0 && !(allow_none && strcmp(value, "none") == 0))
        return usage_error(allow_none ? "%s: unknown group '%s', expected c4, d4 or none"
                                      : "%s: unknown group '%s', expected c4 or d4",
                           name, value);
    snprintf(out, 32, "%s", value);
    return 0;
}

/* Returns 0 on success or the exit status for a usage error. */
static int parse_option(options *opts, const char *name, const char *value)
{
    static const char *const names[] = {
        "--group", "--variant", "--test-group", "--epochs", "--batch", "--lr", "--weight-decay", "--warmup",
        "--widths", "--seed", "--threads", "--data", "--checkpoint", "--json",
    };
    size_t known = 0;
    size_t number;
    char *end;

    while (known < sizeof names / sizeof names[0] && strcmp(name, names[known]) != 0)
        known++;
    if (known == sizeof names / sizeof names[0])
        return usage_error("unknown option '%s'%s", name, "");
    if (!value)
        return usage_error("%s needs a value%s", name, "");

    if (strcmp(name, "--group") == 0)
        return parse_group(name, value, 1, opts->group);
    if (strcmp(name, "--variant") == 0)
        return parse_variant(name, value, &opts->variant);
    if (strcmp(name, "--test-group") == 0)
        return parse_group(name, value, 0, opts->test_group);
    if (strcmp(name, "--epochs") == 0)
        return parse_count(name, value, SIZE_MAX, &opts->epochs);
    if (strcmp(name, "--batch") == 0)
        return parse_count(name, value, SIZE_MAX, &opts->batch);
    if (strcmp(name, "--threads") == 0) {
        if (!parse_size(value, &number) || number > 256)
            return usage_error("%s: invalid value '%s', expected an integer from 1 to 256", name, value);
        opts->threads = (int)number;
        return 0;
    }
    if (strcmp(name, "--warmup") == 0) {
        if (strcmp(value, "0") == 0)
            opts->warmup = 0;
        else if (!parse_size(value, &opts->warmup))
            return usage_error("%s: invalid value '%s', expected an integer >= 0", name, value);
        return 0;
    }
    if (strcmp(name, "--lr") == 0) {
        errno = 0;
        opts->lr = strtod(value, &end);
        if (errno != 0 || *end != '\0' || end == value || !(opts->lr > 0.0) || !isfinite(opts->lr))
            return usage_error("%s: invalid value '%s', expected a number > 0", name, value);
        return 0;
    }
    if (strcmp(name, "--weight-decay") == 0) {
        errno = 0;
        opts->weight_decay = strtod(value, &end);
        if (errno != 0 || *end != '\0' || end == value || !(opts->weight_decay >= 0.0)
            || !isfinite(opts->weight_decay))
            return usage_error("%s: invalid value '%s', expected a number >= 0", name, value);
        return 0;
    }
    if (strcmp(name, "--seed") == 0) {
        errno = 0;
        opts->seed = strtoull(value, &end, 10);
        if (errno != 0 || *end != '\0' || *value < '0' || *value > '9')
            return usage_error("%s: invalid value '%s', expected an integer >= 0", name, value);
        return 0;
    }
    if (strcmp(name, "--widths") == 0) {
        if (!parse_widths(value, opts->widths))
            return usage_error("%s: invalid value '%s', expected three positive integers up to 4096, e.g. 8,16,64",
                               name, value);
        return 0;
    }

    if (strcmp(name, "--data") == 0)
        opts->data_dir = value;
    else if (strcmp(name, "--checkpoint") == 0)
        opts->checkpoint = value;
    else
        opts->json = value;
    return 0;
}

/* Returns -1 to continue, else the exit status (0 after --help). */
static int parse_arguments(int argc, char **argv, options *opts)
{
    int first = 1;

    set_defaults(opts);
    if (argc > 1 && strcmp(argv[1], "train") == 0) {
        opts->command = COMMAND_TRAIN;
        first = 2;
    } else if (argc > 1 && strcmp(argv[1], "eval") == 0) {
        opts->command = COMMAND_EVAL;
        first = 2;
    }

    for (int i = first; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_help(stdout);
            return 0;
        }
        if (strncmp(arg, "--", 2) != 0)
            return usage_error("unexpected argument '%s'%s; the command (train or eval) comes first",
                               arg, "");

        /* Both "--name value" and "--name=value". */
        char name[64];
        const char *equals = strchr(arg, '=');
        const char *value;
        if (equals) {
            snprintf(name, sizeof name, "%.*s", (int)(equals - arg), arg);
            value = equals + 1;
        } else {
            snprintf(name, sizeof name, "%s", arg);
            value = i + 1 < argc ? argv[++i] : NULL;
        }
        int status = parse_option(opts, name, value);
        if (status != 0)
            return status;
    }

    apply_group_defaults(opts);
    return -1;
}

/* --- Data and network ------------------------------------------------------ */

/* Prints the library's message for a failed call and returns exit status 1. */
static int library_error(const char *action, eq_status status)
{
    fprintf(stderr, "mnist_equivar: %s failed (%s): %s\n", action, eq_status_string(status), eq_last_error());
    return 1;
}

static eq_status load_split(const char *dir, const char *split, eq_mnist **out)
{
    eq_status status = eq_mnist_load_split(dir, split, out);
    if (status != EQ_OK)
        return status;

    size_t count = (*out)->count * (*out)->rows * (*out)->cols;
    for (size_t i = 0; i < count; i++)
        (*out)->images[i] = ((*out)->images[i] - MNIST_MEAN) / MNIST_STD;
    return EQ_OK;
}

static eq_status append(eq_layer *seq, eq_status status, eq_layer *layer)
{
    if (status != EQ_OK) {
        eq_layer_destroy(layer);
        return status;
    }
    return eq_sequential_append(seq, layer);
}

/* h1 = conv(in -> out, 3x3, pad 1), relu, maxpool 2: halves H and W. */
static eq_status conv_block(size_t in, size_t out, eq_layer **block)
{
    eq_layer *layer = NULL;
    eq_status status = eq_sequential_create(block);

    if (status == EQ_OK) {
        status = eq_conv2d_create(in, out, 3, 3, 1, 1, &layer);
        status = append(*block, status, layer);
    }
    if (status == EQ_OK) {
        status = eq_relu_create(&layer);
        status = append(*block, status, layer);
    }
    if (status == EQ_OK) {
        status = eq_maxpool_create(2, 2, &layer);
        status = append(*block, status, layer);
    }
    return status;
}

/* flatten, dense(in -> hidden), relu, dense(hidden -> 10). */
static eq_status head_block(size_t in, size_t hidden, eq_layer **block)
{
    eq_layer *layer = NULL;
    eq_status status = eq_sequential_create(block);

    if (status == EQ_OK) {
        status = eq_flatten_create(&layer);
        status = append(*block, status, layer);
    }
    if (status == EQ_OK) {
        status = eq_dense_create(in, hidden, &layer);
        status = append(*block, status, layer);
    }
    if (status == EQ_OK) {
        status = eq_relu_create(&layer);
        status = append(*block, status, layer);
    }
    if (status == EQ_OK) {
        status = eq_dense_create(hidden, DIGITS, &layer);
        status = append(*block, status, layer);
    }
    return status;
}

/* Wraps the block h into equivarify(h), or its aligned variant, and appends
 * it to the network, which checks that `action` is what the previous layer
 * outputs. */
static eq_status append_equivarified(eq_layer *net, const eq_group *group, int aligned, eq_action action,
                                     eq_status status, eq_layer *h)
{
    eq_layer *wrapped = NULL;

    if (status != EQ_OK) {
        eq_layer_destroy(h);
        return status;
    }
    if (aligned)
        status = eq_equivarify_aligned(h, group, action, &wrapped);
    else
        status = eq_equivarify(h, group, action, &wrapped);
    if (status != EQ_OK)
        return status;
    return eq_equivariant_append(net, wrapped);
}

/* The network for 28 x 28 images and a group of order n, with widths
 * (A, B, C) per branch. h1 = conv(1 -> A), relu, maxpool; h2 = conv(nA -> B),
 * relu, maxpool; h3 = flatten, dense(nB*49 -> C), relu, dense(C -> 10).
 *
 * lift:    F1 = equivarify(h1), pixel input action:       (N, nA, 14, 14)
 *          F2 = equivarify(h2), block input action:        (N, nB, 7, 7)
 *          F3 = equivarify(h3), block input action:        (N, 10n, 1, 1)
 * aligned: F1 = aligned(h1), pixel input action:          (N, nA, 14, 14)
 *          F2 = aligned(h2), blocks+pixels input action:  (N, nB, 7, 7)
 *          F3 = equivarify(h3), blocks+pixels input action: (N, 10n, 1, 1)
 *
 * In both, the output is n blocks of 10 logits that the group permutes.
 * The aligned F1 and F2 turn each output block back upright, so their
 * feature maps keep a common orientation as in a group convolution. With the
 * trivial group either variant is the plain CNN of the same widths. */
static eq_status build_network(const eq_group *group, variant variant, const size_t widths[3], uint64_t seed,
                               eq_layer **out)
{
    size_t n = eq_group_order(group);
    int aligned = variant == VARIANT_ALIGNED;
    eq_action hidden_action = aligned ? EQ_ACTION_BLOCKS_PIXELS : EQ_ACTION_BLOCKS;
    eq_layer *net = NULL, *h = NULL;
    eq_status status = eq_sequential_create(&net);

    if (status == EQ_OK) {
        eq_status built = conv_block(1, widths[0], &h);
        status = append_equivarified(net, group, aligned, EQ_ACTION_PIXELS, built, h);
    }
    if (status == EQ_OK) {
        eq_status built = conv_block(n * widths[0], widths[1], &h);
        status = append_equivarified(net, group, aligned, hidden_action, built, h);
    }
    if (status == EQ_OK) {
        eq_status built = head_block(n * widths[1] * 7 * 7, widths[2], &h);
        status = append_equivarified(net, group, 0, hidden_action, built, h);
    }
    if (status != EQ_OK) {
        eq_layer_destroy(net);
        return status;
    }

    eq_rng rng;
    eq_rng_seed(&rng, seed);
    eq_layer_init_he(net, &rng);
    *out = net;
    return EQ_OK;
}

/* --- Training ---------------------------------------------------------------- */

static void print_epoch(const eq_epoch_report *report, void *user_data)
{
    (void)user_data;
    fprintf(stderr, "epoch %zu/%zu: mean loss %.4f, %.1f s, %.0f images/s, lr %.5f\n", report->epoch,
            report->epochs, report->mean_loss, report->seconds, report->images_per_second,
            (double)report->learning_rate);
}

static void format_metadata(const options *opts, const eq_train_result *result, char *buf, size_t size)
{
    snprintf(buf, size,
             "%s %d group=%s variant=%s widths=%zu,%zu,%zu epochs=%zu batch=%zu lr=%g weight_decay=%g"
             " warmup=%zu seed=%llu train_seconds=%.3f images_per_second=%.1f",
             METADATA_TAG, METADATA_VERSION, opts->group, variant_names[opts->variant], opts->widths[0],
             opts->widths[1], opts->widths[2], opts->epochs, opts->batch, opts->lr, opts->weight_decay, opts->warmup,
             (unsigned long long)opts->seed, result->seconds, result->images_per_second);
}

static int run_train(const options *opts)
{
    eq_mnist *train = NULL;
    eq_group *group = NULL;
    eq_layer *net = NULL;
    eq_optimizer *optimizer = NULL;
    eq_train_result result;
    int exit_code = 1;

    eq_status status = load_split(opts->data_dir, "train", &train);
    if (status != EQ_OK)
        return library_error("loading the MNIST training set", status);
    status = eq_group_by_name(opts->group, &group);
    if (status == EQ_OK)
        status = build_network(group, opts->variant, opts->widths, opts->seed, &net);
    if (status != EQ_OK) {
        exit_code = library_error("building the network", status);
        goto done;
    }

    eq_optimizer_config sgd = eq_optimizer_sgd_default();
    sgd.weight_decay = (float)opts->weight_decay;
    status = eq_optimizer_create(net, &sgd, &optimizer);
    if (status != EQ_OK) {
        exit_code = library_error("creating the optimizer", status);
        goto done;
    }

    eq_train_config config = eq_train_config_default();
    config.epochs = opts->epochs;
    config.batch_size = opts->batch;
    config.seed = opts->seed;
    config.schedule.kind = EQ_LR_WARMUP_COSINE;
    config.schedule.base_lr = (float)opts->lr;
    config.schedule.warmup_steps = opts->warmup;
    config.on_epoch = print_epoch;
    eq_labelled_set set = { train->images, train->labels, train->count, 1, train->rows, train->cols };

    size_t parameters = 0;
    for (size_t p = 0; p < eq_layer_param_count(net); p++) {
        eq_param param;
        eq_layer_param(net, p, &param);
        parameters += param.count;
    }
    fprintf(stderr, "training group %s, variant %s, widths %zu,%zu,%zu (%zu parameters) on %zu images"
            " with %d threads\n", opts->group, variant_names[opts->variant], opts->widths[0], opts->widths[1],
            opts->widths[2], parameters, train->count, eq_get_num_threads());
    status = eq_train(net, optimizer, &set, &config, &result);
    if (status != EQ_OK) {
        exit_code = library_error("training", status);
        goto done;
    }

    char metadata[512];
    format_metadata(opts, &result, metadata, sizeof metadata);
    status = eq_checkpoint_save(net, metadata, opts->checkpoint);
    if (status != EQ_OK) {
        exit_code = library_error("saving the checkpoint", status);
        goto done;
    }
    printf("trained %zu epochs in %.1f s, %.0f images/s; checkpoint %s\n", result.epochs, result.seconds,
           result.images_per_second, opts->checkpoint);
    exit_code = 0;

done:
    eq_optimizer_destroy(optimizer);
    eq_layer_destroy(net);
    eq_group_destroy(group);
    eq_mnist_destroy(train);
    return exit_code;
}

/* --- Evaluation ------------------------------------------------------------- */

/* What a checkpoint's metadata records about the run that wrote it. */
typedef struct run_info {
    char group[32];
    variant variant;
    size_t widths[3];
    size_t epochs;
    double train_seconds;
    double images_per_second;
} run_info;

/* Copies the value of the field "key=value" of the metadata, which ends at
 * the next space, to value. Returns 1 if the field is present and fits. */
static int metadata_field(const char *metadata, const char *key, char *value, size_t size)
{
    size_t key_length = strlen(key);

    for (const char *field = strchr(metadata, ' '); field; field = strchr(field + 1, ' ')) {
        if (strncmp(field + 1, key, key_length) != 0 || field[1 + key_length] != '=')
            continue;
        const char *start = field + 2 + key_length;
        size_t length = strcspn(start, " ");
        if (length >= size)
            return 0;
        memcpy(value, start, length);
        value[length] = '\0';
        return 1;
    }
    return 0;
}

/* Returns 1 if the metadata was written by this program, else 0. */
static int parse_metadata(const char *metadata, run_info *info)
{
    char text[64];
    char tail;
    int version;
    unsigned long long epochs;

    memset(info, 0, sizeof *info);
    if (sscanf(metadata, METADATA_TAG " %d", &version) != 1 || version < 1 || version > METADATA_VERSION)
        return 0;
    if (!metadata_field(metadata, "group", info->group, sizeof info->group) || !known_group(info->group))
        return 0;

    /* Version 1 predates the aligned variant. */
    info->variant = VARIANT_LIFT;
    if (version >= 2
        && (!metadata_field(metadata, "variant", text, sizeof text) || !find_variant(text, &info->variant)))
        return 0;

    if (!metadata_field(metadata, "widths", text, sizeof text)
        || sscanf(text, "%zu,%zu,%zu%c", &info->widths[0], &info->widths[1], &info->widths[2], &tail) != 3)
        return 0;
    if (!metadata_field(metadata, "epochs", text, sizeof text) || sscanf(text, "%llu%c", &epochs, &tail) != 1)
        return 0;
    info->epochs = (size_t)epochs;
    if (!metadata_field(metadata, "train_seconds", text, sizeof text)
        || sscanf(text, "%lf%c", &info->train_seconds, &tail) != 1)
        return 0;
    if (!metadata_field(metadata, "images_per_second", text, sizeof text)
        || sscanf(text, "%lf%c", &info->images_per_second, &tail) != 1)
        return 0;
    return 1;
}

/* Accuracy counts over one test set, overall and per transforming element. */
typedef struct tally {
    size_t count, joint_correct, digit_correct;
} tally;

typedef struct eval_report {
    int joint;                       /* 1 when the network's group is the test group */
    tally upright;
    tally transformed;
    size_t elements;                 /* order of the test group */
    tally per_element[MAX_ELEMENTS]; /* by the element that transformed the image */
    const eq_group *test_group;
} eval_report;

static double fraction(size_t part, size_t whole)
{
    return whole ? (double)part / (double)whole : 0.0;
}

/* Evaluates net on `set`, whose labels are joint labels (digits when !joint),
 * and adds digit and joint hits to *total and, when per_element is not
 * NULL, to the tally of each image's transforming element. predictions is
 * scratch space for set->count classes. */
static eq_status score(eq_layer *net, const eq_labelled_set *set, const int32_t *digits, const size_t *elements,
                       int joint, int32_t *predictions, tally *total, tally *per_element)
{
    eq_eval_result *result = NULL;
    eq_status status = eq_evaluate(net, set, 256, predictions, &result);

    if (status != EQ_OK)
        return status;
    for (size_t i = 0; i < set->count; i++) {
        int digit_ok = predictions[i] % DIGITS == digits[i];
        int joint_ok = joint && predictions[i] == set->labels[i];
        tally *element = per_element ? &per_element[elements[i]] : NULL;
        total->count++;
        total->digit_correct += (size_t)digit_ok;
        total->joint_correct += (size_t)joint_ok;
        if (element) {
            element->count++;
            element->digit_correct += (size_t)digit_ok;
            element->joint_correct += (size_t)joint_ok;
        }
    }
    eq_eval_result_destroy(result);
    return EQ_OK;
}

/* Transforms each test image by a random element k of the test group. Its
 * joint label is inv(k) * 10 + digit, because the block of inv(k), the
 * element that turns the image back upright, is the one that fires. */
static eq_status transform_test_set(const eq_mnist *test, const eq_group *group, int joint, uint64_t seed,
                                    float *images, int32_t *labels, size_t *elements)
{
    size_t pixels = test->rows * test->cols;
    eq_rng rng;

    eq_rng_seed(&rng, seed ^ 0x7465737473657431ull);
    for (size_t i = 0; i < test->count; i++) {
        size_t k = (size_t)eq_rng_below(&rng, eq_group_order(group));
        eq_tensor x = { eq_shape_make(1, 1, test->rows, test->cols), test->images + i * pixels };
        eq_tensor y = { eq_shape_make(1, 1, test->rows, test->cols), images + i * pixels };
        eq_status status = eq_group_act_pixels(group, k, &x, &y);
        if (status != EQ_OK)
            return status;
        elements[i] = k;
        labels[i] = joint ? (int32_t)(eq_group_inv(group, k) * DIGITS) + test->labels[i] : test->labels[i];
    }
    return EQ_OK;
}

/* Scores net on the upright and the transformed test set. Returns the exit
 * status: 0, or 1 after printing why it failed. */
static int evaluate_all(eq_layer *net, const eq_mnist *test, const eq_group *group, const eq_group *test_group,
                        uint64_t seed, eval_report *report)
{
    size_t count = test->count, pixels = test->rows * test->cols;
    float *images = malloc(count * pixels * sizeof(float));
    int32_t *labels = malloc(count * sizeof(int32_t));
    int32_t *predictions = malloc(count * sizeof(int32_t));
    size_t *elements = malloc(count * sizeof(size_t));
    int exit_code = 1;

    memset(report, 0, sizeof *report);
    report->joint = eq_group_order(group) > 1 && strcmp(eq_group_name(group), eq_group_name(test_group)) == 0;
    report->elements = eq_group_order(test_group);
    report->test_group = test_group;
    if (report->elements > MAX_ELEMENTS) {
        fprintf(stderr, "mnist_equivar: the test group %s has %zu elements, this program reports at most %d\n",
                eq_group_name(test_group), report->elements, MAX_ELEMENTS);
        goto done;
    }
    if (!images || !labels || !predictions || !elements) {
        fprintf(stderr, "mnist_equivar: cannot allocate buffers for %zu test images\n", count);
        goto done;
    }

    /* Upright: the joint label of digit d is d, block 0 (the identity). */
    eq_labelled_set upright = { test->images, test->labels, count, 1, test->rows, test->cols };
    eq_status status = score(net, &upright, test->labels, NULL, report->joint, predictions, &report->upright, NULL);
    if (status == EQ_OK)
        status = transform_test_set(test, test_group, report->joint, seed, images, labels, elements);
    if (status == EQ_OK) {
        eq_labelled_set transformed = { images, labels, count, 1, test->rows, test->cols };
        status = score(net, &transformed, test->labels, elements, report->joint, predictions, &report->transformed,
                       report->per_element);
    }
    exit_code = status == EQ_OK ? 0 : library_error("evaluating", status);

done:
    free(images);
    free(labels);
    free(predictions);
    free(elements);
    return exit_code;
}

static void print_accuracy(const char *label, const tally *t, int joint)
{
    if (joint)
        printf("%-12s joint accuracy %.4f, digit accuracy %.4f (%zu images)\n", label,
               fraction(t->joint_correct, t->count), fraction(t->digit_correct, t->count), t->count);
    else
        printf("%-12s digit accuracy %.4f (%zu images)\n", label, fraction(t->digit_correct, t->count), t->count);
}

static void print_report(const run_info *info, const eval_report *report)
{
    printf("group %s, variant %s, widths %zu,%zu,%zu, %zu epochs, training %.1f s at %.0f images/s\n",
           info->group, variant_names[info->variant], info->widths[0], info->widths[1], info->widths[2],
           info->epochs, info->train_seconds, info->images_per_second);
    print_accuracy("upright", &report->upright, report->joint);
    print_accuracy("transformed", &report->transformed, report->joint);
    if (report->joint)
        printf("transformed joint accuracy %s upright joint accuracy (%zu vs %zu correct)\n",
               report->transformed.joint_correct == report->upright.joint_correct ? "equals" : "DIFFERS FROM",
               report->transformed.joint_correct, report->upright.joint_correct);

    printf("\nby transforming element of %s:\n%-8s %8s %8s %8s\n", eq_group_name(report->test_group), "element",
           "images", "joint", "digit");
    for (size_t k = 0; k < report->elements; k++) {
        const tally *t = &report->per_element[k];
        char joint_text[16] = "-";
        if (report->joint)
            snprintf(joint_text, sizeof joint_text, "%.4f", fraction(t->joint_correct, t->count));
        printf("%-8s %8zu %8s %8.4f\n", eq_group_element_name(report->test_group, k), t->count, joint_text,
               fraction(t->digit_correct, t->count));
    }
}

static void json_tally(FILE *out, const char *key, const tally *t, int joint)
{
    fprintf(out, "  \"%s\": {\"images\": %zu, \"digit_accuracy\": %.6f, \"joint_accuracy\": ", key, t->count,
            fraction(t->digit_correct, t->count));
    if (joint)
        fprintf(out, "%.6f}", fraction(t->joint_correct, t->count));
    else
        fprintf(out, "null}");
}

static int write_json(const char *path, const run_info *info, const eval_report *report)
{
    FILE *out = fopen(path, "w");
    if (!out) {
        fprintf(stderr, "mnist_equivar: cannot create '%s': %s\n", path, strerror(errno));
        return 1;
    }

    fprintf(out, "{\n  \"group\": \"%s\",\n  \"variant\": \"%s\",\n  \"test_group\": \"%s\",\n",
            info->group, variant_names[info->variant], eq_group_name(report->test_group));
    fprintf(out, "  \"widths\": [%zu, %zu, %zu],\n  \"epochs\": %zu,\n", info->widths[0], info->widths[1],
            info->widths[2], info->epochs);
    fprintf(out, "  \"train_seconds\": %.3f,\n  \"images_per_second\": %.1f,\n", info->train_seconds,
            info->images_per_second);
    json_tally(out, "upright", &report->upright, report->joint);
    fprintf(out, ",\n");
    json_tally(out, "transformed", &report->transformed, report->joint);
    fprintf(out, ",\n  \"per_element\": [");
    for (size_t k = 0; k < report->elements; k++) {
        const tally *t = &report->per_element[k];
        fprintf(out, "%s\n    {\"element\": %zu, \"name\": \"%s\", \"images\": %zu, \"digit_accuracy\": %.6f, "
                "\"joint_accuracy\": ", k ? "," : "", k, eq_group_element_name(report->test_group, k), t->count,
                fraction(t->digit_correct, t->count));
        if (report->joint)
            fprintf(out, "%.6f}", fraction(t->joint_correct, t->count));
        else
            fprintf(out, "null}");
    }
    fprintf(out, "\n  ]\n}\n");

    if (fclose(out) != 0) {
        fprintf(stderr, "mnist_equivar: cannot write '%s': %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

static int run_eval(const options *opts)
{
    eq_mnist *test = NULL;
    eq_group *group = NULL, *test_group = NULL;
    eq_layer *net = NULL;
    char *metadata = NULL;
    run_info info;
    eval_report report;
    int exit_code = 1;

    eq_status status = eq_checkpoint_read_metadata(opts->checkpoint, &metadata, NULL);
    if (status != EQ_OK)
        return library_error("reading the checkpoint", status);
    if (!parse_metadata(metadata, &info)) {
        fprintf(stderr, "mnist_equivar: '%s' was not written by mnist_equivar (metadata \"%s\")\n",
                opts->checkpoint, metadata);
        free(metadata);
        return 1;
    }
    free(metadata);

    /* The default test group is the network's, or C4 for a plain CNN. */
    const char *test_group_name = opts->test_group;
    if (test_group_name[0] == '\0')
        test_group_name = strcmp(info.group, "none") == 0 ? "c4" : info.group;
    status = eq_group_by_name(info.group, &group);
    if (status == EQ_OK)
        status = eq_group_by_name(test_group_name, &test_group);
    if (status == EQ_OK)
        status = build_network(group, info.variant, info.widths, 0, &net);
    if (status != EQ_OK) {
        exit_code = library_error("building the network", status);
        goto done;
    }
    status = eq_checkpoint_load(net, opts->checkpoint);
    if (status != EQ_OK) {
        exit_code = library_error("loading the checkpoint", status);
        goto done;
    }
    status = load_split(opts->data_dir, "t10k", &test);
    if (status != EQ_OK) {
        exit_code = library_error("loading the MNIST test set", status);
        goto done;
    }

    exit_code = evaluate_all(net, test, group, test_group, opts->seed, &report);
    if (exit_code != 0)
        goto done;
    print_report(&info, &report);
    exit_code = opts->json ? write_json(opts->json, &info, &report) : 0;

done:
    eq_layer_destroy(net);
    eq_group_destroy(group);
    eq_group_destroy(test_group);
    eq_mnist_destroy(test);
    return exit_code;
}

int main(int argc, char **argv)
{
    options opts;
    int exit_code = parse_arguments(argc, argv, &opts);

    if (exit_code >= 0)
        return exit_code;
    if (opts.threads > 0) {
        eq_status status = eq_set_num_threads(opts.threads);
        if (status != EQ_OK)
            return library_error("setting the thread count", status);
    }

    if (opts.command != COMMAND_EVAL) {
        exit_code = run_train(&opts);
        if (exit_code != 0)
            return exit_code;
    }
    if (opts.command != COMMAND_TRAIN)
        exit_code = run_eval(&opts);
    return exit_code;
}
