# Declarations of the C kernels in csrc/bnfast.h.
from libc.stddef cimport ptrdiff_t

cdef extern from "bnfast.h" nogil:
    int BNF_OK
    int BNF_ENOMEM

    # the descriptors (see bnfast.h for which fields each function reads
    # and writes)
    ctypedef struct bnf_strides:
        ptrdiff_t s1, s2

    ctypedef struct bnf_panel:
        ptrdiff_t n1, n2, len
        bnf_strides x, y, dy, z

    ctypedef struct bnf_params:
        double eps
        int relu
        int frozen
        ptrdiff_t groups
        double count
        const double *gamma
        const double *beta
        const double *mean
        const double *invstd
        const double *var
        const double *sum_dy
        const double *sum_dyxmu
        const void *residual

    ctypedef struct bnf_results:
        double *mean
        double *invstd
        double *var
        double *m2
        double *sum_dy
        double *sum_dyxmu
        double *dgamma
        double *dbeta
        double *mean_lo

    # one argument order: panel, params, x, dy, the output array, results
    int bn_forward_train_f32(const bnf_panel *p, const bnf_params *q,
                             const float *x, float *y, bnf_results *r)
    int bn_forward_train_f64(const bnf_panel *p, const bnf_params *q,
                             const double *x, double *y, bnf_results *r)
    int bn_stats_f32(const bnf_panel *p, const bnf_params *q, const float *x,
                     bnf_results *r)
    int bn_stats_f64(const bnf_panel *p, const bnf_params *q,
                     const double *x, bnf_results *r)
    int bn_apply_f32(const bnf_panel *p, const bnf_params *q, const float *x,
                     float *y)
    int bn_apply_f64(const bnf_panel *p, const bnf_params *q,
                     const double *x, double *y)
    int bn_forward_test_f32(const bnf_panel *p, const bnf_params *q,
                            const float *x, float *y)
    int bn_forward_test_f64(const bnf_panel *p, const bnf_params *q,
                            const double *x, double *y)
    int bn_backward_f32(const bnf_panel *p, const bnf_params *q,
                        const float *x, const float *dy, float *dx,
                        bnf_results *r)
    int bn_backward_f64(const bnf_panel *p, const bnf_params *q,
                        const double *x, const double *dy, double *dx,
                        bnf_results *r)
    int bn_backward_reduce_f32(const bnf_panel *p, const bnf_params *q,
                               const float *x, const float *dy,
                               bnf_results *r)
    int bn_backward_reduce_f64(const bnf_panel *p, const bnf_params *q,
                               const double *x, const double *dy,
                               bnf_results *r)
    int bn_backward_apply_f32(const bnf_panel *p, const bnf_params *q,
                              const float *x, const float *dy, float *dx,
                              bnf_results *r)
    int bn_backward_apply_f64(const bnf_panel *p, const bnf_params *q,
                              const double *x, const double *dy, double *dx,
                              bnf_results *r)
    int bn_residual_gate_f32(const bnf_panel *p, const bnf_params *q,
                             const float *x, const float *dy, float *g,
                             bnf_results *r)
    int bn_residual_gate_f64(const bnf_panel *p, const bnf_params *q,
                             const double *x, const double *dy, double *g,
                             bnf_results *r)

    int ln_forward_f32(const bnf_panel *p, const bnf_params *q,
                       const float *x, float *y, bnf_results *r)
    int ln_forward_f64(const bnf_panel *p, const bnf_params *q,
                       const double *x, double *y, bnf_results *r)
    int ln_backward_f32(const bnf_panel *p, const bnf_params *q,
                        const float *x, const float *dy, float *dx,
                        bnf_results *r)
    int ln_backward_f64(const bnf_panel *p, const bnf_params *q,
                        const double *x, const double *dy, double *dx,
                        bnf_results *r)

    int rms_forward_f32(const bnf_panel *p, const bnf_params *q,
                        const float *x, float *y, bnf_results *r)
    int rms_forward_f64(const bnf_panel *p, const bnf_params *q,
                        const double *x, double *y, bnf_results *r)
    int rms_backward_f32(const bnf_panel *p, const bnf_params *q,
                         const float *x, const float *dy, float *dx,
                         bnf_results *r)
    int rms_backward_f64(const bnf_panel *p, const bnf_params *q,
                         const double *x, const double *dy, double *dx,
                         bnf_results *r)

    int gn_forward_f32(const bnf_panel *p, const bnf_params *q,
                       const float *x, float *y, bnf_results *r)
    int gn_forward_f64(const bnf_panel *p, const bnf_params *q,
                       const double *x, double *y, bnf_results *r)
    int gn_backward_f32(const bnf_panel *p, const bnf_params *q,
                        const float *x, const float *dy, float *dx,
                        bnf_results *r)
    int gn_backward_f64(const bnf_panel *p, const bnf_params *q,
                        const double *x, const double *dy, double *dx,
                        bnf_results *r)
    int gnl_forward_f32(const bnf_panel *p, const bnf_params *q,
                        const float *x, float *y, bnf_results *r)
    int gnl_forward_f64(const bnf_panel *p, const bnf_params *q,
                        const double *x, double *y, bnf_results *r)
    int gnl_backward_f32(const bnf_panel *p, const bnf_params *q,
                         const float *x, const float *dy, float *dx,
                         bnf_results *r)
    int gnl_backward_f64(const bnf_panel *p, const bnf_params *q,
                         const double *x, const double *dy, double *dx,
                         bnf_results *r)

    enum: BNF_MAX_THREADS
    int bnf_set_num_threads(int n)
    int bnf_get_num_threads()
    void bnf_get_thread_state(int *state)
    void bnf_threads_init()
    void bnf_set_parallel_min(ptrdiff_t nbytes)
    ptrdiff_t bnf_get_parallel_min()
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
