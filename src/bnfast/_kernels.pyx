# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True
"""Thin Cython bindings of the C kernels in csrc/.

Each function takes typed memoryviews, turns them into pointers and leading
dimensions and calls one C kernel with the GIL released.  Validation and
layout decisions belong to bnfast._checks and bnfast.functional: callers
pass 2-D panels whose columns are unit-stride (or a single column), whose
row stride is a multiple of the itemsize, and which have n >= 1, d >= 1
rows and columns, and per-channel float64 arrays of length d.
"""
from cython cimport floating
from libc.stddef cimport ptrdiff_t



cdef inline ptrdiff_t _ld(const floating[:, :] a) noexcept nogil:
    # Leading dimension in elements; any value works for a single row.
    if a.shape[0] == 1:
        return a.shape[1]
    return a.strides[0] // <ptrdiff_t>sizeof(floating)


cdef inline int _raise(int rc) except -1:
    if rc == BNF_ENOMEM:
        raise MemoryError("bnfast: could not allocate a scratch buffer")
    return 0


def simd_level():
    """The SIMD level the kernels dispatch to on this CPU."""
    return bnf_simd_level().decode()


def bn_forward_train(const floating[:, :] x, const double[::1] gamma,
                     const double[::1] beta, double eps, floating[:, :] y,
                     double[::1] mean, double[::1] invstd, double[::1] var):
    cdef int rc
    cdef ptrdiff_t n = x.shape[0], d = x.shape[1]
    cdef ptrdiff_t ldx = _ld(x), ldy = _ld(y)
    with nogil:
        if floating is float:
            rc = bn_forward_train_f32(&x[0, 0], n, d, ldx, &gamma[0],
                                      &beta[0], eps, &y[0, 0], ldy, &mean[0],
                                      &invstd[0], &var[0])
        else:
            rc = bn_forward_train_f64(&x[0, 0], n, d, ldx, &gamma[0],
                                      &beta[0], eps, &y[0, 0], ldy, &mean[0],
                                      &invstd[0], &var[0])
    _raise(rc)


def bn_forward_test(const floating[:, :] x, const double[::1] gamma,
                    const double[::1] beta, const double[::1] mean,
                    const double[::1] var, double eps, floating[:, :] y):
    cdef int rc
    cdef ptrdiff_t n = x.shape[0], d = x.shape[1]
    cdef ptrdiff_t ldx = _ld(x), ldy = _ld(y)
    with nogil:
        if floating is float:
            rc = bn_forward_test_f32(&x[0, 0], n, d, ldx, &gamma[0],
                                     &beta[0], &mean[0], &var[0], eps,
                                     &y[0, 0], ldy)
        else:
            rc = bn_forward_test_f64(&x[0, 0], n, d, ldx, &gamma[0],
                                     &beta[0], &mean[0], &var[0], eps,
                                     &y[0, 0], ldy)
    _raise(rc)


def bn_backward(const floating[:, :] dy, const floating[:, :] x,
                const double[::1] mean, const double[::1] invstd,
                const double[::1] gamma, floating[:, :] dx,
                double[::1] dgamma, double[::1] dbeta):
    cdef int rc
    cdef ptrdiff_t n = x.shape[0], d = x.shape[1]
    cdef ptrdiff_t lddy = _ld(dy), ldx = _ld(x), lddx = _ld(dx)
    with nogil:
        if floating is float:
            rc = bn_backward_f32(&dy[0, 0], lddy, &x[0, 0], ldx, n, d,
                                 &mean[0], &invstd[0], &gamma[0], &dx[0, 0],
                                 lddx, &dgamma[0], &dbeta[0])
        else:
            rc = bn_backward_f64(&dy[0, 0], lddy, &x[0, 0], ldx, n, d,
                                 &mean[0], &invstd[0], &gamma[0], &dx[0, 0],
                                 lddx, &dgamma[0], &dbeta[0])
    _raise(rc)
