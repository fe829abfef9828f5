/* Group norm entry points (forward, backward) for float32 and float64. */
#include <math.h>
#include <stdlib.h>

#include "bnfast.h"
#include "internal.h"

#define BNF_TEMPLATE "groupnorm_tmpl.h"
#include "instantiate.h"
