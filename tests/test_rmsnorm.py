"""RMS norm (issue 13, item 2): its own semantics.  The generic checks are
the registry's (tests/families.py, entry "rmsnorm"): the equivalence with
the reference twin on the shared generator with the default normalized
shape (test_equivalence.py, test_affine_free.py), out= (test_out.py),
finite differences, the hostile matrix, threads, concurrency, hypothesis
properties and the extremes of the range.  Here: an explicit
normalized_shape (the last axis of the generator's N-D cases, (B, T, D)
batches normalized over D or (T, D) in strided layouts) against the
reference, gamma=None on those, the rows read in place, the defaults of
normalized_shape and eps, the cache's statistics, rows whose squares
leave the range, RMS-norm-specific error paths (type, message, nothing
modified), the RMSNorm layer and PyTorch cross-checks (skipped without
torch)."""

import copy

import numpy as np
import pytest

import bnfast
from bnfast import reference

from arrays import (
    DTYPES,
    LAYOUTS,
    Case,
    assert_as_accurate,
    cases,
    make_case,
    sum_scale,
)

EPS = 1e-5

# (B, T, D) batches normalized over the trailing axes; the generator's
# layouts plus two of the time axis: every other step of a longer
# sequence (the leading axes still merge into one row stride: read in
# place) and all but the last step (they do not: copied first)
BTD_SHAPES = [(3, 5, 8), (2, 7, 33), (1, 1, 4), (2, 3, 2049), (4, 6, 1)]
BTD_LAYOUTS = LAYOUTS + ("T-strided", "T-cut")


def btd_layout(x, layout):
    if layout == "T-strided":
        big = np.zeros((x.shape[0], 2 * x.shape[1]) + x.shape[2:], x.dtype)
        big[:, ::2] = x
        return big[:, ::2]
    if layout == "T-cut":
        big = np.zeros((x.shape[0], x.shape[1] + 1) + x.shape[2:], x.dtype)
        big[:, :-1] = x
        return big[:, :-1]
    return x


def btd_cases():
    out = []
    seed = 50_000
    for dtype in DTYPES:
        for shape in BTD_SHAPES:
            for layout in BTD_LAYOUTS:
                for contents in (
                    "plain",
                    "offset1e4",
                    "const-col",
                    "nan-inf",
                    "mixed-params",
                ):
                    seed += 1
                    base = "C" if layout.startswith("T-") else layout
                    c = make_case(shape, dtype, base, contents, seed)
                    x = btd_layout(c.x, layout)
                    dout = btd_layout(c.dout, layout)
                    out.append(
                        Case(
                            x,
                            c.gamma,
                            c.beta,
                            c.running_mean,
                            c.running_var,
                            dout,
                            layout,
                            contents,
                        )
                    )
    return out


def feature_params(case, nshape):
    """gamma of the normalized shape, from the case's per-feature one."""
    d = int(np.prod(nshape))
    return np.ascontiguousarray(case.gamma.reshape(-1)[:d]).reshape(nshape)


# (case, normalized_shape): the last axis on the generator's N-D cases,
# the last one or two axes on the (B, T, D) ones.  (The cs231n form, None:
# the axes after the first, on every case is the registry's entry.)
CASES = [(c, c.x.shape[-1:]) for c in cases() if c.x.ndim > 2] + [
    (c, ns) for c in btd_cases() for ns in (c.x.shape[-1:], c.x.shape[-2:])
]


def case_id(item):
    case, ns = item
    return f"{case.id}-ns{ns}"


def run(module, case, ns, gamma=True):
    g = None
    if gamma:
        g = case.gamma if ns is None else feature_params(case, ns)
    with np.errstate(invalid="ignore", over="ignore"):
        return module.rmsnorm_forward(
            case.x, g, {"eps": EPS}, normalized_shape=ns
        )


def rows(case, ns):
    d = case.x[0].size if ns is None else int(np.prod(ns))
    return d


@pytest.mark.parametrize("item", CASES, ids=case_id)
def test_rmsnorm_forward(item):
    case, ns = item
    out, _ = run(bnfast, case, ns)
    ref, _ = run(reference, case, ns)
    wide, _ = run(reference, case.widened(), ns)
    assert_as_accurate("rmsnorm_forward out", case, out, ref, wide)


@pytest.mark.parametrize("item", CASES, ids=case_id)
def test_rmsnorm_backward(item):
    case, ns = item
    _, cache = run(bnfast, case, ns)
    _, rcache = run(reference, case, ns)
    wcase = case.widened()
    _, wcache = run(reference, wcase, ns)
    fast = bnfast.rmsnorm_backward(case.dout, cache)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = reference.rmsnorm_backward(case.dout, rcache)
        wide = reference.rmsnorm_backward(wcase.dout, wcache)
    # dx = is * (g - xhat * mean(g * xhat)): terms |g| * is, and |xhat|
    # times the mean's terms
    xr, xhat, inv_rms, g, *_ = wcache
    dout = wcase.dout.reshape(xr.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        gd = np.abs(g * dout)
        terms = (
            gd
            * inv_rms
            * (
                1
                + np.abs(xhat)
                * np.nanmax(
                    np.where(np.isfinite(xhat), np.abs(xhat), 0),
                    axis=1,
                    keepdims=True,
                )
            )
        )
        dg_terms = dout * xhat
    dx_scale = float(np.nanmax(terms[np.isfinite(terms)], initial=0.0))
    assert_as_accurate(
        "rmsnorm_backward dx", case, fast[0], ref[0], wide[0], scale=dx_scale
    )
    assert_as_accurate(
        "rmsnorm_backward dgamma",
        case,
        fast[1],
        ref[1],
        wide[1],
        scale=sum_scale(dg_terms),
    )


AFFINE_FREE = [item for item in CASES[::7]]


@pytest.mark.parametrize("item", AFFINE_FREE, ids=case_id)
def test_rmsnorm_without_gamma(item):
    """gamma=None: the output and dx of gamma = ones, bitwise; dgamma
    None."""
    case, ns = item
    out, cache = run(bnfast, case, ns, gamma=False)
    d = rows(case, ns)
    ones = np.ones(d, case.x.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        out1, cache1 = bnfast.rmsnorm_forward(
            case.x, ones, {"eps": EPS}, normalized_shape=ns
        )
    np.testing.assert_array_equal(out, out1)
    dx, dgamma = bnfast.rmsnorm_backward(case.dout, cache)
    dx1, _ = bnfast.rmsnorm_backward(case.dout, cache1)
    np.testing.assert_array_equal(dx, dx1)
    assert dgamma is None
    ref, rcache = run(reference, case, ns, gamma=False)
    assert reference.rmsnorm_backward(case.dout, rcache)[1] is None


def test_strided_rows_are_read_in_place():
    """(B, T, D) whose leading axes merge into one row stride is read
    without a copy; one whose do not is copied, with the same results."""
    rng = np.random.default_rng(1)
    big = rng.standard_normal((4, 12, 16))
    g = rng.uniform(0.5, 1.5, 16)
    for x, in_place in (
        (big[:, ::2], True),
        (big[1:3], True),
        (big[:, :, None], True),
        (big[::2], False),
        (big[:, :-1], False),
        (big[..., ::2], False),
    ):
        out, cache = bnfast.rmsnorm_forward(
            x, g[: x.shape[-1]], {}, normalized_shape=x.shape[-1]
        )
        assert np.shares_memory(cache.x, big) == in_place
        ref, _ = reference.rmsnorm_forward(
            np.ascontiguousarray(x),
            g[: x.shape[-1]],
            {},
            normalized_shape=x.shape[-1],
        )
        np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-13)


def test_default_normalized_shape_and_eps():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    # gamma's shape when x ends with it
    out, _ = bnfast.rmsnorm_forward(x, np.ones(5, np.float32), {})
    ref, _ = bnfast.rmsnorm_forward(x, None, {}, normalized_shape=5)
    np.testing.assert_array_equal(out, ref)
    # else (and without gamma) all axes after the first
    out, _ = bnfast.rmsnorm_forward(x, np.ones(20, np.float32), {})
    ref, _ = bnfast.rmsnorm_forward(x, None, {})
    np.testing.assert_array_equal(out, ref)
    ref2, _ = bnfast.rmsnorm_forward(x, None, {}, normalized_shape=(4, 5))
    np.testing.assert_array_equal(out, ref2)
    # eps None or missing: the machine epsilon of x's dtype
    for dtype in DTYPES:
        xd = x.astype(dtype)
        e = float(np.finfo(dtype).eps)
        a, _ = bnfast.rmsnorm_forward(xd, None, {})
        b, _ = bnfast.rmsnorm_forward(xd, None, {"eps": None})
        c, _ = bnfast.rmsnorm_forward(xd, None, {"eps": e})
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        r, _ = reference.rmsnorm_forward(xd, None, {})
        np.testing.assert_allclose(a, r, rtol=4 * e)


def test_statistics_in_the_cache():
    x = np.array([[3.0, 4.0], [1.0, 1.0]])
    _, cache = bnfast.rmsnorm_forward(x, None, {"eps": 0.0})
    np.testing.assert_allclose(cache.mean, [12.5, 1.0])
    np.testing.assert_allclose(cache.invstd, 1 / np.sqrt([12.5, 1.0]))
    assert cache.affine == (False, False)
    assert "RMSNormCache" in repr(cache)


# ---------------------------------------------------------------- extremes


@pytest.mark.parametrize(
    "dtype,power",
    [
        (np.float64, 600),
        (np.float64, -600),
        (np.float32, 70),
        (np.float32, -70),
    ],
)
def test_rows_whose_squares_leave_the_range(dtype, power):
    """RMS norm is scale-free with eps = 0: rows scaled by 2**power (their
    squares overflow or underflow the compute type) give the output and
    dgamma of the unscaled rows, dx / 2**power."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 37)).astype(dtype)
    x[2] = 0.0  # an all-zero row
    x[3, :] = 0.0
    x[3, 5] = 1.5  # one value
    g = rng.uniform(0.5, 1.5, 37).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    s = np.ldexp(1.0, power)
    keep = [0, 1, 3, 4, 5]
    with np.errstate(invalid="ignore", divide="ignore"):
        out, cache = bnfast.rmsnorm_forward(x, g, {"eps": 0.0})
        outs, caches = bnfast.rmsnorm_forward(x * dtype(s), g, {"eps": 0.0})
    assert np.isnan(outs[2]).all() and np.isnan(out[2]).all()  # 0 / 0
    tol = 8 * np.finfo(dtype).eps
    np.testing.assert_allclose(outs[keep], out[keep], rtol=tol, atol=tol)
    xk = x[keep]
    _, cache = bnfast.rmsnorm_forward(xk, g, {"eps": 0.0})
    _, caches = bnfast.rmsnorm_forward(xk * dtype(s), g, {"eps": 0.0})
    dx, dgamma = bnfast.rmsnorm_backward(dout[keep], cache)
    dxs, dgammas = bnfast.rmsnorm_backward(dout[keep], caches)
    np.testing.assert_allclose(
        dxs.astype(np.float64) * s, dx, rtol=tol, atol=tol * np.abs(dx).max()
    )
    np.testing.assert_allclose(
        dgammas, dgamma, rtol=tol, atol=tol * np.abs(dgamma).max()
    )


def test_backward_sums_that_overflow_float32():
    """dout * gamma * x past float32's range in the row sum: the row is
    summed again in double."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 64)).astype(np.float32) * np.float32(1e19)
    dout = rng.standard_normal((3, 64)).astype(np.float32) * np.float32(1e30)
    g = np.ones(64, np.float32)
    _, cache = bnfast.rmsnorm_forward(x, g, {"eps": 0.0})
    dx, dgamma = bnfast.rmsnorm_backward(dout, cache)
    _, wc = reference.rmsnorm_forward(
        x.astype(np.longdouble), g.astype(np.longdouble), {"eps": 0.0}
    )
    wdx, _ = reference.rmsnorm_backward(dout.astype(np.longdouble), wc)
    assert np.isfinite(dx).all()
    np.testing.assert_allclose(
        dx,
        wdx.astype(np.float64),
        rtol=1e-4,
        atol=1e-5 * float(np.abs(wdx).max()),
    )


# -------------------------------------------------------------------- errors


def _args():
    rng = np.random.default_rng(8)
    return {
        "x": rng.standard_normal((4, 3, 5)),
        "gamma": np.ones(5),
        "rms_param": {"eps": 1e-5},
    }


FORWARD_BAD = [
    (
        "param not a dict",
        {"rms_param": [1]},
        {},
        TypeError,
        r"^rms_param must be a dict, got list",
    ),
    (
        "negative eps",
        {"rms_param": {"eps": -1.0}},
        {},
        ValueError,
        r"^rms_param\['eps'\] must be >= 0.0, got -1.0",
    ),
    (
        "string eps",
        {"rms_param": {"eps": "a"}},
        {},
        TypeError,
        r"^rms_param\['eps'\] must be a real number, got str",
    ),
    (
        "gamma shape",
        {"gamma": np.ones(4)},
        {"normalized_shape": 5},
        ValueError,
        r"^gamma must have shape \(5,\) to match x, got \(4,\)",
    ),
    (
        "complex gamma",
        {"gamma": np.ones(5, complex)},
        {},
        TypeError,
        r"^gamma must be a float16, bfloat16, float32 or float64 array, or "
        r"of integers",
    ),
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
        {"normalized_shape": (1, 4, 3, 5)},
        ValueError,
        r"^x must end with normalized_shape",
    ),
    (
        "zero in shape",
        {},
        {"normalized_shape": (0,)},
        ValueError,
        r"^normalized_shape must be positive ints, got \(0,\)",
    ),
    (
        "empty shape",
        {},
        {"normalized_shape": ()},
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
        "float shape",
        {},
        {"normalized_shape": (5.0,)},
        TypeError,
        r"^normalized_shape must be an int or a sequence of ints, got "
        r"\(5.0,\)",
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
        bnfast.rmsnorm_forward(
            args["x"], args["gamma"], args["rms_param"], **kwargs
        )
    for key in before:
        b, a = before[key], args[key]
        if isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b


def test_out_errors_modify_nothing():
    args = _args()
    x = args["x"]
    for out, exc, message in (
        (
            np.zeros(x.shape, np.float32),
            TypeError,
            r"^out must have dtype float64",
        ),
        (np.zeros((4, 15)), ValueError, r"^out must have shape"),
        (x, ValueError, r"^out must not share memory with x"),
        (
            np.broadcast_to(np.zeros(5), x.shape),
            ValueError,
            r"^out is read-only",
        ),
    ):
        before = np.array(out, copy=True)
        xb = x.copy()
        with pytest.raises(exc, match=message):
            bnfast.rmsnorm_forward(x, args["gamma"], {}, out=out)
        np.testing.assert_array_equal(out, before)
        np.testing.assert_array_equal(x, xb)
    _, cache = bnfast.rmsnorm_forward(x, args["gamma"], {})
    dout = np.ones_like(x)
    with pytest.raises(
        ValueError,
        match=r"^out must not share memory with "
        "dout",
    ):
        bnfast.rmsnorm_backward(dout, cache, out=dout)
    np.testing.assert_array_equal(dout, np.ones_like(x))


def test_backward_errors():
    args = _args()
    x = args["x"]
    _, cache = bnfast.rmsnorm_forward(x, args["gamma"], {})
    _, ln_cache = bnfast.layernorm_forward(x, None, None, {})
    with pytest.raises(
        TypeError,
        match=r"^cache must be the cache returned "
        r"by bnfast.rmsnorm_forward, got LayerNormCache",
    ):
        bnfast.rmsnorm_backward(np.ones_like(x), ln_cache)
    with pytest.raises(
        ValueError,
        match=r"^dout must have the shape of x "
        r"\(4, 3, 5\), got \(4, 15\)",
    ):
        bnfast.rmsnorm_backward(np.ones((4, 15)), cache)
    with pytest.raises(
        TypeError,
        match=r"^dout must be a float16, bfloat16, "
        "float32 or float64 array, got dtype int64",
    ):
        bnfast.rmsnorm_backward(np.ones(x.shape, np.int64), cache)


# -------------------------------------------------------------------- layer


def test_layer_forward_backward_and_state():
    rng = np.random.default_rng(9)
    layer = bnfast.RMSNorm((3, 4), dtype=np.float64)
    assert layer.eps is None and layer.elementwise_affine
    assert set(layer.params) == {"gamma"}
    layer.params["gamma"][...] = rng.uniform(0.5, 1.5, (3, 4))
    x = rng.standard_normal((2, 5, 3, 4))
    out = layer(x)
    ref, rcache = reference.rmsnorm_forward(
        x, layer.params["gamma"], {}, normalized_shape=(3, 4)
    )
    np.testing.assert_allclose(out, ref, rtol=1e-13)
    dout = rng.standard_normal(x.shape)
    dx = layer.backward(dout)
    rdx, rdg = reference.rmsnorm_backward(dout, rcache)
    np.testing.assert_allclose(dx, rdx, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.grads["gamma"], rdg, rtol=1e-12)
    assert layer.dbeta is None
    with pytest.raises(AttributeError, match="RMSNorm has no beta"):
        layer.beta
    state = layer.state_dict()
    assert list(state) == ["weight"]
    other = bnfast.RMSNorm((3, 4), eps=1e-6, dtype=np.float64)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.params["gamma"], state["weight"])
    with pytest.raises(KeyError, match="state dict keys do not match RMSNorm"):
        other.load_state_dict({"weight": state["weight"], "bias": 0})
    free = bnfast.RMSNorm(4, elementwise_affine=False)
    assert free.params == {} and free.state_dict() == {}
    y = free(x[..., 0, :].astype(np.float32))
    assert y.dtype == np.float32
    free.backward(np.ones_like(y))
    assert free.dgamma is None and free.grads == {}


@pytest.mark.parametrize(
    "layer,text",
    [
        (lambda: bnfast.RMSNorm(4), "RMSNorm((4,), eps=None)"),
        (
            lambda: bnfast.RMSNorm([3, 4], eps=1e-6, dtype=np.float64),
            "RMSNorm((3, 4), eps=1e-06, dtype='float64')",
        ),
        (
            lambda: bnfast.RMSNorm(4, elementwise_affine=False),
            "RMSNorm((4,), eps=None, elementwise_affine=False)",
        ),
    ],
)
def test_layer_repr(layer, text):
    made = layer()
    assert repr(made) == text
    again = eval(repr(made), {"RMSNorm": bnfast.RMSNorm})
    assert repr(again) == text


@pytest.mark.parametrize(
    "make,exc,message",
    [
        (
            lambda: bnfast.RMSNorm(0),
            ValueError,
            r"normalized_shape must be positive ints",
        ),
        (
            lambda: bnfast.RMSNorm("4"),
            TypeError,
            r"normalized_shape must be an int or a sequence of ints",
        ),
        (
            lambda: bnfast.RMSNorm(4, eps=-1.0),
            ValueError,
            r"eps must be a finite number >= 0, got -1.0",
        ),
        (
            lambda: bnfast.RMSNorm(4, eps="x"),
            TypeError,
            r"eps must be a real number, got str",
        ),
        (
            lambda: bnfast.RMSNorm(4, elementwise_affine="yes"),
            TypeError,
            r"elementwise_affine must be a bool, got str",
        ),
        (
            lambda: bnfast.RMSNorm(4, dtype=np.int32),
            TypeError,
            r"dtype must be float16, bfloat16, float32 or float64, got int32",
        ),
    ],
)
def test_layer_constructor_errors(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


def test_layer_input_errors_modify_nothing():
    layer = bnfast.RMSNorm(4, dtype=np.float64)
    x = np.ones((2, 4))
    layer(x)
    layer.backward(np.ones((2, 4)))
    grads = {k: v.copy() for k, v in layer.grads.items()}
    for bad in (np.ones((2, 5)), np.ones(4)):
        with pytest.raises(
            ValueError,
            match=r"x must end with the "
            r"normalized shape \(4,\) after a batch axis",
        ):
            layer(bad)
    with pytest.raises(ValueError, match=r"dout must have the shape of x"):
        layer.backward(np.ones((3, 4)))
    for k, v in grads.items():
        np.testing.assert_array_equal(layer.grads[k], v)


# -------------------------------------------------------------------- torch


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,ns,eps,affine",
    [
        ((7, 5), (5,), 1e-5, True),
        ((3, 4, 6), (6,), None, True),
        ((3, 4, 6), (4, 6), 1e-6, False),
        ((2, 1), (1,), None, True),
    ],
)
def test_matches_torch_rms_norm(dtype, shape, ns, eps, affine):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(10)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    g = rng.uniform(0.5, 1.5, ns).astype(dtype) if affine else None
    dout = rng.standard_normal(shape).astype(dtype)
    out, cache = bnfast.rmsnorm_forward(
        x, g, {"eps": eps}, normalized_shape=ns
    )
    dx, dg = bnfast.rmsnorm_backward(dout, cache)
    tx = torch.tensor(x, requires_grad=True)
    tg = None if g is None else torch.tensor(g, requires_grad=True)
    tout = F.rms_norm(tx, ns, tg, eps=eps)
    tout.backward(torch.tensor(dout))
    tol = (
        dict(rtol=1e-5, atol=1e-5)
        if dtype == np.float32
        else dict(rtol=1e-10, atol=1e-12)
    )
    np.testing.assert_allclose(out, tout.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
    if affine:
        np.testing.assert_allclose(dg, tg.grad.numpy(), **tol)
    else:
        assert dg is None


@pytest.mark.parametrize("affine", [True, False])
def test_from_torch_rmsnorm(affine):
    torch = pytest.importorskip("torch")
    module = torch.nn.RMSNorm(
        6, eps=1e-6, elementwise_affine=affine, dtype=torch.float64
    )
    if affine:
        with torch.no_grad():
            module.weight.uniform_(0.5, 1.5)
    layer = bnfast.from_torch(module)
    assert isinstance(layer, bnfast.RMSNorm)
    assert layer.normalized_shape == (6,) and layer.eps == 1e-6
    # (a module without parameters has no dtype to copy: float32)
    assert layer.dtype == (np.float64 if affine else np.float32)
    assert layer.affine == affine
    x = np.random.default_rng(11).standard_normal((2, 3, 6))
    np.testing.assert_allclose(
        layer(x),
        module(torch.tensor(x)).detach().numpy(),
        rtol=1e-12,
        atol=1e-12,
    )
    default = bnfast.from_torch(torch.nn.RMSNorm((3, 6)))
    assert default.eps is None and default.dtype == np.float32
    xf = x.astype(np.float32)
    np.testing.assert_allclose(
        default(xf),
        torch.nn.RMSNorm((3, 6))(torch.tensor(xf)).detach().numpy(),
        rtol=1e-6,
        atol=1e-6,
    )
