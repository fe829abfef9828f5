# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True
"""Thin Cython bindings of the C kernels in csrc/.

Each function takes typed memoryviews, turns them into pointers and leading
dimensions and calls one C kernel with the GIL released.  Validation and
layout decisions belong to bnfast._layout and bnfast.functional: callers
pass "panels", 3-D views (n1, n2, len) of the data: n2 channels of n1 runs
of len elements (see csrc/bnfast.h), with all sizes >= 1, unit stride along
the runs (or len == 1), strides multiples of the itemsize, and per-channel
float64 arrays of length n2 (gamma, beta and running statistics: float32
or float64, see _Chans).  The layer norm bindings take 2-D (n, d)
arrays with unit-stride columns; the group norm bindings (n, c, hw) arrays
whose samples are C-contiguous.
"""
from cython cimport floating
from libc.stddef cimport ptrdiff_t
from libc.stdlib cimport free, malloc

cimport numpy as cnp

cnp.import_array()


cdef class _Chans:
    """float64 pointers to per-channel arrays (gamma, beta, running
    statistics), each a C-contiguous, aligned, native float32 or float64
    ndarray of n elements: a float64 array is read in place, a float32 one
    converted into scratch memory that lives as long as this object.
    Replaces a NumPy conversion per array (~1 us each) on every call."""
    cdef double *buf
    cdef Py_ssize_t n, used

    def __cinit__(self, Py_ssize_t n, int count):
        self.n = n
        self.used = 0
        self.buf = <double *>malloc(<size_t>(n * count if n * count > 0
                                             else 1) * sizeof(double))
        if self.buf == NULL:
            raise MemoryError("bnfast: could not allocate a scratch buffer")

    def __dealloc__(self):
        free(self.buf)

    cdef const double *get(self, object a) except NULL:
        cdef cnp.ndarray arr = _checked(a, self.n)
        cdef const float *f
        cdef double *d
        cdef Py_ssize_t i
        if cnp.PyArray_TYPE(arr) == cnp.NPY_DOUBLE:
            return <const double *>cnp.PyArray_DATA(arr)
        f = <const float *>cnp.PyArray_DATA(arr)
        d = self.buf + self.used
        self.used += self.n
        for i in range(self.n):
            d[i] = f[i]
        return d


cdef cnp.ndarray _checked(object a, Py_ssize_t n):
    # The contract of the per-channel arguments, checked (a violation would
    # read out of bounds): callers in bnfast.functional pass such arrays.
    if not cnp.PyArray_Check(a):
        raise TypeError(f"internal: expected an ndarray, got {type(a)}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int t = cnp.PyArray_TYPE(arr)
    if ((t != cnp.NPY_DOUBLE and t != cnp.NPY_FLOAT)
            or cnp.PyArray_SIZE(arr) != n
            or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or not cnp.PyArray_ISALIGNED(arr)
            or not cnp.PyArray_ISNOTSWAPPED(arr)):
        raise ValueError(f"internal: expected {n} contiguous native float32 "
                         f"or float64 values, got {a.dtype} {a.shape}")
    return arr


cdef int _store(object a, Py_ssize_t n, const double *v) except -1:
    # Round the n values v into a (a writable per-channel array as above).
    cdef cnp.ndarray arr = _checked(a, n)
    cdef double *d
    cdef float *f
    cdef Py_ssize_t i
    if not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError("internal: expected a writeable array")
    if cnp.PyArray_TYPE(arr) == cnp.NPY_DOUBLE:
        d = <double *>cnp.PyArray_DATA(arr)
        for i in range(n):
            d[i] = v[i]
    else:
        f = <float *>cnp.PyArray_DATA(arr)
        for i in range(n):
            f[i] = <float>v[i]
    return 0



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


cdef inline int _same(const floating[:, :, :] a,
                      const floating[:, :, :] b) except -1:
    if a.shape[0] != b.shape[0] or a.shape[1] != b.shape[1] or \
            a.shape[2] != b.shape[2]:
        raise ValueError("internal: panels of different shapes")
    return 0


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


def bn_forward_train(const floating[:, :, :] x, gamma, beta, double eps,
                     floating[:, :, :] y, double[::1] mean,
                     double[::1] invstd, bint relu, running_mean,
                     running_var, new_mean, new_var, double momentum,
                     double var_factor):
    """The kernel, then the running statistics:
    new = running * momentum + (1 - momentum) * batch, in float64 and
    rounded once to new's dtype (the batch variance times var_factor
    first: 1, or n / (n - 1) for the unbiased one).  gamma, beta and the
    running arrays: per-channel arrays of either float dtype (_Chans)."""
    cdef int rc
    cdef ptrdiff_t n1 = x.shape[0], n2 = x.shape[1], ln = x.shape[2]
    cdef ptrdiff_t xs1 = _st(x, 0), xs2 = _st(x, 1)
    cdef ptrdiff_t ys1 = _st(y, 0), ys2 = _st(y, 1)
    _same(x, y)
    cdef _Chans chans = _Chans(n2, 6)
    cdef const double *g = chans.get(gamma)
    cdef const double *b = chans.get(beta)
    cdef const double *rm = chans.get(running_mean)
    cdef const double *rv = chans.get(running_var)
    cdef double *var = chans.buf + chans.used
    if mean.shape[0] != n2 or invstd.shape[0] != n2:
        raise ValueError("internal: statistics of the wrong length")
    with nogil:
        if floating is float:
            rc = bn_forward_train_f32(&x[0, 0, 0], n1, n2, ln, xs1, xs2,
                                      g, b, eps, &y[0, 0, 0], ys1, ys2,
                                      &mean[0], &invstd[0], var, relu)
        else:
            rc = bn_forward_train_f64(&x[0, 0, 0], n1, n2, ln, xs1, xs2,
                                      g, b, eps, &y[0, 0, 0], ys1, ys2,
                                      &mean[0], &invstd[0], var, relu)
    _raise(rc)
    _update_running(n2, rm, rv, &mean[0], var, momentum, var_factor,
                    new_mean, new_var, var + n2)


cdef int _update_running(Py_ssize_t n, const double *rm, const double *rv,
                         const double *mean, const double *var,
                         double momentum, double var_factor, new_mean,
                         new_var, double *upd) except -1:
    # new = running * momentum + (1 - momentum) * batch, in float64 and
    # rounded once to new's dtype; upd: n doubles of scratch
    cdef double keep = 1.0 - momentum
    cdef Py_ssize_t j
    for j in range(n):
        upd[j] = rm[j] * momentum + keep * mean[j]
    _store(new_mean, n, upd)
    for j in range(n):
        upd[j] = rv[j] * momentum + keep * (var[j] * var_factor)
    _store(new_var, n, upd)
    return 0


def running_update(running_mean, running_var, const double[::1] mean,
                   const double[::1] var, double momentum, double var_factor,
                   new_mean, new_var):
    """The running-statistics update of bn_forward_train, for statistics
    computed elsewhere (synchronized batch norm); the same arrays as
    there."""
    cdef Py_ssize_t n = mean.shape[0]
    if var.shape[0] != n:
        raise ValueError("internal: statistics of the wrong length")
    cdef _Chans chans = _Chans(n, 3)
    cdef const double *rm = chans.get(running_mean)
    cdef const double *rv = chans.get(running_var)
    _update_running(n, rm, rv, &mean[0], &var[0], momentum, var_factor,
                    new_mean, new_var, chans.buf + chans.used)


def bn_forward_test(const floating[:, :, :] x, gamma, beta, mean, var,
                    double eps, floating[:, :, :] y, bint relu):
    cdef int rc
    cdef ptrdiff_t n1 = x.shape[0], n2 = x.shape[1], ln = x.shape[2]
    cdef ptrdiff_t xs1 = _st(x, 0), xs2 = _st(x, 1)
    cdef ptrdiff_t ys1 = _st(y, 0), ys2 = _st(y, 1)
    _same(x, y)
    cdef _Chans chans = _Chans(n2, 4)
    cdef const double *g = chans.get(gamma)
    cdef const double *b = chans.get(beta)
    cdef const double *rm = chans.get(mean)
    cdef const double *rv = chans.get(var)
    with nogil:
        if floating is float:
            rc = bn_forward_test_f32(&x[0, 0, 0], n1, n2, ln, xs1, xs2, g, b,
                                     rm, rv, eps, &y[0, 0, 0], ys1, ys2, relu)
        else:
            rc = bn_forward_test_f64(&x[0, 0, 0], n1, n2, ln, xs1, xs2, g, b,
                                     rm, rv, eps, &y[0, 0, 0], ys1, ys2, relu)
    _raise(rc)


def bn_backward(const floating[:, :, :] dy, const floating[:, :, :] x,
                const double[::1] mean, const double[::1] invstd, gamma, beta,
                bint relu, floating[:, :, :] dx, double[::1] dgamma,
                double[::1] dbeta):
    cdef int rc
    cdef ptrdiff_t n1 = x.shape[0], n2 = x.shape[1], ln = x.shape[2]
    cdef ptrdiff_t ds1 = _st(dy, 0), ds2 = _st(dy, 1)
    cdef ptrdiff_t xs1 = _st(x, 0), xs2 = _st(x, 1)
    cdef ptrdiff_t ts1 = _st(dx, 0), ts2 = _st(dx, 1)
    _same(x, dy)
    _same(x, dx)
    cdef _Chans chans = _Chans(n2, 2)
    cdef const double *g = chans.get(gamma)
    cdef const double *b = chans.get(beta)
    if (mean.shape[0] != n2 or invstd.shape[0] != n2
            or dgamma.shape[0] != n2 or dbeta.shape[0] != n2):
        raise ValueError("internal: statistics of the wrong length")
    with nogil:
        if floating is float:
            rc = bn_backward_f32(&dy[0, 0, 0], ds1, ds2, &x[0, 0, 0], xs1,
                                 xs2, n1, n2, ln, &mean[0], &invstd[0], g, b,
                                 relu, &dx[0, 0, 0], ts1, ts2, &dgamma[0],
                                 &dbeta[0])
        else:
            rc = bn_backward_f64(&dy[0, 0, 0], ds1, ds2, &x[0, 0, 0], xs1,
                                 xs2, n1, n2, ln, &mean[0], &invstd[0], g, b,
                                 relu, &dx[0, 0, 0], ts1, ts2, &dgamma[0],
                                 &dbeta[0])
    _raise(rc)


def ln_forward(const floating[:, :] x, gamma, beta, double eps,
               floating[:, :] y, double[::1] mean, double[::1] invstd):
    cdef ptrdiff_t n = x.shape[0], d = x.shape[1]
    cdef ptrdiff_t ldx = _ld(x), ldy = _ld(y)
    cdef _Chans chans = _Chans(d, 2)
    cdef const double *g = chans.get(gamma)
    cdef const double *b = chans.get(beta)
    if (y.shape[0] != n or y.shape[1] != d or mean.shape[0] != n
            or invstd.shape[0] != n):
        raise ValueError("internal: statistics of the wrong length")
    with nogil:
        if floating is float:
            ln_forward_f32(&x[0, 0], n, d, ldx, g, b, eps, &y[0, 0], ldy,
                           &mean[0], &invstd[0])
        else:
            ln_forward_f64(&x[0, 0], n, d, ldx, g, b, eps, &y[0, 0], ldy,
                           &mean[0], &invstd[0])


def ln_backward(const floating[:, :] dy, const floating[:, :] x,
                const double[::1] mean, const double[::1] invstd, gamma,
                floating[:, :] dx, double[::1] dgamma, double[::1] dbeta):
    cdef int rc
    cdef ptrdiff_t n = x.shape[0], d = x.shape[1]
    cdef ptrdiff_t lddy = _ld(dy), ldx = _ld(x), lddx = _ld(dx)
    cdef _Chans chans = _Chans(d, 1)
    cdef const double *g = chans.get(gamma)
    if (dy.shape[0] != n or dy.shape[1] != d or dx.shape[0] != n
            or dx.shape[1] != d or mean.shape[0] != n
            or invstd.shape[0] != n or dgamma.shape[0] != d
            or dbeta.shape[0] != d):
        raise ValueError("internal: statistics of the wrong length")
    with nogil:
        if floating is float:
            rc = ln_backward_f32(&dy[0, 0], lddy, &x[0, 0], ldx, n, d,
                                 &mean[0], &invstd[0], g, &dx[0, 0], lddx,
                                 &dgamma[0], &dbeta[0])
        else:
            rc = ln_backward_f64(&dy[0, 0], lddy, &x[0, 0], ldx, n, d,
                                 &mean[0], &invstd[0], g, &dx[0, 0], lddx,
                                 &dgamma[0], &dbeta[0])
    _raise(rc)


def gn_forward(const floating[:, :, :] x, ptrdiff_t groups, gamma, beta,
               double eps, floating[:, :, :] y, double[::1] mean,
               double[::1] invstd):
    cdef int rc
    cdef ptrdiff_t n = x.shape[0], c = x.shape[1], hw = x.shape[2]
    cdef ptrdiff_t xs = _st(x, 0), ys = _st(y, 0)
    _same(x, y)
    cdef _Chans chans = _Chans(c, 2)
    cdef const double *g = chans.get(gamma)
    cdef const double *b = chans.get(beta)
    if (groups < 1 or c % groups or mean.shape[0] != n * groups
            or invstd.shape[0] != n * groups):
        raise ValueError("internal: groups or statistics do not match")
    with nogil:
        if floating is float:
            rc = gn_forward_f32(&x[0, 0, 0], n, c, groups, hw, xs, g, b, eps,
                                &y[0, 0, 0], ys, &mean[0], &invstd[0])
        else:
            rc = gn_forward_f64(&x[0, 0, 0], n, c, groups, hw, xs, g, b, eps,
                                &y[0, 0, 0], ys, &mean[0], &invstd[0])
    _raise(rc)


def gn_backward(const floating[:, :, :] dy, const floating[:, :, :] x,
                ptrdiff_t groups, const double[::1] mean,
                const double[::1] invstd, gamma, floating[:, :, :] dx,
                double[::1] dgamma, double[::1] dbeta):
    cdef int rc
    cdef ptrdiff_t n = x.shape[0], c = x.shape[1], hw = x.shape[2]
    cdef ptrdiff_t ds = _st(dy, 0), xs = _st(x, 0), ts = _st(dx, 0)
    _same(x, dy)
    _same(x, dx)
    cdef _Chans chans = _Chans(c, 1)
    cdef const double *g = chans.get(gamma)
    if (groups < 1 or c % groups or mean.shape[0] != n * groups
            or invstd.shape[0] != n * groups or dgamma.shape[0] != c
            or dbeta.shape[0] != c):
        raise ValueError("internal: groups or statistics do not match")
    with nogil:
        if floating is float:
            rc = gn_backward_f32(&dy[0, 0, 0], ds, &x[0, 0, 0], xs, n, c,
                                 groups, hw, &mean[0], &invstd[0], g,
                                 &dx[0, 0, 0], ts, &dgamma[0], &dbeta[0])
        else:
            rc = gn_backward_f64(&dy[0, 0, 0], ds, &x[0, 0, 0], xs, n, c,
                                 groups, hw, &mean[0], &invstd[0], g,
                                 &dx[0, 0, 0], ts, &dgamma[0], &dbeta[0])
    _raise(rc)


# The pieces of batch norm that synchronized batch norm runs around its
# collectives (bnfast.distributed): statistics, normalization with given
# statistics, the backward's sums, dx from given sums and count.

def bn_stats(const floating[:, :, :] x, double[::1] mean, double[::1] m2):
    cdef int rc
    cdef ptrdiff_t n1 = x.shape[0], n2 = x.shape[1], ln = x.shape[2]
    cdef ptrdiff_t xs1 = _st(x, 0), xs2 = _st(x, 1)
    if mean.shape[0] != n2 or m2.shape[0] != n2:
        raise ValueError("internal: statistics of the wrong length")
    with nogil:
        if floating is float:
            rc = bn_stats_f32(&x[0, 0, 0], n1, n2, ln, xs1, xs2, &mean[0],
                              &m2[0])
        else:
            rc = bn_stats_f64(&x[0, 0, 0], n1, n2, ln, xs1, xs2, &mean[0],
                              &m2[0])
    _raise(rc)


def bn_apply(const floating[:, :, :] x, gamma, beta,
             const double[::1] mean, const double[::1] invstd,
             floating[:, :, :] y, bint relu):
    cdef int rc
    cdef ptrdiff_t n1 = x.shape[0], n2 = x.shape[1], ln = x.shape[2]
    cdef ptrdiff_t xs1 = _st(x, 0), xs2 = _st(x, 1)
    cdef ptrdiff_t ys1 = _st(y, 0), ys2 = _st(y, 1)
    _same(x, y)
    cdef _Chans chans = _Chans(n2, 2)
    cdef const double *g = chans.get(gamma)
    cdef const double *b = chans.get(beta)
    if mean.shape[0] != n2 or invstd.shape[0] != n2:
        raise ValueError("internal: statistics of the wrong length")
    with nogil:
        if floating is float:
            rc = bn_apply_f32(&x[0, 0, 0], n1, n2, ln, xs1, xs2, g, b,
                              &mean[0], &invstd[0], &y[0, 0, 0], ys1, ys2,
                              relu)
        else:
            rc = bn_apply_f64(&x[0, 0, 0], n1, n2, ln, xs1, xs2, g, b,
                              &mean[0], &invstd[0], &y[0, 0, 0], ys1, ys2,
                              relu)
    _raise(rc)


def bn_backward_reduce(const floating[:, :, :] dy,
                       const floating[:, :, :] x, const double[::1] mean,
                       const double[::1] invstd, gamma, beta, bint relu,
                       double[::1] sum_dy, double[::1] sum_dyxmu):
    cdef int rc
    cdef ptrdiff_t n1 = x.shape[0], n2 = x.shape[1], ln = x.shape[2]
    cdef ptrdiff_t ds1 = _st(dy, 0), ds2 = _st(dy, 1)
    cdef ptrdiff_t xs1 = _st(x, 0), xs2 = _st(x, 1)
    _same(x, dy)
    cdef _Chans chans = _Chans(n2, 2)
    cdef const double *g = chans.get(gamma)
    cdef const double *b = chans.get(beta)
    if (mean.shape[0] != n2 or invstd.shape[0] != n2
            or sum_dy.shape[0] != n2 or sum_dyxmu.shape[0] != n2):
        raise ValueError("internal: statistics of the wrong length")
    with nogil:
        if floating is float:
            rc = bn_backward_reduce_f32(&dy[0, 0, 0], ds1, ds2, &x[0, 0, 0],
                                        xs1, xs2, n1, n2, ln, &mean[0],
                                        &invstd[0], g, b, relu, &sum_dy[0],
                                        &sum_dyxmu[0])
        else:
            rc = bn_backward_reduce_f64(&dy[0, 0, 0], ds1, ds2, &x[0, 0, 0],
                                        xs1, xs2, n1, n2, ln, &mean[0],
                                        &invstd[0], g, b, relu, &sum_dy[0],
                                        &sum_dyxmu[0])
    _raise(rc)


def bn_backward_apply(const floating[:, :, :] dy, const floating[:, :, :] x,
                      const double[::1] mean, const double[::1] invstd,
                      gamma, beta, bint relu, double count,
                      const double[::1] sum_dy, const double[::1] sum_dyxmu,
                      floating[:, :, :] dx, double[::1] dgamma,
                      double[::1] dbeta):
    cdef int rc
    cdef ptrdiff_t n1 = x.shape[0], n2 = x.shape[1], ln = x.shape[2]
    cdef ptrdiff_t ds1 = _st(dy, 0), ds2 = _st(dy, 1)
    cdef ptrdiff_t xs1 = _st(x, 0), xs2 = _st(x, 1)
    cdef ptrdiff_t ts1 = _st(dx, 0), ts2 = _st(dx, 1)
    _same(x, dy)
    _same(x, dx)
    cdef _Chans chans = _Chans(n2, 2)
    cdef const double *g = chans.get(gamma)
    cdef const double *b = chans.get(beta)
    if (mean.shape[0] != n2 or invstd.shape[0] != n2
            or sum_dy.shape[0] != n2 or sum_dyxmu.shape[0] != n2
            or dgamma.shape[0] != n2 or dbeta.shape[0] != n2):
        raise ValueError("internal: statistics of the wrong length")
    if not count > 0:
        raise ValueError("internal: the count must be positive")
    with nogil:
        if floating is float:
            rc = bn_backward_apply_f32(&dy[0, 0, 0], ds1, ds2, &x[0, 0, 0],
                                       xs1, xs2, n1, n2, ln, &mean[0],
                                       &invstd[0], g, b, relu, count,
                                       &sum_dy[0], &sum_dyxmu[0],
                                       &dx[0, 0, 0], ts1, ts2, &dgamma[0],
                                       &dbeta[0])
        else:
            rc = bn_backward_apply_f64(&dy[0, 0, 0], ds1, ds2, &x[0, 0, 0],
                                       xs1, xs2, n1, n2, ln, &mean[0],
                                       &invstd[0], g, b, relu, count,
                                       &sum_dy[0], &sum_dyxmu[0],
                                       &dx[0, 0, 0], ts1, ts2, &dgamma[0],
                                       &dbeta[0])
    _raise(rc)


# ---------------------------------------------------------------- benchmark
# Benchmark-only, not part of the API: the streaming-store copy of
# csrc/bench_copy.c, the second half of benchmarks/bench.py's roofline.

def stream_copy(cnp.ndarray src not None, cnp.ndarray dst not None):
    """Copy the bytes of ``src`` into ``dst`` with streaming (non-temporal)
    stores, one thread, GIL released.  Both C-contiguous with the same
    nbytes, ``dst`` writeable; dtypes and shapes are not looked at.
    Benchmark-only (the roofline of benchmarks/bench.py)."""
    cdef size_t n = <size_t>cnp.PyArray_NBYTES(src)
    if <size_t>cnp.PyArray_NBYTES(dst) != n:
        raise ValueError(f"stream_copy: src has {cnp.PyArray_NBYTES(src)} "
                         f"bytes, dst {cnp.PyArray_NBYTES(dst)}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(src)
            and cnp.PyArray_IS_C_CONTIGUOUS(dst)):
        raise ValueError("stream_copy: src and dst must be C-contiguous")
    if not cnp.PyArray_ISWRITEABLE(dst):
        raise ValueError("stream_copy: dst is read-only")
    cdef const void *s = cnp.PyArray_DATA(src)
    cdef void *d = cnp.PyArray_DATA(dst)
    with nogil:
        bnf_stream_copy(s, d, n)


def stream_copy_streams():
    """True if stream_copy uses streaming stores on this build (x86-64),
    False if it is a plain memcpy."""
    return bool(bnf_stream_copy_streams())
