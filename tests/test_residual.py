"""The fused residual (issue 13, item 6): ``residual=z`` on the batch norm
forwards, out = relu(bn(x) + z) (or bn(x) + z) in one pass, and the
backward's fourth gradient dresidual.  Against the reference twin on the
shared generator (z in a layout of its own), by finite differences, its
errors (nothing modified), out= (the in-place add of an inference block),
the layers, synchronized batch norm on the fake communicator, thread
counts, and PyTorch's autograd (skipped without torch)."""

import zlib

import numpy as np
import pytest

import bnfast
from bnfast import distributed, reference

from arrays import (
    _layout,
    assert_as_accurate,
    cases,
    make_case,
    numeric_grad,
    spatial_cases,
    sum_scale,
)
from fakempi import run_ranks

# The registry's residual variants (tests/families.py) run the whole shared
# generator through the generic files; here, the residual's own checks (z
# in a layout other than x's, untouched; the cache's flags) on the
# contents that matter to it
CASES = [
    c
    for c in cases() + spatial_cases()
    if c.contents in ("plain", "offset1e4", "nan-inf", "mixed-params")
]
EPS = 1e-5
ACTIVATIONS = pytest.mark.parametrize("activation", [None, "relu"])
MODES = pytest.mark.parametrize("mode", ["train", "test"])
ZLAYOUTS = ("C", "F", "rows-strided", "cols-strided", "reversed")


def residual_for(case):
    """z of x's shape and dtype, in a layout other than x's (by case),
    with a NaN in the NaN/Inf cases."""
    # crc32, not hash(): str hashes change per process (PYTHONHASHSEED)
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    z = rng.standard_normal(case.x.shape)
    if case.contents == "nan-inf":
        z.flat[z.size // 3] = np.nan
    layout = ZLAYOUTS[
        (ZLAYOUTS.index(case.layout) + 1) % len(ZLAYOUTS)
        if case.layout in ZLAYOUTS
        else 0
    ]
    return _layout(z.astype(case.x.dtype), layout)


def params(case, mode):
    return {
        "mode": mode,
        "eps": EPS,
        "momentum": 0.8,
        "running_mean": case.running_mean.copy(),
        "running_var": case.running_var.copy(),
    }


def run(module, case, z, mode, activation):
    p = params(case, mode)
    with np.errstate(invalid="ignore", over="ignore"):
        if case.axis is None:
            out, cache = module.batchnorm_forward(
                case.x,
                case.gamma,
                case.beta,
                p,
                activation=activation,
                residual=z,
            )
        else:
            out, cache = module.spatial_batchnorm_forward(
                case.x,
                case.gamma,
                case.beta,
                p,
                axis=case.axis,
                activation=activation,
                residual=z,
            )
    return out, cache, p


@MODES
@ACTIVATIONS
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward(case, mode, activation):
    z = residual_for(case)
    zcopy = z.copy()
    out, cache, p = run(bnfast, case, z, mode, activation)
    ref, _, rp = run(reference, case, z, mode, activation)
    wcase = case.widened()
    wide, _, wp = run(
        reference, wcase, z.astype(wcase.x.dtype), mode, activation
    )
    assert cache.has_residual and cache.frozen == (mode == "test")
    # bn(x) + z cancels: the rule's scale is the magnitude of its terms,
    # |bn(x)| + |z| <= |out| + 2 |z| (out = relu(bn(x) + z) or bn(x) + z)
    terms = np.abs(wide) + 2 * np.abs(z.astype(wide.dtype))
    scale = float(np.max(terms[np.isfinite(terms)], initial=0.0))
    assert_as_accurate(
        f"forward {mode} +res ({activation})",
        case,
        out,
        ref,
        wide,
        scale=scale,
    )
    assert z.tobytes() == zcopy.tobytes()  # untouched (NaN too, any dtype)
    if mode == "train":
        for key in ("running_mean", "running_var"):
            assert_as_accurate(
                f"forward +res {key}", case, p[key], rp[key], wp[key]
            )


def backward_of(case):
    return (
        (bnfast.batchnorm_backward, reference.batchnorm_backward_alt)
        if case.axis is None
        else (
            bnfast.spatial_batchnorm_backward,
            reference.spatial_batchnorm_backward,
        )
    )


@MODES
@ACTIVATIONS
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_backward(case, mode, activation):
    z = residual_for(case)
    _, cache, _ = run(bnfast, case, z, mode, activation)
    _, rcache, _ = run(reference, case, z, mode, activation)
    wcase = case.widened()
    _, wcache, _ = run(
        reference, wcase, z.astype(wcase.x.dtype), mode, activation
    )
    fast_bw, ref_bw = backward_of(case)
    fast = fast_bw(case.dout, cache)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = ref_bw(case.dout, rcache)
        wide = ref_bw(wcase.dout, wcache)
    assert len(fast) == len(ref) == 4
    bn_cache = wcache if case.axis is None else wcache[0]
    _, xhat, mean, var, g, *_, mask, frozen, has_res = bn_cache
    assert has_res and frozen == (mode == "test")
    std = np.sqrt(var + EPS)
    dout = (
        wcase.dout
        if case.axis is None
        else np.moveaxis(wcase.dout, case.axis, -1)
    ).reshape(-1, len(g))
    grad = dout if mask is None else dout * mask.reshape(dout.shape)
    terms = np.abs(g * dout / std) * (1 + np.abs(mean) / std)
    dx_scale = (
        None
        if frozen
        else float(np.nanmax(terms[np.isfinite(terms)], initial=0.0))
    )
    with np.errstate(invalid="ignore"):
        dg_terms = grad * (np.abs(xhat) + np.abs(mean) / std)
    scales = (dx_scale, sum_scale(dg_terms), sum_scale(grad), None)
    for name, f, r, w, s in zip(
        ("dx", "dgamma", "dbeta", "dresidual"), fast, ref, wide, scales
    ):
        assert_as_accurate(
            f"backward {mode} +res {name} ({activation})",
            case,
            f,
            r,
            w,
            scale=s,
        )
    if activation is None:  # the same gradient, as autograd
        assert fast[3] is case.dout


@MODES
@ACTIVATIONS
@pytest.mark.parametrize(
    "shape,axis",
    [((5, 3), None), ((3, 4, 2), None), ((2, 3, 4, 2), 1), ((2, 3, 2, 4), -1)],
)
def test_finite_differences(shape, axis, activation, mode):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape)
    z = np.asfortranarray(rng.standard_normal(shape))
    d = int(np.prod(shape[1:])) if axis is None else shape[axis]
    gamma, beta = rng.uniform(0.5, 1.5, d), rng.uniform(-0.5, 0.5, d)
    rm, rv = rng.uniform(-1, 1, d), rng.uniform(0.5, 2, d)
    dout = rng.standard_normal(shape)

    def fwd():
        p = {"mode": mode, "running_mean": rm, "running_var": rv}
        if axis is None:
            return bnfast.batchnorm_forward(
                x, gamma, beta, p, activation=activation, residual=z
            )
        return bnfast.spatial_batchnorm_forward(
            x, gamma, beta, p, axis=axis, activation=activation, residual=z
        )

    _, cache = fwd()
    grads = bnfast.batchnorm_backward(dout, cache)
    f = lambda: fwd()[0]  # noqa: E731
    for name, got, a in zip(
        ("dx", "dgamma", "dbeta", "dresidual"), grads, (x, gamma, beta, z)
    ):
        np.testing.assert_allclose(
            got,
            numeric_grad(f, a, 1e-6, dout),
            rtol=1e-6,
            atol=1e-8,
            err_msg=name,
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_residual_mask_and_values(dtype):
    # relu(bn(x) + z) exactly where bn(x) alone would be; the mask is that
    # of the sum, not of bn(x)
    x = np.array([[1.0, 2.0], [3.0, 6.0], [2.0, 1.0]], dtype)
    z = np.array([[0.5, -2.0], [0.25, 0.0], [-9.0, 3.0]], dtype)
    p = {"mode": "train"}
    y, _ = bnfast.batchnorm_forward(x, np.ones(2), np.zeros(2), dict(p))
    out, cache = bnfast.batchnorm_forward(
        x, np.ones(2), np.zeros(2), dict(p), residual=z, activation="relu"
    )
    np.testing.assert_array_equal(out, np.maximum(y + z, 0))
    dout = np.arange(1.0, 7.0, dtype=dtype).reshape(3, 2)
    dx, dg, db, dz = bnfast.batchnorm_backward(dout, cache)
    np.testing.assert_array_equal(dz, dout * (out > 0))
    assert dz.dtype == dtype and db.dtype == np.float64
    np.testing.assert_allclose(db, (dout * (out > 0)).sum(axis=0))


def test_dresidual_without_relu_is_dout():
    rng = np.random.default_rng(3)
    x, z = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    _, cache = bnfast.batchnorm_forward(
        x, None, None, {"mode": "train"}, residual=z
    )
    dout = rng.standard_normal((6, 4))
    dx, dg, db, dz = bnfast.batchnorm_backward(dout, cache)
    assert dz is dout and dg is None and db is None
    # converted when dout is not an array of x's dtype
    dz = bnfast.batchnorm_backward(dout.tolist(), cache)[3]
    assert type(dz) is np.ndarray and dz.dtype == np.float64
    np.testing.assert_array_equal(dz, dout)
    dz = bnfast.batchnorm_backward(dout.astype(np.float32), cache)[3]
    assert dz.dtype == np.float64
    # and the same dx as without a residual
    _, plain = bnfast.batchnorm_forward(x, None, None, {"mode": "train"})
    np.testing.assert_array_equal(
        dx, bnfast.batchnorm_backward(dout, plain)[0]
    )


@pytest.mark.parametrize(
    "zlayout", ["C", "F", "cols-strided", "reversed", "channels-last-memory"]
)
@pytest.mark.parametrize("xlayout", ["C", "channels-last-memory"])
def test_layouts_of_z(xlayout, zlayout):
    # z in any layout, read in place or relaid: the same results
    case = make_case((3, 4, 5, 6), np.float64, xlayout, "plain", 4, axis=1)
    z = _layout(
        np.random.default_rng(1).standard_normal((3, 4, 5, 6)), zlayout
    )
    zc = np.ascontiguousarray(z)
    for mode in ("train", "test"):
        a, ca, _ = run(bnfast, case, z, mode, "relu")
        b, cb, _ = run(bnfast, case, zc, mode, "relu")
        np.testing.assert_array_equal(a, b)
        for u, v in zip(
            bnfast.spatial_batchnorm_backward(case.dout, ca),
            bnfast.spatial_batchnorm_backward(case.dout, cb),
        ):
            np.testing.assert_array_equal(u, v)


def _inputs():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 4))
    return x, np.ones(4), np.zeros(4), rng.standard_normal((6, 4))


@pytest.mark.parametrize("module", [bnfast, reference])
@pytest.mark.parametrize(
    "bad,exc,msg",
    [
        (
            lambda z: z.astype(np.float32),
            TypeError,
            r"residual must have dtype float64 \(x's\), got float32",
        ),
        (
            lambda z: z.astype(np.int64),
            TypeError,
            "residual must be a float16, bfloat16, float32 or float64 array, "
            "got dtype int64",
        ),
        (
            lambda z: z[:1],
            ValueError,
            r"residual must have the shape of x \(6, 4\), got \(1, 4\)",
        ),
        (
            lambda z: z.T,
            ValueError,
            r"residual must have the shape of x \(6, 4\), got \(4, 6\)",
        ),
        (lambda z: z[:, :1], ValueError, "residual must have the shape of x"),
    ],
)
def test_bad_residual_raises_and_modifies_nothing(module, bad, exc, msg):
    x, g, b, z = _inputs()
    rm, rv = np.zeros(4), np.ones(4)
    p = {"mode": "train", "running_mean": rm, "running_var": rv}
    out = np.full_like(x, 7.0)
    zb = bad(z)
    zcopy = zb.copy()
    kw = {"out": out} if module is bnfast else {}
    with pytest.raises(exc, match=msg):
        module.batchnorm_forward(x, g, b, p, residual=zb, **kw)
    assert p["running_mean"] is rm and p["running_var"] is rv
    np.testing.assert_array_equal(out, 7.0)
    np.testing.assert_array_equal(zb, zcopy)


def test_masked_residual_raises():
    x, g, b, z = _inputs()
    p = {"mode": "train"}
    with pytest.raises(TypeError, match="residual must not be a masked"):
        bnfast.batchnorm_forward(x, g, b, p, residual=np.ma.masked_array(z))
    assert "running_mean" not in p


@pytest.mark.parametrize("module", [bnfast, reference])
@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("spatial", [False, True])
def test_out_is_residual_in_test_mode(module, activation, spatial):
    # the in-place add of an inference block: out=z, z overwritten with
    # relu(bn(x) + z)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 3, 5, 2))
    z = rng.standard_normal((4, 3, 5, 2))
    for zz in (z.copy(), np.asfortranarray(z), z.copy()[:, :, ::-1]):
        p = {
            "mode": "test",
            "running_mean": rng.standard_normal(3 if spatial else 30),
            "running_var": np.ones(3 if spatial else 30),
        }
        f = (
            module.spatial_batchnorm_forward
            if spatial
            else module.batchnorm_forward
        )
        g = np.ones(3 if spatial else 30)
        want, _ = f(
            x, g, g * 0, dict(p), activation=activation, residual=zz.copy()
        )
        got, cache = f(
            x, g, g * 0, dict(p), activation=activation, residual=zz, out=zz
        )
        assert got is zz
        np.testing.assert_allclose(zz, want, rtol=1e-15, atol=1e-15)
        if module is bnfast and activation == "relu":
            with pytest.raises(ValueError, match="residual was overwritten"):
                bnfast.batchnorm_backward(np.ones_like(x), cache)
        elif module is bnfast:
            dout = np.ones_like(x)
            assert bnfast.batchnorm_backward(dout, cache)[3] is dout


@pytest.mark.parametrize("module", [bnfast, reference])
def test_out_is_residual_in_train_mode(module):
    x, g, b, z = _inputs()
    # without the ReLU: allowed (the backward does not read z)
    want, _ = module.batchnorm_forward(
        x, g, b, {"mode": "train"}, residual=z.copy()
    )
    zz = z.copy()
    got, cache = module.batchnorm_forward(
        x, g, b, {"mode": "train"}, residual=zz, out=zz
    )
    assert got is zz
    np.testing.assert_allclose(zz, want, rtol=1e-15, atol=1e-15)
    # with the ReLU: the backward reads z, so it raises, nothing modified
    p = {"mode": "train"}
    zz = z.copy()
    with pytest.raises(
        ValueError,
        match="out must not be residual in "
        "'train' mode with activation='relu'",
    ):
        module.batchnorm_forward(
            x, g, b, p, residual=zz, out=zz, activation="relu"
        )
    np.testing.assert_array_equal(zz, z)
    assert "running_mean" not in p


@pytest.mark.parametrize("module", [bnfast, reference])
@pytest.mark.parametrize("mode", ["train", "test"])
def test_out_overlapping_residual_otherwise_raises(module, mode):
    x, g, b, _ = _inputs()
    big = np.random.default_rng(2).standard_normal((7, 4))
    before = big.copy()
    for z, out in (
        (big[:6], big[1:]),
        (big[:6], big[:6][::-1]),
        (big[:6], np.asfortranarray(big[:6]).T.T[:, :]),
    ):
        if np.shares_memory(z, out) is False:
            continue
        if z.strides == out.strides and z.ctypes.data == out.ctypes.data:
            continue
        p = {
            "mode": mode,
            "running_mean": np.zeros(4),
            "running_var": np.ones(4),
        }
        with pytest.raises(
            ValueError, match="out must not share memory with residual"
        ):
            module.batchnorm_forward(x, g, b, p, residual=z, out=out)
        np.testing.assert_array_equal(big, before)


def test_backward_out_must_not_overlap_the_cached_residual():
    x, g, b, z = _inputs()
    _, cache = bnfast.batchnorm_forward(
        x, g, b, {"mode": "train"}, residual=z, activation="relu"
    )
    zcopy = z.copy()
    with pytest.raises(ValueError, match="the cached residual"):
        bnfast.batchnorm_backward(np.ones_like(x), cache, out=z)
    np.testing.assert_array_equal(z, zcopy)
    # without the ReLU z is not kept: out=z is fine there
    _, cache = bnfast.batchnorm_forward(x, g, b, {"mode": "train"}, residual=z)
    assert cache.residual is None
    dx = bnfast.batchnorm_backward(np.ones_like(x), cache, out=z)[0]
    assert dx is z


def test_backward_out_with_residual():
    case = make_case((6, 3, 4, 2), np.float32, "C", "plain", 7, axis=1)
    z = residual_for(case)
    _, cache, _ = run(bnfast, case, z, "train", "relu")
    want = bnfast.spatial_batchnorm_backward(case.dout, cache)
    out = np.empty_like(case.x)
    got = bnfast.spatial_batchnorm_backward(case.dout, cache, out=out)
    assert got[0] is out
    for u, v in zip(got, want):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("axis", [1, -1])
def test_layer(mode, activation, axis):
    rng = np.random.default_rng(4)
    shape = (4, 3, 5, 6) if axis == 1 else (4, 5, 6, 3)
    x = rng.standard_normal(shape).astype(np.float32)
    z = rng.standard_normal(shape).astype(np.float32)
    layer = bnfast.BatchNorm(3, axis=axis, activation=activation)
    twin = bnfast.BatchNorm(3, axis=axis, activation=activation)
    out = layer(x, mode, residual=z)
    p = {
        "mode": mode,
        "momentum": 0.9,
        "running_mean": np.zeros(3, np.float32),
        "running_var": np.ones(3, np.float32),
    }
    want, cache = bnfast.spatial_batchnorm_forward(
        x,
        np.ones(3, np.float32),
        np.zeros(3, np.float32),
        p,
        axis=axis,
        activation=activation,
        residual=z,
    )
    np.testing.assert_array_equal(out, want)
    dout = rng.standard_normal(shape).astype(np.float32)
    dx, dz = layer.backward(dout)
    wdx, wdg, wdb, wdz = bnfast.spatial_batchnorm_backward(dout, cache)
    np.testing.assert_array_equal(dx, wdx)
    np.testing.assert_array_equal(dz, wdz)
    np.testing.assert_array_equal(layer.grads["gamma"], wdg)
    # without residual the layer's backward returns dx alone
    twin(x, mode)
    assert isinstance(twin.backward(dout), np.ndarray)


def test_layer_other_families_reject_residual():
    x = np.ones((2, 4), np.float32)
    with pytest.raises(TypeError):
        bnfast.LayerNorm(4)(x, residual=x)


def _sync_check(comm, x, z, dout, mode, activation, axis):
    n = comm.Get_size()
    r = comm.Get_rank()
    rows = np.array_split(np.arange(x.shape[0]), n)[r]
    p = {"mode": mode, "running_mean": np.zeros(3), "running_var": np.ones(3)}
    out, cache = distributed.sync_batchnorm_forward(
        x[rows],
        np.full(3, 1.5),
        np.full(3, 0.1),
        p,
        comm,
        axis=axis,
        activation=activation,
        residual=z[rows],
    )
    grads = distributed.sync_batchnorm_backward(
        dout[rows], cache, reduce_param_grads=True
    )
    return rows, out, grads


@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_sync_equals_one_process(size, mode, activation):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 3, 4, 4))
    z = rng.standard_normal((5, 3, 4, 4))
    dout = rng.standard_normal((5, 3, 4, 4))
    p = {"mode": mode, "running_mean": np.zeros(3), "running_var": np.ones(3)}
    want, cache = bnfast.spatial_batchnorm_forward(
        x,
        np.full(3, 1.5),
        np.full(3, 0.1),
        p,
        activation=activation,
        residual=z,
    )
    wdx, wdg, wdb, wdz = bnfast.spatial_batchnorm_backward(dout, cache)
    results, _ = run_ranks(
        size, lambda comm: _sync_check(comm, x, z, dout, mode, activation, 1)
    )
    for rows, out, (dx, dg, db, dz) in results:
        np.testing.assert_allclose(out, want[rows], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, wdx[rows], rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(dz, wdz[rows])
        np.testing.assert_allclose(dg, wdg, rtol=1e-12)
        np.testing.assert_allclose(db, wdb, rtol=1e-12)


@pytest.mark.parametrize("activation", [None, "relu"])
def test_sync_with_an_empty_shard(activation):
    # 2 rows on 3 processes: one shard is empty (its dresidual too)
    rng = np.random.default_rng(10)
    x, z, dout = (rng.standard_normal((2, 3, 4, 4)) for _ in range(3))
    p = {
        "mode": "train",
        "running_mean": np.zeros(3),
        "running_var": np.ones(3),
    }
    want, cache = bnfast.spatial_batchnorm_forward(
        x,
        np.full(3, 1.5),
        np.full(3, 0.1),
        p,
        activation=activation,
        residual=z,
    )
    wdx, _, _, wdz = bnfast.spatial_batchnorm_backward(dout, cache)
    results, _ = run_ranks(
        3, lambda comm: _sync_check(comm, x, z, dout, "train", activation, 1)
    )
    assert [len(rows) for rows, *_ in results] == [1, 1, 0]
    for rows, out, (dx, _dg, _db, dz) in results:
        assert dz.shape == (len(rows), 3, 4, 4)
        np.testing.assert_allclose(out, want[rows], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, wdx[rows], rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(dz, wdz[rows])


def test_sync_layer_with_residual():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3, 2, 2))
    z = rng.standard_normal((4, 3, 2, 2))

    def fn(comm):
        layer = distributed.SyncBatchNorm(
            3, comm, dtype=np.float64, activation="relu"
        )
        r = comm.Get_rank()
        sl = slice(2 * r, 2 * r + 2)
        out = layer(x[sl], residual=z[sl])
        dx, dz = layer.backward(np.ones_like(out))
        return out, dz

    results, _ = run_ranks(2, fn)
    layer = bnfast.BatchNorm(3, dtype=np.float64, activation="relu")
    want = layer(x, residual=z)
    _, wdz = layer.backward(np.ones_like(want))
    np.testing.assert_allclose(
        np.concatenate([o for o, _ in results]), want, rtol=1e-12, atol=1e-12
    )
    np.testing.assert_array_equal(np.concatenate([d for _, d in results]), wdz)


@pytest.fixture
def small_parallel_min():
    n = bnfast._kernels._thread_state()[0] or None
    least = bnfast._kernels._get_parallel_min()
    bnfast._kernels._set_parallel_min(64 * 1024)
    yield
    bnfast._kernels._set_parallel_min(least)
    bnfast.set_num_threads(n)


@pytest.mark.parametrize(
    "shape,axis",
    [((300, 512), 1), ((8, 16, 30, 30), 1), ((8, 30, 30, 16), -1)],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads(small_parallel_min, shape, axis, dtype):
    # the residual kernels split by rows or channels: the forward and
    # dresidual are element-wise (bitwise equal across thread counts)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    z = rng.standard_normal(shape).astype(dtype)

    def op():
        p = {"mode": "train"}
        out, cache = bnfast.spatial_batchnorm_forward(
            x,
            np.linspace(0.5, 1.5, shape[axis]),
            None,
            p,
            axis=axis,
            activation="relu",
            residual=z,
        )
        return (out,) + bnfast.spatial_batchnorm_backward(np.cos(x), cache)

    bnfast.set_num_threads(1)
    serial = op()
    for threads in (2, 3):
        bnfast.set_num_threads(threads)
        par = op()
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        for k, (s, q) in enumerate(zip(serial, par)):
            if s is None:  # dbeta of beta=None
                assert q is None
                continue
            np.testing.assert_allclose(
                q, s, rtol=rtol, atol=rtol, err_msg=f"output {k}"
            )


@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize(
    "shape,axis", [((8, 5), None), ((4, 3, 5, 5), 1), ((4, 5, 5, 3), -1)]
)
def test_torch_autograd(shape, axis, activation, mode):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    x, z = rng.standard_normal(shape), rng.standard_normal(shape)
    dout = rng.standard_normal(shape)
    c = shape[1] if axis != -1 else shape[-1]
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 0.5, c)
    rm, rv = rng.uniform(-1, 1, c), rng.uniform(0.5, 2, c)
    p = {"mode": mode, "running_mean": rm.copy(), "running_var": rv.copy()}
    out, cache = bnfast.spatial_batchnorm_forward(
        x,
        gamma,
        beta,
        p,
        axis=1 if axis is None else axis,
        activation=activation,
        residual=z,
    )
    grads = bnfast.spatial_batchnorm_backward(dout, cache)

    def t(a):  # channels at dim 1 for torch
        return torch.tensor(
            a if axis != -1 else np.moveaxis(a, -1, 1), requires_grad=True
        )

    tx, tz = t(x), t(z)
    tg = torch.tensor(gamma, requires_grad=True)
    tb = torch.tensor(beta, requires_grad=True)
    y = (
        torch.nn.functional.batch_norm(
            tx,
            torch.tensor(rm),
            torch.tensor(rv),
            tg,
            tb,
            training=mode == "train",
            momentum=0.1,
            eps=1e-5,
        )
        + tz
    )
    if activation == "relu":
        y = torch.relu(y)
    y.backward(torch.tensor(dout if axis != -1 else np.moveaxis(dout, -1, 1)))

    def back(a):
        a = a.detach().numpy()
        return a if axis != -1 else np.moveaxis(a, 1, -1)

    np.testing.assert_allclose(out, back(y), rtol=1e-10, atol=1e-12)
    for name, got, want in zip(
        ("dx", "dgamma", "dbeta", "dresidual"),
        grads,
        (back(tx.grad), tg.grad.numpy(), tb.grad.numpy(), back(tz.grad)),
    ):
        np.testing.assert_allclose(
            got, want, rtol=1e-9, atol=1e-11, err_msg=name
        )
