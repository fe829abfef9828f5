"""Cross-checks against PyTorch's batch norm (skipped without torch).

torch.nn.functional.batch_norm with autograd, float64: outputs, gradients
and the running mean (bnfast momentum = 1 - torch momentum).  PyTorch
updates running_var with the unbiased batch variance, bnfast (as the seeds)
with the biased one; that difference is checked explicitly.
"""

import numpy as np
import pytest

import bnfast

torch = pytest.importorskip("torch")
F = torch.nn.functional
TOL = dict(rtol=1e-10, atol=1e-12)


def torch_grads(fn, x, gamma, beta, dout):
    """PyTorch's output and (dx, dgamma, dbeta) of fn(x, gamma, beta), by
    autograd in float64."""
    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(gamma, requires_grad=True)
    tb = torch.tensor(beta, requires_grad=True)
    out = fn(tx, tg, tb)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), (
        tx.grad.numpy(),
        tg.grad.numpy(),
        tb.grad.numpy(),
    )


def assert_matches(fast_out, fast_grads, torch_out, torch_grads_):
    np.testing.assert_allclose(fast_out, torch_out, **TOL)
    for name, f, t in zip(("dx", "dgamma", "dbeta"), fast_grads, torch_grads_):
        np.testing.assert_allclose(f, t, err_msg=name, **TOL)


@pytest.mark.parametrize("shape", [(7, 5), (64, 33), (2, 1), (300, 4)])
def test_train_forward_backward_match_torch(shape):
    rng = np.random.default_rng(11)
    n, d = shape
    x = rng.standard_normal(shape) * 2 + 3
    gamma, beta = rng.uniform(0.5, 1.5, d), rng.standard_normal(d)
    dout = rng.standard_normal(shape)
    rm, rv = rng.standard_normal(d), rng.uniform(0.5, 2, d)

    p = {
        "mode": "train",
        "momentum": 0.9,
        "eps": 1e-5,
        "running_mean": rm.copy(),
        "running_var": rv.copy(),
    }
    out, cache = bnfast.batchnorm_forward(x, gamma, beta, p)
    dx, dgamma, dbeta = bnfast.batchnorm_backward(dout, cache)

    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(gamma, requires_grad=True)
    tb = torch.tensor(beta, requires_grad=True)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    tout = F.batch_norm(
        tx, trm, trv, tg, tb, training=True, momentum=0.1, eps=1e-5
    )
    tout.backward(torch.tensor(dout))

    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, tout.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
    np.testing.assert_allclose(dgamma, tg.grad.numpy(), **tol)
    np.testing.assert_allclose(dbeta, tb.grad.numpy(), **tol)
    np.testing.assert_allclose(p["running_mean"], trm.numpy(), **tol)
    # torch: unbiased batch variance in the running average
    biased = (p["running_var"] - 0.9 * rv) / 0.1
    np.testing.assert_allclose(
        0.9 * rv + 0.1 * biased * n / max(n - 1, 1), trv.numpy(), rtol=1e-9
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_test_mode_matches_torch(dtype):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((50, 8)).astype(dtype)
    gamma, beta = rng.uniform(0.5, 1.5, 8).astype(dtype), np.zeros(8, dtype)
    rm = rng.standard_normal(8).astype(dtype)
    rv = rng.uniform(0.5, 2, 8).astype(dtype)
    out, _ = bnfast.batchnorm_forward(
        x, gamma, beta, {"mode": "test", "running_mean": rm, "running_var": rv}
    )
    t = F.batch_norm(
        torch.from_numpy(x),
        torch.from_numpy(rm),
        torch.from_numpy(rv),
        torch.from_numpy(gamma),
        torch.from_numpy(beta),
        training=False,
    )
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, t.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "shape,axis",
    [
        ((4, 3, 5, 6), 1),
        ((4, 5, 6, 3), -1),
        ((3, 4, 7), 1),
        ((2, 3, 2, 3, 4), 1),
    ],
)
def test_spatial_matches_torch_batchnorm(shape, axis):
    rng = np.random.default_rng(13)
    x = rng.standard_normal(shape) * 2 + 1
    c = shape[axis]
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    dout = rng.standard_normal(shape)
    p = {"mode": "train", "momentum": 0.9}
    out, cache = bnfast.spatial_batchnorm_forward(x, gamma, beta, p, axis=axis)
    dx, dgamma, dbeta = bnfast.spatial_batchnorm_backward(dout, cache)

    # torch wants channels at dim 1: move channels-last data there
    def to_torch(a):
        return torch.tensor(np.moveaxis(a, axis, 1))

    tx = to_torch(x).requires_grad_(True)
    tg = torch.tensor(gamma, requires_grad=True)
    tb = torch.tensor(beta, requires_grad=True)
    trm, trv = (
        torch.zeros(c, dtype=torch.float64),
        torch.zeros(c, dtype=torch.float64),
    )
    tout = F.batch_norm(tx, trm, trv, tg, tb, training=True, momentum=0.1)
    tout.backward(to_torch(dout))
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        out, np.moveaxis(tout.detach().numpy(), 1, axis), **tol
    )
    np.testing.assert_allclose(
        dx, np.moveaxis(tx.grad.numpy(), 1, axis), **tol
    )
    np.testing.assert_allclose(dgamma, tg.grad.numpy(), **tol)
    np.testing.assert_allclose(dbeta, tb.grad.numpy(), **tol)
    np.testing.assert_allclose(p["running_mean"], trm.numpy(), **tol)


@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 6), (2, 1)])
def test_layernorm_matches_torch(shape):
    rng = np.random.default_rng(14)
    x = rng.standard_normal(shape) * 2 + 3
    fshape = shape[1:]
    gamma, beta = rng.uniform(0.5, 1.5, fshape), rng.standard_normal(fshape)
    dout = rng.standard_normal(shape)
    out, cache = bnfast.layernorm_forward(x, gamma, beta, {"eps": 1e-5})
    assert_matches(
        out,
        bnfast.layernorm_backward(dout, cache),
        *torch_grads(
            lambda tx, tg, tb: F.layer_norm(tx, fshape, tg, tb, eps=1e-5),
            x,
            gamma,
            beta,
            dout,
        ),
    )


@pytest.mark.parametrize(
    "shape,groups",
    [
        ((4, 6, 5, 5), 3),
        ((2, 4, 7), 4),
        ((3, 8, 2, 2), 1),
        ((2, 6, 3, 2, 2), 2),
    ],
)
def test_groupnorm_matches_torch(shape, groups):
    rng = np.random.default_rng(15)
    x = rng.standard_normal(shape) * 2 + 3
    c = shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    dout = rng.standard_normal(shape)
    out, cache = bnfast.spatial_groupnorm_forward(
        x, gamma, beta, groups, {"eps": 1e-5}
    )
    assert_matches(
        out,
        bnfast.spatial_groupnorm_backward(dout, cache),
        *torch_grads(
            lambda tx, tg, tb: F.group_norm(tx, groups, tg, tb, eps=1e-5),
            x,
            gamma,
            beta,
            dout,
        ),
    )


@pytest.mark.parametrize("shape", [(16, 5), (4, 3, 5, 6)])
def test_fused_relu_matches_torch(shape):
    rng = np.random.default_rng(16)
    x = rng.standard_normal(shape) * 2 + 1
    c = shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    dout = rng.standard_normal(shape)
    out, cache = bnfast.spatial_batchnorm_forward(
        x, gamma, beta, {"mode": "train"}, activation="relu"
    )
    assert_matches(
        out,
        bnfast.spatial_batchnorm_backward(dout, cache),
        *torch_grads(
            lambda tx, tg, tb: F.relu(
                F.batch_norm(tx, None, None, tg, tb, training=True)
            ),
            x,
            gamma,
            beta,
            dout,
        ),
    )


@pytest.mark.parametrize("offset", [1e2, 1e3, 1e4])
@pytest.mark.parametrize(
    "family", ["batchnorm", "nchw", "layernorm", "groupnorm"]
)
def test_float32_offset_error_is_a_tenth_of_torchs(family, offset):
    # issue 11: float32 computed in float32 arithmetic, and on data offset
    # by 1e2-1e4 times its spread bnfast's output error stays at most 1/10
    # of PyTorch's (or within 2 ulps of the result where PyTorch is too)
    rng = np.random.default_rng(5)
    shape = {
        "batchnorm": (4096, 24),
        "nchw": (64, 8, 12, 12),
        "layernorm": (64, 2048),
        "groupnorm": (16, 8, 16, 16),
    }[family]
    x32 = (rng.standard_normal(shape) + offset).astype(np.float32)
    c = shape[1]
    g, b = np.full(c, 1.5, np.float32), np.full(c, 0.25, np.float32)

    def run(x):
        t = torch.from_numpy(x)
        tg, tb = (
            torch.from_numpy(g.astype(x.dtype)),
            torch.from_numpy(b.astype(x.dtype)),
        )
        if family in ("batchnorm", "nchw"):
            fast = bnfast.spatial_batchnorm_forward(
                x, g.astype(x.dtype), b.astype(x.dtype), {"mode": "train"}
            )[0]
            ref = F.batch_norm(
                t, None, None, tg, tb, training=True, eps=1e-5
            ).numpy()
        elif family == "layernorm":
            fast = bnfast.layernorm_forward(
                x, g.astype(x.dtype), b.astype(x.dtype), {}
            )[0]
            ref = F.layer_norm(t, (c,), tg, tb, eps=1e-5).numpy()
        else:
            fast = bnfast.spatial_groupnorm_forward(
                x, g.astype(x.dtype), b.astype(x.dtype), 2, {}
            )[0]
            ref = F.group_norm(t, 2, tg, tb, eps=1e-5).numpy()
        return fast, ref

    fast, tref = run(x32)
    oracle, _ = run(x32.astype(np.float64))  # float32 values, float64 math
    err_fast = float(np.max(np.abs(fast - oracle)))
    err_torch = float(np.max(np.abs(tref - oracle)))
    floor = 2 * np.finfo(np.float32).eps * float(np.max(np.abs(oracle)))
    assert err_fast <= max(0.1 * err_torch, floor), (
        err_fast,
        err_torch,
        floor,
    )


@pytest.mark.parametrize("groups,bias", [(1, True), (2, False)])
def test_fold_conv_batchnorm_matches_torch_eval(groups, bias):
    # a Conv2d followed by BatchNorm2d in eval mode, against the folded
    # convolution run by torch itself
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(
        4, 6, 3, groups=groups, bias=bias, dtype=torch.float64
    )
    bn = torch.nn.BatchNorm2d(6, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    bn.eval()
    layer = bnfast.from_torch(bn)
    W = conv.weight.detach().numpy()
    b = conv.bias.detach().numpy() if bias else None
    W2, b2 = bnfast.fold_conv_batchnorm(W, b, layer)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    expected = bn(conv(x)).detach().numpy()
    got = F.conv2d(
        x, torch.tensor(W2), torch.tensor(b2), groups=groups
    ).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
