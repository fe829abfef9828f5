/*
 * bnfast C API: plain C99 kernels for batch normalization, no Python headers.
 *
 * One function per kernel and dtype (_f32 / _f64).  Arrays are raw pointers,
 * sizes and leading dimensions are ptrdiff_t (arrays over 2**31 elements
 * work).  Per-channel quantities (mean, 1/std, gamma, beta, ...) are always
 * double, whatever the data dtype; all accumulation is in double.
 *
 * "Across rows" family: the data is an (m, c) panel in row-major order with
 * unit column stride; element (i, j) is at x[i*ldx + j], ldx >= c.  Each
 * kernel reduces over the m rows and gives one result per column.
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
    /* Column mean and M2 = sum_i (x_ij - mean_j)**2, fused in one pass over \
       memory (blocked two-pass, blocks merged with Chan's formula). */      \
    int rows_stats_##SUF(const T *x, ptrdiff_t m, ptrdiff_t c, ptrdiff_t ldx, \
                         double *mean, double *m2);                          \
    /* y_ij = (x_ij - mean_j) * scale_j + shift_j */                          \
    void rows_apply_##SUF(const T *x, ptrdiff_t m, ptrdiff_t c,               \
                          ptrdiff_t ldx, const double *mean,                 \
                          const double *scale, const double *shift, T *y,    \
                          ptrdiff_t ldy);                                    \
    /* sum_dy_j = sum_i dy_ij, sum_dyxmu_j = sum_i dy_ij * (x_ij - mean_j) */ \
    int rows_bwd_reduce_##SUF(const T *dy, ptrdiff_t lddy, const T *x,        \
                              ptrdiff_t ldx, ptrdiff_t m, ptrdiff_t c,       \
                              const double *mean, double *sum_dy,            \
                              double *sum_dyxmu);                            \
    /* dx_ij = k_dy_j * dy_ij + k_xmu_j * (x_ij - mean_j) + k_0_j */          \
    void rows_bwd_apply_##SUF(const T *dy, ptrdiff_t lddy, const T *x,        \
                              ptrdiff_t ldx, ptrdiff_t m, ptrdiff_t c,       \
                              const double *mean, const double *k_dy,        \
                              const double *k_xmu, const double *k_0, T *dx, \
                              ptrdiff_t lddx);                               \
                                                                             \
    /* Batch norm on an (n, d) panel, training mode: y = (x - mean) *        \
       (gamma * invstd) + beta with the batch statistics.  Writes the batch  \
       mean, 1/sqrt(var + eps) and the biased variance var (all (d,)). */    \
    int bn_forward_train_##SUF(const T *x, ptrdiff_t n, ptrdiff_t d,          \
                               ptrdiff_t ldx, const double *gamma,           \
                               const double *beta, double eps, T *y,         \
                               ptrdiff_t ldy, double *mean, double *invstd,  \
                               double *var);                                 \
    /* Batch norm, inference mode: y = (x - mean) * (gamma / sqrt(var + eps)) \
       + beta with given (running) statistics. */                            \
    int bn_forward_test_##SUF(const T *x, ptrdiff_t n, ptrdiff_t d,           \
                              ptrdiff_t ldx, const double *gamma,            \
                              const double *beta, const double *mean,        \
                              const double *var, double eps, T *y,           \
                              ptrdiff_t ldy);                                \
    /* Batch norm backward, simplified single formula.  mean and invstd are \
       those of the forward pass.  Writes dx, dgamma, dbeta (all double     \
       per-channel outputs are (d,)). */                                     \
    int bn_backward_##SUF(const T *dy, ptrdiff_t lddy, const T *x,            \
                          ptrdiff_t ldx, ptrdiff_t n, ptrdiff_t d,           \
                          const double *mean, const double *invstd,          \
                          const double *gamma, T *dx, ptrdiff_t lddx,        \
                          double *dgamma, double *dbeta);

BNF_DECLARE(float, f32)
BNF_DECLARE(double, f64)

#undef BNF_DECLARE

/* The SIMD level the dispatching kernels run at on this CPU, as a string
   ("x86-64-v4", "x86-64-v3" or "baseline"). */
const char *bnf_simd_level(void);

#endif /* BNFAST_H */
