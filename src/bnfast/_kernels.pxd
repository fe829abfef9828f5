# Declarations of the C kernels in csrc/bnfast.h.
from libc.stddef cimport ptrdiff_t

cdef extern from "bnfast.h" nogil:
    int BNF_OK
    int BNF_ENOMEM

    int bn_stats_f32(const float *x, ptrdiff_t n1, ptrdiff_t n2,
                     ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,
                     double *mean, double *m2)
    int bn_stats_f64(const double *x, ptrdiff_t n1, ptrdiff_t n2,
                     ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,
                     double *mean, double *m2)
    int bn_apply_f32(const float *x, ptrdiff_t n1, ptrdiff_t n2,
                     ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,
                     const double *gamma, const double *beta,
                     const double *mean, const double *invstd, float *y,
                     ptrdiff_t ys1, ptrdiff_t ys2, int relu)
    int bn_apply_f64(const double *x, ptrdiff_t n1, ptrdiff_t n2,
                     ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,
                     const double *gamma, const double *beta,
                     const double *mean, const double *invstd, double *y,
                     ptrdiff_t ys1, ptrdiff_t ys2, int relu)
    int bn_backward_reduce_f32(const float *dy, ptrdiff_t ds1, ptrdiff_t ds2,
                               const float *x, ptrdiff_t xs1, ptrdiff_t xs2,
                               ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                               const double *mean, const double *invstd,
                               const double *gamma, const double *beta,
                               int relu, double *sum_dy, double *sum_dyxmu)
    int bn_backward_reduce_f64(const double *dy, ptrdiff_t ds1, ptrdiff_t ds2,
                               const double *x, ptrdiff_t xs1, ptrdiff_t xs2,
                               ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                               const double *mean, const double *invstd,
                               const double *gamma, const double *beta,
                               int relu, double *sum_dy, double *sum_dyxmu)
    int bn_backward_apply_f32(const float *dy, ptrdiff_t ds1, ptrdiff_t ds2,
                              const float *x, ptrdiff_t xs1, ptrdiff_t xs2,
                              ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                              const double *mean, const double *invstd,
                              const double *gamma, const double *beta,
                              int relu, double count, const double *sum_dy,
                              const double *sum_dyxmu, float *dx,
                              ptrdiff_t ts1, ptrdiff_t ts2, double *dgamma,
                              double *dbeta)
    int bn_backward_apply_f64(const double *dy, ptrdiff_t ds1, ptrdiff_t ds2,
                              const double *x, ptrdiff_t xs1, ptrdiff_t xs2,
                              ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                              const double *mean, const double *invstd,
                              const double *gamma, const double *beta,
                              int relu, double count, const double *sum_dy,
                              const double *sum_dyxmu, double *dx,
                              ptrdiff_t ts1, ptrdiff_t ts2, double *dgamma,
                              double *dbeta)

    int bn_forward_train_f32(const float *x, ptrdiff_t n1, ptrdiff_t n2,
                             ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,
                             const double *gamma, const double *beta,
                             double eps, float *y, ptrdiff_t ys1, ptrdiff_t ys2,
                             double *mean, double *invstd, double *var,
                             int relu)
    int bn_forward_test_f32(const float *x, ptrdiff_t n1, ptrdiff_t n2,
                            ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,
                            const double *gamma, const double *beta,
                            const double *mean, const double *var,
                            double eps, float *y, ptrdiff_t ys1, ptrdiff_t ys2,
                            int relu)
    int bn_backward_f32(const float *dy, ptrdiff_t ds1, ptrdiff_t ds2,
                        const float *x, ptrdiff_t xs1, ptrdiff_t xs2,
                        ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                        const double *mean, const double *invstd,
                        const double *gamma, const double *beta, int relu,
                        float *dx, ptrdiff_t ts1, ptrdiff_t ts2,
                        double *dgamma, double *dbeta)
    int bn_forward_train_f64(const double *x, ptrdiff_t n1, ptrdiff_t n2,
                             ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,
                             const double *gamma, const double *beta,
                             double eps, double *y, ptrdiff_t ys1, ptrdiff_t ys2,
                             double *mean, double *invstd, double *var,
                             int relu)
    int bn_forward_test_f64(const double *x, ptrdiff_t n1, ptrdiff_t n2,
                            ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,
                            const double *gamma, const double *beta,
                            const double *mean, const double *var,
                            double eps, double *y, ptrdiff_t ys1, ptrdiff_t ys2,
                            int relu)
    int bn_backward_f64(const double *dy, ptrdiff_t ds1, ptrdiff_t ds2,
                        const double *x, ptrdiff_t xs1, ptrdiff_t xs2,
                        ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                        const double *mean, const double *invstd,
                        const double *gamma, const double *beta, int relu,
                        double *dx, ptrdiff_t ts1, ptrdiff_t ts2,
                        double *dgamma, double *dbeta)

    int ln_forward_f32(const float *x, ptrdiff_t n, ptrdiff_t d, ptrdiff_t ldx,
                       const double *gamma, const double *beta, double eps,
                       float *y, ptrdiff_t ldy, double *mean, double *invstd)
    int ln_backward_f32(const float *dy, ptrdiff_t lddy, const float *x,
                        ptrdiff_t ldx, ptrdiff_t n, ptrdiff_t d,
                        const double *mean, const double *invstd,
                        const double *gamma, float *dx, ptrdiff_t lddx,
                        double *dgamma, double *dbeta)
    int ln_forward_f64(const double *x, ptrdiff_t n, ptrdiff_t d, ptrdiff_t ldx,
                       const double *gamma, const double *beta, double eps,
                       double *y, ptrdiff_t ldy, double *mean, double *invstd)
    int ln_backward_f64(const double *dy, ptrdiff_t lddy, const double *x,
                        ptrdiff_t ldx, ptrdiff_t n, ptrdiff_t d,
                        const double *mean, const double *invstd,
                        const double *gamma, double *dx, ptrdiff_t lddx,
                        double *dgamma, double *dbeta)

    int gn_forward_f32(const float *x, ptrdiff_t n, ptrdiff_t c, ptrdiff_t g,
                       ptrdiff_t hw, ptrdiff_t xs, const double *gamma,
                       const double *beta, double eps, float *y, ptrdiff_t ys,
                       double *mean, double *invstd)
    int gn_backward_f32(const float *dy, ptrdiff_t ds, const float *x,
                        ptrdiff_t xs, ptrdiff_t n, ptrdiff_t c, ptrdiff_t g,
                        ptrdiff_t hw, const double *mean,
                        const double *invstd, const double *gamma, float *dx,
                        ptrdiff_t ts, double *dgamma, double *dbeta)
    int gn_forward_f64(const double *x, ptrdiff_t n, ptrdiff_t c, ptrdiff_t g,
                       ptrdiff_t hw, ptrdiff_t xs, const double *gamma,
                       const double *beta, double eps, double *y, ptrdiff_t ys,
                       double *mean, double *invstd)
    int gn_backward_f64(const double *dy, ptrdiff_t ds, const double *x,
                        ptrdiff_t xs, ptrdiff_t n, ptrdiff_t c, ptrdiff_t g,
                        ptrdiff_t hw, const double *mean,
                        const double *invstd, const double *gamma, double *dx,
                        ptrdiff_t ts, double *dgamma, double *dbeta)

    void bnf_set_num_threads(int n)
    int bnf_get_num_threads()
    int bnf_have_openmp()
    const char *bnf_simd_level()

# Benchmark-only helper (csrc/bench_copy.c), not part of the kernels: a copy
# with streaming stores, for the roofline of benchmarks/bench.py.
cdef extern from *:
    """
    void bnf_stream_copy(const void *src, void *dst, size_t n);
    int bnf_stream_copy_streams(void);
    """
    void bnf_stream_copy(const void *src, void *dst, size_t n) nogil
    int bnf_stream_copy_streams() nogil
