/* Rescue kernels for channels at the extremes of the floating-point range
   (overflowing or underflowing squares), for float32 and float64. */
#include <math.h>
#include <stddef.h>

#include "bnfast.h"
#include "internal.h"

/* Whether any of n channels is suspect (bnf_suspect): one branch-free
   loop that vectorizes (scalar, it cost 0.3-0.6 us a call on a few hundred
   channels, 6% of a 64x256 float32 forward-train). */
int bnf_any_suspect(const double *BNF_RESTRICT mean,
                    const double *BNF_RESTRICT var, ptrdiff_t n, double eps,
                    double tiny)
{
    long any = 0;
    for (ptrdiff_t j = 0; j < n; j++)
        any |= (long)bnf_suspect(mean[j], var[j], eps, tiny);
    return any != 0;
}

#define BNF_TEMPLATE "extremes_tmpl.h"
#include "instantiate.h"
