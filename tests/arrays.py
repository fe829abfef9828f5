"""The shared array generator of the test suite.

``cases()`` enumerates batches over dtypes, shapes (N = 1, 2, odd, large;
D = 1, wide, past the kernels' column tile; more than 2-D), memory layouts
(C, Fortran, row-strided, column-strided, reversed rows) and contents
(plain, large offsets, a trend along the batch, a constant column, NaN and
Inf columns, mixed parameter dtypes).  Every fast/reference pair is
compared on all of them;
``Case.id`` names dtype, shape, layout and contents for failure messages.
"""

import dataclasses

import numpy as np

DTYPES = (np.float32, np.float64)
# half-precision storage (computed in float32): the parallel generator
# half_cases() / half_spatial_cases(); bfloat16 when ml_dtypes is installed
try:
    import ml_dtypes
except ImportError:
    ml_dtypes = None
HALF_DTYPES = (np.float16,) + (
    () if ml_dtypes is None else (ml_dtypes.bfloat16,)
)
SHAPES_2D = [
    (1, 1),
    (1, 6),
    (2, 1),
    (2, 6),
    (7, 5),
    (64, 33),
    (20000, 3),
    (9, 2049),
]
SHAPES_ND = [(4, 3, 5, 2), (1, 2, 3)]
LAYOUTS = ("C", "F", "rows-strided", "cols-strided", "reversed")
# spatial batch norm: (shape, channel axis); runs past the kernels' block
# (4096 elements), many short runs, rank 2 to 5
SPATIAL = [
    ((2, 3, 4, 5), 1),
    ((2, 4, 5, 3), -1),
    ((1, 4, 7), 1),
    ((3, 2, 2, 3, 4), 1),
    ((5, 3), 1),
    ((2, 3, 80, 60), 1),
    ((500, 2, 3), 1),
    ((6, 5, 4, 3), -1),
    ((1, 1, 6), 1),
]
SPATIAL_LAYOUTS = LAYOUTS + ("channels-last-memory",)
CONTENTS = (
    "plain",
    "offset1e4",
    "trend",
    "const-col",
    "nan-inf",
    "mixed-params",
)


@dataclasses.dataclass
class Case:
    x: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    dout: np.ndarray
    layout: str
    contents: str
    axis: object = None

    @property
    def id(self):
        ax = "" if self.axis is None else f"-axis{self.axis}"
        return (
            f"{np.dtype(self.x.dtype).name}-{self.x.shape}{ax}-"
            f"{self.layout}-{self.contents}"
        )

    def widened(self):
        """The same case in the next wider precision (float32 -> float64,
        float64 -> longdouble; float16 and bfloat16, computed in float32,
        -> float64): the inputs of the accuracy oracle."""
        wide = (
            np.float64
            if self.x.dtype == np.float32 or is_half(self.x.dtype)
            else np.longdouble
        )
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name).astype(wide)
                for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), np.ndarray)
            },
        )


def _layout(a, layout):
    """``a`` (C-contiguous) in the requested memory layout, same values."""
    if layout == "C":
        return a
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "rows-strided":
        big = np.zeros((2 * a.shape[0],) + a.shape[1:], a.dtype)
        big[::2] = a
        return big[::2]
    if layout == "cols-strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if layout == "reversed":
        return np.ascontiguousarray(a[::-1])[::-1]
    if layout == "channels-last-memory":  # an NCHW view of NHWC memory
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)
    raise ValueError(layout)


def make_case(shape, dtype, layout, contents, seed=0, axis=None):
    """One case.  axis None: batch norm of x.reshape(N, -1), parameters per
    feature; otherwise spatial batch norm, parameters per channel along
    axis."""
    rng = np.random.default_rng(seed)
    n = shape[0]
    if axis is None:
        d = int(np.prod(shape[1:]))
        x = np.empty((n, d))
        xv = x  # (N, channels) view
    else:
        d = shape[axis]
        x = np.empty(shape)
        xv = np.moveaxis(x, axis, -1)  # (..., channels) view
    col_offset = rng.uniform(-3, 3, d)
    col_scale = rng.uniform(0.5, 2.0, d)
    xv[...] = rng.standard_normal(xv.shape) * col_scale + col_offset
    if contents == "offset1e4":
        xv += 1e4
    elif contents == "trend":
        # the mean drifts along the batch: later row blocks sit far from
        # the running mean of the earlier ones
        xv += np.linspace(0, 1e3, n).reshape((n,) + (1,) * (xv.ndim - 1))
    elif contents == "const-col":
        xv[..., 0] = 3.7
    elif contents == "nan-inf":
        first = xv[..., 0].reshape(-1)
        if first.size:
            xv[..., 0].flat[first.size // 2] = np.nan
        if d > 1:
            xv[..., d - 1].flat[0] = np.inf
    pdtype = dtype
    if contents == "mixed-params":
        pdtype = np.float64 if dtype == np.float32 else np.float32
    gamma = rng.uniform(0.5, 1.5, d).astype(pdtype)
    beta = rng.uniform(-1, 1, d).astype(pdtype)
    running_mean = rng.uniform(-1, 1, d).astype(pdtype)
    running_var = rng.uniform(0.5, 2, d).astype(pdtype)
    dout = rng.standard_normal(shape).astype(dtype)
    x = _layout(x.astype(dtype).reshape(shape), layout)
    dout = _layout(dout, layout)
    return Case(
        x, gamma, beta, running_mean, running_var, dout, layout, contents, axis
    )


def is_half(dtype):
    """float16 or bfloat16 (half-precision storage)."""
    dtype = np.dtype(dtype)
    return dtype == np.float16 or dtype.name == "bfloat16"


def finfo(dtype):
    """np.finfo, and ml_dtypes.finfo for bfloat16."""
    if np.dtype(dtype).name == "bfloat16":
        return ml_dtypes.finfo(dtype)
    return np.finfo(dtype)


def half_cases():
    """cases() in float16 and bfloat16."""
    return cases(HALF_DTYPES, seed=50_000)


def half_spatial_cases():
    """spatial_cases() in float16 and bfloat16."""
    return spatial_cases(HALF_DTYPES, seed=60_000)


def cases(dtypes=DTYPES, seed=0):
    """Batch norm cases (axis None)."""
    out = []
    for dtype in dtypes:
        for shape in SHAPES_2D + SHAPES_ND:
            for layout in LAYOUTS:
                for contents in CONTENTS:
                    seed += 1
                    out.append(make_case(shape, dtype, layout, contents, seed))
    return out


def spatial_cases(dtypes=DTYPES, seed=10_000):
    """Spatial batch norm cases (channels along axis)."""
    out = []
    for dtype in dtypes:
        for shape, axis in SPATIAL:
            for layout in SPATIAL_LAYOUTS:
                if layout == "channels-last-memory" and (
                    len(shape) < 3 or axis != 1
                ):
                    continue
                for contents in CONTENTS:
                    seed += 1
                    out.append(
                        make_case(shape, dtype, layout, contents, seed, axis)
                    )
    return out


# The accuracy rule, one for both dtypes (issue 11): against the reference
# computed one precision wider, the error is at most twice the reference's
# own error plus ULPS units of roundoff (of the result's dtype) of the
# conditioning scale.
ULPS = 4


def assert_as_accurate(what, case, fast, ref, oracle, scale=None):
    """fast has ref's dtype and shape, the same NaN/Inf pattern, and its
    error against the wide-precision oracle is at most 2 * the reference's
    error + ULPS * eps(x's dtype) * ``scale``.  ``scale`` is the magnitude of
    the terms that cancel in the result (default: the result's own
    magnitude; for a sum, :func:`sum_scale` of its terms)."""
    label = f"{what} [{case.id}]"
    assert fast.dtype == ref.dtype, (
        f"{label}: dtype {fast.dtype} != {ref.dtype}"
    )
    assert fast.shape == ref.shape, (
        f"{label}: shape {fast.shape} != {ref.shape}"
    )
    np.testing.assert_array_equal(
        np.isnan(fast), np.isnan(ref), err_msg=f"{label}: NaN pattern"
    )
    np.testing.assert_array_equal(
        np.isposinf(fast), np.isposinf(ref), err_msg=f"{label}: +Inf pattern"
    )
    np.testing.assert_array_equal(
        np.isneginf(fast), np.isneginf(ref), err_msg=f"{label}: -Inf pattern"
    )
    finite = np.isfinite(ref) & np.isfinite(oracle)
    if not finite.any():
        return
    o = oracle[finite]
    err_fast = float(np.max(np.abs(fast[finite] - o)))
    err_ref = float(np.max(np.abs(ref[finite] - o)))
    if scale is None:
        scale = float(np.max(np.abs(o)))
    # eps of the data's dtype: float32 data with float64 parameters gives
    # float64 dgamma and running statistics computed from float32 values
    # (float16 and bfloat16: the eps of the storage dtype)
    eps = float(finfo(case.x.dtype).eps)
    bound = 2 * err_ref + ULPS * eps * scale
    assert err_fast <= bound, (
        f"{label}: max error vs the wide oracle {err_fast:.3g} > bound "
        f"{bound:.3g} (reference's error {err_ref:.3g})"
    )


def sum_scale(terms, axis=0):
    """The conditioning scale of sums of ``terms`` along ``axis`` (one sum
    per remaining index, e.g. dbeta = dout.sum(axis=0)): the largest sum of
    the terms' magnitudes, over finite terms."""
    t = np.abs(np.asarray(terms, dtype=np.float64))
    t = np.where(np.isfinite(t), t, 0.0)
    return float(np.max(t.sum(axis=axis), initial=0.0))


def numeric_grad(f, a, h, dout=None):
    """Central differences: d f() / d a for a scalar f(), or with dout
    d sum(f() * dout) / d a.  a is modified in place and restored."""
    loss = f if dout is None else (lambda: np.sum(f() * dout))
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + h
        plus = loss()
        a[i] = old - h
        minus = loss()
        a[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad
