/* The internal parallel loop over the shared thread pool (threads.c).
 *
 * Kernels split independent outputs into `count` items and call
 * eq_parallel_for. No result may depend on which thread runs which item,
 * so that every public result stays bitwise identical for any thread count. */
#ifndef EQ_CORE_PARALLEL_H
#define EQ_CORE_PARALLEL_H

#include <stddef.h>

/* Upper bound of eq_set_num_threads; EQ_NUM_THREADS above it is invalid. */
#define EQ_MAX_THREADS 256

/* Processes items [begin, end). Called any number of times per thread with
 * disjoint ranges that together cover [0, count) exactly once. */
typedef void (*eq_parallel_fn)(void *ctx, size_t begin, size_t end);

/* Runs fn over [0, count) on the calling thread and up to
 * eq_get_num_threads() - 1 pool workers, and returns when every item is done.
 *
 * `grain` is the minimum number of items worth waking one more thread for
 * (0 is read as 1): count <= grain runs inline in one call fn(ctx, 0, count).
 * Items are handed out in chunks from a shared counter, so a thread that the
 * OS deschedules does not hold up the others.
 *
 * Runs inline, without waking anyone, when called from inside fn (nested
 * calls), when the pool has one thread, or when another thread is already
 * running a parallel loop on the pool. Never fails: if the workers cannot be
 * started, the calling thread does all the work. fn must not fail either; a
 * kernel that can fail records its error in ctx. */
void eq_parallel_for(size_t count, size_t grain, eq_parallel_fn fn, void *ctx);

/* Parses an EQ_NUM_THREADS value: a decimal integer in 1..EQ_MAX_THREADS,
 * optionally surrounded by spaces or tabs. Returns 1 and stores the count,
 * or returns 0 and leaves *count unchanged for anything else ("", "0", "-2",
 * "4x", "1e3", an overflowing number). */
int eq_parse_num_threads(const char *text, int *count);

/* Returns the pool size for an EQ_NUM_THREADS value `text` (NULL if unset):
 * the parsed count if valid, else the number of online CPUs, clamped to
 * 1..EQ_MAX_THREADS. */
int eq_default_num_threads(const char *text);

#endif
