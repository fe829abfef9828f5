"""bnfast's batch norm functions against their twins in bnfast.reference on
the shared generator: batchnorm_* on (N, ...) batches, spatial_batchnorm_*
on every layout and channel axis."""
import numpy as np
import pytest

import bnfast
from bnfast import reference

from arrays import assert_as_accurate, cases, spatial_cases, sum_scale

CASES = cases() + spatial_cases()
MOMENTUM = 0.8
EPS = 1e-5


def params(case, mode):
    return {"mode": mode, "eps": EPS, "momentum": MOMENTUM,
            "running_mean": case.running_mean.copy(),
            "running_var": case.running_var.copy()}


def run(module, case, mode, activation=None):
    p = params(case, mode)
    # the NumPy reference warns on the NaN and Inf cases; bnfast does not
    with np.errstate(invalid="ignore", over="ignore"):
        if case.axis is None:
            out, cache = module.batchnorm_forward(
                case.x, case.gamma, case.beta, p, activation=activation)
        else:
            out, cache = module.spatial_batchnorm_forward(
                case.x, case.gamma, case.beta, p, axis=case.axis,
                activation=activation)
    return out, cache, p


ACTIVATIONS = pytest.mark.parametrize("activation", [None, "relu"])


BACKWARD = [(case, name) for case in CASES
            for name in (("batchnorm_backward", "batchnorm_backward_alt")
                         if case.axis is None
                         else ("spatial_batchnorm_backward",))]


@ACTIVATIONS
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_train(case, activation):
    out, _, p = run(bnfast, case, "train", activation)
    ref, _, rp = run(reference, case, "train", activation)
    wide, _, wp = run(reference, case.widened(), "train", activation)
    assert_as_accurate(f"batchnorm_forward train out ({activation})", case,
                       out, ref, wide)
    for key in ("running_mean", "running_var"):
        assert_as_accurate(f"batchnorm_forward train {key}", case, p[key],
                           rp[key], wp[key])


@ACTIVATIONS
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_test(case, activation):
    out, cache, p = run(bnfast, case, "test", activation)
    ref, _, rp = run(reference, case, "test", activation)
    wide, _, _ = run(reference, case.widened(), "test", activation)
    assert isinstance(cache, bnfast.functional.BatchNormCache) and cache.frozen
    assert_as_accurate(f"batchnorm_forward test out ({activation})", case,
                       out, ref, wide)
    for key in ("running_mean", "running_var"):
        np.testing.assert_array_equal(p[key], case.__dict__[key])


@ACTIVATIONS
@pytest.mark.parametrize("case,backward", BACKWARD,
                         ids=[f"{c.id}-{n}" for c, n in BACKWARD])
def test_backward(case, backward, activation):
    _, cache, _ = run(bnfast, case, "train", activation)
    _, rcache, _ = run(reference, case, "train", activation)
    wcase = case.widened()
    _, wcache, _ = run(reference, wcase, "train", activation)
    fast = getattr(bnfast, backward)(case.dout, cache)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = getattr(reference, backward)(case.dout, rcache)
        wide = getattr(reference, backward)(wcase.dout, wcache)
    # dx = gamma/std * (dout - mean(dout) - x_hat * mean(dout * x_hat)) is
    # a cancellation of terms of size |gamma * dout / std|, whose x_hat
    # carries the rounding of x - mean: a relative error of eps*|mean|/std.
    bn_cache = wcache if case.axis is None else wcache[0]
    _, xhat, mean, var, g, *_, mask, _ = bn_cache
    std = np.sqrt(var + EPS)
    dout = (wcase.dout if case.axis is None
            else np.moveaxis(wcase.dout, case.axis, -1))
    dout = dout.reshape(-1, len(g))
    terms = np.abs(g * dout / std)
    terms = terms * (1 + np.abs(mean) / std)
    dx_scale = float(np.nanmax(terms[np.isfinite(terms)], initial=0.0))
    # dbeta = sum g, dgamma = sum g * xhat per channel (g = dout, masked by
    # the ReLU): sums whose terms carry xhat's rounding as dx's do
    grad = dout if mask is None else dout * mask.reshape(dout.shape)
    with np.errstate(invalid="ignore"):
        dg_terms = grad * (np.abs(xhat) + np.abs(mean) / std)
    scales = (dx_scale, sum_scale(dg_terms), sum_scale(grad))
    for name, f, r, w, s in zip(("dx", "dgamma", "dbeta"), fast, ref, wide,
                                scales):
        assert_as_accurate(f"{backward} {name} ({activation})", case, f, r,
                           w, scale=s)


LN_CASES = [case for case in CASES if case.axis is None]


def run_ln(module, case):
    with np.errstate(invalid="ignore", over="ignore"):
        return module.layernorm_forward(case.x, case.gamma, case.beta,
                                        {"eps": EPS})


@pytest.mark.parametrize("case", LN_CASES, ids=lambda c: c.id)
def test_layernorm_forward(case):
    out, _ = run_ln(bnfast, case)
    ref, _ = run_ln(reference, case)
    wide, _ = run_ln(reference, case.widened())
    assert_as_accurate("layernorm_forward out", case, out, ref, wide)


@pytest.mark.parametrize("case", LN_CASES, ids=lambda c: c.id)
def test_layernorm_backward(case):
    _, cache = run_ln(bnfast, case)
    _, rcache = run_ln(reference, case)
    wcase = case.widened()
    _, wcache = run_ln(reference, wcase)
    fast = bnfast.layernorm_backward(case.dout, cache)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = reference.layernorm_backward(case.dout, rcache)
        wide = reference.layernorm_backward(wcase.dout, wcache)
    # as for batch norm, per sample: terms |gamma * dout / std| carrying the
    # rounding of x - mean
    _, xhat, mean, var, g, *_ = wcache
    std = np.sqrt(var + EPS)
    dout = wcase.dout.reshape(len(std), -1)
    terms = np.abs(g * dout / std)
    terms = terms * (1 + np.abs(mean) / std)
    dx_scale = float(np.nanmax(terms[np.isfinite(terms)], initial=0.0))
    # dgamma, dbeta: sums over the rows of dout * xhat and dout
    with np.errstate(invalid="ignore"):
        dg_terms = dout * (np.abs(xhat) + np.abs(mean) / std)
    for name, f, r, w, s in zip(("dx", "dgamma", "dbeta"), fast, ref, wide,
                                (dx_scale, sum_scale(dg_terms),
                                 sum_scale(dout))):
        assert_as_accurate(f"layernorm_backward {name}", case, f, r, w,
                           scale=s)


def _group_counts(c):
    return sorted({1, c} | {g for g in range(2, c) if c % g == 0})[:3]


GN_CASES = [(case, g) for case in CASES
            if case.axis == 1 for g in _group_counts(case.x.shape[1])]


def run_gn(module, case, groups):
    with np.errstate(invalid="ignore", over="ignore"):
        return module.spatial_groupnorm_forward(case.x, case.gamma, case.beta,
                                                groups, {"eps": EPS})


@pytest.mark.parametrize("case,groups", GN_CASES,
                         ids=[f"{c.id}-G{g}" for c, g in GN_CASES])
def test_groupnorm(case, groups):
    out, cache = run_gn(bnfast, case, groups)
    ref, rcache = run_gn(reference, case, groups)
    wcase = case.widened()
    wide, wcache = run_gn(reference, wcase, groups)
    assert_as_accurate("spatial_groupnorm_forward out", case, out, ref, wide)

    fast = bnfast.spatial_groupnorm_backward(case.dout, cache)
    with np.errstate(invalid="ignore", over="ignore"):
        refg = reference.spatial_groupnorm_backward(case.dout, rcache)
        wideg = reference.spatial_groupnorm_backward(wcase.dout, wcache)
    # terms |gamma * dout / std| per group, carrying the rounding of x - mean
    n = case.x.shape[0]
    _, var, g, *_ = wcache
    std = np.sqrt(var + EPS)
    xg = wcase.x.reshape(n, groups, -1)
    with np.errstate(invalid="ignore"):
        mean = xg.mean(axis=2, keepdims=True)
        terms = np.abs((wcase.dout * g).reshape(n, groups, -1) / std)
        terms = terms * (1 + np.abs(mean) / std)
    dx_scale = float(np.nanmax(terms[np.isfinite(terms)], initial=0.0))
    # dgamma = sum dout * (x - mean) / std per channel over samples whose
    # group means differ: each carries its own rounding of the mean
    with np.errstate(invalid="ignore"):
        xhat = (xg - mean) / std
        per = np.abs(wcase.dout.reshape(n, groups, -1)) * (
            np.abs(xhat) + np.abs(mean) / std)
        dg_terms = per.reshape(wcase.dout.shape).reshape(
            n, case.x.shape[1], -1).sum(axis=(0, 2))
    dg_scale = float(np.nanmax(dg_terms[np.isfinite(dg_terms)], initial=0.0))
    db_scale = sum_scale(np.moveaxis(wcase.dout, 1, 0).reshape(
        case.x.shape[1], -1), axis=1)
    for name, f, r, w, s in zip(("dx", "dgamma", "dbeta"), fast, refg, wideg,
                                (dx_scale, dg_scale, db_scale)):
        assert_as_accurate(f"spatial_groupnorm_backward {name} G={groups}",
                           case, f, r, w, scale=s)
