"""Group norm on channels-last data (spatial_groupnorm_forward(...,
axis=-1)): equivalence with the reference on the shared generator, finite
differences, bad input, out=, threads, the in-place read (no transposing
copy), the extremes of the range, the GroupNorm layer's axis, and PyTorch
on a channels_last tensor."""

import copy
import dataclasses

import numpy as np
import pytest

import bnfast
from bnfast import reference

from arrays import assert_as_accurate, numeric_grad, spatial_cases, sum_scale

EPS = 1e-5


def _to_last(case):
    """The case with its channels moved last (axis -1): the spatial cases
    of axis 1 as channels-last views of their memory (C order becomes
    strided channels, copied; channels-last-memory becomes C-contiguous
    (N, ..., C), read in place); the 2-D ones keep (N, C), axis -1."""
    if case.axis == -1:
        return case
    if case.x.ndim == 2:
        return dataclasses.replace(case, axis=-1)
    return dataclasses.replace(
        case,
        x=np.moveaxis(case.x, 1, -1),
        dout=np.moveaxis(case.dout, 1, -1),
        layout=case.layout + "-moved",
        axis=-1,
    )


CASES = [_to_last(c) for c in spatial_cases()]


def _group_counts(c):
    # as tests/test_batchnorm_equivalence.py: 1, C and the smallest divisor
    return sorted({1, c} | {g for g in range(2, c) if c % g == 0})[:3]


GN_CASES = [
    (case, g) for case in CASES for g in _group_counts(case.x.shape[-1])
]


def run_gn(module, case, groups, axis=-1):
    with np.errstate(invalid="ignore", over="ignore"):
        return module.spatial_groupnorm_forward(
            case.x, case.gamma, case.beta, groups, {"eps": EPS}, axis=axis
        )


@pytest.mark.parametrize(
    "case,groups", GN_CASES, ids=[f"{c.id}-G{g}" for c, g in GN_CASES]
)
def test_groupnorm_channels_last(case, groups):
    out, cache = run_gn(bnfast, case, groups)
    ref, rcache = run_gn(reference, case, groups)
    wcase = case.widened()
    wide, wcache = run_gn(reference, wcase, groups)
    assert_as_accurate(
        "spatial_groupnorm_forward axis=-1 out", case, out, ref, wide
    )

    fast = bnfast.spatial_groupnorm_backward(case.dout, cache)
    with np.errstate(invalid="ignore", over="ignore"):
        refg = reference.spatial_groupnorm_backward(case.dout, rcache)
        wideg = reference.spatial_groupnorm_backward(wcase.dout, wcache)
    # the scales of tests/test_batchnorm_equivalence.py's group norm, in
    # the NCHW frame (channels moved to axis 1)
    x1 = np.moveaxis(wcase.x, -1, 1)
    d1 = np.moveaxis(wcase.dout, -1, 1)
    n, c = x1.shape[:2]
    _, var, g, *_ = wcache
    std = np.sqrt(var + EPS)
    xg = x1.reshape(n, groups, -1)
    with np.errstate(invalid="ignore"):
        mean = xg.mean(axis=2, keepdims=True)
        terms = np.abs((d1 * g).reshape(n, groups, -1) / std)
        terms = terms * (1 + np.abs(mean) / std)
    dx_scale = float(np.nanmax(terms[np.isfinite(terms)], initial=0.0))
    with np.errstate(invalid="ignore"):
        xhat = (xg - mean) / std
        per = np.abs(d1.reshape(n, groups, -1)) * (
            np.abs(xhat) + np.abs(mean) / std
        )
        dg_terms = per.reshape(n, c, -1).sum(axis=(0, 2))
    dg_scale = float(np.nanmax(dg_terms[np.isfinite(dg_terms)], initial=0.0))
    db_scale = sum_scale(np.moveaxis(d1, 1, 0).reshape(c, -1), axis=1)
    for name, f, r, w, s in zip(
        ("dx", "dgamma", "dbeta"),
        fast,
        refg,
        wideg,
        (dx_scale, dg_scale, db_scale),
    ):
        assert_as_accurate(
            f"spatial_groupnorm_backward axis=-1 {name} G={groups}",
            case,
            f,
            r,
            w,
            scale=s,
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_channels_last_is_nchw_moved(dtype, groups):
    # the two kernels agree on the same values (to rounding: different
    # summation orders)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 6, 5, 4)) * 3 + 2).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    g, b = rng.uniform(0.5, 1.5, 4), rng.uniform(-1, 1, 4)
    out, cache = bnfast.spatial_groupnorm_forward(x, g, b, groups, {}, axis=-1)
    out1, cache1 = bnfast.spatial_groupnorm_forward(
        np.ascontiguousarray(np.moveaxis(x, -1, 1)), g, b, groups, {}
    )
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(
        np.moveaxis(out, -1, 1), out1, rtol=tol, atol=tol
    )
    np.testing.assert_allclose(cache.mean, cache1.mean, rtol=tol, atol=tol)
    np.testing.assert_allclose(cache.invstd, cache1.invstd, rtol=tol)
    dx, dg, db = bnfast.spatial_groupnorm_backward(dout, cache)
    dx1, dg1, db1 = bnfast.spatial_groupnorm_backward(
        np.ascontiguousarray(np.moveaxis(dout, -1, 1)), cache1
    )
    np.testing.assert_allclose(np.moveaxis(dx, -1, 1), dx1, rtol=tol, atol=tol)
    np.testing.assert_allclose(dg, dg1, rtol=tol, atol=tol)
    np.testing.assert_allclose(db, db1, rtol=tol, atol=tol)
    assert dx.dtype == dtype and dx.shape == x.shape
    assert cache.axis == -1 and cache1.axis == 1


@pytest.mark.parametrize("axis", [-1, 3])
def test_the_positive_index_of_the_last_axis(axis):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 5, 6))
    out, cache = bnfast.spatial_groupnorm_forward(
        x, None, None, 3, {}, axis=axis
    )
    ref, _ = reference.spatial_groupnorm_forward(
        x, None, None, 3, {}, axis=axis
    )
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    assert cache.axis == -1


# -------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "shape,groups",
    [
        ((2, 3, 4, 6), 3),
        ((2, 3, 4, 6), 6),
        ((2, 3, 4, 6), 1),
        ((3, 5, 4), 2),
        ((2, 2, 2, 2, 4), 2),
    ],
)
def test_finite_differences(shape, groups):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape) * 2 + 1
    c = shape[-1]
    gamma = rng.uniform(0.5, 1.5, c)
    beta = rng.uniform(-1, 1, c)
    dout = rng.standard_normal(shape)

    def loss():
        out, _ = bnfast.spatial_groupnorm_forward(
            x, gamma, beta, groups, {"eps": EPS}, axis=-1
        )
        return float(np.sum(out * dout))

    _, cache = bnfast.spatial_groupnorm_forward(
        x, gamma, beta, groups, {"eps": EPS}, axis=-1
    )
    dx, dgamma, dbeta = bnfast.spatial_groupnorm_backward(dout, cache)
    np.testing.assert_allclose(
        dx, numeric_grad(loss, x, 1e-5), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        dgamma, numeric_grad(loss, gamma, 1e-5), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        dbeta, numeric_grad(loss, beta, 1e-5), rtol=1e-5, atol=1e-7
    )


# ---------------------------------------------------------- bad input


def _good():
    rng = np.random.default_rng(1)
    return dict(
        x=rng.standard_normal((2, 4, 5, 3)),
        gamma=np.ones(3),
        beta=np.zeros(3),
        G=3,
        gn_param={"eps": 1e-5},
        axis=-1,
    )


ERRORS = [
    (
        "middle axis",
        {"axis": 2},
        ValueError,
        "axis must be 1 (channels first) or -1 (channels last), got 2 for x "
        "of 4 dimensions",
    ),
    (
        "middle negative axis",
        {"axis": -2},
        ValueError,
        "axis must be 1 (channels first) or -1 (channels last), got -2",
    ),
    (
        "batch axis",
        {"axis": 0},
        ValueError,
        "axis must not be 0, the batch axis",
    ),
    (
        "batch axis, negative",
        {"axis": -4},
        ValueError,
        "axis must not be 0, the batch axis",
    ),
    (
        "axis out of bounds",
        {"axis": 4},
        ValueError,
        "axis 4 is out of bounds for x of 4 dimensions",
    ),
    (
        "axis a float",
        {"axis": -1.0},
        TypeError,
        "axis must be an int, got float",
    ),
    (
        "axis a bool",
        {"axis": True},
        TypeError,
        "axis must be an int, got bool",
    ),
    (
        "G does not divide C",
        {"G": 2},
        ValueError,
        "G must divide the number of channels C = 3, got 2",
    ),
    (
        "G of the NCHW channels",
        {"G": 4},
        ValueError,
        "G must divide the number of channels C = 3, got 4",
    ),
    (
        "gamma shape",
        {"gamma": np.ones(4)},
        ValueError,
        "gamma must have shape (3,) or (1, 1, 1, 3) to match x, got (4,)",
    ),
    (
        "gamma in NCHW shape",
        {"gamma": np.ones((1, 3, 1, 1))},
        ValueError,
        "gamma must have shape (3,) or (1, 1, 1, 3) to match x, got "
        "(1, 3, 1, 1)",
    ),
    (
        "beta shape",
        {"beta": np.ones(2)},
        ValueError,
        "beta must have shape (3,) or (1, 1, 1, 3) to match x, got (2,)",
    ),
    (
        "empty batch",
        {"x": np.ones((0, 4, 5, 3))},
        ValueError,
        "x is an empty batch (N = 0)",
    ),
    (
        "no elements per channel",
        {"x": np.ones((2, 0, 5, 3))},
        ValueError,
        "x has no elements per channel",
    ),
    (
        "longdouble x",
        {"x": np.ones((2, 4, 5, 3), np.longdouble)},
        TypeError,
        "got dtype float128",
    ),
    (
        "negative eps",
        {"gn_param": {"eps": -1}},
        ValueError,
        "gn_param['eps'] must be >= 0.0, got -1",
    ),
]


# the reference checks only the axis's value
ERROR_CALLS = [(bnfast, *e) for e in ERRORS] + [
    (reference, *e) for e in ERRORS if e[0].startswith("middle")
]


@pytest.mark.parametrize(
    "module,desc,change,exc,message",
    ERROR_CALLS,
    ids=[f"{m.__name__}-{e[1]}" for m, *e in ERROR_CALLS],
)
def test_errors(module, desc, change, exc, message):
    args = _good()
    args.update(change)
    before = copy.deepcopy(args)
    with pytest.raises(exc) as info:
        module.spatial_groupnorm_forward(**args)
    assert message in str(info.value)
    for key, value in before.items():
        if isinstance(value, dict):
            assert args[key] == value, key
        else:
            np.testing.assert_array_equal(args[key], value, err_msg=key)


def test_backward_errors():
    args = _good()
    _, cache = bnfast.spatial_groupnorm_forward(**args)
    dout = np.ones((2, 4, 5, 3))
    before = dout.copy()
    with pytest.raises(
        ValueError,
        match=r"dout must have the shape of x "
        r"\(2, 4, 5, 3\), got \(2, 3, 4, 5\)",
    ):
        bnfast.spatial_groupnorm_backward(np.ones((2, 3, 4, 5)), cache)
    with pytest.raises(
        ValueError, match="out must not share memory with dout"
    ):
        bnfast.spatial_groupnorm_backward(dout, cache, out=dout)
    np.testing.assert_array_equal(dout, before)
    with pytest.raises(
        ValueError, match="out must not share memory with the cached x"
    ):
        bnfast.spatial_groupnorm_backward(dout, cache, out=args["x"])
    with pytest.raises(ValueError, match="out must have shape"):
        bnfast.spatial_groupnorm_backward(
            dout, cache, out=np.empty((2, 3, 4, 5))
        )


def test_forward_out_errors():
    args = _good()
    before = copy.deepcopy(args)
    x = args.pop("x")
    with pytest.raises(ValueError, match="out must not share memory with x"):
        bnfast.spatial_groupnorm_forward(x, **args, out=x)
    with pytest.raises(ValueError, match="out must not share memory with x"):
        bnfast.spatial_groupnorm_forward(x[:, :2], **args, out=x[:, 1:3])
    with pytest.raises(TypeError, match="out must have dtype float64"):
        bnfast.spatial_groupnorm_forward(
            x, **args, out=np.empty(x.shape, np.float32)
        )
    overlapping = np.lib.stride_tricks.as_strided(
        np.empty(200), x.shape, (8, 8, 8, 8)
    )
    with pytest.raises(ValueError, match="out has elements sharing memory"):
        bnfast.spatial_groupnorm_forward(x, **args, out=overlapping)
    np.testing.assert_array_equal(x, before["x"])


# ------------------------------------------------------------------ out=


def _buffers(shape, dtype):
    """Outputs of shape in several layouts: C order, every other element
    of a larger array, Fortran order, reversed rows."""
    big = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
    return {
        "C": np.empty(shape, dtype),
        "strided-channels": big[..., ::2],
        "F": np.empty(shape, dtype, order="F"),
        "reversed": np.empty(shape, dtype)[::-1],
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "strided-channels", "F", "reversed"])
@pytest.mark.parametrize(
    "module", [bnfast, reference], ids=["bnfast", "reference"]
)
def test_out(module, dtype, layout):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    g, b = rng.uniform(0.5, 1.5, 6), rng.uniform(-1, 1, 6)
    expected, cache = module.spatial_groupnorm_forward(x, g, b, 3, {}, axis=-1)
    buf = _buffers(x.shape, dtype)[layout]
    out, _ = module.spatial_groupnorm_forward(x, g, b, 3, {}, axis=-1, out=buf)
    assert out is buf
    np.testing.assert_array_equal(out, expected)
    dx_expected, *_ = module.spatial_groupnorm_backward(dout, cache)
    buf = _buffers(x.shape, dtype)[layout]
    dx, *_ = module.spatial_groupnorm_backward(dout, cache, out=buf)
    assert dx is buf
    np.testing.assert_array_equal(dx, dx_expected)


# ------------------------------------------------------ layouts, no copy


def test_read_in_place():
    # C-contiguous (N, H, W, C), a strided or reversed batch of it, a
    # strided H of one W: the cache keeps a view of x, no copy; strided
    # channels, and spatial axes that do not merge into one row axis
    # (x[:, ::2] of W > 1), are copied
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 5, 4, 8))
    for view in (x, x[::2], x[::-1], x[:, ::2, :1], x[:, ::-1, ::-1]):
        _, cache = bnfast.spatial_groupnorm_forward(
            view, None, None, 2, {}, axis=-1
        )
        assert np.shares_memory(cache.x, x), view.strides
    for view in (x[..., ::2], x[:, ::2]):
        _, cache = bnfast.spatial_groupnorm_forward(
            view, None, None, 2, {}, axis=-1
        )
        assert not np.shares_memory(cache.x, x)


def test_broadcast_rows_are_read_in_place():
    # a row stride of 0 (the same pixel everywhere): a constant group per
    # sample, out == beta, dx == 0 to rounding (a * dy - a * m / m)
    rng = np.random.default_rng(15)
    pixel = rng.standard_normal((3, 1, 1, 4))
    x = np.broadcast_to(pixel, (3, 5, 6, 4))
    beta = rng.uniform(-1, 1, 4)
    out, cache = bnfast.spatial_groupnorm_forward(
        x, None, beta, 4, {}, axis=-1
    )
    assert np.shares_memory(cache.x, pixel)
    np.testing.assert_array_equal(out, np.broadcast_to(beta, x.shape))
    dx, _, dbeta = bnfast.spatial_groupnorm_backward(
        np.broadcast_to(np.ones(4), x.shape), cache
    )
    np.testing.assert_allclose(dx, 0, atol=1e-12)
    np.testing.assert_array_equal(dbeta, 90)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layouts_agree(dtype):
    rng = np.random.default_rng(8)
    base = rng.standard_normal((4, 6, 5, 6)).astype(dtype)
    dout = rng.standard_normal((2, 6, 5, 6)).astype(dtype)
    g = rng.uniform(0.5, 1.5, 6)
    contiguous = np.ascontiguousarray(base[::2])
    want, cache = bnfast.spatial_groupnorm_forward(
        contiguous, g, None, 3, {}, axis=-1
    )
    dwant = bnfast.spatial_groupnorm_backward(dout, cache)
    for x in (
        base[::2],
        np.asfortranarray(contiguous),
        np.ascontiguousarray(contiguous[::-1])[::-1],
    ):
        out, cache = bnfast.spatial_groupnorm_forward(
            x, g, None, 3, {}, axis=-1
        )
        np.testing.assert_array_equal(out, want)
        got = bnfast.spatial_groupnorm_backward(np.asfortranarray(dout), cache)
        for a, b in zip(got, dwant):
            if a is None:
                assert b is None
            else:
                np.testing.assert_array_equal(a, b)


# -------------------------------------------------------- numerics


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_a_constant_group_gives_beta_exactly(dtype, groups):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 7, 3, 4)).astype(dtype)
    x[..., : 4 // groups] = dtype(12345.678)
    beta = rng.uniform(-1, 1, 4).astype(dtype)
    out, _ = bnfast.spatial_groupnorm_forward(
        x, np.ones(4, dtype), beta, groups, {}, axis=-1
    )
    if groups > 1:
        np.testing.assert_array_equal(
            out[..., : 4 // groups],
            np.broadcast_to(
                beta[: 4 // groups], out[..., : 4 // groups].shape
            ),
        )


@pytest.mark.parametrize(
    "dtype,big,tiny", [(np.float64, 1e200, 1e-200), (np.float32, 1e30, 1e-30)]
)
def test_extremes_of_the_range(dtype, big, tiny):
    # squares out of range: the rescue gives what the NCHW kernels give
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, 4, 5, 4))
    x[..., :2] *= big
    x[..., 2:] *= tiny
    x = x.astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    g = np.linspace(0.5, 1.5, 4)
    x1 = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    for groups in (1, 2, 4):
        out, cache = bnfast.spatial_groupnorm_forward(
            x, g, None, groups, {"eps": 0.0}, axis=-1
        )
        out1, cache1 = bnfast.spatial_groupnorm_forward(
            x1, g, None, groups, {"eps": 0.0}
        )
        assert np.isfinite(out).all()
        tol = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(
            np.moveaxis(out, -1, 1), out1, rtol=tol, atol=tol
        )
        dx, dg, db = bnfast.spatial_groupnorm_backward(dout, cache)
        dx1, dg1, db1 = bnfast.spatial_groupnorm_backward(
            np.ascontiguousarray(np.moveaxis(dout, -1, 1)), cache1
        )
        np.testing.assert_allclose(np.moveaxis(dx, -1, 1), dx1, rtol=tol)
        np.testing.assert_allclose(dg, dg1, rtol=tol, atol=tol)
        assert db is None and db1 is None


def test_nan_and_inf_stay_in_their_group():
    x = np.random.default_rng(11).standard_normal((2, 3, 3, 4))
    x[0, 1, 1, 0] = np.nan
    x[1, 0, 0, 3] = np.inf
    out, cache = bnfast.spatial_groupnorm_forward(
        x, None, None, 2, {}, axis=-1
    )
    with np.errstate(invalid="ignore"):
        ref, _ = reference.spatial_groupnorm_forward(
            x, None, None, 2, {}, axis=-1
        )
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    assert np.isnan(out[0, ..., :2]).all() and np.isnan(out[1, ..., 2:]).all()
    assert np.isfinite(out[0, ..., 2:]).all()
    assert np.isfinite(out[1, ..., :2]).all()
    assert np.isposinf(cache.mean[3])  # as np.mean of the group


# --------------------------------------------------------------- threads


@pytest.fixture
def small_parallel_min():
    least = bnfast._kernels._get_parallel_min()
    bnfast._kernels._set_parallel_min(1024)
    yield
    bnfast._kernels._set_parallel_min(least)
    bnfast.set_num_threads(None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads(small_parallel_min, dtype):
    # samples split among threads: the forward is bitwise the serial one,
    # dgamma and dbeta are summed in thread order (equal to rounding)
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((7, 9, 10, 8)) + 3).astype(dtype)
    dout = np.cos(x)
    g, b = rng.uniform(0.5, 1.5, 8), rng.uniform(-1, 1, 8)

    def run():
        out, cache = bnfast.spatial_groupnorm_forward(x, g, b, 4, {}, axis=-1)
        return (out,) + bnfast.spatial_groupnorm_backward(dout, cache)

    bnfast.set_num_threads(1)
    serial = run()
    for threads in (2, 3):
        bnfast.set_num_threads(threads)
        par, again = run(), run()
        for k, (s, p, a) in enumerate(zip(serial, par, again)):
            np.testing.assert_array_equal(p, a)
            if k <= 1:  # out and dx: per sample
                np.testing.assert_array_equal(p, s)
            else:
                tol = 1e-5 if dtype == np.float32 else 1e-12
                np.testing.assert_allclose(p, s, rtol=tol, atol=tol)


# ----------------------------------------------------------------- layer


def test_layer_axis():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 5, 4, 6))
    gn = bnfast.GroupNorm(
        3,
        6,
        axis=-1,
        dtype=np.float64,
        gamma_init=lambda s, d: rng.uniform(0.5, 1.5, s),
        beta_init=lambda s, d: rng.uniform(-1, 1, s),
    )
    assert repr(gn) == "GroupNorm(3, 6, eps=1e-05, axis=-1, dtype='float64')"
    assert repr(bnfast.GroupNorm(3, 6)) == "GroupNorm(3, 6, eps=1e-05)"
    out = gn(x)
    want, cache = bnfast.spatial_groupnorm_forward(
        x, gn.gamma, gn.beta, 3, {}, axis=-1
    )
    np.testing.assert_array_equal(out, want)
    dout = rng.standard_normal(x.shape)
    dx = gn.backward(dout)
    dwant = bnfast.spatial_groupnorm_backward(dout, cache)
    np.testing.assert_array_equal(dx, dwant[0])
    np.testing.assert_array_equal(gn.grads["gamma"], dwant[1])
    np.testing.assert_array_equal(gn.grads["beta"], dwant[2])
    # the NCHW layer on the moved data agrees
    nchw = bnfast.GroupNorm(3, 6, dtype=np.float64)
    nchw.load_state_dict(gn.state_dict())
    np.testing.assert_allclose(
        nchw(np.moveaxis(x, -1, 1)),
        np.moveaxis(out, -1, 1),
        rtol=1e-12,
        atol=1e-12,
    )
    with pytest.raises(
        ValueError, match="x has 4 channels along axis -1, GroupNorm expects 6"
    ):
        gn(np.ones((2, 6, 3, 4)))


@pytest.mark.parametrize(
    "axis,exc,message",
    [
        (0, ValueError, "axis must not be 0, the batch axis"),
        (1.0, TypeError, "axis must be an int, got float"),
        (True, TypeError, "axis must be an int, got bool"),
    ],
)
def test_layer_bad_axis(axis, exc, message):
    with pytest.raises(exc, match=message):
        bnfast.GroupNorm(2, 4, axis=axis)


def test_layer_middle_axis_is_refused_by_the_forward():
    gn = bnfast.GroupNorm(2, 4, axis=2, dtype=np.float64)
    with pytest.raises(
        ValueError,
        match="axis must be 1 .channels first. or -1 .channels last., got 2",
    ):
        gn(np.ones((2, 3, 4, 5)))
    assert gn._cache is None


# ----------------------------------------------------------------- torch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 4, 8])
def test_torch_group_norm_on_channels_last(dtype, groups):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(14)
    x = (rng.standard_normal((4, 6, 7, 8)) + 2).astype(dtype)  # NHWC
    dout = rng.standard_normal(x.shape).astype(dtype)
    g = rng.uniform(0.5, 1.5, 8).astype(dtype)
    b = rng.uniform(-1, 1, 8).astype(dtype)
    # an NCHW tensor in channels_last memory: a view of x's memory
    tx = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_(True)
    assert tx.is_contiguous(memory_format=torch.channels_last)
    tg = torch.from_numpy(g).requires_grad_(True)
    tb = torch.from_numpy(b).requires_grad_(True)
    ty = torch.nn.functional.group_norm(tx, groups, tg, tb, eps=EPS)
    ty.backward(torch.from_numpy(dout).permute(0, 3, 1, 2))
    out, cache = bnfast.spatial_groupnorm_forward(
        x, g, b, groups, {"eps": EPS}, axis=-1
    )
    dx, dg, db = bnfast.spatial_groupnorm_backward(dout, cache)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(
        out, ty.detach().permute(0, 2, 3, 1).numpy(), rtol=tol, atol=tol
    )
    np.testing.assert_allclose(
        dx, tx.grad.permute(0, 2, 3, 1).numpy(), rtol=tol, atol=tol
    )
    np.testing.assert_allclose(dg, tg.grad.numpy(), rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=tol, atol=tol * 10)


# ------------------------------------------------- hypothesis properties

# tests/test_properties.py's group norm specs (shapes past the kernels'
# blocks, layouts, offsets, trends, constant channels and samples, eps),
# with the channels moved last: the same values, so its scales hold
from hypothesis import given  # noqa: E402

import test_properties as props  # noqa: E402


def _moved(case):
    # gamma and beta of the full (1, C, 1, ...) shape become (1, ..., 1, C)
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


@given(spec_groups=props.gn_specs(), eps=props.EPS)
def test_property_channels_last(spec_groups, eps):
    spec, groups = spec_groups
    case = props.build(spec)
    scales = props.gn_scales(case.widened(), groups, eps)
    case = _moved(case)
    wcase = case.widened()

    def fwd(module, c):
        return module.spatial_groupnorm_forward(
            c.x, c.gamma, c.beta, groups, {"eps": eps}, axis=-1
        )

    out, cache = fwd(bnfast, case)
    ref, rcache = fwd(reference, case)
    wide, wcache = fwd(reference, wcase)
    label = f"axis=-1 G={groups} (eps={eps:g})"
    assert_as_accurate(
        f"spatial_groupnorm_forward out {label}",
        case,
        out,
        ref,
        wide,
        scales["out"],
    )
    fast = bnfast.spatial_groupnorm_backward(case.dout, cache)
    refg = reference.spatial_groupnorm_backward(case.dout, rcache)
    wideg = reference.spatial_groupnorm_backward(wcase.dout, wcache)
    for name, f, r, w in zip(("dx", "dgamma", "dbeta"), fast, refg, wideg):
        assert_as_accurate(
            f"spatial_groupnorm_backward {name} {label}",
            case,
            f,
            r,
            w,
            scales[name],
        )
