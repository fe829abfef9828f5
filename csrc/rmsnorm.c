/* RMS norm kernels (fused per row: forward, backward) for float32 and
   float64. */
#include <math.h>
#include <stdlib.h>

#include "bnfast.h"
#include "internal.h"

#define BNF_TEMPLATE "rmsnorm_tmpl.h"
#include "instantiate.h"
