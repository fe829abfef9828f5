/* Rescue kernels for channels at the extremes of the floating-point range
   (overflowing or underflowing squares), for float32 and float64. */
#include <math.h>
#include <stddef.h>

#include "bnfast.h"
#include "internal.h"

#define BNF_TEMPLATE "extremes_tmpl.h"
#include "instantiate.h"
