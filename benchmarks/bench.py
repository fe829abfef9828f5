"""bnfast benchmark and equivalence report.

Run from the repository root, with bnfast installed:

    python benchmarks/bench.py                 # default sizes, 7 repeats
    python benchmarks/bench.py --quick         # small sizes, 3 repeats (CI)
    python benchmarks/bench.py --json out.json --repeat 11

1. Equivalence.  For every (shape, dtype) bnfast and bnfast.reference run on
   the same seeded random data; for each quantity the report prints the
   relative error max|fast - ref| / max|ref| and PASS/FAIL against the
   tolerance (1e-4 for float32, 1e-10 for float64).  Each fast function is
   compared with its twin of the same name.  The exit status is 1 if any
   quantity fails.  (The test suite makes the stricter comparison, against
   a wider-precision oracle, on many more shapes and layouts.)

2. Timing.  Median time per call in microseconds of forward-train,
   forward-test, backward and backward_alt for bnfast and the NumPy
   reference (each fast function against its twin of the same name: the
   reference's batchnorm_backward walks the staged graph,
   batchnorm_backward_alt is the simplified formula) and, when
   ``import torch`` works, PyTorch's single-threaded CPU kernels
   (torch.native_batch_norm / aten.native_batch_norm_backward, one
   backward shown in both backward rows).  Each
   measurement times a loop of k calls (k chosen so that it takes >= 20 ms,
   5 ms with --quick); within a repeat the implementations run interleaved,
   round-robin, so that machine noise hits them alike.

   "roofline" is the memory-bandwidth bound: the time of np.copyto for an
   array of x's size (2 passes over memory) scaled to the passes each op
   needs at least: forward-train 3 (read x twice, write out) = 1.5 copies,
   forward-test 2 = 1 copy, backward 5 (read dy, x twice, write dx) = 2.5
   copies.  "roof" columns are roofline_time / impl_time: 1.00 means the
   implementation runs at copy speed.  The copy writes into an array made
   once; every implementation here returns a new array, whose first touch
   costs page faults and zeroing: "fresh" is the time of x.copy() (a copy
   into a new array) in copies, the share of that cost.  "x ref" / "x torch" are the speedups
   of bnfast (other_time / bnfast_time).
"""
import argparse
import gc
import json
import math
import platform
import statistics
import sys
import time

import numpy as np

import bnfast
from bnfast import reference

try:
    import torch
except ImportError:
    torch = None

DEFAULT_SIZES = [(64, 256), (256, 1024), (8192, 2048), (262144, 16)]
QUICK_SIZES = [(64, 256), (256, 1024), (4096, 256)]
DTYPES = [np.float32, np.float64]
TOLERANCE = {np.float32: 1e-4, np.float64: 1e-10}
EPS = 1e-5
MOMENTUM = 0.9
OPS = ["forward-train", "forward-test", "backward", "backward_alt"]
COPIES = {"forward-train": 1.5, "forward-test": 1.0, "backward": 2.5,
          "backward_alt": 2.5}
QUANTITIES = ["train.out", "train.rmean", "train.rvar", "test.out",
              "dx", "dgamma", "dbeta"]


def log(msg, end="\n"):
    print(msg, end=end, file=sys.stderr, flush=True)


def make_data(n, d, dtype, seed):
    """Seeded inputs: columns offset by 3 + 2*randn, random gamma, beta,
    running statistics and upstream gradient, all of dtype."""
    rng = np.random.default_rng(seed)
    offset = 3 + 2 * rng.standard_normal(d)
    arrays = {
        "x": rng.standard_normal((n, d)) + offset,
        "gamma": rng.standard_normal(d),
        "beta": rng.standard_normal(d),
        "running_mean": offset + 0.1 * rng.standard_normal(d),
        "running_var": 0.5 + rng.random(d),
        "dout": rng.standard_normal((n, d)),
    }
    return {k: v.astype(dtype) for k, v in arrays.items()}


def bn_param(data, mode):
    return {"mode": mode, "eps": EPS, "momentum": MOMENTUM,
            "running_mean": data["running_mean"].copy(),
            "running_var": data["running_var"].copy()}


def rel_err(fast, ref):
    fast, ref = np.asarray(fast, np.float64), np.asarray(ref, np.float64)
    scale = np.abs(ref).max()
    return float(np.abs(fast - ref).max() / (scale if scale > 0 else 1.0))


def check_equivalence(data):
    """Relative error of bnfast vs the reference for each quantity."""
    x, g, b = data["x"], data["gamma"], data["beta"]
    results = {}
    for mod in (bnfast, reference):
        p = bn_param(data, "train")
        out, cache = mod.batchnorm_forward(x, g, b, p)
        test_out, _ = mod.batchnorm_forward(x, g, b, bn_param(data, "test"))
        dx, dgamma, dbeta = mod.batchnorm_backward(data["dout"], cache)
        results[mod] = [out, p["running_mean"], p["running_var"], test_out,
                        dx, dgamma, dbeta]
    return {q: rel_err(f, r) for q, f, r in
            zip(QUANTITIES, results[bnfast], results[reference])}


def equivalence_section(sizes, report):
    print("== Equivalence: max|fast - ref| / max|ref|")
    print(f"{'dtype':8} {'shape':>13} "
          + " ".join(f"{q:>11}" for q in QUANTITIES) + "  status")
    ok = True
    for (n, d) in sizes:
        for dtype in DTYPES:
            name = np.dtype(dtype).name
            log(f"equivalence {name} {n}x{d}")
            errs = check_equivalence(make_data(n, d, dtype, seed=n * 7 + d))
            tol = TOLERANCE[dtype]
            bad = [q for q, e in errs.items() if not e <= tol]
            ok &= not bad
            status = "PASS" if not bad else "FAIL: " + ", ".join(bad)
            print(f"{name:8} {f'{n}x{d}':>13} "
                  + " ".join(f"{errs[q]:11.2e}" for q in QUANTITIES)
                  + f"  {status} (tol {tol:g})")
            report.append({"dtype": name, "shape": [n, d], "tolerance": tol,
                           "errors": errs, "pass": not bad})
    return ok


def cases(data):
    """{(op, impl): zero-argument callable}, plus ('copy', 'roofline')."""
    x, g, b, dout = data["x"], data["gamma"], data["beta"], data["dout"]
    fns = {}
    for name, mod in (("bnfast", bnfast), ("reference", reference)):
        train, test = bn_param(data, "train"), bn_param(data, "test")
        _, cache = mod.batchnorm_forward(x, g, b, bn_param(data, "train"))
        fns["forward-train", name] = (
            lambda mod=mod, p=train: mod.batchnorm_forward(x, g, b, p))
        fns["forward-test", name] = (
            lambda mod=mod, p=test: mod.batchnorm_forward(x, g, b, p))
        fns["backward", name] = (
            lambda mod=mod, c=cache: mod.batchnorm_backward(dout, c))
        fns["backward_alt", name] = (
            lambda mod=mod, c=cache: mod.batchnorm_backward_alt(dout, c))
    if torch is not None:
        tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, g, b, dout))
        rm = torch.from_numpy(data["running_mean"].copy())
        rv = torch.from_numpy(data["running_var"].copy())
        _, save_mean, save_invstd = torch.native_batch_norm(
            tx, tw, tb, rm.clone(), rv.clone(), True, 0.1, EPS)
        fns["forward-train", "torch"] = lambda: torch.native_batch_norm(
            tx, tw, tb, rm, rv, True, 0.1, EPS)
        fns["forward-test", "torch"] = lambda: torch.native_batch_norm(
            tx, tw, tb, rm, rv, False, 0.1, EPS)
        fns["backward", "torch"] = (
            lambda: torch.ops.aten.native_batch_norm_backward(
                tdy, tx, tw, rm, rv, save_mean, save_invstd, True, EPS,
                [True, True, True]))
    dst = np.empty_like(x)
    fns["copy", "roofline"] = lambda: np.copyto(dst, x)
    fns["copy", "fresh"] = x.copy
    return fns


def time_loop(fn, k):
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    return time.perf_counter() - t0


def calibrate(fn, target):
    """Smallest k (roughly) for which k calls of fn take >= target s."""
    fn()  # warm up
    k = 1
    while True:
        t = time_loop(fn, k)
        if t >= target:
            return k
        k = max(2 * k, math.ceil(1.2 * k * target / max(t, 1e-9)))


def measure(fns, repeat, target, label):
    """Median seconds per call of each fn, interleaved round-robin."""
    loops = {key: calibrate(fn, target) for key, fn in fns.items()}
    samples = {key: [] for key in fns}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    log(f"timing {label}: repeat", end="")
    try:
        for r in range(repeat):
            log(f" {r + 1}/{repeat}", end="")
            for key, fn in fns.items():
                samples[key].append(time_loop(fn, loops[key]) / loops[key])
    finally:
        if gc_was_enabled:
            gc.enable()
    log("")
    return {key: statistics.median(s) for key, s in samples.items()}, \
        samples, loops


def fmt_us(t):
    return "-" if t is None else f"{t * 1e6:.1f}"


def fmt_ratio(num, den, suffix=""):
    return "-" if num is None or den is None else f"{num / den:.2f}{suffix}"


def timing_section(sizes, repeat, target, report):
    impls = ["bnfast", "reference"] + (["torch"] if torch is not None else [])
    rows = []
    for (n, d) in sizes:
        for dtype in DTYPES:
            name = np.dtype(dtype).name
            fns = cases(make_data(n, d, dtype, seed=n * 7 + d))
            med, samples, loops = measure(fns, repeat, target,
                                          f"{name} {n}x{d}")
            copy = med["copy", "roofline"]
            fresh = med["copy", "fresh"] / copy
            for op in OPS:
                # torch has one backward: its time serves both rows
                t = {impl: med.get((op if op != "backward_alt"
                                    or impl != "torch" else "backward", impl))
                     for impl in impls}
                roof = COPIES[op] * copy
                rows.append((op, name, f"{n}x{d}", t, roof, fresh))
                report.append({
                    "op": op, "dtype": name, "shape": [n, d],
                    "median_s": {**t, "roofline": roof},
                    "samples_s": {i: samples.get((op, i)) for i in impls},
                    "loops": {i: loops.get((op, i)) for i in impls},
                    "copy_median_s": copy,
                    "copy_samples_s": samples["copy", "roofline"],
                    "fresh_copy_in_copies": fresh,
                })
    print(f"\n== Timing: median us per call over {repeat} repeats "
          "(roof = roofline_time / time)")
    head = (f"{'op':14} {'dtype':8} {'shape':>11} {'bnfast':>9} "
            f"{'reference':>10} {'torch':>9} {'roofline':>9} {'x ref':>7} "
            f"{'x torch':>7} {'roof bnf':>8} {'roof trc':>8} {'fresh':>6}")
    print(head)
    print("-" * len(head))
    for op, name, shape, t, roof, fresh in rows:
        bnf, ref, trc = t["bnfast"], t["reference"], t.get("torch")
        print(f"{op:14} {name:8} {shape:>11} {fmt_us(bnf):>9} "
              f"{fmt_us(ref):>10} {fmt_us(trc):>9} {fmt_us(roof):>9} "
              f"{fmt_ratio(ref, bnf, 'x'):>7} {fmt_ratio(trc, bnf, 'x'):>7} "
              f"{fmt_ratio(roof, bnf):>8} {fmt_ratio(roof, trc):>8} "
              f"{fresh:6.2f}")


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else "not installed",
        "bnfast": bnfast.__version__,
        "simd": bnfast._kernels.simd_level(),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, 3 repeats, 5 ms loops (CI)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="measurements per implementation (default 7, "
                         "quick 3)")
    ap.add_argument("--json", metavar="PATH", help="write results as JSON")
    args = ap.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    repeat = args.repeat or (3 if args.quick else 7)
    target = 0.005 if args.quick else 0.020
    if torch is not None:
        torch.set_num_threads(1)

    report = {"machine": machine(), "quick": args.quick, "repeat": repeat,
              "target_s": target, "equivalence": [], "timing": []}
    ok = equivalence_section(sizes, report["equivalence"])
    timing_section(sizes, repeat, target, report["timing"])
    m = report["machine"]
    print(f"\nmachine: {m['cpu']}, python {m['python']}, numpy {m['numpy']}, "
          f"torch {m['torch']}, bnfast {m['bnfast']} simd {m['simd']} "
          "(bnfast and torch single-threaded)")
    print("equivalence:", "PASS" if ok else "FAIL")
    report["pass"] = ok
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
