/* The fused path of eq_equivarify for a regular input: h's first layer
 * computes all branches from x itself, the rest of h runs as usual. */
#include "equivarify/fused.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/conv2d_impl.h"
#include "core/dense_impl.h"
#include "core/error.h"
#include "core/layer_impl.h"
#include "core/sequential_impl.h"
#include "equivarify/group_impl.h"

/* The gathered path needs K >= GATHER_MIN_RATIO * OC (eq_fused_gathered_prepare). */
#define GATHER_MIN_RATIO 4

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static int fused_default = 1;

static void read_default(void)
{
    const char *value = getenv("EQ_EQUIVARIFY_FUSED");

    fused_default = !(value && strcmp(value, "0") == 0);
}

int eq_equivarify_fused_default(void)
{
    pthread_once(&default_once, read_default);
    return fused_default;
}

static int is_fusable(const eq_layer *layer)
{
    return eq_conv2d_is(layer) || eq_dense_is(layer);
}

/* Finds the layer that the fused path computes and sets *index to its
 * position in a sequential h (0 when h itself is that layer). A flatten
 * before a dense layer is skipped: it does not move data, and the dense
 * layer reads an (N, C, H, W) input as flattened, with the same blocks. */
static eq_layer *find_fused(eq_layer *h, size_t *index)
{
    *index = 0;
    if (is_fusable(h))
        return h;

    eq_layer *first = eq_sequential_get(h, 0);
    if (is_fusable(first))
        return first;

    eq_layer *second = eq_sequential_get(h, 1);
    if (first && strcmp(eq_layer_kind(first), "flatten") == 0 && eq_dense_is(second)) {
        *index = 1;
        return second;
    }
    return NULL;
}

eq_layer *eq_fused_first_layer(eq_layer *h)
{
    size_t index;

    return find_fused(h, &index);
}

/* Returns the index of the first layer of a sequential h after the fused
 * one, or 0 when no layer follows it. */
static size_t rest_start(eq_layer *h)
{
    size_t index;

    if (!find_fused(h, &index) || is_fusable(h) || eq_sequential_length(h) <= index + 1)
        return 0;
    return index + 1;
}

/* Grows t->data to `count` floats, dropping the old contents. */
static eq_status reserve(const char *who, eq_tensor *t, size_t *capacity, size_t count)
{
    if (eq_grow_floats(&t->data, capacity, count))
        return EQ_OK;
    return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu floats for the fused layer's output", who, count);
}

/* sources[g * n + b] = b * g: branch g's block b is block b * g of x,
 * because (g . x)_b = x_(b * g). */
static eq_status build_sources(eq_fused *fused, const char *who, const eq_group *group)
{
    size_t n = eq_group_order(group);

    if (fused->sources)
        return EQ_OK;
    fused->sources = malloc(n * n * sizeof *fused->sources);
    if (!fused->sources)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: cannot allocate the %zu x %zu block source table", who, n, n);
    for (size_t g = 0; g < n; g++)
        for (size_t b = 0; b < n; b++)
            fused->sources[g * n + b] = eq_group_mul(group, b, g);
    return EQ_OK;
}

/* Runs h's first layer on x for every branch, with the multi-branch call
 * of the block path (sources) or of the gathered path (rows), and then the
 * rest of h on its stacked output. */
static eq_status forward_first_and_rest(eq_fused *fused, const char *who, eq_layer *h, size_t n, const eq_tensor *x,
                                        eq_tensor *h_out, int gathered)
{
    eq_layer *first = eq_fused_first_layer(h);
    eq_status status;

    /* h's own cache now describes neither path; the fused state replaces it. */
    h->has_forward = 0;

    /* Without a rest, the fused layer writes h's output directly. */
    eq_tensor *target = h_out;
    size_t rest = rest_start(h);
    if (rest > 0) {
        eq_shape stacked = eq_shape_make(h_out->shape.n, x->shape.c, x->shape.h, x->shape.w);
        eq_shape shape;
        status = eq_layer_output_shape(first, stacked, &shape);
        if (status == EQ_OK)
            status = reserve(who, &fused->first_out, &fused->first_out_capacity, eq_shape_numel(shape));
        if (status != EQ_OK)
            return status;
        fused->first_out.shape = shape;
        target = &fused->first_out;
    }

    if (gathered)
        status = eq_conv2d_forward_gathered(first, n, fused->rows, fused->positions, x, target);
    else if (eq_conv2d_is(first))
        status = eq_conv2d_forward_blocks(first, n, fused->sources, x, target);
    else
        status = eq_dense_forward_blocks(first, n, fused->sources, x, target);
    if (status == EQ_OK && target != h_out)
        status = eq_sequential_forward_from(h, rest, target, h_out);
    fused->active = status == EQ_OK;
    return status;
}

eq_status eq_fused_forward(eq_fused *fused, const char *who, eq_layer *h, const eq_group *group,
                           const eq_tensor *x, eq_tensor *h_out)
{
    eq_layer *first = eq_fused_first_layer(h);

    fused->active = 0;
    if (!first)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: h is %s, which the fused path cannot compute", who,
                        eq_layer_kind(h));
    eq_status status = build_sources(fused, who, group);
    if (status != EQ_OK)
        return status;
    return forward_first_and_rest(fused, who, h, eq_group_order(group), x, h_out, 0);
}

/* Fills src (size * size entries) with element g's pixel permutation, or
 * returns 0 if the group has none for that size. */
static int pixel_map(const eq_group *group, size_t g, size_t size, size_t *src)
{
    return eq_group_pixel_permutation(group, g, size, src) == EQ_OK;
}

/* Builds the gathered maps for one element g into rows (K entries) and
 * positions (OH * OW entries), with work space for three pixel maps.
 * Returns 0 if the conv's windows do not map onto each other. */
static int build_branch_maps(const eq_group *group, eq_action action, size_t g, eq_shape in, size_t kernel,
                             size_t stride, size_t pad, size_t out_size, size_t *rows, size_t *positions,
                             size_t *image_map, size_t *kernel_map, size_t *out_map)
{
    const size_t n = eq_group_order(group), size = in.h, taps = kernel * kernel, plane = out_size * out_size;
    const int pixels = action != EQ_ACTION_BLOCKS;

    for (size_t q = 0; q < taps; q++)
        kernel_map[q] = q;
    for (size_t q = 0; q < plane; q++)
        out_map[q] = q;
    if (pixels && (!pixel_map(group, g, size, image_map) || !pixel_map(group, g, kernel, kernel_map)
                   || !pixel_map(group, g, out_size, out_map)))
        return 0;

    /* Window p of g . x, tap t, must read the pixel of x that window
     * out_map[p], tap kernel_map[t] reads, or both must read padding. */
    for (size_t p = 0; pixels && p < plane; p++) {
        for (size_t t = 0; t < taps; t++) {
            size_t p2 = out_map[p], t2 = kernel_map[t];
            long r1 = (long)((p / out_size) * stride + t / kernel) - (long)pad;
            long c1 = (long)((p % out_size) * stride + t % kernel) - (long)pad;
            long r2 = (long)((p2 / out_size) * stride + t2 / kernel) - (long)pad;
            long c2 = (long)((p2 % out_size) * stride + t2 % kernel) - (long)pad;
            int inside1 = r1 >= 0 && c1 >= 0 && r1 < (long)size && c1 < (long)size;
            int inside2 = r2 >= 0 && c2 >= 0 && r2 < (long)size && c2 < (long)size;
            if (inside1 != inside2)
                return 0;
            if (inside1 && image_map[(size_t)r1 * size + (size_t)c1] != (size_t)r2 * size + (size_t)c2)
                return 0;
        }
    }

    /* Row (c, t) of branch g reads channel c of g . x, which is channel c
     * of x (pixels) or of block b * g of x (blocks), at tap kernel_map[t]. */
    const size_t channels = in.c, block = action == EQ_ACTION_PIXELS ? channels : channels / n;
    for (size_t c = 0; c < channels; c++) {
        size_t source = c;
        if (action != EQ_ACTION_PIXELS)
            source = eq_group_mul(group, c / block, g) * block + c % block;
        for (size_t t = 0; t < taps; t++)
            rows[c * taps + t] = source * taps + kernel_map[t];
    }
    for (size_t p = 0; p < plane; p++)
        positions[out_map[p]] = p;
    return 1;
}

int eq_fused_gathered_prepare(eq_fused *fused, eq_layer *h, const eq_group *group, eq_action action, eq_shape in)
{
    eq_layer *first = eq_fused_first_layer(h);
    size_t kh, kw, stride, pad;
    eq_shape out;

    /* The maps depend on one sample's shape, not on the batch size. */
    in.n = 1;
    if (fused->gathered_shape.n != 0 && eq_shape_equal(fused->gathered_shape, in))
        return fused->gathered_ok;
    if (!first || !eq_conv2d_is(first) || eq_layer_output_shape(first, in, &out) != EQ_OK)
        return 0;
    eq_conv2d_geometry(first, &kh, &kw, &stride, &pad);
    if (in.h != in.w || kh != kw || out.h != out.w)
        return 0;

    /* Per branch, the gathered path saves lowering K rows of columns and
     * instead moves OC rows of output to their positions, so it only pays
     * when K is well above OC. On the AMD EPYC of docs/BENCHMARKS.md a lifting
     * conv 1->80 (K = 9) was 1.8 times slower than the generic path, and a
     * one-off program, not kept here, timed an aligned conv 320->80
     * (K = 2880) about 17% faster. */
    if (in.c * kh * kw < GATHER_MIN_RATIO * out.c) {
        fused->gathered_shape = in;
        fused->gathered_ok = 0;
        return 0;
    }

    const size_t n = eq_group_order(group), k = in.c * kh * kw, plane = out.h * out.w;
    size_t *rows = malloc(n * k * sizeof *rows);
    size_t *positions = malloc(n * plane * sizeof *positions);
    size_t *work = malloc((in.h * in.w + kh * kw + plane) * sizeof *work);
    int ok = rows && positions && work;
    for (size_t g = 0; ok && g < n; g++)
        ok = build_branch_maps(group, action, g, in, kh, stride, pad, out.h, rows + g * k, positions + g * plane,
                               work, work + in.h * in.w, work + in.h * in.w + kh * kw);
    free(work);

    free(fused->rows);
    free(fused->positions);
    fused->rows = ok ? rows : NULL;
    fused->positions = ok ? positions : NULL;
    if (!ok) {
        free(rows);
        free(positions);
    }
    fused->gathered_shape = in;
    fused->gathered_ok = ok;
    return ok;
}

eq_status eq_fused_gathered_forward(eq_fused *fused, const char *who, eq_layer *h, const eq_group *group,
                                    const eq_tensor *x, eq_tensor *h_out)
{
    eq_shape sample = x->shape;
    sample.n = 1;
    fused->active = 0;
    if (!fused->gathered_ok || !eq_shape_equal(fused->gathered_shape, sample))
        return eq_error(EQ_ERR_STATE, "%s: no gathered maps for input %zux%zux%zu", who, x->shape.c, x->shape.h,
                        x->shape.w);
    return forward_first_and_rest(fused, who, h, eq_group_order(group), x, h_out, 1);
}

eq_status eq_fused_backward(eq_fused *fused, const char *who, eq_layer *h, const eq_tensor *dh_out,
                            eq_tensor *dx)
{
    eq_layer *first = eq_fused_first_layer(h);
    const eq_tensor *grad = dh_out;
    eq_status status;

    if (!fused->active || !first)
        return eq_error(EQ_ERR_STATE, "%s: no fused forward call to differentiate", who);

    size_t rest = rest_start(h);
    if (rest > 0) {
        status = reserve(who, &fused->dfirst_out, &fused->dfirst_out_capacity,
                         eq_shape_numel(fused->first_out.shape));
        if (status != EQ_OK)
            return status;
        fused->dfirst_out.shape = fused->first_out.shape;
        status = eq_sequential_backward_from(h, rest, dh_out, &fused->dfirst_out);
        if (status != EQ_OK)
            return status;
        grad = &fused->dfirst_out;
    }

    if (eq_conv2d_is(first))
        return eq_conv2d_backward_blocks(first, grad, dx);
    return eq_dense_backward_blocks(first, grad, dx);
}

void eq_fused_release(eq_fused *fused)
{
    free(fused->sources);
    free(fused->rows);
    free(fused->positions);
    eq_free(fused->first_out.data);
    eq_free(fused->dfirst_out.data);
    memset(fused, 0, sizeof *fused);
}
