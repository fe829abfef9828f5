/* Instantiates a kernel template once per dtype.  A .c file defines
   BNF_TEMPLATE as the template's file name and includes this; the template
   writes T for the data type and NAME(f) for the name f_f32 / f_f64. */
#ifndef BNF_TEMPLATE
#error "define BNF_TEMPLATE before including instantiate.h"
#endif

#define BNF_CAT_(a, b) a##_##b
#define BNF_CAT(a, b) BNF_CAT_(a, b)
#define NAME(f) BNF_CAT(f, SUF)

#define T float
#define SUF f32
#include BNF_TEMPLATE
#undef T
#undef SUF

#define T double
#define SUF f64
#include BNF_TEMPLATE
#undef T
#undef SUF

#undef NAME
#undef BNF_CAT
#undef BNF_CAT_
