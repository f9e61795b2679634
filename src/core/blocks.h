/* Block-permuted inputs: the convention of the multi-branch layer calls.
 *
 * An input with C channels (or features) split into `branches` equal blocks
 * is shared by `branches` branches. Branch g reads its input block b from
 * block sources[g * branches + b] of the shared input, so each row of the
 * table is a permutation of 0..branches-1. Output sample i * branches + g is
 * the layer applied to branch g's view of input sample i, which is the
 * layout of a batch in which every sample is repeated once per branch. */
#ifndef EQ_CORE_BLOCKS_H
#define EQ_CORE_BLOCKS_H

#include <stddef.h>

#include "equivar/status.h"

/* Checks that branches > 0 and that every row of sources (branches *
 * branches entries) is a permutation of 0..branches-1. `who` prefixes the
 * message. Returns EQ_OK or EQ_ERR_INVALID_ARGUMENT naming the row and the
 * entry. */
eq_status eq_block_sources_check(const char *who, size_t branches, const size_t *sources);

/* Returns 1 if the multi-branch calls run this source table in the Fourier
 * basis of the branch index (conv2d_spectral.c, dense_spectral.c): 2 or 4
 * branches with sources[g * n + b] = (b + g) mod n, and the spectral path
 * not turned off by eq_blocks_set_spectral. */
int eq_block_sources_spectral(size_t branches, const size_t *sources);

/* Turns the spectral path off (enabled == 0) or back on, for tests and
 * benchmarks that compare it with the block path. Not safe while a
 * multi-branch call runs. */
void eq_blocks_set_spectral(int enabled);

#endif
