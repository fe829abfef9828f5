"""Property-based equivalence: every bnfast function against its twin in
bnfast.reference on inputs drawn by hypothesis -- shapes (rank 2 to 5, now
and then one long axis past the kernels' row sums, column tile, run block
or threading threshold), float32/float64, memory layouts (C, Fortran,
permuted axes, strided and reversed views of a bigger NaN-filled array,
unaligned data, broadcast rows; dout laid out on its own), and finite
values (per-channel offset and scale, an offset of up to 1e4 times the
spread, a trend along the batch, small-integer grids with ties, constant
channels or samples), with drawn parameters (eps, momentum, mode,
activation, dtypes and shapes of gamma, beta and the running statistics).

The accuracy criterion is the suite's (tests/arrays.py,
``assert_as_accurate``): the oracle is the reference run one precision
wider (``Case.widened``: float64 for float32 inputs, np.longdouble for
float64 ones); every result must be within twice the reference's error
plus a few ulps (of x's dtype) of ``scale``, the magnitude of the terms
that cancel in the result.  Every result gets its scale here
(``term_scales``), as hypothesis finds small or adversarial inputs where
the result's own magnitude is no measure of its rounding: a ReLU output
from g * x_hat cancelling beta, a mean of values much larger than it, a
constant row whose longdouble mean (strided) is not exact.  NaN and Inf
inputs are covered by the equivalence tests, not here.

Profiles: "ci" (the default: derandomized, 60 examples per test) and
"long" (2000 examples), chosen with ``BNFAST_HYPOTHESIS=long``.
"""

import dataclasses
import math
import os

import numpy as np
import pytest
from hypothesis import (
    HealthCheck,
    currently_in_test_context,
    event,
    given,
    settings,
)
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bnfast
from bnfast import reference

from arrays import Case, assert_as_accurate, sum_scale
from families import FAMILIES, Family

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large]
# database=None: nothing written into the checkout (.hypothesis/ is not
# ignored); print_blob: a failure prints its @reproduce_failure line.
settings.register_profile(
    "ci",
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_SUPPRESS,
)
settings.register_profile(
    "long",
    max_examples=2000,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_SUPPRESS,
)
settings.load_profile(os.environ.get("BNFAST_HYPOTHESIS", "ci"))

DTYPES = (np.float32, np.float64)


@pytest.fixture(autouse=True, scope="module")
def threaded_from_64kib():
    # the threaded kernels from 64 KiB (by default from 1 MiB), so that the
    # drawn shapes past 32768 elements reach them
    least = bnfast._kernels._get_parallel_min()
    bnfast._kernels._set_parallel_min(64 * 1024)
    yield
    bnfast._kernels._set_parallel_min(least)


# Long axes: past BNF_SUM_ROWS (128) rows, the column tile (2048), the run
# block (4096), 128 * 128 rows (the third level of the row sums); with the
# rest of the shape, past 32768 elements (the threaded kernels, with the
# threshold this module lowers to 64 KiB) when the rest allows.
LONG_SIDES = (127, 128, 129, 257, 2049, 4097, 16385)
MAX_SIZE = 40_000


# ---------------------------------------------------------------- strategies


@dataclasses.dataclass(frozen=True)
class Layout:
    """How an array sits in memory.  kind "C", "F", "permuted" (axes in
    memory in the order ``perm``, outermost first), "strided" (permuted,
    then every ``steps[k]``-th element of a bigger NaN-filled array along
    axis k, reversed when negative), "unaligned" (C order, one byte off),
    "broadcast" (the first sample repeated with stride 0: for x this makes
    every feature constant across the batch)."""

    kind: str
    perm: tuple
    steps: tuple

    def __str__(self):
        if self.kind in ("permuted", "strided"):
            return f"{self.kind}{self.perm}{self.steps}"
        return self.kind


@st.composite
def layouts(draw, ndim):
    kind = draw(
        st.sampled_from(
            ["C", "F", "permuted", "strided", "unaligned", "broadcast"]
        )
    )
    perm, steps = tuple(range(ndim)), (1,) * ndim
    if kind == "F":
        perm = perm[::-1]
    elif kind in ("permuted", "strided"):
        perm = tuple(draw(st.permutations(range(ndim))))
    if kind == "strided":
        steps = tuple(
            draw(
                st.lists(
                    st.sampled_from([1, 2, -1, 3, -2]),
                    min_size=ndim,
                    max_size=ndim,
                )
            )
        )
    return Layout(kind, perm, steps)


def lay_out(a, dtype, layout):
    """``a`` (float64, C order) as ``dtype`` laid out as ``layout``."""
    if layout.kind == "broadcast":
        return np.broadcast_to(a[:1].astype(dtype), a.shape)
    if layout.kind == "unaligned":
        size = a.size * np.dtype(dtype).itemsize
        buf = np.empty(size + 1, np.uint8)
        out = buf[1:].view(dtype).reshape(a.shape)
        out[...] = a
        assert not out.flags.aligned or size == 0
        return out
    # the gaps hold NaN: a kernel that reads outside the view shows
    big = np.full(
        [a.shape[k] * abs(layout.steps[k]) for k in layout.perm], np.nan, dtype
    )
    v = big.transpose(np.argsort(layout.perm))
    v = v[tuple(slice(None, None, s) for s in layout.steps)]
    v[...] = a
    return v


@st.composite
def shapes(draw, min_dims, max_dims, channels=None):
    """Small shapes; now and then one axis long (one of LONG_SIDES) or long
    enough for the threaded kernels (at least 32768 elements: 64 KiB and
    more here); at most MAX_SIZE elements.  ``channels``: a strategy for
    shape[1]."""
    shape = list(
        draw(
            hnp.array_shapes(
                min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=6
            )
        )
    )
    if channels is not None:
        shape[1] = draw(channels)
    size = draw(st.sampled_from(["small", "small", "long", "threaded"]))
    if size != "small":
        k = draw(st.integers(0, len(shape) - 1))
        rest = math.prod(shape) // shape[k]
        if size == "long":
            sides = [s for s in LONG_SIDES if s * rest <= MAX_SIZE]
            if sides:
                shape[k] = draw(st.sampled_from(sides))
        elif 32768 // rest < MAX_SIZE // rest:
            shape[k] = draw(st.integers(32768 // rest + 1, MAX_SIZE // rest))
    return tuple(shape)


@dataclasses.dataclass(frozen=True, eq=False)
class Spec:
    """Everything a case is built from (small, so hypothesis prints it on a
    failure; ``build`` makes the arrays).  axis: None for statistics of
    ``x.reshape(N, -1)``'s columns or rows (batchnorm_*, layernorm_*), else
    the channel axis."""

    dtype: type
    shape: tuple
    axis: object
    x_layout: Layout
    dout_layout: Layout
    seed: int
    spread_exp: int  # values of size 10**spread_exp
    offset: float  # common offset, in units of the spread
    trend: float  # added along the batch, 0 .. trend
    grid: object  # small-integer values (an ndarray) or None
    const: str  # "none", "channel" or "sample"
    const_index: int
    param_dtype: type
    param_full: bool  # gamma, beta of the full per-feature shape
    signed_gamma: bool
    stats_dtype: type
    stats_full: bool
    stats_near: bool  # running stats near the batch's, else random


@st.composite
def specs(draw, kind):
    """kind: "bn" (batchnorm_*), "spatial", "ln", "gn", "rms" (as "ln")."""
    if kind == "spatial":
        shape = draw(shapes(2, 5))
        ndim = len(shape)
        axis = draw(st.sampled_from([1, -1] + list(range(2, ndim - 1))))
    elif kind == "gn":
        shape = draw(
            shapes(2, 5, channels=st.sampled_from([1, 2, 3, 4, 6, 8, 12]))
        )
        axis = 1
    else:
        shape = draw(shapes(2, 4))
        axis = None
    ndim = len(shape)
    dtype = draw(st.sampled_from(DTYPES))
    other = np.float64 if dtype is np.float32 else np.float32
    grid = None
    values = draw(st.sampled_from(["normal", "grid", "trend"]))
    if values == "grid" and math.prod(shape) <= 256:
        grid = draw(hnp.arrays(np.int8, shape, elements=st.integers(-3, 3)))
    return Spec(
        dtype=dtype,
        shape=shape,
        axis=axis,
        x_layout=draw(layouts(ndim)),
        dout_layout=draw(layouts(ndim)),
        seed=draw(st.integers(0, 2**32 - 1)),
        spread_exp=draw(st.integers(-3, 3)),
        offset=draw(
            st.one_of(
                st.just(0.0),
                st.sampled_from([1e4, -1e4]),
                st.floats(-1e4, 1e4),
            )
        ),
        trend=draw(st.floats(0, 1e3)) if values == "trend" else 0.0,
        grid=grid,
        const=draw(st.sampled_from(["none", "channel", "sample"])),
        const_index=draw(st.integers(0, 2**16)),
        param_dtype=draw(st.sampled_from([dtype, other])),
        param_full=draw(st.booleans()),
        signed_gamma=draw(st.booleans()),
        stats_dtype=draw(st.sampled_from([dtype, other])),
        stats_full=draw(st.booleans()),
        stats_near=draw(st.booleans()),
    )


def record(spec, size):
    """What a test ran on, for pytest --hypothesis-show-statistics."""
    event(f"x {spec.x_layout.kind}, {np.dtype(spec.dtype).name}")
    event(
        "size >= 32768 (threaded)"
        if size >= 32768
        else "size > 4096"
        if size > 4096
        else "size <= 4096"
    )
    event(
        f"values {'grid' if spec.grid is not None else 'random'}, "
        f"const {spec.const}"
    )


def build(spec):
    """The Case (tests/arrays.py) of a Spec."""
    if currently_in_test_context():
        record(spec, math.prod(spec.shape))
    rng = np.random.default_rng(spec.seed)
    shape, n, axis = spec.shape, spec.shape[0], spec.axis
    z = np.empty(shape)
    # per-channel view: (N, D) features, or channels last
    view = z.reshape(n, -1) if axis is None else np.moveaxis(z, axis, -1)
    d = view.shape[-1]
    if spec.grid is not None:
        z[...] = spec.grid
    else:
        view[...] = rng.standard_normal(view.shape) * rng.uniform(
            0.5, 2, d
        ) + rng.uniform(-3, 3, d)
    z += np.linspace(0, spec.trend, n).reshape((n,) + (1,) * (z.ndim - 1))
    z += spec.offset
    if spec.const == "channel":
        view[..., spec.const_index % d] = 3.7 + spec.offset
    elif spec.const == "sample":
        z[spec.const_index % n] = 3.7 + spec.offset
    spread = 10.0**spec.spread_exp
    x = z * spread

    if axis is None:
        pshape = shape[1:]
    else:
        pshape = tuple(
            shape[k] if k == axis % len(shape) else 1
            for k in range(len(shape))
        )
    gamma = rng.uniform(0.5, 1.5, d)
    if spec.signed_gamma:
        gamma *= rng.choice([-1.0, 1.0], d)
    beta = rng.uniform(-1, 1, d)
    if spec.stats_near:
        cols = np.moveaxis(
            x.reshape(n, -1) if axis is None else np.moveaxis(x, axis, -1),
            -1,
            0,
        ).reshape(d, -1)
        rm = cols.mean(axis=1) + spread * rng.uniform(-0.5, 0.5, d)
        rv = cols.var(axis=1) * rng.uniform(0.5, 2, d) + spread**2 * 0.01
    else:
        rm = rng.uniform(-1, 1, d)
        rv = rng.uniform(0.5, 2, d)
    dout = rng.standard_normal(shape)

    def param(a, dt, full):
        return a.astype(dt).reshape(pshape if full else (d,))

    return Case(
        x=lay_out(x, spec.dtype, spec.x_layout),
        gamma=param(gamma, spec.param_dtype, spec.param_full),
        beta=param(beta, spec.param_dtype, spec.param_full),
        running_mean=param(rm, spec.stats_dtype, spec.stats_full),
        running_var=param(rv, spec.stats_dtype, spec.stats_full),
        dout=lay_out(dout, spec.dtype, spec.dout_layout),
        layout=f"x:{spec.x_layout}/dout:{spec.dout_layout}",
        contents=(
            f"1e{spec.spread_exp}*(v+{spec.offset:g})"
            f"{'-grid' if spec.grid is not None else ''}"
            f"{'-trend' if spec.trend else ''}-const:{spec.const}"
        ),
        axis=axis,
    )


EPS = st.one_of(st.sampled_from([1e-5, 1e-3, 1e-8, 0.1]), st.floats(1e-8, 0.1))
MOMENTUM = st.floats(0, 1)
# the fused ReLU is a registry variant here; kept for the files that
# import it (test_residual_properties.py)
ACTIVATION = st.sampled_from([None, "relu"])


# ---------------------------------------------------------------- accuracy


def term_scales(x, dout, g, b, mean, std, sum_axes):
    """The magnitudes of the terms that cancel in each result, from the
    widened inputs (``scale`` of assert_as_accurate; the equivalence tests
    use the dx one).  x_hat = (x - mean) / std carries the rounding of the
    mean, a relative error of eps * |mean| / std, into out = g * x_hat + b
    (whose terms may cancel), into dx (terms |g * dout / std|) and into
    dgamma = sum dout * x_hat; dbeta = sum dout cancels terms |dout|.
    ``sum_axes``: the axes dgamma and dbeta sum over."""
    xhat = np.abs(x - mean) / std + np.abs(mean) / std
    return {
        "out": float(np.max(np.abs(g) * xhat + np.abs(b))),
        "dx": float(np.max(np.abs(g * dout / std) * (1 + np.abs(mean) / std))),
        "dgamma": float(np.max(np.sum(np.abs(dout) * xhat, axis=sum_axes))),
        "dbeta": float(np.max(np.sum(np.abs(dout), axis=sum_axes))),
    }


# ---------------------------------------------------------------- batch norm


def bn_param(case, mode, eps, momentum, unbiased):
    return {
        "mode": mode,
        "eps": eps,
        "momentum": momentum,
        "running_mean": case.running_mean.copy(),
        "running_var": case.running_var.copy(),
        "unbiased_running_var": unbiased,
    }


def fam_forward(fam, module, case, p, extra=None):
    # (extra functions of the case, e.g. the residual, evaluated on it)
    return fam.call(
        module,
        case.x,
        case.gamma,
        case.beta,
        p,
        fam.eval_extra(case, extra),
        case.axis,
    )


def channels_last(case, a):
    """``a`` (x's shape) as (values, channels)."""
    if case.axis is None:
        return a.reshape(a.shape[0], -1)
    return np.moveaxis(a, case.axis, -1).reshape(-1, a.shape[case.axis])


def bn_scales(wcase, eps, mode="train"):
    xc = channels_last(wcase, wcase.x)
    if mode == "train":
        mean, var = xc.mean(axis=0), xc.var(axis=0)
    else:
        mean = wcase.running_mean.reshape(-1)
        var = wcase.running_var.reshape(-1)
    return term_scales(
        xc,
        channels_last(wcase, wcase.dout),
        wcase.gamma.reshape(-1),
        wcase.beta.reshape(-1),
        mean,
        np.sqrt(var + eps),
        0,
    )


def residual_scale(wcase, extra):
    """The largest |z| of a residual extra (0 without): out = [relu](bn(x)
    + z) cancels terms up to the bn scale plus it."""
    if not extra or "residual" not in extra:
        return 0.0
    z = np.abs(
        np.asarray(Family.eval_extra(wcase, extra)["residual"], np.float64)
    )
    return float(np.max(z[np.isfinite(z)], initial=0.0))


def check_bn_forward(fam, case, mode, eps, momentum, unbiased, extra=None):
    unbiased = unbiased and channels_last(case, case.x).shape[0] >= 2
    x_before = case.x.copy()
    p = bn_param(case, mode, eps, momentum, unbiased)
    rp = bn_param(case, mode, eps, momentum, unbiased)
    wcase = case.widened()
    wp = bn_param(wcase, mode, eps, momentum, unbiased)
    given_stats = (p["running_mean"], p["running_var"])
    out, cache = fam_forward(fam, bnfast, case, p, extra)
    ref, _ = fam_forward(fam, reference, case, rp, extra)
    wide, _ = fam_forward(fam, reference, wcase, wp, extra)
    what = f"{fam.name} {mode} forward (eps={eps:g})"
    assert_as_accurate(
        f"{what} out",
        case,
        out,
        ref,
        wide,
        bn_scales(wcase, eps, mode)["out"] + residual_scale(wcase, extra),
    )
    np.testing.assert_array_equal(case.x, x_before, err_msg="x was written")
    # the running mean cancels terms of the size of x
    xmax = np.max(np.abs(channels_last(wcase, wcase.x)), axis=0)
    rm_scale = float(
        np.max(
            np.abs(momentum * wcase.running_mean.reshape(-1))
            + (1 - momentum) * xmax
        )
    )
    for key, given_stat, scale in zip(
        ("running_mean", "running_var"), given_stats, (rm_scale, None)
    ):
        np.testing.assert_array_equal(
            given_stat,
            getattr(case, key),
            err_msg=f"the {key} passed in was written",
        )
        assert p[key].dtype == given_stat.dtype
        assert p[key].shape == given_stat.shape
        if mode == "train":
            assert_as_accurate(
                f"{what} {key} (momentum={momentum:g}, unbiased={unbiased})",
                case,
                p[key],
                rp[key],
                wp[key],
                scale,
            )
        else:
            assert cache.frozen
            np.testing.assert_array_equal(p[key], given_stat)


def check_bn_backward(fam, case, mode, eps, twin, extra=None):
    wcase = case.widened()
    _, cache = fam_forward(
        fam, bnfast, case, bn_param(case, mode, eps, 0.9, False), extra
    )
    _, rcache = fam_forward(
        fam, reference, case, bn_param(case, mode, eps, 0.9, False), extra
    )
    _, wcache = fam_forward(
        fam, reference, wcase, bn_param(wcase, mode, eps, 0.9, False), extra
    )
    fast = getattr(bnfast, twin)(case.dout, cache)
    ref = getattr(reference, twin)(case.dout, rcache)
    wide = getattr(reference, twin)(wcase.dout, wcache)
    scales = bn_scales(wcase, eps, mode)
    assert len(fast) == len(fam.grads)
    for name, f, r, w in zip(fam.grads, fast, ref, wide):
        # (dresidual: dout, masked by the ReLU: its own magnitude)
        assert_as_accurate(
            f"{fam.name} {twin} {name} ({mode}, eps={eps:g})",
            case,
            f,
            r,
            w,
            scales.get(name),
        )


# ---------------------------------------------------------------- layer norm


def ln_scales(wcase, eps):
    n = wcase.x.shape[0]
    xr = wcase.x.reshape(n, -1)
    mean = xr.mean(axis=1, keepdims=True)
    std = np.sqrt(xr.var(axis=1, keepdims=True) + eps)
    return term_scales(
        xr,
        wcase.dout.reshape(n, -1),
        wcase.gamma.reshape(-1),
        wcase.beta.reshape(-1),
        mean,
        std,
        0,
    )


# ---------------------------------------------------------------- RMS norm


def rms_scales(wcase, eps):
    """out: its own magnitude (a product, nothing cancels); dx = inv_rms *
    (g - xhat * mean(g * xhat)), g = gamma * dout: terms |g| * inv_rms and
    |xhat| (up to its row's largest) times the mean's terms; dgamma = sum
    dout * xhat over the rows."""
    d = wcase.gamma.size  # the normalized shape's size
    xr = wcase.x.reshape(-1, d)
    dout = wcase.dout.reshape(-1, d)
    inv_rms = 1 / np.sqrt(np.mean(xr * xr, axis=1, keepdims=True) + eps)
    xhat = xr * inv_rms
    g = wcase.gamma.reshape(-1) * dout
    terms = (
        np.abs(g)
        * inv_rms
        * (1 + np.abs(xhat) * np.max(np.abs(xhat), axis=1, keepdims=True))
    )
    return {
        "out": None,
        "dx": float(np.max(terms)),
        "dgamma": sum_scale(dout * xhat),
    }


# ---------------------------------------------------------------- group norm


@st.composite
def gn_specs(draw):
    spec = draw(specs("gn"))
    c = spec.shape[1]
    groups = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
    return spec, groups


def channels_moved_last(case):
    """A group norm case (channels on axis 1) with its channels moved last
    (axis -1): the same values; gamma and beta of the full (1, C, 1, ...)
    shape become (1, ..., 1, C)."""

    def last(p):
        return p if p.ndim < 2 else np.moveaxis(p, 1, -1)

    return dataclasses.replace(
        case,
        x=np.moveaxis(case.x, 1, -1),
        dout=np.moveaxis(case.dout, 1, -1),
        gamma=last(case.gamma),
        beta=last(case.beta),
        axis=-1,
    )


def gn_scales(wcase, groups, eps):
    """As (N, G, channels per group, elements per channel), in the NCHW
    frame (channels last moved back to axis 1)."""
    x, dout = wcase.x, wcase.dout
    if wcase.axis not in (None, 1):
        x = np.moveaxis(x, wcase.axis, 1)
        dout = np.moveaxis(dout, wcase.axis, 1)
    n, c = x.shape[:2]
    shape = (n, groups, c // groups, -1)
    xg = x.reshape(shape)
    mean = xg.mean(axis=(2, 3), keepdims=True)
    std = np.sqrt(xg.var(axis=(2, 3), keepdims=True) + eps)
    pshape = (1, groups, c // groups, 1)
    return term_scales(
        xg,
        dout.reshape(shape),
        wcase.gamma.reshape(pshape),
        wcase.beta.reshape(pshape),
        mean,
        std,
        (0, 3),
    )


# ---------------------------------------------------------------- the tests
# Every family of the registry (tests/families.py): its Family.strategy
# names the strategy of its inputs ("bn": (N, ...) features, "spatial": a
# channel axis, "ln": per-sample statistics, "gn": channel groups, "rms":
# the "ln" inputs with RMS norm's scales) and the
# conditioning scales of its results.


def draw_case(fam, data):
    """(Case, extra arguments) for a family."""
    if fam.strategy == "gn":
        spec, groups = data.draw(gn_specs(), label="spec, groups")
        case = build(spec)
        if data.draw(st.booleans(), label="channels last"):
            case = channels_moved_last(case)
        return case, {"G": groups}
    if fam.strategy == "rms":
        # gamma of the last axis (RMS norm then normalizes over it: (B, T,
        # D) batches) or of all the axes after the first
        case = build(data.draw(specs("rms"), label="spec"))
        if case.x.ndim > 2 and data.draw(st.booleans(), label="last axis"):
            d = case.x.shape[-1]
            case = dataclasses.replace(
                case, gamma=np.ascontiguousarray(case.gamma.reshape(-1)[:d])
            )
        return case, {}
    # the family's extra arguments (the residual: a function of the case)
    case = build(data.draw(specs(fam.strategy), label="spec"))
    return case, fam.extras_of(case)[0]


def plain_scales(fam, wcase, eps, extra):
    if fam.strategy == "gn":
        return gn_scales(wcase, extra["G"], eps)
    if fam.strategy == "rms":
        return rms_scales(wcase, eps)
    return ln_scales(wcase, eps)


FAMILY = pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)


@FAMILY
@given(data=st.data(), eps=EPS)
def test_forward(fam, data, eps):
    if fam.param == "bn":
        case, extra = draw_case(fam, data)
        check_bn_forward(
            fam,
            case,
            data.draw(st.sampled_from(fam.modes), label="mode"),
            eps,
            data.draw(MOMENTUM, label="momentum"),
            data.draw(st.booleans(), label="unbiased"),
            extra,
        )
        return
    case, extra = draw_case(fam, data)
    wcase = case.widened()
    out, _ = fam_forward(fam, bnfast, case, {"eps": eps}, extra)
    ref, _ = fam_forward(fam, reference, case, {"eps": eps}, extra)
    wide, _ = fam_forward(fam, reference, wcase, {"eps": eps}, extra)
    assert_as_accurate(
        f"{fam.forward} out {extra} (eps={eps:g})",
        case,
        out,
        ref,
        wide,
        plain_scales(fam, wcase, eps, extra)["out"],
    )


@FAMILY
@given(data=st.data(), eps=EPS)
def test_backward(fam, data, eps):
    case, extra = draw_case(fam, data)
    twin = data.draw(st.sampled_from(fam.backwards), label="twin")
    if fam.param == "bn":
        mode = data.draw(st.sampled_from(fam.backward_modes), label="mode")
        check_bn_backward(fam, case, mode, eps, twin, extra)
        return
    check_plain_backward(fam, case, extra, eps, twin)


def check_plain_backward(fam, case, extra, eps, twin):
    wcase = case.widened()
    _, cache = fam_forward(fam, bnfast, case, {"eps": eps}, extra)
    _, rcache = fam_forward(fam, reference, case, {"eps": eps}, extra)
    _, wcache = fam_forward(fam, reference, wcase, {"eps": eps}, extra)
    fast = getattr(bnfast, twin)(case.dout, cache)
    ref = getattr(reference, twin)(case.dout, rcache)
    wide = getattr(reference, twin)(wcase.dout, wcache)
    scales = plain_scales(fam, wcase, eps, extra)
    for name, f, r, w in zip(fam.grads, fast, ref, wide):
        assert_as_accurate(
            f"{twin} {name} {extra} (eps={eps:g})", case, f, r, w, scales[name]
        )
