/*
 * bnfast C API: plain C99 kernels for batch normalization, no Python headers.
 *
 * One function per kernel and dtype (_f32 / _f64).  Arrays are raw pointers,
 * sizes and leading dimensions are ptrdiff_t (arrays over 2**31 elements
 * work).  Per-channel quantities (mean, 1/std, gamma, beta, ...) are always
 * double, whatever the data dtype.  float64 data is computed in double;
 * float32 data element-wise in float32, with its short sums flushed into
 * double (see instantiate.h): per-channel statistics and every long sum
 * are double.
 *
 * Two kernel families (their building blocks are in internal.h):
 * - across rows: the data is an (m, c) panel in row-major order with unit
 *   column stride; element (i, j) is at x[i*ldx + j].  Reductions run over
 *   the m rows and give one result per column (rows_*);
 * - along runs: n2 channels of n1 contiguous runs of len elements; run i of
 *   channel j starts at x + i*s1 + j*s2.  Reductions give one result per
 *   channel (runs_*).
 *
 * The batch norm entry points (bn_*) take one description of both, a
 * "panel": n2 channels of n1 runs of len elements at strides (s1, s2).
 * len == 1 is the across-rows family (s2 must be 1: rows of channels, e.g.
 * (N, D) in C order or channels-last images), len > 1 the along-runs family
 * ((N, C, H, W) images: runs are planes; (N, D) in Fortran order: runs are
 * columns).  Statistics are per channel over its n1*len elements.
 *
 * Functions returning int give 0 on success and BNF_ENOMEM when a scratch
 * buffer could not be allocated (nothing is written to outputs then).
 */
#ifndef BNFAST_H
#define BNFAST_H

#include <stddef.h>

#define BNF_OK 0
#define BNF_ENOMEM (-1)

#define BNF_DECLARE(T, SUF)                                                    \
    /* Batch norm, training mode, on a panel (n1, n2, len) with x at        \
       strides (xs1, xs2) and y at (ys1, ys2): y = (x - mean) *              \
       (gamma * invstd) + beta with the batch statistics (then max(y, 0) if  \
       relu: fused ReLU).  Writes the per-channel batch mean,                \
       1/sqrt(var + eps) and biased variance. */                             \
    int bn_forward_train_##SUF(const T *x, ptrdiff_t n1, ptrdiff_t n2,        \
                               ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,  \
                               const double *gamma, const double *beta,      \
                               double eps, T *y, ptrdiff_t ys1,              \
                               ptrdiff_t ys2, double *mean, double *invstd,  \
                               double *var, int relu);                       \
    /* Per-channel mean and M2 (sum of squared deviations) of a panel,     \
       and the normalization with given mean and invstd (forward-train is   \
       the two: synchronized batch norm merges the statistics between). */  \
    int bn_stats_##SUF(const T *x, ptrdiff_t n1, ptrdiff_t n2,               \
                       ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,          \
                       double *mean, double *m2);                            \
    int bn_apply_##SUF(const T *x, ptrdiff_t n1, ptrdiff_t n2,               \
                       ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,          \
                       const double *gamma, const double *beta,              \
                       const double *mean, const double *invstd, T *y,       \
                       ptrdiff_t ys1, ptrdiff_t ys2, int relu);              \
    /* Batch norm, inference mode: y = (x - mean) * (gamma / sqrt(var +     \
       eps)) + beta with given (running) statistics. */                      \
    int bn_forward_test_##SUF(const T *x, ptrdiff_t n1, ptrdiff_t n2,         \
                              ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,   \
                              const double *gamma, const double *beta,       \
                              const double *mean, const double *var,         \
                              double eps, T *y, ptrdiff_t ys1,               \
                              ptrdiff_t ys2, int relu);                      \
    /* Batch norm backward, simplified single formula; mean and invstd are  \
       those of the forward pass.  Writes dx, dgamma and dbeta. */           \
    int bn_backward_reduce_##SUF(const T *dy, ptrdiff_t ds1, ptrdiff_t ds2,  \
                                 const T *x, ptrdiff_t xs1, ptrdiff_t xs2,   \
                                 ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,  \
                                 const double *mean, const double *invstd,   \
                                 const double *gamma, const double *beta,    \
                                 int relu, double *sum_dy,                   \
                                 double *sum_dyxmu);                         \
    /* ... from the sums of dy and dy * (x - mean) over count values (of    \
       several panels: synchronized batch norm); dgamma, dbeta may alias    \
       sum_dyxmu, sum_dy. */                                                 \
    int bn_backward_apply_##SUF(const T *dy, ptrdiff_t ds1, ptrdiff_t ds2,   \
                                const T *x, ptrdiff_t xs1, ptrdiff_t xs2,    \
                                ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,   \
                                const double *mean, const double *invstd,    \
                                const double *gamma, const double *beta,     \
                                int relu, double count,                      \
                                const double *sum_dy,                        \
                                const double *sum_dyxmu, T *dx,              \
                                ptrdiff_t ts1, ptrdiff_t ts2, double *dgamma,\
                                double *dbeta);                              \
    int bn_backward_##SUF(const T *dy, ptrdiff_t ds1, ptrdiff_t ds2,          \
                          const T *x, ptrdiff_t xs1, ptrdiff_t xs2,          \
                          ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,         \
                          const double *mean, const double *invstd,          \
                          const double *gamma, const double *beta, int relu, \
                          T *dx, ptrdiff_t ts1, ptrdiff_t ts2,               \
                          double *dgamma, double *dbeta);                    \
                                                                             \
    /* Layer norm of an (n, d) panel of rows with unit-stride columns:      \
       statistics per row, gamma and beta (d,).  Writes the per-row mean    \
       and 1/sqrt(var + eps) (n,). */                                        \
    int ln_forward_##SUF(const T *x, ptrdiff_t n, ptrdiff_t d,                \
                          ptrdiff_t ldx, const double *gamma,                \
                          const double *beta, double eps, T *y,              \
                          ptrdiff_t ldy, double *mean, double *invstd);      \
    /* Layer norm backward, fused per row; writes dx, dgamma, dbeta (d,). */ \
    int ln_backward_##SUF(const T *dy, ptrdiff_t lddy, const T *x,            \
                          ptrdiff_t ldx, ptrdiff_t n, ptrdiff_t d,           \
                          const double *mean, const double *invstd,          \
                          const double *gamma, T *dx, ptrdiff_t lddx,        \
                          double *dgamma, double *dbeta);                    \
                                                                             \
    /* Group norm of n samples of c channels of hw elements, each sample    \
       contiguous, samples xs (ys) elements apart; g groups of c/g adjacent \
       channels.  Writes the per-(sample, group) mean and 1/sqrt(var + eps) \
       (n*g,). */                                                            \
    int gn_forward_##SUF(const T *x, ptrdiff_t n, ptrdiff_t c, ptrdiff_t g,   \
                         ptrdiff_t hw, ptrdiff_t xs, const double *gamma,    \
                         const double *beta, double eps, T *y, ptrdiff_t ys, \
                         double *mean, double *invstd);                      \
    int gn_backward_##SUF(const T *dy, ptrdiff_t ds, const T *x,              \
                          ptrdiff_t xs, ptrdiff_t n, ptrdiff_t c,            \
                          ptrdiff_t g, ptrdiff_t hw, const double *mean,     \
                          const double *invstd, const double *gamma, T *dx,  \
                          ptrdiff_t ts, double *dgamma, double *dbeta);

BNF_DECLARE(float, f32)
BNF_DECLARE(double, f64)

#undef BNF_DECLARE

/* Threads of the OpenMP builds (1 without OpenMP; jobs of a few thousand
   elements always run on one thread). */
void bnf_set_num_threads(int n);
int bnf_get_num_threads(void);
int bnf_have_openmp(void);

/* The SIMD level the dispatching kernels run at on this CPU, as a string
   ("x86-64-v4", "x86-64-v3" or "baseline"). */
const char *bnf_simd_level(void);

#endif /* BNFAST_H */
