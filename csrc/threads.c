/* The thread count of the kernels (OpenMP builds) and the rule that keeps
   small jobs on one thread. */
#include "bnfast.h"
#include "internal.h"

static int bnf_num_threads = 1;

void bnf_set_num_threads(int n) { bnf_num_threads = n < 1 ? 1 : n; }

int bnf_get_num_threads(void)
{
#if BNF_HAVE_OPENMP
    return bnf_num_threads;
#else
    return 1;
#endif
}

int bnf_have_openmp(void) { return BNF_HAVE_OPENMP; }

int bnf_threads_for(ptrdiff_t work)
{
    int t = bnf_get_num_threads();
    if (t <= 1 || work < BNF_PARALLEL_MIN)
        return 1;
    ptrdiff_t most = work / (BNF_PARALLEL_MIN / 2);
    return most < t ? (int)most : t;
}
