"""Layer norm over a trailing normalized_shape (issue 13, item 3):
layernorm_forward(..., normalized_shape=) as torch.nn.functional.layer_norm,
against its reference twin on the shared generator (N-D cases normalized
over their last axis, (B, T, D) batches in strided layouts), finite
differences, no reshaping copy where the kernels take the rows' stride,
out=, threads, error paths (type, message, nothing modified), hypothesis
properties, the LayerNorm layer and PyTorch cross-checks (skipped without
torch)."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnfast
from bnfast import reference

from arrays import DTYPES, Case, assert_as_accurate, cases, sum_scale
from test_rmsnorm import btd_cases, feature_params

EPS = 1e-5

# the N-D cases over their last axis (and their last two), the (B, T, D)
# ones over D and (T, D); gamma and beta of the normalized shape, or flat
CASES = (
    [(c, c.x.shape[-1:]) for c in cases() if c.x.ndim > 2]
    + [(c, c.x.shape[-2:]) for c in cases() if c.x.ndim > 3]
    + [(c, ns) for c in btd_cases() for ns in (c.x.shape[-1:], c.x.shape[-2:])]
)


def case_id(item):
    case, ns = item
    return f"{case.id}-ns{ns}"


def params(case, ns, flat=False):
    g = feature_params(case, ns)
    d = g.size
    b = np.ascontiguousarray(case.beta.reshape(-1)[:d]).reshape(ns)
    if flat:
        return g.reshape(-1), b.reshape(-1)
    return g, b


def run(module, case, ns, flat=False):
    g, b = params(case, ns, flat)
    with np.errstate(invalid="ignore", over="ignore"):
        return module.layernorm_forward(
            case.x, g, b, {"eps": EPS}, normalized_shape=ns
        )


@pytest.mark.parametrize("item", CASES, ids=case_id)
def test_layernorm_forward(item):
    case, ns = item
    out, _ = run(bnfast, case, ns)
    ref, _ = run(reference, case, ns)
    wide, _ = run(reference, case.widened(), ns)
    assert_as_accurate("layernorm_forward out", case, out, ref, wide)


@pytest.mark.parametrize("item", CASES, ids=case_id)
def test_layernorm_backward(item):
    case, ns = item
    _, cache = run(bnfast, case, ns)
    _, rcache = run(reference, case, ns)
    wcase = case.widened()
    _, wcache = run(reference, wcase, ns)
    fast = bnfast.layernorm_backward(case.dout, cache)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = reference.layernorm_backward(case.dout, rcache)
        wide = reference.layernorm_backward(wcase.dout, wcache)
    # the scales of test_batchnorm_equivalence's layer norm backward
    _, xhat, mean, var, g, *_ = wcache
    std = np.sqrt(var + EPS)
    dout = wcase.dout.reshape(len(std), -1)
    terms = np.abs(g * dout / std) * (1 + np.abs(mean) / std)
    dx_scale = float(np.nanmax(terms[np.isfinite(terms)], initial=0.0))
    with np.errstate(invalid="ignore"):
        dg_terms = dout * (np.abs(xhat) + np.abs(mean) / std)
    for name, f, r, w, s in zip(
        ("dx", "dgamma", "dbeta"),
        fast,
        ref,
        wide,
        (dx_scale, sum_scale(dg_terms), sum_scale(dout)),
    ):
        assert_as_accurate(
            f"layernorm_backward {name}", case, f, r, w, scale=s
        )
    g, _ = params(case, ns)
    assert fast[1].shape == g.shape and fast[2].shape == g.shape


@pytest.mark.parametrize("item", CASES[::11], ids=case_id)
def test_flat_parameters(item):
    """gamma and beta flat (D,) give the same results, their gradients
    flat."""
    case, ns = item
    out, cache = run(bnfast, case, ns)
    outf, cachef = run(bnfast, case, ns, flat=True)
    np.testing.assert_array_equal(out, outf)
    grads = bnfast.layernorm_backward(case.dout, cache)
    gradsf = bnfast.layernorm_backward(case.dout, cachef)
    np.testing.assert_array_equal(grads[0], gradsf[0])
    for a, b in zip(grads[1:], gradsf[1:]):
        assert b.ndim == 1
        np.testing.assert_array_equal(a.reshape(-1), b)


def test_none_is_the_cs231n_form():
    """normalized_shape None normalizes all axes after the first; the same
    as normalized_shape=x.shape[1:]."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5))
    g, b = rng.uniform(0.5, 1.5, (4, 5)), rng.standard_normal((4, 5))
    out, cache = bnfast.layernorm_forward(x, g, b, {})
    out2, cache2 = bnfast.layernorm_forward(
        x, g, b, {}, normalized_shape=(4, 5)
    )
    np.testing.assert_array_equal(out, out2)
    for a, c in zip(
        bnfast.layernorm_backward(np.cos(x), cache),
        bnfast.layernorm_backward(np.cos(x), cache2),
    ):
        np.testing.assert_array_equal(a, c)
    # a normalized_shape of all of x: one row
    out3, _ = bnfast.layernorm_forward(
        x, None, None, {}, normalized_shape=x.shape
    )
    ref3, _ = reference.layernorm_forward(
        x, None, None, {}, normalized_shape=x.shape
    )
    np.testing.assert_allclose(out3, ref3, rtol=1e-13, atol=1e-13)


def test_strided_rows_are_read_in_place():
    """(B, T, D) whose leading axes merge into one row stride is read in
    place (the cache keeps a view of x); otherwise copied first."""
    rng = np.random.default_rng(2)
    big = rng.standard_normal((4, 12, 16))
    for x, in_place in (
        (big[:, ::2], True),
        (big[1:3], True),
        (big[:, :, None], True),
        (big[0, ::-1], True),
        (big[::-1], False),
        (big[::2], False),
        (big[:, :-1], False),
        (big[..., ::2], False),
    ):
        d = x.shape[-1]
        g, b = np.linspace(0.5, 1.5, d), np.linspace(-1, 1, d)
        out, cache = bnfast.layernorm_forward(x, g, b, {}, normalized_shape=d)
        assert np.shares_memory(cache.x, big) == in_place, x.strides
        ref, _ = reference.layernorm_forward(
            np.ascontiguousarray(x), g, b, {}, normalized_shape=d
        )
        np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(
    "shape,ns", [((2, 3, 5), 5), ((2, 3, 4), (3, 4)), ((3, 1, 2), (2,))]
)
def test_backward_matches_finite_differences(shape, ns):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    ns_t = (ns,) if isinstance(ns, int) else ns
    g, b = rng.uniform(0.5, 1.5, ns_t), rng.standard_normal(ns_t)
    dout = rng.standard_normal(shape)
    p = {"eps": 1e-3}

    def loss():
        return float(
            np.sum(
                bnfast.layernorm_forward(x, g, b, p, normalized_shape=ns)[0]
                * dout
            )
        )

    _, cache = bnfast.layernorm_forward(x, g, b, p, normalized_shape=ns)
    grads = bnfast.layernorm_backward(dout, cache)
    h = 1e-6
    for arr, grad in zip((x, g, b), grads):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + h
            up = loss()
            arr[i] = old - h
            down = loss()
            arr[i] = old
            num[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


@pytest.fixture
def threaded():
    least = bnfast._kernels._get_parallel_min()
    before = bnfast.get_num_threads()
    bnfast._kernels._set_parallel_min(4 * 1024)
    yield
    bnfast._kernels._set_parallel_min(least)
    bnfast.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_threads(threaded, dtype):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((30, 12, 64)) + 3).astype(dtype)[:, ::2]
    g, b = np.ones(64, dtype), np.zeros(64, dtype)

    def op():
        out, cache = bnfast.layernorm_forward(x, g, b, {}, normalized_shape=64)
        return (out,) + bnfast.layernorm_backward(np.cos(x), cache)

    bnfast.set_num_threads(1)
    serial = op()
    for threads in (2, 3):
        bnfast.set_num_threads(threads)
        par = op()
        np.testing.assert_array_equal(par[0], serial[0])
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        for p, s in zip(par[1:], serial[1:]):
            np.testing.assert_allclose(p, s, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_out(layout):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 3, 8))
    g, b = rng.uniform(0.5, 1.5, 8), rng.standard_normal(8)
    dout = rng.standard_normal(x.shape)
    if layout == "C":
        buf, dbuf = np.empty_like(x), np.empty_like(x)
    elif layout == "F":
        buf, dbuf = (np.empty_like(x, order="F"), np.empty_like(x, order="F"))
    else:
        buf, dbuf = np.empty((5, 6, 8))[:, ::2], np.empty((5, 6, 8))[:, ::2]
    ref, cache = bnfast.layernorm_forward(x, g, b, {}, normalized_shape=8)
    out, cache2 = bnfast.layernorm_forward(
        x, g, b, {}, normalized_shape=8, out=buf
    )
    assert out is buf
    np.testing.assert_array_equal(out, ref)
    rgrads = bnfast.layernorm_backward(dout, cache)
    grads = bnfast.layernorm_backward(dout, cache2, out=dbuf)
    assert grads[0] is dbuf
    for a, c in zip(grads, rgrads):
        np.testing.assert_array_equal(a, c)
    rbuf = np.empty_like(x)
    r, _ = reference.layernorm_forward(
        x, g, b, {}, normalized_shape=8, out=rbuf
    )
    assert r is rbuf


def _args():
    rng = np.random.default_rng(6)
    return {
        "x": rng.standard_normal((4, 3, 5)),
        "gamma": np.ones(5),
        "beta": np.zeros(5),
        "ln_param": {"eps": 1e-5},
    }


FORWARD_BAD = [
    (
        "shape mismatch",
        {},
        {"normalized_shape": (4, 5)},
        ValueError,
        r"^x must end with normalized_shape \(4, 5\), got shape \(4, 3, 5\)",
    ),
    (
        "shape too long",
        {},
        {"normalized_shape": (2, 4, 3, 5)},
        ValueError,
        r"^x must end with normalized_shape",
    ),
    (
        "zero in shape",
        {},
        {"normalized_shape": (5, 0)},
        ValueError,
        r"^normalized_shape must be positive ints, got \(5, 0\)",
    ),
    (
        "negative",
        {},
        {"normalized_shape": -5},
        ValueError,
        r"^normalized_shape must be positive ints, got \(-5,\)",
    ),
    (
        "empty shape",
        {},
        {"normalized_shape": []},
        ValueError,
        r"^normalized_shape must not be empty",
    ),
    (
        "string shape",
        {},
        {"normalized_shape": "5"},
        TypeError,
        r"^normalized_shape must be an int or a sequence of ints, got str",
    ),
    (
        "float",
        {},
        {"normalized_shape": 5.0},
        TypeError,
        r"^normalized_shape must be an int or a sequence of ints, got float",
    ),
    (
        "bool",
        {},
        {"normalized_shape": (True,)},
        TypeError,
        r"^normalized_shape must be an int or a sequence of ints",
    ),
    (
        "gamma of x.shape[1:]",
        {"gamma": np.ones((3, 5))},
        {"normalized_shape": 5},
        ValueError,
        r"^gamma must have shape \(5,\) to match x, got \(3, 5\)",
    ),
    (
        "beta shape",
        {"beta": np.ones((1, 5))},
        {"normalized_shape": 5},
        ValueError,
        r"^beta must have shape \(5,\) to match x, got \(1, 5\)",
    ),
    (
        "empty batch",
        {"x": np.ones((0, 3, 5))},
        {"normalized_shape": 5},
        ValueError,
        r"^x is an empty batch",
    ),
    (
        "eps",
        {"ln_param": {"eps": -1}},
        {"normalized_shape": 5},
        ValueError,
        r"^ln_param\['eps'\] must be >= 0.0, got -1",
    ),
]


@pytest.mark.parametrize(
    "name,change,kwargs,exc,message",
    FORWARD_BAD,
    ids=[b[0] for b in FORWARD_BAD],
)
def test_forward_errors_modify_nothing(name, change, kwargs, exc, message):
    args = {**_args(), **change}
    before = copy.deepcopy(args)
    with pytest.raises(exc, match=message):
        bnfast.layernorm_forward(
            args["x"], args["gamma"], args["beta"], args["ln_param"], **kwargs
        )
    for key in before:
        b, a = before[key], args[key]
        if isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b


def test_reference_shares_the_rule():
    x = np.random.default_rng(7).standard_normal((2, 3, 4))
    out, _ = bnfast.layernorm_forward(x, None, None, {}, normalized_shape=4)
    ref, _ = reference.layernorm_forward(x, None, None, {}, normalized_shape=4)
    np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(out.mean(axis=-1), 0, atol=1e-13)


@settings(deadline=None)
@given(
    b=st.integers(1, 4),
    t=st.integers(1, 5),
    d=st.integers(1, 70),
    dtype=st.sampled_from(DTYPES),
    offset=st.sampled_from([0.0, 3.0, 1e3]),
    step=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_property_matches_reference(b, t, d, dtype, offset, step, seed):
    rng = np.random.default_rng(seed)
    full = (rng.standard_normal((b, t * step, d)) + offset).astype(dtype)
    x = full[:, ::step]
    g = rng.uniform(-1.5, 1.5, d).astype(dtype)
    beta = rng.uniform(-1, 1, d).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    case = Case(
        x, g, beta, np.zeros(d), np.ones(d), dout, "T-strided", "hypothesis"
    )
    wide = case.widened()
    out, cache = bnfast.layernorm_forward(
        x, g, beta, {"eps": EPS}, normalized_shape=d
    )
    ref, rcache = reference.layernorm_forward(
        x, g, beta, {"eps": EPS}, normalized_shape=d
    )
    wout, wcache = reference.layernorm_forward(
        wide.x, wide.gamma, wide.beta, {"eps": EPS}, normalized_shape=d
    )
    assert_as_accurate("layernorm_forward", case, out, ref, wout)
    fast = bnfast.layernorm_backward(dout, cache)
    refg = reference.layernorm_backward(dout, rcache)
    wideg = reference.layernorm_backward(wide.dout, wcache)
    _, xhat, mean, var, gw, *_ = wcache
    std = np.sqrt(var + EPS)
    dr = wide.dout.reshape(len(std), -1)
    terms = np.abs(gw * dr / std) * (1 + np.abs(mean) / std)
    for name, f, r, w, s in zip(
        ("dx", "dgamma", "dbeta"),
        fast,
        refg,
        wideg,
        (
            float(terms.max()),
            sum_scale(dr * (np.abs(xhat) + np.abs(mean) / std)),
            sum_scale(dr),
        ),
    ):
        assert_as_accurate(
            f"layernorm_backward {name}", case, f, r, w, scale=s
        )


# -------------------------------------------------------------------- layer


def test_layer_uses_normalized_shape_without_reshape():
    rng = np.random.default_rng(8)
    layer = bnfast.LayerNorm(16, dtype=np.float64)
    layer.params["gamma"][...] = rng.uniform(0.5, 1.5, 16)
    big = rng.standard_normal((3, 10, 16))
    x = big[:, ::2]
    out = layer(x)
    assert np.shares_memory(layer._cache.x, big)
    ref, rcache = reference.layernorm_forward(
        x, layer.params["gamma"], layer.params["beta"], {}, normalized_shape=16
    )
    np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-13)
    dout = rng.standard_normal(x.shape)
    dx = layer.backward(dout)
    rdx, rdg, rdb = reference.layernorm_backward(dout, rcache)
    np.testing.assert_allclose(dx, rdx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["gamma"], rdg, rtol=1e-12)
    np.testing.assert_allclose(layer.grads["beta"], rdb, rtol=1e-12)
    with pytest.raises(ValueError, match=r"dout must have the shape of x"):
        layer.backward(np.ones((3, 4, 16)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,ns",
    [
        ((2, 3, 8), (8,)),
        ((2, 3, 4, 5), (5,)),
        ((2, 3, 4, 5), (4, 5)),
        ((4, 6), (6,)),
    ],
)
def test_matches_torch_layer_norm(dtype, shape, ns):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(9)
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    g = rng.uniform(0.5, 1.5, ns).astype(dtype)
    b = rng.standard_normal(ns).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    out, cache = bnfast.layernorm_forward(
        x, g, b, {"eps": 1e-5}, normalized_shape=ns
    )
    grads = bnfast.layernorm_backward(dout, cache)
    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(g, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    tout = F.layer_norm(tx, ns, tg, tb, eps=1e-5)
    tout.backward(torch.tensor(dout))
    tol = (
        dict(rtol=1e-4, atol=1e-4)
        if dtype == np.float32
        else dict(rtol=1e-10, atol=1e-12)
    )
    np.testing.assert_allclose(out, tout.detach().numpy(), **tol)
    for f, t in zip(grads, (tx.grad, tg.grad, tb.grad)):
        np.testing.assert_allclose(f, t.numpy(), **tol)


def test_from_torch_layernorm_on_btd():
    """A torch LayerNorm whose normalized_shape is shorter than the
    input's trailing dims: (B, T, D) normalized over D."""
    torch = pytest.importorskip("torch")
    module = torch.nn.LayerNorm(8, dtype=torch.float64)
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-1, 1)
    layer = bnfast.from_torch(module)
    x = np.random.default_rng(10).standard_normal((3, 5, 8))
    np.testing.assert_allclose(
        layer(x),
        module(torch.tensor(x)).detach().numpy(),
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        layer(x[:, ::2]),
        module(torch.tensor(x[:, ::2])).detach().numpy(),
        rtol=1e-12,
        atol=1e-12,
    )
