/* The internal thread pool that parallel kernels share. */
#ifndef EQUIVAR_THREADS_H
#define EQUIVAR_THREADS_H

#include "equivar/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Sets the number of threads kernels use (1 = no worker threads). The
 * default is the EQ_NUM_THREADS environment variable if set, else the number
 * of online CPUs. Results are bitwise identical for every thread count.
 * Safe to call while other threads run kernels: those run on their calling
 * thread while the pool is rebuilt.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT (count 0 or above 256),
 * EQ_ERR_STATE (called from inside a parallel loop) or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_set_num_threads(int count);

/* Returns the number of threads kernels use. */
int eq_get_num_threads(void);

#ifdef __cplusplus
}
#endif

#endif
