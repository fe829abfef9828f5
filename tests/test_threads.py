"""Threads: results independent of the thread count to rounding (bitwise
where the per-channel work does not change: runs split by channel, the
layer and group norm forwards), bitwise reproducible for a given count; the
thread-count API."""
import os
import subprocess
import sys

import numpy as np
import pytest

import bnfast

pytestmark = pytest.mark.skipif(
    not bnfast._kernels.have_openmp(), reason="built without OpenMP")

RNG = np.random.default_rng(50)


@pytest.fixture(autouse=True)
def restore_threads():
    n = bnfast.get_num_threads()
    # the threaded kernels on small arrays: jobs of 64 KiB and more are
    # split (by default 1 MiB, where two threads start to pay)
    least = bnfast._kernels._get_parallel_min()
    bnfast._kernels._set_parallel_min(64 * 1024)
    yield
    bnfast._kernels._set_parallel_min(least)
    bnfast.set_num_threads(n)


def bn(x, axis):
    p = {"mode": "train"}
    out, cache = bnfast.spatial_batchnorm_forward(x, np.linspace(.5, 1.5, x.shape[axis]),
                                                  np.zeros(x.shape[axis]), p,
                                                  axis=axis)
    grads = bnfast.spatial_batchnorm_backward(np.cos(x), cache)
    return (out, p["running_mean"], p["running_var"]) + grads


def ln(x, _):
    out, cache = bnfast.layernorm_forward(x, np.ones(x.shape[1]),
                                          np.zeros(x.shape[1]), {})
    return (out,) + bnfast.layernorm_backward(np.cos(x), cache)


def gn(x, _):
    c = x.shape[1]
    out, cache = bnfast.spatial_groupnorm_forward(x, np.ones(c), np.zeros(c),
                                                  2, {})
    return (out,) + bnfast.spatial_groupnorm_backward(np.cos(x), cache)


# (name, op, x, axis, which outputs are bitwise equal across thread counts:
# across rows a thread's columns change the row blocks, and a rows split
# merges partial statistics, so those agree to rounding)
CASES = [
    ("rows, channels split", bn, RNG.standard_normal((300, 512)) + 3, 1,
     "none"),
    ("rows, rows split", bn, RNG.standard_normal((40000, 8)) + 3, 1,
     "none"),
    ("runs NCHW, channels split", bn, RNG.standard_normal((8, 16, 30, 30)),
     1, "all"),
    ("runs Fortran, runs split", bn,
     np.asfortranarray(RNG.standard_normal((70000, 1))), 1, "none"),
    ("channels-last", bn, RNG.standard_normal((8, 30, 30, 16)), -1, "none"),
    ("layernorm", ln, RNG.standard_normal((256, 512)) + 3, None, "forward"),
    ("groupnorm", gn, RNG.standard_normal((8, 16, 30, 30)), None, "forward"),
]


@pytest.mark.parametrize("name,op,x,axis,bitwise", CASES,
                         ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_count_changes_results_only_by_rounding(name, op, x, axis,
                                                       bitwise, dtype):
    x = x.astype(dtype)
    bnfast.set_num_threads(1)
    serial = op(x, axis)
    for threads in (2, 3):
        bnfast.set_num_threads(threads)
        par = op(x, axis)
        again = op(x, axis)
        for k, (s, p, a) in enumerate(zip(serial, par, again)):
            label = f"{name}, output {k}, {threads} threads"
            np.testing.assert_array_equal(p, a, err_msg=label + ": rerun")
            if bitwise == "all" or (bitwise == "forward" and k == 0):
                np.testing.assert_array_equal(p, s, err_msg=label)
            else:
                rtol = 1e-5 if dtype == np.float32 else 1e-12
                np.testing.assert_allclose(p, s, rtol=rtol, atol=rtol,
                                           err_msg=label)


def test_small_jobs_stay_on_one_thread_by_default():
    # results bitwise those of one thread below the default 1 MiB: the
    # rows-split statistics merge partials, so a split would show
    bnfast._kernels._set_parallel_min(1 << 20)
    x = RNG.standard_normal((2000, 8)) + 3   # 128 KB, rows split if threaded
    bnfast.set_num_threads(1)
    serial = bn(x, 1)
    bnfast.set_num_threads(2)
    for s, p in zip(serial, bn(x, 1)):
        np.testing.assert_array_equal(p, s)
    big = RNG.standard_normal((40000, 8)) + 3   # 2.5 MB: split
    bnfast.set_num_threads(1)
    serial = bn(big, 1)
    bnfast.set_num_threads(2)
    assert not all(np.array_equal(p, s) for p, s in zip(bn(big, 1), serial))


def test_set_num_threads_validates():
    bnfast.set_num_threads(2)
    assert bnfast.get_num_threads() == 2
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="the number of threads must be "
                           "an int >= 1"):
            bnfast.set_num_threads(bad)
    assert bnfast.get_num_threads() == 2


@pytest.mark.parametrize("env,expected", [("3", 3), ("zero", None)])
def test_environment_variable(env, expected):
    code = "import bnfast; print(bnfast.get_num_threads())"
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True,
        text=True, env={**os.environ, "BNFAST_NUM_THREADS": env}, check=True)
    if expected is None:
        assert "BNFAST_NUM_THREADS='zero' is not an int >= 1" in result.stderr
        assert int(result.stdout) == len(os.sched_getaffinity(0))
    else:
        assert int(result.stdout) == expected


def test_show_config_reports_the_build():
    import io
    buf = io.StringIO()
    bnfast.show_config(file=buf)
    text = buf.getvalue()
    assert "OpenMP:      yes" in text
    assert f"SIMD level:  {bnfast._kernels.simd_level()}" in text
    assert "-ffp-contract=off" in text
