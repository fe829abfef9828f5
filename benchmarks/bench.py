"""bnfast benchmark and equivalence report.

Run from the repository root, with bnfast installed:

    python benchmarks/bench.py                 # default sizes, 7 repeats
    python benchmarks/bench.py --quick         # small sizes, 3 repeats (CI)
    python benchmarks/bench.py --json out.json --repeat 11
    python benchmarks/bench.py --sweep --json benchmarks/results/sweep.json
    python benchmarks/plot.py benchmarks/results/sweep.json   # the plot

--sweep runs every family over five sizes from tiny (x of 8-64 KiB, in L1
or L2) to many times the per-core L2 (x up to 128 MiB), both dtypes, every
row (the "sweep" sizes of FAMILIES; 7 repeats, about 4 minutes with
PyTorch on a 2-core Xeon); benchmarks/plot.py draws speedup and roofline
fraction against the bytes of x from its --json output.  Progress ([done/
total] family dtype shape, the repeats, seconds) goes to stderr, the report
to stdout.  numba is not compared: there is no numba implementation here.

It covers five op families, each on float32 and float64:

    batchnorm     batchnorm_forward / _backward / _backward_alt, x (N, D)
    spatial-nchw  spatial_batchnorm_forward / _backward, x (N, C, H, W)
    spatial-nhwc  the same with axis=-1 on the same data channels-last,
                  x (N, H, W, C)
    layernorm     layernorm_forward / _backward, x (N, D), ln_param {}
    groupnorm     spatial_groupnorm_forward / _backward, x (N, C, H, W),
                  G groups, gn_param {}

Data is seeded random: x offset per channel (per feature for (N, D)) by
3 + 2*randn, random gamma, beta (shape (C,) or (D,)), running statistics
and upstream gradient.

1. Equivalence.  For every family, shape and dtype bnfast and
   bnfast.reference run on the same data; for each quantity (forward
   output, running statistics where there are any, dx, dgamma, dbeta) the
   report prints the relative error max|fast - ref| / max|ref| and
   PASS/FAIL against the tolerance (1e-4 for float32, 1e-10 for float64).
   Each fast function is compared with its twin of the same name.  The
   exit status is 1 if any quantity fails.  (The test suite makes the
   stricter comparison, against a wider-precision oracle, on many more
   shapes and layouts.)

2. Timing.  Median time per call in microseconds of each row for bnfast,
   the NumPy reference (each fast function against its twin of the same
   name: the reference's batchnorm_backward walks the staged graph,
   batchnorm_backward_alt is the simplified formula; the reference's
   spatial functions transpose to (everything, C) and back) and, when
   ``import torch`` works, PyTorch's CPU kernels (both on --threads threads, default 1):

    batchnorm, spatial-*   torch.native_batch_norm /
                           aten.native_batch_norm_backward (for batchnorm
                           one backward shown in both backward rows;
                           spatial-nhwc gets an NCHW-shaped view of the
                           channels-last data, torch's channels_last format)
    layernorm              torch.native_layer_norm /
                           aten.native_layer_norm_backward
    groupnorm              torch.native_group_norm /
                           aten.native_group_norm_backward

   Backward rows include dgamma and dbeta for every implementation.  Each
   measurement times a loop of k calls (k chosen so that it takes >= 20 ms,
   5 ms with --quick); within a repeat the implementations of one family,
   shape and dtype run interleaved, round-robin, so that machine noise hits
   them alike.

   "roofline" is the memory-bandwidth bound: the time of np.copyto for an
   array of x's size (2 passes over memory) scaled to the passes each op
   needs at least:

    batch norm (all layouts) and group norm forward-train
                 3 passes (statistics need a full read of x before any
                 output: read x twice, write out) = 1.5 copies
    batch norm forward-test  2 passes (read x, write out) = 1 copy
    layer norm forward       2 passes = 1 copy (each row is normalized
                             while it is in cache)
    batch norm and group norm backward
                 5 passes (read dy and x for the sums, again for dx, write
                 dx) = 2.5 copies
    layer norm backward      3 passes (read dy, x, write dx; fused per row)
                             = 1.5 copies

   "roof" columns are roofline_time / impl_time: 1.00 means the
   implementation runs at copy speed.  The copy writes into an array made
   once; the implementations return a new array, whose first touch costs
   page faults and zeroing ("fresh" is the time of x.copy(), a copy into a
   new array, in copies: the share of that cost), except in the batch norm
   rows marked "out=", which write into a preallocated array (bnfast's and
   the reference's out=, PyTorch's native_batch_norm.out) as the copy
   does.  "x ref" / "x torch"
   are the speedups of bnfast (other_time / bnfast_time).
"""
import argparse
import functools
import gc
import json
import math
import os
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

DTYPES = [np.float32, np.float64]
TOLERANCE = {np.float32: 1e-4, np.float64: 1e-10}
EPS = 1e-5
MOMENTUM = 0.9
BN_QUANTITIES = ["train.out", "train.rmean", "train.rvar", "test.out",
                 "dx", "dgamma", "dbeta"]
NORM_QUANTITIES = ["out", "dx", "dgamma", "dbeta"]
IMPLS = ["bnfast", "reference", "torch"]


def log(msg, end="\n"):
    print(msg, end=end, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data

def seed_of(shape):
    """Deterministic seed from the shape ((n, d) -> n*7 + d)."""
    return functools.reduce(lambda acc, s: acc * 7 + s, shape)


def make_data(shape, dtype, seed, axis=1):
    """Seeded inputs: x offset along ``axis`` by 3 + 2*randn per channel,
    random gamma, beta, running statistics (per channel) and upstream
    gradient, all of dtype."""
    rng = np.random.default_rng(seed)
    c = shape[axis]
    offset = 3 + 2 * rng.standard_normal(c)
    bshape = [1] * len(shape)
    bshape[axis] = c
    arrays = {
        "x": rng.standard_normal(shape) + offset.reshape(bshape),
        "gamma": rng.standard_normal(c),
        "beta": rng.standard_normal(c),
        "running_mean": offset + 0.1 * rng.standard_normal(c),
        "running_var": 0.5 + rng.random(c),
        "dout": rng.standard_normal(shape),
    }
    return {k: v.astype(dtype) for k, v in arrays.items()}


def channels_last(data):
    """The same data with x and dout moved to (N, H, W, C), contiguous."""
    out = dict(data)
    for k in ("x", "dout"):
        out[k] = np.ascontiguousarray(np.moveaxis(data[k], 1, -1))
    return out


def bn_param(data, mode):
    return {"mode": mode, "eps": EPS, "momentum": MOMENTUM,
            "running_mean": data["running_mean"].copy(),
            "running_var": data["running_var"].copy()}


def rel_err(fast, ref):
    fast, ref = np.asarray(fast, np.float64), np.asarray(ref, np.float64)
    scale = np.abs(ref).max()
    return float(np.abs(fast - ref).max() / (scale if scale > 0 else 1.0))


def tensors(data):
    """torch views of the data (shared memory): x, w, b, dy, rm, rv."""
    t = {k: torch.from_numpy(v) for k, v in data.items()}
    return (t["x"], t["gamma"], t["beta"], t["dout"],
            t["running_mean"].clone(), t["running_var"].clone())


# ---------------------------------------------------------------- families
#
# A family: how to make its data for each size list ("sizes" by default,
# "quick" for --quick, "sweep" for --sweep), which quantities to compare
# (run: mod, data -> list of arrays in QUANTITIES order), the timed
# callables (cases: data -> {(row, impl): callable}), the roofline copies
# per row and torch aliases (a row that shows another row's torch time).

def bn_run(mod, data):
    x, g, b = data["x"], data["gamma"], data["beta"]
    p = bn_param(data, "train")
    out, cache = mod.batchnorm_forward(x, g, b, p)
    test_out, _ = mod.batchnorm_forward(x, g, b, bn_param(data, "test"))
    dx, dgamma, dbeta = mod.batchnorm_backward(data["dout"], cache)
    return [out, p["running_mean"], p["running_var"], test_out,
            dx, dgamma, dbeta]


def bn_cases(data):
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
        # into a preallocated array: no page faults of a fresh output
        buf = np.empty_like(x)
        fns["fwd-train out=", name] = (
            lambda mod=mod, p=train, o=buf: mod.batchnorm_forward(
                x, g, b, p, out=o))
        fns["fwd-test out=", name] = (
            lambda mod=mod, p=test, o=buf: mod.batchnorm_forward(
                x, g, b, p, out=o))
        fns["backward out=", name] = (
            lambda mod=mod, c=cache, o=buf: mod.batchnorm_backward(
                dout, c, out=o))
    if torch is not None:
        t = tensors(data)
        fns.update(torch_bn_cases(t, "forward-train", "forward-test",
                                  "backward"))
        fns.update(torch_bn_out_cases(t))
    return fns


def torch_bn_out_cases(t):
    """PyTorch's out= variants of the same kernels.  Not for the
    backward: PyTorch 2.13's native_batch_norm_backward.out computes into
    new tensors and copies them into out (slower than its plain backward),
    so the "backward out=" row shows PyTorch's plain backward instead
    (torch_alias)."""
    tx, tw, tb, _, rm, rv = t
    c = tx.shape[1]
    out = torch.empty_like(tx)
    m, s = torch.empty(c, dtype=tx.dtype), torch.empty(c, dtype=tx.dtype)
    trm, trv = rm.clone(), rv.clone()
    nbn = torch.ops.aten.native_batch_norm.out
    return {
        ("fwd-train out=", "torch"): lambda: nbn(
            tx, tw, tb, rm, rv, True, 0.1, EPS, out=out, save_mean=m,
            save_invstd=s),
        ("fwd-test out=", "torch"): lambda: nbn(
            tx, tw, tb, trm, trv, False, 0.1, EPS, out=out, save_mean=m,
            save_invstd=s),
    }


def torch_bn_cases(t, train_row, test_row, backward_row):
    tx, tw, tb, tdy, rm, rv = t
    _, save_mean, save_invstd = torch.native_batch_norm(
        tx, tw, tb, rm.clone(), rv.clone(), True, 0.1, EPS)
    fns = {
        (train_row, "torch"): lambda: torch.native_batch_norm(
            tx, tw, tb, rm, rv, True, 0.1, EPS),
        (backward_row, "torch"):
            lambda: torch.ops.aten.native_batch_norm_backward(
                tdy, tx, tw, rm, rv, save_mean, save_invstd, True, EPS,
                [True, True, True]),
    }
    if test_row is not None:
        # own running statistics: the train call updates rm, rv in place
        trm, trv = rm.clone(), rv.clone()
        fns[test_row, "torch"] = lambda: torch.native_batch_norm(
            tx, tw, tb, trm, trv, False, 0.1, EPS)
    return fns


def spatial_run(axis):
    def run(mod, data):
        x, g, b = data["x"], data["gamma"], data["beta"]
        p = bn_param(data, "train")
        out, cache = mod.spatial_batchnorm_forward(x, g, b, p, axis=axis)
        test_out, _ = mod.spatial_batchnorm_forward(
            x, g, b, bn_param(data, "test"), axis=axis)
        dx, dgamma, dbeta = mod.spatial_batchnorm_backward(data["dout"],
                                                           cache)
        return [out, p["running_mean"], p["running_var"], test_out,
                dx, dgamma, dbeta]
    return run


def spatial_cases(prefix, axis, test):
    """Rows '<prefix> fwd-train', ['<prefix> fwd-test',] '<prefix> backward'
    of spatial batch norm with channels along axis (1 or -1)."""
    train_row, backward_row = f"{prefix} fwd-train", f"{prefix} backward"
    test_row = f"{prefix} fwd-test" if test else None

    def cases(data):
        x, g, b, dout = data["x"], data["gamma"], data["beta"], data["dout"]
        fns = {}
        for name, mod in (("bnfast", bnfast), ("reference", reference)):
            train, tst = bn_param(data, "train"), bn_param(data, "test")
            _, cache = mod.spatial_batchnorm_forward(
                x, g, b, bn_param(data, "train"), axis=axis)
            fns[train_row, name] = (
                lambda mod=mod, p=train: mod.spatial_batchnorm_forward(
                    x, g, b, p, axis=axis))
            if test:
                fns[test_row, name] = (
                    lambda mod=mod, p=tst: mod.spatial_batchnorm_forward(
                        x, g, b, p, axis=axis))
            fns[backward_row, name] = (
                lambda mod=mod, c=cache: mod.spatial_batchnorm_backward(
                    dout, c))
        if torch is not None:
            tx, tw, tb, tdy, rm, rv = tensors(data)
            if axis != 1:
                # (N, H, W, C) data as an NCHW-shaped channels_last tensor
                tx, tdy = tx.permute(0, 3, 1, 2), tdy.permute(0, 3, 1, 2)
            fns.update(torch_bn_cases((tx, tw, tb, tdy, rm, rv), train_row,
                                      test_row, backward_row))
        return fns
    return cases


def ln_run(mod, data):
    out, cache = mod.layernorm_forward(data["x"], data["gamma"],
                                       data["beta"], {})
    return [out, *mod.layernorm_backward(data["dout"], cache)]


def ln_cases(data):
    x, g, b, dout = data["x"], data["gamma"], data["beta"], data["dout"]
    fns = {}
    for name, mod in (("bnfast", bnfast), ("reference", reference)):
        _, cache = mod.layernorm_forward(x, g, b, {})
        fns["layernorm forward", name] = (
            lambda mod=mod: mod.layernorm_forward(x, g, b, {}))
        fns["layernorm backward", name] = (
            lambda mod=mod, c=cache: mod.layernorm_backward(dout, c))
    if torch is not None:
        tx, tw, tb, tdy, _, _ = tensors(data)
        shape = [x.shape[1]]
        _, mean, rstd = torch.native_layer_norm(tx, shape, tw, tb, EPS)
        fns["layernorm forward", "torch"] = lambda: torch.native_layer_norm(
            tx, shape, tw, tb, EPS)
        fns["layernorm backward", "torch"] = (
            lambda: torch.ops.aten.native_layer_norm_backward(
                tdy, tx, shape, mean, rstd, tw, tb, [True, True, True]))
    return fns


def gn_run(mod, data):
    out, cache = mod.spatial_groupnorm_forward(
        data["x"], data["gamma"], data["beta"], data["G"], {})
    return [out, *mod.spatial_groupnorm_backward(data["dout"], cache)]


def gn_cases(data):
    x, g, b, dout, G = (data[k] for k in ("x", "gamma", "beta", "dout", "G"))
    fns = {}
    for name, mod in (("bnfast", bnfast), ("reference", reference)):
        _, cache = mod.spatial_groupnorm_forward(x, g, b, G, {})
        fns["groupnorm forward", name] = (
            lambda mod=mod: mod.spatial_groupnorm_forward(x, g, b, G, {}))
        fns["groupnorm backward", name] = (
            lambda mod=mod, c=cache: mod.spatial_groupnorm_backward(dout, c))
    if torch is not None:
        tx, tw, tb, tdy, _, _ = tensors({k: v for k, v in data.items()
                                         if k != "G"})
        n, c = x.shape[:2]
        hw = x[0, 0].size
        _, mean, rstd = torch.native_group_norm(tx, tw, tb, n, c, hw, G, EPS)
        fns["groupnorm forward", "torch"] = lambda: torch.native_group_norm(
            tx, tw, tb, n, c, hw, G, EPS)
        fns["groupnorm backward", "torch"] = (
            lambda: torch.ops.aten.native_group_norm_backward(
                tdy, tx, mean, rstd, tw, n, c, hw, G, [True, True, True]))
    return fns


def nd_data(size, dtype):
    return make_data(size, dtype, seed_of(size))


def nhwc_data(size, dtype):
    return channels_last(make_data(size, dtype, seed_of(size)))


def gn_data(size, dtype):
    shape, G = size[:4], size[4]
    return {**make_data(shape, dtype, seed_of(shape)), "G": G}


# --sweep: x of 8 KiB (float32) to 49 MiB (float64), in-L1 to many times L2
SPATIAL_SWEEP = [(2, 16, 8, 8), (4, 32, 16, 16), (8, 64, 28, 28),
                 (16, 64, 56, 56), (32, 64, 56, 56)]

FAMILIES = [
    {"name": "batchnorm", "data": nd_data,
     "sizes": [(64, 256), (256, 1024), (8192, 2048), (262144, 16)],
     "quick": [(64, 256), (256, 1024), (4096, 256)],
     "sweep": [(64, 256), (256, 1024), (1024, 1024), (4096, 1024),
               (8192, 2048)],
     "quantities": BN_QUANTITIES, "run": bn_run, "cases": bn_cases,
     "copies": {"forward-train": 1.5, "forward-test": 1.0, "backward": 2.5,
                "backward_alt": 2.5, "fwd-train out=": 1.5,
                "fwd-test out=": 1.0, "backward out=": 2.5},
     "torch_alias": {"backward_alt": "backward",
                     "backward out=": "backward"}},
    {"name": "spatial-nchw", "data": nd_data,
     "sizes": [(32, 64, 56, 56)], "quick": [(4, 8, 10, 10)],
     "sweep": SPATIAL_SWEEP,
     "quantities": BN_QUANTITIES, "run": spatial_run(1),
     "cases": spatial_cases("spatial-nchw", 1, test=True),
     "copies": {"spatial-nchw fwd-train": 1.5, "spatial-nchw fwd-test": 1.0,
                "spatial-nchw backward": 2.5}},
    # sizes given as NCHW: the data is spatial-nchw's, moved channels-last
    {"name": "spatial-nhwc", "data": nhwc_data,
     "sizes": [(32, 64, 56, 56)], "quick": [(4, 8, 10, 10)],
     "sweep": SPATIAL_SWEEP,
     "quantities": BN_QUANTITIES, "run": spatial_run(-1),
     "cases": spatial_cases("spatial-nhwc", -1, test=False),
     "copies": {"spatial-nhwc fwd-train": 1.5,
                "spatial-nhwc backward": 2.5}},
    {"name": "layernorm", "data": nd_data,
     "sizes": [(4096, 1024)], "quick": [(64, 256)],
     "sweep": [(64, 256), (256, 1024), (1024, 1024), (4096, 1024),
               (8192, 1024)],
     "quantities": NORM_QUANTITIES, "run": ln_run, "cases": ln_cases,
     "copies": {"layernorm forward": 1.0, "layernorm backward": 1.5}},
    # sizes (N, C, H, W, G)
    {"name": "groupnorm", "data": gn_data,
     "sizes": [(32, 64, 56, 56, 8)], "quick": [(4, 8, 10, 10, 2)],
     "sweep": [(*size, min(8, size[1] // 4)) for size in SPATIAL_SWEEP],
     "quantities": NORM_QUANTITIES, "run": gn_run, "cases": gn_cases,
     "copies": {"groupnorm forward": 1.5, "groupnorm backward": 2.5}},
]


def shape_label(data):
    label = "x".join(map(str, data["x"].shape))
    return label + (f" G{data['G']}" if "G" in data else "")


# ---------------------------------------------------------------- equivalence

def check_equivalence(family, data):
    """Relative error of bnfast vs the reference for each quantity."""
    fast = family["run"](bnfast, data)
    ref = family["run"](reference, data)
    return {q: rel_err(f, r)
            for q, f, r in zip(family["quantities"], fast, ref)}


def equivalence_section(families, sizes, report):
    print("== Equivalence: max|fast - ref| / max|ref|")
    ok = True
    for family in families:
        quantities = family["quantities"]
        print(f"\n{'op':12} {'dtype':8} {'shape':>15} "
              + " ".join(f"{q:>11}" for q in quantities) + "  status")
        for size in family[sizes]:
            for dtype in DTYPES:
                name = np.dtype(dtype).name
                data = family["data"](size, dtype)
                shape = shape_label(data)
                log(f"equivalence {family['name']} {name} {shape}")
                errs = check_equivalence(family, data)
                tol = TOLERANCE[dtype]
                bad = [q for q, e in errs.items() if not e <= tol]
                ok &= not bad
                status = "PASS" if not bad else "FAIL: " + ", ".join(bad)
                print(f"{family['name']:12} {name:8} {shape:>15} "
                      + " ".join(f"{errs[q]:11.2e}" for q in quantities)
                      + f"  {status} (tol {tol:g})")
                report.append({"family": family["name"], "dtype": name,
                               "shape": list(data["x"].shape),
                               "groups": data.get("G"), "tolerance": tol,
                               "errors": errs, "pass": not bad})
    return ok


# ---------------------------------------------------------------- timing

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
    start = time.perf_counter()
    log(f"timing {label}: calibrating,", end="")
    loops = {key: calibrate(fn, target) for key, fn in fns.items()}
    samples = {key: [] for key in fns}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    log(" repeat", end="")
    try:
        for r in range(repeat):
            log(f" {r + 1}/{repeat}", end="")
            for key, fn in fns.items():
                samples[key].append(time_loop(fn, loops[key]) / loops[key])
    finally:
        if gc_was_enabled:
            gc.enable()
    log(f" ({time.perf_counter() - start:.1f} s)")
    return {key: statistics.median(s) for key, s in samples.items()}, \
        samples, loops


def fmt_us(t):
    return "-" if t is None else f"{t * 1e6:.1f}"


def fmt_ratio(num, den, suffix=""):
    return "-" if num is None or den is None else f"{num / den:.2f}{suffix}"


def timing_section(families, sizes, repeat, target, report):
    impls = IMPLS if torch is not None else IMPLS[:2]
    rows = []
    total = sum(len(family[sizes]) for family in families) * len(DTYPES)
    done = 0
    start = time.perf_counter()
    for family in families:
        alias = family.get("torch_alias", {})
        for size in family[sizes]:
            for dtype in DTYPES:
                done += 1
                name = np.dtype(dtype).name
                data = family["data"](size, dtype)
                shape = shape_label(data)
                fns = family["cases"](data)
                x = data["x"]
                dst = np.empty_like(x)
                fns["copy", "roofline"] = lambda x=x, dst=dst: np.copyto(dst, x)
                fns["copy", "fresh"] = x.copy
                med, samples, loops = measure(
                    fns, repeat, target,
                    f"[{done}/{total}] {family['name']} {name} {shape}")
                copy = med["copy", "roofline"]
                fresh = med["copy", "fresh"] / copy
                for op, copies in family["copies"].items():
                    keys = {impl: (alias.get(op, op) if impl == "torch"
                                   else op, impl) for impl in impls}
                    t = {impl: med.get(key) for impl, key in keys.items()}
                    roof = copies * copy
                    rows.append((op, name, shape, t, roof, fresh))
                    report.append({
                        "family": family["name"], "op": op, "dtype": name,
                        "shape": list(x.shape), "groups": data.get("G"),
                        "x_bytes": x.nbytes, "roofline_copies": copies,
                        "median_s": {**t, "roofline": roof},
                        "samples_s": {i: samples.get(k)
                                      for i, k in keys.items()},
                        "loops": {i: loops.get(k) for i, k in keys.items()},
                        "copy_median_s": copy,
                        "copy_samples_s": samples["copy", "roofline"],
                        "fresh_copy_in_copies": fresh,
                    })
                del fns, data, x, dst
                gc.collect()
    log(f"timing: {total} measurements in "
        f"{time.perf_counter() - start:.0f} s")
    print(f"\n== Timing: median us per call over {repeat} repeats "
          "(roof = roofline_time / time)")
    head = (f"{'op':22} {'dtype':8} {'shape':>15} {'bnfast':>9} "
            f"{'reference':>10} {'torch':>9} {'roofline':>9} {'x ref':>7} "
            f"{'x torch':>7} {'roof bnf':>8} {'roof trc':>8} {'fresh':>6}")
    print(head)
    print("-" * len(head))
    for op, name, shape, t, roof, fresh in rows:
        bnf, ref, trc = t["bnfast"], t["reference"], t.get("torch")
        print(f"{op:22} {name:8} {shape:>15} {fmt_us(bnf):>9} "
              f"{fmt_us(ref):>10} {fmt_us(trc):>9} {fmt_us(roof):>9} "
              f"{fmt_ratio(ref, bnf, 'x'):>7} {fmt_ratio(trc, bnf, 'x'):>7} "
              f"{fmt_ratio(roof, bnf):>8} {fmt_ratio(roof, trc):>8} "
              f"{fresh:6.2f}")


# ---------------------------------------------------------------- main

def caches():
    """CPU 0's data/unified caches from sysfs, e.g. {"L1d": "48K", ...}."""
    out = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(base)):
            path = os.path.join(base, index)
            if not index.startswith("index"):
                continue
            with open(os.path.join(path, "type")) as f:
                kind = f.read().strip()
            if kind == "Instruction":
                continue
            with open(os.path.join(path, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(path, "size")) as f:
                out[f"L{level}{'d' if kind == 'Data' else ''}"] = \
                    f.read().strip()
    except OSError:
        pass
    return out


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
        "caches": caches(),
        # the extension may be rebuilt between runs: which build was timed
        "kernels_built": time.strftime(
            "%Y-%m-%d %H:%M:%S",
            time.localtime(os.path.getmtime(bnfast._kernels.__file__))),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="small sizes, 3 repeats, 5 ms loops (CI)")
    mode.add_argument("--sweep", action="store_true",
                      help="every family over sizes from tiny to larger "
                           "than cache (for benchmarks/plot.py)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="measurements per implementation (default 7, "
                         "quick 3)")
    ap.add_argument("--json", metavar="PATH", help="write results as JSON")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for bnfast and PyTorch alike (default 1)")
    args = ap.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 7)
    target = 0.005 if args.quick else 0.020
    bnfast.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)

    sizes = "quick" if args.quick else "sweep" if args.sweep else "sizes"
    report = {"machine": machine(), "quick": args.quick,
              "sweep": args.sweep, "repeat": repeat,
              "threads": args.threads,
              "target_s": target, "equivalence": [], "timing": []}
    load_start = os.getloadavg()
    ok = equivalence_section(FAMILIES, sizes, report["equivalence"])
    timing_section(FAMILIES, sizes, repeat, target, report["timing"])
    # a shared machine: load well above the 1.0 of this process means noise
    report["loadavg_1_5_15"] = {"start": load_start, "end": os.getloadavg()}
    log("load average (1, 5, 15 min): start %.2f %.2f %.2f, "
        "end %.2f %.2f %.2f" % (*load_start, *os.getloadavg()))
    m = report["machine"]
    print(f"\nmachine: {m['cpu']}, python {m['python']}, numpy {m['numpy']}, "
          f"torch {m['torch']}, bnfast {m['bnfast']} simd {m['simd']} "
          f"(bnfast and torch on {args.threads} thread"
          f"{'s' if args.threads > 1 else ''})")
    print("equivalence:", "PASS" if ok else "FAIL")
    report["pass"] = ok
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
