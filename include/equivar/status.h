/* Status codes and the thread-local error message of libequivar. */
#ifndef EQUIVAR_STATUS_H
#define EQUIVAR_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Every fallible function returns one of these; EQ_OK is 0. */
typedef enum eq_status {
    EQ_OK = 0,
    EQ_ERR_INVALID_ARGUMENT, /* NULL pointer, zero size, value out of range */
    EQ_ERR_SHAPE,            /* tensor shapes that do not fit together */
    EQ_ERR_OUT_OF_MEMORY,    /* allocation failed or a size overflowed */
    EQ_ERR_IO,               /* open, read, write or rename failed */
    EQ_ERR_FORMAT,           /* bad magic, truncated or corrupt file */
    EQ_ERR_NUMERIC,          /* NaN or infinity where a finite value is required */
    EQ_ERR_GROUP,            /* a group or action that breaks the group axioms */
    EQ_ERR_STATE             /* call out of order, e.g. backward before forward */
} eq_status;

/* Returns a static, never-NULL name for a status, e.g. "EQ_ERR_SHAPE". */
const char *eq_status_string(eq_status status);

/* Returns the message of the last error set on this thread, or "" if none.
 * The message names the file, value or shape and what was expected.
 * The pointer stays valid until the next failing call on the same thread. */
const char *eq_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
