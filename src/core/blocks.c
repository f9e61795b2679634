/* Validation of the block source tables of the multi-branch layer calls,
 * and the choice between the block and the spectral path. */
#include "core/blocks.h"

#include <stdlib.h>

#include "core/error.h"

eq_status eq_block_sources_check(const char *who, size_t branches, const size_t *sources)
{
    if (branches == 0 || !sources)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "%s: %s", who,
                        branches == 0 ? "branch count is 0, expected at least 1" : "block source table is NULL");

    /* One flag per block marks the blocks a row has named so far. The
     * flags of up to 256 branches live on the stack, so that the check,
     * which runs on every multi-branch forward, allocates nothing. */
    unsigned char stack_flags[256];
    unsigned char *seen = stack_flags;
    if (branches > sizeof stack_flags) {
        seen = malloc(branches);
        if (!seen)
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu flags to check the source table", who,
                            branches);
    }

    eq_status status = EQ_OK;
    for (size_t g = 0; g < branches && status == EQ_OK; g++) {
        for (size_t b = 0; b < branches; b++)
            seen[b] = 0;
        for (size_t b = 0; b < branches; b++) {
            size_t source = sources[g * branches + b];
            if (source >= branches || seen[source]) {
                status = eq_error(EQ_ERR_INVALID_ARGUMENT,
                                  "%s: source table row %zu is not a permutation of 0..%zu: entry %zu is %zu",
                                  who, g, branches - 1, b, source);
                break;
            }
            seen[source] = 1;
        }
    }
    if (seen != stack_flags)
        free(seen);
    return status;
}

/* The spectral path is on unless a test or benchmark turns it off. It is
 * read without a lock, so switching during a multi-branch call is not supported. */
static int spectral_enabled = 1;

void eq_blocks_set_spectral(int enabled)
{
    spectral_enabled = enabled != 0;
}

int eq_block_sources_spectral(size_t branches, const size_t *sources)
{
    if (!spectral_enabled || (branches != 2 && branches != 4))
        return 0;
    for (size_t g = 0; g < branches; g++)
        for (size_t b = 0; b < branches; b++)
            if (sources[g * branches + b] != (b + g) % branches)
                return 0;
    return 1;
}
