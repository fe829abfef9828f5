"""Accuracy at rounding level (issue 12): the cases the long hypothesis
profile found, as deterministic tests, and the summation bounds behind them
measured against exact results.

float64 sums (dbeta, dgamma, the statistics' block sums along runs) are
summed in lanes of 16 (pairs of) elements, the lanes pairwise, and those
partial sums compensated (TwoSum) into the total: the error of a sum of n
terms t_i against the exact sum is at most about 26 u sum|t_i| (u =
eps/2), whatever n, and in practice that of NumPy's pairwise sum
(16-element lanes, then a tree: (19 + log2(n/128)) u sum|t_i| at most).
Before, the sums were recursive over 256 elements a lane along runs, over
up to 4096 elements for short runs, over 128 rows (then 128 blocks)
across rows, in layer norm's and group norm's parameter gradients: on
repeated terms (a constant dout, a broadcast batch, whose rounding errors
do not cancel) 10-300x the reference's error, up to ~31 eps sum|t_i|.
"""

import numpy as np
import pytest

import bnfast
from bnfast import reference

from arrays import assert_as_accurate, sum_scale
from families import BATCHNORM, GROUPNORM, SPATIAL_BATCHNORM
from test_properties import (
    Layout,
    Spec,
    build,
    check_bn_backward,
    check_bn_forward,
    check_plain_backward,
)

EPS = np.finfo(np.float64).eps


@pytest.fixture
def two_threads_from_64kib():
    """As the property tests run: the threaded kernels from 64 KiB, on two
    threads (one thread where OpenMP is missing)."""
    least = bnfast._kernels._get_parallel_min()
    threads = bnfast.get_num_threads()
    bnfast._kernels._set_parallel_min(64 * 1024)
    bnfast.set_num_threads(2)
    yield
    bnfast.set_num_threads(threads)
    bnfast._kernels._set_parallel_min(least)


def spec(shape, axis, x_layout, dout_layout, seed, offset, spread_exp=0):
    """A Spec of the property tests (plain values, float64 parameters)."""

    def layout(kind):
        return Layout(kind, tuple(range(len(shape))), (1,) * len(shape))

    return Spec(
        dtype=np.float64,
        shape=shape,
        axis=axis,
        x_layout=layout(x_layout),
        dout_layout=layout(dout_layout),
        seed=seed,
        spread_exp=spread_exp,
        offset=offset,
        trend=0.0,
        grid=None,
        const="none",
        const_index=0,
        param_dtype=np.float64,
        param_full=False,
        signed_gamma=False,
        stats_dtype=np.float64,
        stats_full=False,
        stats_near=False,
    )


# ------------------------------------------- found by the long profile


@pytest.mark.parametrize("shape", [(4097, 2, 4), (4097, 8)])
@pytest.mark.parametrize("layout", ["C", "F"])
def test_threads_merge_the_variance_of_an_offset_batch(
    two_threads_from_64kib, shape, layout
):
    # (a) 4097 rows at an offset of 1e4 times the spread, the rows split
    # between two threads: each thread's mean was rounded at the scale of
    # the offset (ulp(1e4)) before Chan's merge, whose delta**2 * n_a n_b / n
    # term carried that rounding into M2: the variance ~26x past the
    # bound (3-10x the reference's error).  The means now reach the merge
    # as hi + lo pairs.
    for seed in range(4):
        check_bn_forward(
            BATCHNORM,
            build(spec(shape, None, layout, "C", seed, 1e4)),
            "train",
            1e-5,
            0.0,
            False,
        )


@pytest.mark.parametrize(
    "shape,x_layout,seed,spread_exp",
    [
        # (b)/(c): a broadcast dout repeats the same terms along the batch
        ((127, 1), "broadcast", 27, 0),  # across rows (found)
        ((4097, 1), "F", 1, -3),  # one long run
        ((16385, 1), "F", 2, 0),
        ((20000, 1, 2, 1), "C", 4, -1),  # many short runs
    ],
)
def test_dbeta_of_a_repeated_dout(shape, x_layout, seed, spread_exp):
    axis = None if len(shape) == 2 and x_layout == "F" else 1
    fam = BATCHNORM if axis is None else SPATIAL_BATCHNORM
    check_bn_backward(
        fam,
        build(spec(shape, axis, x_layout, "broadcast", seed, 1e4, spread_exp)),
        "train",
        1e-5,
        fam.backward,
    )


@pytest.mark.parametrize(
    "shape,seed,offset,spread_exp",
    [
        # (c) a broadcast batch of small images: the same few values repeated
        # in every short run; the block sums (up to 4096 terms in one double
        # lane) gave the mean and variance 25-563x the reference's error
        ((4097, 1, 1, 2), 0, 0.0, 2),
        ((16385, 1, 2, 1), 1, 1e4, 1),
        ((20000, 1, 1, 2), 2, -7327.9, 2),
        ((16385, 1, 1, 2), 3, -4599.6, 3),
    ],
)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_statistics_of_a_broadcast_batch_of_short_runs(
    two_threads_from_64kib, shape, seed, offset, spread_exp, momentum
):
    case = build(
        spec(shape, 1, "broadcast", "broadcast", seed, offset, spread_exp)
    )
    for unbiased in (False, True):
        check_bn_forward(
            SPATIAL_BATCHNORM, case, "train", 1e-5, momentum, unbiased
        )


# ------------------------------------------- the bounds, against exact sums


def fast_dbeta(x, dout, axis):
    """dbeta of bnfast's backward (the sum of dout per channel)."""
    c = x.shape[1]
    if axis is None:
        _, cache = bnfast.batchnorm_forward(
            x, np.ones(c), np.zeros(c), {"mode": "train"}
        )
        return bnfast.batchnorm_backward(dout, cache)[2]
    _, cache = bnfast.spatial_batchnorm_forward(
        x, np.ones(c), np.zeros(c), {"mode": "train"}
    )
    return bnfast.spatial_batchnorm_backward(dout, cache)[2]


@pytest.mark.parametrize("n", [4097, 16385, 262144])
@pytest.mark.parametrize("path", ["one run", "short runs", "across rows"])
def test_a_sum_of_n_equal_terms_is_as_exact_as_a_pairwise_one(n, path):
    # dbeta = n * c exactly (n * c in longdouble is exact to 2**-64):
    # repeated terms are the worst case of recursive summation (the
    # roundings do not cancel: before, along runs, 13 eps * n|c| on average
    # and up to 32, the same at every n).  Now at most 4 eps * n|c| (NumPy's
    # pairwise np.sum: at most 2.5 here), at every length.
    rng = np.random.default_rng(n)
    worst = []
    for _ in range(12):
        c = rng.standard_normal()
        if path == "one run":  # (n, 1) Fortran: one contiguous run
            x = np.asfortranarray(rng.standard_normal((n, 1)))
            dout, axis = np.full((n, 1), c, order="F"), None
        elif path == "short runs":  # NCHW, H*W = 2: n/2 runs of 2
            x = rng.standard_normal((n // 2, 1, 1, 2))
            dout, axis = np.full(x.shape, c), 1
        else:  # a strided column: across rows
            x = rng.standard_normal((n, 2))[:, :1]
            dout, axis = np.full((n, 2), c)[:, :1], None
        exact = np.longdouble(c) * dout.size
        err = abs(float(np.longdouble(fast_dbeta(x, dout, axis)[0]) - exact))
        worst.append(err / (EPS * abs(c) * dout.size))
    assert max(worst) <= 4.0, (path, n, max(worst))


def test_groupnorm_parameter_gradients_of_a_repeated_dout():
    # (b) found by the long profile: dbeta of group norm sums a sample's
    # sums over the batch, recursive over blocks of 128 samples (float64):
    # on a broadcast dout over 32769 samples, 30x the reference's error.
    check_plain_backward(
        GROUPNORM,
        build(spec((32769, 1), 1, "C", "broadcast", 0, 0.0)),
        {"G": 1},
        1e-5,
        GROUPNORM.backward,
    )


def test_layernorm_parameter_gradients_of_a_repeated_dout():
    # (b) found by the long profile: layer norm's dgamma and dbeta sum over
    # the rows, recursive over 128 rows then over the groups (float64): a
    # broadcast dout over 32769 rows of one feature, 30x the reference's
    # error.
    case = build(spec((32769, 1), None, "C", "broadcast", 0, 0.0))
    wcase = case.widened()
    _, cache = bnfast.layernorm_forward(case.x, case.gamma, case.beta, {})
    _, rcache = reference.layernorm_forward(case.x, case.gamma, case.beta, {})
    _, wcache = reference.layernorm_forward(
        wcase.x, wcase.gamma, wcase.beta, {}
    )
    _, _, dbeta = bnfast.layernorm_backward(case.dout, cache)
    _, _, rdbeta = reference.layernorm_backward(case.dout, rcache)
    _, _, wdbeta = reference.layernorm_backward(wcase.dout, wcache)
    assert_as_accurate(
        "layernorm_backward dbeta",
        case,
        dbeta,
        rdbeta,
        wdbeta,
        sum_scale(wcase.dout.reshape(len(case.x), -1)),
    )
