/* Tensor allocation and shape helpers. */
#include "core/error.h"

#include <stdlib.h>

eq_shape eq_shape_make(size_t n, size_t c, size_t h, size_t w)
{
    eq_shape shape = { n, c, h, w };
    return shape;
}

size_t eq_shape_numel(eq_shape shape)
{
    size_t count = shape.n;

    if (!eq_size_mul(count, shape.c, &count) || !eq_size_mul(count, shape.h, &count)
        || !eq_size_mul(count, shape.w, &count))
        return 0;
    return count;
}

int eq_shape_equal(eq_shape a, eq_shape b)
{
    return a.n == b.n && a.c == b.c && a.h == b.h && a.w == b.w;
}

eq_status eq_tensor_create(eq_shape shape, eq_tensor **out)
{
    char text[EQ_SHAPE_STR_SIZE];

    if (!out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_tensor_create: out is NULL");
    *out = NULL;
    if (shape.n == 0 || shape.c == 0 || shape.h == 0 || shape.w == 0)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_tensor_create: shape %s has a zero dimension",
                        eq_shape_str(shape, text));

    size_t count = eq_shape_numel(shape);
    if (count == 0)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_tensor_create: shape %s overflows size_t",
                        eq_shape_str(shape, text));

    eq_tensor *tensor = malloc(sizeof *tensor);
    float *data = eq_alloc_floats(count);
    if (!tensor || !data) {
        free(tensor);
        eq_free(data);
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_tensor_create: cannot allocate %zu floats for %s",
                        count, eq_shape_str(shape, text));
    }
    tensor->shape = shape;
    tensor->data = data;
    *out = tensor;
    return EQ_OK;
}

void eq_tensor_destroy(eq_tensor *tensor)
{
    if (!tensor)
        return;
    eq_free(tensor->data);
    free(tensor);
}
