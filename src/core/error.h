/* Internal helpers to set the thread-local error message. */
#ifndef EQ_CORE_ERROR_H
#define EQ_CORE_ERROR_H

#include <stddef.h>

#include "equivar/status.h"
#include "equivar/tensor.h"

#if defined(__GNUC__)
#define EQ_PRINTF(fmt_index, args_index) __attribute__((format(printf, fmt_index, args_index)))
#else
#define EQ_PRINTF(fmt_index, args_index)
#endif

/* Sets the message returned by eq_last_error and returns `status`, so a
 * failing path reads `return eq_error(EQ_ERR_SHAPE, "...", ...);`. */
eq_status eq_error(eq_status status, const char *format, ...) EQ_PRINTF(2, 3);

/* Formats a shape as "(N, C, H, W)" into buf; returns buf. Four 20-digit
 * size_t values and the punctuation need 89 bytes. */
#define EQ_SHAPE_STR_SIZE 96
char *eq_shape_str(eq_shape shape, char buf[EQ_SHAPE_STR_SIZE]);

/* Multiplies sizes with overflow detection: returns 0 and leaves *out
 * unchanged on overflow, else stores a * b and returns 1. */
int eq_size_mul(size_t a, size_t b, size_t *out);

/* Allocates `count` floats, 64-byte aligned and zero-filled; NULL on failure
 * or overflow. Free with eq_free. */
float *eq_alloc_floats(size_t count);

/* Makes *buf at least `count` floats long, reusing it when *capacity is
 * large enough. A new buffer replaces the old one, whose contents are
 * dropped. Returns 1, or 0 with *buf NULL and *capacity 0 when the
 * allocation fails. */
int eq_grow_floats(float **buf, size_t *capacity, size_t count);
void *eq_alloc_aligned(size_t bytes);
void eq_free(void *ptr);

#endif
