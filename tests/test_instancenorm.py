"""The InstanceNorm layer: group norm with one channel per group (G = C),
optional running statistics, channels first or last, its repr and state
dict, bad arguments, and PyTorch's InstanceNorm1d/2d/3d (from_torch)."""

import copy

import numpy as np
import pytest

import bnfast
from bnfast import reference

from arrays import assert_as_accurate, numeric_grad, spatial_cases

EPS = 1e-5


def _rng(seed=0):
    return np.random.default_rng(seed)


def _affine_layer(c, rng, **kw):
    return bnfast.InstanceNorm(
        c,
        affine=True,
        dtype=np.float64,
        gamma_init=lambda s, d: rng.uniform(0.5, 1.5, s),
        beta_init=lambda s, d: rng.uniform(-1, 1, s),
        **kw,
    )


# -------------------------------------------------- against the reference

# the spatial cases of the shared generator, channels first and last, in
# float64 layers (the layer's dtype is its parameters'; x keeps its own)
CASES = [
    c
    for c in spatial_cases()
    if c.contents in ("plain", "offset1e4", "const-col")
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_reference_group_norm_with_g_equal_c(case):
    c = case.x.shape[case.axis]
    layer = bnfast.InstanceNorm(
        c,
        affine=True,
        axis=case.axis,
        dtype=case.gamma.dtype,
        gamma_init=case.gamma,
        beta_init=case.beta,
    )
    out = layer(case.x)
    with np.errstate(invalid="ignore", over="ignore"):
        ref, rcache = reference.spatial_groupnorm_forward(
            case.x, case.gamma, case.beta, c, {"eps": EPS}, axis=case.axis
        )
        wcase = case.widened()
        wide, wcache = reference.spatial_groupnorm_forward(
            wcase.x, wcase.gamma, wcase.beta, c, {"eps": EPS}, axis=case.axis
        )
    assert_as_accurate("InstanceNorm out", case, out, ref, wide)
    dx = layer.backward(case.dout)
    want = bnfast.spatial_groupnorm_backward(
        case.dout,
        bnfast.spatial_groupnorm_forward(
            case.x, layer.gamma, layer.beta, c, {"eps": EPS}, axis=case.axis
        )[1],
    )
    np.testing.assert_array_equal(dx, want[0])
    np.testing.assert_array_equal(layer.grads["gamma"], want[1])
    np.testing.assert_array_equal(layer.grads["beta"], want[2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 4, 10), (2, 3, 5, 6), (2, 2, 3, 4, 5)])
def test_per_instance_statistics(dtype, shape):
    # the default layer (no affine): each (sample, channel) has mean 0 and
    # variance 1 / (1 + eps / var)
    x = (_rng(1).standard_normal(shape) * 3 + 5).astype(dtype)
    layer = bnfast.InstanceNorm(shape[1], dtype=dtype)
    out = layer(x)
    assert out.dtype == dtype and out.shape == x.shape
    axes = tuple(range(2, len(shape)))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out.mean(axis=axes), 0, atol=tol)
    var = x.astype(np.float64).var(axis=axes)
    np.testing.assert_allclose(
        out.astype(np.float64).var(axis=axes), var / (var + EPS), rtol=tol * 10
    )
    dx = layer.backward(np.ones_like(x))
    assert layer.dgamma is None and layer.dbeta is None
    assert layer.grads == {} and layer.params == {}
    np.testing.assert_allclose(dx, 0, atol=tol)


def test_channels_last_equals_channels_first():
    rng = _rng(2)
    x = rng.standard_normal((3, 5, 6, 4))  # NHWC
    dout = rng.standard_normal(x.shape)
    last = _affine_layer(4, _rng(3), axis=-1)
    first = _affine_layer(4, _rng(3))
    out = last(x)
    out1 = first(np.moveaxis(x, -1, 1))
    np.testing.assert_allclose(
        np.moveaxis(out, -1, 1), out1, rtol=1e-12, atol=1e-12
    )
    dx = last.backward(dout)
    dx1 = first.backward(np.moveaxis(dout, -1, 1))
    np.testing.assert_allclose(
        np.moveaxis(dx, -1, 1), dx1, rtol=1e-12, atol=1e-12
    )
    for name in ("gamma", "beta"):
        np.testing.assert_allclose(
            last.grads[name], first.grads[name], rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize(
    "mode,track", [("train", False), ("train", True), ("test", True)]
)
def test_finite_differences(axis, mode, track):
    rng = _rng(4)
    x = rng.standard_normal((2, 3, 4, 5)) * 2 + 1
    c = x.shape[axis]
    dout = rng.standard_normal(x.shape)
    layer = _affine_layer(c, rng, axis=axis, track_running_stats=track)
    if track:
        layer.running_mean[...] = rng.uniform(-1, 1, c)
        layer.running_var[...] = rng.uniform(0.5, 2, c)
    state = layer.state_dict()

    def loss():
        layer.load_state_dict(state)
        return float(np.sum(layer(x, mode=mode) * dout))

    loss()
    dx = layer.backward(dout)
    grads = dict(layer.grads)
    np.testing.assert_allclose(
        dx, numeric_grad(loss, x, 1e-5), rtol=1e-5, atol=1e-7
    )
    for name in ("gamma", "beta"):
        # loss() loads the state dict: perturb the parameter there
        key = "weight" if name == "gamma" else "bias"
        num = numeric_grad(loss, state[key], 1e-5)
        np.testing.assert_allclose(grads[name], num, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------ running statistics


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("axis", [1, -1])
def test_running_statistics(unbiased, axis):
    rng = _rng(5)
    layer = bnfast.InstanceNorm(
        3,
        momentum=0.8,
        track_running_stats=True,
        unbiased_running_var=unbiased,
        axis=axis,
        dtype=np.float64,
    )
    rm, rv = np.zeros(3), np.ones(3)
    for step in range(3):
        x = rng.standard_normal((4, 3, 5, 6)) * (step + 1) + step
        xl = x if axis == 1 else np.moveaxis(x, 1, -1)
        layer(xl)
        mean = x.mean(axis=(2, 3)).mean(axis=0)
        var = x.var(axis=(2, 3), ddof=1 if unbiased else 0).mean(axis=0)
        rm = 0.8 * rm + 0.2 * mean
        rv = 0.8 * rv + 0.2 * var
        np.testing.assert_allclose(layer.running_mean, rm, rtol=1e-12)
        np.testing.assert_allclose(layer.running_var, rv, rtol=1e-10)
    assert layer.num_batches_tracked == 3
    # 'test' mode: batch norm's test mode with the running statistics
    x = rng.standard_normal((2, 3, 5, 6))
    xl = x if axis == 1 else np.moveaxis(x, 1, -1)
    kept = layer.state_dict()
    out = layer(xl, mode="test")
    want = (x - rm[:, None, None]) / np.sqrt(rv[:, None, None] + EPS)
    np.testing.assert_allclose(
        out,
        want if axis == 1 else np.moveaxis(want, 1, -1),
        rtol=1e-12,
        atol=1e-12,
    )
    # its backward treats them as constants
    dout = rng.standard_normal(xl.shape)
    dx = layer.backward(dout)
    scale = 1 / np.sqrt(rv + EPS)
    np.testing.assert_allclose(
        dx, dout * (scale[:, None, None] if axis == 1 else scale), rtol=1e-12
    )
    # 'test' mode does not update them
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, kept[key])


def test_momentum_none_keeps_the_running_statistics():
    layer = bnfast.InstanceNorm(2, momentum=None, track_running_stats=True)
    layer(_rng(6).standard_normal((3, 2, 4)).astype(np.float32))
    np.testing.assert_array_equal(layer.running_mean, 0)
    np.testing.assert_array_equal(layer.running_var, 1)
    assert layer.num_batches_tracked == 1


def test_without_running_statistics_test_mode_uses_the_instance():
    x = _rng(7).standard_normal((2, 3, 8))
    layer = bnfast.InstanceNorm(3, dtype=np.float64)
    assert layer.running_mean is None and layer.running_var is None
    np.testing.assert_array_equal(layer(x, mode="test"), layer(x))


def test_unbiased_with_one_element_raises_and_modifies_nothing():
    layer = bnfast.InstanceNorm(
        2, track_running_stats=True, unbiased_running_var=True
    )
    with pytest.raises(
        ValueError,
        match=r"unbiased_running_var needs more "
        r"than 1 value per sample and channel, got x of "
        r"shape \(3, 2, 1\)",
    ):
        layer(np.ones((3, 2, 1), np.float32))
    np.testing.assert_array_equal(layer.running_mean, 0)
    np.testing.assert_array_equal(layer.running_var, 1)
    assert layer.num_batches_tracked == 0 and layer._cache is None


# ----------------------------------------------- repr, state, arguments


def test_repr():
    assert (
        repr(bnfast.InstanceNorm(3)) == "InstanceNorm(3, eps=1e-05, "
        "momentum=0.9)"
    )
    layer = bnfast.InstanceNorm(
        4,
        eps=1e-3,
        momentum=None,
        affine=True,
        track_running_stats=True,
        axis=-1,
        dtype=np.float64,
    )
    assert repr(layer) == (
        "InstanceNorm(4, eps=0.001, momentum=None, "
        "affine=True, track_running_stats=True, "
        "dtype='float64', axis=-1)"
    )
    again = eval(repr(layer), {"InstanceNorm": bnfast.InstanceNorm})
    assert repr(again) == repr(layer)
    assert "InstanceNorm" in bnfast.__all__


def test_state_dict():
    assert bnfast.InstanceNorm(3).state_dict() == {}
    layer = _affine_layer(3, _rng(8), track_running_stats=True)
    layer(_rng(9).standard_normal((2, 3, 5)))
    state = layer.state_dict()
    assert sorted(state) == [
        "bias",
        "num_batches_tracked",
        "running_mean",
        "running_var",
        "weight",
    ]
    other = bnfast.InstanceNorm(
        3, affine=True, track_running_stats=True, dtype=np.float64
    )
    other.load_state_dict(state)
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    assert other.num_batches_tracked == 1
    # a bad entry: nothing loaded, the key named
    before = other.state_dict()
    bad = dict(state, running_var=np.ones(4))
    with pytest.raises(
        ValueError,
        match=r"running_var must have shape "
        r"\(3,\), got \(4,\)",
    ):
        other.load_state_dict(bad)
    missing = {k: v for k, v in state.items() if k != "weight"}
    with pytest.raises(KeyError, match=r"missing \['weight'\]"):
        other.load_state_dict(missing)
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


ARG_ERRORS = [
    (
        {"num_features": 0},
        ValueError,
        "num_features must be a positive int, got 0",
    ),
    (
        {"num_features": 2.0},
        TypeError,
        "num_features must be an int, got float",
    ),
    ({"eps": -1.0}, ValueError, "eps must be a finite number >= 0"),
    ({"momentum": 1.5}, ValueError, "momentum must be in [0, 1] or None"),
    ({"affine": 1}, TypeError, "affine must be a bool, got int"),
    (
        {"track_running_stats": "yes"},
        TypeError,
        "track_running_stats must be a bool, got str",
    ),
    ({"axis": 0}, ValueError, "axis must not be 0, the batch axis"),
    ({"axis": 1.0}, TypeError, "axis must be an int, got float"),
    (
        {"dtype": np.longdouble},
        TypeError,
        "dtype must be float16, bfloat16, float32 or float64",
    ),
]


@pytest.mark.parametrize(
    "change,exc,message", ARG_ERRORS, ids=[str(e[0]) for e in ARG_ERRORS]
)
def test_bad_arguments(change, exc, message):
    kwargs = dict(num_features=3)
    kwargs.update(change)
    with pytest.raises(exc) as info:
        bnfast.InstanceNorm(**kwargs)
    assert message in str(info.value)


def test_bad_input():
    layer = bnfast.InstanceNorm(3, track_running_stats=True)
    x = np.ones((2, 4, 5), np.float32)
    before = x.copy()
    with pytest.raises(
        ValueError,
        match="x has 4 channels along axis 1, InstanceNorm expects 3",
    ):
        layer(x)
    with pytest.raises(ValueError, match="mode must be one of"):
        layer(np.ones((2, 3, 5), np.float32), mode="eval")
    with pytest.raises(
        RuntimeError, match="InstanceNorm.backward needs a forward pass first"
    ):
        layer.backward(x)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(layer.running_mean, 0)
    assert layer.num_batches_tracked == 0


# ----------------------------------------------------------------- torch


def _torch_module(torch, kind, c, affine, track, momentum, rng):
    cls = getattr(torch.nn, kind)
    m = cls(
        c,
        eps=1e-4,
        momentum=momentum,
        affine=affine,
        track_running_stats=track,
    ).double()
    with torch.no_grad():
        if affine:
            m.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, c)))
            m.bias.copy_(torch.from_numpy(rng.uniform(-1, 1, c)))
        if track:
            m.running_mean.copy_(torch.from_numpy(rng.uniform(-1, 1, c)))
            m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2, c)))
    return m


@pytest.mark.parametrize(
    "kind,shape",
    [
        ("InstanceNorm1d", (3, 4, 9)),
        ("InstanceNorm2d", (3, 4, 5, 6)),
        ("InstanceNorm3d", (2, 4, 3, 4, 5)),
    ],
)
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize(
    "track,momentum", [(False, 0.1), (True, 0.1), (True, 0.3), (True, None)]
)
def test_from_torch(kind, shape, affine, track, momentum):
    torch = pytest.importorskip("torch")
    rng = _rng(10)
    m = _torch_module(torch, kind, shape[1], affine, track, momentum, rng)
    layer = bnfast.from_torch(m)
    assert isinstance(layer, bnfast.InstanceNorm)
    assert layer.affine == affine and layer.track_running_stats == track
    # the dtype of the module's state (float32 for a module without any)
    assert layer.eps == 1e-4
    assert layer.dtype == (np.float64 if affine or track else np.float32)
    assert layer.momentum == (None if momentum is None else 1 - momentum)
    for _ in range(2):
        x = rng.standard_normal(shape) * 2 + 1
        dout = rng.standard_normal(shape)
        for mode in ("train", "test"):
            m.train(mode == "train")
            tx = torch.from_numpy(x).requires_grad_(True)
            ty = m(tx)
            ty.backward(torch.from_numpy(dout))
            out = layer(x, mode=mode)
            np.testing.assert_allclose(
                out, ty.detach().numpy(), rtol=1e-10, atol=1e-10
            )
            dx = layer.backward(dout)
            np.testing.assert_allclose(
                dx, tx.grad.numpy(), rtol=1e-9, atol=1e-9
            )
            if affine:
                np.testing.assert_allclose(
                    layer.grads["gamma"],
                    m.weight.grad.numpy(),
                    rtol=1e-9,
                    atol=1e-9,
                )
                np.testing.assert_allclose(
                    layer.grads["beta"],
                    m.bias.grad.numpy(),
                    rtol=1e-9,
                    atol=1e-9,
                )
                m.weight.grad = m.bias.grad = None
            if track:
                np.testing.assert_allclose(
                    layer.running_mean,
                    m.running_mean.numpy(),
                    rtol=1e-12,
                    atol=1e-14,
                )
                np.testing.assert_allclose(
                    layer.running_var,
                    m.running_var.numpy(),
                    rtol=1e-12,
                    atol=1e-14,
                )


def test_from_torch_float32_and_channels_last_use():
    torch = pytest.importorskip("torch")
    m = torch.nn.InstanceNorm2d(5, affine=True)
    layer = bnfast.from_torch(m)
    assert layer.dtype == np.float32 and layer.axis == 1
    # the state converted, a channels-last layer from it
    last = bnfast.InstanceNorm(5, affine=True, axis=-1)
    last.load_state_dict(layer.state_dict())
    x = _rng(11).standard_normal((2, 5, 6, 7)).astype(np.float32)
    want = m(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        last(np.ascontiguousarray(np.moveaxis(x, 1, -1))),
        np.moveaxis(want, 1, -1),
        rtol=1e-5,
        atol=1e-5,
    )


def test_copy_and_pickle():
    import pickle

    rng = _rng(12)
    x, dout = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    for layer in (
        _affine_layer(4, _rng(13), track_running_stats=True),
        bnfast.InstanceNorm(5, axis=-1, dtype=np.float64),
        bnfast.GroupNorm(5, 5, axis=-1, dtype=np.float64),
    ):
        layer(x)
        for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
            assert repr(other) == repr(layer)
            np.testing.assert_array_equal(
                other.backward(dout), layer.backward(dout)
            )
            for key, value in other.state_dict().items():
                np.testing.assert_array_equal(value, layer.state_dict()[key])
