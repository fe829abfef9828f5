"""Two Python threads calling bnfast at once against one: do the calls
run in parallel (the kernels release the GIL and share nothing)?

    python benchmarks/python_threads.py [--quick]

In-cache work (a large call is memory-bound, and two of them share the
memory bus): float32 forward-train calls of 256x1024 (1 MiB, in each
core's L2) into per-thread outputs (no page faults), with one kernel
thread each.  Prints the time of k calls on one thread, of k calls on each
of two threads at once (best of 5, interleaved), and their ratio: 1.0 is
perfect overlap, 2.0 none.  Then, while one thread runs large calls
(float64 backward of 4096x1024, 32 MB), the longest pause of a Python
loop in another thread against one call's duration: a kernel holding the
GIL would pause the loop for all of it.  Measurements, not tests: on a
busy machine the ratio and the pause rise (both were tests of the suite,
which failed whenever other work held a core; tests/test_concurrency.py
checks the GIL release without a clock, and the results of concurrent
calls).
"""

import argparse
import threading
import time

import numpy as np

import bnfast


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls")
    args = ap.parse_args()
    calls = 5 if args.quick else 20
    bnfast.set_num_threads(1)
    x = (
        np.random.default_rng(0)
        .standard_normal((256, 1024))
        .astype(np.float32)
    )
    g, b = np.ones(1024), np.zeros(1024)

    def work():
        out = np.empty_like(x)
        for _ in range(calls):
            bnfast.batchnorm_forward(x, g, b, {"mode": "train"}, out=out)

    def one():
        start = time.perf_counter()
        work()
        return time.perf_counter() - start

    def two():
        threads = [threading.Thread(target=work) for _ in range(2)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start

    singles, doubles = [], []
    for _ in range(5):
        singles.append(one())
        doubles.append(two())
    single, double = min(singles), min(doubles)
    print(
        f"{calls} calls of batchnorm_forward float32 (256, 1024), one "
        f"kernel thread: one Python thread {single * 1e3:.2f} ms, two "
        f"threads at once {double * 1e3:.2f} ms: ratio "
        f"{double / single:.2f} (1.0 = full overlap, 2.0 = none)"
    )
    pause, one = longest_pause(2 if args.quick else 5)
    print(
        f"beside batchnorm_backward float64 (4096, 1024) calls of "
        f"{one * 1e3:.1f} ms in another thread, a Python loop's longest "
        f"pause: {pause * 1e3:.2f} ms ({pause / one:.2f} of a call; near 1 "
        f"would mean the GIL held)"
    )


def longest_pause(calls):
    """(longest pause of a Python loop beside `calls` large calls, the
    duration of one call), seconds."""
    x = np.random.default_rng(0).standard_normal((4096, 1024))
    g, b = np.ones(1024), np.zeros(1024)
    _, cache = bnfast.batchnorm_forward(x, g, b, {"mode": "train"})
    dout = np.ones_like(x)

    def work():
        for _ in range(calls):
            bnfast.batchnorm_backward(dout, cache)

    work()
    start = time.perf_counter()
    bnfast.batchnorm_backward(dout, cache)
    one = time.perf_counter() - start
    worker = threading.Thread(target=work)
    longest, last = 0.0, time.perf_counter()
    worker.start()
    while worker.is_alive():
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    worker.join()
    return longest, one


if __name__ == "__main__":
    main()
