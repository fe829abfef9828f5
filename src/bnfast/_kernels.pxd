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
    # the storage dtypes: rows of a kernel table
    enum:
        BNF_F32
        BNF_F64
        BNF_F16
        BNF_BF16
    # the entry points, data as void * (bnfast.h: bnf_kernels)
    ctypedef int (*bnf_fwd_fn)(const bnf_panel *, const bnf_params *,
                               const void *, void *,
                               bnf_results *) noexcept nogil
    ctypedef int (*bnf_stats_fn)(const bnf_panel *, const bnf_params *,
                                 const void *, bnf_results *) noexcept nogil
    ctypedef int (*bnf_apply_fn)(const bnf_panel *, const bnf_params *,
                                 const void *, void *) noexcept nogil
    ctypedef int (*bnf_bwd_fn)(const bnf_panel *, const bnf_params *,
                               const void *, const void *, void *,
                               bnf_results *) noexcept nogil
    ctypedef int (*bnf_reduce_fn)(const bnf_panel *, const bnf_params *,
                                  const void *, const void *,
                                  bnf_results *) noexcept nogil
    ctypedef struct bnf_kernels:
        bnf_fwd_fn bn_forward_train
        bnf_stats_fn bn_stats
        bnf_apply_fn bn_apply
        bnf_apply_fn bn_forward_test
        bnf_bwd_fn bn_backward
        bnf_reduce_fn bn_backward_reduce
        bnf_bwd_fn bn_backward_apply
        bnf_bwd_fn bn_residual_gate
        bnf_fwd_fn ln_forward
        bnf_bwd_fn ln_backward
        bnf_fwd_fn rms_forward
        bnf_bwd_fn rms_backward
        bnf_fwd_fn gn_forward
        bnf_bwd_fn gn_backward
        bnf_fwd_fn gnl_forward
        bnf_bwd_fn gnl_backward
    const bnf_kernels *bnf_kernels_for(int dtype)

    # SIMD levels (dispatch.c)
    enum: BNF_SIMD_NLEVELS
    const char *bnf_simd_name(int level)
    int bnf_simd_built(int level)
    int bnf_simd_cpu(int level)
    int bnf_simd_get()
    int bnf_simd_set(int level)

    enum: BNF_MAX_THREADS
    int bnf_set_num_threads(int n)
    int bnf_get_num_threads()
    void bnf_get_thread_state(int *state)
    void bnf_threads_init()
    void bnf_set_parallel_min(ptrdiff_t nbytes)
    ptrdiff_t bnf_get_parallel_min()
    int bnf_have_openmp()

# Half-precision storage (csrc/half.h): float16 and bfloat16 as uint16_t
# bits; conversions of the per-channel values from and to double.
cdef extern from "half.h" nogil:
    ctypedef unsigned short uint16_t
    double bnf_f16_to_f64(uint16_t h)
    double bnf_bf16_to_f64(uint16_t h)
    uint16_t bnf_f64_to_f16(double d)
    uint16_t bnf_f64_to_bf16(double d)

# Benchmark-only helper (csrc/bench_copy.c), not part of the kernels: a copy
# with streaming stores, for the roofline of benchmarks/bench.py.
cdef extern from *:
    """
    void bnf_stream_copy(const void *src, void *dst, size_t n);
    int bnf_stream_copy_streams(void);
    """
    void bnf_stream_copy(const void *src, void *dst, size_t n) nogil
    int bnf_stream_copy_streams() nogil
