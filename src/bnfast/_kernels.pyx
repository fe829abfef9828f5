# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True
"""Thin Cython bindings of the C kernels in csrc/.

Each function takes typed memoryviews, turns them into pointers and leading
dimensions and calls one C kernel with the GIL released.  Validation and
layout decisions belong to bnfast._layout and bnfast.functional: callers
pass "panels", 3-D views (n1, n2, len) of the data: n2 channels of n1 runs
of len elements (see csrc/bnfast.h), with all sizes >= 1, unit stride along
the runs (or len == 1), strides multiples of the itemsize, and per-channel
float64 arrays of length n2.  The layer norm bindings take 2-D (n, d)
arrays with unit-stride columns; the group norm bindings (n, c, hw) arrays
whose samples are C-contiguous.
"""
from cython cimport floating
from libc.stddef cimport ptrdiff_t



cdef inline ptrdiff_t _st(const floating[:, :, :] a, int k) noexcept nogil:
    # Stride of axis k in elements; that of a length-1 axis is never used
    # to address memory, and a single channel counts as adjacent channels.
    if a.shape[k] == 1:
        return 1
    return a.strides[k] // <ptrdiff_t>sizeof(floating)


cdef inline ptrdiff_t _ld(const floating[:, :] a) noexcept nogil:
    # Row stride in elements; that of a single row is never used.
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


def set_num_threads(int n):
    bnf_set_num_threads(n)


def get_num_threads():
    return bnf_get_num_threads()


def have_openmp():
    return bool(bnf_have_openmp())


def bn_forward_train(const floating[:, :, :] x, const double[::1] gamma,
                     const double[::1] beta, double eps,
                     floating[:, :, :] y, double[::1] mean,
                     double[::1] invstd, double[::1] var, bint relu=False):
    cdef int rc
    cdef ptrdiff_t n1 = x.shape[0], n2 = x.shape[1], ln = x.shape[2]
    cdef ptrdiff_t xs1 = _st(x, 0), xs2 = _st(x, 1)
    cdef ptrdiff_t ys1 = _st(y, 0), ys2 = _st(y, 1)
    with nogil:
        if floating is float:
            rc = bn_forward_train_f32(&x[0, 0, 0], n1, n2, ln, xs1, xs2,
                                      &gamma[0], &beta[0], eps, &y[0, 0, 0],
                                      ys1, ys2, &mean[0], &invstd[0], &var[0],
                                      relu)
        else:
            rc = bn_forward_train_f64(&x[0, 0, 0], n1, n2, ln, xs1, xs2,
                                      &gamma[0], &beta[0], eps, &y[0, 0, 0],
                                      ys1, ys2, &mean[0], &invstd[0], &var[0],
                                      relu)
    _raise(rc)


def bn_forward_test(const floating[:, :, :] x, const double[::1] gamma,
                    const double[::1] beta, const double[::1] mean,
                    const double[::1] var, double eps, floating[:, :, :] y,
                    bint relu=False):
    cdef int rc
    cdef ptrdiff_t n1 = x.shape[0], n2 = x.shape[1], ln = x.shape[2]
    cdef ptrdiff_t xs1 = _st(x, 0), xs2 = _st(x, 1)
    cdef ptrdiff_t ys1 = _st(y, 0), ys2 = _st(y, 1)
    with nogil:
        if floating is float:
            rc = bn_forward_test_f32(&x[0, 0, 0], n1, n2, ln, xs1, xs2,
                                     &gamma[0], &beta[0], &mean[0], &var[0],
                                     eps, &y[0, 0, 0], ys1, ys2, relu)
        else:
            rc = bn_forward_test_f64(&x[0, 0, 0], n1, n2, ln, xs1, xs2,
                                     &gamma[0], &beta[0], &mean[0], &var[0],
                                     eps, &y[0, 0, 0], ys1, ys2, relu)
    _raise(rc)


def bn_backward(const floating[:, :, :] dy, const floating[:, :, :] x,
                const double[::1] mean, const double[::1] invstd,
                const double[::1] gamma, const double[::1] beta, bint relu,
                floating[:, :, :] dx, double[::1] dgamma,
                double[::1] dbeta):
    cdef int rc
    cdef ptrdiff_t n1 = x.shape[0], n2 = x.shape[1], ln = x.shape[2]
    cdef ptrdiff_t ds1 = _st(dy, 0), ds2 = _st(dy, 1)
    cdef ptrdiff_t xs1 = _st(x, 0), xs2 = _st(x, 1)
    cdef ptrdiff_t ts1 = _st(dx, 0), ts2 = _st(dx, 1)
    with nogil:
        if floating is float:
            rc = bn_backward_f32(&dy[0, 0, 0], ds1, ds2, &x[0, 0, 0], xs1,
                                 xs2, n1, n2, ln, &mean[0], &invstd[0],
                                 &gamma[0], &beta[0], relu, &dx[0, 0, 0],
                                 ts1, ts2, &dgamma[0], &dbeta[0])
        else:
            rc = bn_backward_f64(&dy[0, 0, 0], ds1, ds2, &x[0, 0, 0], xs1,
                                 xs2, n1, n2, ln, &mean[0], &invstd[0],
                                 &gamma[0], &beta[0], relu, &dx[0, 0, 0],
                                 ts1, ts2, &dgamma[0], &dbeta[0])
    _raise(rc)


def ln_forward(const floating[:, :] x, const double[::1] gamma,
               const double[::1] beta, double eps, floating[:, :] y,
               double[::1] mean, double[::1] invstd):
    cdef ptrdiff_t n = x.shape[0], d = x.shape[1]
    cdef ptrdiff_t ldx = _ld(x), ldy = _ld(y)
    with nogil:
        if floating is float:
            ln_forward_f32(&x[0, 0], n, d, ldx, &gamma[0], &beta[0], eps,
                           &y[0, 0], ldy, &mean[0], &invstd[0])
        else:
            ln_forward_f64(&x[0, 0], n, d, ldx, &gamma[0], &beta[0], eps,
                           &y[0, 0], ldy, &mean[0], &invstd[0])


def ln_backward(const floating[:, :] dy, const floating[:, :] x,
                const double[::1] mean, const double[::1] invstd,
                const double[::1] gamma, floating[:, :] dx,
                double[::1] dgamma, double[::1] dbeta):
    cdef int rc
    cdef ptrdiff_t n = x.shape[0], d = x.shape[1]
    cdef ptrdiff_t lddy = _ld(dy), ldx = _ld(x), lddx = _ld(dx)
    with nogil:
        if floating is float:
            rc = ln_backward_f32(&dy[0, 0], lddy, &x[0, 0], ldx, n, d,
                                 &mean[0], &invstd[0], &gamma[0], &dx[0, 0],
                                 lddx, &dgamma[0], &dbeta[0])
        else:
            rc = ln_backward_f64(&dy[0, 0], lddy, &x[0, 0], ldx, n, d,
                                 &mean[0], &invstd[0], &gamma[0], &dx[0, 0],
                                 lddx, &dgamma[0], &dbeta[0])
    _raise(rc)


def gn_forward(const floating[:, :, :] x, ptrdiff_t groups,
               const double[::1] gamma, const double[::1] beta, double eps,
               floating[:, :, :] y, double[::1] mean, double[::1] invstd):
    cdef int rc
    cdef ptrdiff_t n = x.shape[0], c = x.shape[1], hw = x.shape[2]
    cdef ptrdiff_t xs = _st(x, 0), ys = _st(y, 0)
    with nogil:
        if floating is float:
            rc = gn_forward_f32(&x[0, 0, 0], n, c, groups, hw, xs, &gamma[0],
                                &beta[0], eps, &y[0, 0, 0], ys, &mean[0],
                                &invstd[0])
        else:
            rc = gn_forward_f64(&x[0, 0, 0], n, c, groups, hw, xs, &gamma[0],
                                &beta[0], eps, &y[0, 0, 0], ys, &mean[0],
                                &invstd[0])
    _raise(rc)


def gn_backward(const floating[:, :, :] dy, const floating[:, :, :] x,
                ptrdiff_t groups, const double[::1] mean,
                const double[::1] invstd, const double[::1] gamma,
                floating[:, :, :] dx, double[::1] dgamma,
                double[::1] dbeta):
    cdef int rc
    cdef ptrdiff_t n = x.shape[0], c = x.shape[1], hw = x.shape[2]
    cdef ptrdiff_t ds = _st(dy, 0), xs = _st(x, 0), ts = _st(dx, 0)
    with nogil:
        if floating is float:
            rc = gn_backward_f32(&dy[0, 0, 0], ds, &x[0, 0, 0], xs, n, c,
                                 groups, hw, &mean[0], &invstd[0], &gamma[0],
                                 &dx[0, 0, 0], ts, &dgamma[0], &dbeta[0])
        else:
            rc = gn_backward_f64(&dy[0, 0, 0], ds, &x[0, 0, 0], xs, n, c,
                                 groups, hw, &mean[0], &invstd[0], &gamma[0],
                                 &dx[0, 0, 0], ts, &dgamma[0], &dbeta[0])
    _raise(rc)
