"""The backward through 'test' mode (frozen statistics, issue 13 item 4):
the 'test' forward's cache taken by batchnorm_backward /
spatial_batchnorm_backward, against PyTorch's autograd in eval mode
(skipped without torch), with out=, through the BatchNorm layer, and its
errors.  Against the reference twin on the shared generator and by
finite differences: test_equivalence.py and test_finite_differences.py
(the batch norm families' backward_modes include 'test')."""

import numpy as np
import pytest

import bnfast
from bnfast import distributed, reference

from arrays import make_case

EPS = 1e-5
ACTIVATIONS = pytest.mark.parametrize("activation", [None, "relu"])


def forward(module, case, activation, x=None):
    p = {
        "mode": "test",
        "eps": EPS,
        "momentum": 0.8,
        "running_mean": case.running_mean.copy(),
        "running_var": case.running_var.copy(),
    }
    x = case.x if x is None else x
    with np.errstate(invalid="ignore", over="ignore"):
        if case.axis is None:
            return module.batchnorm_forward(
                x, case.gamma, case.beta, p, activation=activation
            )
        return module.spatial_batchnorm_forward(
            x, case.gamma, case.beta, p, axis=case.axis, activation=activation
        )


def test_frozen_dx_is_the_scaled_dout():
    # no terms through the batch's statistics: dx = dout * gamma / std
    rng = np.random.default_rng(1)
    x, dout = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    gamma, rv = rng.uniform(0.5, 1.5, 4), rng.uniform(0.5, 2, 4)
    p = {
        "mode": "test",
        "running_mean": rng.standard_normal(4),
        "running_var": rv,
        "eps": 0.0,
    }
    _, cache = bnfast.batchnorm_forward(x, gamma, np.zeros(4), p)
    dx, _, dbeta = bnfast.batchnorm_backward(dout, cache)
    np.testing.assert_allclose(dx, dout * gamma / np.sqrt(rv), rtol=1e-15)
    np.testing.assert_array_equal(dbeta, dout.sum(axis=0))


def test_frozen_inf_nan_x_leave_dx_finite():
    # dx does not involve x (without relu): an Inf or NaN in x gives a
    # finite dx there, dgamma of that channel not finite, as the reference
    x = np.array([[1.0, np.inf], [np.nan, 2.0], [0.5, -1.0]])
    dout = np.ones_like(x)
    p = {
        "mode": "test",
        "running_mean": np.zeros(2),
        "running_var": np.ones(2),
    }
    for dtype in (np.float32, np.float64):
        _, cache = bnfast.batchnorm_forward(
            x.astype(dtype), np.ones(2), np.zeros(2), dict(p)
        )
        dx, dgamma, dbeta = bnfast.batchnorm_backward(dout, cache)
        assert np.isfinite(dx).all()
        assert not np.isfinite(dgamma).any()
        np.testing.assert_array_equal(dbeta, [3.0, 3.0])


def test_frozen_cache_owns_its_statistics():
    # the cache keeps float64 copies of the running statistics used: a
    # later change of bn_param's arrays (in place, or a 'train' step)
    # does not change its backward
    rng = np.random.default_rng(2)
    x, dout = rng.standard_normal((8, 3)), rng.standard_normal((8, 3))
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    gamma, beta = np.ones(3), np.zeros(3)
    p = {"mode": "test", "running_mean": rm, "running_var": rv}
    _, cache = bnfast.batchnorm_forward(x, gamma, beta, p)
    before = bnfast.batchnorm_backward(dout, cache)
    rm += 5.0
    rv *= 3.0
    p["mode"] = "train"
    bnfast.batchnorm_forward(x, gamma, beta, p)
    after = bnfast.batchnorm_backward(dout, cache)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert cache.mean.dtype == np.float64
    assert not np.shares_memory(cache.mean, rm)


def test_frozen_float32_statistics():
    # float32 running statistics, float32 x: invstd as the forward's
    x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    p = {
        "mode": "test",
        "running_mean": np.full(4, 0.5, np.float32),
        "running_var": np.full(4, 2.0, np.float32),
    }
    _, cache = bnfast.batchnorm_forward(
        x, np.ones(4, np.float32), np.zeros(4, np.float32), p
    )
    np.testing.assert_array_equal(
        cache.invstd, 1.0 / np.sqrt(np.float64(np.float32(2.0)) + 1e-5)
    )
    dx, dgamma, dbeta = bnfast.batchnorm_backward(np.ones_like(x), cache)
    assert dx.dtype == dgamma.dtype == dbeta.dtype == np.float32


@pytest.mark.parametrize("spatial", [False, True])
def test_frozen_out(spatial):
    case = make_case(
        (6, 3, 4, 2), np.float64, "C", "plain", 7, axis=1 if spatial else None
    )
    _, cache = forward(bnfast, case, "relu")
    back = (
        bnfast.spatial_batchnorm_backward
        if spatial
        else bnfast.batchnorm_backward
    )
    want = back(case.dout, cache)
    out = np.empty_like(case.x)
    got = back(case.dout, cache, out=out)
    assert got[0] is out
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    # the same overlap rules as after 'train': dout, the cached x, and
    # beta (read for the ReLU's mask)
    with pytest.raises(ValueError, match="dout"):
        back(case.dout, cache, out=case.dout)
    with pytest.raises(ValueError, match="cached x"):
        back(case.dout, cache, out=case.x)
    before = case.dout.copy()
    with pytest.raises(ValueError, match="shape"):
        back(case.dout, cache, out=np.empty((2, 2)))
    np.testing.assert_array_equal(case.dout, before)


def test_frozen_cache_errors():
    x = np.random.default_rng(4).standard_normal((4, 3))
    _, cache = bnfast.batchnorm_forward(
        x,
        np.ones(3),
        np.zeros(3),
        {
            "mode": "test",
            "running_mean": np.zeros(3),
            "running_var": np.ones(3),
        },
    )
    with pytest.raises(ValueError, match="shape"):
        bnfast.batchnorm_backward(np.ones((4, 2)), cache)
    with pytest.raises(TypeError, match="cache"):
        bnfast.layernorm_backward(np.ones((4, 3)), cache)
    with pytest.raises(TypeError, match="cache"):
        distributed.sync_batchnorm_backward(np.ones((4, 3)), cache)
    assert cache.frozen and not cache.relu


@ACTIVATIONS
@pytest.mark.parametrize("axis", [1, -1])
def test_layer_backward_after_test_forward(axis, activation):
    rng = np.random.default_rng(6)
    shape = (4, 3, 5) if axis == 1 else (4, 5, 3)
    bn = bnfast.BatchNorm(
        3, axis=axis, dtype=np.float64, activation=activation
    )
    bn(rng.standard_normal(shape))  # a 'train' step: running statistics
    x, dout = rng.standard_normal(shape), rng.standard_normal(shape)
    out = bn(x, mode="test")
    dx = bn.backward(dout)
    p = {
        "mode": "test",
        "eps": bn.eps,
        "running_mean": bn.running_mean,
        "running_var": bn.running_var,
    }
    rout, rcache = reference.spatial_batchnorm_forward(
        x, bn.gamma, bn.beta, p, axis=axis, activation=activation
    )
    rdx, rdg, rdb = reference.spatial_batchnorm_backward(dout, rcache)
    np.testing.assert_allclose(out, rout, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dx, rdx, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(bn.grads["gamma"], rdg, rtol=1e-12)
    np.testing.assert_allclose(bn.grads["beta"], rdb, rtol=1e-12)
    # a 'train' step after the 'test' forward does not change its cache's
    # statistics, but replaces the cache: backward is then of that step
    bn(x)
    dx_train = bn.backward(dout)
    assert not np.allclose(dx_train, dx)


def test_layer_backward_before_any_forward():
    with pytest.raises(RuntimeError, match="forward"):
        bnfast.BatchNorm(3).backward(np.ones((2, 3)))


@ACTIVATIONS
@pytest.mark.parametrize(
    "shape,axis", [((7, 5), None), ((6, 3, 4, 5), 1), ((6, 4, 5, 3), -1)]
)
def test_frozen_matches_torch_eval(shape, axis, activation):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(12)
    d = shape[1] if axis in (None, 1) else shape[-1]
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = rng.uniform(0.5, 1.5, d), rng.standard_normal(d)
    rm, rv = rng.standard_normal(d), rng.uniform(0.5, 2, d)
    dout = rng.standard_normal(shape)
    p = {
        "mode": "test",
        "eps": 1e-5,
        "running_mean": rm.copy(),
        "running_var": rv.copy(),
    }
    if axis is None:
        out, cache = bnfast.batchnorm_forward(
            x, gamma, beta, p, activation=activation
        )
        dx, dgamma, dbeta = bnfast.batchnorm_backward(dout, cache)
    else:
        out, cache = bnfast.spatial_batchnorm_forward(
            x, gamma, beta, p, axis=axis, activation=activation
        )
        dx, dgamma, dbeta = bnfast.spatial_batchnorm_backward(dout, cache)

    tx = torch.tensor(
        np.moveaxis(x, -1, 1) if axis == -1 else x, requires_grad=True
    )
    tg = torch.tensor(gamma, requires_grad=True)
    tb = torch.tensor(beta, requires_grad=True)
    tout = F.batch_norm(
        tx,
        torch.tensor(rm),
        torch.tensor(rv),
        tg,
        tb,
        training=False,
        eps=1e-5,
    )
    if activation == "relu":
        tout = F.relu(tout)
    tdout = torch.tensor(np.moveaxis(dout, -1, 1) if axis == -1 else dout)
    tout.backward(tdout)
    tdx = tx.grad.numpy()
    tres = tout.detach().numpy()
    if axis == -1:
        tdx, tres = np.moveaxis(tdx, 1, -1), np.moveaxis(tres, 1, -1)
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, tres, **tol)
    np.testing.assert_allclose(dx, tdx, err_msg="dx", **tol)
    np.testing.assert_allclose(
        dgamma, tg.grad.numpy(), err_msg="dgamma", **tol
    )
    np.testing.assert_allclose(dbeta, tb.grad.numpy(), err_msg="dbeta", **tol)
    np.testing.assert_array_equal(p["running_mean"], rm)


@pytest.mark.parametrize("reduce_param_grads", [False, True])
def test_sync_layer_backward_after_test_forward(reduce_param_grads):
    from fakempi import run_ranks

    rng = np.random.default_rng(8)
    xs = [rng.standard_normal((5, 3)) for _ in range(2)]
    d = [rng.standard_normal((5, 3)) for _ in range(2)]

    def fn(comm):
        r = comm.Get_rank()
        layer = distributed.SyncBatchNorm(
            3, comm, dtype=np.float64, reduce_param_grads=reduce_param_grads
        )
        layer(xs[r])
        plain = bnfast.BatchNorm(3, dtype=np.float64)
        plain.load_state_dict(layer.state_dict())
        layer(xs[r], mode="test")
        plain(xs[r], mode="test")
        dx = layer.backward(d[r])
        np.testing.assert_array_equal(dx, plain.backward(d[r]))
        return layer.grads["gamma"], plain.grads["gamma"]

    results, _ = run_ranks(2, fn)
    (g0, l0), (g1, l1) = results
    if reduce_param_grads:
        np.testing.assert_array_equal(g0, g1)
        np.testing.assert_allclose(g0, l0 + l1, rtol=1e-12)
    else:
        np.testing.assert_array_equal(g0, l0)
        np.testing.assert_array_equal(g1, l1)


def test_sync_frozen_backward_with_an_empty_shard():
    from fakempi import run_ranks

    rng = np.random.default_rng(9)
    xs = [rng.standard_normal((6, 3)), np.empty((0, 3))]
    ds = [rng.standard_normal((6, 3)), np.empty((0, 3))]
    p0 = {
        "mode": "test",
        "running_mean": np.full(3, 0.5),
        "running_var": np.full(3, 2.0),
    }

    def fn(comm):
        r = comm.Get_rank()
        _, cache = distributed.sync_batchnorm_forward(
            xs[r], np.ones(3), np.zeros(3), dict(p0), comm
        )
        return distributed.sync_batchnorm_backward(
            ds[r], cache, reduce_param_grads=True
        )

    results, _ = run_ranks(2, fn)
    _, local = bnfast.batchnorm_forward(
        xs[0], np.ones(3), np.zeros(3), dict(p0)
    )
    want = bnfast.batchnorm_backward(ds[0], local)
    np.testing.assert_allclose(results[0][0], want[0], rtol=1e-15)
    assert results[1][0].shape == (0, 3)
    for r in range(2):
        np.testing.assert_allclose(results[r][1], want[1], rtol=1e-13)
        np.testing.assert_allclose(results[r][2], want[2], rtol=1e-13)


@ACTIVATIONS
@pytest.mark.parametrize(
    "given",
    [(False, False), (True, False), (False, True)],
    ids=["no-affine", "gamma-only", "beta-only"],
)
@pytest.mark.parametrize("axis", [None, 1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_frozen_backward_affine_free(axis, dtype, given, activation):
    # gamma=None / beta=None with frozen statistics: None gradients for the
    # parameters not given, the rest as the reference's
    rng = np.random.default_rng(7)
    shape = (5, 3) if axis is None else (4, 3, 2, 3)
    c = 3
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    gamma = rng.standard_normal(c).astype(dtype) if given[0] else None
    beta = rng.standard_normal(c).astype(dtype) if given[1] else None
    results = []
    for module in (bnfast, reference):
        p = {
            "mode": "test",
            "running_mean": np.full(c, 0.25, dtype),
            "running_var": np.full(c, 1.5, dtype),
        }
        if axis is None:
            out, cache = module.batchnorm_forward(
                x, gamma, beta, p, activation=activation
            )
            grads = module.batchnorm_backward(dout, cache)
        else:
            out, cache = module.spatial_batchnorm_forward(
                x, gamma, beta, p, axis=axis, activation=activation
            )
            grads = module.spatial_batchnorm_backward(dout, cache)
        results.append((out, *grads))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for fast, ref in zip(*results):
        assert (fast is None) == (ref is None)
        if fast is not None:
            assert fast.dtype == ref.dtype and fast.shape == ref.shape
            np.testing.assert_allclose(fast, ref, rtol=tol, atol=tol)
    assert [g is None for g in results[0][2:]] == [not g for g in given]
