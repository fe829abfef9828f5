/* Along-runs kernels (statistics, apply, backward reduce and apply) for
   float32 and float64. */
#include <stdlib.h>

#include "bnfast.h"
#include "internal.h"

#define BNF_TEMPLATE "runs_tmpl.h"
#include "instantiate.h"
