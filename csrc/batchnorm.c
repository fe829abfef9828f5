/* Batch norm entry points (forward train/test, backward) on (n, d) panels,
   for float32 and float64. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bnfast.h"
#include "internal.h"

#define BNF_TEMPLATE "batchnorm_tmpl.h"
#include "instantiate.h"
