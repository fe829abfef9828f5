"""Two Python threads calling bnfast at once against one: do the calls
run in parallel (the kernels release the GIL and share nothing)?

    python benchmarks/python_threads.py [--quick]

In-cache work (a large call is memory-bound, and two of them share the
memory bus): float32 forward-train calls of 256x1024 (1 MiB, in each
core's L2) into per-thread outputs (no page faults), with one kernel
thread each.  Prints the time of k calls on one thread, of k calls on each
of two threads at once (best of 5, interleaved), and their ratio: 1.0 is
perfect overlap, 2.0 none.  A measurement, not a test: on a busy machine
the ratio rises (this was a test of the suite, which failed whenever other
work held a core; tests/test_concurrency.py checks the GIL release and the
results of concurrent calls).
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
    x = np.random.default_rng(0).standard_normal((256, 1024)).astype(
        np.float32)
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
    print(f"{calls} calls of batchnorm_forward float32 (256, 1024), one "
          f"kernel thread: one Python thread {single * 1e3:.2f} ms, two "
          f"threads at once {double * 1e3:.2f} ms: ratio "
          f"{double / single:.2f} (1.0 = full overlap, 2.0 = none)")


if __name__ == "__main__":
    main()
