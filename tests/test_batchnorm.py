"""What batch norm promises beyond the generic tests over the registry of
families (tests/families.py: equivalence, finite differences, out=,
errors, threads): exact constant columns, bn_param handling, dtypes,
layouts, memory.  (Layer and group norm's own: test_layernorm.py,
test_groupnorm.py.)"""

import doctest
import tracemalloc

import numpy as np
import pytest

import bnfast
from bnfast import functional, reference

from arrays import make_case


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 7, 20000])
@pytest.mark.parametrize("value", [3.7, -1e4 + 0.1, 0.0, 1e-30])
def test_constant_column_gives_beta_exactly(dtype, n, value):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, 4)).astype(dtype)
    x[:, 1] = value
    beta = np.array([0.1, 0.3, -0.2, 0.5], dtype)
    p = {"mode": "train"}
    out, cache = bnfast.batchnorm_forward(x, np.full(4, 2.5, dtype), beta, p)
    assert out[:, 1].tolist() == [beta[1]] * n
    assert p["running_var"][1] == 0.0
    assert cache.mean[1] == np.float64(dtype(value))
    dx, _, _ = bnfast.batchnorm_backward(np.ones_like(x), cache)
    assert np.all(dx[:, 1] == 0.0)


def test_bn_param_receives_new_running_arrays_and_inputs_are_not_written():
    case = make_case((8, 3), np.float64, "C", "plain")
    rm, rv = case.running_mean.copy(), case.running_var.copy()
    p = {
        "mode": "train",
        "momentum": 0.7,
        "running_mean": rm,
        "running_var": rv,
    }
    x_before = case.x.copy()
    out, cache = bnfast.batchnorm_forward(case.x, case.gamma, case.beta, p)
    np.testing.assert_array_equal(case.x, x_before)
    np.testing.assert_array_equal(rm, case.running_mean)
    assert p["running_mean"] is not rm
    np.testing.assert_allclose(
        p["running_mean"], 0.7 * rm + 0.3 * case.x.mean(axis=0), rtol=1e-14
    )
    np.testing.assert_allclose(
        p["running_var"], 0.7 * rv + 0.3 * case.x.var(axis=0), rtol=1e-14
    )


def test_missing_running_stats_are_zeros_of_x_dtype():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    p = {"mode": "test"}
    out, _ = bnfast.batchnorm_forward(
        x, np.ones(3, np.float32), np.zeros(3, np.float32), p
    )
    assert p["running_mean"].dtype == np.float32
    np.testing.assert_array_equal(p["running_mean"], np.zeros(3))
    np.testing.assert_allclose(out, x / np.sqrt(1e-5), rtol=1e-6)
    p = {"mode": "train", "momentum": 0.0}
    bnfast.batchnorm_forward(x, np.ones(3), np.zeros(3), p)
    np.testing.assert_allclose(p["running_mean"], [4.5, 5.5, 6.5])


@pytest.mark.parametrize(
    "xdt,pdt", [(np.float32, np.float64), (np.float64, np.float32)]
)
def test_dtype_policy(xdt, pdt):
    x = np.random.default_rng(3).standard_normal((5, 2, 3)).astype(xdt)
    gamma = np.ones((2, 3), pdt)
    p = {
        "mode": "train",
        "running_mean": np.zeros(6, pdt),
        "running_var": np.ones(6, pdt),
    }
    out, cache = bnfast.batchnorm_forward(x, gamma, np.zeros(6, pdt), p)
    dx, dgamma, dbeta = bnfast.batchnorm_backward(np.ones(x.shape, pdt), cache)
    assert out.dtype == dx.dtype == xdt
    assert out.shape == dx.shape == x.shape
    assert dgamma.dtype == dbeta.dtype == pdt
    assert dgamma.shape == dbeta.shape == (2, 3)
    assert p["running_mean"].dtype == pdt and p["running_mean"].shape == (6,)


def test_read_only_and_list_inputs():
    x = np.random.default_rng(4).standard_normal((6, 3))
    x.flags.writeable = False
    g = np.ones(3)
    g.flags.writeable = False
    out, cache = bnfast.batchnorm_forward(
        x, g, [0.0, 0.0, 0.0], {"mode": "train"}
    )
    ref, _ = reference.batchnorm_forward(x, g, np.zeros(3), {"mode": "train"})
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    out2, _ = bnfast.batchnorm_forward(
        x.tolist(), g, np.zeros(3), {"mode": "train"}
    )
    np.testing.assert_array_equal(out, out2)
    dx, _, _ = bnfast.batchnorm_backward(np.ones((6, 3)).tolist(), cache)
    assert dx.shape == (6, 3)


def test_byte_swapped_input_is_accepted():
    x = np.random.default_rng(5).standard_normal((6, 3))
    out, _ = bnfast.batchnorm_forward(
        x, np.ones(3), np.zeros(3), {"mode": "train"}
    )
    xs = x.astype(">f8")
    out_s, _ = bnfast.batchnorm_forward(
        xs, np.ones(3, ">f8"), np.zeros(3), {"mode": "train"}
    )
    np.testing.assert_array_equal(out, out_s)


def test_broadcast_rows_are_read_in_place():
    row = np.array([1.0, 2.0, 3.0])
    x = np.broadcast_to(row, (5, 3))
    out, cache = bnfast.batchnorm_forward(
        x, np.ones(3), np.full(3, 0.5), {"mode": "train"}
    )
    np.testing.assert_array_equal(out, np.full((5, 3), 0.5))
    assert np.shares_memory(cache.x, row)


NO_COPY = (
    [
        ((50, 40), None, layout)
        for layout in ("C", "F", "rows-strided", "reversed")
    ]
    + [
        ((4, 3, 5, 6), 1, layout)
        for layout in (
            "C",
            "F",
            "rows-strided",
            "reversed",
            "channels-last-memory",
        )
    ]
    + [((4, 3, 5, 6), -1, layout) for layout in ("C", "F")]
)


@pytest.mark.parametrize("shape,axis,layout", NO_COPY)
def test_cache_refers_to_x_without_copies(shape, axis, layout):
    case = make_case(shape, np.float32, layout, "plain", axis=axis)
    p = {"mode": "train"}
    if axis is None:
        _, cache = bnfast.batchnorm_forward(case.x, case.gamma, case.beta, p)
    else:
        _, cache = bnfast.spatial_batchnorm_forward(
            case.x, case.gamma, case.beta, p, axis=axis
        )
    assert np.shares_memory(cache.x, case.x)
    # arrays as large as x in the cache must be x's own memory (views)
    fields = [name for name in dir(cache) if not name.startswith("_")]
    assert {"x", "panel", "gamma", "beta", "mean", "invstd"} <= set(fields)
    copies = [
        name
        for name in fields
        if isinstance(getattr(cache, name), np.ndarray)
        and getattr(cache, name).size >= case.x.size
        and not np.shares_memory(getattr(cache, name), case.x)
    ]
    assert copies == []


PEAK = [
    ((4000, 64), None, "C"),
    ((4000, 64), None, "F"),
    ((16, 64, 8, 8), 1, "C"),
    ((16, 8, 8, 64), -1, "C"),
    ((16, 64, 8, 8), 1, "channels-last-memory"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis,layout", PEAK)
def test_forward_train_peak_memory_is_output_plus_o_d(
    dtype, shape, axis, layout
):
    case = make_case(shape, dtype, layout, "plain", axis=axis)
    x, gamma, beta = case.x, case.gamma, case.beta
    d = gamma.size
    if axis is None:
        forward = bnfast.batchnorm_forward
    else:

        def forward(*args):
            return bnfast.spatial_batchnorm_forward(*args, axis=axis)

    forward(x, gamma, beta, {"mode": "train"})  # warm up
    tracemalloc.start()
    try:
        out, cache = forward(x, gamma, beta, {"mode": "train"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= out.nbytes + 64 * d * 8 + 16384, (peak, out.nbytes)
    tracemalloc.start()
    try:
        dx, _, _ = bnfast.batchnorm_backward(case.dout, cache)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= dx.nbytes + 64 * d * 8 + 16384, (peak, dx.nbytes)


@pytest.mark.parametrize("module", [functional, reference])
def test_docstring_examples(module):
    result = doctest.testmod(module, raise_on_error=False, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0


def test_simd_level_is_reported():
    assert bnfast._kernels.simd_level() in (
        "x86-64-v4",
        "x86-64-v3",
        "baseline",
    )


@pytest.mark.parametrize(
    "shape,axis", [((6, 3), None), ((4, 3, 2, 5), 1), ((4, 2, 5, 3), -1)]
)
def test_unbiased_running_var_matches_reference(shape, axis):
    rng = np.random.default_rng(26)
    x = rng.standard_normal(shape) * 2 + 1
    c = shape[1] if axis is None else shape[axis]
    args = (x, np.ones(c), np.zeros(c))
    results = []
    for module in (bnfast, reference):
        p = {
            "mode": "train",
            "momentum": 0.5,
            "unbiased_running_var": True,
            "running_var": np.ones(c),
        }
        if axis is None:
            module.batchnorm_forward(*args, p)
        else:
            module.spatial_batchnorm_forward(*args, p, axis=axis)
        results.append(p["running_var"])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-13)
    moved = x if axis is None else np.moveaxis(x, axis, -1).reshape(-1, c)
    np.testing.assert_allclose(
        results[0], 0.5 + 0.5 * moved.var(axis=0, ddof=1), rtol=1e-13
    )


def test_unbiased_running_var_needs_two_values():
    p = {"mode": "train", "unbiased_running_var": True}
    with pytest.raises(
        ValueError, match="needs more than 1 value per channel, got 1"
    ):
        bnfast.batchnorm_forward(np.ones((1, 3)), np.ones(3), np.zeros(3), p)
    assert "running_mean" not in p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_relu_mask_is_the_rounded_output(dtype):
    # The ReLU acts on the output rounded to x's dtype, as the reference's
    # np.maximum(out, 0): outputs that round to 0 in float32 (gamma of 1e-46,
    # below float32's smallest subnormal) are 0 and pass no gradient, and
    # the mask multiplies dout, so a NaN in dout survives where masked.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 6)).astype(dtype)
    gamma = np.array([1e-46, -1e-46, 1.0, 1e-300, 2.0, 1.0])
    beta = np.array([0.0, 0.0, 0.0, 0.0, -0.5, 0.0])
    dout = rng.standard_normal((40, 6)).astype(dtype)
    dout[:2, 5] = np.nan  # one column; the others stay finite
    results = []
    for module in (bnfast, reference):
        out, cache = module.batchnorm_forward(
            x, gamma, beta, {"mode": "train"}, activation="relu"
        )
        results.append((out,) + module.batchnorm_backward(dout, cache))
    fast, ref = results
    for f, r, name in zip(fast, ref, ("out", "dx", "dgamma", "dbeta")):
        np.testing.assert_array_equal(np.isnan(f), np.isnan(r), err_msg=name)
        np.testing.assert_array_equal(f == 0, r == 0, err_msg=name)
        np.testing.assert_allclose(
            f, r, rtol=1e-5, atol=1e-5 * np.nanmax(np.abs(r)), err_msg=name
        )
    assert not np.signbit(fast[0]).any()  # +0, never -0
    assert np.isnan(fast[3][5]) and np.isfinite(fast[3][:5]).all()
    if dtype == np.float32:
        assert (fast[0][:, [0, 1, 3]] == 0).all()
        assert (fast[2][[0, 1, 3]] == 0).all() and (
            fast[3][[0, 1, 3]] == 0
        ).all()


LAYOUTS = [
    "C",
    "F",
    "rows-strided",
    "cols-strided",
    "reversed",
    "channels-last-memory",
]


@pytest.mark.parametrize("dout_layout", LAYOUTS)
@pytest.mark.parametrize("x_layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (6, 2, 3, 2)])
def test_backward_pairs_dout_and_x_elementwise(shape, x_layout, dout_layout):
    # Any layout of dout against any of x, also when their panels have the
    # same shape but a different element order (C-order x, Fortran dout,
    # N == H * W: a bug found by the hypothesis tests)
    from arrays import _layout

    rng = np.random.default_rng(11)
    x = _layout(rng.standard_normal(shape), x_layout)
    dout = rng.standard_normal(shape)
    g, b = rng.random(shape[1]) + 0.5, rng.standard_normal(shape[1])
    _, cache = bnfast.spatial_batchnorm_forward(x, g, b, {"mode": "train"})
    expected = bnfast.spatial_batchnorm_backward(dout, cache)
    got = bnfast.spatial_batchnorm_backward(_layout(dout, dout_layout), cache)
    for e, r in zip(expected, got):
        np.testing.assert_allclose(r, e, rtol=1e-12, atol=1e-12)


def test_a_single_column_is_one_run():
    # (N, 1) in C order is one contiguous run: the lanes kernels, whose sums
    # are as accurate as NumPy's pairwise ones (the across-rows kernels ran
    # one element per row: 8x the error here, and 2.5x slower)
    x = np.random.default_rng(0).standard_normal((32769, 1)) + 1e4
    p = {"mode": "train", "momentum": 0.0}
    _, cache = bnfast.batchnorm_forward(x, np.ones(1), np.zeros(1), p)
    assert cache.panel.shape == (1, 1, 32769)
    exact = np.var(x.astype(np.longdouble))
    numpy_error = abs(np.var(x) - exact)
    assert (
        abs(p["running_var"][0] - exact)
        <= 2 * numpy_error + np.finfo(float).eps * exact
    )


# float32 data is computed in float32 arithmetic; squares of values above
# ~1.8e19 overflow float32, where the double computation is fine: such a
# batch must still normalize to finite output of std 1 (issue 11), in
# every family and kernel path (across rows, along runs, per row, per group)
@pytest.mark.parametrize("spread", [1e20, 1e30, 3e37])
def test_float32_spread_past_the_square_overflow_normalizes(spread):
    x = (np.random.default_rng(3).standard_normal((64, 8)) * spread).astype(
        np.float32
    )
    ones, zeros = np.ones(8, np.float32), np.zeros(8, np.float32)
    results = {}
    for layout, xl in (("C", x), ("F", np.asfortranarray(x))):
        out, cache = bnfast.batchnorm_forward(
            xl, ones, zeros, {"mode": "train"}
        )
        results[f"batchnorm {layout}"] = (
            out,
            bnfast.batchnorm_backward(np.ones_like(xl), cache)[0],
        )
    out, cache = bnfast.layernorm_forward(x, ones, zeros, {})
    results["layernorm"] = (
        out,
        bnfast.layernorm_backward(np.ones_like(x), cache)[0],
    )
    x4 = x.reshape(8, 8, 4, 2)
    out, cache = bnfast.spatial_groupnorm_forward(x4, ones, zeros, 2, {})
    results["groupnorm"] = (
        out,
        bnfast.spatial_groupnorm_backward(np.ones_like(x4), cache)[0],
    )
    for what, (out, dx) in results.items():
        assert np.isfinite(out).all() and np.isfinite(dx).all(), what
        assert abs(float(out.std()) - 1.0) < 1e-3, (what, out.std())
        # a constant dout: dx is 0 to float32 rounding of its terms
        assert np.abs(dx).max() < 1e-6 / x.astype(np.float64).std(), what
