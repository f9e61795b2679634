/* The layer vtable: what every layer kind implements.
 *
 * A layer kind defines a struct whose first member is `eq_layer base`, fills
 * an eq_layer_ops table and sets base.ops in its constructor. The public
 * functions in layer.c validate arguments and shapes before they call these
 * hooks, so a hook may assume non-NULL pointers and matching shapes. */
#ifndef EQ_CORE_LAYER_IMPL_H
#define EQ_CORE_LAYER_IMPL_H

#include "equivar/layer.h"

typedef struct eq_layer_ops {
    const char *kind;

    /* Returns EQ_ERR_SHAPE with a message when `in` does not fit. */
    eq_status (*output_shape)(const eq_layer *layer, eq_shape in, eq_shape *out);

    /* y has the shape output_shape returned for x->shape. */
    eq_status (*forward)(eq_layer *layer, const eq_tensor *x, eq_tensor *y);

    /* dy and dx have the shapes of the last forward; dx may be NULL.
     * Overwrites dx, accumulates parameter gradients. */
    eq_status (*backward)(eq_layer *layer, const eq_tensor *dy, eq_tensor *dx);

    /* May be NULL for layers without parameters. */
    size_t (*param_count)(const eq_layer *layer);
    eq_param (*param)(eq_layer *layer, size_t index);
    void (*init_he)(eq_layer *layer, eq_rng *rng);

    /* snprintf-like; may be NULL, then the kind is the description. */
    size_t (*describe)(const eq_layer *layer, char *buf, size_t size);

    /* Frees the layer struct and everything it owns. */
    void (*destroy)(eq_layer *layer);
} eq_layer_ops;

struct eq_layer {
    const eq_layer_ops *ops;
    eq_shape in_shape;  /* of the last forward call */
    eq_shape out_shape;
    int has_forward;    /* forward ran and backward may follow */
};

/* Sets up the base of a newly allocated layer. */
void eq_layer_base_init(eq_layer *layer, const eq_layer_ops *ops);

/* Appends to a describe buffer like snprintf and returns the new total
 * length; `used` is the length so far, which may exceed `size`. */
size_t eq_describe_append(char *buf, size_t size, size_t used, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#endif
