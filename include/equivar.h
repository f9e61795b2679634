/* libequivar: neural networks that are exactly equivariant to a finite group.
 * The umbrella header; each module also has its own header under equivar/. */
#ifndef EQUIVAR_H
#define EQUIVAR_H

#include "equivar/status.h"
#include "equivar/tensor.h"
#include "equivar/threads.h"
#include "equivar/layer.h"
#include "equivar/loss.h"
#include "equivar/group.h"
#include "equivar/equivarify.h"
#include "equivar/data.h"
#include "equivar/train.h"
#include "equivar/checkpoint.h"

#endif
