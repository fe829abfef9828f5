/* Instantiates a kernel template once per dtype.  A .c file defines
   BNF_TEMPLATE as the template's file name and includes this; the template
   writes T for the data type and NAME(f) for the name f_f32 / f_f64.
   RELU_MIN: the largest double v with (T)v == 0, so that the ReLU's mask
   (T)v > 0 reads v > RELU_MIN, a test in double that GCC vectorizes
   (round to nearest: (0, 2^-150] rounds to 0 in float). */
#ifndef BNF_TEMPLATE
#error "define BNF_TEMPLATE before including instantiate.h"
#endif

#define BNF_CAT_(a, b) a##_##b
#define BNF_CAT(a, b) BNF_CAT_(a, b)
#define NAME(f) BNF_CAT(f, SUF)

#define T float
#define SUF f32
#define RELU_MIN 0x1p-150
#include BNF_TEMPLATE
#undef T
#undef SUF
#undef RELU_MIN

#define T double
#define SUF f64
#define RELU_MIN 0.0
#include BNF_TEMPLATE
#undef T
#undef SUF
#undef RELU_MIN

#undef NAME
#undef BNF_CAT
#undef BNF_CAT_
