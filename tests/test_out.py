"""``out=``: every function computes into a caller's array of any layout,
returns that array, and gives bitwise the results it gives without it (the
results themselves are checked against the reference elsewhere); the
kernels write a well-laid-out ``out`` directly, with no temporary; a bad
``out`` raises with nothing modified."""

import copy
import re
import tracemalloc

import numpy as np
import pytest

import bnfast
from bnfast import distributed, reference

from arrays import _layout
from fakempi import FakeComm, _World
from families import FAMILIES, family_params, ident

LAYOUTS = [
    "C",
    "F",
    "rows-strided",
    "cols-strided",
    "reversed",
    "channels-last-memory",
]


def buffer(case, layout):
    """A buffer of x's shape and dtype in ``layout``, filled with 7s."""
    return _layout(np.full(case.x.shape, 7, case.x.dtype), layout)


def assert_into(result, buf, expected):
    assert result is buf
    np.testing.assert_array_equal(buf, expected)
    assert not np.any(buf == 7) or np.any(expected == 7)


def _rows(fam):
    """Plain cases, every out layout (an NCHW view of NHWC memory needs
    3-D); group norm with its largest group count."""
    for case in fam.cases():
        if case.contents != "plain":
            continue
        extra = fam.extras_of(case)[-1]
        suffix = ident(extra)
        for lay in LAYOUTS:
            if lay != "channels-last-memory" or case.x.ndim >= 3:
                yield (case, extra, lay), f"{case.id}{suffix}-out-{lay}"


@pytest.mark.parametrize(
    "module", [bnfast, reference], ids=["bnfast", "reference"]
)
@pytest.mark.parametrize(
    "fam,case,extra,layout", family_params(FAMILIES, _rows)
)
def test_out(fam, case, extra, layout, module):
    # the forward in each mode (and the running statistics it gives), the
    # backward after a forward in each backward mode: into a buffer, the
    # results without one
    for mode in fam.modes:
        expected, _, pe = fam.run(module, case, mode, extra)
        buf = buffer(case, layout)
        out, _, p = fam.run(module, case, mode, extra, out=buf)
        assert_into(out, buf, expected)
        for key in ("running_mean", "running_var"):
            if key in pe:
                np.testing.assert_array_equal(p[key], pe[key])
    for mode in fam.backward_modes:
        _, cache, _ = fam.run(module, case, mode, extra)
        dx_expected = fam.run_backward(module, case.dout, cache)
        buf = buffer(case, layout)
        grads = fam.run_backward(module, case.dout, cache, out=buf)
        assert_into(grads[0], buf, dx_expected[0])
        for g, e in zip(grads[1:], dx_expected[1:]):
            np.testing.assert_array_equal(g, e)


def peak_bytes(f):
    tracemalloc.start()
    try:
        f()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# (x's layout, out's layout, written directly by batch norm?, by layer
# norm?): the batch norm kernels write out in place when, seen in x's panel
# order, it has what they need: adjacent channels for C-order x (runs of one
# element), unit-stride runs otherwise; layer norm needs unit-stride rows.
# Otherwise a new array is computed and copied.
DIRECT = [
    ("C", "C", True, True),
    ("C", "F", False, False),
    ("F", "F", True, None),
    ("F", "C", False, None),
    ("C", "rows-strided", True, True),
    ("C", "reversed", True, True),
    ("C", "cols-strided", False, False),
]


@pytest.mark.parametrize("x_layout,out_layout,bn_direct,ln_direct", DIRECT)
def test_out_is_written_directly(x_layout, out_layout, bn_direct, ln_direct):
    rng = np.random.default_rng(3)
    x = _layout(rng.standard_normal((512, 256)), x_layout)
    dout = _layout(rng.standard_normal((512, 256)), x_layout)
    g, b = np.ones(256), np.zeros(256)
    buf = _layout(np.zeros(x.shape), out_layout)
    _, cache = bnfast.batchnorm_forward(x, g, b, {"mode": "train"})
    _, lcache = bnfast.layernorm_forward(x, g, b, {})
    calls = [
        (
            bn_direct,
            lambda: bnfast.batchnorm_forward(
                x, g, b, {"mode": "train"}, out=buf
            ),
        ),
        (
            bn_direct,
            lambda: bnfast.batchnorm_forward(
                x,
                g,
                b,
                {"mode": "test", "running_mean": g, "running_var": g},
                out=buf,
            ),
        ),
        (bn_direct, lambda: bnfast.batchnorm_backward(dout, cache, out=buf)),
    ]
    if x_layout == "C":  # layer norm copies x and dout otherwise
        calls += [
            (
                ln_direct,
                lambda: bnfast.layernorm_forward(x, g, b, {}, out=buf),
            ),
            (
                ln_direct,
                lambda: bnfast.layernorm_backward(dout, lcache, out=buf),
            ),
        ]
    for k, (direct, call) in enumerate(calls):
        peak = peak_bytes(call)
        if direct:
            assert peak < x.nbytes // 8, (k, peak)
        else:
            assert peak >= x.nbytes, (k, peak)


def _args():
    rng = np.random.default_rng(0)
    return dict(
        x=rng.standard_normal((5, 3)),
        gamma=np.ones(3),
        beta=np.zeros(3),
        bn_param={
            "mode": "train",
            "running_mean": np.zeros(3),
            "running_var": np.ones(3),
        },
    )


def _shifted(args):
    """An out one row off x, both in one buffer (no reads outside it)."""
    big = np.zeros((6, 3))
    big[:5] = args["x"]
    args["x"] = big[:5]
    return big[1:]


def _around(args, key):
    """An out whose memory holds args[key] (replaced by a view of it)."""
    buf = np.ones(15)
    args[key] = buf[6:9]
    return buf.reshape(5, 3)


def _read_only():
    out = np.zeros((5, 3))
    out.setflags(write=False)
    return out


OUT_ERRORS = [
    # (description, out from the arguments, exception, message)
    (
        "a list",
        lambda a: [[0.0] * 3] * 5,
        TypeError,
        "out must be a numpy.ndarray, got list",
    ),
    (
        "a masked array",
        lambda a: np.ma.zeros((5, 3)),
        TypeError,
        "out must not be a masked array (numpy.ma.MaskedArray)",
    ),
    (
        "another dtype",
        lambda a: np.zeros((5, 3), np.float32),
        TypeError,
        "out must have dtype float64 (x's), got float32",
    ),
    (
        "another shape",
        lambda a: np.zeros((3, 5)),
        ValueError,
        "out must have shape (5, 3), got (3, 5)",
    ),
    ("read-only", lambda a: _read_only(), ValueError, "out is read-only"),
    (
        "stride 0",
        lambda a: np.lib.stride_tricks.as_strided(np.zeros(3), (5, 3), (0, 8)),
        ValueError,
        "out has elements sharing memory (a stride of 0)",
    ),
    (
        "x itself",
        lambda a: a["x"],
        ValueError,
        "out must not share memory with x",
    ),
    (
        "overlapping x",
        lambda a: _shifted(a),
        ValueError,
        "out must not share memory with x",
    ),
    (
        "overlapping gamma",
        lambda a: _around(a, "gamma"),
        ValueError,
        "out must not share memory with gamma",
    ),
    (
        "overlapping running_var",
        lambda a: _around(a["bn_param"], "running_var"),
        ValueError,
        "out must not share memory with bn_param['running_var']",
    ),
]


@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize(
    "desc,make,exc,message", OUT_ERRORS, ids=[e[0] for e in OUT_ERRORS]
)
def test_forward_out_errors(desc, make, exc, message, mode):
    args = _args()
    args["bn_param"]["mode"] = mode
    out = make(args)
    before = copy.deepcopy(args)
    out_before = copy.deepcopy(out)
    with pytest.raises(exc, match=re.escape(message)):
        bnfast.batchnorm_forward(**args, out=out)
    for key in ("x", "gamma", "beta"):
        np.testing.assert_array_equal(args[key], before[key])
    for key, value in before["bn_param"].items():
        np.testing.assert_array_equal(args["bn_param"][key], value)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(out_before))


@pytest.mark.parametrize("what", ["dout", "the cached x"])
@pytest.mark.parametrize("backward", ["batchnorm", "layernorm"])
def test_backward_out_overlapping_inputs(what, backward):
    args = _args()
    dout = np.random.default_rng(1).standard_normal((5, 3))
    if backward == "batchnorm":
        _, cache = bnfast.batchnorm_forward(**args)
        f = bnfast.batchnorm_backward
    else:
        _, cache = bnfast.layernorm_forward(
            args["x"], args["gamma"], args["beta"], {}
        )
        f = bnfast.layernorm_backward
    out = dout if what == "dout" else args["x"]
    before = (dout.copy(), args["x"].copy())
    with pytest.raises(
        ValueError, match=f"out must not share memory with {what}"
    ):
        f(dout, cache, out=out)
    np.testing.assert_array_equal(dout, before[0])
    np.testing.assert_array_equal(args["x"], before[1])


def test_groupnorm_out_errors():
    x = np.random.default_rng(2).standard_normal((2, 4, 3))
    g, b = np.ones(4), np.zeros(4)
    with pytest.raises(ValueError, match="out must not share memory with x"):
        bnfast.spatial_groupnorm_forward(x, g, b, 2, {}, out=x)
    with pytest.raises(TypeError, match="out must have dtype float64"):
        bnfast.spatial_groupnorm_forward(
            x, g, b, 2, {}, out=np.empty(x.shape, np.float32)
        )


# ------------------------------------------------- aliasing (issue 12, 3)
# Every overlap between out and anything the call reads raises ValueError
# naming the array, with nothing modified: also when the call reads a copy
# of the caller's array (byte-swapped, strided, converted, reshaped), and
# for an out whose own elements overlap.  The reference raises the same.

C = 6


def _sync(f):
    """A synchronized call on a communicator of one process."""

    def call(*args, **kw):
        return f(*args, FakeComm(_World(1), 0), **kw)

    return call


# family: (x shape, forward(module, x, gamma, beta, param, **kw),
#          backward(module, dout, cache, **kw), modules with the family)
FAMILIES = {
    "batchnorm": (
        (5, C),
        lambda m, x, g, b, p, **kw: m.batchnorm_forward(x, g, b, p, **kw),
        lambda m, d, c, **kw: m.batchnorm_backward(d, c, **kw),
        (bnfast, reference),
    ),
    "spatial": (
        (3, C, 2, 2),
        lambda m, x, g, b, p, **kw: m.spatial_batchnorm_forward(
            x, g, b, p, **kw
        ),
        lambda m, d, c, **kw: m.spatial_batchnorm_backward(d, c, **kw),
        (bnfast, reference),
    ),
    "channels-last": (
        (3, 2, 2, C),
        lambda m, x, g, b, p, **kw: m.spatial_batchnorm_forward(
            x, g, b, p, axis=-1, **kw
        ),
        lambda m, d, c, **kw: m.spatial_batchnorm_backward(d, c, **kw),
        (bnfast, reference),
    ),
    "layernorm": (
        (5, C),
        lambda m, x, g, b, p, **kw: m.layernorm_forward(x, g, b, {}, **kw),
        lambda m, d, c, **kw: m.layernorm_backward(d, c, **kw),
        (bnfast, reference),
    ),
    "groupnorm": (
        (3, C, 2, 2),
        lambda m, x, g, b, p, **kw: m.spatial_groupnorm_forward(
            x, g, b, 3, {}, **kw
        ),
        lambda m, d, c, **kw: m.spatial_groupnorm_backward(d, c, **kw),
        (bnfast, reference),
    ),
    "sync": (
        (5, C),
        lambda m, x, g, b, p, **kw: _sync(distributed.sync_batchnorm_forward)(
            x, g, b, p, **kw
        ),
        lambda m, d, c, **kw: distributed.sync_batchnorm_backward(d, c, **kw),
        (bnfast,),
    ),
    "sync spatial": (
        (3, C, 2, 2),
        lambda m, x, g, b, p, **kw: _sync(distributed.sync_batchnorm_forward)(
            x, g, b, p, axis=1, **kw
        ),
        lambda m, d, c, **kw: distributed.sync_batchnorm_backward(d, c, **kw),
        (bnfast,),
    ),
}
BATCH = ["batchnorm", "spatial", "channels-last", "sync", "sync spatial"]


def _family_modules(names):
    return [
        pytest.param(name, m, id=f"{name}-{m.__name__.split('.')[-1]}")
        for name in names
        for m in FAMILIES[name][3]
    ]


def _values(seed=5):
    rng = np.random.default_rng(seed)
    return {
        "gamma": rng.uniform(0.5, 1.5, C),
        "beta": rng.uniform(-1, 1, C),
        "running_mean": rng.uniform(-1, 1, C),
        "running_var": rng.uniform(0.5, 2, C),
    }


def _copies(arrays):
    return {k: np.array(v, copy=True) for k, v in arrays.items()}


def _assert_same(before, after):
    for key in before:
        np.testing.assert_array_equal(
            np.asarray(after[key]), before[key], err_msg=key
        )


@pytest.mark.parametrize(
    "family", ["batchnorm", "spatial", "channels-last", "sync", "sync spatial"]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_out_sharing_beta(family, dtype):
    # the fused ReLU's backward reads beta (its mask is recomputed): a dx
    # written over beta would change the mask, and the caller's beta
    shape, fwd, bwd, _ = FAMILIES[family]
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    buf = np.zeros(x.size, dtype)
    beta = buf[x.size - C :]
    beta[...] = rng.uniform(-1, 1, C)
    _, cache = fwd(
        bnfast,
        x,
        np.ones(C, dtype),
        beta,
        {"mode": "train"},
        activation="relu",
    )
    out = buf.reshape(shape)
    before = _copies({"beta": beta, "x": x, "dout": dout, "buf": buf})
    with pytest.raises(
        ValueError,
        match=re.escape("out must not share memory with the cached beta"),
    ):
        bwd(bnfast, dout, cache, out=out)
    _assert_same(before, {"beta": beta, "x": x, "dout": dout, "buf": buf})
    # without the ReLU beta is not read: that backward may write there
    _, cache = fwd(bnfast, x, np.ones(C, dtype), beta, {"mode": "train"})
    expected = bwd(bnfast, dout, cache)[0]
    np.testing.assert_array_equal(
        bwd(bnfast, dout, cache, out=out)[0], expected
    )


def _place(kind, out, value):
    """An array of value's values in out's memory, as ``kind``: 'strided'
    (every other element), 'byte-swapped', 'integer' (int64 over the
    float64 bytes) or 'integer memoryview' (a memoryview of those)."""
    flat = out.reshape(-1)
    if kind == "strided":
        a = flat[::2][: value.size]
    elif kind == "byte-swapped":
        a = (
            flat[flat.size - value.size :]
            .view(flat.dtype.newbyteorder())
            .reshape(value.shape)
        )
    elif kind in ("integer", "integer memoryview"):
        a = flat[: value.size].view(np.int64)
        value = np.round(value * 3).astype(np.int64)
    a[...] = value
    return memoryview(a) if kind == "integer memoryview" else a


def _forward_aliasing_cases():
    for name in FAMILIES:
        params = ["gamma", "beta"]
        if name in BATCH:
            params += ["running_mean", "running_var"]
        for arg in params:
            for kind in (
                "strided",
                "byte-swapped",
                "integer",
                "integer memoryview",
            ):
                if kind.startswith("integer") and arg.startswith("running"):
                    continue  # a TypeError: running statistics are floats
                yield name, arg, kind
        yield name, "x", "byte-swapped"
    yield "batchnorm", "x", "reshaped"  # (N, A, B) that reshape(N, -1)
    yield "sync", "x", "reshaped"  # must copy, passed as out itself


FORWARD_ALIASING = [
    pytest.param(
        name,
        m,
        arg,
        kind,
        id=f"{name}-{arg}-{kind}-{m.__name__.split('.')[-1]}",
    )
    for name, arg, kind in _forward_aliasing_cases()
    for m in FAMILIES[name][3]
]


@pytest.mark.parametrize("family,module,arg,kind", FORWARD_ALIASING)
@pytest.mark.parametrize("mode", ["train", "test"])
def test_forward_out_sharing_a_converted_input(
    family, module, arg, kind, mode
):
    # the call reads a native / contiguous / float copy of the argument;
    # out is checked against the caller's array as well
    shape, fwd, _, _ = FAMILIES[family]
    rng = np.random.default_rng(2)
    if kind == "reshaped":
        shape = (5, 3, 2)
    d = C if kind != "reshaped" else 6
    v = _values()
    x = rng.standard_normal(shape)
    out = np.zeros(shape)
    args = {"x": x, "gamma": v["gamma"][:d], "beta": v["beta"][:d]}
    param = {
        "mode": mode,
        "running_mean": v["running_mean"][:d],
        "running_var": v["running_var"][:d],
    }
    if kind == "reshaped":
        x = out = np.zeros((5, 2, 3)).transpose(0, 2, 1)
        x[...] = args["x"]
        args["x"] = x
    elif arg == "x":
        args["x"] = _place(kind, out, x)
    elif arg in args:
        args[arg] = _place(kind, out, args[arg])
    else:
        param[arg] = _place(kind, out, param[arg])
    name = f"bn_param['{arg}']" if arg.startswith("running") else arg
    before = _copies({**args, **param, "out": out})
    del before["mode"]
    with pytest.raises(
        ValueError, match=re.escape(f"out must not share memory with {name}")
    ):
        fwd(module, args["x"], args["gamma"], args["beta"], param, out=out)
    _assert_same(before, {**args, **param, "out": out})


@pytest.mark.parametrize("family,module", _family_modules(FAMILIES))
def test_backward_out_sharing_a_byte_swapped_dout(family, module):
    shape, fwd, bwd, _ = FAMILIES[family]
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    _, cache = fwd(module, x, np.ones(C), np.zeros(C), {"mode": "train"})
    out = np.zeros(shape)
    dout = _place("byte-swapped", out, rng.standard_normal(shape))
    before = _copies({"dout": dout, "x": x, "out": out})
    with pytest.raises(
        ValueError, match=re.escape("out must not share memory with dout")
    ):
        bwd(module, dout, cache, out=out)
    _assert_same(before, {"dout": dout, "x": x, "out": out})


@pytest.mark.parametrize(
    "family", ["batchnorm", "spatial", "layernorm", "groupnorm", "sync"]
)
@pytest.mark.parametrize("which", ["mean", "invstd"])
def test_backward_out_sharing_the_cached_statistics(family, which):
    # shapes whose x has as many elements as the statistics, so that an
    # out over them stays within their memory: one sample (batch norm),
    # one feature (layer norm), instance norm of 1x1 images (group norm)
    rng = np.random.default_rng(6)
    shape, fwd, bwd = {
        "batchnorm": (
            (1, C),
            FAMILIES["batchnorm"][1],
            FAMILIES["batchnorm"][2],
        ),
        "spatial": ((1, C, 1), FAMILIES["spatial"][1], FAMILIES["spatial"][2]),
        "layernorm": (
            (C, 1),
            lambda m, x, g, b, p, **kw: m.layernorm_forward(x, g, b, {}, **kw),
            FAMILIES["layernorm"][2],
        ),
        "groupnorm": (
            (1, C, 1),
            lambda m, x, g, b, p, **kw: m.spatial_groupnorm_forward(
                x, g, b, C, {}, **kw
            ),
            FAMILIES["groupnorm"][2],
        ),
        "sync": ((1, C), FAMILIES["sync"][1], FAMILIES["sync"][2]),
    }[family]
    x = rng.standard_normal(shape)
    dout = rng.standard_normal(shape)
    p = np.ones(shape[1] if family != "layernorm" else 1)
    _, cache = fwd(bnfast, x, p, 0 * p, {"mode": "train"})
    stats = getattr(cache, which)
    assert stats.size == x.size
    out = stats.reshape(shape)
    before = _copies({"stats": stats, "x": x, "dout": dout})
    with pytest.raises(
        ValueError,
        match=re.escape(
            "out must not share memory with the cached statistics"
        ),
    ):
        bwd(bnfast, dout, cache, out=out)
    _assert_same(before, {"stats": stats, "x": x, "dout": dout})


def _self_overlapping(shape, how):
    """A writeable out of ``shape`` whose elements overlap: samples one
    element apart (a sliding window over a flat buffer), or every axis one
    element apart."""
    base = np.zeros(int(np.prod(shape)) + 8)
    if how == "sliding window":
        rows = np.lib.stride_tricks.sliding_window_view(
            base, int(np.prod(shape[1:])), writeable=True
        )[: shape[0]]
        out = rows.reshape(shape)
    else:
        out = np.lib.stride_tricks.as_strided(base, shape, (8,) * len(shape))
    assert np.shares_memory(out, base)
    return out


@pytest.mark.parametrize("family,module", _family_modules(FAMILIES))
@pytest.mark.parametrize("how", ["sliding window", "all axes"])
def test_out_whose_elements_overlap(family, module, how):
    shape, fwd, bwd, _ = FAMILIES[family]
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    dout = rng.standard_normal(shape)
    out = _self_overlapping(shape, how)
    assert out.flags.writeable
    base = out.base if out.base is not None else out
    param = {"mode": "train"}
    before = _copies({"x": x, "dout": dout, "base": np.asarray(base)})
    with pytest.raises(ValueError, match="out has elements sharing memory"):
        fwd(module, x, np.ones(C), np.zeros(C), param, out=out)
    assert "running_mean" not in param
    _, cache = fwd(module, x, np.ones(C), np.zeros(C), {"mode": "train"})
    with pytest.raises(ValueError, match="out has elements sharing memory"):
        bwd(module, dout, cache, out=out)
    _assert_same(before, {"x": x, "dout": dout, "base": np.asarray(base)})


def test_self_overlap_is_decided_exactly():
    # strides that do not nest (only as_strided makes them) are decided
    # element by element: the reference's brute force is the oracle
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2))
    expected, _ = bnfast.batchnorm_forward(
        x, np.ones(2), np.zeros(2), {"mode": "train"}
    )
    seen = set()
    for _ in range(400):
        strides = tuple(int(s) * 8 for s in rng.integers(-4, 5, 2))
        base = np.zeros(64)
        out = np.lib.stride_tricks.as_strided(base[24:], (3, 2), strides)
        overlaps = reference._overlaps_itself(out)
        seen.add(overlaps)
        if overlaps:
            with pytest.raises(ValueError, match="out has elements sharing"):
                bnfast.batchnorm_forward(
                    x, np.ones(2), np.zeros(2), {"mode": "train"}, out=out
                )
        else:
            res, _ = bnfast.batchnorm_forward(
                x, np.ones(2), np.zeros(2), {"mode": "train"}, out=out
            )
            assert res is out
            np.testing.assert_array_equal(out, expected, err_msg=strides)
    assert seen == {True, False}
    # interleaved axes: offsets i * 16 + j * 24 are all distinct
    out = np.lib.stride_tricks.as_strided(np.zeros(8), (3, 2), (16, 24))
    assert not reference._overlaps_itself(out)
    bnfast.batchnorm_forward(
        x, np.ones(2), np.zeros(2), {"mode": "train"}, out=out
    )
    np.testing.assert_array_equal(out, expected)
