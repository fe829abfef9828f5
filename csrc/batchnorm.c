/* Batch norm entry points (forward train/test, backward) on (n, d) panels,
   for float32 and float64. */
#include <math.h>
#include <stdlib.h>

#include "bnfast.h"
#include "internal.h"

#define T float
#define SUF f32
#include "batchnorm_tmpl.h"
#undef T
#undef SUF

#define T double
#define SUF f64
#include "batchnorm_tmpl.h"
#undef T
#undef SUF
