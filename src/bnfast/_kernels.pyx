# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True
"""The call path of every bnfast function, on the NumPy C API: validation,
the panel view of any layout, output allocation, the per-channel
parameters as doubles, the C kernel with the GIL released, the running
statistics and the caches.  bnfast.functional wraps these functions in
its documented signatures; bnfast.distributed builds synchronized batch
norm from BnForward and BnBackward.

How it is shaped, and why: a tiny call must cost a few microseconds, so
nothing on the way is a Python-level call in the common case (no typed
memoryviews either: acquiring one costs about a microsecond).  There is
no separate fast path.  Each check is one function whose first branch is
the common case (an exact, native, aligned float32/float64 ndarray; a
plain float; an exact dict), answered from the array's flags, dtype number,
shape and strides; anything else falls through to the general code of the
same function, which converts or raises.  So every error message is in
exactly one place, and checks run in the order of the seeds'
documentation, all before anything is written: on error nothing is
modified.

A "panel" (csrc/bnfast.h) is the geometry (n1, n2, len, s1, s2) of an array
seen as n2 channels of n1 runs of len contiguous elements; _order finds,
for an array and its channel axis, which axes merge into the runs and
which into n1, or says that the layout needs a copy first.  Outputs are
allocated in the same element order as their input's panel (_like), and a
caller's out= is written directly when its own layout gives a panel in that
order (_panel_as).
"""
import numbers
from sys import modules as _sys_modules

import numpy as np

from libc.math cimport sqrt
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

cimport numpy as cnp

cnp.import_array()

MODES = ("train", "test")
ACTIVATIONS = (None, "relu")

cdef enum:
    MAXDIMS = 64      # NPY_MAXDIMS of NumPy 2 (32 on NumPy 1)
    SMALL = 256       # per-channel doubles held on the stack


# ------------------------------------------------------------- kernels

# The one dtype dispatch: the kernels of each storage dtype, a row of
# the C table of the SIMD level in use (bnf_kernels_for, bnfast.h) for
# the dtype code of x (_code); a call site reads _kern(x).<kernel>.  A new
# kernel is one more field (bnfast.h, table.c, _kernels.pxd); a new dtype
# one more row and code.


cdef extern from "numpy/arrayobject.h":
    enum: NPY_HALF  # (not in numpy's __init__.pxd)


# the storage dtypes: the rows of bnf_kernels_for (-1: none)
cdef enum:
    DT_F32 = BNF_F32
    DT_F64 = BNF_F64
    DT_F16 = BNF_F16
    DT_BF16 = BNF_BF16

# the type number of ml_dtypes.bfloat16 once an array of it was seen (a
# user-defined type: its number is given when ml_dtypes registers it);
# -1 before.  bnfast never imports ml_dtypes: an array of bfloat16 exists
# only after its owner did.
cdef int _bf16_num = -1


cdef inline int _code_of(int t) noexcept:
    if t == cnp.NPY_FLOAT:
        return DT_F32
    if t == cnp.NPY_DOUBLE:
        return DT_F64
    if t == NPY_HALF:
        return DT_F16
    if t == _bf16_num:
        return DT_BF16
    return -1


cdef inline int _code(cnp.ndarray a) noexcept:
    """The dtype code of a validated (float) array."""
    return _code_of(cnp.PyArray_TYPE(a))


cdef inline const bnf_kernels *_kern(cnp.ndarray x) noexcept:
    """The kernels of x's storage dtype (x validated by _float_array)."""
    return bnf_kernels_for(_code(x))


cdef bint _is_bfloat16(object dt) except -1:
    """dt is ml_dtypes.bfloat16's dtype (recording its type number)."""
    global _bf16_num
    if dt.itemsize != 2 or dt.name != "bfloat16":
        return False
    mld = _sys_modules.get("ml_dtypes")
    if mld is None or dt != np.dtype(mld.bfloat16):
        return False
    _bf16_num = dt.num
    return True


cdef double _finfo_eps(object dt) except -1.0:
    """The machine epsilon of a float dtype (ml_dtypes' finfo for
    bfloat16, which np.finfo does not know)."""
    if _is_bfloat16(dt):
        return float(_sys_modules["ml_dtypes"].finfo(dt).eps)
    return float(np.finfo(dt).eps)


cdef inline int _raise(int rc) except -1:
    if rc == BNF_ENOMEM:
        raise MemoryError("bnfast: could not allocate a scratch buffer")
    return 0


def simd_level():
    """The SIMD level the kernels run at: "baseline", "x86-64-v3" or
    "x86-64-v4" (the best of this build's levels that the CPU runs, unless
    BNFAST_SIMD_LEVEL or set_simd_level chose another)."""
    return bnf_simd_name(bnf_simd_get()).decode()


def simd_levels():
    """{level name: (built, runs on this CPU)} for every SIMD level."""
    return {bnf_simd_name(i).decode(): (bool(bnf_simd_built(i)),
                                        bool(bnf_simd_cpu(i)))
            for i in range(BNF_SIMD_NLEVELS)}


def set_simd_level(name):
    """Run the kernels at SIMD level `name` (one that this build has and
    this CPU runs: simd_levels()); returns the previous level's name.

    Every level computes bitwise the same results; this is for tests,
    benchmarks and working around a CPU.  Not safe while another thread is
    in a bnfast call.  The BNFAST_SIMD_LEVEL environment variable sets it
    at import."""
    names = [bnf_simd_name(i).decode() for i in range(BNF_SIMD_NLEVELS)]
    if name not in names:
        raise ValueError(f"unknown SIMD level {name!r}; the levels are "
                         f"{', '.join(map(repr, names))}")
    level = names.index(name)
    if not bnf_simd_built(level):
        raise ValueError(f"SIMD level {name!r} is not in this build of "
                         "bnfast (simd_levels())")
    if not bnf_simd_cpu(level):
        raise ValueError(f"this CPU does not run SIMD level {name!r} "
                         "(simd_levels())")
    previous = simd_level()
    bnf_simd_set(level)
    return previous


bnf_threads_init()
# the SIMD level chosen once, here (cpuid), not by a first kernel call
# that two threads might make at once
bnf_simd_get()

MAX_THREADS = BNF_MAX_THREADS


def set_num_threads(int n):
    """n threads (0: OpenMP's count); True when n > 1 cannot be honoured
    (a child forked after a parallel region: it stays on one thread).
    bnfast.set_num_threads checks n."""
    return bool(bnf_set_num_threads(n))


def get_num_threads():
    return bnf_get_num_threads()


def _thread_state():
    """(n as set, 0 for OpenMP's count; forked and serial; forked after a
    parallel region; the most threads allowed)."""
    cdef int state[4]
    bnf_get_thread_state(state)
    return state[0], bool(state[1]), bool(state[2]), state[3]


def _set_parallel_min(Py_ssize_t nbytes):
    """Jobs over fewer bytes than this run on one thread (default 1 MiB).
    Private: for tests that exercise the threaded kernels on small arrays,
    and for measurements."""
    bnf_set_parallel_min(nbytes)


def _get_parallel_min():
    return bnf_get_parallel_min()


def have_openmp():
    return bool(bnf_have_openmp())


# ---------------------------------------------------------- validation

cdef inline bint _is_float(cnp.ndarray a) noexcept:
    return _code(a) >= 0 and cnp.PyArray_ISNOTSWAPPED(a)


cdef int _not_masked(object a, str name) except -1:
    """A masked array (numpy.ma) raises TypeError: the kernels would read
    its masked values as data.  (No MaskedArray exists before numpy.ma is
    imported, so this imports nothing.)"""
    ma = _sys_modules.get("numpy.ma")
    if ma is not None and isinstance(a, ma.MaskedArray):
        raise TypeError(
            f"{name} must not be a masked array (numpy.ma.MaskedArray): "
            f"bnfast would read its masked values as data; pass "
            f"{name}.filled(value), or numpy.ma.getdata({name}) to ignore "
            f"the mask")
    return 0


cdef cnp.ndarray _float_array(object a, str name, int convert=-1):
    """``a`` as a float16, bfloat16, float32 or float64 ndarray in native
    byte order.

    Array-likes (lists) and ndarray subclasses (np.matrix, np.memmap) are
    read as plain ndarrays; byte-swapped float arrays are copied to native
    order; masked arrays raise TypeError.  ``convert``: the type number
    (x's) that integer and bool arrays are converted to (gamma and beta);
    -1: any other dtype raises TypeError."""
    cdef cnp.ndarray arr
    if cnp.PyArray_CheckExact(a) and _is_float(<cnp.ndarray>a):
        return <cnp.ndarray>a
    _not_masked(a, name)
    arr = np.asarray(a)
    dt = arr.dtype
    if convert >= 0 and dt.kind in "biu":
        return cnp.PyArray_Cast(arr, convert)
    if _is_bfloat16(dt):
        return arr
    if dt.kind != "f" or dt.itemsize not in (2, 4, 8):
        if convert >= 0:
            raise TypeError(
                f"{name} must be a float16, bfloat16, float32 or float64 "
                f"array, or of integers or bools (converted to x's dtype), "
                f"got dtype {dt}")
        raise TypeError(
            f"{name} must be a float16, bfloat16, float32 or float64 "
            f"array, got dtype {dt}")
    if not dt.isnative:
        arr = arr.astype(dt.newbyteorder("="))
    if not _is_float(arr):  # a float of 2, 4 or 8 bytes, not numpy's own
        arr = arr.astype(
            {2: np.float16, 4: np.float32}.get(dt.itemsize, np.float64))
    return arr


cdef inline object _shape(cnp.ndarray a):
    return (<object>a).shape


cdef bint _shape_is(cnp.ndarray a, tuple shape) except -1:
    """a.shape == shape, without building a tuple."""
    cdef Py_ssize_t k, nd = cnp.PyArray_NDIM(a)
    if len(shape) != nd:
        return False
    for k in range(nd):
        if cnp.PyArray_DIM(a, k) != <Py_ssize_t>shape[k]:
            return False
    return True


cdef int _check_batch(cnp.ndarray x, str name, bint allow_empty) except -1:
    """x of shape (N, ...) with N > 0 (unless allow_empty) and features."""
    cdef int k, nd = cnp.PyArray_NDIM(x)
    if nd < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (N, D), got shape "
            f"{_shape(x)}")
    if cnp.PyArray_DIM(x, 0) == 0 and not allow_empty:
        raise ValueError(
            f"{name} is an empty batch (N = 0), shape {_shape(x)}")
    for k in range(1, nd):
        if cnp.PyArray_DIM(x, k) == 0:
            raise ValueError(f"{name} has zero features, shape {_shape(x)}")
    return 0


cdef int _channel_axis(cnp.ndarray x, object axis, bint allow_empty) except -1:
    """Validate x (at least 2-D, a non-empty batch, channels and elements
    per channel) and its channel axis; the axis as a non-negative int."""
    cdef int k, nd = cnp.PyArray_NDIM(x)
    cdef Py_ssize_t ax
    if nd < 2:
        raise ValueError(
            f"x must have at least 2 dimensions (N, C, ...), got shape "
            f"{_shape(x)}")
    if type(axis) is not int and (not isinstance(axis, (int, np.integer))
                                  or isinstance(axis, bool)):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    if not -nd <= axis < nd:
        raise ValueError(
            f"axis {axis} is out of bounds for x of {nd} dimensions")
    ax = int(axis)
    if ax < 0:
        ax += nd
    if ax == 0:
        raise ValueError("axis must not be 0, the batch axis")
    if cnp.PyArray_DIM(x, 0) == 0 and not allow_empty:
        raise ValueError(f"x is an empty batch (N = 0), shape {_shape(x)}")
    for k in range(1, nd):
        if cnp.PyArray_DIM(x, k) == 0:
            raise ValueError(
                f"x has no elements per channel, shape {_shape(x)}")
    return <int>ax


cdef cnp.ndarray _per_feature(object a, str name, Py_ssize_t d,
                              cnp.ndarray x, int axis, bint param=False,
                              tuple fshape=None):
    """A per-feature array (gamma, beta, running statistics) validated:
    float32/float64 of shape (d,) or the feature shape of x: x.shape[1:]
    for axis 0 (fshape when given: a normalized_shape), else ones except
    d along axis (e.g. (1, C, 1, 1)).  param (gamma, beta): integers and
    bools are converted to x's dtype."""
    cdef cnp.ndarray arr
    if (cnp.PyArray_CheckExact(a) and _is_float(<cnp.ndarray>a)
            and cnp.PyArray_NDIM(<cnp.ndarray>a) == 1
            and cnp.PyArray_DIM(<cnp.ndarray>a, 0) == d):
        return <cnp.ndarray>a
    arr = _float_array(a, name, cnp.PyArray_TYPE(x) if param else -1)
    xshape = _shape(x)
    if fshape is not None:
        feature_shape = fshape
    elif axis == 0:
        feature_shape = xshape[1:]
    else:
        feature_shape = tuple(1 if k != axis else d
                              for k in range(len(xshape)))
    shape = _shape(arr)
    if shape != (d,) and shape != feature_shape:
        expected = f"({d},)"
        if len(feature_shape) > 1:
            expected += f" or {feature_shape}"
        raise ValueError(
            f"{name} must have shape {expected} to match x, got {shape}")
    return arr


cdef cnp.ndarray _param(object a, str name, Py_ssize_t d, cnp.ndarray x,
                        int axis, tuple fshape=None):
    """gamma or beta validated as _per_feature's param; None stays None
    (affine-free: gamma = 1, beta = 0 in the kernels, no array made)."""
    if a is None:
        return None
    return _per_feature(a, name, d, x, axis, True, fshape)


cdef cnp.ndarray _flat(cnp.ndarray a, Py_ssize_t d):
    """A validated per-feature array as the C-contiguous, aligned (d,)
    array the kernels read: itself, a view or a copy (None: None)."""
    cdef cnp.ndarray flat = a
    if a is None:
        return None
    if cnp.PyArray_NDIM(a) != 1:
        flat = a.reshape(d)
    if not (cnp.PyArray_IS_C_CONTIGUOUS(flat) and cnp.PyArray_ISALIGNED(flat)):
        flat = cnp.PyArray_NewCopy(flat, cnp.NPY_CORDER)
    return flat


cdef bint _activation(object value) except -1:
    """True for the fused ReLU, False for none; anything else raises."""
    if value is None:
        return False
    if not isinstance(value, str) or value not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {ACTIVATIONS}, got {value!r}")
    return value == "relu"


cdef inline object _get(object param, str key, object default):
    if type(param) is dict:
        return (<dict>param).get(key, default)
    return param.get(key, default)


cdef bint _mode_is_train(object param) except -1:
    """bn_param's mode: True for 'train', False for 'test'."""
    if not isinstance(param, dict):
        raise TypeError(f"bn_param must be a dict, got {type(param).__name__}")
    if "mode" not in param:
        raise KeyError(f"bn_param['mode'] is required: one of {MODES}")
    m = param["mode"]
    if not isinstance(m, str) or m not in MODES:
        raise ValueError(f"bn_param['mode'] must be one of {MODES}, got {m!r}")
    return m == "train"


cdef int _check_dict(object param, str name) except -1:
    if not isinstance(param, dict):
        raise TypeError(f"{name} must be a dict, got {type(param).__name__}")
    return 0


cdef double _real_in(object value, str name, double low,
                     object high=None) except? -1.0:
    """A real scalar checked low <= value (<= high), as a double."""
    cdef double v
    if type(value) is float:
        v = value
        if v >= low and (high is None or v <= <double>high):
            return v
    if (not isinstance(value, numbers.Real)
            or isinstance(value, (bool, np.bool_))):
        raise TypeError(
            f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not (v >= low and (high is None or v <= <double>high)):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {rng}, got {value!r}")
    return v


cdef int _extent(cnp.ndarray a, char **lo, char **hi) noexcept:
    # the bytes a spans: [lo, hi)
    cdef int k
    cdef Py_ssize_t n, st
    lo[0] = hi[0] = cnp.PyArray_BYTES(a)
    for k in range(cnp.PyArray_NDIM(a)):
        n = cnp.PyArray_DIM(a, k)
        st = cnp.PyArray_STRIDE(a, k)
        if st < 0:
            lo[0] += st * (n - 1)
        else:
            hi[0] += st * (n - 1)
    hi[0] += cnp.PyArray_ITEMSIZE(a)
    return 0


cdef bint _overlap(cnp.ndarray a, object b) except -1:
    """Whether a and b (any object: only arrays have memory) share memory:
    exact (np.shares_memory) when their byte ranges intersect, True when
    that is too hard to decide (as np.may_share_memory)."""
    cdef char *alo
    cdef char *ahi
    cdef char *blo
    cdef char *bhi
    if not cnp.PyArray_Check(b):
        return False
    if cnp.PyArray_SIZE(a) == 0 or cnp.PyArray_SIZE(<cnp.ndarray>b) == 0:
        return False
    _extent(a, &alo, &ahi)
    _extent(<cnp.ndarray>b, &blo, &bhi)
    if ahi <= blo or bhi <= alo:  # as np.may_share_memory
        return False
    try:
        return np.shares_memory(a, b, max_work=100_000)
    except np.exceptions.TooHardError:
        return True


def _overlaps_itself(a):
    """Whether two elements of ``a`` share a byte: every element's byte
    offset, sorted (O(a.size) memory and O(n log n) time: only for the
    layouts _self_overlap cannot decide from the strides)."""
    offsets = np.zeros(1, np.int64)
    for n, s in zip(a.shape, a.strides):
        if n > 1:
            offsets = (offsets[:, None]
                       + np.arange(n, dtype=np.int64) * s).ravel()
    offsets.sort()
    return bool((np.diff(offsets) < a.itemsize).any())


cdef int _self_overlap(cnp.ndarray a) except -1:
    """Whether elements of a overlap one another: 0 no, 1 yes, 2 yes with a
    stride of 0.  Contiguous arrays answer from their flags.  Otherwise
    the axes of length > 1 sorted by |stride|: when each stride is at
    least the extent of the block of the smaller ones, the blocks nest and
    nothing overlaps; the strides of any array made by slicing, reshaping
    or transposing nest so.  Layouts that do not nest (only as_strided
    makes them: a sliding window, interleaved axes) are decided exactly,
    element by element (_overlaps_itself)."""
    cdef int k, j, m = 0, nd = cnp.PyArray_NDIM(a)
    cdef Py_ssize_t n, st
    cdef Py_ssize_t key[MAXDIMS]
    cdef Py_ssize_t dim[MAXDIMS]
    cdef double ext  # no overflow for strides of absurd as_strided views
    if (cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_IS_F_CONTIGUOUS(a)
            or cnp.PyArray_SIZE(a) == 0):
        return 0
    for k in range(nd):
        n = cnp.PyArray_DIM(a, k)
        if n == 1:
            continue
        st = _iabs(cnp.PyArray_STRIDE(a, k))
        if st == 0:
            return 2
        j = m
        while j > 0 and key[j - 1] > st:
            key[j] = key[j - 1]
            dim[j] = dim[j - 1]
            j -= 1
        key[j] = st
        dim[j] = n
        m += 1
    ext = cnp.PyArray_ITEMSIZE(a)
    for j in range(m):
        if key[j] < ext:
            return 1 if _overlaps_itself(a) else 0
        ext += <double>key[j] * <double>(dim[j] - 1)
    return 0


cdef int _out_array(object out, tuple shape, cnp.ndarray x,
                    tuple inputs) except -1:
    """Validate a caller's output array: an ndarray (any subclass but a
    masked array) of exactly ``shape`` and x's dtype, writeable, whose
    elements do not overlap one another, sharing no memory with any of
    ``inputs``: (name, the array the call reads, the caller's object it
    came from) triples.  Both are checked: the array read may be a copy
    of the caller's (byte-swapped, strided, reshaped or converted), which
    out must not overwrite either (a caller's object that is not an array
    but has memory, a memoryview or a tensor, is seen through
    np.asarray).  A partial overlap would read values already overwritten,
    and the cache keeps x for the backward."""
    cdef cnp.ndarray o
    cdef int k
    if not cnp.PyArray_CheckExact(out):
        _not_masked(out, "out")
        if not cnp.PyArray_Check(out):
            raise TypeError(f"out must be a numpy.ndarray, got "
                            f"{type(out).__name__}")
    o = <cnp.ndarray>out
    if not (cnp.PyArray_TYPE(o) == cnp.PyArray_TYPE(x)
            and cnp.PyArray_ISNOTSWAPPED(o)):
        dtype = (<object>x).dtype
        if (<object>o).dtype != dtype:
            raise TypeError(f"out must have dtype {dtype} (x's), got "
                            f"{(<object>o).dtype}")
    if not _shape_is(o, shape):
        raise ValueError(f"out must have shape {shape}, got {_shape(o)}")
    if not cnp.PyArray_ISWRITEABLE(o):
        raise ValueError("out is read-only")
    k = _self_overlap(o)
    if k == 2:
        raise ValueError("out has elements sharing memory (a stride of "
                         "0): each result needs its own")
    if k:
        raise ValueError("out has elements sharing memory (overlapping "
                         "strides, as a sliding window view): each result "
                         "needs its own")
    for what, a, orig in inputs:
        if orig is not a and not cnp.PyArray_Check(orig) and not isinstance(
                orig, (list, tuple, float, int)):
            orig = np.asarray(orig)  # a buffer (memoryview), a tensor
        if _overlap(o, a) or (orig is not a and _overlap(o, orig)):
            raise ValueError(f"out must not share memory with {what}")
    return 0


# ---------------------------------------------------------- the layout

cdef struct order_t:
    # An array's axes as a panel: those merged into the n1 runs
    # (outermost first), the channel axis, those merged into each run.
    int axis, nout, nin
    int outer[MAXDIMS]
    int inner[MAXDIMS]


cdef struct panel_t:
    # sizes, and strides in elements (1 for an axis of length 1: never
    # used to address memory; a single channel counts as adjacent ones)
    Py_ssize_t n1, n2, len, s1, s2, sr


# The C API's descriptors (bnfast.h), filled on the stack for each call;
# the fields a kernel does not read stay zero.

cdef inline bnf_panel _cpanel(const panel_t *x, const panel_t *y,
                              const panel_t *dy) noexcept nogil:
    """The kernels' panel: x's shape, and the strides of x, the output y
    (or dx) and dy (NULL: not taking part)."""
    cdef bnf_panel b
    memset(&b, 0, sizeof(b))
    b.n1, b.n2, b.len = x.n1, x.n2, x.len
    b.x.s1, b.x.s2 = x.s1, x.s2
    if y != NULL:
        b.y.s1, b.y.s2 = y.s1, y.s2
    if dy != NULL:
        b.dy.s1, b.dy.s2 = dy.s1, dy.s2
    return b


cdef inline bnf_panel _cpanel_rows(Py_ssize_t n1, Py_ssize_t n2,
                                   Py_ssize_t len, Py_ssize_t xs,
                                   Py_ssize_t ys,
                                   Py_ssize_t ds) noexcept nogil:
    """The panel of layer norm (n1 rows of n2 features, len 1) and group
    norm (n1 samples of n2 channels of len): row or sample strides xs (x),
    ys (y or dx), ds (dy), channels len apart."""
    cdef bnf_panel b
    memset(&b, 0, sizeof(b))  # the residual's strides too: never read here
    b.n1, b.n2, b.len = n1, n2, len
    b.x.s1, b.y.s1, b.dy.s1 = xs, ys, ds
    b.x.s2 = b.y.s2 = b.dy.s2 = len
    return b


cdef inline bnf_params _cparams(const double *gamma,
                                const double *beta) noexcept nogil:
    cdef bnf_params q
    memset(&q, 0, sizeof(q))
    q.gamma, q.beta = gamma, beta
    return q


cdef inline bnf_results _cresults() noexcept nogil:
    cdef bnf_results r
    memset(&r, 0, sizeof(r))
    return r


cdef bint _merge(cnp.ndarray a, const int *dims, int nd, Py_ssize_t *size,
                 Py_ssize_t *stride) noexcept:
    """Size and byte stride of the axes dims (outermost first) of a merged
    into one; False when they do not merge.  Length-1 axes are skipped."""
    cdef Py_ssize_t sz = 1, st = 0, n, s
    cdef int j
    for j in range(nd - 1, -1, -1):
        n = cnp.PyArray_DIM(a, dims[j])
        if n == 1:
            continue
        s = cnp.PyArray_STRIDE(a, dims[j])
        if sz > 1 and s != st * sz:
            return False
        if sz == 1:
            st = s
        sz *= n
    size[0] = sz
    stride[0] = st
    return True


cdef inline Py_ssize_t _iabs(Py_ssize_t v) noexcept:
    return -v if v < 0 else v


cdef bint _order(cnp.ndarray a, int axis, order_t *o) noexcept:
    """The panel order of a with channels along axis; False when the
    layout needs a copy first (also unaligned data: the kernels read whole
    elements).  Merges the other axes by stride: those outside the channel
    into n1, those inside it into contiguous runs."""
    cdef int nd = cnp.PyArray_NDIM(a), k, j, m, n_oth = 0
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(a)
    cdef Py_ssize_t c = cnp.PyArray_DIM(a, axis)
    cdef Py_ssize_t cs = cnp.PyArray_STRIDE(a, axis), st, size, stride
    cdef int others[MAXDIMS]
    cdef Py_ssize_t key[MAXDIMS]
    o.axis = axis
    o.nout = o.nin = 0
    if not cnp.PyArray_ISALIGNED(a):
        return False
    if cnp.PyArray_IS_C_CONTIGUOUS(a):  # one run per channel, or one in all
        for k in range(nd):
            if k == axis:
                continue
            if c == 1 or k > axis:
                o.inner[o.nin] = k
                o.nin += 1
            else:
                o.outer[o.nout] = k
                o.nout += 1
        return True
    for k in range(nd):
        if cnp.PyArray_STRIDE(a, k) % item:
            return False
    # the other axes of length > 1 by decreasing (|stride|, axis)
    for k in range(nd):
        if k == axis or cnp.PyArray_DIM(a, k) == 1:
            continue
        st = _iabs(cnp.PyArray_STRIDE(a, k))
        j = n_oth
        while j > 0 and (key[j - 1] < st or (key[j - 1] == st
                                             and others[j - 1] < k)):
            key[j] = key[j - 1]
            others[j] = others[j - 1]
            j -= 1
        key[j] = st
        others[j] = k
        n_oth += 1
    for m in range(n_oth):
        # a stride of 0 (broadcast) is never part of a run
        if c > 1 and (key[m] > _iabs(cs) or key[m] == 0):
            o.outer[o.nout] = others[m]
            o.nout += 1
        else:  # a single channel: everything that merges goes in runs
            o.inner[o.nin] = others[m]
            o.nin += 1
    if not _merge(a, o.outer, o.nout, &size, &stride):
        return False
    if not _merge(a, o.inner, o.nin, &size, &stride):
        return False
    if o.nin and stride != item:        # runs must be contiguous
        if c == 1 and o.nout == 0:      # one channel of strided rows
            memcpy(o.outer, o.inner, o.nin * sizeof(int))
            o.nout, o.nin = o.nin, 0
        else:
            return False
    if o.nin == 0 and c > 1 and cs != item:
        return False                    # rows need adjacent channels
    return True


cdef inline Py_ssize_t _elems(Py_ssize_t n, Py_ssize_t stride,
                              Py_ssize_t item) noexcept:
    return 1 if n == 1 else stride // item


cdef bint _panel(cnp.ndarray a, const order_t *o, panel_t *p) noexcept:
    """The panel of a (of the shape of the array o was made for) in the
    element order o; False when a's layout does not give one fit for the
    kernels: unit-stride runs, or for runs of one element adjacent
    channels (anything else would run element by element, several times
    slower than computing into a new array and copying)."""
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(a), s1, sr, k
    if not cnp.PyArray_ISALIGNED(a):
        return False
    for k in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_STRIDE(a, k) % item:
            return False
    if not _merge(a, o.outer, o.nout, &p.n1, &s1):
        return False
    if not _merge(a, o.inner, o.nin, &p.len, &sr):
        return False
    p.n2 = cnp.PyArray_DIM(a, o.axis)
    p.s1 = _elems(p.n1, s1, item)
    p.s2 = _elems(p.n2, cnp.PyArray_STRIDE(a, o.axis), item)
    p.sr = _elems(p.len, sr, item)
    if p.len > 1:
        return p.sr == 1
    return p.n2 == 1 or p.s2 == 1


cdef cnp.ndarray _like(cnp.ndarray a, const order_t *o, panel_t *p):
    """A new array of a's shape and dtype whose memory is its panel in C
    order, so that it is laid out in a's axis order (C order for C order,
    Fortran for Fortran); p: its panel."""
    cdef int nd = cnp.PyArray_NDIM(a), k, j
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(a), step
    cdef cnp.npy_intp strides[MAXDIMS]
    cdef cnp.ndarray out
    if cnp.PyArray_IS_C_CONTIGUOUS(a):
        out = cnp.PyArray_EMPTY(nd, cnp.PyArray_DIMS(a), cnp.PyArray_TYPE(a),
                                0)
    else:
        for k in range(nd):  # length-1 axes: any stride
            strides[k] = item
        step = item
        for j in range(o.nin - 1, -1, -1):
            strides[o.inner[j]] = step
            step *= cnp.PyArray_DIM(a, o.inner[j])
        strides[o.axis] = step
        step *= cnp.PyArray_DIM(a, o.axis)
        for j in range(o.nout - 1, -1, -1):
            strides[o.outer[j]] = step
            step *= cnp.PyArray_DIM(a, o.outer[j])
        out = cnp.PyArray_New(np.ndarray, nd, cnp.PyArray_DIMS(a),
                              cnp.PyArray_TYPE(a), strides, NULL, 0, 0, None)
    if not _panel(out, o, p):
        raise RuntimeError("internal: a new array without a panel")
    return out


cdef cnp.ndarray _view(object out, cnp.ndarray x):
    """out reshaped to x's shape when that is a view of out, else None."""
    cdef cnp.ndarray o = <cnp.ndarray>out
    if cnp.PyArray_NDIM(o) == cnp.PyArray_NDIM(x):
        return o  # the same shape: validated
    v = o.reshape(_shape(x))
    return v if np.may_share_memory(v, o) else None


cdef object _result(cnp.ndarray res, object out, tuple shape):
    """The result in the caller's shape: ``out`` (copied into when the
    kernel could not write it directly), else the new array."""
    if out is None:
        if _shape_is(res, shape):
            return res
        return cnp.PyArray_Reshape(res, shape)
    if cnp.PyArray_BYTES(res) != cnp.PyArray_BYTES(<cnp.ndarray>out):
        np.copyto(out, cnp.PyArray_Reshape(res, shape))
    return out


cdef cnp.ndarray _into(object out, cnp.ndarray x, const order_t *o,
                       panel_t *p):
    """The array to compute into: the caller's ``out`` itself when its
    layout gives a panel in x's element order, else a new array laid out
    like x (copied into out by _result)."""
    cdef cnp.ndarray v
    if out is not None:
        v = _view(out, x)
        if v is not None and _panel(v, o, p):
            return v
    return _like(x, o, p)


cdef cnp.ndarray _new_doubles(Py_ssize_t n):
    cdef cnp.npy_intp dim = n
    return cnp.PyArray_EMPTY(1, &dim, cnp.NPY_DOUBLE, 0)


cdef cnp.ndarray _empty_of(tuple shape, int typenum):
    cdef cnp.npy_intp dims[MAXDIMS]
    cdef int k, nd = len(shape)
    for k in range(nd):
        dims[k] = shape[k]
    return cnp.PyArray_EMPTY(nd, dims, typenum, 0)


cdef inline char *_data(cnp.ndarray a) noexcept:
    return cnp.PyArray_BYTES(a)


# ------------------------------------------- per-channel values as doubles

cdef struct chans_t:
    # Scratch doubles for one call: float32 per-channel arrays converted,
    # intermediate statistics.  On the stack up to SMALL doubles.
    double *buf
    Py_ssize_t n, used, cap
    double small[SMALL]


cdef int _chans_init(chans_t *c, Py_ssize_t n, int count) except -1:
    c.n = n
    c.used = 0
    c.cap = n * count
    if c.cap <= SMALL:
        c.buf = c.small
    else:
        c.buf = <double *>malloc(<size_t>c.cap * sizeof(double))
        if c.buf == NULL:
            raise MemoryError("bnfast: could not allocate a scratch buffer")
    return 0


cdef inline void _chans_free(chans_t *c) noexcept:
    if c.buf != c.small:
        free(c.buf)
    c.buf = NULL


cdef inline double *_scratch(chans_t *c) noexcept:
    cdef double *d = c.buf + c.used
    c.used += c.n
    return d


cdef const double *_doubles(chans_t *c, cnp.ndarray a) noexcept:
    # a: c.n contiguous native float32 or float64 values (validated by the
    # callers); float64 is read in place, float32 converted to scratch;
    # None (an affine-free gamma or beta): NULL, which the kernels read as
    # gamma = 1, beta = 0
    # (float16 and bfloat16 too: any float dtype of _float_array)
    cdef const float *f
    cdef const uint16_t *h
    cdef double *d
    cdef Py_ssize_t i
    cdef int code
    if a is None:
        return NULL
    code = _code(a)
    if code == DT_F64:
        return <const double *>cnp.PyArray_DATA(a)
    d = _scratch(c)
    if code == DT_F32:
        f = <const float *>cnp.PyArray_DATA(a)
        for i in range(c.n):
            d[i] = f[i]
        return d
    h = <const uint16_t *>cnp.PyArray_DATA(a)
    if code == DT_F16:
        for i in range(c.n):
            d[i] = bnf_f16_to_f64(h[i])
    else:
        for i in range(c.n):
            d[i] = bnf_bf16_to_f64(h[i])
    return d


cdef void _store(cnp.ndarray a, Py_ssize_t n, const double *v) noexcept:
    # Round n values into a (a new C-contiguous array of a float dtype of
    # _float_array), each rounded once to nearest even.
    cdef double *d
    cdef float *f
    cdef uint16_t *h
    cdef Py_ssize_t i
    cdef int code = _code(a)
    if code == DT_F64:
        d = <double *>cnp.PyArray_DATA(a)
        for i in range(n):
            d[i] = v[i]
    elif code == DT_F32:
        f = <float *>cnp.PyArray_DATA(a)
        for i in range(n):
            f[i] = <float>v[i]
    elif code == DT_F16:
        h = <uint16_t *>cnp.PyArray_DATA(a)
        for i in range(n):
            h[i] = bnf_f64_to_f16(v[i])
    else:
        h = <uint16_t *>cnp.PyArray_DATA(a)
        for i in range(n):
            h[i] = bnf_f64_to_bf16(v[i])


cdef cnp.ndarray _stats(object a, Py_ssize_t n, str what):
    # statistics handed in from Python (bnfast.distributed): n float64
    if not (cnp.PyArray_CheckExact(a)
            and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_DOUBLE
            and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a)
            and cnp.PyArray_SIZE(<cnp.ndarray>a) == n
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)
            and cnp.PyArray_ISALIGNED(<cnp.ndarray>a)):
        raise ValueError(f"internal: {what} must be {n} contiguous float64")
    return <cnp.ndarray>a


# -------------------------------------------------------------- caches

cdef class _Cache:
    """Base of the caches the forward passes return: references to the
    normalized x and to gamma (flattened, float32 or float64), per-channel
    or per-sample statistics, and what the gradients' shapes and dtypes
    need.  The backward reads x and gamma again: do not modify them in
    between (as with the reference's cache).  gamma is None for a forward
    with gamma=None; ``affine`` tells which of gamma and beta were given
    (their gradients are None otherwise).  Read-only."""

    cdef readonly cnp.ndarray x, gamma, mean, invstd
    cdef readonly tuple shape, gamma_shape
    cdef readonly object gamma_dtype
    cdef tuple beta_shape   # beta's, for dbeta when gamma is None
    cdef int beta_type
    cdef bint no_beta

    @property
    def affine(self):
        """(gamma given, beta given): False for a forward's None."""
        return (self.gamma is not None, not self.no_beta)

    def __repr__(self):
        return (f"<{type(self).__name__} x{self.shape} {self.x.dtype}, "
                f"{self.mean.shape[0]} statistics>")


cdef class BatchNormCache(_Cache):
    """What the batch norm forward passes keep for the backward pass.

    References to x (the array that was normalized: the caller's, or a
    view or copy of it; ``panel`` is its 3-D panel view) and to gamma and
    beta, plus the per-channel batch mean and 1/sqrt(var + eps): O(channels)
    memory beside x, no copy of x_hat (the backward recomputes it).

    With ``residual=z`` (``has_residual``) and the fused ReLU it keeps a
    reference to z too (``residual``, in the element order of x: z itself
    or a copy): the backward's mask needs it; do not modify z in between.

    After a 'test' mode forward (``frozen`` True) ``mean`` and ``invstd``
    are the running statistics used, as float64 copies made by the
    forward (1/sqrt(running_var + eps)): a later update of the running
    statistics does not change this cache's backward, which treats them
    as constants.
    """

    cdef readonly cnp.ndarray beta
    cdef readonly int axis
    cdef readonly bint relu
    cdef readonly bint frozen
    cdef bint synchronized
    # the fused residual: has_residual (the backward returns dresidual);
    # residual, the array read (x's layout), kept with the ReLU only (its
    # mask needs it); residual_lost: overwritten by out=residual in 'test'
    # mode, so the ReLU's backward cannot run
    cdef readonly bint has_residual
    cdef readonly cnp.ndarray residual
    cdef bint residual_lost

    @property
    def panel(self):
        """x's panel: the 3-D view (n1, channels, run length) the kernels
        read (None for an empty shard of synchronized batch norm)."""
        cdef order_t o
        cdef int j
        if cnp.PyArray_SIZE(self.x) == 0:
            return None
        _order(self.x, self.axis, &o)
        outer = [o.outer[j] for j in range(o.nout)]
        inner = [o.inner[j] for j in range(o.nin)]
        ones = [k for k in range(cnp.PyArray_NDIM(self.x))
                if k != self.axis and k not in outer and k not in inner]
        perm = ones + outer + [self.axis] + inner
        n1 = 1
        for k in outer:
            n1 *= cnp.PyArray_DIM(self.x, k)
        return self.x.transpose(perm).reshape(
            n1, cnp.PyArray_DIM(self.x, self.axis), -1)


cdef class LayerNormCache(_Cache):
    """What layernorm_forward keeps for the backward pass: references to x
    (as (N, D) rows) and gamma, and the per-sample mean and 1/std."""


cdef class RMSNormCache(_Cache):
    """What rmsnorm_forward keeps for the backward pass: references to x
    (as (N, D) rows) and gamma, the per-row mean of squares (``mean``)
    and 1/sqrt(mean + eps) (``invstd``)."""


cdef class GroupNormCache(_Cache):
    """What spatial_groupnorm_forward keeps for the backward pass:
    references to x (as (N, C, H*W), or (N, H*W, C) for channels last)
    and gamma, the number of groups, the channel axis (1, or -1 for
    channels last), and the per-(sample, group) mean and 1/std."""

    cdef readonly Py_ssize_t groups
    cdef readonly int axis


cdef int _fill(_Cache c, cnp.ndarray x, cnp.ndarray g, cnp.ndarray gflat,
               cnp.ndarray b, cnp.ndarray bflat, cnp.ndarray mean,
               cnp.ndarray invstd, tuple shape) except -1:
    # g, b: the validated gamma and beta (None when not given), gflat and
    # bflat their flat arrays
    c.x = x
    c.gamma = gflat
    c.mean = mean
    c.invstd = invstd
    c.shape = shape
    if g is not None:
        c.gamma_dtype = g.descr
        c.gamma_shape = _shape(g)
    c.no_beta = b is None
    if b is not None:
        c.beta_shape = _shape(b)
        c.beta_type = cnp.PyArray_TYPE(bflat)
    return 0


cdef int _check_cache(_Cache c, Py_ssize_t nstats, Py_ssize_t nparams,
                      object beta=None) except -1:
    # The cache's arrays still fit x (they are read through raw pointers:
    # an array resized in place since the forward would be read out of
    # bounds); cheap, and never false for a cache used as documented.
    if (cnp.PyArray_SIZE(c.mean) != nstats
            or cnp.PyArray_SIZE(c.invstd) != nstats
            or (c.gamma is not None
                and cnp.PyArray_SIZE(c.gamma) != nparams)
            or (beta is not None
                and cnp.PyArray_SIZE(<cnp.ndarray>beta) != nparams)):
        raise ValueError("cache: its statistics or gamma no longer match "
                         "the cached x (modified since the forward pass?)")
    return 0


cdef cnp.ndarray _param_grad(_Cache c, bint beta=False):
    """A new array of gamma's shape and dtype, for dgamma or dbeta (for
    dbeta beta's when gamma is None); None for a parameter that was
    None."""
    if beta and c.no_beta or not beta and c.gamma is None:
        return None
    if c.gamma is None:
        return _empty_of(c.beta_shape, c.beta_type)
    return _empty_of(c.gamma_shape, cnp.PyArray_TYPE(c.gamma))


cdef double *_grad_buffer(cnp.ndarray grad, chans_t *ch) noexcept:
    # where the kernel writes a parameter gradient: grad itself for
    # float64, else scratch rounded into it by _grad_done (scratch only,
    # for a gradient not wanted: None)
    if grad is not None and cnp.PyArray_TYPE(grad) == cnp.NPY_DOUBLE:
        return <double *>cnp.PyArray_DATA(grad)
    return _scratch(ch)


cdef inline void _grad_done(cnp.ndarray grad, const double *v,
                            Py_ssize_t n) noexcept:
    if grad is not None and cnp.PyArray_TYPE(grad) != cnp.NPY_DOUBLE:
        _store(grad, n, v)


cdef cnp.ndarray _dout(object dout, object cache, type cache_type,
                       str forward_name, object out):
    """Validate dout against a cache of cache_type, and the caller's out
    for dx (None: a new array); dout as an array of x's dtype and internal
    shape."""
    cdef _Cache c
    cdef cnp.ndarray d
    if not isinstance(cache, cache_type):
        raise TypeError(
            f"cache must be the cache returned by {forward_name}, "
            f"got {type(cache).__name__}")
    c = <_Cache>cache
    d = _float_array(dout, "dout")
    if not _shape_is(d, c.shape):
        raise ValueError(
            f"dout must have the shape of x {c.shape}, got {_shape(d)}")
    if out is not None:  # everything the backward reads
        # beta when the fused ReLU's mask is recomputed with it, else x
        # again (checked already; one tuple of fixed length is cheapest)
        beta = (c.x if cache_type is not BatchNormCache
                or not (<BatchNormCache>c).relu else (<BatchNormCache>c).beta)
        z = (c.x if cache_type is not BatchNormCache
             or (<BatchNormCache>c).residual is None
             else (<BatchNormCache>c).residual)
        _out_array(out, c.shape, c.x, (
            ("dout", d, dout), ("the cached x", c.x, c.x),
            ("the cached gamma", c.gamma, c.gamma),
            ("the cached statistics", c.mean, c.mean),
            ("the cached statistics", c.invstd, c.invstd),
            ("the cached beta", beta, beta),
            ("the cached residual", z, z)))
    if cnp.PyArray_TYPE(d) != cnp.PyArray_TYPE(c.x):
        d = d.astype((<object>c.x).dtype)
    if cnp.PyArray_NDIM(d) != cnp.PyArray_NDIM(c.x):
        d = d.reshape(_shape(c.x))
    elif not _shape_is(c.x, c.shape):  # x reshaped in place since
        raise ValueError("cache: the cached x no longer has the shape of "
                         "the forward pass")
    return d


# ---------------------------------------------------------- batch norm

cdef class BnForward:
    """A validated batch norm forward call: bnfast.functional runs it
    (run), bnfast.distributed merges its statistics across processes
    between the steps (stats, apply, cache, update_running).  Made by
    bn_forward; everything is validated before any step writes."""

    cdef readonly tuple shape       # the caller's shape of x and out
    # what the kernels read: x, its (N, D) view, or a copy with a panel
    cdef readonly cnp.ndarray x
    cdef readonly int axis
    cdef readonly bint train, relu
    cdef readonly double eps, momentum
    cdef readonly Py_ssize_t count  # values per channel in this x
    cdef readonly Py_ssize_t channels
    cdef cnp.ndarray g, gflat, b, bflat, rm, rmflat, rv, rvflat
    cdef object out, bn_param
    cdef order_t o
    cdef panel_t p
    cdef readonly bint has_residual
    cdef cnp.ndarray z   # the residual read: in x's element order (zp)
    cdef panel_t zp
    cdef bint inplace    # out is the residual itself

    cdef void _residual(self, bnf_panel *bp, bnf_params *q) noexcept:
        # the fused residual's pointer and strides (the kernel sees out ==
        # residual as the in-place add: the same pointer and strides)
        if self.has_residual and self.count:
            q.residual = _data(self.z)
            bp.z.s1, bp.z.s2 = self.zp.s1, self.zp.s2

    @property
    def mode(self):
        return "train" if self.train else "test"

    cdef double _factor(self, Py_ssize_t count) except -1.0:
        if not _get(self.bn_param, "unbiased_running_var", False):
            return 1.0
        if count < 2:
            raise ValueError(
                "bn_param['unbiased_running_var'] needs more than 1 value "
                f"per channel, got {count}")
        return <double>count / <double>(count - 1)

    def unbiased_factor(self, count):
        """The running variance's factor for count values per channel (1,
        or count / (count - 1) for the unbiased one); raises for count < 2
        when unbiased."""
        return self._factor(count)

    cdef int _update(self, const double *mean, const double *var,
                     double factor, chans_t *ch) except -1:
        # new = running * momentum + (1 - momentum) * batch, in float64 and
        # rounded once to the running statistics' dtype (and shape); into
        # new arrays, then bn_param
        cdef Py_ssize_t j, n = self.channels
        cdef double mom = self.momentum, keep = 1.0 - self.momentum
        cdef const double *rm = _doubles(ch, self.rmflat)
        cdef const double *rv = _doubles(ch, self.rvflat)
        cdef double *upd = _scratch(ch)
        cdef cnp.ndarray new_mean = cnp.PyArray_EMPTY(
            cnp.PyArray_NDIM(self.rm), cnp.PyArray_DIMS(self.rm),
            cnp.PyArray_TYPE(self.rm), 0)
        cdef cnp.ndarray new_var = cnp.PyArray_EMPTY(
            cnp.PyArray_NDIM(self.rv), cnp.PyArray_DIMS(self.rv),
            cnp.PyArray_TYPE(self.rv), 0)
        for j in range(n):
            upd[j] = rm[j] * mom + keep * mean[j]
        _store(new_mean, n, upd)
        for j in range(n):
            upd[j] = rv[j] * mom + keep * (var[j] * factor)
        _store(new_var, n, upd)
        self.bn_param["running_mean"] = new_mean
        self.bn_param["running_var"] = new_var
        return 0

    def update_running(self, mean, var, double factor):
        """The running statistics updated with the batch's (float64
        arrays of one value per channel), into bn_param."""
        cdef chans_t ch
        cdef cnp.ndarray m = _stats(mean, self.channels, "mean")
        cdef cnp.ndarray v = _stats(var, self.channels, "var")
        _chans_init(&ch, self.channels, 3)
        try:
            self._update(<double *>cnp.PyArray_DATA(m),
                         <double *>cnp.PyArray_DATA(v), factor, &ch)
        finally:
            _chans_free(&ch)

    cdef BatchNormCache _cache(self, cnp.ndarray mean, cnp.ndarray invstd,
                               BatchNormCache c):
        _fill(c, self.x, self.g, self.gflat, self.b, self.bflat, mean, invstd,
              self.shape)
        c.beta = self.bflat
        c.axis = self.axis
        c.relu = self.relu
        c.has_residual = self.has_residual
        if self.has_residual and self.relu:
            if self.inplace:  # 'test' mode: the caller's z is overwritten
                c.residual_lost = True
            else:
                c.residual = self.z
        return c

    def cache(self, mean, invstd, cls):
        """A cache of class cls (a subclass of BatchNormCache: the local
        backward rejects it) with the given statistics."""
        if not issubclass(cls, BatchNormCache) or cls is BatchNormCache:
            raise TypeError("internal: expected a subclass of BatchNormCache")
        cdef BatchNormCache c = self._cache(
            _stats(mean, self.channels, "mean"),
            _stats(invstd, self.channels, "invstd"), cls.__new__(cls))
        c.synchronized = True
        return c

    def stats(self):
        """(mean, mean_lo, M2) per channel of this x, float64 (zeros when x
        is empty).  mean is rounded as in bn_forward_train; mean_lo, for
        float64 x, is each mean's low part (mean + mean_lo to about twice
        double precision: a merge of means without their rounding), None
        for x computed in float32 (float32, float16, bfloat16: its means
        need none)."""
        cdef cnp.ndarray mean = _new_doubles(self.channels)
        cdef cnp.ndarray mean_lo = _new_doubles(self.channels)
        cdef cnp.ndarray m2 = _new_doubles(self.channels)
        cdef int rc = 0
        cdef bnf_panel bp = _cpanel(&self.p, NULL, NULL)
        cdef bnf_params q = _cparams(NULL, NULL)
        cdef bnf_results r = _cresults()
        cdef char *x
        cdef bint f32 = _code(self.x) != DT_F64  # computed in float32
        cdef bnf_stats_fn kernel = _kern(self.x).bn_stats
        mean[...] = 0
        mean_lo[...] = 0
        m2[...] = 0
        if self.count == 0:
            return mean, (None if f32 else mean_lo), m2
        x = _data(self.x)
        r.mean = <double *>cnp.PyArray_DATA(mean)
        if not f32:
            r.mean_lo = <double *>cnp.PyArray_DATA(mean_lo)
        r.m2 = <double *>cnp.PyArray_DATA(m2)
        with nogil:
            rc = kernel(&bp, &q, x, &r)
        _raise(rc)
        return mean, (None if f32 else mean_lo), m2

    def apply(self, mean, invstd):
        """The normalization of x with the given statistics: the output in
        the caller's shape (out, when given)."""
        cdef cnp.ndarray m = _stats(mean, self.channels, "mean")
        cdef cnp.ndarray s = _stats(invstd, self.channels, "invstd")
        cdef cnp.ndarray res
        cdef panel_t yp
        cdef bnf_panel bp
        cdef bnf_params q
        cdef chans_t ch
        cdef int rc = 0
        cdef char *x
        cdef char *y
        cdef bnf_apply_fn kernel = _kern(self.x).bn_apply
        if self.count == 0:
            if self.out is None:
                return _empty_of(self.shape, cnp.PyArray_TYPE(self.x))
            return self.out
        res = _into(self.out, self.x, &self.o, &yp)
        bp = _cpanel(&self.p, &yp, NULL)
        _chans_init(&ch, self.channels, 2)
        try:
            q = _cparams(_doubles(&ch, self.gflat), _doubles(&ch, self.bflat))
            q.relu = self.relu
            q.mean = <double *>cnp.PyArray_DATA(m)
            q.invstd = <double *>cnp.PyArray_DATA(s)
            self._residual(&bp, &q)
            x = _data(self.x)
            y = _data(res)
            with nogil:
                rc = kernel(&bp, &q, x, y)
        finally:
            _chans_free(&ch)
        _raise(rc)
        return _result(res, self.out, self.shape)

    def run(self, cls=None):
        """This call on this process alone: (out, cache).  cls: in 'test'
        mode, the cache's class (a subclass of BatchNormCache, for
        bnfast.distributed; also for an empty x)."""
        if self.train:
            return self._train()
        return self._test(cls)

    cdef tuple _test(self, object cls):
        cdef cnp.ndarray res
        cdef panel_t yp
        cdef bnf_panel bp
        cdef bnf_params q
        cdef chans_t ch
        cdef int rc = 0
        cdef char *x
        cdef char *y
        cdef bnf_apply_fn kernel = _kern(self.x).bn_apply
        cdef cnp.ndarray mean, invstd
        cdef double *m
        cdef double *s
        cdef const double *v
        cdef Py_ssize_t j
        cdef BatchNormCache c
        if cls is not None and (not issubclass(cls, BatchNormCache)
                                or cls is BatchNormCache):
            raise TypeError("internal: expected a subclass of BatchNormCache")
        # the statistics used, the cache's own float64 copies (the
        # backward treats them as constants): invstd as bn_forward_test's
        mean = _new_doubles(self.channels)
        invstd = _new_doubles(self.channels)
        m = <double *>cnp.PyArray_DATA(mean)
        s = <double *>cnp.PyArray_DATA(invstd)
        _chans_init(&ch, self.channels, 2)
        try:
            v = _doubles(&ch, self.rmflat)
            for j in range(self.channels):
                m[j] = v[j]
            v = _doubles(&ch, self.rvflat)
            for j in range(self.channels):
                s[j] = 1.0 / sqrt(v[j] + self.eps)
        finally:
            _chans_free(&ch)
        c = self._cache(mean, invstd, BatchNormCache.__new__(
            BatchNormCache if cls is None else cls))
        c.frozen = True
        c.synchronized = cls is not None
        if self.count == 0:  # an empty shard in 'test' mode: nothing to do
            if cls is None:
                c = None
            if self.out is None:
                return _empty_of(self.shape, cnp.PyArray_TYPE(self.x)), c
            return self.out, c
        res = _into(self.out, self.x, &self.o, &yp)
        bp = _cpanel(&self.p, &yp, NULL)
        _chans_init(&ch, self.channels, 2)
        try:
            q = _cparams(_doubles(&ch, self.gflat), _doubles(&ch, self.bflat))
            q.mean = m
            q.invstd = s
            q.relu = self.relu
            self._residual(&bp, &q)
            x = _data(self.x)
            y = _data(res)
            with nogil:
                rc = kernel(&bp, &q, x, y)
        finally:
            _chans_free(&ch)
        _raise(rc)
        self.bn_param["running_mean"] = self.rm
        self.bn_param["running_var"] = self.rv
        return _result(res, self.out, self.shape), c

    cdef tuple _train(self):
        cdef double factor = self._factor(self.count)
        cdef panel_t yp
        cdef cnp.ndarray res = _into(self.out, self.x, &self.o, &yp)
        cdef cnp.ndarray mean = _new_doubles(self.channels)
        cdef cnp.ndarray invstd = _new_doubles(self.channels)
        cdef bnf_panel bp = _cpanel(&self.p, &yp, NULL)
        cdef bnf_params q
        cdef bnf_results r = _cresults()
        cdef chans_t ch
        cdef int rc = 0
        cdef bnf_fwd_fn kernel = _kern(self.x).bn_forward_train
        cdef char *x = _data(self.x)
        cdef char *y = _data(res)
        r.mean = <double *>cnp.PyArray_DATA(mean)
        r.invstd = <double *>cnp.PyArray_DATA(invstd)
        _chans_init(&ch, self.channels, 6)
        try:
            q = _cparams(_doubles(&ch, self.gflat), _doubles(&ch, self.bflat))
            q.eps = self.eps
            q.relu = self.relu
            self._residual(&bp, &q)
            r.var = _scratch(&ch)
            with nogil:
                rc = kernel(&bp, &q, x, y, &r)
            _raise(rc)
            cache = self._cache(mean, invstd,
                                BatchNormCache.__new__(BatchNormCache))
            self._update(r.mean, r.var, factor, &ch)
        finally:
            _chans_free(&ch)
        return _result(res, self.out, self.shape), cache


cdef bint _same_view(cnp.ndarray a, cnp.ndarray b) noexcept:
    """a and b are the same elements in the same order: one data pointer,
    shape and strides (of the axes longer than 1)."""
    cdef int k
    if (cnp.PyArray_BYTES(a) != cnp.PyArray_BYTES(b)
            or cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(b)):
        return False
    for k in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIM(a, k) != cnp.PyArray_DIM(b, k):
            return False
        if (cnp.PyArray_DIM(a, k) > 1
                and cnp.PyArray_STRIDE(a, k) != cnp.PyArray_STRIDE(b, k)):
            return False
    return True


cdef cnp.ndarray _residual_array(object residual, cnp.ndarray x):
    """The residual as an array of exactly x's shape and dtype (no
    broadcasting, no conversion: float32 z with float64 x is an error)."""
    cdef cnp.ndarray z = _float_array(residual, "residual")
    if cnp.PyArray_TYPE(z) != cnp.PyArray_TYPE(x):
        raise TypeError(f"residual must have dtype {(<object>x).dtype} "
                        f"(x's), got {(<object>z).dtype}")
    if not _shape_is(z, _shape(x)):
        raise ValueError(f"residual must have the shape of x {_shape(x)}, "
                         f"got {_shape(z)}")
    return z


cdef BnForward _bn_forward(object x, object gamma, object beta,
                           object bn_param, bint spatial, object axis,
                           object activation, object out, bint allow_empty,
                           object residual=None):
    """Validate a batch norm forward call; spatial: channels along axis
    (spatial_batchnorm_forward), else per feature of x.reshape(N, -1)
    (batchnorm_forward).  Checks in the documented order, before
    anything is written."""
    cdef BnForward f = BnForward.__new__(BnForward)
    cdef cnp.ndarray xa = _float_array(x, "x"), xs
    cdef int ax, fax, k
    cdef Py_ssize_t d
    cdef cnp.npy_intp dd
    if spatial:
        ax = _channel_axis(xa, axis, allow_empty)
        d = cnp.PyArray_DIM(xa, ax)
        xs = xa
        fax = ax
    else:
        _check_batch(xa, "x", allow_empty)
        ax = 1
        fax = 0
        d = 1
        for k in range(1, cnp.PyArray_NDIM(xa)):
            d *= cnp.PyArray_DIM(xa, k)
        xs = xa
        if cnp.PyArray_NDIM(xa) != 2:
            xs = xa.reshape(cnp.PyArray_DIM(xa, 0), d)
    dd = d
    f.shape = _shape(xa)
    f.axis = ax
    f.channels = d
    f.train = _mode_is_train(bn_param)
    f.relu = _activation(activation)
    f.g = _param(gamma, "gamma", d, xa, fax)
    f.gflat = _flat(f.g, d)
    f.b = _param(beta, "beta", d, xa, fax)
    f.bflat = _flat(f.b, d)
    f.eps = _real_in(_get(bn_param, "eps", 1e-5), "bn_param['eps']", 0.0)
    f.momentum = _real_in(_get(bn_param, "momentum", 0.9),
                          "bn_param['momentum']", 0.0, 1.0)
    rm = _get(bn_param, "running_mean", None)
    if rm is None:
        rm = cnp.PyArray_ZEROS(1, &dd, cnp.PyArray_TYPE(xa), 0)
    f.rm = _per_feature(rm, "bn_param['running_mean']", d, xa, fax)
    f.rmflat = _flat(f.rm, d)
    rv = _get(bn_param, "running_var", None)
    if rv is None:
        rv = cnp.PyArray_ZEROS(1, &dd, cnp.PyArray_TYPE(xa), 0)
    f.rv = _per_feature(rv, "bn_param['running_var']", d, xa, fax)
    f.rvflat = _flat(f.rv, d)
    f.has_residual = residual is not None
    za = _residual_array(residual, xa) if f.has_residual else xa
    # out=residual: the in-place add, when out is exactly the caller's
    # array read (not in 'train' mode with the ReLU, whose backward reads
    # z again); any other overlap with it raises below
    f.inplace = (f.has_residual and out is not None and za is residual
                 and cnp.PyArray_Check(out)
                 and _same_view(<cnp.ndarray>out, za))
    if f.inplace and f.train and f.relu:
        raise ValueError("out must not be residual in 'train' mode with "
                         "activation='relu': the backward reads residual")
    if out is not None:  # what is read (xs: below), and the caller's
        _out_array(out, f.shape, xa, (
            ("x", xa, x), ("gamma", f.gflat, gamma), ("beta", f.bflat, beta),
            ("bn_param['running_mean']", f.rmflat, rm),
            ("bn_param['running_var']", f.rvflat, rv),
            ("residual", xa if f.inplace or not f.has_residual else za,
             x if f.inplace or not f.has_residual else residual)))
    f.out = out
    f.bn_param = bn_param
    f.count = cnp.PyArray_SIZE(xs) // d
    if f.count and not _order(xs, ax, &f.o):
        xs = cnp.PyArray_NewCopy(xs, cnp.NPY_CORDER)  # C order, aligned
        _order(xs, ax, &f.o)
    f.x = xs
    if f.count and not _panel(xs, &f.o, &f.p):
        raise RuntimeError("internal: x without a panel")
    if f.has_residual:
        zs = za
        if cnp.PyArray_NDIM(za) != cnp.PyArray_NDIM(xs):
            zs = za.reshape(_shape(xs))
        # z's panel in x's element order: a view when its layout allows,
        # else a copy laid out like x (then out=residual is not in place)
        if f.count and not _panel(zs, &f.o, &f.zp):
            relaid = _like(xs, &f.o, &f.zp)
            np.copyto(relaid, zs)
            zs = relaid
        f.z = zs
    return f


def bn_forward(x, gamma, beta, bn_param, axis, activation, out,
               bint allow_empty, residual=None):
    """A validated BnForward (bnfast.distributed): axis None for
    batchnorm_forward's per-feature normalization, else the channel axis;
    allow_empty: x may have N = 0."""
    return _bn_forward(x, gamma, beta, bn_param, axis is not None, axis,
                       activation, out, allow_empty, residual)


def batchnorm_forward(x, gamma, beta, bn_param, activation=None, out=None,
                      residual=None):
    return _bn_forward(x, gamma, beta, bn_param, False, None, activation,
                       out, False, residual).run()


def spatial_batchnorm_forward(x, gamma, beta, bn_param, axis=1,
                              activation=None, out=None, residual=None):
    return _bn_forward(x, gamma, beta, bn_param, True, axis, activation,
                       out, False, residual).run()


cdef class BnBackward:
    """A validated batch norm backward call: bnfast.functional runs it
    (run), bnfast.distributed sums its reductions across processes
    between the steps (reduce, apply, param_grads).  Made by
    bn_backward."""

    cdef BatchNormCache c
    cdef cnp.ndarray dout, relaid
    cdef object out
    cdef order_t o
    cdef panel_t xp, dp
    cdef readonly Py_ssize_t channels
    cdef bint relu        # the kernels' mask (not after the residual's gate)
    cdef readonly object dresidual  # with a residual: its gradient
    cdef cnp.ndarray gsums  # the gate's sums of g, g * (x - mean), or None

    cdef int _gate(self) except -1:
        # the fused residual with the ReLU: g = dout masked by the forward's
        # relu(bn(x) + z) > 0, into a new array laid out like x; g is
        # dresidual and the dout of the plain backward that follows
        cdef panel_t gp, zp
        cdef cnp.ndarray g = _like(self.c.x, &self.o, &gp)
        cdef bnf_panel bp = _cpanel(&self.xp, &gp, &self.dp)
        cdef bnf_params q
        cdef bnf_results r = _cresults()
        cdef cnp.ndarray sums = _new_doubles(2 * self.channels)
        cdef chans_t ch
        cdef int rc = 0
        cdef char *x = _data(self.c.x)
        cdef char *dy = _data(self.dout)
        cdef char *y = _data(g)
        cdef bnf_bwd_fn kernel = _kern(self.c.x).bn_residual_gate
        if not _panel(self.c.residual, &self.o, &zp):
            raise RuntimeError("internal: the cached residual without a panel")
        bp.z.s1, bp.z.s2 = zp.s1, zp.s2
        _chans_init(&ch, self.channels, 2)
        try:
            q = _cparams(_doubles(&ch, self.c.gamma),
                         _doubles(&ch, self.c.beta))
            q.mean = <double *>cnp.PyArray_DATA(self.c.mean)
            q.invstd = <double *>cnp.PyArray_DATA(self.c.invstd)
            q.residual = _data(self.c.residual)
            # the sums of g too (across rows in the gate's pass)
            r.sum_dy = <double *>cnp.PyArray_DATA(sums)
            r.sum_dyxmu = r.sum_dy + self.channels
            with nogil:
                rc = kernel(&bp, &q, x, dy, y, &r)
        finally:
            _chans_free(&ch)
        _raise(rc)
        self.gsums = sums
        self.dout = g
        self.dp = gp
        self.relu = False
        self.dresidual = _result(g, None, self.c.shape)
        return 0

    cdef int _dx(self, cnp.ndarray dx, panel_t *tp, const double *count_sums,
                 double count, double *dgamma, double *dbeta) except -1:
        # dx into dx (panel tp): the fused backward, or with count_sums
        # (sum dy, sum dy * (x - mean): 2 * channels) its apply step
        cdef bnf_panel bp = _cpanel(&self.xp, tp, &self.dp)
        cdef bnf_params q
        cdef bnf_results r = _cresults()
        cdef chans_t ch
        cdef int rc = 0
        cdef Py_ssize_t c = self.channels
        cdef char *x = _data(self.c.x)
        cdef char *dy = _data(self.dout)
        cdef char *y = _data(dx)
        cdef bnf_bwd_fn kernel = (_kern(self.c.x).bn_backward
                                  if count_sums == NULL
                                  else _kern(self.c.x).bn_backward_apply)
        r.dgamma, r.dbeta = dgamma, dbeta
        _chans_init(&ch, c, 2)
        try:
            q = _cparams(_doubles(&ch, self.c.gamma),
                         _doubles(&ch, self.c.beta))
            q.mean = <double *>cnp.PyArray_DATA(self.c.mean)
            q.invstd = <double *>cnp.PyArray_DATA(self.c.invstd)
            q.relu = self.relu
            q.frozen = self.c.frozen
            if count_sums != NULL:
                q.count = count
                q.sum_dy, q.sum_dyxmu = count_sums, count_sums + c
            with nogil:
                rc = kernel(&bp, &q, x, dy, y, &r)
        finally:
            _chans_free(&ch)
        return _raise(rc)

    cdef tuple _run(self):
        cdef panel_t tp
        cdef chans_t ch
        cdef Py_ssize_t c = self.channels
        cdef cnp.ndarray dx = _into(self.out, self.c.x, &self.o, &tp)
        cdef cnp.ndarray dgamma = _param_grad(self.c)
        cdef cnp.ndarray dbeta = _param_grad(self.c, True)
        cdef double *dg
        cdef double *db
        _chans_init(&ch, c, 2)
        try:
            dg = _grad_buffer(dgamma, &ch)
            db = _grad_buffer(dbeta, &ch)
            if self.gsums is not None and np.isfinite(self.gsums).all():
                # the residual's gate summed g already: the apply step
                self._dx(dx, &tp, <double *>cnp.PyArray_DATA(self.gsums),
                         <double>(cnp.PyArray_SIZE(self.c.x) // c), dg, db)
            else:  # (non-finite sums: bn_backward's rescue, from g)
                self._dx(dx, &tp, NULL, 0.0, dg, db)
            _grad_done(dgamma, dg, c)
            _grad_done(dbeta, db, c)
        finally:
            _chans_free(&ch)
        if self.c.has_residual:
            return (_result(dx, self.out, self.c.shape), dgamma, dbeta,
                    self.dresidual)
        return _result(dx, self.out, self.c.shape), dgamma, dbeta

    def reduce(self):
        """The sums of dy and dy * (x - mean) per channel, as one float64
        array of 2 * channels (zeros when x is empty)."""
        cdef Py_ssize_t c = self.channels
        cdef cnp.ndarray sums = _new_doubles(2 * c)
        cdef double *s = <double *>cnp.PyArray_DATA(sums)
        cdef bnf_panel bp
        cdef bnf_params q
        cdef bnf_results r = _cresults()
        cdef chans_t ch
        cdef int rc = 0
        cdef char *x
        cdef char *dy
        cdef bnf_reduce_fn kernel = _kern(self.c.x).bn_backward_reduce
        sums[...] = 0
        if cnp.PyArray_SIZE(self.c.x) == 0:
            return sums
        if self.gsums is not None:  # the residual's gate summed g
            return self.gsums.copy()
        bp = _cpanel(&self.xp, NULL, &self.dp)
        x = _data(self.c.x)
        dy = _data(self.dout)
        r.sum_dy, r.sum_dyxmu = s, s + c
        _chans_init(&ch, c, 2)
        try:
            q = _cparams(_doubles(&ch, self.c.gamma),
                         _doubles(&ch, self.c.beta))
            q.mean = <double *>cnp.PyArray_DATA(self.c.mean)
            q.invstd = <double *>cnp.PyArray_DATA(self.c.invstd)
            q.relu = self.relu
            with nogil:
                rc = kernel(&bp, &q, x, dy, &r)
        finally:
            _chans_free(&ch)
        _raise(rc)
        return sums

    def apply(self, double count, sums):
        """dx from the sums of dy and dy * (x - mean) (as reduce's) over
        count values per channel: in the caller's shape (out, when
        given)."""
        cdef Py_ssize_t c = self.channels
        cdef cnp.ndarray s = _stats(sums, 2 * c, "sums")
        cdef panel_t tp
        cdef cnp.ndarray dx
        cdef chans_t ch
        if not count > 0:
            raise ValueError("internal: the count must be positive")
        if cnp.PyArray_SIZE(self.c.x) == 0:
            if self.out is None:
                return _empty_of(self.c.shape, cnp.PyArray_TYPE(self.c.x))
            return self.out
        dx = _into(self.out, self.c.x, &self.o, &tp)
        _chans_init(&ch, c, 2)  # the global dgamma, dbeta: unused
        try:
            self._dx(dx, &tp, <double *>cnp.PyArray_DATA(s), count,
                     _scratch(&ch), _scratch(&ch))
        finally:
            _chans_free(&ch)
        return _result(dx, self.out, self.c.shape)

    def param_grads(self, dgamma, dbeta):
        """dgamma and dbeta (float64, one per channel) in gamma's shape
        and dtype."""
        cdef Py_ssize_t c = self.channels
        cdef cnp.ndarray g = _stats(dgamma, c, "dgamma")
        cdef cnp.ndarray b = _stats(dbeta, c, "dbeta")
        cdef cnp.ndarray rg = _param_grad(self.c)
        cdef cnp.ndarray rb = _param_grad(self.c, True)
        if rg is not None:
            _store(rg, c, <double *>cnp.PyArray_DATA(g))
        if rb is not None:
            _store(rb, c, <double *>cnp.PyArray_DATA(b))
        return rg, rb


cdef BnBackward _bn_backward(object dout, object cache, object out,
                             str forward_name, bint local):
    cdef BnBackward bw = BnBackward.__new__(BnBackward)
    cdef cnp.ndarray d = _dout(dout, cache, BatchNormCache, forward_name, out)
    cdef BatchNormCache c = <BatchNormCache>cache
    if local and c.synchronized:
        raise TypeError("cache is from a synchronized forward pass: use "
                        "bnfast.distributed.sync_batchnorm_backward")
    if c.has_residual and c.relu and c.residual_lost:
        raise ValueError("cache: the residual was overwritten by "
                         "out=residual in the forward pass; the fused "
                         "ReLU's backward needs it")
    bw.c = c
    bw.out = out
    bw.relu = c.relu
    bw.channels = cnp.PyArray_DIM(c.x, c.axis)
    _check_cache(c, bw.channels, bw.channels, c.beta)
    if cnp.PyArray_SIZE(c.x):
        # a panel: made so by the forward
        if not (_order(c.x, c.axis, &bw.o) and _panel(c.x, &bw.o, &bw.xp)):
            raise RuntimeError("internal: the cached x without a panel")
        # dout's panel in the element order of x's: a view when its
        # layout allows, else a copy laid out like x.  (Not dout's own
        # panel: panels of the same shape can order their elements
        # differently, e.g. C-order x and Fortran-order dout with N == H*W.)
        if not _panel(d, &bw.o, &bw.dp):
            bw.relaid = _like(c.x, &bw.o, &bw.dp)
            np.copyto(bw.relaid, d)
            d = bw.relaid
    bw.dout = d
    if c.has_residual:
        if c.relu and cnp.PyArray_SIZE(c.x):
            bw._gate()
        elif c.relu:
            bw.dresidual = _empty_of(c.shape, cnp.PyArray_TYPE(c.x))
        elif (cnp.PyArray_Check(dout)
              and cnp.PyArray_TYPE(<cnp.ndarray>dout) == cnp.PyArray_TYPE(c.x)
              and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>dout)):
            bw.dresidual = dout  # the same gradient (PyTorch's autograd)
        else:
            bw.dresidual = _result(d, None, c.shape)
    return bw


def bn_backward(dout, cache, out, str forward_name):
    """A validated BnBackward (bnfast.distributed)."""
    return _bn_backward(dout, cache, out, forward_name, False)


def batchnorm_backward(dout, cache, out=None):
    return _bn_backward(
        dout, cache, out, "a bnfast batch norm forward pass", True)._run()


# ---------------------------------------------------------- layer norm

cdef inline Py_ssize_t _ld(cnp.ndarray a) noexcept:
    # row stride in elements; that of a single row is never used
    if cnp.PyArray_DIM(a, 0) == 1:
        return cnp.PyArray_DIM(a, 1)
    return cnp.PyArray_STRIDE(a, 0) // cnp.PyArray_ITEMSIZE(a)


cdef bint _unit_rows(cnp.ndarray a) noexcept:
    """a (2-D) has unit-stride columns (any row stride): the layout the
    layer norm kernels take."""
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(a)
    return (cnp.PyArray_ISALIGNED(a)
            and (cnp.PyArray_DIM(a, 1) == 1
                 or cnp.PyArray_STRIDE(a, 1) == item)
            and (cnp.PyArray_DIM(a, 0) == 1
                 or cnp.PyArray_STRIDE(a, 0) % item == 0))


cdef bint _samples(cnp.ndarray a) noexcept:
    """a (N, C, HW) has C-contiguous samples (any sample stride): the
    layout the group norm kernels take."""
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(a)
    cdef Py_ssize_t c = cnp.PyArray_DIM(a, 1), hw = cnp.PyArray_DIM(a, 2)
    return (cnp.PyArray_ISALIGNED(a)
            and (hw == 1 or cnp.PyArray_STRIDE(a, 2) == item)
            and (c == 1 or cnp.PyArray_STRIDE(a, 1) == hw * item)
            and (cnp.PyArray_DIM(a, 0) == 1
                 or cnp.PyArray_STRIDE(a, 0) % item == 0))


cdef bint _rows_last(cnp.ndarray a) noexcept:
    """a (N, HW, C) has adjacent channels (any row and sample strides):
    the layout the channels-last group norm kernels take."""
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(a)
    return (cnp.PyArray_ISALIGNED(a)
            and (cnp.PyArray_DIM(a, 2) == 1
                 or cnp.PyArray_STRIDE(a, 2) == item)
            and (cnp.PyArray_DIM(a, 1) == 1
                 or cnp.PyArray_STRIDE(a, 1) % item == 0)
            and (cnp.PyArray_DIM(a, 0) == 1
                 or cnp.PyArray_STRIDE(a, 0) % item == 0))


cdef inline bnf_panel _cpanel_last(cnp.ndarray x, cnp.ndarray y,
                                   cnp.ndarray dy) noexcept:
    """The panel of channels-last group norm: x (N, HW, C), the output y
    (or dx) and dy (None: not taking part) with their sample (s1) and row
    (s2) strides in elements."""
    cdef bnf_panel b
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(x)
    cdef Py_ssize_t n = cnp.PyArray_DIM(x, 0), hw = cnp.PyArray_DIM(x, 1)
    memset(&b, 0, sizeof(b))
    b.n1, b.n2, b.len = n, cnp.PyArray_DIM(x, 2), hw
    b.x.s1 = _elems(n, cnp.PyArray_STRIDE(x, 0), item)
    b.x.s2 = _elems(hw, cnp.PyArray_STRIDE(x, 1), item)
    b.y.s1 = _elems(n, cnp.PyArray_STRIDE(y, 0), item)
    b.y.s2 = _elems(hw, cnp.PyArray_STRIDE(y, 1), item)
    if dy is not None:
        b.dy.s1 = _elems(n, cnp.PyArray_STRIDE(dy, 0), item)
        b.dy.s2 = _elems(hw, cnp.PyArray_STRIDE(dy, 1), item)
    return b


ctypedef bint (*fits_t)(cnp.ndarray) noexcept


cdef inline cnp.ndarray _fit(cnp.ndarray a, fits_t fits):
    # a itself when the kernels take its layout, else a C-order copy
    if fits(a):
        return a
    return cnp.PyArray_NewCopy(a, cnp.NPY_CORDER)


cdef cnp.ndarray _into_rows(object out, cnp.ndarray x, fits_t fits):
    # as _into, for the layer and group norm layouts
    cdef cnp.ndarray v
    if out is not None:
        v = _view(out, x)
        if v is not None and fits(v):
            return v
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x),
                             cnp.PyArray_TYPE(x), 0)


cdef tuple _per_sample_forward(cnp.ndarray x, cnp.ndarray y, bnf_panel *bp,
                               cnp.ndarray gflat, cnp.ndarray bflat,
                               Py_ssize_t nparams, Py_ssize_t nstats,
                               Py_ssize_t groups, double eps,
                               bnf_fwd_fn kernel):
    """The layer and group norm forward on their panel bp: the kernel (of
    x's dtype) into y; returns the nstats per-sample (or per-group) means
    and 1/std."""
    cdef cnp.ndarray mean = _new_doubles(nstats), invstd = _new_doubles(nstats)
    cdef chans_t ch
    cdef int rc = 0
    cdef bnf_params q
    cdef bnf_results r = _cresults()
    cdef char *xp
    cdef char *yp
    r.mean = <double *>cnp.PyArray_DATA(mean)
    r.invstd = <double *>cnp.PyArray_DATA(invstd)
    _chans_init(&ch, nparams, 2)
    try:
        q = _cparams(_doubles(&ch, gflat), _doubles(&ch, bflat))
        q.groups = groups
        q.eps = eps
        xp, yp = _data(x), _data(y)
        with nogil:
            rc = kernel(bp, &q, xp, yp, &r)
    finally:
        _chans_free(&ch)
    _raise(rc)
    return mean, invstd


cdef tuple _normalized_shape(object value):
    """normalized_shape (an int or a sequence of ints) as a non-empty
    tuple of positive ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(
            value, (bool, np.bool_)):
        value = (value,)
    elif isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError("normalized_shape must be an int or a sequence of "
                        f"ints, got {type(value).__name__}")
    value = tuple(value)
    if not value:
        raise ValueError("normalized_shape must not be empty")
    for v in value:
        if not isinstance(v, (int, np.integer)) or isinstance(
                v, (bool, np.bool_)):
            raise TypeError("normalized_shape must be an int or a sequence "
                            f"of ints, got {value!r}")
        if v < 1:
            raise ValueError("normalized_shape must be positive ints, got "
                             f"{value!r}")
    return tuple(int(v) for v in value)


cdef tuple _rows(cnp.ndarray xa, object normalized_shape):
    """x as rows for the layer and RMS norm kernels: (n rows, d features,
    the feature shape, x as an (n, d) array: a view where NumPy can
    reshape without a copy, i.e. where the leading axes merge into one row
    stride and the trailing ones into one run).  normalized_shape None:
    all axes after the first (x at least 2-D), else x's trailing axes."""
    cdef Py_ssize_t n = 1, d = 1, k, nd = cnp.PyArray_NDIM(xa), m
    cdef tuple fshape
    if normalized_shape is None:
        _check_batch(xa, "x", False)
        fshape = _shape(xa)[1:]
        m = 1
    else:
        fshape = _normalized_shape(normalized_shape)
        m = nd - len(fshape)
        if m < 0 or _shape(xa)[m:] != fshape:
            raise ValueError(
                f"x must end with normalized_shape {fshape}, got shape "
                f"{_shape(xa)}")
    for k in range(m):
        n *= cnp.PyArray_DIM(xa, k)
    for k in range(m, nd):
        d *= cnp.PyArray_DIM(xa, k)
    if n == 0:
        raise ValueError(f"x is an empty batch, shape {_shape(xa)}")
    if d == 0:
        raise ValueError(f"x has zero features, shape {_shape(xa)}")
    if nd == 2 and m == 1:
        return n, d, fshape, xa
    return n, d, fshape, xa.reshape(n, d)


def layernorm_forward(x, gamma, beta, ln_param, out=None,
                      normalized_shape=None):
    cdef cnp.ndarray xa, x2, g, gflat, b, bflat, y, mean, invstd
    cdef double eps
    cdef Py_ssize_t n, d
    cdef bnf_panel bp
    _check_dict(ln_param, "ln_param")
    xa = _float_array(x, "x")
    n, d, fshape, x2 = _rows(xa, normalized_shape)
    g = _param(gamma, "gamma", d, xa, 0, fshape)
    gflat = _flat(g, d)
    b = _param(beta, "beta", d, xa, 0, fshape)
    bflat = _flat(b, d)
    eps = _real_in(_get(ln_param, "eps", 1e-5), "ln_param['eps']", 0.0)
    shape = _shape(xa)
    if out is not None:  # what is read, and the caller's
        _out_array(out, shape, xa, (("x", xa, x), ("gamma", gflat, gamma),
                                    ("beta", bflat, beta)))
    x2 = _fit(x2, _unit_rows)
    y = _into_rows(out, x2, _unit_rows)
    bp = _cpanel_rows(n, d, 1, _ld(x2), _ld(y), 0)
    mean, invstd = _per_sample_forward(x2, y, &bp, gflat, bflat, d, n, 0,
                                       eps, _kern(x2).ln_forward)
    cdef LayerNormCache cache = LayerNormCache.__new__(LayerNormCache)
    _fill(cache, x2, g, gflat, b, bflat, mean, invstd, shape)
    return _result(y, out, shape), cache


cdef tuple _per_sample_backward(_Cache c, cnp.ndarray x, cnp.ndarray dy,
                                cnp.ndarray dx, bnf_panel *bp,
                                Py_ssize_t nparams, Py_ssize_t groups,
                                bnf_bwd_fn kernel, out):
    """The layer and group norm backward on their panel bp: the kernel (of
    x's dtype) with the cache's gamma and statistics, dgamma and dbeta in
    gamma's dtype and shape, dx in the caller's shape."""
    cdef cnp.ndarray dgamma = _param_grad(c), dbeta = _param_grad(c, True)
    cdef chans_t ch
    cdef int rc = 0
    cdef bnf_params q
    cdef bnf_results r = _cresults()
    cdef char *dyp
    cdef char *xp
    cdef char *dxp
    _chans_init(&ch, nparams, 3)
    try:
        q = _cparams(_doubles(&ch, c.gamma), NULL)
        q.groups = groups
        q.mean = <double *>cnp.PyArray_DATA(c.mean)
        q.invstd = <double *>cnp.PyArray_DATA(c.invstd)
        r.dgamma = _grad_buffer(dgamma, &ch)
        r.dbeta = _grad_buffer(dbeta, &ch)
        dyp, xp, dxp = _data(dy), _data(x), _data(dx)
        with nogil:
            rc = kernel(bp, &q, xp, dyp, dxp, &r)
        _raise(rc)
        _grad_done(dgamma, r.dgamma, nparams)
        _grad_done(dbeta, r.dbeta, nparams)
    finally:
        _chans_free(&ch)
    return _result(dx, out, c.shape), dgamma, dbeta


cdef tuple _rows_backward(object dout, object cache, type cache_type,
                          str forward, bint rms, object out):
    """The backward of a per-row family (layer norm; rms: RMS norm) on its
    cache's (rows, D) x: (dx, dgamma, dbeta)."""
    cdef cnp.ndarray dy = _dout(dout, cache, cache_type, forward, out)
    cdef _Cache c = <_Cache>cache
    cdef cnp.ndarray x = c.x, dx
    cdef Py_ssize_t n = cnp.PyArray_DIM(x, 0), d = cnp.PyArray_DIM(x, 1)
    cdef bnf_panel bp
    _check_cache(c, n, d)
    dy = _fit(dy, _unit_rows)
    dx = _into_rows(out, x, _unit_rows)
    bp = _cpanel_rows(n, d, 1, _ld(x), _ld(dx), _ld(dy))
    return _per_sample_backward(
        c, x, dy, dx, &bp, d, 0,
        _kern(x).rms_backward if rms else _kern(x).ln_backward, out)


def layernorm_backward(dout, cache, out=None):
    return _rows_backward(dout, cache, LayerNormCache,
                          "bnfast.layernorm_forward", False, out)


# ---------------------------------------------------------- RMS norm

def rmsnorm_forward(x, gamma, rms_param, out=None, normalized_shape=None):
    cdef cnp.ndarray xa, x2, g, gflat, y, mean, invstd
    cdef double eps
    cdef Py_ssize_t n, d, k
    cdef bnf_panel bp
    _check_dict(rms_param, "rms_param")
    xa = _float_array(x, "x")
    if normalized_shape is None and gamma is not None:
        # gamma's shape when x ends with it, else all axes after the first
        gshape = np.shape(gamma)
        k = len(gshape)
        if 0 < k <= cnp.PyArray_NDIM(xa) and _shape(xa)[
                cnp.PyArray_NDIM(xa) - k:] == gshape:
            normalized_shape = gshape
    n, d, fshape, x2 = _rows(xa, normalized_shape)
    g = _param(gamma, "gamma", d, xa, 0, fshape)
    gflat = _flat(g, d)
    e = _get(rms_param, "eps", None)
    if e is None:  # PyTorch's eps=None: the dtype's machine epsilon
        eps = _finfo_eps((<object>xa).dtype)
    else:
        eps = _real_in(e, "rms_param['eps']", 0.0)
    shape = _shape(xa)
    if out is not None:  # what is read, and the caller's
        _out_array(out, shape, xa, (("x", xa, x), ("gamma", gflat, gamma)))
    x2 = _fit(x2, _unit_rows)
    y = _into_rows(out, x2, _unit_rows)
    bp = _cpanel_rows(n, d, 1, _ld(x2), _ld(y), 0)
    mean, invstd = _per_sample_forward(x2, y, &bp, gflat, None, d, n, 0,
                                       eps, _kern(x2).rms_forward)
    cdef RMSNormCache cache = RMSNormCache.__new__(RMSNormCache)
    _fill(cache, x2, g, gflat, None, None, mean, invstd, shape)
    return _result(y, out, shape), cache


def rmsnorm_backward(dout, cache, out=None):
    dx, dgamma, _ = _rows_backward(dout, cache, RMSNormCache,
                                   "bnfast.rmsnorm_forward", True, out)
    return dx, dgamma


# ---------------------------------------------------------- group norm

def spatial_groupnorm_forward(x, gamma, beta, G, gn_param, out=None,
                              axis=1):
    cdef cnp.ndarray xa, x3, g, gflat, b, bflat, y, mean, invstd
    cdef double eps
    cdef Py_ssize_t n, c, hw, groups
    cdef bnf_panel bp
    cdef int ax, nd
    cdef bint last
    _check_dict(gn_param, "gn_param")
    xa = _float_array(x, "x")
    ax = _channel_axis(xa, axis, False)
    nd = cnp.PyArray_NDIM(xa)
    if ax != 1 and ax != nd - 1:
        raise ValueError(
            f"axis must be 1 (channels first) or -1 (channels last), got "
            f"{axis} for x of {nd} dimensions")
    last = ax != 1  # (N, ..., C) of rank >= 3
    n = cnp.PyArray_DIM(xa, 0)
    c = cnp.PyArray_DIM(xa, ax)
    if type(G) is not int and (not isinstance(G, (int, np.integer))
                               or isinstance(G, bool)):
        raise TypeError(f"G must be an int, got {type(G).__name__}")
    if not 1 <= G <= c or c % G:
        raise ValueError(
            f"G must divide the number of channels C = {c}, got {G}")
    groups = int(G)
    g = _param(gamma, "gamma", c, xa, ax)
    gflat = _flat(g, c)
    b = _param(beta, "beta", c, xa, ax)
    bflat = _flat(b, c)
    eps = _real_in(_get(gn_param, "eps", 1e-5), "gn_param['eps']", 0.0)
    shape = _shape(xa)
    if out is not None:  # what is read, and the caller's
        _out_array(out, shape, xa, (("x", xa, x), ("gamma", gflat, gamma),
                                    ("beta", bflat, beta)))
    hw = cnp.PyArray_SIZE(xa) // (n * c)
    cdef GroupNormCache cache = GroupNormCache.__new__(GroupNormCache)
    if last:  # (N, HW, C) panels, no transposing copy
        x3 = xa
        if nd != 3:
            x3 = xa.reshape(n, hw, c)
        x3 = _fit(x3, _rows_last)
        y = _into_rows(out, x3, _rows_last)
        bp = _cpanel_last(x3, y, None)
        mean, invstd = _per_sample_forward(x3, y, &bp, gflat, bflat, c,
                                           n * groups, groups, eps,
                                           _kern(x3).gnl_forward)
        _fill(cache, x3, g, gflat, b, bflat, mean, invstd, shape)
        cache.groups = groups
        cache.axis = -1
        return _result(y, out, shape), cache
    x3 = xa
    if cnp.PyArray_NDIM(xa) != 3:
        x3 = xa.reshape(n, c, hw)
    x3 = _fit(x3, _samples)
    y = _into_rows(out, x3, _samples)
    bp = _cpanel_rows(
        n, c, hw,
        _elems(n, cnp.PyArray_STRIDE(x3, 0), cnp.PyArray_ITEMSIZE(x3)),
        _elems(n, cnp.PyArray_STRIDE(y, 0), cnp.PyArray_ITEMSIZE(y)), 0)
    mean, invstd = _per_sample_forward(x3, y, &bp, gflat, bflat, c,
                                       n * groups, groups, eps,
                                       _kern(x3).gn_forward)
    _fill(cache, x3, g, gflat, b, bflat, mean, invstd, shape)
    cache.groups = groups
    cache.axis = 1
    return _result(y, out, shape), cache


def spatial_groupnorm_backward(dout, cache, out=None):
    cdef cnp.ndarray dy = _dout(dout, cache, GroupNormCache,
                                "bnfast.spatial_groupnorm_forward", out)
    cdef GroupNormCache gc = <GroupNormCache>cache
    cdef cnp.ndarray x = gc.x, dx
    cdef bint last = gc.axis == -1  # x kept as (N, HW, C)
    cdef Py_ssize_t n = cnp.PyArray_DIM(x, 0)
    cdef Py_ssize_t c = cnp.PyArray_DIM(x, 2 if last else 1)
    cdef Py_ssize_t hw = cnp.PyArray_DIM(x, 1 if last else 2)
    cdef Py_ssize_t groups = gc.groups
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(x)
    cdef bnf_panel bp
    if groups < 1 or c % groups:
        raise ValueError("cache: groups does not divide the channels")
    _check_cache(gc, n * groups, c)
    if last:
        dy = _fit(dy, _rows_last)
        dx = _into_rows(out, x, _rows_last)
        bp = _cpanel_last(x, dx, dy)
        return _per_sample_backward(gc, x, dy, dx, &bp, c, groups,
                                    _kern(x).gnl_backward, out)
    dy = _fit(dy, _samples)
    dx = _into_rows(out, x, _samples)
    bp = _cpanel_rows(n, c, hw, _elems(n, cnp.PyArray_STRIDE(x, 0), item),
                      _elems(n, cnp.PyArray_STRIDE(dx, 0), item),
                      _elems(n, cnp.PyArray_STRIDE(dy, 0), item))
    return _per_sample_backward(gc, x, dy, dx, &bp, c, groups,
                                _kern(x).gn_backward, out)


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
