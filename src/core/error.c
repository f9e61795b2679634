/* Status names, the thread-local error message and checked allocation. */
#include "core/error.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char last_error[512];

const char *eq_status_string(eq_status status)
{
    switch (status) {
    case EQ_OK: return "EQ_OK";
    case EQ_ERR_INVALID_ARGUMENT: return "EQ_ERR_INVALID_ARGUMENT";
    case EQ_ERR_SHAPE: return "EQ_ERR_SHAPE";
    case EQ_ERR_OUT_OF_MEMORY: return "EQ_ERR_OUT_OF_MEMORY";
    case EQ_ERR_IO: return "EQ_ERR_IO";
    case EQ_ERR_FORMAT: return "EQ_ERR_FORMAT";
    case EQ_ERR_NUMERIC: return "EQ_ERR_NUMERIC";
    case EQ_ERR_GROUP: return "EQ_ERR_GROUP";
    case EQ_ERR_STATE: return "EQ_ERR_STATE";
    }
    return "EQ_ERR_UNKNOWN";
}

const char *eq_last_error(void)
{
    return last_error;
}

eq_status eq_error(eq_status status, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    vsnprintf(last_error, sizeof last_error, format, args);
    va_end(args);
    return status;
}

char *eq_shape_str(eq_shape shape, char buf[EQ_SHAPE_STR_SIZE])
{
    snprintf(buf, EQ_SHAPE_STR_SIZE, "(%zu, %zu, %zu, %zu)", shape.n, shape.c, shape.h, shape.w);
    return buf;
}

int eq_size_mul(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

void *eq_alloc_aligned(size_t bytes)
{
    /* aligned_alloc needs a size that is a multiple of the alignment. */
    size_t rounded = (bytes + 63) & ~(size_t)63;

    if (bytes == 0 || rounded < bytes)
        return NULL;
    void *ptr = aligned_alloc(64, rounded);
    if (ptr)
        memset(ptr, 0, rounded);
    return ptr;
}

float *eq_alloc_floats(size_t count)
{
    size_t bytes;

    if (!eq_size_mul(count, sizeof(float), &bytes))
        return NULL;
    return eq_alloc_aligned(bytes);
}

int eq_grow_floats(float **buf, size_t *capacity, size_t count)
{
    if (count <= *capacity)
        return 1;

    eq_free(*buf);
    *buf = eq_alloc_floats(count);
    *capacity = *buf ? count : 0;
    return *buf != NULL;
}

void eq_free(void *ptr)
{
    free(ptr);
}
