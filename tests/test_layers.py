"""The stateful layers: against the functional API, state, modes, state
dicts, folding, errors; and step by step against PyTorch when installed."""

import copy
import pickle
import warnings

import numpy as np
import pytest

import bnfast

RNG = np.random.default_rng(40)


def data(shape, scale=2.0, offset=1.0):
    return RNG.standard_normal(shape) * scale + offset


# -- against the functional API ---------------------------------------------


@pytest.mark.parametrize(
    "shape,axis", [((8, 5), 1), ((4, 5, 3, 3), 1), ((4, 3, 3, 5), -1)]
)
def test_batchnorm_layer_matches_functional(shape, axis):
    c = shape[axis]
    bn = bnfast.BatchNorm(
        c,
        axis=axis,
        momentum=0.8,
        dtype=np.float64,
        gamma_init=lambda s, dt: np.linspace(0.5, 1.5, *s),
        beta_init=np.arange(c) / 10,
    )
    x, dout = data(shape), data(shape)
    p = {
        "mode": "train",
        "momentum": 0.8,
        "running_mean": np.zeros(c),
        "running_var": np.ones(c),
    }
    ref, cache = bnfast.spatial_batchnorm_forward(
        x, bn.gamma, bn.beta, p, axis=axis
    )
    np.testing.assert_array_equal(bn(x), ref)
    np.testing.assert_array_equal(bn.running_mean, p["running_mean"])
    np.testing.assert_array_equal(bn.running_var, p["running_var"])
    dx, dgamma, dbeta = bnfast.spatial_batchnorm_backward(dout, cache)
    np.testing.assert_array_equal(bn.backward(dout), dx)
    np.testing.assert_array_equal(bn.grads["gamma"], dgamma)
    np.testing.assert_array_equal(bn.dbeta, dbeta)
    p["mode"] = "test"
    test_ref, _ = bnfast.spatial_batchnorm_forward(
        x, bn.gamma, bn.beta, p, axis=axis
    )
    np.testing.assert_array_equal(bn(x, mode="test"), test_ref)


def test_layernorm_and_groupnorm_layers_match_functional():
    x, dout = data((2, 3, 6)), data((2, 3, 6))
    ln = bnfast.LayerNorm(6, dtype=np.float64)
    ref, cache = bnfast.layernorm_forward(
        x.reshape(6, 6), ln.gamma, ln.beta, {}
    )
    np.testing.assert_array_equal(ln(x), ref.reshape(x.shape))
    dx, dgamma, _ = bnfast.layernorm_backward(dout.reshape(6, 6), cache)
    np.testing.assert_array_equal(ln.backward(dout), dx.reshape(x.shape))
    np.testing.assert_array_equal(ln.grads["gamma"], dgamma)

    x, dout = data((3, 4, 2, 2)), data((3, 4, 2, 2))
    gn = bnfast.GroupNorm(2, 4, dtype=np.float64)
    ref, cache = bnfast.spatial_groupnorm_forward(x, gn.gamma, gn.beta, 2, {})
    np.testing.assert_array_equal(gn(x, mode="test"), ref)
    dx, _, dbeta = bnfast.spatial_groupnorm_backward(dout, cache)
    np.testing.assert_array_equal(gn.backward(dout), dx)
    np.testing.assert_array_equal(gn.grads["beta"], dbeta)


def test_batchnorm_layer_with_fused_relu():
    bn = bnfast.BatchNorm(5, activation="relu", dtype=np.float64)
    x, dout = data((4, 5, 3, 3)), data((4, 5, 3, 3))
    ref, cache = bnfast.spatial_batchnorm_forward(
        x, bn.gamma, bn.beta, {"mode": "train"}, activation="relu"
    )
    np.testing.assert_array_equal(bn(x), ref)
    assert (ref == 0).any()
    np.testing.assert_array_equal(
        bn.backward(dout), bnfast.spatial_batchnorm_backward(dout, cache)[0]
    )
    with pytest.raises(ValueError, match="activation must be one of"):
        bnfast.BatchNorm(5, activation="gelu")


# -- state and modes ---------------------------------------------------------


def test_params_are_live_for_in_place_optimizers():
    bn = bnfast.BatchNorm(3, dtype=np.float64)
    gamma = bn.params["gamma"]
    x = data((10, 3))
    bn(x)
    bn.backward(data((10, 3)))
    for name, p in bn.params.items():
        p -= 0.1 * bn.grads[name]
    assert bn.params["gamma"] is gamma and bn.gamma is gamma
    assert not np.array_equal(gamma, np.ones(3))
    out = bn(x)
    ref, _ = bnfast.spatial_batchnorm_forward(
        x, gamma, bn.beta, {"mode": "train"}
    )
    np.testing.assert_array_equal(out, ref)


def test_test_mode_does_not_touch_running_statistics_or_cache():
    bn = bnfast.BatchNorm(4)
    bn(data((16, 4)).astype(np.float32))
    before = bn.state_dict()
    bn(data((16, 4)).astype(np.float32), mode="test")
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    # its backward is through the frozen statistics (test_frozen_backward)
    bn.backward(np.ones((16, 4), np.float32))
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_momentum_none_is_the_cumulative_average():
    bn = bnfast.BatchNorm(3, momentum=None, dtype=np.float64)
    batches = [data((20, 3)) for _ in range(5)]
    for x in batches:
        bn(x)
    np.testing.assert_allclose(
        bn.running_mean,
        np.mean([x.mean(axis=0) for x in batches], axis=0),
        rtol=1e-13,
    )
    np.testing.assert_allclose(
        bn.running_var,
        np.mean([x.var(axis=0) for x in batches], axis=0),
        rtol=1e-13,
    )
    assert bn.num_batches_tracked == 5


def test_without_running_statistics_both_modes_use_the_batch():
    bn = bnfast.BatchNorm(3, track_running_stats=False, dtype=np.float64)
    x = data((12, 3))
    np.testing.assert_array_equal(bn(x, mode="test"), bn(x))
    assert bn.running_mean is None
    assert set(bn.state_dict()) == {"weight", "bias"}
    with pytest.raises(ValueError, match="fold needs running statistics"):
        bn.fold()
    bn.backward(np.ones((12, 3)))  # test-mode cache is usable too


def test_unbiased_running_var():
    bn = bnfast.BatchNorm(
        2, momentum=0.0, unbiased_running_var=True, dtype=np.float64
    )
    x = data((7, 2))
    bn(x)
    np.testing.assert_allclose(
        bn.running_var, x.var(axis=0, ddof=1), rtol=1e-13
    )


def test_affine_false_has_no_parameters():
    gn = bnfast.GroupNorm(1, 2, affine=False, dtype=np.float64)
    assert gn.params == {} and gn.state_dict() == {}
    gn(data((3, 2, 4)))
    dx = gn.backward(np.ones((3, 2, 4)))
    assert dx.shape == (3, 2, 4) and gn.grads == {}


# -- state dicts -------------------------------------------------------------


def test_state_dict_round_trip_and_in_place_load():
    bn = bnfast.BatchNorm(3, momentum=0.5, dtype=np.float64)
    for _ in range(3):
        bn(data((10, 3)))
    state = bn.state_dict()
    assert set(state) == {
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    }
    assert state["running_mean"] is not bn.running_mean
    other = bnfast.BatchNorm(3, momentum=0.5, dtype=np.float64)
    rm = other.running_mean
    other.load_state_dict(state)
    assert other.running_mean is rm and other.num_batches_tracked == 3
    x = data((6, 3))
    np.testing.assert_array_equal(other(x, mode="test"), bn(x, mode="test"))


@pytest.mark.parametrize(
    "change,exc,message",
    [
        (lambda s: s.pop("bias"), KeyError, "missing ['bias'], unexpected []"),
        (
            lambda s: s.update(extra=np.ones(3)),
            KeyError,
            "unexpected ['extra']",
        ),
        (
            lambda s: s.update(running_var=np.ones(4)),
            ValueError,
            "running_var must have shape (3,), got (4,)",
        ),
        (
            lambda s: s.update(num_batches_tracked=np.ones(2)),
            ValueError,
            "num_batches_tracked must be a scalar",
        ),
    ],
)
def test_load_state_dict_errors_leave_the_layer_unchanged(
    change, exc, message
):
    bn = bnfast.BatchNorm(3, dtype=np.float64)
    bn(data((10, 3)))
    before = bn.state_dict()
    state = {k: v + 1 for k, v in before.items()}
    change(state)
    with pytest.raises(exc) as info:
        bn.load_state_dict(state)
    assert message in str(info.value)
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


# -- folding -----------------------------------------------------------------


def trained_bn(c, **kw):
    bn = bnfast.BatchNorm(c, dtype=np.float64, momentum=0.5, **kw)
    bn.params["gamma"][...] = RNG.uniform(0.5, 1.5, c)
    bn.params["beta"][...] = RNG.standard_normal(c)
    for _ in range(3):
        bn(data((20, c), offset=3.0))
    return bn


def test_fold_equals_test_mode():
    bn = trained_bn(4)
    scale, shift = bn.fold()
    x = data((9, 4))
    np.testing.assert_allclose(
        x * scale + shift, bn(x, mode="test"), rtol=1e-13, atol=1e-13
    )


def test_fold_linear_then_batchnorm():
    bn = trained_bn(3)
    W, b = RNG.standard_normal((5, 3)), RNG.standard_normal(3)
    W2, b2 = bnfast.fold_linear_batchnorm(W, b, bn)
    x = data((8, 5))
    np.testing.assert_allclose(
        x @ W2 + b2, bn(x @ W + b, mode="test"), rtol=1e-12, atol=1e-12
    )


def test_fold_batchnorm_then_linear():
    bn = trained_bn(5)
    W, b = RNG.standard_normal((5, 2)), RNG.standard_normal(2)
    W2, b2 = bnfast.fold_batchnorm_linear(bn, W, b)
    x = data((8, 5), offset=3.0)
    np.testing.assert_allclose(
        x @ W2 + b2, bn(x, mode="test") @ W + b, rtol=1e-12, atol=1e-12
    )


def conv(x, W, b=None, groups=1):
    """A plain 'valid' convolution (cross-correlation, as PyTorch's) of x
    (N, C_in, *spatial) with W (C_out, C_in / groups, *kernel)."""
    nd = W.ndim - 2
    cout, cin_g = W.shape[:2]
    win = np.lib.stride_tricks.sliding_window_view(
        x, W.shape[2:], axis=tuple(range(2, 2 + nd))
    )
    outs = []
    for g in range(groups):
        xs = win[:, g * cin_g : (g + 1) * cin_g]
        ws = W[g * cout // groups : (g + 1) * cout // groups]
        # (N, cin_g, *out, *k) x (cout_g, cin_g, *k) -> (N, cout_g, *out)
        letters = "defghi"[:nd]
        kl = "pqrstu"[:nd]
        outs.append(np.einsum(f"nc{letters}{kl},oc{kl}->no{letters}", xs, ws))
    y = np.concatenate(outs, axis=1)
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nd)
    return y


@pytest.mark.parametrize(
    "kernel,groups,bias",
    [
        ((3, 3), 1, True),
        ((3, 3), 2, True),
        ((1, 1), 1, False),
        ((3,), 1, True),
        ((2, 3, 2), 1, True),
    ],
)
def test_fold_conv_then_batchnorm(kernel, groups, bias):
    cin, cout = 4, 6
    bn = bnfast.BatchNorm(cout, axis=1, dtype=np.float64, momentum=0.5)
    bn.params["gamma"][...] = RNG.uniform(0.5, 1.5, cout)
    bn.params["beta"][...] = RNG.standard_normal(cout)
    for _ in range(3):
        bn(data((5, cout) + (4,) * len(kernel), offset=3.0))
    W = RNG.standard_normal((cout, cin // groups) + kernel)
    b = RNG.standard_normal(cout) if bias else None
    x = data((3, cin) + (6,) * len(kernel))
    W2, b2 = bnfast.fold_conv_batchnorm(W, b, bn)
    assert W2.shape == W.shape and b2.shape == (cout,)
    assert W2.dtype == b2.dtype == np.float64
    np.testing.assert_allclose(
        conv(x, W2, b2, groups),
        bn(conv(x, W, b, groups), mode="test"),
        rtol=1e-12,
        atol=1e-12,
    )


def test_fold_conv_with_relu():
    bn = bnfast.BatchNorm(3, axis=1, dtype=np.float64, activation="relu")
    bn(data((6, 3, 4, 4), offset=1.0))
    W, b = RNG.standard_normal((3, 2, 3, 3)), RNG.standard_normal(3)
    with pytest.raises(ValueError, match="cannot be folded"):
        bnfast.fold_conv_batchnorm(W, b, bn)
    W2, b2 = bnfast.fold_conv_batchnorm(W, b, bn, drop_activation=True)
    x = data((2, 2, 5, 5))
    np.testing.assert_allclose(
        np.maximum(conv(x, W2, b2), 0),
        bn(conv(x, W, b), mode="test"),
        rtol=1e-12,
        atol=1e-12,
    )


def test_fold_conv_errors():
    bn = trained_bn(3)
    W0 = np.ones((3, 2, 3, 3))
    before = (W0.copy(), bn.running_mean.copy(), bn.running_var.copy())
    with pytest.raises(ValueError, match=r"W must be \(3, C_in, \*kernel\)"):
        bnfast.fold_conv_batchnorm(np.ones((4, 2, 3, 3)), None, bn)
    with pytest.raises(ValueError, match=r"W must be \(3, C_in, \*kernel\)"):
        bnfast.fold_conv_batchnorm(np.ones((3, 2)), None, bn)
    with pytest.raises(ValueError, match=r"and b \(3,\) or None"):
        bnfast.fold_conv_batchnorm(W0, np.ones(4), bn)
    with pytest.raises(TypeError, match="bn must be a bnfast.BatchNorm"):
        bnfast.fold_conv_batchnorm(W0, None, bnfast.LayerNorm(3))
    np.testing.assert_array_equal(W0, before[0])
    np.testing.assert_array_equal(bn.running_mean, before[1])
    np.testing.assert_array_equal(bn.running_var, before[2])


def test_fold_shape_errors():
    bn = trained_bn(3)
    with pytest.raises(ValueError, match=r"W must be \(D_in, 3\)"):
        bnfast.fold_linear_batchnorm(np.ones((5, 4)), np.ones(4), bn)
    with pytest.raises(ValueError, match=r"W must be \(3, D_out\)"):
        bnfast.fold_batchnorm_linear(bn, np.ones((4, 2)), np.ones(2))


# -- errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,exc,message",
    [
        (
            lambda: bnfast.BatchNorm(0),
            ValueError,
            "num_features must be a positive",
        ),
        (
            lambda: bnfast.BatchNorm(3, momentum=2.0),
            ValueError,
            "momentum must be in [0, 1] or None",
        ),
        (
            lambda: bnfast.BatchNorm(3, dtype=np.int32),
            TypeError,
            "dtype must be float16, bfloat16, float32 or float64, got int32",
        ),
        (
            lambda: bnfast.BatchNorm(3, gamma_init="twos"),
            ValueError,
            "gamma initializer must be 'ones', 'zeros', a callable or an "
            "array",
        ),
        (
            lambda: bnfast.BatchNorm(3, beta_init=np.zeros(4)),
            ValueError,
            "beta initializer must give shape (3,), got (4,)",
        ),
        (
            lambda: bnfast.GroupNorm(3, 4),
            ValueError,
            "num_groups must divide num_channels",
        ),
    ],
)
def test_constructor_errors(make, exc, message):
    with pytest.raises(exc) as info:
        make()
    assert message in str(info.value)


def test_forward_errors_leave_running_statistics_alone():
    bn = bnfast.BatchNorm(3)
    bn(np.ones((4, 3), np.float32) + np.arange(4.0, dtype=np.float32)[:, None])
    before = bn.state_dict()
    with pytest.raises(
        ValueError, match="x has 4 channels along axis 1, BatchNorm expects 3"
    ):
        bn(np.ones((4, 4)))
    with pytest.raises(
        TypeError, match="x must be a float16, bfloat16, float32 or float64"
    ):
        bn(np.ones((4, 3), int))
    with pytest.raises(ValueError, match="mode must be one of"):
        bn(np.ones((4, 3)), mode="eval")
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(
        ValueError, match="x must end with the normalized shape"
    ):
        bnfast.LayerNorm(5)(np.ones((3, 4)))
    with pytest.raises(ValueError, match="GroupNorm expects 4"):
        bnfast.GroupNorm(2, 4)(np.ones((2, 6, 3)))


# -- PyTorch -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,shape",
    [
        ("BatchNorm1d", (16, 5)),
        ("BatchNorm1d", (8, 5, 7)),
        ("BatchNorm2d", (6, 5, 4, 4)),
    ],
)
def test_ten_training_steps_match_torch(kind, shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(41)
    tbn = getattr(torch.nn, kind)(5, momentum=0.1, dtype=torch.float64)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, 5)))
        tbn.bias.copy_(torch.tensor(rng.standard_normal(5)))
    bn = bnfast.BatchNorm.from_torch(tbn)
    assert bn.momentum == pytest.approx(0.9) and bn.unbiased_running_var
    lr, tol = 0.1, dict(rtol=1e-10, atol=1e-10)
    for step in range(10):
        x = rng.standard_normal(shape) * 2 + 1
        dout = rng.standard_normal(shape)
        tx = torch.tensor(x, requires_grad=True)
        tbn.train()
        tout = tbn(tx)
        tout.backward(torch.tensor(dout))
        out = bn(x)
        dx = bn.backward(dout)
        msg = f"{kind} step {step}"
        np.testing.assert_allclose(
            out, tout.detach().numpy(), err_msg=msg, **tol
        )
        np.testing.assert_allclose(dx, tx.grad.numpy(), err_msg=msg, **tol)
        np.testing.assert_allclose(
            bn.grads["gamma"], tbn.weight.grad.numpy(), err_msg=msg, **tol
        )
        np.testing.assert_allclose(
            bn.grads["beta"], tbn.bias.grad.numpy(), err_msg=msg, **tol
        )
        np.testing.assert_allclose(
            bn.running_mean, tbn.running_mean.numpy(), err_msg=msg, **tol
        )
        np.testing.assert_allclose(
            bn.running_var, tbn.running_var.numpy(), err_msg=msg, **tol
        )
        with torch.no_grad():
            for p in (tbn.weight, tbn.bias):
                p -= lr * p.grad
                p.grad = None
        for name, p in bn.params.items():
            p -= lr * bn.grads[name]
    tbn.eval()
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(
        bn(x, mode="test"), tbn(torch.tensor(x)).detach().numpy(), **tol
    )
    assert bn.num_batches_tracked == int(tbn.num_batches_tracked) == 10


def test_from_torch_and_torch_state_dicts():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ln = torch.nn.LayerNorm((3, 4))
    gn = torch.nn.GroupNorm(2, 6, eps=1e-3)
    bn = torch.nn.BatchNorm2d(6, momentum=None)
    with torch.no_grad():
        for m in (ln, gn, bn):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_()
        bn(torch.randn(8, 6, 3, 3))  # running statistics
    x = (
        np.random.default_rng(42)
        .standard_normal((5, 6, 3, 4))
        .astype(np.float32)
    )
    t = torch.from_numpy(x)
    for module, inp, np_inp in (
        (ln, t[:, 0], x[:, 0]),
        (gn, t, x),
        (bn.eval(), t, x),
    ):
        layer = bnfast.from_torch(module)
        np.testing.assert_allclose(
            layer(np_inp, mode="test"),
            module(inp).detach().numpy(),
            rtol=1e-5,
            atol=1e-5,
        )
    layer = bnfast.BatchNorm.from_torch(bn)
    assert layer.momentum is None and layer.num_batches_tracked == 1
    # tensors load directly
    other = bnfast.BatchNorm(6)
    other.load_state_dict(bn.state_dict())
    np.testing.assert_array_equal(other.running_var, bn.running_var.numpy())
    with pytest.raises(
        TypeError,
        match="from_torch takes a torch.nn "
        "BatchNorm1d/2d/3d, LayerNorm, GroupNorm, RMSNorm or "
        "InstanceNorm1d/2d/3d module, got Linear",
    ):
        bnfast.from_torch(torch.nn.Linear(2, 2))


# -- issue 12: state snapshots ------------------------------------------------


def snapshot(layer):
    """Every attribute of layer: (the object, a deep copy of its value)."""
    return {k: (v, copy.deepcopy(v)) for k, v in vars(layer).items()}


def assert_unchanged(layer, snap):
    """The same attributes, the same objects (live arrays), equal values."""
    assert set(vars(layer)) == set(snap)
    for k, (obj, value) in snap.items():
        now = vars(layer)[k]
        assert now is obj or (np.isscalar(obj) and now == obj), k
        if isinstance(value, dict):
            assert set(now) == set(value), k
            for name in value:
                assert now[name] is obj[name], (k, name)
                np.testing.assert_array_equal(
                    now[name], value[name], err_msg=f"{k}[{name}]"
                )
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(now, value, err_msg=k)


# -- issue 12 item 4: folding a layer with a fused ReLU -----------------------


def test_fold_with_relu_raises_unless_the_activation_is_dropped():
    bn = trained_bn(4, activation="relu")
    x = data((50, 4), offset=3.0)
    expected = bn(x, mode="test")
    assert (expected == 0).any() and (expected > 0).any()
    W, b = RNG.standard_normal((5, 4)), RNG.standard_normal(4)
    xl = data((50, 5))
    expected_l = bn(xl @ W + b, mode="test")
    assert (expected_l == 0).any()
    snap = snapshot(bn)
    for call in (bn.fold, lambda: bnfast.fold_linear_batchnorm(W, b, bn)):
        with pytest.raises(ValueError) as info:
            call()
        assert (
            "activation='relu', which cannot be folded into an affine "
            "map: pass drop_activation=True"
        ) in str(info.value)
    with pytest.raises(ValueError) as info:
        bnfast.fold_batchnorm_linear(
            bn, RNG.standard_normal((4, 2)), np.zeros(2)
        )
    assert (
        "activation='relu': the ReLU between it and the linear layer "
        "cannot be folded into an affine map"
    ) in str(info.value)
    with pytest.raises(TypeError, match="drop_activation must be a bool"):
        bn.fold(drop_activation="yes")
    assert_unchanged(bn, snap)

    # the affine part, with the ReLU applied after, is test mode
    scale, shift = bn.fold(drop_activation=True)
    np.testing.assert_allclose(
        np.maximum(x * scale + shift, 0), expected, rtol=1e-13, atol=1e-13
    )
    W2, b2 = bnfast.fold_linear_batchnorm(W, b, bn, drop_activation=True)
    np.testing.assert_allclose(
        np.maximum(xl @ W2 + b2, 0), expected_l, rtol=1e-12, atol=1e-12
    )
    assert_unchanged(bn, snap)


def test_fold_functions_check_the_batch_norm():
    plain = trained_bn(3)
    # drop_activation is harmless without an activation
    np.testing.assert_array_equal(
        plain.fold(drop_activation=True)[0], plain.fold()[0]
    )
    with pytest.raises(
        TypeError, match="bn must be a bnfast.BatchNorm, got LayerNorm"
    ):
        bnfast.fold_linear_batchnorm(
            np.ones((2, 3)), np.ones(3), bnfast.LayerNorm(3)
        )


# -- issue 12 item 5: load_state_dict validates everything first -------------


def _bad_state(key, value):
    def change(state):
        state[key] = value

    return change


@pytest.mark.parametrize(
    "change,exc,message",
    [
        (
            _bad_state("weight", np.array(["a", "b", "c"])),
            TypeError,
            "weight must hold real numbers, got dtype <U1",
        ),
        (
            _bad_state(
                "running_mean", np.array([1.0, None, 2.0], dtype=object)
            ),
            TypeError,
            "running_mean must hold real numbers, got dtype object",
        ),
        (
            _bad_state("running_var", np.ones(3, complex)),
            TypeError,
            "running_var must hold real numbers, got dtype complex128",
        ),
        (
            _bad_state("running_var", np.full(3, 1e300)),
            ValueError,
            "running_var has finite values outside the range of float32",
        ),
        (
            _bad_state("num_batches_tracked", np.nan),
            ValueError,
            "num_batches_tracked must be a non-negative integer, got nan",
        ),
        (
            _bad_state("num_batches_tracked", 2.5),
            ValueError,
            "num_batches_tracked must be a non-negative integer, got 2.5",
        ),
        (
            _bad_state("num_batches_tracked", -1),
            ValueError,
            "num_batches_tracked must be a non-negative integer, got -1",
        ),
        (
            _bad_state("num_batches_tracked", "3"),
            TypeError,
            "num_batches_tracked must hold real numbers, got dtype <U1",
        ),
        (
            _bad_state("num_batches_tracked", np.True_),
            TypeError,
            "num_batches_tracked must hold real numbers, got dtype bool",
        ),
    ],
)
def test_load_state_dict_validates_every_entry_before_writing(
    change, exc, message
):
    bn = bnfast.BatchNorm(3)  # float32
    bn(data((10, 3)).astype(np.float32))
    state = {k: v + 1 for k, v in bn.state_dict().items()}
    change(state)
    snap = snapshot(bn)
    with pytest.raises(exc) as info:
        bn.load_state_dict(state)
    assert message in str(info.value)
    assert_unchanged(bn, snap)


def test_load_state_dict_takes_a_mapping_and_entries_that_alias_the_layer():
    bn = bnfast.BatchNorm(3, dtype=np.float64)
    bn(data((10, 3)))
    snap = snapshot(bn)
    with pytest.raises(TypeError, match="state must be a mapping"):
        bn.load_state_dict([("weight", np.ones(3))])
    assert_unchanged(bn, snap)
    # entries that are the layer's own live arrays, swapped, and an
    # integral float count: loaded as if copied first
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    state = bn.state_dict()
    state.update(
        running_mean=bn.running_var,
        running_var=bn.running_mean,
        num_batches_tracked=np.float64(7.0),
    )
    bn.load_state_dict(state)
    np.testing.assert_array_equal(bn.running_mean, rv)
    np.testing.assert_array_equal(bn.running_var, rm)
    assert bn.num_batches_tracked == 7
    assert type(bn.num_batches_tracked) is int


# -- issue 12 item 8: constructor checks and repr ----------------------------


@pytest.mark.parametrize(
    "make,exc,message",
    [
        (
            lambda: bnfast.LayerNorm(4.5),
            TypeError,
            "normalized_shape must be an int or a sequence of ints, got float",
        ),
        (
            lambda: bnfast.LayerNorm("4"),
            TypeError,
            "normalized_shape must be an int or a sequence of ints, got str",
        ),
        (
            lambda: bnfast.LayerNorm((4, 2.0)),
            TypeError,
            "normalized_shape must be an int or a sequence of ints, got (4, "
            "2.0)",
        ),
        (
            lambda: bnfast.LayerNorm(np.array(4.0)),
            TypeError,
            "normalized_shape must be an int or a sequence of ints, got array",
        ),
        (
            lambda: bnfast.LayerNorm((4, 0)),
            ValueError,
            "normalized_shape must be positive ints, got (4, 0)",
        ),
        (
            lambda: bnfast.LayerNorm(()),
            ValueError,
            "normalized_shape must not be empty",
        ),
        (
            lambda: bnfast.LayerNorm(4, eps=None),
            TypeError,
            "eps must be a real number, got NoneType",
        ),
        (
            lambda: bnfast.LayerNorm(4, elementwise_affine="yes"),
            TypeError,
            "elementwise_affine must be a bool, got str",
        ),
        (
            lambda: bnfast.BatchNorm(3.0),
            TypeError,
            "num_features must be an int, got float",
        ),
        (
            lambda: bnfast.BatchNorm(True),
            TypeError,
            "num_features must be an int, got bool",
        ),
        (
            lambda: bnfast.BatchNorm(3, eps=-1e-5),
            ValueError,
            "eps must be a finite number >= 0, got -1e-05",
        ),
        (
            lambda: bnfast.BatchNorm(3, eps=float("nan")),
            ValueError,
            "eps must be a finite number >= 0, got nan",
        ),
        (
            lambda: bnfast.BatchNorm(3, eps=float("inf")),
            ValueError,
            "eps must be a finite number >= 0, got inf",
        ),
        (
            lambda: bnfast.BatchNorm(3, eps="1e-5"),
            TypeError,
            "eps must be a real number, got str",
        ),
        (
            lambda: bnfast.BatchNorm(3, momentum="0.9"),
            TypeError,
            "momentum must be a real number in [0, 1] or None, got str",
        ),
        (
            lambda: bnfast.BatchNorm(3, momentum=True),
            TypeError,
            "momentum must be a real number in [0, 1] or None, got bool",
        ),
        (
            lambda: bnfast.BatchNorm(3, momentum=float("nan")),
            ValueError,
            "momentum must be in [0, 1] or None, got nan",
        ),
        (
            lambda: bnfast.BatchNorm(3, momentum=-0.1),
            ValueError,
            "momentum must be in [0, 1] or None, got -0.1",
        ),
        (
            lambda: bnfast.BatchNorm(3, axis=1.0),
            TypeError,
            "axis must be an int, got float",
        ),
        (
            lambda: bnfast.BatchNorm(3, axis=0),
            ValueError,
            "axis must not be 0, the batch axis",
        ),
        (
            lambda: bnfast.BatchNorm(3, affine=1),
            TypeError,
            "affine must be a bool, got int",
        ),
        (
            lambda: bnfast.BatchNorm(3, track_running_stats=None),
            TypeError,
            "track_running_stats must be a bool, got NoneType",
        ),
        (
            lambda: bnfast.BatchNorm(3, activation=1),
            TypeError,
            "activation must be None or 'relu', got int",
        ),
        (
            lambda: bnfast.BatchNorm(3, dtype="banana"),
            TypeError,
            "dtype must be float16, bfloat16, float32 or float64, got "
            "'banana'",
        ),
        (
            lambda: bnfast.BatchNorm(3, dtype=None),
            TypeError,
            "dtype must be float16, bfloat16, float32 or float64, got None",
        ),
        (
            lambda: bnfast.GroupNorm(2.0, 4),
            TypeError,
            "num_groups must be an int, got float",
        ),
        (
            lambda: bnfast.GroupNorm(0, 4),
            ValueError,
            "num_groups must be a positive int, got 0",
        ),
        (
            lambda: bnfast.GroupNorm(2, -4),
            ValueError,
            "num_channels must be a positive int, got -4",
        ),
        (
            lambda: bnfast.GroupNorm(2, 4, eps=-1),
            ValueError,
            "eps must be a finite number >= 0, got -1",
        ),
    ],
)
def test_constructors_check_every_argument(make, exc, message):
    with pytest.raises(exc) as info:
        make()
    assert message in str(info.value)


@pytest.mark.parametrize(
    "make,text",
    [
        (
            lambda: bnfast.BatchNorm(64, activation="relu"),
            "BatchNorm(64, eps=1e-05, momentum=0.9, activation='relu')",
        ),
        (
            lambda: bnfast.BatchNorm(
                8,
                eps=1e-3,
                momentum=None,
                axis=-1,
                affine=False,
                track_running_stats=False,
                unbiased_running_var=True,
                dtype=np.float64,
            ),
            "BatchNorm(8, eps=0.001, momentum=None, axis=-1, affine=False, "
            "dtype='float64', track_running_stats=False, "
            "unbiased_running_var=True)",
        ),
        (lambda: bnfast.LayerNorm(4), "LayerNorm((4,), eps=1e-05)"),
        (
            lambda: bnfast.LayerNorm(
                [3, 4], eps=1e-6, bias=False, dtype="float64"
            ),
            "LayerNorm((3, 4), eps=1e-06, bias=False, dtype='float64')",
        ),
        (
            lambda: bnfast.LayerNorm(4, elementwise_affine=False),
            "LayerNorm((4,), eps=1e-05, elementwise_affine=False)",
        ),
        (lambda: bnfast.GroupNorm(2, 4), "GroupNorm(2, 4, eps=1e-05)"),
        (
            lambda: bnfast.GroupNorm(2, 4, affine=False, eps=0),
            "GroupNorm(2, 4, eps=0.0, affine=False)",
        ),
    ],
)
def test_repr_is_pytorch_like_and_evaluates_to_an_equal_layer(make, text):
    assert repr(make()) == text
    assert repr(eval(text, vars(bnfast))) == text


# -- issue 12 item 11: bias=False, from_torch of bias-free and subclasses ----


def test_layers_without_bias():
    x, dout = data((3, 4, 5)), data((3, 4, 5))
    for layer, plain in (
        (
            bnfast.LayerNorm(5, bias=False, dtype=np.float64),
            bnfast.LayerNorm(5, dtype=np.float64),
        ),
        (
            bnfast.GroupNorm(2, 4, bias=False, dtype=np.float64),
            bnfast.GroupNorm(2, 4, dtype=np.float64),
        ),
        (
            bnfast.BatchNorm(4, bias=False, dtype=np.float64),
            bnfast.BatchNorm(4, dtype=np.float64),
        ),
    ):
        assert set(layer.params) == {"gamma"} and layer.bias is False
        assert set(layer.state_dict()) == set(plain.state_dict()) - {"bias"}
        layer.params["gamma"][...] = plain.params["gamma"][...] = 1.5
        np.testing.assert_array_equal(layer(x), plain(x))
        np.testing.assert_array_equal(
            layer.backward(dout), plain.backward(dout)
        )
        assert set(layer.grads) == {"gamma"}
        np.testing.assert_array_equal(
            layer.grads["gamma"], plain.grads["gamma"]
        )
        with pytest.raises(KeyError, match=r"unexpected \['bias'\]"):
            layer.load_state_dict(plain.state_dict())
        assert not layer.beta.flags.writeable  # the shared zeros


def test_from_torch_without_bias_and_of_subclasses():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)

    class MyLayerNorm(torch.nn.LayerNorm):
        pass

    class MyBatchNorm(torch.nn.BatchNorm2d):
        def extra(self):
            return 1

    # each normalizes x of shape (5, 6, 3, 4)
    modules = [
        torch.nn.LayerNorm((3, 4), bias=False),
        torch.nn.GroupNorm(2, 6, bias=False),
        torch.nn.BatchNorm2d(6, bias=False, momentum=0.2),
        MyLayerNorm(4),
        MyBatchNorm(6),
    ]
    x = np.random.default_rng(43).standard_normal((5, 6, 3, 4))
    dout = np.random.default_rng(44).standard_normal((5, 6, 3, 4))
    for module in modules:
        module.double()
        with torch.no_grad():
            module.weight.uniform_(0.5, 1.5)
            if module.bias is not None:
                module.bias.normal_()
            if isinstance(module, torch.nn.BatchNorm2d):
                module(torch.randn(8, 6, 3, 4, dtype=torch.float64))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning for these
            layer = bnfast.from_torch(module)
        assert layer.bias is (module.bias is not None)
        assert set(layer.state_dict()) == set(module.state_dict())
        module.train()
        tx = torch.tensor(x, requires_grad=True)
        tout = module(tx)
        tout.backward(torch.tensor(dout))
        msg = repr(module)
        np.testing.assert_allclose(
            layer(x),
            tout.detach().numpy(),
            rtol=1e-10,
            atol=1e-10,
            err_msg=msg,
        )
        np.testing.assert_allclose(
            layer.backward(dout),
            tx.grad.numpy(),
            rtol=1e-10,
            atol=1e-10,
            err_msg=msg,
        )
        np.testing.assert_allclose(
            layer.grads["gamma"],
            module.weight.grad.numpy(),
            rtol=1e-10,
            atol=1e-10,
            err_msg=msg,
        )
        assert ("beta" in layer.grads) is (module.bias is not None)
        module.eval()
        np.testing.assert_allclose(
            layer(x, mode="test"),
            module(torch.tensor(x)).detach().numpy(),
            rtol=1e-10,
            atol=1e-10,
            err_msg=msg,
        )


def test_from_torch_warns_on_an_overridden_forward():
    torch = pytest.importorskip("torch")

    class Shifted(torch.nn.GroupNorm):
        def forward(self, x):
            return super().forward(x) + 1

    with pytest.warns(
        UserWarning,
        match="Shifted overrides forward; "
        "from_torch converts it as a torch.nn.GroupNorm, "
        "which may not compute the same",
    ):
        layer = bnfast.from_torch(Shifted(2, 4))
    assert isinstance(layer, bnfast.GroupNorm)


def test_from_torch_refuses_a_same_named_class_that_is_not_torchs():
    class LayerNorm:  # same name, not torch's
        normalized_shape, eps = (4,), 1e-5
        elementwise_affine, bias = False, None

        def state_dict(self):
            return {}

    with pytest.raises(
        TypeError,
        match="from_torch takes a torch.nn "
        "BatchNorm1d/2d/3d, LayerNorm, GroupNorm, RMSNorm or "
        "InstanceNorm1d/2d/3d module, got LayerNorm",
    ):
        bnfast.from_torch(LayerNorm())


def test_layers_copy_and_pickle_with_their_state():
    x, dout = data((6, 4, 3)), data((6, 4, 3))
    for layer in (
        bnfast.BatchNorm(4, dtype=np.float64, activation="relu"),
        bnfast.LayerNorm(3, bias=False, dtype=np.float64),
        bnfast.GroupNorm(2, 4, dtype=np.float64),
    ):
        layer(x)
        for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
            assert repr(other) == repr(layer)
            assert other.params["gamma"] is not layer.params["gamma"]
            np.testing.assert_array_equal(
                other.backward(dout), layer.backward(dout)
            )
            gamma = layer.params["gamma"].copy()
            other.params["gamma"] += 1  # independent of the original
            np.testing.assert_array_equal(layer.params["gamma"], gamma)
