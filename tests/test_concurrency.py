"""Python threads and memory: concurrent calls from many threads give the
serial results bitwise; the kernels release the GIL; 10,000 calls of each
op leave the resident memory flat (no leak in C scratch buffers, caches or
error paths)."""

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import bnfast

from families import FAMILIES


@pytest.fixture(autouse=True)
def one_kernel_thread():
    n = bnfast._kernels._thread_state()[0] or None  # None: the default
    bnfast.set_num_threads(1)
    yield
    bnfast.set_num_threads(n)


def _ops(seed):
    """A mix of every family of the registry (tests/families.py; each of
    its small configurations with a 24 times longer batch, each mode,
    the backward in each backward mode), both dtypes and several layouts;
    returns a function computing all their results as a flat list of
    arrays."""
    rng = np.random.default_rng(seed)
    dtype = (np.float32, np.float64)[seed % 2]
    calls = []
    for fam in FAMILIES:
        for _, shape, axis, extra in fam.small:
            shape = (24 * shape[0],) + shape[1:]
            x = rng.standard_normal(shape).astype(dtype)
            if seed % 3 == 0:
                x = np.asfortranarray(x)
            c = shape[1 if axis is None else axis]
            g, b = rng.standard_normal(c), rng.standard_normal(c)
            calls.append((fam, x, g, b, axis, extra))

    def run():
        res = []
        for fam, x, g, b, axis, extra in calls:
            for mode in fam.modes:
                p = (
                    {
                        "mode": mode,
                        "running_mean": np.zeros(len(g)),
                        "running_var": np.ones(len(g)),
                    }
                    if fam.param == "bn"
                    else {}
                )
                out, cache = fam.run_small(
                    bnfast, x, g, b, extra=extra, axis=axis, param=p
                )
                res += [out, *(p[k] for k in sorted(p) if k != "mode")]
                if mode in fam.backward_modes:
                    res += getattr(bnfast, fam.backward)(np.cos(x), cache)
        return res

    return run


def test_eight_threads_give_the_serial_results():
    ops = [_ops(seed) for seed in range(16)]
    serial = [op() for op in ops]
    barrier = threading.Barrier(8)

    def work(k):
        barrier.wait()
        return [ops[(k + j) % 16]() for j in range(16)], k

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for per_thread, k in results:
        for j, res in enumerate(per_thread):
            for a, b in zip(res, serial[(k + j) % 16]):
                np.testing.assert_array_equal(a, b)


def _runs_beside(call, calls=200):
    """Whether this thread ran Python code while call() ran in another.

    No clock: the switch interval is set far beyond the test's life, so
    the GIL changes hands only where a thread releases it itself.  A
    worker runs call() up to `calls` times and reads a counter before and
    after each; this thread increments the counter, sleeping briefly
    between increments (which lets the worker have the GIL back).  If
    call() holds the GIL, nothing else runs between the worker's two
    reads and the counter never moves; if it releases it, this thread
    takes the GIL while the worker is inside call() and the counter moves
    (the worker stops at the first call seen overlapped)."""
    counter = [0]
    state = {"overlapped": False, "done": False}

    def worker():
        try:
            for _ in range(calls):
                before = counter[0]
                call()
                if counter[0] != before:
                    state["overlapped"] = True
                    break
        finally:
            state["done"] = True

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e6)
    try:
        thread = threading.Thread(target=worker)
        thread.start()
        while not state["done"]:
            counter[0] += 1
            time.sleep(1e-4)
        thread.join()
    finally:
        sys.setswitchinterval(interval)
    return state["overlapped"]


def _long_calls():
    """One call of each kernel family over 8 MB (milliseconds each), whose
    call path releases the GIL nowhere else: NumPy itself releases it in
    some calls, e.g. np.zeros(1024) (so bn_param has its running
    statistics here).  Checked: with the kernels' `with nogil:` removed,
    each of these is seen holding the GIL."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 1024))
    x4 = rng.standard_normal((16, 64, 32, 32))
    g, b = np.ones(1024), np.zeros(1024)
    g4, b4 = np.ones(64), np.zeros(64)
    _, cache = bnfast.batchnorm_forward(x, g, b, {"mode": "train"})
    _, lcache = bnfast.layernorm_forward(x, g, b, {})
    return {
        "batchnorm_forward": lambda: bnfast.batchnorm_forward(
            x, g, b, {"mode": "train", "running_mean": b, "running_var": g}
        ),
        "batchnorm_backward": lambda: bnfast.batchnorm_backward(x, cache),
        "spatial_batchnorm_forward": lambda: bnfast.spatial_batchnorm_forward(
            x4, g4, b4, {"mode": "train"}
        ),
        "layernorm_backward": lambda: bnfast.layernorm_backward(x, lcache),
        "spatial_groupnorm_forward": lambda: bnfast.spatial_groupnorm_forward(
            x4, g4, b4, 8, {}
        ),
    }


def test_the_detector_sees_a_call_that_holds_the_gil():
    # bytes.count holds the GIL for its whole (millisecond) run
    data = bytes(8 << 20)
    assert not _runs_beside(lambda: data.count(b"\x01"))


@pytest.mark.parametrize("name", list(_long_calls()))
def test_the_gil_is_released_during_the_kernels(name):
    # behaviour, not timing (the speed of two threads at once is
    # benchmarks/python_threads.py's): another thread runs Python code
    # while a kernel runs
    assert _runs_beside(_long_calls()[name]), name


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _leak_ops():
    rng = np.random.default_rng(7)
    c = 64  # per-channel scratch of a few KB: a leak shows at once
    x = rng.standard_normal((8, c)).astype(np.float32)
    x4 = rng.standard_normal((2, c, 3, 3))
    g, b = np.ones(c, np.float32), np.zeros(c, np.float32)
    g64, b64 = np.ones(c), np.zeros(c)
    _, cache = bnfast.batchnorm_forward(
        x, g, b, {"mode": "train"}, activation="relu"
    )
    _, cache4 = bnfast.spatial_batchnorm_forward(
        x4, g64, b64, {"mode": "train"}
    )
    _, lcache = bnfast.layernorm_forward(x, g, b, {})
    _, gcache = bnfast.spatial_groupnorm_forward(x4, g64, b64, 8, {})
    out = np.empty_like(x)
    test = {"mode": "test", "running_mean": g, "running_var": g}

    def bad():
        with pytest.raises(ValueError):
            bnfast.batchnorm_forward(x, g, b, {"mode": "train"}, out=x)

    def bad_dout():
        with pytest.raises(ValueError):
            bnfast.batchnorm_backward(x[:4], cache)

    return {
        "bn forward-train": lambda: bnfast.batchnorm_forward(
            x, g, b, {"mode": "train"}
        ),
        "bn forward-test out=": lambda: bnfast.batchnorm_forward(
            x, g, b, test, out=out
        ),
        "bn backward relu": lambda: bnfast.batchnorm_backward(x, cache),
        "spatial forward-train": lambda: bnfast.spatial_batchnorm_forward(
            x4, g64, b64, {"mode": "train"}
        ),
        "spatial backward": lambda: bnfast.spatial_batchnorm_backward(
            x4, cache4
        ),
        "layernorm": lambda: (
            bnfast.layernorm_forward(x, g, b, {}),
            bnfast.layernorm_backward(x, lcache),
        ),
        "groupnorm": lambda: (
            bnfast.spatial_groupnorm_forward(x4, g64, b64, 8, {}),
            bnfast.spatial_groupnorm_backward(x4, gcache),
        ),
        "errors": lambda: (bad(), bad_dout()),
    }


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/self/statm"
)
@pytest.mark.parametrize("name", list(_leak_ops()))
def test_no_leak_over_ten_thousand_calls(name):
    op = _leak_ops()[name]
    for _ in range(1000):  # warm up allocator pools
        op()
    before = _rss()
    for _ in range(10_000):
        op()
    grown = _rss() - before
    assert grown < 1 << 20, f"{name}: RSS grew {grown} bytes"
