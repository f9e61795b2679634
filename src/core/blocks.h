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

#endif
