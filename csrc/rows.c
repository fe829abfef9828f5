/* The across-rows kernels (statistics, apply, backward reduce and apply)
   for float32 and float64, and the SIMD level report. */
#include <stdlib.h>

#include "bnfast.h"
#include "internal.h"

#define BNF_TEMPLATE "rows_tmpl.h"
#include "instantiate.h"

const char *bnf_simd_level(void)
{
#if BNF_HAVE_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4"))
        return "x86-64-v4";
    if (__builtin_cpu_supports("x86-64-v3"))
        return "x86-64-v3";
#endif
    return "baseline";
}
