/* How each layer kind of this module transforms under its group (internal). */
#ifndef EQ_EQUIVARIFY_QUERY_H
#define EQ_EQUIVARIFY_QUERY_H

#include "equivar/equivarify.h"

/* Each returns 1 and fills the outputs if `layer` is of its kind, else 0.
 * The invariant pool accepts two input actions, so its query reports the
 * output for a given input action (EQ_ACTION_TRIVIAL for BLOCKS, PIXELS for
 * BLOCKS_PIXELS). */
int eq_equivarify_query(const eq_layer *layer, const eq_group **group, eq_action *input_action,
                        eq_action *output_action);
int eq_invariant_pool_query(const eq_layer *layer, const eq_group **group);
int eq_projection_query(const eq_layer *layer);

#endif
