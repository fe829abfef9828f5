"""Speedup of two (or more) threads over one, per op, in one process.

    python benchmarks/threads.py            # default sizes
    python benchmarks/threads.py --quick    # small sizes (CI)
    python benchmarks/threads.py --threads 4

For each op: the best of 4 alternating rounds (1 thread, n threads, 1, n) of
the median of 9 timed loops.  Sizes: in-cache (256x1024) and larger batch
norm, NCHW spatial batch norm, layer norm, group norm; float32.
"""
import argparse
import sys
import time

import numpy as np

import bnfast


def median_time(fn, reps):
    times = []
    for _ in range(9):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t0) / reps)
    return float(np.median(times))


def cases(quick):
    rng = np.random.default_rng(0)
    out = []

    def ones(c):
        return np.ones(c, np.float32), np.zeros(c, np.float32)

    bn_shapes = [(256, 1024)] if quick else [(256, 1024), (8192, 2048),
                                             (262144, 16)]
    for shape in bn_shapes:
        x = (rng.standard_normal(shape) + 3).astype(np.float32)
        g, b = ones(shape[1])
        _, c = bnfast.batchnorm_forward(x, g, b, {"mode": "train"})
        out.append((f"batchnorm forward-train {shape}",
                    lambda x=x, g=g, b=b: bnfast.batchnorm_forward(
                        x, g, b, {"mode": "train"})))
        out.append((f"batchnorm backward {shape}",
                    lambda x=x, c=c: bnfast.batchnorm_backward(x, c)))
    img = (8, 64, 28, 28) if quick else (32, 64, 56, 56)
    x = rng.standard_normal(img).astype(np.float32)
    g, b = ones(64)
    _, c = bnfast.spatial_batchnorm_forward(x, g, b, {"mode": "train"})
    out.append((f"spatial NCHW forward-train {img}",
                lambda: bnfast.spatial_batchnorm_forward(
                    x, g, b, {"mode": "train"})))
    out.append((f"spatial NCHW backward {img}",
                lambda: bnfast.spatial_batchnorm_backward(x, c)))
    _, cg = bnfast.spatial_groupnorm_forward(x, g, b, 8, {})
    out.append((f"groupnorm forward {img} G=8",
                lambda: bnfast.spatial_groupnorm_forward(x, g, b, 8, {})))
    out.append((f"groupnorm backward {img} G=8",
                lambda: bnfast.spatial_groupnorm_backward(x, cg)))
    rows = (256, 1024) if quick else (4096, 1024)
    xl = rng.standard_normal(rows).astype(np.float32)
    gl, bl = ones(rows[1])
    _, cl = bnfast.layernorm_forward(xl, gl, bl, {})
    out.append((f"layernorm forward {rows}",
                lambda: bnfast.layernorm_forward(xl, gl, bl, {})))
    out.append((f"layernorm backward {rows}",
                lambda: bnfast.layernorm_backward(xl, cl)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    saved = bnfast.get_num_threads()
    print(f"threads: 1 vs {args.threads} (OpenMP: "
          f"{bnfast._kernels.have_openmp()})")
    try:
        for name, fn in cases(args.quick):
            fn()
            t0 = time.perf_counter()
            fn()
            reps = max(1, int(0.01 / (time.perf_counter() - t0)))
            best = {}
            for n in (1, args.threads, 1, args.threads):
                bnfast.set_num_threads(n)
                t = median_time(fn, reps)
                best[n] = min(best.get(n, t), t)
            t1, tn = best[1], best[args.threads]
            print(f"{name:44s} 1 thread {t1 * 1e6:9.1f} us  {args.threads} "
                  f"threads {tn * 1e6:9.1f} us  speedup {t1 / tn:.2f}x")
    finally:
        bnfast.set_num_threads(saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
