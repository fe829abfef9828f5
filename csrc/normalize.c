/* Apply passes (scale/shift) and the backward reduce and apply passes, for
   float32 and float64. */
#include <stdlib.h>

#include "bnfast.h"
#include "internal.h"

#define BNF_TEMPLATE "normalize_tmpl.h"
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
