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
    n = bnfast._kernels._thread_state()[0] or None
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


def bn_frozen(x, axis):
    # backward through 'test' mode (frozen statistics), with the ReLU
    c = x.shape[axis]
    p = {"mode": "test", "running_mean": np.linspace(-1, 1, c),
         "running_var": np.linspace(0.5, 2, c)}
    out, cache = bnfast.spatial_batchnorm_forward(
        x, np.linspace(.5, 1.5, c), np.linspace(-.2, .2, c), p, axis=axis,
        activation="relu")
    return (out,) + bnfast.spatial_batchnorm_backward(np.cos(x), cache)


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
    ("frozen rows", bn_frozen, RNG.standard_normal((300, 512)), 1,
     "forward"),
    ("frozen NCHW", bn_frozen, RNG.standard_normal((8, 16, 30, 30)), 1,
     "all"),
    ("frozen channels-last", bn_frozen, RNG.standard_normal((8, 30, 30, 16)),
     -1, "forward"),
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
    for bad in (0, -1, 1.5, "2", True, 1025, 2**31, 2**64, np.int64(2**40)):
        with pytest.raises(ValueError, match=r"set_num_threads: n must be an "
                           r"int from 1 to 1024 or None \(the default\), "
                           "got"):
            bnfast.set_num_threads(bad)
    assert bnfast.get_num_threads() == 2
    bnfast.set_num_threads(np.int32(1024))
    assert bnfast.get_num_threads() == 1024   # no thread made until a call


def _in_subprocess(code, preexec_fn=None, **env):
    """Run code in a fresh interpreter with these environment variables
    (None: unset); its stdout and stderr."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("BNFAST_NUM_THREADS", "OMP_NUM_THREADS")}
    environ.update({k: v for k, v in env.items() if v is not None})
    result = subprocess.run([sys.executable, "-W", "always", "-c", code],
                            capture_output=True, text=True, env=environ,
                            timeout=120, preexec_fn=preexec_fn)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, result.stderr


CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
    else os.cpu_count()


@pytest.mark.parametrize("bnfast_env,omp_env,expected", [
    (None, None, CORES),
    ("3", None, 3),
    ("1024", None, 1024),
    (None, "1", 1),
    (None, "3", 3),
    ("2", "1", 2),        # BNFAST_NUM_THREADS before OMP_NUM_THREADS
    ("zero", None, None),
    ("0", None, None),
    ("-2", None, None),
    ("1025", None, None),
    ("2147483648", None, None),
    ("99999999999999999999999", "3", None),
])
def test_environment_variables(bnfast_env, omp_env, expected):
    # a bad BNFAST_NUM_THREADS never fails the import: a warning, and the
    # count of OpenMP (OMP_NUM_THREADS, else the cores)
    out, err = _in_subprocess(
        "import bnfast; print(bnfast.get_num_threads()); bnfast.show_config()",
        BNFAST_NUM_THREADS=bnfast_env, OMP_NUM_THREADS=omp_env)
    count, config = out.split("\n", 1)
    if expected is None:
        assert (f"BNFAST_NUM_THREADS={bnfast_env!r} is not an int from 1 to "
                "1024; ignored") in err, err
        assert int(count) == (int(omp_env) if omp_env else CORES)
    else:
        assert "BNFAST_NUM_THREADS" not in err, err
        assert int(count) == expected
    source = ("BNFAST_NUM_THREADS;" if expected is not None and bnfast_env
              else "OpenMP's count:")
    assert f"threads:     {count} ({source}" in config, config


def test_threadpoolctl_limits_the_default():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x = RNG.standard_normal((40000, 8)) + 3   # rows split: shows threads
    bnfast.set_num_threads(1)
    serial = bn(x, 1)
    bnfast.set_num_threads(2)
    threaded = bn(x, 1)
    bnfast.set_num_threads(None)              # OpenMP's count
    before = bnfast.get_num_threads()
    with threadpoolctl.threadpool_limits(1):
        assert bnfast.get_num_threads() == 1
        for s, p in zip(serial, bn(x, 1)):
            np.testing.assert_array_equal(p, s)
    with threadpoolctl.threadpool_limits(2):
        assert bnfast.get_num_threads() == 2
        for t, p in zip(threaded, bn(x, 1)):
            np.testing.assert_array_equal(p, t)
    assert bnfast.get_num_threads() == before
    # set_num_threads comes first
    bnfast.set_num_threads(2)
    with threadpoolctl.threadpool_limits(1):
        assert bnfast.get_num_threads() == 2


def test_threads_that_cannot_be_created_do_not_kill_the_process():
    # libgomp exits the process when it cannot create a thread: with the
    # address space limited to 200 MB more than in use and 8 MB thread
    # stacks (glibc's default thread stack is RLIMIT_STACK, read when the
    # interpreter starts), 1000 threads cannot be; the call runs on fewer
    # (half of those that could be created) and gives the results of that
    # count
    resource = pytest.importorskip("resource")

    def stacks_of_8_mib():
        hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
        if hard == resource.RLIM_INFINITY or hard >= 8 << 20:
            resource.setrlimit(resource.RLIMIT_STACK, (8 << 20, hard))

    out, _ = _in_subprocess(preexec_fn=stacks_of_8_mib, code="""
import resource
import numpy as np
import bnfast
bnfast._kernels._set_parallel_min(2)
x = np.random.default_rng(0).standard_normal((4000, 64)) + 3
g, b = np.ones(64), np.zeros(64)
def call():
    return bnfast.batchnorm_forward(x, g, b, {"mode": "train"})[0]
bnfast.set_num_threads(1)
serial = call()
with open("/proc/self/statm") as f:
    used = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS,
                   (used + (200 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
bnfast.set_num_threads(1000)
out = call()
n = bnfast.get_num_threads()
assert 1 <= n < 1000, n
np.testing.assert_allclose(out, serial, rtol=1e-12, atol=1e-12)
bnfast.set_num_threads(n)
np.testing.assert_array_equal(call(), out)
import io
text = io.StringIO()
bnfast.show_config(file=text)
assert f"at most {n}: more threads could not be created" in text.getvalue()
print("ok")
""")
    assert out.strip() == "ok"


def test_show_config_reports_the_build():
    import io
    buf = io.StringIO()
    bnfast.show_config(file=buf)
    text = buf.getvalue()
    assert "OpenMP:      yes" in text
    assert f"SIMD level:  {bnfast._kernels.simd_level()}" in text
    assert "-ffp-contract=off" in text
    bnfast.set_num_threads(None)
    assert (f"threads:     {bnfast.get_num_threads()} (OpenMP's count: "
            "threadpoolctl, OMP_NUM_THREADS, else the cores;"
            in _show_config())
    bnfast.set_num_threads(3)
    assert "threads:     3 (set_num_threads;" in _show_config()


def _show_config():
    import io
    buf = io.StringIO()
    bnfast.show_config(file=buf)
    return buf.getvalue()
