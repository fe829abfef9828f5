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

from families import BY_NAME, FAMILIES, residual_of

pytestmark = pytest.mark.skipif(
    not bnfast._kernels.have_openmp(), reason="built without OpenMP"
)

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
    out, cache = bnfast.spatial_batchnorm_forward(
        x,
        np.linspace(0.5, 1.5, x.shape[axis]),
        np.zeros(x.shape[axis]),
        p,
        axis=axis,
    )
    grads = bnfast.spatial_batchnorm_backward(np.cos(x), cache)
    return (out, p["running_mean"], p["running_var"]) + grads


def run_family(fam, x, axis, extra, mode):
    """A family's forward and backward (dout = cos(x)) on x: out, the
    running statistics in 'train' mode of batch norm, the gradients."""
    c = x.shape[1 if axis is None else axis]
    pshape = x.shape[1:] if axis is None and fam.param == "bn" else (c,)
    size = int(np.prod(pshape))
    gamma = np.linspace(0.5, 1.5, size).reshape(pshape)
    beta = np.linspace(-0.2, 0.2, size).reshape(pshape)
    param = None
    if fam.param == "bn":
        param = {"mode": mode}
        if mode == "test":
            param.update(
                running_mean=np.linspace(-1, 1, size).reshape(pshape),
                running_var=np.linspace(0.5, 2, size).reshape(pshape),
            )
    out, cache = fam.run_small(
        bnfast, x, gamma, beta, extra=extra, axis=axis, param=param
    )
    stats = (
        (param["running_mean"], param["running_var"])
        if fam.param == "bn" and mode == "train"
        else ()
    )
    return (out, *stats) + getattr(bnfast, fam.backward)(np.cos(x), cache)


# (label, family of tests/families.py, x, axis, extra arguments, mode,
# which outputs are bitwise equal across thread counts: across rows a
# thread's columns change the row blocks, and a rows split merges partial
# statistics, so those agree to rounding).  Every family of the registry
# has a row (arrays big enough for the threaded kernels).
TABLE = [
    (
        "rows, channels split",
        "spatial_batchnorm",
        RNG.standard_normal((300, 512)) + 3,
        1,
        {},
        "train",
        "none",
    ),
    (
        "rows, rows split",
        "spatial_batchnorm",
        RNG.standard_normal((40000, 8)) + 3,
        1,
        {},
        "train",
        "none",
    ),
    (
        "runs NCHW, channels split",
        "spatial_batchnorm",
        RNG.standard_normal((8, 16, 30, 30)),
        1,
        {},
        "train",
        "all",
    ),
    (
        "runs Fortran, runs split",
        "spatial_batchnorm",
        np.asfortranarray(RNG.standard_normal((70000, 1))),
        1,
        {},
        "train",
        "none",
    ),
    (
        "channels-last",
        "spatial_batchnorm",
        RNG.standard_normal((8, 30, 30, 16)),
        -1,
        {},
        "train",
        "none",
    ),
    # backward through 'test' mode (frozen statistics), with the ReLU
    (
        "frozen rows",
        "spatial_batchnorm+relu",
        RNG.standard_normal((300, 512)),
        1,
        {},
        "test",
        "forward",
    ),
    (
        "frozen NCHW",
        "spatial_batchnorm+relu",
        RNG.standard_normal((8, 16, 30, 30)),
        1,
        {},
        "test",
        "all",
    ),
    (
        "frozen channels-last",
        "spatial_batchnorm+relu",
        RNG.standard_normal((8, 30, 30, 16)),
        -1,
        {},
        "test",
        "forward",
    ),
    (
        "layernorm",
        "layernorm",
        RNG.standard_normal((256, 512)) + 3,
        None,
        {},
        None,
        "forward",
    ),
    (
        "groupnorm",
        "spatial_groupnorm",
        RNG.standard_normal((8, 16, 30, 30)),
        None,
        {"G": 2},
        None,
        "forward",
    ),
    (
        "groupnorm channels-last",
        "spatial_groupnorm",
        RNG.standard_normal((8, 30, 30, 16)),
        -1,
        {"G": 4},
        None,
        "forward",
    ),
    (
        "batchnorm rows",
        "batchnorm",
        RNG.standard_normal((300, 512)) + 3,
        None,
        {},
        "train",
        "none",
    ),
    (
        "batchnorm frozen rows",
        "batchnorm+relu",
        RNG.standard_normal((300, 512)),
        None,
        {},
        "test",
        "forward",
    ),
    # (the shape of test_rmsnorm.py's former thread test)
    (
        "rmsnorm",
        "rmsnorm",
        RNG.standard_normal((300, 257)) + 3,
        None,
        {},
        None,
        "forward",
    ),
    # the fused residual (z: x reversed and halved, families.residual_of)
    (
        "batchnorm rows +residual",
        "batchnorm+residual",
        RNG.standard_normal((300, 512)) + 3,
        None,
        {"residual": residual_of},
        "train",
        "none",
    ),
    (
        "batchnorm frozen rows +residual",
        "batchnorm+relu+residual",
        RNG.standard_normal((300, 512)),
        None,
        {"residual": residual_of},
        "test",
        "forward",
    ),
    (
        "NCHW +residual",
        "spatial_batchnorm+residual",
        RNG.standard_normal((8, 16, 30, 30)),
        1,
        {"residual": residual_of},
        "train",
        "all",
    ),
    (
        "channels-last relu +residual",
        "spatial_batchnorm+relu+residual",
        RNG.standard_normal((8, 30, 30, 16)),
        -1,
        {"residual": residual_of},
        "train",
        "none",
    ),
]
CASES = [
    pytest.param(BY_NAME[fam], label, x, axis, extra, mode, bitwise, id=label)
    for label, fam, x, axis, extra, mode, bitwise in TABLE
]


def test_every_family_has_thread_cases():
    assert {row[1] for row in TABLE} == {fam.name for fam in FAMILIES}


@pytest.mark.parametrize("fam,name,x,axis,extra,mode,bitwise", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_count_changes_results_only_by_rounding(
    fam, name, x, axis, extra, mode, bitwise, dtype
):
    x = x.astype(dtype)
    bnfast.set_num_threads(1)
    serial = run_family(fam, x, axis, extra, mode)
    for threads in (2, 3):
        bnfast.set_num_threads(threads)
        par = run_family(fam, x, axis, extra, mode)
        again = run_family(fam, x, axis, extra, mode)
        for k, (s, p, a) in enumerate(zip(serial, par, again)):
            label = f"{fam.name} {name}, output {k}, {threads} threads"
            np.testing.assert_array_equal(p, a, err_msg=label + ": rerun")
            if bitwise == "all" or (bitwise == "forward" and k == 0):
                np.testing.assert_array_equal(p, s, err_msg=label)
            else:
                rtol = 1e-5 if dtype == np.float32 else 1e-12
                np.testing.assert_allclose(
                    p, s, rtol=rtol, atol=rtol, err_msg=label
                )


def test_small_jobs_stay_on_one_thread_by_default():
    # results bitwise those of one thread below the default 1 MiB: the
    # rows-split statistics merge partials, so a split would show
    bnfast._kernels._set_parallel_min(1 << 20)
    x = RNG.standard_normal((2000, 8)) + 3  # 128 KB, rows split if threaded
    bnfast.set_num_threads(1)
    serial = bn(x, 1)
    bnfast.set_num_threads(2)
    for s, p in zip(serial, bn(x, 1)):
        np.testing.assert_array_equal(p, s)
    big = RNG.standard_normal((40000, 8)) + 3  # 2.5 MB: split
    bnfast.set_num_threads(1)
    serial = bn(big, 1)
    bnfast.set_num_threads(2)
    assert not all(np.array_equal(p, s) for p, s in zip(bn(big, 1), serial))


def test_set_num_threads_validates():
    bnfast.set_num_threads(2)
    assert bnfast.get_num_threads() == 2
    for bad in (0, -1, 1.5, "2", True, 1025, 2**31, 2**64, np.int64(2**40)):
        with pytest.raises(
            ValueError,
            match=r"set_num_threads: n must be an "
            r"int from 1 to 1024 or None \(the default\), "
            "got",
        ):
            bnfast.set_num_threads(bad)
    assert bnfast.get_num_threads() == 2
    bnfast.set_num_threads(np.int32(1024))
    assert bnfast.get_num_threads() == 1024  # no thread made until a call


def _in_subprocess(code, preexec_fn=None, **env):
    """Run code in a fresh interpreter with these environment variables
    (None: unset); its stdout and stderr."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BNFAST_NUM_THREADS", "OMP_NUM_THREADS")
    }
    environ.update({k: v for k, v in env.items() if v is not None})
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        preexec_fn=preexec_fn,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, result.stderr


CORES = (
    len(os.sched_getaffinity(0))
    if hasattr(os, "sched_getaffinity")
    else os.cpu_count()
)


@pytest.mark.parametrize(
    "bnfast_env,omp_env,expected",
    [
        (None, None, CORES),
        ("3", None, 3),
        ("1024", None, 1024),
        (None, "1", 1),
        (None, "3", 3),
        ("2", "1", 2),  # BNFAST_NUM_THREADS before OMP_NUM_THREADS
        ("zero", None, None),
        ("0", None, None),
        ("-2", None, None),
        ("1025", None, None),
        ("2147483648", None, None),
        ("99999999999999999999999", "3", None),
    ],
)
def test_environment_variables(bnfast_env, omp_env, expected):
    # a bad BNFAST_NUM_THREADS never fails the import: a warning, and the
    # count of OpenMP (OMP_NUM_THREADS, else the cores)
    out, err = _in_subprocess(
        "import bnfast; print(bnfast.get_num_threads()); bnfast.show_config()",
        BNFAST_NUM_THREADS=bnfast_env,
        OMP_NUM_THREADS=omp_env,
    )
    count, config = out.split("\n", 1)
    if expected is None:
        assert (
            f"BNFAST_NUM_THREADS={bnfast_env!r} is not an int from 1 to "
            "1024; ignored"
        ) in err, err
        assert int(count) == (int(omp_env) if omp_env else CORES)
    else:
        assert "BNFAST_NUM_THREADS" not in err, err
        assert int(count) == expected
    source = (
        "BNFAST_NUM_THREADS;"
        if expected is not None and bnfast_env
        else "OpenMP's count:"
    )
    assert f"threads:     {count} ({source}" in config, config


def test_threadpoolctl_limits_the_default():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x = RNG.standard_normal((40000, 8)) + 3  # rows split: shows threads
    bnfast.set_num_threads(1)
    serial = bn(x, 1)
    bnfast.set_num_threads(2)
    threaded = bn(x, 1)
    bnfast.set_num_threads(None)  # OpenMP's count
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

    out, _ = _in_subprocess(
        preexec_fn=stacks_of_8_mib,
        code="""
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
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
resource.setrlimit(resource.RLIMIT_AS, (used + (200 << 20), hard))
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
""",
    )
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
    assert (
        f"threads:     {bnfast.get_num_threads()} (OpenMP's count: "
        "threadpoolctl, OMP_NUM_THREADS, else the cores;" in _show_config()
    )
    bnfast.set_num_threads(3)
    assert "threads:     3 (set_num_threads;" in _show_config()


def _show_config():
    import io

    buf = io.StringIO()
    bnfast.show_config(file=buf)
    return buf.getvalue()
