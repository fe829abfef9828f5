"""What group norm promises beyond the generic tests over the registry of
families (tests/families.py: equivalence, finite differences, out=,
errors, threads): exact constant groups, groups of one, accurate
parameter gradients over long batches and mixed-mean groups."""

import numpy as np
import pytest

import bnfast
from bnfast import reference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_groupnorm_constant_group_and_groups_of_one(dtype):
    rng = np.random.default_rng(24)
    x = rng.standard_normal((3, 4, 5, 5)).astype(dtype)
    x[1, 2:] = 1e4 + 0.5  # sample 1, group 1 (channels 2, 3)
    beta = np.array([0.1, -0.2, 0.3, -0.4], dtype)
    out, cache = bnfast.spatial_groupnorm_forward(
        x, np.full(4, 1.5, dtype), beta, 2, {}
    )
    assert np.all(out[1, 2] == beta[2]) and np.all(out[1, 3] == beta[3])
    dx, _, _ = bnfast.spatial_groupnorm_backward(np.ones_like(x), cache)
    assert np.all(dx[1, 2:] == 0.0)
    # groups of one element: instance norm of (N, C) data normalizes nothing
    x2 = rng.standard_normal((4, 3)).astype(dtype)
    out, cache = bnfast.spatial_groupnorm_forward(
        x2, np.ones(3, dtype), beta[:3], 3, {}
    )
    assert np.all(out == beta[:3])
    dx, _, _ = bnfast.spatial_groupnorm_backward(
        rng.standard_normal((4, 3)).astype(dtype), cache
    )
    assert np.all(dx == 0.0)


@pytest.mark.parametrize("threads", [1, 2])
def test_groupnorm_parameter_gradients_over_a_long_batch(threads):
    # dgamma and dbeta sum over the samples in blocks (a cascade): one
    # running sum over 32769 samples was off by ~2.2e-8 here, 3000x the
    # reference's error (found by the long hypothesis profile)
    n = 32769
    x = np.random.default_rng(0).standard_normal((n, 1))
    dout = np.full((n, 1), 1.1)
    old = bnfast._kernels._thread_state()[0] or None  # None: the default
    bnfast.set_num_threads(threads)
    try:
        _, cache = bnfast.spatial_groupnorm_forward(
            x, np.ones(1), np.zeros(1), 1, {}
        )
        _, _, dbeta = bnfast.spatial_groupnorm_backward(dout, cache)
    finally:
        bnfast.set_num_threads(old)
    exact = np.sum(np.full(n, 1.1, np.longdouble))
    assert abs(dbeta[0] - exact) < 32 * np.finfo(float).eps * 1.1 * n


def test_groupnorm_with_a_constant_channel_in_the_group():
    # A group whose channels have different means (here a constant one
    # after a random one, 4097 elements each: past one summation block):
    # each block is summed around its own mean when the running one is far
    # from it.  Before, 10-45x the reference's error (long hypothesis
    # profile); now within 2x.
    rng = np.random.default_rng(1)
    for _ in range(10):
        x = rng.standard_normal((4, 2, 4097))
        x[:, 1] = rng.standard_normal() * 3
        g, b = np.ones(2), np.zeros(2)
        out, _ = bnfast.spatial_groupnorm_forward(x, g, b, 1, {})
        ref, _ = reference.spatial_groupnorm_forward(x, g, b, 1, {})
        wide, _ = reference.spatial_groupnorm_forward(
            x.astype(np.longdouble), g, b, 1, {}
        )
        assert (
            np.abs(out - wide).max()
            <= 2 * np.abs(ref - wide).max() + 4 * np.finfo(float).eps
        )
