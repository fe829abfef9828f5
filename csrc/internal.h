/* Private helpers shared by the kernel files: dispatch attribute, blocking
   parameters, Chan's merge. */
#ifndef BNFAST_INTERNAL_H
#define BNFAST_INTERNAL_H

#include <math.h>
#include <stddef.h>

/*
 * Runtime SIMD dispatch.  The build is portable (baseline x86-64), and each
 * hot kernel is also compiled for x86-64-v3 (AVX2, FMA) and x86-64-v4
 * (AVX-512); the loader picks one through an ifunc on first call.  Define
 * BNF_NO_DISPATCH (or build with a non-GCC compiler / non-x86-64 target) to
 * get the portable kernels only.  Floating-point contraction is disabled in
 * setup.py, so every clone computes bitwise the same results.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) &&       \
    defined(__linux__) && !defined(BNF_NO_DISPATCH)
#define BNF_DISPATCH                                                          \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3",         \
                                 "default")))
#define BNF_HAVE_DISPATCH 1
#else
#define BNF_DISPATCH
#define BNF_HAVE_DISPATCH 0
#endif

/* Column tile: reductions keep a few double accumulators per column of the
   tile; this bounds them to cache whatever the width of the data. */
#define BNF_TILE_COLS 2048
/* Row block: the rows of a tile that are reduced together (the two-pass
   statistics read them twice, the second time from cache). */
#define BNF_BLOCK_BYTES (64 * 1024)

/* Summation levels of the backward reduce: blocks of this many rows, and
   groups of this many blocks. */
#define BNF_SUM_ROWS 128

static inline ptrdiff_t bnf_min(ptrdiff_t a, ptrdiff_t b) { return a < b ? a : b; }

static inline ptrdiff_t bnf_block_rows(ptrdiff_t cols, size_t itemsize)
{
    ptrdiff_t r = (ptrdiff_t)(BNF_BLOCK_BYTES / ((size_t)cols * itemsize));
    return r > 0 ? r : 1;
}

/*
 * Chan's merge of a block (nb, mb, qb) into a running (na, *mean, *m2):
 * count, mean and M2 = sum of squared deviations.  Exact for constant data
 * (delta == 0).  A non-finite merged mean (an Inf in the data) is recomputed
 * as the weighted average, so +Inf columns keep mean +Inf as np.mean gives.
 */
static inline void bnf_chan_merge(double na, double nb, double mb, double qb,
                                  double *mean, double *m2)
{
    double n = na + nb;
    double wb = nb / n;
    double delta = mb - *mean;
    double mu = *mean + delta * wb;
    if (!isfinite(mu))
        mu = *mean * (na / n) + mb * wb;
    *m2 += qb + delta * delta * (na * wb);
    *mean = mu;
}

#endif /* BNFAST_INTERNAL_H */
