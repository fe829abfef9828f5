/* Private helpers shared by the kernel files: SIMD level names, blocking
   parameters, Chan's merge, the per-thread split, and the declarations of
   the building blocks (across rows: rows_*, along runs: runs_*) that the
   public entry points of bnfast.h compose. */
#ifndef BNFAST_INTERNAL_H
#define BNFAST_INTERNAL_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "bnfast.h"

/*
 * Runtime SIMD dispatch.  The kernel files (every .c file here but
 * dispatch.c, threads.c and bench_copy.c) are compiled once per SIMD level
 * that the build offers (setup.py: baseline, and on x86-64 x86-64-v3 (AVX2,
 * FMA) and x86-64-v4 (AVX-512), each with its own compiler flags), with
 * BNF_ISA set to the level's suffix (base, v3, v4): every external name
 * they define carries it (NAME(f) is f_<dtype>_<isa>, BNF_ISA_FN(f) is
 * f_<isa>), so the levels' copies live side by side in one module.  Each
 * level's table.c fills a table of its entry points (bnf_kernels); at load
 * dispatch.c reads the CPU's features (cpuid) and picks the best level the
 * build has and the CPU runs.  No ifunc, no target_clones: any C99
 * compiler (GCC >= 8, clang, MSVC) builds it.  Floating-point contraction
 * is off at every level (setup.py), so every level computes bitwise the
 * same results (tools/simd_identity.py, tests/test_simd_levels.py).
 */
#ifndef BNF_ISA
#define BNF_ISA base
#endif
#define BNF_CAT_(a, b) a##_##b
#define BNF_CAT(a, b) BNF_CAT_(a, b)
#define BNF_ISA_FN(f) BNF_CAT(f, BNF_ISA)

/* C99's restrict, which MSVC spells __restrict (it knows restrict only
   with /std:c11). */
#if defined(_MSC_VER) && !defined(__clang__)
#define BNF_RESTRICT __restrict
#else
#define BNF_RESTRICT restrict
#endif

/* Small helpers are always inlined into their callers: the loops that
   call them vectorize only as one function (measured under the earlier
   target_clones dispatch, where an out-of-line helper ran baseline code;
   kept for the loops' sake). */
#if defined(__GNUC__)
#define BNF_INLINE static inline __attribute__((always_inline))
#else
#define BNF_INLINE static inline
#endif

/* Kept out of line: the layer and RMS norm row loops, which their one
   caller would inline, and GCC then compiles worse (RMS norm's forward:
   12% more instructions executed inlined, callgrind; 1.15-1.18x the time
   of the target_clones build, which could not inline them). */
#if defined(__GNUC__)
#define BNF_NOINLINE __attribute__((noinline))
#else
#define BNF_NOINLINE
#endif

/* Put before a lane loop (a short constant-trip loop over independent
   accumulators): GCC would unroll it completely before the loop vectorizer
   runs, and its SLP pass then leaves the float -> double conversions
   scalar (measured: 5x slower along-runs reductions in float32). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define BNF_LANE_LOOP _Pragma("GCC unroll 1")
#else
#define BNF_LANE_LOOP
#endif

/* OpenMP: jobs of fewer bytes than bnf_get_parallel_min() (default
   BNF_PARALLEL_MIN bytes) stay on one thread (a parallel region costs
   microseconds); larger ones get at most one thread per half of it.
   Measured (Zen 3, 2 threads against 1, batch norm (N, 1024)): at 128-512
   KiB 0.6-1.1x, at 1 MiB 1.3-1.5x, at 8-16 MiB 1.7-2.1x; the earlier
   32768 elements (128 KiB of float32) made small calls 1.5x slower. */
#if defined(BNF_OPENMP) && defined(_OPENMP)
#define BNF_HAVE_OPENMP 1
#else
#define BNF_HAVE_OPENMP 0
#endif
#define BNF_PARALLEL_MIN ((ptrdiff_t)1 << 20)

/* The entry points of one dtype, typed, as the kernel files define them
   (NAME(f): f_<dtype>_<level>) and table.c puts them in bnf_kernels
   (bnfast.h, where each is described). */
#define BNF_DECLARE_API(T, SUF)                                               \
    int bn_forward_train_##SUF(const bnf_panel *p, const bnf_params *q,       \
                               const T *x, T *y, bnf_results *r);             \
    int bn_stats_##SUF(const bnf_panel *p, const bnf_params *q, const T *x,   \
                       bnf_results *r);                                       \
    int bn_apply_##SUF(const bnf_panel *p, const bnf_params *q, const T *x,   \
                       T *y);                                                 \
    int bn_forward_test_##SUF(const bnf_panel *p, const bnf_params *q,        \
                              const T *x, T *y);                              \
    int bn_backward_##SUF(const bnf_panel *p, const bnf_params *q,            \
                          const T *x, const T *dy, T *dx, bnf_results *r);    \
    int bn_backward_reduce_##SUF(const bnf_panel *p, const bnf_params *q,     \
                                 const T *x, const T *dy, bnf_results *r);    \
    int bn_backward_apply_##SUF(const bnf_panel *p, const bnf_params *q,      \
                                const T *x, const T *dy, T *dx,               \
                                bnf_results *r);                              \
    int bn_residual_gate_##SUF(const bnf_panel *p, const bnf_params *q,       \
                               const T *x, const T *dy, T *g,                 \
                               bnf_results *r);                               \
    int ln_forward_##SUF(const bnf_panel *p, const bnf_params *q, const T *x, \
                         T *y, bnf_results *r);                               \
    int ln_backward_##SUF(const bnf_panel *p, const bnf_params *q,            \
                          const T *x, const T *dy, T *dx, bnf_results *r);    \
    int rms_forward_##SUF(const bnf_panel *p, const bnf_params *q,            \
                          const T *x, T *y, bnf_results *r);                  \
    int rms_backward_##SUF(const bnf_panel *p, const bnf_params *q,           \
                           const T *x, const T *dy, T *dx, bnf_results *r);   \
    int gn_forward_##SUF(const bnf_panel *p, const bnf_params *q, const T *x, \
                         T *y, bnf_results *r);                               \
    int gn_backward_##SUF(const bnf_panel *p, const bnf_params *q,            \
                          const T *x, const T *dy, T *dx, bnf_results *r);    \
    int gnl_forward_##SUF(const bnf_panel *p, const bnf_params *q,            \
                          const T *x, T *y, bnf_results *r);                  \
    int gnl_backward_##SUF(const bnf_panel *p, const bnf_params *q,           \
                           const T *x, const T *dy, T *dx, bnf_results *r);

#define BNF_DECLARE_API_(T, SUF) BNF_DECLARE_API(T, SUF)
BNF_DECLARE_API_(float, BNF_ISA_FN(f32))
BNF_DECLARE_API_(double, BNF_ISA_FN(f64))
BNF_DECLARE_API_(uint16_t, BNF_ISA_FN(f16))
BNF_DECLARE_API_(uint16_t, BNF_ISA_FN(bf16))
#undef BNF_DECLARE_API_
#undef BNF_DECLARE_API

/* This level's table, one row per dtype (table.c). */
extern const bnf_kernels BNF_ISA_FN(bnf_table)[BNF_NDTYPES];

/* Threads to use for a job over `bytes` bytes of data (threads.c). */
int bnf_threads_for(ptrdiff_t bytes);

/* Part t of T of the range [0, n): [*lo, *hi), split at multiples of
   `align` (but the last part ends at n).  Deterministic: the same parts for
   the same (n, T). */
BNF_INLINE void bnf_part(ptrdiff_t n, int T, int t, ptrdiff_t align,
                         ptrdiff_t *lo, ptrdiff_t *hi)
{
    ptrdiff_t a = n * t / T, b = n * (t + 1) / T;
    *lo = t == 0 ? 0 : a - a % align;
    *hi = t == T - 1 ? n : b - b % align;
}

/* Column tile: reductions keep a few double accumulators per column of the
   tile; this bounds them to cache whatever the width of the data. */
#ifndef BNF_TILE_COLS
#define BNF_TILE_COLS 2048
#endif
/* Row block: the rows of a tile that are summed together before a Chan
   merge (the first block of a tile is read twice, the second time from
   cache). */
#ifndef BNF_BLOCK_BYTES
#define BNF_BLOCK_BYTES (256 * 1024)
#endif

/* Along runs: elements summed as one block (two-pass within it, from L1),
   and the number of independent lane accumulators of a sum along a run. */
#ifndef BNF_RUN_BLOCK
#define BNF_RUN_BLOCK 4096
#endif
/* lane accumulators along runs: two 64-byte vectors of the compute type
   (in C source, so the order of the sums is the same at every SIMD
   level) */
#define BNF_LANES_OF(C) ((int)(128 / sizeof(C)))

/* Rows summed on their own before being added to a longer sum (the
   statistics' blocks, the backward reduce's totals): a cheap cascade that
   keeps the rounding error of long columns near pairwise summation's. */
#define BNF_SUM_ROWS 128

/* The ReLU's gradient gate: g * 1 where the forward's output v was > lo,
   else g * 0 (a zero of g's sign, NaN for a NaN or infinite g: as the
   reference's dout * (out > 0)).  GCC folds it into a select whose arm
   multiplies, which it if-converts (and so vectorizes) only with
   -fno-trapping-math (setup.py): without it the fused-ReLU backward was a
   scalar loop with a branch, 3-60x slower than the plain backward. */
#define BNF_GATE(g, v, lo) ((g) * (C)((v) > (lo)))

BNF_INLINE ptrdiff_t bnf_min(ptrdiff_t a, ptrdiff_t b)
{
    return a < b ? a : b;
}

BNF_INLINE ptrdiff_t bnf_block_rows(ptrdiff_t cols, size_t itemsize)
{
    ptrdiff_t r = (ptrdiff_t)(BNF_BLOCK_BYTES / ((size_t)cols * itemsize));
    return r > 0 ? r : 1;
}

/* isfinite() that vectorizes: false for NaN and +-Inf. */
BNF_INLINE int bnf_isfinite(double v) { return fabs(v) <= DBL_MAX; }

/* a + b, and in *err its rounding error (Knuth's TwoSum: a + b == sum +
   *err exactly; 0 where the sum is not finite).  The compensated sums of
   the float64 kernels and the threads' merge of means. */
BNF_INLINE double bnf_two_sum(double a, double b, double *err)
{
    double s = a + b, bb = s - a;
    double e = (a - (s - bb)) + (b - bb);
    *err = bnf_isfinite(s) ? e : 0.0;
    return s;
}

/*
 * Chan's merge of c blocks (nb, mb[j], qb[j]) into running (na, mean[j],
 * m2[j]): count, mean and M2 = sum of squared deviations.  Exact for
 * constant data (delta == 0).  A non-finite merged mean (an Inf in the
 * data) is recomputed as the weighted average, so a +Inf column keeps mean
 * +Inf as np.mean gives.  Branch-free, so that it vectorizes.
 */
BNF_INLINE void bnf_chan_merge(ptrdiff_t c, double na, double nb,
                               const double *BNF_RESTRICT mb,
                               const double *BNF_RESTRICT qb,
                               double *BNF_RESTRICT mean,
                               double *BNF_RESTRICT m2)
{
    double n = na + nb;
    double wa = na / n, wb = nb / n, wab = na * wb;
    for (ptrdiff_t j = 0; j < c; j++) {
        double delta = mb[j] - mean[j];
        double mu = mean[j] + delta * wb;
        double avg = mean[j] * wa + mb[j] * wb;
        m2[j] += qb[j] + delta * delta * wab;
        mean[j] = bnf_isfinite(mu) ? mu : avg;
    }
}

/*
 * The building blocks, per dtype (SUF), T the storage type and C the
 * compute type (see instantiate.h).
 *
 * Per-channel coefficients reach them as one struct of arrays in C,
 * rounded once per call from the double quantities: mean = mh + ml (ml
 * NULL when C is double), y = (x - mh) * a + b for the apply passes (b =
 * beta - ml * a: the low part folded into the shift; with relu the
 * backward's mask is the same expression > 0), and for the backward's
 * apply dx = a * g + k_xhat * ((x - mean) * is) + k_0, g = dy masked by
 * relu with the forward's a and b (the product (x - mean) * is is the
 * normalized x, so no coefficient under- or overflows C where a and is
 * do not); k_xhat NULL: dx = a * g (the backward through frozen
 * statistics, bnf_params.frozen).  Unused arrays are NULL.
 *
 * across rows: an (m, c) panel, element (i, j) at x[i*ldx + j]; one result
 * per column.  along runs: n2 channels of n1 contiguous runs of len
 * elements, run i of channel j at x + i*s1 + j*s2; one result per channel.
 */
#define BNF_DECLARE_KERNELS(T, C, SUF)                                        \
    typedef struct {                                                          \
        const C *mh, *ml, *a, *b, *is, *k_xhat, *k_0;                         \
    } bnf_coefs_##SUF;                                                        \
    /* the coefficients of channels j0.. */                                   \
    BNF_INLINE bnf_coefs_##SUF bnf_coefs_at_##SUF(bnf_coefs_##SUF cf,         \
                                                  ptrdiff_t j0)               \
    {                                                                         \
        bnf_coefs_##SUF r;                                                    \
        r.mh = cf.mh ? cf.mh + j0 : NULL;                                     \
        r.ml = cf.ml ? cf.ml + j0 : NULL;                                     \
        r.a = cf.a ? cf.a + j0 : NULL;                                        \
        r.b = cf.b ? cf.b + j0 : NULL;                                        \
        r.is = cf.is ? cf.is + j0 : NULL;                                     \
        r.k_xhat = cf.k_xhat ? cf.k_xhat + j0 : NULL;                         \
        r.k_0 = cf.k_0 ? cf.k_0 + j0 : NULL;                                  \
        return r;                                                             \
    }                                                                         \
    /* column / channel mean and M2 (sum of squared deviations), fused in     \
       one pass over memory; mean_lo (NULL: not wanted) gets the rounding     \
       error of each mean, mean + mean_lo to about twice double precision     \
       (the threads' partial means, merged without the offset's rounding) */  \
    int rows_stats_##SUF(const T *x, ptrdiff_t m, ptrdiff_t c, ptrdiff_t ldx, \
                         double *mean, double *m2, double *mean_lo);          \
    void runs_stats_##SUF(const T *x, ptrdiff_t n1, ptrdiff_t s1,             \
                          ptrdiff_t n2, ptrdiff_t s2, ptrdiff_t len,          \
                          double *mean, double *m2, double *mean_lo);         \
    /* y = (x - mean) * a + b, then max(y, 0) with relu */                    \
    void rows_apply_##SUF(const T *x, ptrdiff_t m, ptrdiff_t c,               \
                          ptrdiff_t ldx, bnf_coefs_##SUF cf, T *y,            \
                          ptrdiff_t ldy, int relu);                           \
    void runs_apply_##SUF(const T *x, ptrdiff_t n1, ptrdiff_t s1,             \
                          ptrdiff_t n2, ptrdiff_t s2, ptrdiff_t len,          \
                          bnf_coefs_##SUF cf, T *y, ptrdiff_t t1,             \
                          ptrdiff_t t2, int relu);                            \
    /* the fused residual: y = (x - mean) * a + b + z (then max(., 0) with    \
       relu; z NULL: z is y, in place); and the backward's gate, g = dy       \
       where that was > 0, else 0 */                                          \
    void rows_apply_res_##SUF(                                                \
        const T *x, ptrdiff_t m, ptrdiff_t c, ptrdiff_t ldx, const T *z,      \
        ptrdiff_t ldz, bnf_coefs_##SUF cf, T *y, ptrdiff_t ldy, int relu);    \
    void runs_apply_res_##SUF(                                                \
        const T *x, ptrdiff_t n1, ptrdiff_t s1, ptrdiff_t n2, ptrdiff_t s2,   \
        ptrdiff_t len, const T *z, ptrdiff_t z1, ptrdiff_t z2,                \
        bnf_coefs_##SUF cf, T *y, ptrdiff_t t1, ptrdiff_t t2, int relu);      \
    int rows_bwd_reduce_res_##SUF(                                            \
        const T *dy, ptrdiff_t lddy, const T *x, ptrdiff_t ldx, const T *z,   \
        ptrdiff_t ldz, ptrdiff_t m, ptrdiff_t c, bnf_coefs_##SUF cf, T *gw,   \
        ptrdiff_t ldg, double *sum_dy, double *sum_dyxmu);                    \
    void rows_gate_res_##SUF(const T *dy, ptrdiff_t lddy, const T *x,         \
                             ptrdiff_t ldx, const T *z, ptrdiff_t ldz,        \
                             ptrdiff_t m, ptrdiff_t c, bnf_coefs_##SUF cf,    \
                             T *g, ptrdiff_t ldg);                            \
    void runs_gate_res_##SUF(                                                 \
        const T *dy, ptrdiff_t d1, ptrdiff_t d2, const T *x, ptrdiff_t s1,    \
        ptrdiff_t s2, const T *z, ptrdiff_t z1, ptrdiff_t z2, ptrdiff_t n1,   \
        ptrdiff_t n2, ptrdiff_t len, bnf_coefs_##SUF cf, T *g, ptrdiff_t t1,  \
        ptrdiff_t t2);                                                        \
    /* sums of g and g * (x - mean), g = dy (masked with relu) */             \
    int rows_bwd_reduce_##SUF(const T *dy, ptrdiff_t lddy, const T *x,        \
                              ptrdiff_t ldx, ptrdiff_t m, ptrdiff_t c,        \
                              bnf_coefs_##SUF cf, int relu, double *sum_dy,   \
                              double *sum_dyxmu);                             \
    void runs_bwd_reduce_##SUF(                                               \
        const T *dy, ptrdiff_t d1, ptrdiff_t d2, const T *x, ptrdiff_t s1,    \
        ptrdiff_t s2, ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,              \
        bnf_coefs_##SUF cf, int relu, double *sum_dy, double *sum_dyxmu);     \
    /* dx = a * g + k_xhat * (x - mean) * is + k_0; a * g alone when          \
       k_xhat is NULL (frozen statistics: is, k_0 not read) */                \
    void rows_bwd_apply_##SUF(                                                \
        const T *dy, ptrdiff_t lddy, const T *x, ptrdiff_t ldx, ptrdiff_t m,  \
        ptrdiff_t c, bnf_coefs_##SUF cf, int relu, T *dx, ptrdiff_t lddx);    \
    void runs_bwd_apply_##SUF(                                                \
        const T *dy, ptrdiff_t d1, ptrdiff_t d2, const T *x, ptrdiff_t s1,    \
        ptrdiff_t s2, ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,              \
        bnf_coefs_##SUF cf, int relu, T *dx, ptrdiff_t t1, ptrdiff_t t2);

/* (SUF expanded first: the names carry the level, BNF_ISA_FN) */
#define BNF_DECLARE_KERNELS_(T, C, SUF) BNF_DECLARE_KERNELS(T, C, SUF)
BNF_DECLARE_KERNELS_(float, float, BNF_ISA_FN(f32))
BNF_DECLARE_KERNELS_(double, double, BNF_ISA_FN(f64))
BNF_DECLARE_KERNELS_(uint16_t, float, BNF_ISA_FN(f16))
BNF_DECLARE_KERNELS_(uint16_t, float, BNF_ISA_FN(bf16))
#undef BNF_DECLARE_KERNELS_
#undef BNF_DECLARE_KERNELS

/*
 * The extremes of the range (extremes.c).  The fast kernels square
 * deviations in C unscaled; the entry points check each channel's results
 * with bnf_suspect and recompute a suspect channel in double, scaled by a
 * power of two (see extremes_tmpl.h).  Suspect: a mean or variance that
 * is not finite (squares that overflowed, or NaN/Inf data, which the
 * rescue tells apart), or a variance of at most tiny (squares that may
 * have underflowed C) with an eps as small.  tiny: BNF_TINY_VAR(C).
 * (Layer norm's forward tells the same from the row's mean and 1/std
 * after its row loop: ln_rescue_rows.)
 */
#define BNF_TINY_VAR(C) (sizeof(C) < sizeof(double) ? 0x1p-96 : 0x1p-960)

BNF_INLINE int bnf_suspect(double mean, double var, double eps, double tiny)
{
    /* branch-free (the loops over channels vectorize) */
    return !(bnf_isfinite(mean) & bnf_isfinite(var)) |
           ((var <= tiny) & (eps <= tiny));
}

#define bnf_any_suspect BNF_ISA_FN(bnf_any_suspect)
int bnf_any_suspect(const double *BNF_RESTRICT mean,
                    const double *BNF_RESTRICT var, ptrdiff_t n, double eps,
                    double tiny);

/* gamma and beta as read per channel: NULL (affine-free, bnf_params)
   means gamma = 1, beta = 0 */
#define BNF_GAMMA(g, j) ((g) != NULL ? (g)[j] : 1.0)
#define BNF_BETA(b, j) ((b) != NULL ? (b)[j] : 0.0)

/* the rare branch, out of the hot path */
#if defined(__GNUC__)
#define BNF_RARELY(c) __builtin_expect(!!(c), 0)
#else
#define BNF_RARELY(c) (c)
#endif

#define BNF_DECLARE_RESCUE(T, C, SUF)                                         \
    /* the channel n1 runs of len elements, run i at x + i*s1: mean, var      \
       and 1/sqrt(var + eps); 0 (nothing written) for NaN/Inf data */         \
    int rescue_moments_##SUF(const T *x, ptrdiff_t n1, ptrdiff_t s1,          \
                             ptrdiff_t len, double eps, double *mean,         \
                             double *var, double *invstd);                    \
    /* sum g and sum g * (x - mean) * is, g = dy (* w[k]) (masked by the      \
       forward's relu with cf non-NULL); 0 (nothing written) for NaN/Inf      \
       data or is not finite and positive */                                  \
    int rescue_bwd_sums_##SUF(                                                \
        const T *dy, ptrdiff_t d1, const T *x, ptrdiff_t s1, ptrdiff_t n1,    \
        ptrdiff_t len, double mean, double is, const C *w,                    \
        const bnf_coefs_##SUF *cf, double *sum_g, double *sum_gxhat);         \
    /* RMS norm: one row's mean of squares and 1/sqrt(ms + eps); 0            \
       (nothing written) for NaN/Inf data */                                  \
    int rescue_meansq_##SUF(const T *x, ptrdiff_t len, double eps,            \
                            double *ms, double *invrms);

#define BNF_DECLARE_RESCUE_(T, C, SUF) BNF_DECLARE_RESCUE(T, C, SUF)
BNF_DECLARE_RESCUE_(float, float, BNF_ISA_FN(f32))
BNF_DECLARE_RESCUE_(double, double, BNF_ISA_FN(f64))
BNF_DECLARE_RESCUE_(uint16_t, float, BNF_ISA_FN(f16))
BNF_DECLARE_RESCUE_(uint16_t, float, BNF_ISA_FN(bf16))
#undef BNF_DECLARE_RESCUE_
#undef BNF_DECLARE_RESCUE

/*
 * The per-thread split and merge, the one place where the entry points
 * meet OpenMP.  A job over the range [0, n) (rows, runs, samples or
 * channels) runs on nt threads, thread t on part t of bnf_part(n, nt, t,
 * align): task(ctx, lo, hi, part) with part the thread's own `per`
 * doubles of scratch (NULL when per == 0), booked once for the call.  With
 * nt <= 1 the task runs once on [0, n), on the calling thread.
 *
 * A task returns BNF_OK or an error code (negative); bnf_run returns the
 * smallest (an OpenMP min reduction: no flag written by several threads).
 *
 * merge, on success: the first k (<= 2) arrays of m doubles of each
 * thread's scratch are its partial results, folded into out[0..k-1] in
 * thread order, so that the results are bitwise reproducible for a given
 * thread count:
 * - BNF_MERGE_SUMS: out = 0 + part_0 + part_1 + ...;
 * - BNF_MERGE_MOMENTS: (out[0], out[1]) = (mean, M2) of the parts' (mean,
 *   M2) pairs by Chan's formula, part t counting (hi - lo) * weight
 *   values; with k == 3 a third array holds each mean's low part (its
 *   rounding error), so that the differences of the means keep no
 *   rounding at the scale of the means (an offset of 1e4 times the
 *   spread: before, 3-10x the reference's error in float64 variances);
 *   out[0] then gets them folded in (mean rounded once), and out[2], when
 *   not NULL, what that rounding left (bn_stats's mean_lo).
 */
typedef int (*bnf_task)(void *ctx, ptrdiff_t lo, ptrdiff_t hi, double *part);

enum { BNF_MERGE_NONE, BNF_MERGE_SUMS, BNF_MERGE_MOMENTS };

typedef struct {
    int nt;
    ptrdiff_t n, align; /* align 0 counts as 1 */
    bnf_task task;
    void *ctx;
    ptrdiff_t per;
    int merge, k;
    ptrdiff_t m;
    double weight;
    double *out[3]; /* out[2]: BNF_MERGE_MOMENTS with k == 3, the means'
                       low parts (NULL: folded into out[0]) */
} bnf_split;

int bnf_run(const bnf_split *s);

#endif /* BNFAST_INTERNAL_H */
