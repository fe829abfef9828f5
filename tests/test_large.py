"""Batches of more than 2**31 elements: the kernels index with 64-bit
integers throughout.  Opt-in (BNFAST_LARGE_TESTS=1): each test holds two
arrays of 8 GiB (float32), so it needs about 18 GiB of free memory, and
takes a minute or so.

Each input has a known answer: a batch whose samples are copies of a small
batch has the small batch's statistics, and per sample the small batch's
results (dgamma and dbeta scaled by the number of copies)."""

import os

import numpy as np
import pytest

import bnfast

pytestmark = pytest.mark.skipif(
    os.environ.get("BNFAST_LARGE_TESTS") != "1",
    reason="set BNFAST_LARGE_TESTS=1 (needs ~18 GiB of memory)",
)

BIG = 2**31 + 2**12  # elements, past the int32 range


def _check(x, small, axis, gamma, beta, dout_is_out):
    """Forward and backward of x (copies of ``small`` along axis 0) against
    ``small``; the backward's dout is the forward's out (dout_is_out) or x,
    whichever is the real (not broadcast) array of 2**31+ elements."""
    assert x.size > 2**31
    copies = x.shape[0] // small.shape[0]
    p, ps = {"mode": "train"}, {"mode": "train"}
    out, cache = bnfast.spatial_batchnorm_forward(x, gamma, beta, p, axis=axis)
    ref, rcache = bnfast.spatial_batchnorm_forward(
        small, gamma, beta, ps, axis=axis
    )
    for key in ("running_mean", "running_var"):
        np.testing.assert_allclose(p[key], ps[key], rtol=1e-5, atol=1e-6)
    m = small.shape[0]
    for k in (0, 1, x.shape[0] // 2, x.shape[0] - 2, x.shape[0] - 1):
        np.testing.assert_allclose(out[k], ref[k % m], rtol=1e-5, atol=1e-5)
    if dout_is_out:
        dout, rdout = out, ref
    else:
        del out
        dout, rdout = x, small
    dx, dgamma, dbeta = bnfast.spatial_batchnorm_backward(dout, cache)
    rdx, rdgamma, rdbeta = bnfast.spatial_batchnorm_backward(rdout, rcache)
    np.testing.assert_allclose(dbeta, copies * rdbeta, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dgamma, copies * rdgamma, rtol=1e-4, atol=1e-3)
    for k in (0, 1, x.shape[0] // 2, x.shape[0] - 2, x.shape[0] - 1):
        np.testing.assert_allclose(dx[k], rdx[k % m], rtol=1e-4, atol=1e-5)


def test_across_rows_past_2_to_the_31():
    # C-order (N, D): the across-rows kernels, row offsets past 2**31 in
    # x and dout (the same array) and dx
    d = 1024
    rng = np.random.default_rng(0)
    small = rng.standard_normal((2, d)).astype(np.float32)
    x = np.empty((2 * (BIG // (2 * d) + 1), d), np.float32)
    x[0::2] = small[0]
    x[1::2] = small[1]
    _check(
        x,
        small,
        1,
        np.linspace(0.5, 2, d),
        np.linspace(-1, 1, d),
        dout_is_out=False,
    )


def test_along_runs_past_2_to_the_31():
    # NCHW planes: the along-runs kernels, with a broadcast (stride 0)
    # batch for x and run offsets past 2**31 in out (then dout) and dx
    c, hw = 4, 4096
    rng = np.random.default_rng(1)
    small = rng.standard_normal((1, c, hw)).astype(np.float32)
    x = np.broadcast_to(small, (BIG // (c * hw) + 1, c, hw))
    _check(
        x,
        small,
        1,
        np.array([1.0, 2.0, 0.5, 3.0]),
        np.zeros(c),
        dout_is_out=True,
    )
