/* Fused per-column statistics (mean, M2) for float32 and float64. */
#include <stdlib.h>

#include "bnfast.h"
#include "internal.h"

#define T float
#define SUF f32
#include "stats_tmpl.h"
#undef T
#undef SUF

#define T double
#define SUF f64
#include "stats_tmpl.h"
#undef T
#undef SUF
