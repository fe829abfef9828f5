/* Fused per-column statistics (mean, M2) for float32 and float64. */
#include <stdlib.h>

#include "bnfast.h"
#include "internal.h"

#define BNF_TEMPLATE "stats_tmpl.h"
#include "instantiate.h"
