/* The across-rows kernels (statistics, apply, backward reduce and apply),
   per dtype. */
#include <stdlib.h>

#include "bnfast.h"
#include "internal.h"

#define BNF_TEMPLATE "rows_tmpl.h"
#include "instantiate.h"
