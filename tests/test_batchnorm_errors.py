"""Bad input: the exception type, a message naming the argument, and nothing
modified (inputs, bn_param and its arrays)."""

import copy

import numpy as np
import pytest

import bnfast
from bnfast import functional

N, D = 5, 3


def good():
    rng = np.random.default_rng(0)
    return dict(
        x=rng.standard_normal((N, D)),
        gamma=np.ones(D),
        beta=np.zeros(D),
        bn_param={
            "mode": "train",
            "eps": 1e-5,
            "momentum": 0.9,
            "running_mean": np.full(D, 0.5),
            "running_var": np.full(D, 2.0),
        },
    )


def snapshot(args):
    return copy.deepcopy(args)


def assert_unchanged(before, after):
    for key in before:
        b, a = before[key], after[key]
        if isinstance(b, dict):
            assert b.keys() == a.keys(), key
            for k in b:
                np.testing.assert_array_equal(
                    a[k], b[k], err_msg=f"{key}[{k}]"
                )
        else:
            np.testing.assert_array_equal(a, b, err_msg=key)


FORWARD_ERRORS = [
    # (description, change to the good arguments, exception, message part)
    (
        "int x",
        lambda a: a.update(x=np.ones((N, D), dtype=int)),
        TypeError,
        "x must be a float16, bfloat16, float32 or float64 array, got dtype "
        "int64",
    ),
    (
        "longdouble x",
        lambda a: a.update(x=np.ones((N, D), np.longdouble)),
        TypeError,
        "got dtype float128",
    ),
    (
        "complex x",
        lambda a: a.update(x=np.ones((N, D), complex)),
        TypeError,
        "x must be a float16, bfloat16, float32 or float64",
    ),
    (
        "object x",
        lambda a: a.update(x=np.ones((N, D), object)),
        TypeError,
        "got dtype object",
    ),
    (
        "0-d x",
        lambda a: a.update(x=np.float64(1.0)),
        ValueError,
        "x must have at least 2 dimensions",
    ),
    (
        "1-d x",
        lambda a: a.update(x=np.ones(N)),
        ValueError,
        "x must have at least 2 dimensions (N, D), got shape (5,)",
    ),
    (
        "empty batch",
        lambda a: a.update(x=np.ones((0, D))),
        ValueError,
        "x is an empty batch (N = 0)",
    ),
    (
        "zero features",
        lambda a: a.update(x=np.ones((N, 0))),
        ValueError,
        "x has zero features",
    ),
    (
        "gamma shape",
        lambda a: a.update(gamma=np.ones(D + 1)),
        ValueError,
        "gamma must have shape (3,) to match x, got (4,)",
    ),
    (
        "beta shape",
        lambda a: a.update(beta=np.ones((1, D))),
        ValueError,
        "beta must have shape (3,) to match x, got (1, 3)",
    ),
    (
        "gamma dtype",
        lambda a: a.update(gamma=np.ones(D, complex)),
        TypeError,
        "gamma must be a float16, bfloat16, float32 or float64 array, or of "
        "integers or bools "
        "(converted to x's dtype), got dtype complex128",
    ),
    (
        "masked x",
        lambda a: a.update(x=np.ma.masked_less(a["x"], 0)),
        TypeError,
        "x must not be a masked array (numpy.ma.MaskedArray)",
    ),
    (
        "running_mean shape",
        lambda a: a["bn_param"].update(running_mean=np.zeros(D + 1)),
        ValueError,
        "bn_param['running_mean'] must have shape (3,)",
    ),
    (
        "running_var dtype",
        lambda a: a["bn_param"].update(running_var=np.zeros(D, int)),
        TypeError,
        "bn_param['running_var'] must be a float16, bfloat16, float32 or "
        "float64",
    ),
    (
        "negative eps",
        lambda a: a["bn_param"].update(eps=-1e-5),
        ValueError,
        "bn_param['eps'] must be >= 0.0, got -1e-05",
    ),
    (
        "string eps",
        lambda a: a["bn_param"].update(eps="1e-5"),
        TypeError,
        "bn_param['eps'] must be a real number, got str",
    ),
    (
        "momentum > 1",
        lambda a: a["bn_param"].update(momentum=1.5),
        ValueError,
        "bn_param['momentum'] must be in [0.0, 1.0], got 1.5",
    ),
    (
        "momentum < 0",
        lambda a: a["bn_param"].update(momentum=-0.1),
        ValueError,
        "bn_param['momentum'] must be in [0.0, 1.0]",
    ),
    (
        "NaN momentum",
        lambda a: a["bn_param"].update(momentum=float("nan")),
        ValueError,
        "bn_param['momentum'] must be in [0.0, 1.0]",
    ),
    (
        "unknown mode",
        lambda a: a["bn_param"].update(mode="eval"),
        ValueError,
        "bn_param['mode'] must be one of ('train', 'test'), got 'eval'",
    ),
    (
        "missing mode",
        lambda a: a["bn_param"].pop("mode"),
        KeyError,
        "bn_param['mode'] is required",
    ),
    (
        "bn_param not a dict",
        lambda a: a.update(bn_param=[("mode", "train")]),
        TypeError,
        "bn_param must be a dict, got list",
    ),
]


@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize(
    "desc,change,exc,message",
    FORWARD_ERRORS,
    ids=[e[0] for e in FORWARD_ERRORS],
)
def test_forward_errors(desc, change, exc, message, mode):
    args = good()
    if isinstance(args["bn_param"], dict):
        args["bn_param"]["mode"] = mode
    change(args)
    before = snapshot(args)
    with pytest.raises(exc) as info:
        bnfast.batchnorm_forward(**args)
    text = info.value.args[0] if exc is KeyError else str(info.value)
    assert message in text
    assert_unchanged(before, args)


def forward_cache():
    args = good()
    _, cache = bnfast.batchnorm_forward(**args)
    return args, cache


@pytest.mark.parametrize(
    "backward", [bnfast.batchnorm_backward, bnfast.batchnorm_backward_alt]
)
@pytest.mark.parametrize("cache_of", ["none", "tuple", "reference"])
def test_backward_foreign_cache(backward, cache_of):
    from bnfast import reference

    args = good()
    cache = {"none": None, "tuple": (1, 2, 3)}.get(cache_of)
    if cache_of == "reference":
        _, cache = reference.batchnorm_forward(**args)
    dout = np.ones((N, D))
    before = dout.copy()
    with pytest.raises(
        TypeError,
        match="cache must be the cache returned by "
        r"a bnfast batch norm forward pass, got",
    ):
        backward(dout, cache)
    np.testing.assert_array_equal(dout, before)


def test_backward_of_test_mode_is_accepted():
    # issue 13 item 4: the 'test' forward's cache (frozen statistics);
    # tests/test_frozen_backward.py checks its results
    args = good()
    args["bn_param"]["mode"] = "test"
    _, cache = bnfast.batchnorm_forward(**args)
    assert cache.frozen
    dx, _, _ = bnfast.batchnorm_backward(np.ones((N, D)), cache)
    assert dx.shape == (N, D)


@pytest.mark.parametrize(
    "dout,exc,message",
    [
        (
            np.ones((N, D + 1)),
            ValueError,
            "dout must have the shape of x (5, 3), got (5, 4)",
        ),
        (np.ones((N * D,)), ValueError, "dout must have the shape of x"),
        (
            np.ones((N, D), dtype=np.int32),
            TypeError,
            "dout must be a float16, bfloat16, float32 or float64 array, got "
            "dtype int32",
        ),
    ],
)
def test_backward_bad_dout(dout, exc, message):
    args, cache = forward_cache()
    x_before = args["x"].copy()
    with pytest.raises(exc) as info:
        bnfast.batchnorm_backward(dout, cache)
    assert message in str(info.value)
    np.testing.assert_array_equal(args["x"], x_before)


def test_cache_type_is_public():
    _, cache = forward_cache()
    assert isinstance(cache, functional.BatchNormCache)
    assert "BatchNormCache" in repr(cache)


def good_spatial():
    rng = np.random.default_rng(1)
    return dict(
        x=rng.standard_normal((2, 3, 4, 5)),
        gamma=np.ones(3),
        beta=np.zeros(3),
        bn_param={
            "mode": "train",
            "running_mean": np.full(3, 0.5),
            "running_var": np.full(3, 2.0),
        },
    )


SPATIAL_ERRORS = [
    (
        "axis 0",
        {"axis": 0},
        None,
        ValueError,
        "axis must not be 0, the batch axis",
    ),
    (
        "axis out of bounds",
        {"axis": 4},
        None,
        ValueError,
        "axis 4 is out of bounds for x of 4 dimensions",
    ),
    (
        "axis not an int",
        {"axis": 1.0},
        None,
        TypeError,
        "axis must be an int, got float",
    ),
    (
        "1-d x",
        {},
        lambda a: a.update(x=np.ones(5)),
        ValueError,
        "x must have at least 2 dimensions (N, C, ...)",
    ),
    (
        "empty batch",
        {},
        lambda a: a.update(x=np.ones((0, 3, 2, 2))),
        ValueError,
        "x is an empty batch (N = 0)",
    ),
    (
        "empty plane",
        {},
        lambda a: a.update(x=np.ones((2, 3, 0, 2))),
        ValueError,
        "x has no elements per channel",
    ),
    (
        "gamma shape",
        {},
        lambda a: a.update(gamma=np.ones(4)),
        ValueError,
        "gamma must have shape (3,) or (1, 3, 1, 1) to match x, got (4,)",
    ),
    (
        "gamma of the channels-last axis",
        {"axis": -1},
        None,
        ValueError,
        "gamma must have shape (5,) or (1, 1, 1, 5) to match x, got (3,)",
    ),
    (
        "running_var shape",
        {},
        lambda a: a["bn_param"].update(running_var=np.ones((3, 1))),
        ValueError,
        "bn_param['running_var'] must have shape (3,)",
    ),
    (
        "int x",
        {},
        lambda a: a.update(x=np.ones((2, 3, 4), int)),
        TypeError,
        "x must be a float16, bfloat16, float32 or float64 array, got dtype "
        "int64",
    ),
    (
        "unknown mode",
        {},
        lambda a: a["bn_param"].update(mode="eval"),
        ValueError,
        "bn_param['mode'] must be one of ('train', 'test')",
    ),
]


@pytest.mark.parametrize(
    "desc,kw,change,exc,message",
    SPATIAL_ERRORS,
    ids=[e[0] for e in SPATIAL_ERRORS],
)
def test_spatial_forward_errors(desc, kw, change, exc, message):
    args = good_spatial()
    if change:
        change(args)
    before = snapshot(args)
    with pytest.raises(exc) as info:
        bnfast.spatial_batchnorm_forward(**args, **kw)
    assert message in str(info.value)
    assert_unchanged(before, args)


def test_spatial_backward_bad_dout():
    args = good_spatial()
    _, cache = bnfast.spatial_batchnorm_forward(**args)
    with pytest.raises(
        ValueError,
        match=r"dout must have the shape of x "
        r"\(2, 3, 4, 5\), got \(2, 3, 5, 4\)",
    ):
        bnfast.spatial_batchnorm_backward(np.ones((2, 3, 5, 4)), cache)
    with pytest.raises(TypeError, match="cache must be the cache returned"):
        bnfast.spatial_batchnorm_backward(np.ones((2, 3, 4, 5)), {})


LN_ERRORS = [
    (
        "ln_param not a dict",
        lambda a: a.update(ln_param=None),
        TypeError,
        "ln_param must be a dict, got NoneType",
    ),
    (
        "negative eps",
        lambda a: a["ln_param"].update(eps=-1.0),
        ValueError,
        "ln_param['eps'] must be >= 0.0, got -1.0",
    ),
    (
        "gamma shape",
        lambda a: a.update(gamma=np.ones(4)),
        ValueError,
        "gamma must have shape (3,) to match x, got (4,)",
    ),
    (
        "1-d x",
        lambda a: a.update(x=np.ones(3)),
        ValueError,
        "x must have at least 2 dimensions (N, D)",
    ),
    (
        "empty batch",
        lambda a: a.update(x=np.ones((0, 3))),
        ValueError,
        "x is an empty batch (N = 0)",
    ),
    (
        "bool x",
        lambda a: a.update(x=np.ones((5, 3), bool)),
        TypeError,
        "x must be a float16, bfloat16, float32 or float64 array, got dtype "
        "bool",
    ),
]


@pytest.mark.parametrize(
    "desc,change,exc,message", LN_ERRORS, ids=[e[0] for e in LN_ERRORS]
)
def test_layernorm_errors(desc, change, exc, message):
    args = good()
    args.pop("bn_param")
    args["ln_param"] = {"eps": 1e-5}
    change(args)
    before = snapshot(args)
    with pytest.raises(exc) as info:
        bnfast.layernorm_forward(**args)
    assert message in str(info.value)
    assert_unchanged(before, args)


def test_layernorm_backward_bad_cache_and_dout():
    args = good()
    _, bn_cache = bnfast.batchnorm_forward(**args)
    with pytest.raises(
        TypeError,
        match="cache must be the cache returned by "
        "bnfast.layernorm_forward, got BatchNormCache",
    ):
        bnfast.layernorm_backward(np.ones((N, D)), bn_cache)
    _, cache = bnfast.layernorm_forward(
        args["x"], args["gamma"], args["beta"], {}
    )
    with pytest.raises(ValueError, match=r"dout must have the shape of x"):
        bnfast.layernorm_backward(np.ones((N, D + 1)), cache)


GN_ERRORS = [
    (
        "G does not divide C",
        {"G": 2},
        ValueError,
        "G must divide the number of channels C = 3, got 2",
    ),
    ("G zero", {"G": 0}, ValueError, "G must divide the number of channels"),
    ("G too large", {"G": 6}, ValueError, "got 6"),
    ("G not an int", {"G": 1.5}, TypeError, "G must be an int, got float"),
    (
        "gamma shape",
        {"gamma": np.ones(4)},
        ValueError,
        "gamma must have shape (3,) or (1, 3, 1, 1) to match x, got (4,)",
    ),
    (
        "gn_param not a dict",
        {"gn_param": 1e-5},
        TypeError,
        "gn_param must be a dict, got float",
    ),
    (
        "negative eps",
        {"gn_param": {"eps": -1}},
        ValueError,
        "gn_param['eps'] must be >= 0.0, got -1",
    ),
    (
        "1-d x",
        {"x": np.ones(3)},
        ValueError,
        "x must have at least 2 dimensions",
    ),
    (
        "empty batch",
        {"x": np.ones((0, 3, 2, 2))},
        ValueError,
        "x is an empty batch (N = 0)",
    ),
    (
        "longdouble x",
        {"x": np.ones((2, 3, 2, 2), np.longdouble)},
        TypeError,
        "got dtype float128",
    ),
]


@pytest.mark.parametrize(
    "desc,change,exc,message", GN_ERRORS, ids=[e[0] for e in GN_ERRORS]
)
def test_groupnorm_errors(desc, change, exc, message):
    args = good_spatial()
    args.pop("bn_param")
    args.update(G=3, gn_param={"eps": 1e-5})
    args.update(change)
    before = snapshot({k: v for k, v in args.items() if k != "G"})
    with pytest.raises(exc) as info:
        bnfast.spatial_groupnorm_forward(**args)
    assert message in str(info.value)
    assert_unchanged(before, {k: v for k, v in args.items() if k != "G"})


def test_groupnorm_backward_bad_cache():
    with pytest.raises(
        TypeError,
        match="cache must be the cache returned by "
        "bnfast.spatial_groupnorm_forward, got tuple",
    ):
        bnfast.spatial_groupnorm_backward(np.ones((2, 3, 4, 5)), (1, 2))


@pytest.mark.parametrize("activation", ["tanh", "ReLU", 1, False])
def test_unknown_activation(activation):
    args = good()
    before = snapshot(args)
    with pytest.raises(
        ValueError,
        match=r"activation must be one of "
        r"\(None, 'relu'\), got",
    ):
        bnfast.batchnorm_forward(**args, activation=activation)
    with pytest.raises(ValueError, match="activation must be one of"):
        bnfast.spatial_batchnorm_forward(**args, activation=activation)
    assert_unchanged(before, args)


@pytest.mark.parametrize(
    "family", ["batchnorm", "spatial", "layernorm", "groupnorm"]
)
@pytest.mark.parametrize("modify", ["resize mean", "reshape x"])
def test_a_cache_modified_in_place_is_rejected(family, modify):
    # the backward reads the cache through raw pointers: arrays resized
    # or reshaped in place since the forward must not be read out of bounds
    rng = np.random.default_rng(7)
    if family in ("batchnorm", "layernorm"):
        x = rng.standard_normal((6, 4))
        g, b = np.ones(4), np.zeros(4)
    else:
        x = rng.standard_normal((2, 4, 3, 3))
        g, b = np.ones(4), np.zeros(4)
    forward, backward = {
        "batchnorm": (
            lambda: bnfast.batchnorm_forward(x, g, b, {"mode": "train"}),
            bnfast.batchnorm_backward,
        ),
        "spatial": (
            lambda: bnfast.spatial_batchnorm_forward(
                x, g, b, {"mode": "train"}
            ),
            bnfast.spatial_batchnorm_backward,
        ),
        "layernorm": (
            lambda: bnfast.layernorm_forward(x, g, b, {}),
            bnfast.layernorm_backward,
        ),
        "groupnorm": (
            lambda: bnfast.spatial_groupnorm_forward(x, g, b, 2, {}),
            bnfast.spatial_groupnorm_backward,
        ),
    }[family]
    _, cache = forward()
    dout = np.ones(x.shape)
    if modify == "resize mean":
        cache.mean.resize(1, refcheck=False)
    else:
        cache.x.shape = cache.x.shape[::-1]
    # (the statistics no longer match the cached x, or its shape that of
    # the forward pass: whichever is seen first)
    with pytest.raises(ValueError, match="^cache: .*no longer"):
        backward(dout, cache)
