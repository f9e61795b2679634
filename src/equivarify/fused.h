/* The fused paths of eq_equivarify (internal).
 *
 * Block path: with the EQ_ACTION_BLOCKS input action, branch g of F reads input block b
 * from block b * g of x. When h starts with a conv2d or a dense layer (or
 * a flatten and then a dense layer), that layer computes all n branches
 * from x itself through the core
 * multi-branch calls (core/blocks.h), with the source table
 * sources[g * n + b] = b * g, instead of from n block-permuted copies of x.
 * Its sums run over the weights' blocks in a fixed order, so F(k . x) still
 * equals k . F(x) bit for bit. The rest of h then runs on the stacked
 * (n * N, ...) output as on the generic path, and h's parameters,
 * description and parameter order are unchanged. For C2 and C4 the core
 * runs these calls in the group's Fourier basis (core/spectral.h).
 *
 * Gathered path: for the other input actions and the aligned variant, h's
 * first conv2d reads x's column matrix through a row permutation per
 * branch, which gives the bits of the generic path's conv on the
 * transformed copies (eq_fused_gathered_prepare). */
#ifndef EQ_EQUIVARIFY_FUSED_H
#define EQ_EQUIVARIFY_FUSED_H

#include <stddef.h>

#include "equivar/equivarify.h"

typedef struct eq_fused {
    size_t *sources;          /* n * n block sources, built on the first fused forward */
    eq_tensor first_out;      /* (n * N, C1, H1, W1): output of h's first layer, when more layers follow */
    size_t first_out_capacity;
    eq_tensor dfirst_out;     /* gradient of first_out */
    size_t dfirst_out_capacity;
    int active;               /* the last forward took the fused path */

    /* The gathered path (eq_fused_gathered_prepare): per branch, the rows
     * of x's column matrix that h's first conv reads, and where each
     * output column goes. Built for one input shape. */
    size_t *rows;             /* n * K */
    size_t *positions;        /* n * OH * OW */
    eq_shape gathered_shape;  /* the input shape of the maps; n == 0 when there are none */
    int gathered_ok;          /* the maps exist for gathered_shape */
} eq_fused;

/* Returns the layer that the fused path computes: h itself if it is a
 * conv2d or a dense layer, child 0 of a sequential h if that child is one,
 * child 1 if child 0 is a flatten and child 1 a dense layer, else NULL. */
eq_layer *eq_fused_first_layer(eq_layer *h);

/* Computes h's output for every branch, (n * N, C', H', W') in h_out, from
 * x (N, n * B, H, W), for an h that eq_fused_first_layer accepts. x must
 * stay unchanged until eq_fused_backward. `who` prefixes error messages.
 * Returns EQ_OK or the codes of the layer calls. */
eq_status eq_fused_forward(eq_fused *fused, const char *who, eq_layer *h, const eq_group *group,
                           const eq_tensor *x, eq_tensor *h_out);

/* Runs backward for the last eq_fused_forward: accumulates h's parameter
 * gradients over the branches and, when dx is not NULL, overwrites dx
 * (N, n * B, H, W) with the gradient of x. dh_out is (n * N, C', H', W'). */
eq_status eq_fused_backward(eq_fused *fused, const char *who, eq_layer *h, const eq_tensor *dh_out,
                            eq_tensor *dx);

/* The gathered path serves an input that the group acts on through pixels
 * (EQ_ACTION_PIXELS, EQ_ACTION_BLOCKS_PIXELS) or blocks, when h starts
 * with a conv2d layer. Branch g's first layer reads the column matrix of x
 * through a row permutation instead of the column matrix of a transformed
 * copy. Its outputs get the bits of the generic path (see
 * eq_conv2d_forward_gathered). Needs square images, a square kernel and a
 * pixel action that maps the conv's padded windows onto each other, which
 * eq_fused_gathered_prepare checks.
 *
 * Returns 1 if the gathered path computes h for this input shape and
 * action, building the maps on the first call for a shape, else 0. */
int eq_fused_gathered_prepare(eq_fused *fused, eq_layer *h, const eq_group *group, eq_action action,
                              eq_shape in);

/* Computes h(g . x) for every branch, (n * N, C', H', W') in h_out, for a
 * shape that eq_fused_gathered_prepare accepted. x must stay unchanged
 * until eq_fused_backward, which differentiates this call too.
 * Returns EQ_OK or the codes of the layer calls. */
eq_status eq_fused_gathered_forward(eq_fused *fused, const char *who, eq_layer *h, const eq_group *group,
                                    const eq_tensor *x, eq_tensor *h_out);

void eq_fused_release(eq_fused *fused);

/* Returns the default of the fused switch for new layers: 0 when the
 * environment variable EQ_EQUIVARIFY_FUSED is "0", else 1. The variable is
 * read once per process, on the first call. */
int eq_equivarify_fused_default(void);

/* Turns the fused paths of an eq_equivarify layer on (enabled != 0) or
 * off, so that tests and benchmarks can compare them with the generic path.
 * Off, or for an h that neither path computes, F takes the generic path.
 * Returns EQ_OK or EQ_ERR_INVALID_ARGUMENT (not an equivarify layer). */
eq_status eq_equivarify_set_fused(eq_layer *layer, int enabled);

/* Returns 1 if the last forward call of an equivarify layer took the fused
 * path, 0 if it took the generic path, failed or never ran, or if `layer`
 * is not an equivarify layer. */
int eq_equivarify_used_fused(const eq_layer *layer);

#endif
