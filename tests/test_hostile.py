"""Hostile input, one matrix over every public function and layer: each bad
input raises the documented exception with a message naming the argument
and leaves every input (and bn_param's running statistics) unmodified; each
odd but valid input (read-only, byte-swapped, lists, huge eps, N = 1 in
'train' mode) gives the reference's results and modifies nothing.
Complements test_batchnorm_errors.py (the per-function details) and
test_out.py (out=)."""

import copy
import re

import numpy as np
import pytest

import bnfast
from bnfast import distributed, reference

from fakempi import FakeComm, _World
from families import BASE, BY_NAME, hostile_forwards

N, C, H, W = 4, 6, 3, 2


def _rng(seed=0):
    return np.random.default_rng(seed)


# name: (good arguments, call(module, args) -> (out, cache), backward name),
# for every family of the registry (tests/families.py) and each of its
# small configurations
FORWARDS = hostile_forwards()
BN = [name for name in FORWARDS if "batchnorm" in name]


def snapshot(args):
    return copy.deepcopy(args)


def assert_unchanged(before, after, path="args"):
    if isinstance(before, dict):
        assert before.keys() == after.keys(), path
        for key in before:
            assert_unchanged(before[key], after[key], f"{path}[{key!r}]")
    elif isinstance(before, np.ndarray):
        assert isinstance(after, np.ndarray), path
        assert after.dtype == before.dtype, path
        np.testing.assert_array_equal(after, before, err_msg=path)
    else:
        assert after == before or (after != after and before != before), path


def _set(key, make):
    """A change of the good arguments: args[key] = make(args[key])."""

    def change(args):
        if key.startswith("param."):
            k = key[len("param.") :]
            args["param"][k] = make(args["param"].get(k))
        else:
            args[key] = make(args[key])

    return change


BAD = [
    # (description, change, functions (None: all), exception, message regex)
    (
        "int x",
        _set("x", lambda x: x.astype(np.int64)),
        None,
        TypeError,
        r"x must be a float16, bfloat16, float32 or float64 array, got dtype "
        r"int64",
    ),
    (
        "bool x",
        _set("x", lambda x: x > 0),
        None,
        TypeError,
        r"x must be a float16, bfloat16, float32 or float64 array, got dtype "
        r"bool",
    ),
    (
        "longdouble x",
        _set("x", lambda x: x.astype(np.longdouble)),
        None,
        TypeError,
        r"got dtype float128",
    ),
    (
        "complex x",
        _set("x", lambda x: x.astype(complex)),
        None,
        TypeError,
        r"x must be a float16, bfloat16, float32 or float64 array, got dtype "
        r"complex128",
    ),
    (
        "object x",
        _set("x", lambda x: x.astype(object)),
        None,
        TypeError,
        r"got dtype object",
    ),
    (
        "string x",
        _set("x", lambda x: "x"),
        None,
        TypeError,
        r"x must be a float16, bfloat16, float32 or float64 array, got dtype "
        r"<U1",
    ),
    (
        "0-d x",
        _set("x", lambda x: np.float64(1.0)),
        None,
        ValueError,
        r"x must have at least 2 dimensions",
    ),
    (
        "1-d x",
        _set("x", lambda x: x.ravel()),
        None,
        ValueError,
        r"x must have at least 2 dimensions",
    ),
    (
        "empty batch",
        _set("x", lambda x: x[:0]),
        None,
        ValueError,
        # (RMS norm words it "x is an empty batch, shape (0, 6)")
        r"x is an empty batch( \(N = 0\)|, shape \(0, 6\))",
    ),
    (
        "zero features",
        _set("x", lambda x: x[:, :, :0] if x.ndim > 2 else x[:, :0]),
        None,
        ValueError,
        r"x has (zero features|no elements per channel)",
    ),
    (
        "images flattened to (N, D)",
        _set("x", lambda x: x.reshape(N, -1)),
        [name for name in FORWARDS if "spatial" in name],
        ValueError,
        r"gamma must have shape \(36,\) or \(1, 36\) to match x, got \(6,\)",
    ),
    (
        "gamma of the wrong shape",
        _set("gamma", lambda g: np.ones(C + 1)),
        None,
        ValueError,
        r"gamma must have shape \(6,\)",
    ),
    (
        "0-d gamma",
        _set("gamma", lambda g: np.float64(1.0)),
        None,
        ValueError,
        r"gamma must have shape \(6,\)",
    ),
    (
        "complex beta",
        _set("beta", lambda b: b.astype(complex)),
        None,
        TypeError,
        r"beta must be a float16, bfloat16, float32 or float64 array, or of "
        r"integers "
        r"or bools \(converted to x's dtype\), got dtype complex128",
    ),
    (
        "longdouble gamma",
        _set("gamma", lambda g: g.astype(np.longdouble)),
        None,
        TypeError,
        r"gamma must be a float16, bfloat16, float32 or float64 "
        r"array, or of integers or bools \(converted to x's dtype\), got "
        r"dtype "
        r"float128",
    ),
    (
        "masked x",
        _set("x", lambda x: np.ma.masked_less(x, 0)),
        None,
        TypeError,
        r"^x must not be a masked array \(numpy.ma.MaskedArray\)",
    ),
    (
        "masked x without a mask",
        _set("x", np.ma.asarray),
        None,
        TypeError,
        r"^x must not be a masked array",
    ),
    (
        "masked gamma",
        _set("gamma", lambda g: np.ma.masked_less(g, 0)),
        None,
        TypeError,
        r"^gamma must not be a masked array",
    ),
    (
        "masked beta",
        _set("beta", lambda b: np.ma.masked_less(b, 0)),
        None,
        TypeError,
        r"^beta must not be a masked array",
    ),
    (
        "beta of the wrong shape",
        _set("beta", lambda b: np.ones((C, 1))),
        None,
        ValueError,
        r"beta must have shape \(6,\)",
    ),
    (
        "negative eps",
        _set("param.eps", lambda e: -1e-5),
        None,
        ValueError,
        r"_param\['eps'\] must be >= 0.0, got -1e-05",
    ),
    (
        "NaN eps",
        _set("param.eps", lambda e: float("nan")),
        None,
        ValueError,
        r"_param\['eps'\] must be >= 0.0, got nan",
    ),
    (
        "string eps",
        _set("param.eps", lambda e: "1e-5"),
        None,
        TypeError,
        r"_param\['eps'\] must be a real number, got str",
    ),
    (
        "array eps",
        _set("param.eps", lambda e: np.ones(2)),
        None,
        TypeError,
        r"_param\['eps'\] must be a real number, got ndarray",
    ),
    (
        "momentum > 1",
        _set("param.momentum", lambda m: 1.01),
        BN,
        ValueError,
        r"bn_param\['momentum'\] must be in \[0.0, 1.0\], got 1.01",
    ),
    (
        "momentum < 0",
        _set("param.momentum", lambda m: -0.5),
        BN,
        ValueError,
        r"bn_param\['momentum'\] must be in \[0.0, 1.0\], got -0.5",
    ),
    (
        "unknown mode",
        _set("param.mode", lambda m: "eval"),
        BN,
        ValueError,
        r"bn_param\['mode'\] must be one of \('train', 'test'\), got 'eval'",
    ),
    (
        "running_mean of the wrong shape",
        _set("param.running_mean", lambda r: np.zeros(C - 1)),
        BN,
        ValueError,
        r"bn_param\['running_mean'\] must have shape \(6,\)",
    ),
    (
        "int running_var",
        _set("param.running_var", lambda r: np.ones(C, int)),
        BN,
        TypeError,
        r"bn_param\['running_var'\] must be a float16, bfloat16, float32 or "
        r"float64 array, got dtype int64",
    ),
    (
        "bool running_mean",
        _set("param.running_mean", lambda r: np.ones(C, bool)),
        BN,
        TypeError,
        r"bn_param\['running_mean'\] must be a float16, bfloat16, float32 or "
        r"float64 array, got "
        r"dtype bool",
    ),
    (
        "masked running_mean",
        _set("param.running_mean", lambda r: np.ma.masked_less(r, 0)),
        BN,
        TypeError,
        r"^bn_param\['running_mean'\] must not be a masked array",
    ),
]


def _modes(name):
    """Batch norm runs in both modes; layer and group norm have none."""
    return ("train", "test") if name in BN else (None,)


def _bad_cases():
    for desc, change, only, exc, message in BAD:
        for name in FORWARDS:
            if "beta" in desc and "beta" not in FORWARDS[name][0]():
                continue  # a family without beta (RMS norm)
            for mode in _modes(name):
                if only is None or name in only:
                    yield pytest.param(
                        name,
                        mode,
                        change,
                        exc,
                        message,
                        id=f"{name}-{mode}-{desc}",
                    )


@pytest.mark.parametrize("name,mode,change,exc,message", list(_bad_cases()))
def test_bad_forward_input(name, mode, change, exc, message):
    make, call, _ = FORWARDS[name]
    args = make()
    if mode is not None:
        args["param"]["mode"] = mode
    change(args)
    before = snapshot(args)
    with pytest.raises(exc, match=message):
        call(bnfast, args)
    assert_unchanged(before, args)


def _readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def _swapped(a):
    a = np.asarray(a)
    return a.astype(a.dtype.newbyteorder())


def _all_arrays(f):
    def change(args):
        for key in ("x", "gamma", "beta"):
            if key in args:  # (no beta: RMS norm)
                args[key] = f(args[key])
        for key in ("running_mean", "running_var"):
            if key in args["param"]:
                args["param"][key] = f(args["param"][key])

    return change


ODD = [
    ("read-only arrays", _all_arrays(_readonly)),
    ("byte-swapped arrays", _all_arrays(_swapped)),
    ("nested lists", _all_arrays(lambda a: np.asarray(a).tolist())),
    ("tuples", _set("gamma", lambda g: tuple(g.tolist()))),
    (
        "float32 x, float64 parameters",
        _set("x", lambda x: x.astype(np.float32)),
    ),
    ("huge eps", _set("param.eps", lambda e: 1e300)),
    ("infinite eps", _set("param.eps", lambda e: float("inf"))),
    ("N = 1", _set("x", lambda x: x[:1])),
    ("a numpy scalar eps", _set("param.eps", lambda e: np.float32(1e-3))),
    # integer and bool gamma and beta are converted to x's dtype
    (
        "integer gamma and beta",
        lambda a: a.update(
            {
                k: np.round(a[k] * 3).astype(t)
                for k, t in (("gamma", np.int64), ("beta", np.int8))
                if k in a
            }
        ),
    ),
    ("bool gamma", _set("gamma", lambda g: g > 0)),
    (
        "lists of integers",
        lambda a: a.update(
            {
                k: np.round(a[k] * 3).astype(int).tolist()
                for k in ("gamma", "beta")
                if k in a
            }
        ),
    ),
]


ODD_CASES = [
    pytest.param(desc, change, name, mode, id=f"{desc}-{name}-{mode}")
    for desc, change in ODD
    for name in FORWARDS
    for mode in _modes(name)
]


@pytest.mark.parametrize("desc,change,name,mode", ODD_CASES)
def test_odd_but_valid_input(desc, change, name, mode):
    make, call, backward = FORWARDS[name]
    results = []
    for module in (bnfast, reference):
        args = make()
        if mode is not None:
            args["param"]["mode"] = mode
        change(args)
        if module is reference:  # the seeds' code takes arrays only
            args = _arrays(args)
        before = snapshot(args)
        with np.errstate(all="ignore"):
            out, cache = call(module, args)
        dout = np.ones(np.shape(out), np.asarray(out).dtype)
        if cache is not None:
            grads = getattr(module, backward)(dout, cache)
        else:
            grads = ()
        param = {
            k: v for k, v in args["param"].items() if k.startswith("running")
        }
        results.append((out, *grads, param))
        if module is bnfast:
            # inputs unmodified; bn_param gets new running arrays
            before["param"].update(param)
            assert_unchanged(before, args)
    fast, ref = results
    for f, r in zip(fast[:-1], ref[:-1]):
        # byte-swapped inputs give native-order results
        assert f.dtype == r.dtype.newbyteorder("=") and f.shape == r.shape
        assert f.dtype.isnative
        np.testing.assert_allclose(f, r, rtol=2e-5, atol=1e-5)
    for key in fast[-1]:
        np.testing.assert_allclose(
            fast[-1][key], ref[-1][key], rtol=2e-5, atol=1e-6
        )


def _arrays(args):
    return {
        k: (
            _arrays(v)
            if isinstance(v, dict)
            else np.asarray(v)
            if isinstance(v, (list, tuple))
            else v
        )
        for k, v in args.items()
    }


def test_n_equal_1_in_train_mode_is_beta():
    # documented semantics, as the reference: a single sample has batch
    # variance 0, so out == beta exactly and dx == 0
    x = np.array([[3.0, -1.0, 7.0]])
    g, b = np.array([2.0, 3.0, 4.0]), np.array([0.5, -0.5, 1.5])
    p = {"mode": "train"}
    out, cache = bnfast.batchnorm_forward(x, g, b, p)
    np.testing.assert_array_equal(out, b[None])
    dx, dgamma, dbeta = bnfast.batchnorm_backward(np.ones_like(x), cache)
    np.testing.assert_array_equal(dx, np.zeros_like(x))
    np.testing.assert_array_equal(dgamma, np.zeros(3))
    np.testing.assert_array_equal(p["running_var"], np.zeros(3))
    assert "N = 1" in bnfast.batchnorm_forward.__doc__


BACKWARD_BAD = [
    (
        "masked dout",
        lambda d: np.ma.masked_greater(d, 0.5),
        TypeError,
        r"^dout must not be a masked array",
    ),
    (
        "int dout",
        lambda d: d.astype(np.int32),
        TypeError,
        r"dout must be a float16, bfloat16, float32 or float64 array, got "
        r"dtype int32",
    ),
    (
        "complex dout",
        lambda d: d.astype(complex),
        TypeError,
        r"dout must be a float16, bfloat16, float32 or float64 array",
    ),
    (
        "0-d dout",
        lambda d: np.float64(1.0),
        ValueError,
        r"dout must have the shape of x \(.*\), got \(\)",
    ),
    (
        "transposed dout",
        lambda d: d.T,
        ValueError,
        r"dout must have the shape of x",
    ),
    (
        "flattened dout",
        lambda d: d.ravel(),
        ValueError,
        r"dout must have the shape of x",
    ),
]


@pytest.mark.parametrize("name", list(FORWARDS))
@pytest.mark.parametrize(
    "desc,change,exc,message", BACKWARD_BAD, ids=[b[0] for b in BACKWARD_BAD]
)
def test_bad_backward_input(desc, change, exc, message, name):
    make, call, backward = FORWARDS[name]
    args = make()
    out, cache = call(bnfast, args)
    dout = change(np.ones_like(out))
    before = snapshot({"args": args, "dout": dout})
    with pytest.raises(exc, match=message):
        getattr(bnfast, backward)(dout, cache)
    assert_unchanged(before, {"args": args, "dout": dout})


@pytest.mark.parametrize("name", list(FORWARDS))
@pytest.mark.parametrize("cache", [None, (1, 2), "reference", "other"])
def test_foreign_cache(name, cache):
    make, call, backward = FORWARDS[name]
    args = make()
    out, own = call(bnfast, args)
    if cache == "reference":
        _, cache = call(reference, make())
    elif cache == "other":  # a cache of another family
        other = "layernorm_forward" if "batch" in name else "batchnorm_forward"
        if "group" in name or "spatial" in name:
            other = (
                "spatial_groupnorm_forward"
                if "batch" in name
                else "spatial_batchnorm_forward"
            )
        omake, ocall, _ = FORWARDS[other]
        _, cache = ocall(bnfast, omake())
    with pytest.raises(
        TypeError,
        match=r"cache must be the cache returned "
        r"by .*, got " + re.escape(type(cache).__name__),
    ):
        getattr(bnfast, backward)(np.ones_like(out), cache)


LAYERS = {
    "BatchNorm": (lambda: bnfast.BatchNorm(C, dtype=np.float64), (N, C, H)),
    "BatchNorm channels-last": (
        lambda: bnfast.BatchNorm(C, axis=-1, dtype=np.float64),
        (N, H, C),
    ),
    "LayerNorm": (
        lambda: bnfast.LayerNorm((C, H), dtype=np.float64),
        (N, C, H),
    ),
    "GroupNorm": (lambda: bnfast.GroupNorm(3, C, dtype=np.float64), (N, C, H)),
}

LAYER_BAD = [
    (
        "int x",
        lambda x: x.astype(int),
        TypeError,
        r"x must be a float16, bfloat16, float32 or float64 array, got dtype "
        r"int64",
    ),
    ("1-d x", lambda x: x.ravel(), ValueError, r"x must (have|end with)"),
    (
        "twice the channels",
        lambda x: (
            np.concatenate([x, x], axis=1)
            if x.shape[1] == C
            else np.concatenate([x, x], axis=-1)
        ),
        ValueError,
        r"(x has 12 channels along axis|x must end with the normalized shape)",
    ),
    ("empty batch", lambda x: x[:0], ValueError, r"empty batch"),
]


def _layer_state(layer):
    state = {k: np.array(v) for k, v in layer.state_dict().items()}
    state.update({f"grad {k}": np.array(v) for k, v in layer.grads.items()})
    return state


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize(
    "desc,change,exc,message", LAYER_BAD, ids=[b[0] for b in LAYER_BAD]
)
def test_layer_bad_input(desc, change, exc, message, name):
    make, shape = LAYERS[name]
    layer = make()
    x = _rng(1).standard_normal(shape)
    layer.forward(x)
    layer.backward(np.ones(shape))
    before = _layer_state(layer)
    bad = change(x)
    with pytest.raises(exc, match=message):
        layer.forward(bad)
    with pytest.raises(ValueError, match=r"mode must be one of"):
        layer.forward(x, mode="eval")
    assert_unchanged(before, _layer_state(layer))
    with pytest.raises(ValueError, match=r"dout must have the shape of x"):
        layer.backward(np.ones((N + 1,) + shape[1:]))
    assert_unchanged(before, _layer_state(layer))


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_backward_needs_a_forward(name):
    make, shape = LAYERS[name]
    with pytest.raises(RuntimeError, match=r"backward needs a forward pass"):
        make().backward(np.ones(shape))


# ------------------------------------------------- integer gamma and beta
# (issue 12, 9): converted to x's dtype, in every family and the
# synchronized one; dgamma and dbeta then have x's dtype (and gamma's
# shape), as in the reference; results as with the converted floats.


def _sync_forward(x, gamma, beta, param, **kw):
    return distributed.sync_batchnorm_forward(
        x, gamma, beta, param, FakeComm(_World(1), 0), **kw
    )


# name: (x shape, parameter shape, forward name, backward name); the
# families of the registry (tests/families.py) in several parameter
# shapes and channel axes, and the synchronized batch norm
_REGISTRY_ROWS = {
    # name: (registry family, x shape, parameter shape, axis, extra)
    "batchnorm": ("batchnorm", (N, C), (C,), None, {}),
    "batchnorm (N, D) features of (N, C, H)": (
        "batchnorm",
        (N, C, H),
        (C, H),
        None,
        {},
    ),
    "spatial": ("spatial_batchnorm", (N, C, H, W), (C,), None, {}),
    "spatial (1, C, 1, 1)": (
        "spatial_batchnorm",
        (N, C, H, W),
        (1, C, 1, 1),
        None,
        {},
    ),
    "channels-last": ("spatial_batchnorm", (N, H, W, C), (C,), -1, {}),
    "layernorm": ("layernorm", (N, C), (C,), None, {}),
    "groupnorm": ("spatial_groupnorm", (N, C, H, W), (C,), None, {"G": 3}),
    "rmsnorm": ("rmsnorm", (N, C), (C,), None, {}),
    "rmsnorm (C, H) of (N, C, H)": ("rmsnorm", (N, C, H), (C, H), None, {}),
}
PARAM_FAMILIES = {
    name: (x_shape, p_shape, BY_NAME[fam].forward, BY_NAME[fam].backward)
    for name, (fam, x_shape, p_shape, _, _) in _REGISTRY_ROWS.items()
}
PARAM_FAMILIES.update(
    {
        "sync": (
            (N, C),
            (C,),
            "sync_batchnorm_forward",
            "sync_batchnorm_backward",
        ),
        "sync spatial": (
            (N, C, H, W),
            (C,),
            "sync_batchnorm_forward",
            "sync_batchnorm_backward",
        ),
    }
)


def test_param_families_cover_the_registry():
    assert {row[0] for row in _REGISTRY_ROWS.values()} == {
        fam.name for fam in BASE
    }


def _call_forward(module, family, x, gamma, beta, mode="train", **kw):
    _, _, fname, _ = PARAM_FAMILIES[family]
    param = {"mode": mode} if "batch" in fname else {}
    if "sync" in family:
        if family == "sync spatial":
            kw["axis"] = 1
        return _sync_forward(x, gamma, beta, param, **kw), param
    fam, _, _, axis, extra = _REGISTRY_ROWS[family]
    return BY_NAME[fam].call(
        module, x, gamma, beta, param, extra, axis, **kw
    ), param


def _call_backward(module, family, dout, cache, **kw):
    bname = PARAM_FAMILIES[family][3]
    if "sync" in family:
        return distributed.sync_batchnorm_backward(dout, cache, **kw)
    return getattr(module, bname)(dout, cache, **kw)


PARAM_KINDS = {
    "int64": lambda v: np.round(v * 3).astype(np.int64),
    "int8": lambda v: np.round(v * 3).astype(np.int8),
    "uint8": lambda v: np.round(np.abs(v) * 3).astype(np.uint8),
    "bool": lambda v: v > 0,
    "list of ints": lambda v: np.round(v * 3).astype(int).tolist(),
}


@pytest.mark.parametrize("family", list(PARAM_FAMILIES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", list(PARAM_KINDS))
def test_integer_and_bool_gamma_and_beta(family, dtype, kind):
    x_shape, p_shape, fname, _ = PARAM_FAMILIES[family]
    rng = _rng(3)
    x = rng.standard_normal(x_shape).astype(dtype)
    dout = rng.standard_normal(x_shape).astype(dtype)
    gamma = PARAM_KINDS[kind](rng.standard_normal(p_shape))
    beta = PARAM_KINDS[kind](rng.standard_normal(p_shape))
    g_float = np.asarray(gamma).astype(dtype)
    b_float = np.asarray(beta).astype(dtype)
    gamma_before, beta_before = copy.deepcopy(gamma), copy.deepcopy(beta)
    modes = ("train", "test") if "batch" in fname else ("train",)
    for mode in modes:
        for relu in (None, "relu") if "batch" in fname else (None,):
            kw = {"activation": relu} if relu else {}
            (out, cache), p = _call_forward(
                bnfast, family, x, gamma, beta, mode, **kw
            )
            (exp, ecache), ep = _call_forward(
                bnfast, family, x, g_float, b_float, mode, **kw
            )
            assert out.dtype == dtype
            np.testing.assert_array_equal(out, exp)
            for key in ep:
                if key.startswith("running"):
                    assert p[key].dtype == dtype  # x's: none were given
                    np.testing.assert_array_equal(p[key], ep[key])
            buf = np.full(x_shape, 7, dtype)
            (res, _), _ = _call_forward(
                bnfast, family, x, gamma, beta, mode, out=buf, **kw
            )
            assert res is buf
            np.testing.assert_array_equal(buf, exp)
            if cache is None:
                continue
            grads = _call_backward(bnfast, family, dout, cache)
            expected = _call_backward(bnfast, family, dout, ecache)
            buf = np.full(x_shape, 7, dtype)
            with_out = _call_backward(bnfast, family, dout, cache, out=buf)
            assert with_out[0] is buf
            for got, again, want in zip(grads, with_out, expected):
                assert got.dtype == dtype and got.shape == want.shape
                np.testing.assert_array_equal(got, want)
                np.testing.assert_array_equal(again, want)
            assert grads[1].shape == g_float.shape
    assert_unchanged(
        {"g": gamma_before, "b": beta_before}, {"g": gamma, "b": beta}
    )


@pytest.mark.parametrize(
    "family", [f for f in PARAM_FAMILIES if "sync" not in f]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["int64", "bool", "list of ints"])
def test_reference_integer_gamma_and_beta(family, dtype, kind):
    # the reference converts them too: its gradients have x's dtype (they
    # were int64, truncated) and agree with the fast ones
    x_shape, p_shape, _, _ = PARAM_FAMILIES[family]
    rng = _rng(4)
    x = rng.standard_normal(x_shape).astype(dtype)
    dout = rng.standard_normal(x_shape).astype(dtype)
    gamma = PARAM_KINDS[kind](rng.standard_normal(p_shape) + 0.3)
    beta = PARAM_KINDS[kind](rng.standard_normal(p_shape))
    (out, cache), _ = _call_forward(reference, family, x, gamma, beta)
    (fout, fcache), _ = _call_forward(bnfast, family, x, gamma, beta)
    assert out.dtype == dtype
    rtol, atol = (2e-5, 2e-5) if dtype == np.float32 else (1e-10, 1e-10)
    np.testing.assert_allclose(out, fout, rtol=rtol, atol=atol)
    grads = _call_backward(reference, family, dout, cache)
    fgrads = _call_backward(bnfast, family, dout, fcache)
    for got, fast in zip(grads, fgrads):
        assert got.dtype == dtype and got.shape == fast.shape
        np.testing.assert_allclose(got, fast, rtol=rtol, atol=atol)


# ------------------------------------------------ masked arrays, subclasses
# (issue 12, 7): the kernels read raw memory, so a masked array's mask
# would be dropped silently: every argument (every family, the
# synchronized one, out=) raises TypeError naming it.  Other ndarray
# subclasses (np.matrix, np.memmap, user subclasses) are read, and
# written as out, as plain ndarrays; the results are plain ndarrays.


def _masked(a):
    return np.ma.masked_array(a, mask=np.zeros(np.shape(a), bool))


MASKABLE = [
    "x",
    "gamma",
    "beta",
    "running_mean",
    "running_var",
    "dout",
    "out",
    "backward out",
]


def _masked_cases():
    for family, (_, _, fname, _) in PARAM_FAMILIES.items():
        for arg in MASKABLE:
            if arg.startswith("running") and "batch" not in fname:
                continue
            if (
                arg == "beta"
                and family in _REGISTRY_ROWS
                and not BY_NAME[_REGISTRY_ROWS[family][0]].has_beta
            ):
                continue
            yield pytest.param(family, arg, id=f"{family}-{arg}")


@pytest.mark.parametrize("family,arg", list(_masked_cases()))
def test_masked_arrays_raise(family, arg):
    x_shape, p_shape, fname, _ = PARAM_FAMILIES[family]
    rng = _rng(5)
    args = {
        "x": rng.standard_normal(x_shape),
        "gamma": rng.standard_normal(p_shape),
        "beta": rng.standard_normal(p_shape),
    }
    dout = rng.standard_normal(x_shape)
    param_extra = {}
    if arg.startswith("running"):
        param_extra[arg] = _masked(rng.random(p_shape) + 0.5)
    elif arg in args:
        args[arg] = _masked(args[arg])
    kw = {"out": _masked(np.zeros(x_shape))} if arg == "out" else {}
    name = {
        "backward out": "out",
        "running_mean": "bn_param['running_mean']",
        "running_var": "bn_param['running_var']",
    }.get(arg, arg)
    message = f"^{re.escape(name)} must not be a masked array"
    before = snapshot({**args, **param_extra, "dout": dout})
    if arg in ("dout", "backward out"):
        (_, cache), _ = _call_forward(
            bnfast, family, args["x"], args["gamma"], args["beta"]
        )
        bkw = (
            {"out": _masked(np.zeros(x_shape))}
            if arg == "backward out"
            else {}
        )
        d = _masked(dout) if arg == "dout" else dout
        with pytest.raises(TypeError, match=message):
            _call_backward(bnfast, family, d, cache, **bkw)
    else:
        _, _, fname, _ = PARAM_FAMILIES[family]
        if param_extra:
            param = {"mode": "train", **param_extra}
            fwd = _sync_forward if "sync" in family else getattr(bnfast, fname)
            akw = (
                {"axis": 1}
                if family == "sync spatial"
                else ({"axis": -1} if family == "channels-last" else {})
            )
            with pytest.raises(TypeError, match=message):
                fwd(args["x"], args["gamma"], args["beta"], param, **akw, **kw)
            assert param.keys() == {"mode", *param_extra}
        else:
            with pytest.raises(TypeError, match=message):
                _call_forward(
                    bnfast,
                    family,
                    args["x"],
                    args["gamma"],
                    args["beta"],
                    **kw,
                )
    assert_unchanged(before, {**args, **param_extra, "dout": dout})


class _Sub(np.ndarray):
    """A user's ndarray subclass."""


@pytest.mark.filterwarnings("ignore:the matrix subclass")
@pytest.mark.parametrize("family", list(PARAM_FAMILIES))
def test_ndarray_subclasses_are_read_and_written_as_ndarrays(family, tmp_path):
    x_shape, p_shape, _, _ = PARAM_FAMILIES[family]
    rng = _rng(6)
    x = rng.standard_normal(x_shape)
    gamma, beta = rng.standard_normal(p_shape), rng.standard_normal(p_shape)
    dout = rng.standard_normal(x_shape)
    (exp, ecache), _ = _call_forward(bnfast, family, x, gamma, beta)
    expected = _call_backward(bnfast, family, dout, ecache)
    mm = np.memmap(tmp_path / "out", np.float64, "w+", shape=x_shape)
    outs = [np.zeros(x_shape).view(_Sub), mm]
    if len(x_shape) == 2:
        outs.append(np.asmatrix(np.zeros(x_shape)))
    for out in outs:
        (res, cache), _ = _call_forward(
            bnfast, family, x.view(_Sub), gamma.view(_Sub), beta, out=out
        )
        assert res is out
        np.testing.assert_array_equal(np.asarray(out), exp)
        out[...] = 7
        dx, *grads = _call_backward(
            bnfast, family, dout.view(_Sub), cache, out=out
        )
        assert dx is out
        np.testing.assert_array_equal(np.asarray(out), expected[0])
        for g, e in zip(grads, expected[1:]):
            assert type(g) is np.ndarray
            np.testing.assert_array_equal(g, e)
    (res, _), _ = _call_forward(bnfast, family, x.view(_Sub), gamma, beta)
    assert type(res) is np.ndarray
    if len(x_shape) == 2:  # np.matrix x: a plain (N, D) array
        (res, _), _ = _call_forward(
            bnfast, family, np.asmatrix(x), gamma, beta
        )
        assert type(res) is np.ndarray
        np.testing.assert_array_equal(res, exp)
