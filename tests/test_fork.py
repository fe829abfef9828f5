"""Forked children (os.fork(), multiprocessing's 'fork' start method, the
default of Pool and ProcessPoolExecutor on Linux before Python 3.14): they
work after the parent ran threaded kernels (GNU OpenMP's thread pool does
not survive fork(): a child's first parallel region used to hang forever).
A forked child runs the kernels on one thread until it calls
set_num_threads; after the parent went parallel, set_num_threads(n > 1)
in the child warns and stays on one thread.

Each scenario runs in a fresh interpreter with a deadline, so that a hang
fails the test instead of hanging the suite; the forked child is killed
at the deadline."""

import os
import subprocess
import sys
import textwrap

import pytest

import bnfast

pytestmark = [
    pytest.mark.skipif(
        not hasattr(os, "fork"), reason="no os.fork on this platform"
    ),
    pytest.mark.skipif(
        not bnfast._kernels.have_openmp(),
        reason="built without OpenMP: one thread anyway",
    ),
]

# The scenario's prologue: a 2 MB batch, split on 2 threads (rows split:
# the statistics merge per-thread partials, so the threaded result differs
# from the serial one in the last bits), the serial and threaded results,
# and run_forked(child), which forks, runs child() in the child and returns
# its exit code (a deadline kills a hung child).
PROLOGUE = r"""
import os, signal, sys, time, warnings
import numpy as np
import bnfast

bnfast._kernels._set_parallel_min(64 * 1024)
x = np.random.default_rng(0).standard_normal((4000, 64)) + 3
g, b = np.ones(64), np.zeros(64)

def call():
    return bnfast.batchnorm_forward(x, g, b, {"mode": "train"})[0]

def run_forked(child, deadline=30):
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            code = child()
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    end = time.monotonic() + deadline
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            sys.exit("the forked child hung")
        time.sleep(0.01)
"""


def run(body):
    code = PROLOGUE + textwrap.dedent(body)
    try:
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as e:  # the parent itself hung
        pytest.fail(f"the scenario hung:\n{e.stdout}\n{e.stderr}")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_forked_child_works_after_a_threaded_call():
    out = run("""
        bnfast.set_num_threads(1)
        serial = call()
        bnfast.set_num_threads(2)
        threaded = call()          # the parent's OpenMP threads now exist

        def child():
            # one thread by default: the results of one thread, bitwise
            np.testing.assert_array_equal(call(), serial)
            assert bnfast.get_num_threads() == 1, bnfast.get_num_threads()
            # the threads of the parent cannot be had: a warning, serial
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                bnfast.set_num_threads(2)
            assert len(w) == 1 and w[0].category is RuntimeWarning, w
            assert "fork" in str(w[0].message), str(w[0].message)
            assert bnfast.get_num_threads() == 1
            np.testing.assert_array_equal(call(), serial)
            bnfast.set_num_threads(1)       # no warning for 1
            bnfast.set_num_threads(None)    # nor for the default
            assert bnfast.get_num_threads() == 1
            grandchild = run_forked(lambda: int(not np.array_equal(
                call(), serial)))
            return grandchild

        assert run_forked(child) == 0
        # the parent keeps its threads
        assert bnfast.get_num_threads() == 2
        np.testing.assert_array_equal(call(), threaded)
        print("ok")
    """)
    assert out.strip() == "ok"


def test_a_child_forked_before_any_threaded_call_may_use_threads():
    out = run("""
        bnfast.set_num_threads(2)
        bnfast.set_num_threads(1)
        serial = call()             # no parallel region yet in this process

        def child():
            assert bnfast.get_num_threads() == 1
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                bnfast.set_num_threads(2)
            assert bnfast.get_num_threads() == 2
            threaded = call()
            return int(not np.allclose(threaded, serial, rtol=1e-12,
                                       atol=1e-12))

        assert run_forked(child) == 0
        print("ok")
    """)
    assert out.strip() == "ok"


def test_a_fork_pool_works_after_a_threaded_call():
    out = run("""
        import multiprocessing

        bnfast.set_num_threads(1)
        serial = call()
        bnfast.set_num_threads(2)
        call()

        def work(i):
            return bnfast.get_num_threads(), call()

        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(2) as pool:
            results = pool.map_async(work, range(4)).get(timeout=30)
        for threads, res in results:
            assert threads == 1
            np.testing.assert_array_equal(res, serial)
        print("ok")
    """)
    assert out.strip() == "ok"
