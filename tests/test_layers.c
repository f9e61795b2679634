/* Tests for the core layers: conv2d, dense, relu, maxpool, flatten, sequential. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "equivar.h"
#include "core/conv2d_ref.h"
#include "core/im2col.h"
#include "testutil.h"

/* --- Helpers -------------------------------------------------------------- */

static eq_tensor *new_tensor(eq_shape shape)
{
    eq_tensor *t = NULL;

    assert_int_equal(eq_tensor_create(shape, &t), EQ_OK);
    return t;
}

static eq_tensor *new_random_tensor(eq_shape shape, uint64_t seed, float low, float high)
{
    eq_tensor *t = new_tensor(shape);
    eq_rng rng;

    eq_rng_seed(&rng, seed);
    eq_test_fill_uniform(t->data, eq_shape_numel(shape), &rng, low, high);
    return t;
}

static size_t min_size_t(size_t a, size_t b)
{
    return a < b ? a : b;
}

static size_t numel(const eq_tensor *t)
{
    return eq_shape_numel(t->shape);
}

static eq_layer *new_conv(size_t ic, size_t oc, size_t kh, size_t kw, size_t stride, size_t pad,
                          uint64_t seed)
{
    eq_layer *layer = NULL;
    eq_param bias;
    eq_rng rng;

    assert_int_equal(eq_conv2d_create(ic, oc, kh, kw, stride, pad, &layer), EQ_OK);
    eq_rng_seed(&rng, seed);
    eq_layer_init_he(layer, &rng);
    /* He initialisation zeroes the bias, so a random one is set for the test. */
    assert_int_equal(eq_layer_param(layer, 1, &bias), EQ_OK);
    eq_test_fill_uniform(bias.value, bias.count, &rng, -0.5f, 0.5f);
    return layer;
}

static eq_layer *new_dense(size_t in, size_t out, uint64_t seed)
{
    eq_layer *layer = NULL;
    eq_param bias;
    eq_rng rng;

    assert_int_equal(eq_dense_create(in, out, &layer), EQ_OK);
    eq_rng_seed(&rng, seed);
    eq_layer_init_he(layer, &rng);
    assert_int_equal(eq_layer_param(layer, 1, &bias), EQ_OK);
    eq_test_fill_uniform(bias.value, bias.count, &rng, -0.5f, 0.5f);
    return layer;
}

static eq_layer *new_simple(eq_status (*create)(eq_layer **))
{
    eq_layer *layer = NULL;

    assert_int_equal(create(&layer), EQ_OK);
    return layer;
}

static eq_layer *new_maxpool(size_t size, size_t stride)
{
    eq_layer *layer = NULL;

    assert_int_equal(eq_maxpool_create(size, stride, &layer), EQ_OK);
    return layer;
}

static void append(eq_layer *seq, eq_layer *layer)
{
    assert_int_equal(eq_sequential_append(seq, layer), EQ_OK);
}

static int message_contains(const char *needle)
{
    if (strstr(eq_last_error(), needle))
        return 1;
    print_error("message \"%s\" does not contain \"%s\"\n", eq_last_error(), needle);
    return 0;
}

/* Fails at the first i with |got - ref| > atol + rtol * |ref|. */
static void assert_all_close(const float *got, const float *ref, size_t count, double atol, double rtol,
                             const char *what)
{
    for (size_t i = 0; i < count; i++) {
        double diff = fabs((double)got[i] - (double)ref[i]);
        if (!(diff <= atol + rtol * fabs((double)ref[i])))
            fail_msg("%s [%zu]: got %.9g, reference %.9g, |diff| %.3g > %.3g + %.3g * |ref|", what, i,
                     (double)got[i], (double)ref[i], diff, atol, rtol);
    }
}

/* Runs the central-difference check and asserts max_error < tolerance and
 * a nonzero gradient, so an all-zero backward cannot pass. */
static void assert_gradients_match(eq_layer *layer, eq_tensor *x, double step, double tolerance)
{
    eq_gradcheck_result result;

    assert_int_equal(eq_test_gradcheck(layer, x, 11, step, &result), 0);
    if (!(result.max_error < tolerance))
        fail_msg("max error %.3g >= %.3g at %s", result.max_error, tolerance, result.worst);
    assert_true(result.max_abs_gradient > 0.0);
    assert_true(result.checked >= numel(x));
}

/* --- Gradient checks ------------------------------------------------------ */

typedef struct conv_case {
    size_t n, ic, oc, h, w, kh, kw, stride, pad;
} conv_case;

/* Conv2d, dense and flatten are linear in each single input or weight, so
 * the central difference has no truncation error and the step only trades
 * off float rounding. The errors seen are about 2e-5. */
#define LINEAR_STEP 1e-2
#define LINEAR_TOLERANCE 2e-4

static void conv2d_gradcheck_configs(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        { 2, 2, 3, 5, 5, 3, 3, 1, 1 }, /* stride 1, pad 1 */
        { 2, 2, 3, 7, 7, 3, 3, 2, 0 }, /* stride 2, pad 0 */
        { 2, 3, 2, 6, 5, 2, 3, 2, 1 }, /* non-square kernel, stride 2, pad 1 */
        { 2, 1, 2, 4, 6, 3, 1, 1, 0 }, /* IC = 1, tall kernel */
        { 1, 2, 1, 3, 3, 5, 5, 1, 2 }, /* kernel larger than the unpadded input */
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const conv_case *c = &cases[i];
        eq_layer *conv = new_conv(c->ic, c->oc, c->kh, c->kw, c->stride, c->pad, 100 + i);
        eq_tensor *x = new_random_tensor(eq_shape_make(c->n, c->ic, c->h, c->w), 200 + i, -1.0f, 1.0f);

        assert_gradients_match(conv, x, LINEAR_STEP, LINEAR_TOLERANCE);
        eq_tensor_destroy(x);
        eq_layer_destroy(conv);
    }
}

static void dense_gradcheck(void **state)
{
    (void)state;
    eq_layer *dense = new_dense(12, 5, 1);
    /* (2, 3, 2, 2) is accepted as 12 features per sample. */
    eq_tensor *x = new_random_tensor(eq_shape_make(2, 3, 2, 2), 2, -1.0f, 1.0f);

    assert_gradients_match(dense, x, LINEAR_STEP, LINEAR_TOLERANCE);
    eq_tensor_destroy(x);
    eq_layer_destroy(dense);
}

static void flatten_gradcheck(void **state)
{
    (void)state;
    eq_layer *flatten = new_simple(eq_flatten_create);
    eq_tensor *x = new_random_tensor(eq_shape_make(2, 3, 2, 4), 3, -1.0f, 1.0f);

    assert_gradients_match(flatten, x, LINEAR_STEP, LINEAR_TOLERANCE);
    eq_tensor_destroy(x);
    eq_layer_destroy(flatten);
}

/* Non-linear layers: |x| >= 0.1 or gaps >= 0.02 keep every value at least
 * 20 steps from a kink, so the central difference stays on one side. The
 * smaller step makes float rounding larger: errors up to 2e-4 are seen in
 * the sequential check. */
#define KINK_STEP 1e-3
#define KINK_TOLERANCE 1e-3

static void relu_gradcheck(void **state)
{
    (void)state;
    eq_layer *relu = new_simple(eq_relu_create);
    eq_tensor *x = new_random_tensor(eq_shape_make(2, 3, 4, 5), 4, 0.1f, 1.0f);
    eq_rng rng;

    eq_rng_seed(&rng, 5);
    for (size_t i = 0; i < numel(x); i++) {
        if (eq_rng_below(&rng, 2))
            x->data[i] = -x->data[i];
    }
    assert_gradients_match(relu, x, KINK_STEP, KINK_TOLERANCE);
    eq_tensor_destroy(x);
    eq_layer_destroy(relu);
}

/* Fills x with a random permutation of 0.02 * k - 1, so any two values
 * differ by at least 0.02. */
static void fill_distinct(eq_tensor *x, uint64_t seed)
{
    size_t count = numel(x);
    eq_rng rng;

    eq_rng_seed(&rng, seed);
    for (size_t i = 0; i < count; i++)
        x->data[i] = 0.02f * (float)i - 1.0f;
    for (size_t i = count - 1; i > 0; i--) {
        size_t j = eq_rng_below(&rng, i + 1);
        float tmp = x->data[i];
        x->data[i] = x->data[j];
        x->data[j] = tmp;
    }
}

static void maxpool_gradcheck(void **state)
{
    (void)state;
    static const size_t configs[][2] = { { 2, 2 }, { 3, 2 }, { 2, 1 } }; /* size, stride */

    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        eq_layer *pool = new_maxpool(configs[i][0], configs[i][1]);
        eq_tensor *x = new_tensor(eq_shape_make(2, 2, 5, 6));

        fill_distinct(x, 6 + i);
        assert_gradients_match(pool, x, KINK_STEP, KINK_TOLERANCE);
        eq_tensor_destroy(x);
        eq_layer_destroy(pool);
    }
}

/* conv(2->2, 3x3) - relu - maxpool(2) - flatten - dense(8->5) - relu - dense(5->3). */
static eq_layer *new_small_net(uint64_t seed)
{
    eq_layer *seq = new_simple(eq_sequential_create);

    append(seq, new_conv(2, 2, 3, 3, 1, 0, seed));
    append(seq, new_simple(eq_relu_create));
    append(seq, new_maxpool(2, 2));
    append(seq, new_simple(eq_flatten_create));
    append(seq, new_dense(8, 5, seed + 1));
    append(seq, new_simple(eq_relu_create));
    append(seq, new_dense(5, 3, seed + 2));
    return seq;
}

/* Returns the smallest distance of the network's state from a kink: |v|
 * over ReLU inputs, and the gap between the largest and second largest
 * value over max-pool windows. Windows whose two largest values are both
 * exactly 0 are skipped: those zeros come from a ReLU, whose inputs the
 * first measure covers. */
static double kink_margin(eq_layer *seq, const eq_tensor *x)
{
    double margin = INFINITY;
    eq_tensor *in = new_tensor(x->shape);

    memcpy(in->data, x->data, numel(x) * sizeof(float));
    for (size_t i = 0; i < eq_sequential_length(seq); i++) {
        eq_layer *layer = eq_sequential_get(seq, i);
        eq_shape out_shape;
        assert_int_equal(eq_layer_output_shape(layer, in->shape, &out_shape), EQ_OK);
        eq_tensor *out = new_tensor(out_shape);
        assert_int_equal(eq_layer_forward(layer, in, out), EQ_OK);

        if (strcmp(eq_layer_kind(layer), "relu") == 0) {
            for (size_t j = 0; j < numel(in); j++)
                margin = fmin(margin, fabs(in->data[j]));
        } else if (strcmp(eq_layer_kind(layer), "maxpool") == 0) {
            /* The small net pools 2x2 windows with stride 2. */
            size_t h = in->shape.h, w = in->shape.w;
            for (size_t nc = 0; nc < in->shape.n * in->shape.c; nc++) {
                for (size_t oh = 0; oh < h / 2; oh++) {
                    for (size_t ow = 0; ow < w / 2; ow++) {
                        const float *p = in->data + nc * h * w + 2 * oh * w + 2 * ow;
                        float v[4] = { p[0], p[1], p[w], p[w + 1] };
                        float top = -INFINITY, second = -INFINITY;
                        for (int k = 0; k < 4; k++) {
                            if (v[k] > top) {
                                second = top;
                                top = v[k];
                            } else if (v[k] > second) {
                                second = v[k];
                            }
                        }
                        if (!(top == 0.0f && second == 0.0f))
                            margin = fmin(margin, top - second);
                    }
                }
            }
        }
        eq_tensor_destroy(in);
        in = out;
    }
    eq_tensor_destroy(in);
    return margin;
}

static void sequential_gradcheck(void **state)
{
    (void)state;
    const eq_shape shape = eq_shape_make(2, 2, 6, 6);
    eq_layer *seq = NULL;
    eq_tensor *x = NULL;

    /* A perturbation of one scalar by the step moves any kink argument by a
     * few steps at most (weights are below 2 in magnitude), so a margin of
     * 10 steps keeps the central difference on one side of every kink.
     * Fixed seeds are tried until one gives such a fixture. */
    uint64_t seed;
    for (seed = 1; seed < 200; seed++) {
        seq = new_small_net(seed);
        x = new_random_tensor(shape, 1000 + seed, -1.0f, 1.0f);
        if (kink_margin(seq, x) > 10 * KINK_STEP)
            break;
        eq_tensor_destroy(x);
        eq_layer_destroy(seq);
        x = NULL;
        seq = NULL;
    }
    assert_non_null(seq);

    assert_gradients_match(seq, x, KINK_STEP, KINK_TOLERANCE);
    eq_tensor_destroy(x);
    eq_layer_destroy(seq);
}

/* --- conv2d against the direct-loop reference ----------------------------- */

static eq_conv2d_ref_dims ref_dims(const conv_case *c)
{
    eq_conv2d_ref_dims d = { c->n, c->ic, c->oc, c->h, c->w, c->kh, c->kw, c->stride, c->pad };
    return d;
}

/* The float path sums products of values below 2 in magnitude, and the
 * reference sums them in double. atol grows by 1e-7 (about two float
 * roundings of a unit term) per summed term. The errors seen with the naive
 * GEMM are at least 4 times smaller. */
#define REF_ATOL_PER_TERM 1e-7
#define REF_RTOL 1e-5

static void check_conv_against_reference(const conv_case *c, uint64_t seed)
{
    eq_layer *conv = new_conv(c->ic, c->oc, c->kh, c->kw, c->stride, c->pad, seed);
    eq_tensor *x = new_random_tensor(eq_shape_make(c->n, c->ic, c->h, c->w), seed + 1, -1.0f, 1.0f);
    eq_conv2d_ref_dims dims = ref_dims(c);
    eq_param weight, bias;
    eq_shape out_shape;
    char what[128];

    assert_int_equal(eq_layer_param(conv, 0, &weight), EQ_OK);
    assert_int_equal(eq_layer_param(conv, 1, &bias), EQ_OK);
    assert_int_equal(eq_layer_output_shape(conv, x->shape, &out_shape), EQ_OK);
    /* Terms per output, per input gradient and per parameter gradient. */
    const double y_atol = REF_ATOL_PER_TERM * (double)(c->ic * c->kh * c->kw);
    const double dx_atol = REF_ATOL_PER_TERM * (double)(c->oc * c->kh * c->kw);
    const double dparam_atol = REF_ATOL_PER_TERM * (double)(c->n * out_shape.h * out_shape.w);

    eq_tensor *y = new_tensor(out_shape);
    eq_tensor *y_ref = new_tensor(out_shape);
    assert_int_equal(eq_layer_forward(conv, x, y), EQ_OK);
    eq_conv2d_ref_forward(&dims, x->data, weight.value, bias.value, y_ref->data);
    snprintf(what, sizeof what, "IC %zu, %zux%zu input, %zux%zu kernel, forward y", c->ic, c->h, c->w, c->kh, c->kw);
    assert_all_close(y->data, y_ref->data, numel(y), y_atol, REF_RTOL, what);

    /* dx starts as NaN to show that backward overwrites it. */
    eq_tensor *dy = new_random_tensor(out_shape, seed + 2, -1.0f, 1.0f);
    eq_tensor *dx = new_tensor(x->shape);
    eq_tensor *dx_ref = new_tensor(x->shape);
    float *dw_ref = calloc(weight.count, sizeof(float));
    float *db_ref = calloc(bias.count, sizeof(float));
    assert_non_null(dw_ref);
    assert_non_null(db_ref);
    for (size_t i = 0; i < numel(dx); i++)
        dx->data[i] = NAN;
    eq_layer_zero_grad(conv);
    assert_int_equal(eq_layer_backward(conv, dy, dx), EQ_OK);
    eq_conv2d_ref_backward(&dims, x->data, weight.value, dy->data, dx_ref->data, dw_ref, db_ref);
    snprintf(what, sizeof what, "IC %zu, %zux%zu input, %zux%zu kernel, dx", c->ic, c->h, c->w, c->kh, c->kw);
    assert_all_close(dx->data, dx_ref->data, numel(dx), dx_atol, REF_RTOL, what);
    snprintf(what, sizeof what, "IC %zu, %zux%zu input, %zux%zu kernel, dweight", c->ic, c->h, c->w, c->kh, c->kw);
    assert_all_close(weight.grad, dw_ref, weight.count, dparam_atol, REF_RTOL, what);
    assert_all_close(bias.grad, db_ref, bias.count, dparam_atol, REF_RTOL, "dbias");

    /* A second backward adds the same parameter gradients again. */
    assert_int_equal(eq_layer_backward(conv, dy, NULL), EQ_OK);
    for (size_t i = 0; i < weight.count; i++)
        dw_ref[i] *= 2.0f;
    for (size_t i = 0; i < bias.count; i++)
        db_ref[i] *= 2.0f;
    assert_all_close(weight.grad, dw_ref, weight.count, 2 * dparam_atol, REF_RTOL, "accumulated dweight");
    assert_all_close(bias.grad, db_ref, bias.count, 2 * dparam_atol, REF_RTOL, "accumulated dbias");

    free(dw_ref);
    free(db_ref);
    eq_tensor_destroy(dx_ref);
    eq_tensor_destroy(dx);
    eq_tensor_destroy(dy);
    eq_tensor_destroy(y_ref);
    eq_tensor_destroy(y);
    eq_tensor_destroy(x);
    eq_layer_destroy(conv);
}

static void conv2d_matches_reference(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        { 2, 3, 4, 7, 6, 3, 3, 1, 1 },
        { 2, 2, 3, 8, 9, 2, 3, 2, 0 },
        { 1, 4, 3, 6, 6, 1, 1, 1, 0 },
        { 2, 3, 2, 9, 7, 3, 2, 3, 1 },
        { 1, 1, 1, 2, 2, 5, 5, 1, 2 }, /* whole output rows read only padding */
        { 3, 2, 2, 5, 4, 3, 3, 4, 2 }, /* stride larger than the kernel */
        /* 12 images: the plan aims at 8 chunks, which gives 6 of two images. */
        { 12, 8, 3, 14, 14, 3, 3, 1, 1 },
        /* 564480 floats per image: each image in tiles of 704 and 80 positions. */
        { 2, 80, 4, 28, 28, 3, 3, 1, 1 },
        /* Tiles of 192 and 33 positions that start and end inside output rows. */
        { 2, 300, 3, 30, 29, 3, 3, 2, 1 },
        /* The same at stride 1: tiles of 576 and 265 positions. */
        { 1, 100, 2, 29, 29, 3, 3, 1, 1 },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_conv_against_reference(&cases[i], 300 + 10 * i);
}

/* Column-matrix entry (row k, position p) of one image by the definition. */
static float naive_column(const eq_conv_geom *g, const float *x, size_t k, size_t p)
{
    size_t c = k / (g->kh * g->kw), kh = k / g->kw % g->kh, kw = k % g->kw;
    size_t ih = p / g->ow * g->stride + kh, iw = p % g->ow * g->stride + kw;

    if (ih < g->pad || iw < g->pad || ih - g->pad >= g->h || iw - g->pad >= g->w)
        return 0.0f;
    return x[(c * g->h + ih - g->pad) * g->w + iw - g->pad];
}

/* eq_im2col and eq_col2im_add against the definitions, bit for bit, for
 * position ranges that start and end inside output rows. The "same"
 * stride-1 geometries take the shifted-plane path, the others the
 * per-row one. */
static void im2col_matches_naive(void **state)
{
    (void)state;
    static const size_t geoms[][7] = { /* c, h, w, kh, kw, stride, pad */
        { 2, 5, 7, 3, 3, 1, 1 }, { 1, 6, 4, 5, 5, 1, 2 }, { 3, 4, 4, 1, 1, 1, 0 }, { 2, 3, 6, 3, 1, 1, 1 },
        { 1, 2, 2, 5, 5, 1, 2 }, { 2, 7, 5, 3, 3, 2, 1 }, { 1, 6, 6, 2, 3, 1, 0 }, { 2, 5, 5, 3, 3, 1, 0 },
        /* Kernel offsets wider than the image, which take the per-row path. */
        { 1, 5, 1, 5, 5, 1, 2 }, { 2, 3, 2, 7, 7, 1, 3 },
    };
    eq_rng rng;

    eq_rng_seed(&rng, 401);
    for (size_t i = 0; i < sizeof geoms / sizeof geoms[0]; i++) {
        eq_conv_geom g = { geoms[i][0], geoms[i][1], geoms[i][2], geoms[i][3], geoms[i][4], geoms[i][5],
                           geoms[i][6], 0, 0 };
        g.oh = (g.h + 2 * g.pad - g.kh) / g.stride + 1;
        g.ow = (g.w + 2 * g.pad - g.kw) / g.stride + 1;
        const size_t rows = g.c * g.kh * g.kw, positions = g.oh * g.ow, image = g.c * g.h * g.w;
        const size_t ranges[][2] = { { 0, positions }, { 1, positions - 1 }, { g.ow + 1, g.ow + 2 } };
        float *x = malloc(image * sizeof(float)), *cols = malloc(rows * positions * sizeof(float));
        float *dx = malloc(image * sizeof(float)), *dx_ref = malloc(image * sizeof(float));
        assert_true(x && cols && dx && dx_ref);
        eq_test_fill_uniform(x, image, &rng, -1.0f, 1.0f);

        for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
            const size_t p0 = ranges[r][0], p1 = min_size_t(ranges[r][1], positions), width = p1 - p0;
            if (p0 >= p1)
                continue;
            eq_im2col(&g, x, p0, p1, cols, width);
            for (size_t k = 0; k < rows; k++) {
                for (size_t p = p0; p < p1; p++) {
                    float expected = naive_column(&g, x, k, p);
                    if (memcmp(&cols[k * width + p - p0], &expected, sizeof expected) != 0)
                        fail_msg("geometry %zu, positions [%zu, %zu): column (%zu, %zu) is %g, expected %g", i, p0,
                                 p1, k, p, (double)cols[k * width + p - p0], (double)expected);
                }
            }

            /* The adjoint: each dx element adds its entries in (kh, kw, p)
             * order, as the loop below does. */
            eq_test_fill_uniform(cols, rows * width, &rng, -1.0f, 1.0f);
            eq_test_fill_uniform(dx, image, &rng, -1.0f, 1.0f);
            memcpy(dx_ref, dx, image * sizeof(float));
            eq_col2im_add(&g, cols, width, p0, p1, dx);
            for (size_t k = 0; k < rows; k++) {
                for (size_t p = p0; p < p1; p++) {
                    size_t c = k / (g.kh * g.kw), kh = k / g.kw % g.kh, kw = k % g.kw;
                    size_t ih = p / g.ow * g.stride + kh, iw = p % g.ow * g.stride + kw;
                    if (ih < g.pad || iw < g.pad || ih - g.pad >= g.h || iw - g.pad >= g.w)
                        continue;
                    dx_ref[(c * g.h + ih - g.pad) * g.w + iw - g.pad] += cols[k * width + p - p0];
                }
            }
            assert_memory_equal(dx, dx_ref, image * sizeof(float));
        }
        free(dx_ref);
        free(dx);
        free(cols);
        free(x);
    }
}

/* --- Exactness: a sample's result does not depend on its batch ------------ */

#define POOL_SAMPLES 9
#define BASE_SAMPLES 5

/* Runs forward and backward on the samples pool[ids[0..count-1]] and
 * stores each sample's output and input gradient by its pool id. */
static void run_arrangement(eq_layer *layer, eq_shape sample, size_t out_size, const float *x_pool,
                            const float *dy_pool, const size_t *ids, size_t count, float *y_by_id,
                            float *dx_by_id)
{
    const size_t in_size = sample.c * sample.h * sample.w;
    eq_shape in_shape = eq_shape_make(count, sample.c, sample.h, sample.w);
    eq_shape out_shape;

    assert_int_equal(eq_layer_output_shape(layer, in_shape, &out_shape), EQ_OK);
    eq_tensor *x = new_tensor(in_shape);
    eq_tensor *y = new_tensor(out_shape);
    eq_tensor *dy = new_tensor(out_shape);
    eq_tensor *dx = new_tensor(in_shape);
    for (size_t i = 0; i < count; i++) {
        memcpy(x->data + i * in_size, x_pool + ids[i] * in_size, in_size * sizeof(float));
        memcpy(dy->data + i * out_size, dy_pool + ids[i] * out_size, out_size * sizeof(float));
    }

    assert_int_equal(eq_layer_forward(layer, x, y), EQ_OK);
    assert_int_equal(eq_layer_backward(layer, dy, dx), EQ_OK);
    for (size_t i = 0; i < count; i++) {
        memcpy(y_by_id + ids[i] * out_size, y->data + i * out_size, out_size * sizeof(float));
        memcpy(dx_by_id + ids[i] * in_size, dx->data + i * in_size, in_size * sizeof(float));
    }

    eq_tensor_destroy(dx);
    eq_tensor_destroy(dy);
    eq_tensor_destroy(y);
    eq_tensor_destroy(x);
}

/* Runs a batch of 5 samples, then the same samples permuted, as sub-batches
 * and embedded in a batch of 9, and checks bit for bit that every sample's
 * output and input gradient are those of the first run. */
static void check_batch_independence(eq_layer *layer, eq_shape sample, uint64_t seed)
{
    static const size_t base[] = { 0, 1, 2, 3, 4 };
    static const size_t permuted[] = { 3, 0, 4, 1, 2 };
    static const size_t pair[] = { 2, 1 };
    static const size_t single[] = { 4 };
    static const size_t embedded[] = { 5, 0, 6, 1, 2, 7, 3, 8, 4 };
    static const struct {
        const size_t *ids;
        size_t count;
        const char *name;
    } arrangements[] = {
        { permuted, 5, "permuted" },
        { pair, 2, "sub-batch of 2" },
        { single, 1, "single sample" },
        { embedded, 9, "embedded in 9" },
    };
    const size_t in_size = sample.c * sample.h * sample.w;
    eq_shape out_sample;

    assert_int_equal(eq_layer_output_shape(layer, sample, &out_sample), EQ_OK);
    const size_t out_size = out_sample.c * out_sample.h * out_sample.w;
    float *x_pool = malloc(POOL_SAMPLES * in_size * sizeof(float));
    float *dy_pool = malloc(POOL_SAMPLES * out_size * sizeof(float));
    float *y_ref = malloc(POOL_SAMPLES * out_size * sizeof(float));
    float *dx_ref = malloc(POOL_SAMPLES * in_size * sizeof(float));
    float *y_got = malloc(POOL_SAMPLES * out_size * sizeof(float));
    float *dx_got = malloc(POOL_SAMPLES * in_size * sizeof(float));
    assert_true(x_pool && dy_pool && y_ref && dx_ref && y_got && dx_got);
    eq_rng rng;
    eq_rng_seed(&rng, seed);
    eq_test_fill_uniform(x_pool, POOL_SAMPLES * in_size, &rng, -1.0f, 1.0f);
    eq_test_fill_uniform(dy_pool, POOL_SAMPLES * out_size, &rng, -1.0f, 1.0f);

    run_arrangement(layer, sample, out_size, x_pool, dy_pool, base, BASE_SAMPLES, y_ref, dx_ref);
    for (size_t a = 0; a < sizeof arrangements / sizeof arrangements[0]; a++) {
        run_arrangement(layer, sample, out_size, x_pool, dy_pool, arrangements[a].ids, arrangements[a].count,
                        y_got, dx_got);
        for (size_t i = 0; i < arrangements[a].count; i++) {
            size_t id = arrangements[a].ids[i];
            if (id >= BASE_SAMPLES)
                continue;
            if (memcmp(y_got + id * out_size, y_ref + id * out_size, out_size * sizeof(float)) != 0)
                fail_msg("%s: output of sample %zu differs from the batch of 5", arrangements[a].name, id);
            if (memcmp(dx_got + id * in_size, dx_ref + id * in_size, in_size * sizeof(float)) != 0)
                fail_msg("%s: input gradient of sample %zu differs from the batch of 5",
                         arrangements[a].name, id);
        }
    }

    free(dx_got);
    free(y_got);
    free(dx_ref);
    free(y_ref);
    free(dy_pool);
    free(x_pool);
}

static void conv2d_output_independent_of_batch(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        { 1, 3, 4, 9, 8, 3, 3, 1, 1 },     /* one chunk */
        { 1, 2, 3, 9, 9, 2, 3, 2, 0 },     /* stride 2, non-square kernel */
        { 1, 32, 4, 28, 28, 3, 3, 1, 1 },  /* two images per chunk in the batch of 9 */
        { 1, 80, 4, 28, 28, 3, 3, 1, 1 },  /* two tiles per image */
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const conv_case *c = &cases[i];
        eq_layer *conv = new_conv(c->ic, c->oc, c->kh, c->kw, c->stride, c->pad, 400 + i);
        check_batch_independence(conv, eq_shape_make(1, c->ic, c->h, c->w), 500 + i);
        eq_layer_destroy(conv);
    }
}

static void dense_output_independent_of_batch(void **state)
{
    (void)state;
    eq_layer *dense = new_dense(60, 7, 12);

    check_batch_independence(dense, eq_shape_make(1, 3, 4, 5), 13);
    eq_layer_destroy(dense);
}

static void elementwise_outputs_independent_of_batch(void **state)
{
    (void)state;
    eq_layer *layers[] = {
        new_simple(eq_relu_create),
        new_maxpool(2, 2),
        new_maxpool(3, 1),
        new_simple(eq_flatten_create),
    };

    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        check_batch_independence(layers[i], eq_shape_make(1, 3, 7, 6), 14 + i);
        eq_layer_destroy(layers[i]);
    }
}

static void sequential_output_independent_of_batch(void **state)
{
    (void)state;
    eq_layer *seq = new_simple(eq_sequential_create);

    /* The activations are reallocated as the batch goes 5, 5, 2, 1, 9. */
    append(seq, new_conv(1, 8, 3, 3, 1, 1, 21));
    append(seq, new_simple(eq_relu_create));
    append(seq, new_maxpool(2, 2));
    append(seq, new_conv(8, 16, 3, 3, 1, 1, 22));
    append(seq, new_simple(eq_relu_create));
    append(seq, new_maxpool(2, 2));
    append(seq, new_simple(eq_flatten_create));
    append(seq, new_dense(16 * 7 * 7, 32, 23));
    append(seq, new_simple(eq_relu_create));
    append(seq, new_dense(32, 10, 24));
    check_batch_independence(seq, eq_shape_make(1, 1, 28, 28), 25);
    eq_layer_destroy(seq);
}

/* --- Exactness: results do not depend on the thread count ----------------- */

/* Outputs, input gradient and parameter gradients of one forward and
 * backward pass. */
typedef struct pass_result {
    float *y, *dx;
    float *grads[4];
    size_t y_count, x_count, grad_counts[4], param_count;
} pass_result;

static float *copy_of(const float *data, size_t count)
{
    float *copy = malloc(count * sizeof(float));

    assert_non_null(copy);
    memcpy(copy, data, count * sizeof(float));
    return copy;
}

/* Runs forward and backward on x with `threads` threads, with the
 * gradients zeroed first; dy is drawn from `seed`. */
static pass_result run_pass(eq_layer *layer, const eq_tensor *x, uint64_t seed, int threads)
{
    pass_result result = { 0 };
    eq_shape out;

    assert_int_equal(eq_set_num_threads(threads), EQ_OK);
    assert_int_equal(eq_layer_output_shape(layer, x->shape, &out), EQ_OK);
    eq_tensor *y = new_tensor(out);
    eq_tensor *dy = new_random_tensor(out, seed, -1.0f, 1.0f);
    eq_tensor *dx = new_tensor(x->shape);

    eq_layer_zero_grad(layer);
    assert_int_equal(eq_layer_forward(layer, x, y), EQ_OK);
    assert_int_equal(eq_layer_backward(layer, dy, dx), EQ_OK);

    result.y_count = numel(y);
    result.x_count = numel(x);
    result.y = copy_of(y->data, result.y_count);
    result.dx = copy_of(dx->data, result.x_count);
    result.param_count = eq_layer_param_count(layer);
    assert_true(result.param_count <= 4);
    for (size_t p = 0; p < result.param_count; p++) {
        eq_param param;
        assert_int_equal(eq_layer_param(layer, p, &param), EQ_OK);
        result.grad_counts[p] = param.count;
        result.grads[p] = copy_of(param.grad, param.count);
    }

    eq_tensor_destroy(dx);
    eq_tensor_destroy(dy);
    eq_tensor_destroy(y);
    return result;
}

static void free_pass(pass_result *result)
{
    free(result->y);
    free(result->dx);
    for (size_t p = 0; p < result->param_count; p++)
        free(result->grads[p]);
}

/* Checks that 2 and 3 threads reproduce the 1-thread pass bit for bit. */
static void check_threads_bitwise(eq_layer *layer, eq_shape in, uint64_t seed, const char *label)
{
    int saved = eq_get_num_threads();
    eq_tensor *x = new_random_tensor(in, seed, -1.0f, 1.0f);
    pass_result reference = run_pass(layer, x, seed + 1, 1);

    for (int threads = 2; threads <= 3; threads++) {
        pass_result run = run_pass(layer, x, seed + 1, threads);
        if (memcmp(run.y, reference.y, reference.y_count * sizeof(float)) != 0)
            fail_msg("%s: output with %d threads differs from 1 thread", label, threads);
        if (memcmp(run.dx, reference.dx, reference.x_count * sizeof(float)) != 0)
            fail_msg("%s: input gradient with %d threads differs from 1 thread", label, threads);
        for (size_t p = 0; p < reference.param_count; p++) {
            if (memcmp(run.grads[p], reference.grads[p], reference.grad_counts[p] * sizeof(float)) != 0)
                fail_msg("%s: gradient of parameter %zu with %d threads differs from 1 thread", label, p,
                         threads);
        }
        free_pass(&run);
    }

    free_pass(&reference);
    eq_tensor_destroy(x);
    assert_int_equal(eq_set_num_threads(saved), EQ_OK);
}

/* The chunks of a batch run in parallel and their weight gradients are
 * added in image order, in rounds of two chunks per thread. */
static void conv2d_results_independent_of_threads(void **state)
{
    (void)state;
    static const struct {
        conv_case c;
        const char *label;
    } cases[] = {
        { { 9, 3, 4, 9, 8, 3, 3, 1, 1 }, "one chunk" },
        { { 20, 32, 4, 28, 28, 3, 3, 1, 1 }, "two images per chunk" },
        { { 15, 64, 3, 28, 28, 3, 3, 1, 1 }, "15 chunks, several rounds" },
        { { 3, 80, 5, 28, 28, 3, 3, 1, 1 }, "two tiles per image" },
        { { 4, 2, 3, 8, 9, 2, 3, 2, 0 }, "stride 2" },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const conv_case *c = &cases[i].c;
        eq_layer *conv = new_conv(c->ic, c->oc, c->kh, c->kw, c->stride, c->pad, 700 + i);
        check_threads_bitwise(conv, eq_shape_make(c->n, c->ic, c->h, c->w), 710 + 10 * i, cases[i].label);
        eq_layer_destroy(conv);
    }
}

/* Relu and maxpool split their planes or elements over threads. */
static void elementwise_results_independent_of_threads(void **state)
{
    (void)state;
    eq_shape shape = eq_shape_make(8, 16, 28, 28);

    eq_layer *relu = new_simple(eq_relu_create);
    check_threads_bitwise(relu, shape, 760, "relu");
    eq_layer_destroy(relu);

    eq_layer *pool = new_maxpool(2, 2);
    check_threads_bitwise(pool, shape, 770, "maxpool 2x2");
    eq_layer_destroy(pool);

    pool = new_maxpool(3, 2);
    check_threads_bitwise(pool, shape, 780, "maxpool 3x3, stride 2");
    eq_layer_destroy(pool);
}

/* --- Layer behaviour ------------------------------------------------------ */

static void conv2d_backward_twice_is_repeatable(void **state)
{
    (void)state;
    eq_layer *conv = new_conv(3, 4, 3, 3, 1, 1, 31);
    eq_tensor *x = new_random_tensor(eq_shape_make(2, 3, 6, 6), 32, -1.0f, 1.0f);
    eq_tensor *y = new_tensor(eq_shape_make(2, 4, 6, 6));
    eq_tensor *dy = new_random_tensor(y->shape, 33, -1.0f, 1.0f);
    eq_tensor *dx1 = new_tensor(x->shape);
    eq_tensor *dx2 = new_tensor(x->shape);
    eq_param weight;

    assert_int_equal(eq_layer_param(conv, 0, &weight), EQ_OK);
    float *dw1 = malloc(weight.count * sizeof(float));
    assert_non_null(dw1);
    eq_layer_zero_grad(conv);
    assert_int_equal(eq_layer_forward(conv, x, y), EQ_OK);

    /* Backward writes the input gradient over its column buffer, so the
     * second call must lower the input again for dweight. */
    assert_int_equal(eq_layer_backward(conv, dy, dx1), EQ_OK);
    memcpy(dw1, weight.grad, weight.count * sizeof(float));
    assert_int_equal(eq_layer_backward(conv, dy, dx2), EQ_OK);
    assert_memory_equal(dx1->data, dx2->data, numel(dx1) * sizeof(float));
    for (size_t i = 0; i < weight.count; i++)
        dw1[i] *= 2.0f;
    assert_all_close(weight.grad, dw1, weight.count, 1e-6, 1e-6, "dweight after two backward calls");

    free(dw1);
    eq_tensor_destroy(dx2);
    eq_tensor_destroy(dx1);
    eq_tensor_destroy(dy);
    eq_tensor_destroy(y);
    eq_tensor_destroy(x);
    eq_layer_destroy(conv);
}

/* A sequential ReLU then max-pool runs the pool first (sequential.c). Its
 * output and input gradient must be the bits of the two layers run one
 * after the other, on values with ties, signed zeros and a NaN. */
static void relu_maxpool_swap_keeps_bits(void **state)
{
    (void)state;
    static const size_t configs[][2] = { { 2, 2 }, { 3, 2 }, { 2, 1 } }; /* size, stride */
    static const float levels[] = { -1.0f, -0.0f, 0.0f, 0.5f, 2.0f };
    eq_rng rng;

    eq_rng_seed(&rng, 880);
    for (size_t k = 0; k < sizeof configs / sizeof configs[0]; k++) {
        eq_layer *relu = new_simple(eq_relu_create), *pool = new_maxpool(configs[k][0], configs[k][1]);
        eq_layer *seq = new_simple(eq_sequential_create);
        append(seq, new_simple(eq_relu_create));
        append(seq, new_maxpool(configs[k][0], configs[k][1]));

        eq_tensor *x = new_tensor(eq_shape_make(2, 3, 9, 10));
        for (size_t i = 0; i < numel(x); i++)
            x->data[i] = levels[eq_rng_below(&rng, 5)];
        x->data[7] = NAN;
        eq_shape out;
        assert_int_equal(eq_layer_output_shape(pool, x->shape, &out), EQ_OK);
        eq_tensor *r = new_tensor(x->shape), *dr = new_tensor(x->shape);
        eq_tensor *y = new_tensor(out), *y_seq = new_tensor(out);
        eq_tensor *dy = new_random_tensor(out, 881 + k, -1.0f, 1.0f);
        eq_tensor *dx = new_tensor(x->shape), *dx_seq = new_tensor(x->shape);
        dy->data[0] = -0.0f;

        assert_int_equal(eq_layer_forward(relu, x, r), EQ_OK);
        assert_int_equal(eq_layer_forward(pool, r, y), EQ_OK);
        assert_int_equal(eq_layer_backward(pool, dy, dr), EQ_OK);
        assert_int_equal(eq_layer_backward(relu, dr, dx), EQ_OK);
        assert_int_equal(eq_layer_forward(seq, x, y_seq), EQ_OK);
        assert_memory_equal(y_seq->data, y->data, numel(y) * sizeof(float));

        /* Backward must not depend on the caller's y, which it may reuse. */
        for (size_t i = 0; i < numel(y_seq); i++)
            y_seq->data[i] = -1.0f;
        assert_int_equal(eq_layer_backward(seq, dy, dx_seq), EQ_OK);
        assert_memory_equal(dx_seq->data, dx->data, numel(x) * sizeof(float));

        eq_tensor_destroy(dx_seq);
        eq_tensor_destroy(dx);
        eq_tensor_destroy(dy);
        eq_tensor_destroy(y_seq);
        eq_tensor_destroy(y);
        eq_tensor_destroy(dr);
        eq_tensor_destroy(r);
        eq_tensor_destroy(x);
        eq_layer_destroy(seq);
        eq_layer_destroy(pool);
        eq_layer_destroy(relu);
    }
}

static void relu_passes_nan_and_zeroes_negatives(void **state)
{
    (void)state;
    eq_layer *relu = new_simple(eq_relu_create);
    eq_tensor *x = new_tensor(eq_shape_make(1, 1, 1, 4));
    eq_tensor *y = new_tensor(x->shape);
    eq_tensor *dy = new_tensor(x->shape);
    eq_tensor *dx = new_tensor(x->shape);
    const float in[4] = { -2.0f, 0.0f, 3.0f, NAN };

    memcpy(x->data, in, sizeof in);
    assert_int_equal(eq_layer_forward(relu, x, y), EQ_OK);
    assert_true(y->data[0] == 0.0f);
    assert_true(y->data[1] == 0.0f);
    assert_true(y->data[2] == 3.0f);
    assert_true(isnan(y->data[3]));

    for (size_t i = 0; i < 4; i++)
        dy->data[i] = 5.0f;
    assert_int_equal(eq_layer_backward(relu, dy, dx), EQ_OK);
    assert_true(dx->data[0] == 0.0f);
    assert_true(dx->data[1] == 0.0f); /* derivative at 0 taken as 0 */
    assert_true(dx->data[2] == 5.0f);

    eq_tensor_destroy(dx);
    eq_tensor_destroy(dy);
    eq_tensor_destroy(y);
    eq_tensor_destroy(x);
    eq_layer_destroy(relu);
}

static void maxpool_ties_go_to_first(void **state)
{
    (void)state;
    eq_layer *pool = new_maxpool(2, 2);
    eq_tensor *x = new_tensor(eq_shape_make(1, 1, 2, 4));
    eq_tensor *y = new_tensor(eq_shape_make(1, 1, 1, 2));
    eq_tensor *dy = new_tensor(y->shape);
    eq_tensor *dx = new_tensor(x->shape);
    /* Window 0 has its maximum 7 twice, at (0, 1) and (1, 0). Window 1
     * has 4 at (0, 2) and (1, 3). */
    const float in[8] = { 1.0f, 7.0f, 4.0f, 0.0f, 7.0f, 2.0f, 3.0f, 4.0f };

    memcpy(x->data, in, sizeof in);
    assert_int_equal(eq_layer_forward(pool, x, y), EQ_OK);
    assert_true(y->data[0] == 7.0f);
    assert_true(y->data[1] == 4.0f);

    dy->data[0] = 10.0f;
    dy->data[1] = 20.0f;
    assert_int_equal(eq_layer_backward(pool, dy, dx), EQ_OK);
    const float expected[8] = { 0.0f, 10.0f, 20.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f };
    for (size_t i = 0; i < 8; i++)
        assert_true(dx->data[i] == expected[i]);

    eq_tensor_destroy(dx);
    eq_tensor_destroy(dy);
    eq_tensor_destroy(y);
    eq_tensor_destroy(x);
    eq_layer_destroy(pool);
}

/* Forward and backward of a size x size, stride `stride` max-pooling in
 * plain loops: the first maximum in row-major window order, a NaN winning
 * over numbers. dx is zeroed and gets dy at each window's maximum. */
static void naive_maxpool(const float *x, size_t planes, size_t h, size_t w, size_t size, size_t stride,
                          const float *dy, float *y, float *dx)
{
    const size_t oh = (h - size) / stride + 1, ow = (w - size) / stride + 1;

    memset(dx, 0, planes * h * w * sizeof(float));
    for (size_t c = 0; c < planes; c++) {
        for (size_t i = 0; i < oh; i++) {
            for (size_t j = 0; j < ow; j++) {
                size_t best = c * h * w + i * stride * w + j * stride;
                for (size_t a = 0; a < size; a++) {
                    for (size_t b = 0; b < size; b++) {
                        size_t at = c * h * w + (i * stride + a) * w + j * stride + b;
                        if (isnan(x[best]))
                            continue;
                        if (isnan(x[at]) || x[at] > x[best])
                            best = at;
                    }
                }
                y[(c * oh + i) * ow + j] = x[best];
                dx[best] += dy[(c * oh + i) * ow + j];
            }
        }
    }
}

/* The vector path (four windows at a time, with an overlapping last group
 * when a row is not a multiple of four) and the scalar window loop against
 * the naive pooling, on values with many ties and some NaNs. */
static void maxpool_matches_naive(void **state)
{
    (void)state;
    static const size_t configs[][4] = { /* size, stride, h, w */
        { 2, 2, 8, 8 }, { 2, 2, 7, 9 }, { 2, 2, 6, 13 }, { 3, 2, 9, 8 }, { 3, 2, 9, 13 }, { 3, 3, 9, 9 },
        { 2, 1, 5, 6 }, { 4, 4, 16, 20 }, { 2, 2, 4, 14 }, { 2, 2, 5, 29 }, { 4, 4, 8, 28 }, { 3, 2, 7, 15 },
    };
    eq_rng rng;

    eq_rng_seed(&rng, 790);
    for (size_t k = 0; k < sizeof configs / sizeof configs[0]; k++) {
        const size_t size = configs[k][0], stride = configs[k][1], h = configs[k][2], w = configs[k][3];
        eq_layer *pool = new_maxpool(size, stride);
        eq_tensor *x = new_tensor(eq_shape_make(2, 3, h, w));
        eq_shape out;
        assert_int_equal(eq_layer_output_shape(pool, x->shape, &out), EQ_OK);
        eq_tensor *y = new_tensor(out), *dy = new_random_tensor(out, 791 + k, -1.0f, 1.0f);
        eq_tensor *dx = new_tensor(x->shape);
        float *y_ref = malloc(numel(y) * sizeof(float)), *dx_ref = malloc(numel(x) * sizeof(float));
        assert_non_null(y_ref);
        assert_non_null(dx_ref);

        /* Four levels make ties common; one value in 16 is NaN. */
        for (size_t i = 0; i < numel(x); i++) {
            uint64_t r = eq_rng_below(&rng, 64);
            x->data[i] = r < 4 ? NAN : (float)(r % 4);
        }
        /* A gradient of -0 added to a zeroed input gradient gives +0. */
        dy->data[0] = -0.0f;
        naive_maxpool(x->data, 6, h, w, size, stride, dy->data, y_ref, dx_ref);
        assert_int_equal(eq_layer_forward(pool, x, y), EQ_OK);
        assert_int_equal(eq_layer_backward(pool, dy, dx), EQ_OK);

        for (size_t i = 0; i < numel(y); i++) {
            if (isnan(y_ref[i]))
                assert_true(isnan(y->data[i]));
            else
                assert_true(y->data[i] == y_ref[i]);
        }
        assert_memory_equal(dx->data, dx_ref, numel(x) * sizeof(float));

        free(dx_ref);
        free(y_ref);
        eq_tensor_destroy(dx);
        eq_tensor_destroy(dy);
        eq_tensor_destroy(y);
        eq_tensor_destroy(x);
        eq_layer_destroy(pool);
    }
}

static void maxpool_overlapping_windows_add_gradients(void **state)
{
    (void)state;
    eq_layer *pool = new_maxpool(2, 1);
    eq_tensor *x = new_tensor(eq_shape_make(1, 1, 1, 3));
    eq_tensor *dx = new_tensor(x->shape);
    eq_tensor *y = NULL, *dy = NULL;
    eq_shape out_shape;

    /* A 1x3 input is smaller than a 2x2 window. */
    assert_int_equal(eq_layer_output_shape(pool, x->shape, &out_shape), EQ_ERR_SHAPE);
    eq_tensor_destroy(x);
    eq_tensor_destroy(dx);

    x = new_tensor(eq_shape_make(1, 1, 2, 3));
    dx = new_tensor(x->shape);
    const float in[6] = { 0.0f, 9.0f, 1.0f, 2.0f, 3.0f, 4.0f };
    memcpy(x->data, in, sizeof in);
    assert_int_equal(eq_layer_output_shape(pool, x->shape, &out_shape), EQ_OK);
    assert_true(eq_shape_equal(out_shape, eq_shape_make(1, 1, 1, 2)));
    y = new_tensor(out_shape);
    dy = new_tensor(out_shape);
    assert_int_equal(eq_layer_forward(pool, x, y), EQ_OK);
    dy->data[0] = 1.5f;
    dy->data[1] = 2.0f;
    assert_int_equal(eq_layer_backward(pool, dy, dx), EQ_OK);
    /* 9 is the maximum of both windows, so it gets both gradients. */
    assert_true(dx->data[1] == 3.5f);
    assert_true(dx->data[0] == 0.0f);

    eq_tensor_destroy(dy);
    eq_tensor_destroy(y);
    eq_tensor_destroy(dx);
    eq_tensor_destroy(x);
    eq_layer_destroy(pool);
}

static void flatten_keeps_order(void **state)
{
    (void)state;
    eq_layer *flatten = new_simple(eq_flatten_create);
    eq_tensor *x = new_random_tensor(eq_shape_make(2, 3, 4, 5), 41, -1.0f, 1.0f);
    eq_shape out_shape;

    assert_int_equal(eq_layer_output_shape(flatten, x->shape, &out_shape), EQ_OK);
    assert_true(eq_shape_equal(out_shape, eq_shape_make(2, 60, 1, 1)));
    eq_tensor *y = new_tensor(out_shape);
    assert_int_equal(eq_layer_forward(flatten, x, y), EQ_OK);
    assert_memory_equal(y->data, x->data, numel(x) * sizeof(float));

    eq_tensor_destroy(y);
    eq_tensor_destroy(x);
    eq_layer_destroy(flatten);
}

static void dense_matches_hand_computed(void **state)
{
    (void)state;
    eq_layer *dense = NULL;
    eq_param weight, bias;

    assert_int_equal(eq_dense_create(3, 2, &dense), EQ_OK);
    assert_int_equal(eq_layer_param(dense, 0, &weight), EQ_OK);
    assert_int_equal(eq_layer_param(dense, 1, &bias), EQ_OK);
    assert_true(eq_shape_equal(weight.shape, eq_shape_make(2, 3, 1, 1)));
    assert_true(eq_shape_equal(bias.shape, eq_shape_make(2, 1, 1, 1)));
    const float w[6] = { 1.0f, 2.0f, 3.0f, -1.0f, 0.5f, 0.0f };
    memcpy(weight.value, w, sizeof w);
    bias.value[0] = 0.25f;
    bias.value[1] = -1.0f;

    eq_tensor *x = new_tensor(eq_shape_make(1, 3, 1, 1));
    eq_tensor *y = new_tensor(eq_shape_make(1, 2, 1, 1));
    x->data[0] = 1.0f;
    x->data[1] = -2.0f;
    x->data[2] = 4.0f;
    assert_int_equal(eq_layer_forward(dense, x, y), EQ_OK);
    assert_true(y->data[0] == 9.25f);  /* 1 - 4 + 12 + 0.25 */
    assert_true(y->data[1] == -3.0f);  /* -1 - 1 + 0 - 1 */

    eq_tensor_destroy(y);
    eq_tensor_destroy(x);
    eq_layer_destroy(dense);
}

/* --- Sequential ------------------------------------------------------------ */

static void sequential_params_follow_children(void **state)
{
    (void)state;
    eq_layer *seq = new_simple(eq_sequential_create);
    eq_layer *conv = new_conv(1, 2, 3, 3, 1, 1, 51);
    eq_layer *dense = new_dense(8, 3, 52);
    eq_param got, want;

    append(seq, conv);
    append(seq, new_simple(eq_relu_create));
    append(seq, dense);
    assert_int_equal(eq_sequential_length(seq), 3);
    assert_ptr_equal(eq_sequential_get(seq, 0), conv);
    assert_ptr_equal(eq_sequential_get(seq, 2), dense);
    assert_null(eq_sequential_get(seq, 3));
    assert_int_equal(eq_layer_param_count(seq), 4);

    eq_layer *owners[4] = { conv, conv, dense, dense };
    size_t local[4] = { 0, 1, 0, 1 };
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(eq_layer_param(seq, i, &got), EQ_OK);
        assert_int_equal(eq_layer_param(owners[i], local[i], &want), EQ_OK);
        assert_ptr_equal(got.value, want.value);
        assert_ptr_equal(got.grad, want.grad);
        assert_int_equal(got.count, want.count);
        assert_string_equal(got.name, want.name);
    }

    /* Not a sequential layer: length 0, no children. */
    assert_int_equal(eq_sequential_length(conv), 0);
    assert_null(eq_sequential_get(conv, 0));
    eq_layer_destroy(seq);
}

static void sequential_empty_is_identity(void **state)
{
    (void)state;
    eq_layer *seq = new_simple(eq_sequential_create);
    eq_tensor *x = new_random_tensor(eq_shape_make(2, 3, 2, 2), 61, -1.0f, 1.0f);
    eq_tensor *y = new_tensor(x->shape);
    eq_tensor *dy = new_random_tensor(x->shape, 62, -1.0f, 1.0f);
    eq_tensor *dx = new_tensor(x->shape);
    eq_shape out_shape;

    assert_int_equal(eq_layer_output_shape(seq, x->shape, &out_shape), EQ_OK);
    assert_true(eq_shape_equal(out_shape, x->shape));
    assert_int_equal(eq_layer_forward(seq, x, y), EQ_OK);
    assert_memory_equal(y->data, x->data, numel(x) * sizeof(float));
    assert_int_equal(eq_layer_backward(seq, dy, dx), EQ_OK);
    assert_memory_equal(dx->data, dy->data, numel(dy) * sizeof(float));
    assert_int_equal(eq_layer_param_count(seq), 0);

    eq_tensor_destroy(dx);
    eq_tensor_destroy(dy);
    eq_tensor_destroy(y);
    eq_tensor_destroy(x);
    eq_layer_destroy(seq);
}

/* Parameter gradients must not depend on whether the input gradient is
 * requested. Without it, the first conv gets dx = NULL. */
static void sequential_null_dx_same_param_grads(void **state)
{
    (void)state;
    eq_layer *seq = new_small_net(71);
    eq_tensor *x = new_random_tensor(eq_shape_make(3, 2, 6, 6), 72, -1.0f, 1.0f);
    eq_tensor *y = new_tensor(eq_shape_make(3, 3, 1, 1));
    eq_tensor *dy = new_random_tensor(y->shape, 73, -1.0f, 1.0f);
    eq_tensor *dx = new_tensor(x->shape);
    size_t count = eq_layer_param_count(seq);
    float *saved[8];

    assert_int_equal(count, 6);
    assert_int_equal(eq_layer_forward(seq, x, y), EQ_OK);
    eq_layer_zero_grad(seq);
    assert_int_equal(eq_layer_backward(seq, dy, dx), EQ_OK);
    for (size_t p = 0; p < count; p++) {
        eq_param param;
        assert_int_equal(eq_layer_param(seq, p, &param), EQ_OK);
        saved[p] = malloc(param.count * sizeof(float));
        assert_non_null(saved[p]);
        memcpy(saved[p], param.grad, param.count * sizeof(float));
    }

    eq_layer_zero_grad(seq);
    assert_int_equal(eq_layer_backward(seq, dy, NULL), EQ_OK);
    for (size_t p = 0; p < count; p++) {
        eq_param param;
        assert_int_equal(eq_layer_param(seq, p, &param), EQ_OK);
        assert_memory_equal(param.grad, saved[p], param.count * sizeof(float));
        free(saved[p]);
    }

    eq_tensor_destroy(dx);
    eq_tensor_destroy(dy);
    eq_tensor_destroy(y);
    eq_tensor_destroy(x);
    eq_layer_destroy(seq);
}

/* --- Initialisation ---------------------------------------------------------- */

/* Checks mean ~ 0 within 5 standard errors and variance within 3% of
 * 2 / fan_in (the sample variance has a relative standard error of
 * sqrt(2 / count), below 0.6% here), and a zero bias. */
static void assert_he_statistics(eq_layer *layer, double fan_in)
{
    eq_param weight, bias;
    double sum = 0.0, sum_sq = 0.0;
    const double variance = 2.0 / fan_in;

    assert_int_equal(eq_layer_param(layer, 0, &weight), EQ_OK);
    assert_int_equal(eq_layer_param(layer, 1, &bias), EQ_OK);
    for (size_t i = 0; i < weight.count; i++) {
        sum += weight.value[i];
        sum_sq += (double)weight.value[i] * weight.value[i];
    }
    double mean = sum / (double)weight.count;
    double sample_variance = sum_sq / (double)weight.count - mean * mean;
    assert_true(fabs(mean) < 5.0 * sqrt(variance / (double)weight.count));
    assert_true(sample_variance > 0.97 * variance);
    assert_true(sample_variance < 1.03 * variance);
    for (size_t i = 0; i < bias.count; i++)
        assert_true(bias.value[i] == 0.0f);
}

static void he_init_statistics(void **state)
{
    (void)state;
    eq_layer *conv = NULL, *dense = NULL;
    eq_param bias;
    eq_rng rng;

    assert_int_equal(eq_conv2d_create(64, 128, 3, 3, 1, 1, &conv), EQ_OK);
    assert_int_equal(eq_dense_create(1000, 100, &dense), EQ_OK);
    /* A nonzero bias shows that initialisation resets it. */
    assert_int_equal(eq_layer_param(conv, 1, &bias), EQ_OK);
    bias.value[0] = 1.0f;
    assert_int_equal(eq_layer_param(dense, 1, &bias), EQ_OK);
    bias.value[0] = 1.0f;

    eq_rng_seed(&rng, 81);
    eq_layer_init_he(conv, &rng);
    eq_layer_init_he(dense, &rng);
    assert_he_statistics(conv, 64.0 * 3 * 3);
    assert_he_statistics(dense, 1000.0);

    eq_layer_destroy(dense);
    eq_layer_destroy(conv);
}

/* --- Descriptions ------------------------------------------------------------ */

static void describe_strings(void **state)
{
    (void)state;
    char buf[256];
    eq_layer *seq = new_simple(eq_sequential_create);

    assert_int_equal(eq_layer_describe(seq, buf, sizeof buf), strlen("sequential()"));
    assert_string_equal(buf, "sequential()");

    append(seq, new_conv(1, 8, 3, 3, 1, 1, 91));
    append(seq, new_simple(eq_relu_create));
    append(seq, new_maxpool(2, 2));
    append(seq, new_simple(eq_flatten_create));
    append(seq, new_dense(1568, 10, 92));
    const char *expected =
        "sequential(conv2d(1->8, 3x3, stride 1, pad 1), relu, maxpool(2x2, stride 2), flatten, dense(1568->10))";
    assert_int_equal(eq_layer_describe(seq, buf, sizeof buf), strlen(expected));
    assert_string_equal(buf, expected);
    assert_string_equal(eq_layer_kind(seq), "sequential");
    assert_string_equal(eq_layer_kind(eq_sequential_get(seq, 0)), "conv2d");

    /* A short buffer gets a NUL-terminated prefix, and the return value is
     * the full length, as with snprintf. */
    char small[20];
    memset(small, 'x', sizeof small);
    assert_int_equal(eq_layer_describe(seq, small, sizeof small), strlen(expected));
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_memory_equal(small, expected, sizeof small - 1);
    assert_int_equal(eq_layer_describe(seq, NULL, 0), strlen(expected));

    eq_layer *nested = new_simple(eq_sequential_create);
    append(nested, new_conv(2, 3, 5, 1, 2, 0, 93));
    append(nested, seq);
    const char *nested_expected = "sequential(conv2d(2->3, 5x1, stride 2, pad 0), sequential(conv2d(1->8";
    assert_int_equal(eq_layer_describe(nested, buf, sizeof buf),
                     strlen("sequential(conv2d(2->3, 5x1, stride 2, pad 0), )") + strlen(expected));
    assert_memory_equal(buf, nested_expected, strlen(nested_expected));
    eq_layer_destroy(nested);
}

/* --- Errors ------------------------------------------------------------------ */

static void conv2d_rejects_bad_input_shapes(void **state)
{
    (void)state;
    eq_layer *conv = NULL;
    eq_shape out;

    assert_int_equal(eq_conv2d_create(1, 8, 3, 3, 1, 1, &conv), EQ_OK);
    assert_int_equal(eq_layer_output_shape(conv, eq_shape_make(2, 3, 28, 28), &out), EQ_ERR_SHAPE);
    assert_true(message_contains("conv2d(1->8, 3x3, stride 1, pad 1)"));
    assert_true(message_contains("has 3 channels, expected 1"));
    assert_true(message_contains("(2, 3, 28, 28)"));
    eq_layer_destroy(conv);

    assert_int_equal(eq_conv2d_create(1, 1, 5, 4, 1, 0, &conv), EQ_OK);
    assert_int_equal(eq_layer_output_shape(conv, eq_shape_make(1, 1, 4, 4), &out), EQ_ERR_SHAPE);
    assert_true(message_contains("padded to 4x4 is smaller than the 5x4 kernel"));
    assert_int_equal(eq_layer_output_shape(conv, eq_shape_make(0, 1, 8, 8), &out), EQ_ERR_SHAPE);
    assert_true(message_contains("zero dimension"));
    assert_int_equal(eq_layer_output_shape(conv, eq_shape_make(3, 1, 5, 4), &out), EQ_OK);
    assert_true(eq_shape_equal(out, eq_shape_make(3, 1, 1, 1)));
    eq_layer_destroy(conv);

    assert_int_equal(eq_conv2d_create(1, 1, 3, 3, 1, SIZE_MAX / 2, &conv), EQ_OK);
    assert_int_equal(eq_layer_output_shape(conv, eq_shape_make(1, 1, 8, 8), &out), EQ_ERR_SHAPE);
    assert_true(message_contains("overflows"));
    eq_layer_destroy(conv);
}

static void layers_reject_bad_input_shapes(void **state)
{
    (void)state;
    eq_layer *dense = NULL, *pool = NULL, *seq = NULL;
    eq_shape out;

    assert_int_equal(eq_dense_create(784, 10, &dense), EQ_OK);
    assert_int_equal(eq_layer_output_shape(dense, eq_shape_make(2, 8, 7, 7), &out), EQ_ERR_SHAPE);
    assert_true(message_contains("dense(784->10)"));
    assert_true(message_contains("392 features"));
    assert_true(message_contains("expected 784"));
    assert_int_equal(eq_layer_output_shape(dense, eq_shape_make(2, 16, 7, 7), &out), EQ_OK);
    assert_true(eq_shape_equal(out, eq_shape_make(2, 10, 1, 1)));
    eq_layer_destroy(dense);

    assert_int_equal(eq_maxpool_create(3, 2, &pool), EQ_OK);
    assert_int_equal(eq_layer_output_shape(pool, eq_shape_make(1, 2, 2, 9), &out), EQ_ERR_SHAPE);
    assert_true(message_contains("maxpool(3x3, stride 2)"));
    assert_true(message_contains("smaller than the 3x3 window"));
    assert_int_equal(eq_layer_output_shape(pool, eq_shape_make(1, 2, 7, 8), &out), EQ_OK);
    assert_true(eq_shape_equal(out, eq_shape_make(1, 2, 3, 3)));
    eq_layer_destroy(pool);

    /* A sequence names the child that rejects the shape. */
    seq = new_simple(eq_sequential_create);
    append(seq, new_simple(eq_flatten_create));
    append(seq, new_dense(10, 2, 101));
    assert_int_equal(eq_layer_output_shape(seq, eq_shape_make(4, 3, 2, 2), &out), EQ_ERR_SHAPE);
    assert_true(message_contains("sequential layer 1: dense(10->2)"));
    assert_true(message_contains("12 features"));

    /* The forward wrapper rejects an output tensor of the wrong shape. */
    eq_tensor *x = new_tensor(eq_shape_make(4, 5, 1, 2));
    eq_tensor *y = new_tensor(eq_shape_make(4, 3, 1, 1));
    assert_int_equal(eq_layer_forward(seq, x, y), EQ_ERR_SHAPE);
    assert_true(message_contains("expected (4, 2, 1, 1)"));
    eq_tensor_destroy(y);
    eq_tensor_destroy(x);
    eq_layer_destroy(seq);
}

static void backward_before_forward_fails(void **state)
{
    (void)state;
    eq_layer *layers[] = {
        new_conv(1, 1, 1, 1, 1, 0, 111),
        new_dense(1, 1, 112),
        new_simple(eq_relu_create),
        new_maxpool(1, 1),
        new_simple(eq_flatten_create),
        new_simple(eq_sequential_create),
    };
    eq_tensor *dy = new_tensor(eq_shape_make(1, 1, 1, 1));
    eq_tensor *dx = new_tensor(eq_shape_make(1, 1, 1, 1));

    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        assert_int_equal(eq_layer_backward(layers[i], dy, dx), EQ_ERR_STATE);
        assert_true(message_contains(eq_layer_kind(layers[i])));
        assert_true(message_contains("no forward call"));
        eq_layer_destroy(layers[i]);
    }

    /* Appending to a sequence drops its forward state. */
    eq_layer *seq = new_simple(eq_sequential_create);
    eq_tensor *x = new_tensor(eq_shape_make(1, 1, 1, 1));
    eq_tensor *y = new_tensor(eq_shape_make(1, 1, 1, 1));
    append(seq, new_simple(eq_relu_create));
    assert_int_equal(eq_layer_forward(seq, x, y), EQ_OK);
    append(seq, new_simple(eq_relu_create));
    assert_int_equal(eq_layer_backward(seq, dy, dx), EQ_ERR_STATE);

    eq_tensor_destroy(y);
    eq_tensor_destroy(x);
    eq_layer_destroy(seq);
    eq_tensor_destroy(dx);
    eq_tensor_destroy(dy);
}

static void param_index_out_of_range(void **state)
{
    (void)state;
    eq_layer *conv = new_conv(1, 2, 3, 3, 1, 1, 121);
    eq_layer *relu = new_simple(eq_relu_create);
    eq_param param;

    assert_int_equal(eq_layer_param(conv, 2, &param), EQ_ERR_INVALID_ARGUMENT);
    assert_true(message_contains("index 2 out of range"));
    assert_int_equal(eq_layer_param(relu, 0, &param), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_layer_param(conv, 0, NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_layer_param(NULL, 0, &param), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_layer_param_count(relu), 0);
    assert_int_equal(eq_layer_param_count(NULL), 0);

    assert_int_equal(eq_layer_param(conv, 0, &param), EQ_OK);
    assert_string_equal(param.name, "weight");
    assert_true(eq_shape_equal(param.shape, eq_shape_make(2, 1, 3, 3)));
    assert_int_equal(param.count, 18);
    assert_int_equal(eq_layer_param(conv, 1, &param), EQ_OK);
    assert_string_equal(param.name, "bias");
    assert_true(eq_shape_equal(param.shape, eq_shape_make(2, 1, 1, 1)));

    eq_layer_destroy(relu);
    eq_layer_destroy(conv);
}

static void constructors_reject_bad_arguments(void **state)
{
    (void)state;
    eq_layer *layer = (eq_layer *)1;

    assert_int_equal(eq_conv2d_create(1, 1, 3, 3, 1, 0, NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_conv2d_create(0, 1, 3, 3, 1, 0, &layer), EQ_ERR_INVALID_ARGUMENT);
    assert_null(layer);
    assert_true(message_contains("must all be positive"));
    assert_int_equal(eq_conv2d_create(1, 1, 3, 0, 1, 0, &layer), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_conv2d_create(1, 1, 3, 3, 0, 0, &layer), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_conv2d_create(SIZE_MAX / 2, 4, 3, 3, 1, 0, &layer), EQ_ERR_OUT_OF_MEMORY);
    assert_true(message_contains("overflows"));

    assert_int_equal(eq_dense_create(1, 1, NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_dense_create(0, 1, &layer), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_dense_create(1, 0, &layer), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_dense_create(SIZE_MAX / 2, 3, &layer), EQ_ERR_OUT_OF_MEMORY);

    assert_int_equal(eq_maxpool_create(2, 2, NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_maxpool_create(0, 2, &layer), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_maxpool_create(2, 0, &layer), EQ_ERR_INVALID_ARGUMENT);

    assert_int_equal(eq_relu_create(NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_flatten_create(NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_sequential_create(NULL), EQ_ERR_INVALID_ARGUMENT);
    eq_layer_destroy(NULL);
}

static void calls_reject_null_arguments(void **state)
{
    (void)state;
    eq_layer *relu = new_simple(eq_relu_create);
    eq_tensor *x = new_tensor(eq_shape_make(1, 1, 2, 2));
    eq_tensor *y = new_tensor(x->shape);
    eq_tensor no_data = { x->shape, NULL };
    eq_shape out;

    assert_int_equal(eq_layer_output_shape(NULL, x->shape, &out), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_layer_output_shape(relu, x->shape, NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_layer_forward(NULL, x, y), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_layer_forward(relu, NULL, y), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_layer_forward(relu, x, NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_layer_forward(relu, &no_data, y), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_layer_forward(relu, x, y), EQ_OK);
    assert_int_equal(eq_layer_backward(relu, NULL, x), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_layer_backward(NULL, y, x), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_layer_backward(relu, y, &no_data), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_layer_backward(relu, y, NULL), EQ_OK);
    assert_int_equal(eq_layer_describe(NULL, NULL, 0), strlen("(null)"));
    assert_string_equal(eq_layer_kind(NULL), "(null)");
    eq_layer_zero_grad(NULL);
    eq_layer_init_he(relu, NULL);

    eq_tensor_destroy(y);
    eq_tensor_destroy(x);
    eq_layer_destroy(relu);
}

/* Failed appends take ownership too: the sanitizer build reports a leak if
 * the rejected layer is not destroyed. */
static void sequential_append_rejects_bad_arguments(void **state)
{
    (void)state;
    eq_layer *seq = new_simple(eq_sequential_create);
    eq_layer *conv = new_conv(1, 1, 1, 1, 1, 0, 131);

    assert_int_equal(eq_sequential_append(seq, NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_true(message_contains("layer is NULL"));
    assert_int_equal(eq_sequential_append(NULL, new_simple(eq_relu_create)), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_sequential_append(conv, new_simple(eq_relu_create)), EQ_ERR_INVALID_ARGUMENT);
    assert_true(message_contains("seq is conv2d, expected a sequential layer"));
    assert_int_equal(eq_sequential_append(seq, seq), EQ_ERR_INVALID_ARGUMENT);
    assert_true(message_contains("to itself"));
    assert_int_equal(eq_sequential_length(seq), 0);

    eq_layer_destroy(conv);
    eq_layer_destroy(seq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(conv2d_gradcheck_configs),
        cmocka_unit_test(dense_gradcheck),
        cmocka_unit_test(flatten_gradcheck),
        cmocka_unit_test(relu_gradcheck),
        cmocka_unit_test(maxpool_gradcheck),
        cmocka_unit_test(sequential_gradcheck),
        cmocka_unit_test(conv2d_matches_reference),
        cmocka_unit_test(im2col_matches_naive),
        cmocka_unit_test(conv2d_output_independent_of_batch),
        cmocka_unit_test(conv2d_results_independent_of_threads),
        cmocka_unit_test(elementwise_results_independent_of_threads),
        cmocka_unit_test(dense_output_independent_of_batch),
        cmocka_unit_test(elementwise_outputs_independent_of_batch),
        cmocka_unit_test(sequential_output_independent_of_batch),
        cmocka_unit_test(conv2d_backward_twice_is_repeatable),
        cmocka_unit_test(relu_passes_nan_and_zeroes_negatives),
        cmocka_unit_test(relu_maxpool_swap_keeps_bits),
        cmocka_unit_test(maxpool_ties_go_to_first),
        cmocka_unit_test(maxpool_matches_naive),
        cmocka_unit_test(maxpool_overlapping_windows_add_gradients),
        cmocka_unit_test(flatten_keeps_order),
        cmocka_unit_test(dense_matches_hand_computed),
        cmocka_unit_test(sequential_params_follow_children),
        cmocka_unit_test(sequential_empty_is_identity),
        cmocka_unit_test(sequential_null_dx_same_param_grads),
        cmocka_unit_test(he_init_statistics),
        cmocka_unit_test(describe_strings),
        cmocka_unit_test(conv2d_rejects_bad_input_shapes),
        cmocka_unit_test(layers_reject_bad_input_shapes),
        cmocka_unit_test(backward_before_forward_fails),
        cmocka_unit_test(param_index_out_of_range),
        cmocka_unit_test(constructors_reject_bad_arguments),
        cmocka_unit_test(calls_reject_null_arguments),
        cmocka_unit_test(sequential_append_rejects_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
