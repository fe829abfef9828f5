# mypy: ignore-errors
# (the benchmark script, private and not API: only main() is typed, for
# python -m bnfast; the package's API is checked with mypy --strict)
"""bnfast benchmark and equivalence report.

Shipped in the package (PyTorch, numba: pip install "bnfast[bench]"); run
it from anywhere with bnfast installed (benchmarks/bench.py in the
repository is the same report, with the same options):

    python -m bnfast bench                 # default sizes, 7 repeats
    python -m bnfast bench --quick         # small sizes, 3 repeats (CI)
    python -m bnfast bench --json out.json --repeat 11
    python -m bnfast bench --sweep --json benchmarks/results/sweep.json
    python -m bnfast bench --median-of run1.json run2.json run3.json
    python benchmarks/plot.py benchmarks/results/sweep.json   # the plot
    python -m bnfast bench --torch-entry   # PyTorch's entry points
    python -m bnfast bench --half          # float16 / bfloat16 (issue 13)

--sweep runs every family over five or six sizes from tiny (x of 32 bytes
for the (2, 4) batch norm rows, 8-64 KiB otherwise, in L1 or L2) to many
times the per-core L2 (x up to 128 MiB), both dtypes, every row (the
"sweep" sizes of FAMILIES; 7 repeats, 5-6 minutes with PyTorch and numba
on a 2-core machine) and ends with the targets summary of issue 11 (see
5. below); benchmarks/plot.py draws speedup and roofline fraction against
the bytes of x from its --json output.  Progress ([done/total] family
dtype shape, the repeats, seconds) goes to stderr, the report to stdout.

--torch-entry only times the ways a user can call PyTorch's kernels for
each op (torch.native_batch_norm, torch.ops.aten.native_batch_norm,
torch.batch_norm, torch.nn.functional.batch_norm, ...; the same for layer
and group norm and the backwards) at tiny, 64 KiB and 1 MiB sizes,
interleaved, 31 repeats: how the PyTorch entry points below were chosen
(the measurement is written down above aten_op).

It covers five op families, each on float32 and float64:

    batchnorm     batchnorm_forward / _backward / _backward_alt, x (N, D)
    spatial-nchw  spatial_batchnorm_forward / _backward, x (N, C, H, W)
    spatial-nhwc  the same with axis=-1 on the same data channels-last,
                  x (N, H, W, C)
    layernorm     layernorm_forward / _backward, x (N, D), ln_param {}
    rmsnorm       rmsnorm_forward / _backward, x (N, D), rms_param
                  {"eps": 1e-5}
    groupnorm     spatial_groupnorm_forward / _backward, x (N, C, H, W),
                  G groups, gn_param {}
    groupnorm-nhwc  the same with axis=-1 on the same data channels-last,
                  x (N, H, W, C)
    instancenorm  spatial_groupnorm_forward / _backward with G = C (what
                  bnfast.InstanceNorm calls), x (N, C, H, W)

Data is seeded random: x offset per channel (per feature for (N, D)) by
3 + 2*randn, random gamma, beta (shape (C,) or (D,)), running statistics
and upstream gradient.

Two peers are optional, each with its columns empty ("-") when it cannot
be imported: PyTorch (CPU kernels) and numba (bnfast/_numba_bn.py, the
team's numba loop copied as it is: batch norm on C-order (N, D),
forward-train and backward only; float64 statistics, the apply in x's
dtype as x * scale + shift).

1. Equivalence.  For every family, shape and dtype bnfast and
   bnfast.reference run on the same data; for each quantity (forward
   output, running statistics where there are any, dx, dgamma, dbeta) the
   report prints the relative error max|fast - ref| / max|ref| and
   PASS/FAIL against the tolerance (1e-4 for float32, 1e-10 for float64);
   batch norm (N, D)'s dx relative to the larger of max|ref| and the size
   of its terms, max|gamma * invstd| * max|dout| (at N = 2 dx is zero but
   for eps: all cancellation, and max|ref| is the reference's rounding).
   Each fast function is compared with its twin of the same name.  The
   exit status is 1 if any quantity fails.  (The test suite makes the
   stricter comparison, against a wider-precision oracle, on many more
   shapes and layouts.)  Then the peers' batch norm (N, D) against the
   same reference, through the calls that are timed: what each computes
   (PyTorch: outputs and gradients, not its running statistics, which use
   the unbiased variance; numba: forward-train output and the gradients).
   A peer outside the tolerance is marked MISMATCH; that does not change
   the exit status, which is about bnfast.

2. Accuracy.  Batch norm (4096, 256) float32 with x = randn + 1e4 (an
   offset of 1e4 times the spread): the largest absolute error of the
   forward-train output and of the backward dx against the reference
   computed in float64 on the same float32 values, for bnfast, the
   reference on float32, PyTorch and numba side by side, and bnfast's
   error over the reference's and PyTorch's (issue 11: at most 1/10).

3. Timing.  Median time per call in microseconds of each row for bnfast,
   the NumPy reference (each fast function against its twin of the same
   name: the reference's batchnorm_backward walks the staged graph,
   batchnorm_backward_alt is the simplified formula; the reference's
   spatial functions transpose to (everything, C) and back), PyTorch's
   CPU kernels and numba (all on --threads threads, default 1; numba's
   loops are serial).  PyTorch goes through the fastest entry point
   measured for each op (--torch-entry):

    batchnorm, spatial-*   torch.native_batch_norm (train and test) /
                           aten.native_batch_norm_backward (for batchnorm
                           one backward shown in both backward rows;
                           spatial-nhwc gets an NCHW-shaped view of the
                           channels-last data, torch's channels_last format)
    layernorm              torch.native_layer_norm /
                           aten.native_layer_norm_backward
    rmsnorm                torch.nn.functional.rms_norm / its autograd
                           backward (torch.autograd.grad on a retained
                           graph: dx and dgamma)
    groupnorm              torch.group_norm /
                           aten.native_group_norm_backward
                           (groupnorm-nhwc: on an NCHW-shaped view of the
                           channels-last data, torch's channels_last format)
    instancenorm           torch.instance_norm (use_input_stats, no running
                           statistics) / its autograd backward
                           (torch.autograd.grad of dx, dgamma, dbeta; not
                           an aten entry point, so a few us of autograd
                           overhead are included)

   (aten.X is the C++ callable of torch.ops.aten.X.default.)  numba has the
   batchnorm forward-train, backward and backward_alt rows (one backward
   in both); it is called once per dtype before any timing, so compiling
   is not timed.  Backward rows include dgamma and dbeta for every
   implementation.  Each measurement times a loop of k calls (k chosen so
   that it takes >= 20 ms, 5 ms with --quick); within a repeat the
   implementations of one family, shape and dtype run interleaved,
   round-robin, so that machine noise hits them alike.

   "roofline" is the memory-bandwidth bound: the time of a copy of x into
   an existing array (2 passes over memory), the faster of np.copyto and
   bnfast._kernels.stream_copy (a benchmark-only copy with streaming
   stores, csrc/bench_copy.c), both timed in the same round-robin, scaled
   to the passes each op needs at least:

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
    RMS norm                 as layer norm: 1 and 1.5 copies

   Which copy is faster depends on the size (glibc's memcpy switches to
   streaming stores itself above a threshold that follows the cache size
   the machine reports); the "copy" column names the winner of each row
   (np or nt) and a table after the timing gives both copies per size.
   "roof" columns are roofline_time / impl_time: 1.00 means the
   implementation runs at copy speed.  The copies write into an array made
   once; the implementations return a new array, whose first touch costs
   page faults and zeroing ("fresh" is the time of x.copy(), a copy into a
   new array, in roofline copies: the share of that cost), except in the
   batch norm rows marked "out=", which write into a preallocated array
   (bnfast's and the reference's out=, PyTorch's native_batch_norm.out) as
   the copy does.  "x ref" / "x torch" / "x numba" are the speedups of
   bnfast (other_time / bnfast_time).

4. Machine, versions, load average, equivalence PASS/FAIL.

5. With --sweep, the targets of issue 11 on this run (also in the JSON
   under "targets"), each marked HOLDS, MISSES or not measured, with the
   rows that miss: over the rows without out=, the geometric mean of the
   speedup vs PyTorch (>= 1.5x) and every row >= 1.0x PyTorch; from 64 KiB
   of x up every row >= 1.0x numba; from 256 KiB up every row >= 0.8 of
   the roofline, judged on the row's out= twin where a fresh output's
   page faults dominate (x.copy() >= 1.25 roofline copies); (2, 4)
   forward-test and backward at most 0.5x PyTorch's time; (64, 256) every
   op at most 0.7x PyTorch's time; the accuracy row at most 1/10 of the
   reference's and PyTorch's error.  Issue 11 asks for the median over 3
   runs; this is one.  Two threads vs one: benchmarks/threads.py --sweep.
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

# The peers, PyTorch and numba, are optional, each with its columns empty
# without it; main() imports them (import_peers) once the command line is
# parsed, so that the usage, --help and --median-of do not wait for
# PyTorch's import (seconds), nor does importing this module.
torch = None
numba_bn = None


def import_peers():
    """Import the peers that are installed: PyTorch, and numba through
    _numba_bn.py (beside this file: the team's numba loop, copied as it
    is)."""
    global torch, numba_bn
    try:
        import torch as torch_module
    except ImportError:
        torch_module = None
    try:
        from bnfast import _numba_bn as numba_module
    except ImportError:
        numba_module = None
    torch, numba_bn = torch_module, numba_module


# the benchmark-only streaming-store copy (csrc/bench_copy.c); an older
# build without it gets a roofline of np.copyto alone
stream_copy = getattr(bnfast._kernels, "stream_copy", None)

DTYPES = [np.float32, np.float64]
TOLERANCE = {np.float32: 1e-4, np.float64: 1e-10}
EPS = 1e-5
MOMENTUM = 0.9
BN_QUANTITIES = [
    "train.out",
    "train.rmean",
    "train.rvar",
    "test.out",
    "dx",
    "dgamma",
    "dbeta",
]
NORM_QUANTITIES = ["out", "dx", "dgamma", "dbeta"]
IMPLS = ["bnfast", "reference", "torch", "numba"]
PEERS = ["torch", "numba"]


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
    return {
        "mode": mode,
        "eps": EPS,
        "momentum": MOMENTUM,
        "running_mean": data["running_mean"].copy(),
        "running_var": data["running_var"].copy(),
    }


def rel_err(fast, ref, floor=0.0):
    """max|fast - ref| / max|ref|, or / floor when that is larger."""
    fast, ref = np.asarray(fast, np.float64), np.asarray(ref, np.float64)
    scale = max(np.abs(ref).max(), floor)
    return float(np.abs(fast - ref).max() / (scale if scale > 0 else 1.0))


def bn_scales(data):
    """Error scales of batch norm (N, D) quantities whose result can be all
    cancellation: dx is a difference of terms of size |gamma| * invstd *
    |dout|, and with N = 2 (the (2, 4) rows) it is zero but for eps, so
    max|ref dx| is rounding noise of the reference itself.  dx's error is
    taken relative to the larger of max|ref dx| and that term size."""
    x = data["x"].astype(np.float64)
    invstd = 1.0 / np.sqrt(x.var(axis=0) + EPS)
    return {
        "dx": float(
            np.abs(data["gamma"] * invstd).max() * np.abs(data["dout"]).max()
        )
    }


def tensors(data):
    """torch views of the data (shared memory): x, w, b, dy, rm, rv."""
    t = {k: torch.from_numpy(v) for k, v in data.items()}
    return (
        t["x"],
        t["gamma"],
        t["beta"],
        t["dout"],
        t["running_mean"].clone(),
        t["running_var"].clone(),
    )


# ------------------------------------------------------ PyTorch entry points
#
# PyTorch is timed through the fastest entry point a user has for each op,
# among those that compute the same thing.  Measured with
# `python -m bnfast bench --torch-entry` (one thread, float32, medians
# of 31 interleaved repeats of 10 ms loops; noisy shared 2-core AMD EPYC,
# PyTorch 2.13.0+cpu; "aten.X" is torch.ops.aten.X), us per call at
# tiny (2x4; group norm 2x16x8x8 G4) / 64 KiB (64x256; 4x32x16x16 G8) /
# 1 MiB (256x1024; 8x32x32x32 G8):
#
#   batch norm forward-train   torch.native_batch_norm          8.0  24.0  357
#                              torch._native_batch_norm_legit   8.1  22.9  319
#                              torch.batch_norm                11.2  23.7  344
#                              F.batch_norm                    12.1  24.9  367
#                              aten.native_batch_norm          12.6  25.6  413
#                              aten.native_batch_norm.default._op
#                                                              11.2  25.5  315
#   batch norm forward-test    torch.native_batch_norm          6.2  13.0  199
#                              torch._native_batch_norm_legit_no_training
#                                                               6.3  12.1  198
#                              torch.batch_norm                 6.6  13.7  200
#                              F.batch_norm                     7.9  14.8  201
#   batch norm backward        aten.native_batch_norm_backward  9.5  26.2  461
#                              ... .default                    11.5  23.9  440
#                              ... .default._op                10.9  23.7  536
#                              aten.batch_norm_backward        11.9  25.5  441
#   layer norm forward         torch.native_layer_norm          4.6  12.7  217
#                              torch.layer_norm                 4.8  12.9  208
#                              F.layer_norm                     5.6  13.6  214
#   layer norm backward        aten.native_layer_norm_backward  9.8  18.1  374
#                              ... .default                    10.7  19.3  345
#                              ... .default._op                 9.5  20.2  345
#   group norm forward         torch.native_group_norm          6.7  21.1  199
#                              torch.group_norm                 6.2  17.9  198
#                              F.group_norm                     9.9  21.8  207
#   group norm backward        aten.native_group_norm_backward 12.1  23.7  235
#                              ... .default                    12.4  25.1  251
#                              ... .default._op                11.5  24.0  223
#
# The backwards have no torch.* binding, and their candidates differ by
# less than this run's noise; two runs of 101 repeats at the tiny size
# (run 1 / run 2, us) separate them: native_batch_norm_backward packet
# 13.0 / 11.6, .default 12.3 / 11.3, .default._op 11.9 / 10.6;
# native_layer_norm_backward 11.6 / 10.4, 11.4 / 10.1, 10.8 / 9.7;
# native_group_norm_backward 12.9 / 10.5, 12.8 / 10.3, 11.9 / 10.7; and
# group norm forward: torch.native_group_norm 7.1 / 6.7, torch.group_norm
# 6.3 / 5.7, F.group_norm 10.7 / 9.5.
#
# So: forwards through the torch.* Python bindings (the torch.ops.aten
# packets and overloads parse their arguments against the schema, 1-4 us
# more at the tiny size; F.* adds a Python layer): torch.native_batch_norm
# in both modes (_native_batch_norm_legit[_no_training] and, in test mode,
# torch.batch_norm are within the noise of it), torch.native_layer_norm
# (torch.layer_norm within the noise), torch.group_norm (0.4-3 us faster
# than torch.native_group_norm in every run, tiny and 64 KiB).  Backwards
# through the C++ callable of the aten overload,
# torch.ops.aten.X.default._op (aten_op below; private, but a user can
# call it): in the 101-repeat runs 0.7-1.4 us less than the packet, except
# group norm's second run (+0.2).
# torch.inference_mode() made no difference beyond the noise (not used).
# At 1 MiB every entry point is within the noise (the kernel dominates).


def aten_op(name):
    """The fastest handle on torch.ops.aten.<name>.default: its C++
    callable (OpOverload._op), else the OpOverload itself."""
    overload = getattr(torch.ops.aten, name).default
    return getattr(overload, "_op", overload)


def torch_entry_candidates(bn_shape, gn_size, dtype):
    """{op: {entry point: callable}}: the ways a user can call PyTorch's
    kernels for each op, on the same data, for --torch-entry."""
    import torch.nn.functional as F

    aten = torch.ops.aten
    data = make_data(bn_shape, dtype, seed_of(bn_shape))
    tx, tw, tb, tdy, rm, rv = tensors(data)
    trm, trv = rm.clone(), rv.clone()
    _, sm, si = torch.native_batch_norm(
        tx, tw, tb, rm.clone(), rv.clone(), True, 0.1, EPS
    )
    mask = [True, True, True]
    bnb = aten.native_batch_norm_backward
    reserve = torch.empty(0, dtype=torch.uint8)
    shape = [bn_shape[1]]
    _, lm, lr = torch.native_layer_norm(tx, shape, tw, tb, EPS)
    lnb = aten.native_layer_norm_backward
    gd = gn_data(gn_size, dtype)
    G = gd.pop("G")
    gx, gw, gb, gdy, _, _ = tensors(gd)
    n, c = gx.shape[:2]
    hw = gx[0, 0].numel()
    _, gm, gr = torch.native_group_norm(gx, gw, gb, n, c, hw, G, EPS)
    gnb = aten.native_group_norm_backward
    bn_label, gn_label = (
        "x".join(map(str, bn_shape)),
        shape_label({**gd, "G": G}),
    )
    return {
        ("batchnorm forward-train", bn_label): {
            "torch.native_batch_norm": lambda: torch.native_batch_norm(
                tx, tw, tb, rm, rv, True, 0.1, EPS
            ),
            "torch._native_batch_norm_legit": lambda: (
                torch._native_batch_norm_legit(
                    tx, tw, tb, rm, rv, True, 0.1, EPS
                )
            ),
            "torch.batch_norm": lambda: torch.batch_norm(
                tx, tw, tb, rm, rv, True, 0.1, EPS, False
            ),
            "F.batch_norm": lambda: F.batch_norm(
                tx, rm, rv, tw, tb, True, 0.1, EPS
            ),
            "aten.native_batch_norm": lambda: aten.native_batch_norm(
                tx, tw, tb, rm, rv, True, 0.1, EPS
            ),
            "aten.native_batch_norm.default._op": lambda: (
                aten.native_batch_norm.default._op(
                    tx, tw, tb, rm, rv, True, 0.1, EPS
                )
            ),
        },
        ("batchnorm forward-test", bn_label): {
            "torch.native_batch_norm": lambda: torch.native_batch_norm(
                tx, tw, tb, trm, trv, False, 0.1, EPS
            ),
            "torch._native_batch_norm_legit_no_training": lambda: (
                torch._native_batch_norm_legit_no_training(
                    tx, tw, tb, trm, trv, 0.1, EPS
                )
            ),
            "torch.batch_norm": lambda: torch.batch_norm(
                tx, tw, tb, trm, trv, False, 0.1, EPS, False
            ),
            "F.batch_norm": lambda: F.batch_norm(
                tx, trm, trv, tw, tb, False, 0.1, EPS
            ),
        },
        ("batchnorm backward", bn_label): {
            "aten.native_batch_norm_backward": lambda: bnb(
                tdy, tx, tw, rm, rv, sm, si, True, EPS, mask
            ),
            "aten.native_batch_norm_backward.default": lambda: bnb.default(
                tdy, tx, tw, rm, rv, sm, si, True, EPS, mask
            ),
            "aten.native_batch_norm_backward.default._op": lambda: (
                bnb.default._op(tdy, tx, tw, rm, rv, sm, si, True, EPS, mask)
            ),
            "aten.batch_norm_backward": lambda: aten.batch_norm_backward(
                tdy, tx, tw, rm, rv, sm, si, True, EPS, mask, reserve
            ),
        },
        ("layernorm forward", bn_label): {
            "torch.native_layer_norm": lambda: torch.native_layer_norm(
                tx, shape, tw, tb, EPS
            ),
            "torch.layer_norm": lambda: torch.layer_norm(
                tx, shape, tw, tb, EPS
            ),
            "F.layer_norm": lambda: F.layer_norm(tx, shape, tw, tb, EPS),
        },
        ("layernorm backward", bn_label): {
            "aten.native_layer_norm_backward": lambda: lnb(
                tdy, tx, shape, lm, lr, tw, tb, mask
            ),
            "aten.native_layer_norm_backward.default": lambda: lnb.default(
                tdy, tx, shape, lm, lr, tw, tb, mask
            ),
            "aten.native_layer_norm_backward.default._op": lambda: (
                lnb.default._op(tdy, tx, shape, lm, lr, tw, tb, mask)
            ),
        },
        ("groupnorm forward", gn_label): {
            "torch.native_group_norm": lambda: torch.native_group_norm(
                gx, gw, gb, n, c, hw, G, EPS
            ),
            "torch.group_norm": lambda: torch.group_norm(gx, G, gw, gb, EPS),
            "F.group_norm": lambda: F.group_norm(gx, G, gw, gb, EPS),
        },
        ("groupnorm backward", gn_label): {
            "aten.native_group_norm_backward": lambda: gnb(
                gdy, gx, gm, gr, gw, n, c, hw, G, mask
            ),
            "aten.native_group_norm_backward.default": lambda: gnb.default(
                gdy, gx, gm, gr, gw, n, c, hw, G, mask
            ),
            "aten.native_group_norm_backward.default._op": lambda: (
                gnb.default._op(gdy, gx, gm, gr, gw, n, c, hw, G, mask)
            ),
        },
    }


# (batch and layer norm (N, D), group norm (N, C, H, W, G)): tiny, 64 KiB,
# 1 MiB of float32
TORCH_ENTRY_SIZES = [
    ((2, 4), (2, 16, 8, 8, 4)),
    ((64, 256), (4, 32, 16, 16, 8)),
    ((256, 1024), (8, 32, 32, 32, 8)),
]


def torch_entry_section(repeat, report):
    """--torch-entry: time every entry point of each op, interleaved."""
    print(
        "== PyTorch entry points: median us per call over "
        f"{repeat} interleaved repeats (float32, "
        f"{torch.get_num_threads()} thread)"
    )
    print(
        f"{'op':24} {'shape':>15} {'entry point':46} {'us':>8} {'/ best':>7}"
    )
    for bn_shape, gn_size in TORCH_ENTRY_SIZES:
        groups = torch_entry_candidates(bn_shape, gn_size, np.float32)
        fns = {
            (op, label, entry): fn
            for (op, label), cands in groups.items()
            for entry, fn in cands.items()
        }
        med, _, _ = measure(
            fns, repeat, 0.010, f"entry points {bn_shape} {gn_size}"
        )
        for (op, label), cands in groups.items():
            best = min(med[op, label, e] for e in cands)
            for entry in cands:
                t = med[op, label, entry]
                print(
                    f"{op:24} {label:>15} {entry:46} {t * 1e6:8.2f} "
                    f"{t / best:7.2f}"
                )
                report.append(
                    {
                        "op": op,
                        "shape": label,
                        "entry": entry,
                        "median_s": t,
                        "best": t == best,
                    }
                )


# ---------------------------------------------------------------- families
#
# A family: how to make its data for each size list ("sizes" by default,
# "quick" for --quick, "sweep" for --sweep), which quantities to compare
# (run: mod, data -> list of arrays in QUANTITIES order), the timed
# callables (cases: data, peers -> {(row, impl): callable}; peers=False
# leaves out PyTorch and numba), the roofline copies per row and peer
# aliases ({peer: {row: other row}}: a row that shows another row's time of
# that peer).


def bn_run(mod, data):
    x, g, b = data["x"], data["gamma"], data["beta"]
    p = bn_param(data, "train")
    out, cache = mod.batchnorm_forward(x, g, b, p)
    test_out, _ = mod.batchnorm_forward(x, g, b, bn_param(data, "test"))
    dx, dgamma, dbeta = mod.batchnorm_backward(data["dout"], cache)
    return [
        out,
        p["running_mean"],
        p["running_var"],
        test_out,
        dx,
        dgamma,
        dbeta,
    ]


def bn_cases(data, peers=True):
    x, g, b, dout = data["x"], data["gamma"], data["beta"], data["dout"]
    fns = {}
    for name, mod in (("bnfast", bnfast), ("reference", reference)):
        train, test = bn_param(data, "train"), bn_param(data, "test")
        _, cache = mod.batchnorm_forward(x, g, b, bn_param(data, "train"))
        fns["forward-train", name] = lambda mod=mod, p=train: (
            mod.batchnorm_forward(x, g, b, p)
        )
        fns["forward-test", name] = lambda mod=mod, p=test: (
            mod.batchnorm_forward(x, g, b, p)
        )
        fns["backward", name] = lambda mod=mod, c=cache: (
            mod.batchnorm_backward(dout, c)
        )
        fns["backward_alt", name] = lambda mod=mod, c=cache: (
            mod.batchnorm_backward_alt(dout, c)
        )
        # into a preallocated array: no page faults of a fresh output
        buf = np.empty_like(x)
        fns["fwd-train out=", name] = lambda mod=mod, p=train, o=buf: (
            mod.batchnorm_forward(x, g, b, p, out=o)
        )
        fns["fwd-test out=", name] = lambda mod=mod, p=test, o=buf: (
            mod.batchnorm_forward(x, g, b, p, out=o)
        )
        fns["backward out=", name] = lambda mod=mod, c=cache, o=buf: (
            mod.batchnorm_backward(dout, c, out=o)
        )
        # the fused ReLU (activation='relu'): one pass as without it
        relu = bn_param(data, "train")
        _, rcache = mod.batchnorm_forward(
            x, g, b, bn_param(data, "train"), activation="relu"
        )
        fns["fwd-train +relu", name] = lambda mod=mod, p=relu: (
            mod.batchnorm_forward(x, g, b, p, activation="relu")
        )
        fns["backward +relu", name] = lambda mod=mod, c=rcache: (
            mod.batchnorm_backward(dout, c)
        )
    fns.update(
        residual_cases(
            data,
            peers,
            "",
            lambda mod, *a, **k: mod.batchnorm_forward(*a, **k),
            "batchnorm_backward",
        )
    )
    if peers and torch is not None:
        t = tensors(data)
        fns.update(
            torch_bn_cases(t, "forward-train", "forward-test", "backward")
        )
        fns.update(torch_bn_out_cases(t))
        fns.update(torch_bn_relu_cases(t))
    if peers and numba_bn is not None:
        fns.update(numba_bn_cases(data))
    return fns


def numba_bn_cases(data):
    """numba_bn's fwd (forward-train) and bwd (backward) on the same
    arrays; the first calls compile them for this dtype, outside the
    timing.  numba_bn has no test mode and no out=."""
    x, g, b, dout = data["x"], data["gamma"], data["beta"], data["dout"]
    _, mean, invstd = numba_bn.fwd(x, g, b, EPS)
    numba_bn.bwd(dout, x, g, mean, invstd)
    return {
        ("forward-train", "numba"): lambda: numba_bn.fwd(x, g, b, EPS),
        ("backward", "numba"): lambda: numba_bn.bwd(dout, x, g, mean, invstd),
    }


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
            tx,
            tw,
            tb,
            rm,
            rv,
            True,
            0.1,
            EPS,
            out=out,
            save_mean=m,
            save_invstd=s,
        ),
        ("fwd-test out=", "torch"): lambda: nbn(
            tx,
            tw,
            tb,
            trm,
            trv,
            False,
            0.1,
            EPS,
            out=out,
            save_mean=m,
            save_invstd=s,
        ),
    }


def torch_bn_relu_cases(t):
    """PyTorch has no fused ReLU on the CPU: relu(batch_norm(x)) as a
    model writes it, with the ReLU in place (the cheapest form), and its
    backward: the ReLU's (threshold_backward) then batch norm's."""
    tx, tw, tb, tdy, rm, rv = t
    out, save_mean, save_invstd = torch.native_batch_norm(
        tx, tw, tb, rm.clone(), rv.clone(), True, 0.1, EPS
    )
    torch.relu_(out)
    nbb = aten_op("native_batch_norm_backward")
    tb_ = aten_op("threshold_backward")

    def forward():
        y = torch.native_batch_norm(tx, tw, tb, rm, rv, True, 0.1, EPS)[0]
        return torch.relu_(y)

    def backward():
        g = tb_(tdy, out, 0)
        return nbb(
            g,
            tx,
            tw,
            rm,
            rv,
            save_mean,
            save_invstd,
            True,
            EPS,
            [True, True, True],
        )

    return {
        ("fwd-train +relu", "torch"): forward,
        ("backward +relu", "torch"): backward,
    }


def residual_cases(data, peers, prefix, forward, backward):
    """The fused residual (residual=z): rows '<prefix>fwd-train +res',
    'fwd-train +res+relu', 'backward +res+relu', 'fwd-test +res+relu',
    against PyTorch's unfused relu_(native_batch_norm(x).add_(z)) (in
    place: its cheapest form) and its backward (threshold_backward, whose
    result is also dz, then batch norm's).  z: dout reversed along the
    batch, laid out as x."""
    x, g, b, dout = data["x"], data["gamma"], data["beta"], data["dout"]
    z = dout[::-1].copy()
    fns = {}
    for name, mod in (("bnfast", bnfast), ("reference", reference)):
        train, relu = bn_param(data, "train"), bn_param(data, "train")
        test = bn_param(data, "test")
        _, cache = forward(
            mod,
            x,
            g,
            b,
            bn_param(data, "train"),
            activation="relu",
            residual=z,
        )
        fns[f"{prefix}fwd-train +res", name] = lambda mod=mod, p=train: (
            forward(mod, x, g, b, p, residual=z)
        )
        fns[f"{prefix}fwd-train +res+relu", name] = lambda mod=mod, p=relu: (
            forward(mod, x, g, b, p, residual=z, activation="relu")
        )
        fns[f"{prefix}backward +res+relu", name] = lambda mod=mod, c=cache: (
            getattr(mod, backward)(dout, c)
        )
        fns[f"{prefix}fwd-test +res+relu", name] = lambda mod=mod, p=test: (
            forward(mod, x, g, b, p, residual=z, activation="relu")
        )
    if peers and torch is not None:
        tx, tw, tb, tdy, rm, rv = tensors(data)
        tz = torch.from_numpy(z)
        trm, trv = rm.clone(), rv.clone()
        out, save_mean, save_invstd = torch.native_batch_norm(
            tx, tw, tb, rm.clone(), rv.clone(), True, 0.1, EPS
        )
        torch.relu_(out.add_(tz))
        nbb = aten_op("native_batch_norm_backward")
        thb = aten_op("threshold_backward")

        def fwd(relu, training=True):
            y = torch.native_batch_norm(
                tx,
                tw,
                tb,
                rm if training else trm,
                rv if training else trv,
                training,
                0.1,
                EPS,
            )[0].add_(tz)
            return torch.relu_(y) if relu else y

        def bwd():
            gz = thb(tdy, out, 0)  # dz, and the batch norm's dy
            return nbb(
                gz,
                tx,
                tw,
                rm,
                rv,
                save_mean,
                save_invstd,
                True,
                EPS,
                [True, True, True],
            ), gz

        fns[f"{prefix}fwd-train +res", "torch"] = lambda: fwd(False)
        fns[f"{prefix}fwd-train +res+relu", "torch"] = lambda: fwd(True)
        fns[f"{prefix}backward +res+relu", "torch"] = bwd
        fns[f"{prefix}fwd-test +res+relu", "torch"] = lambda: fwd(True, False)
    return fns


# memory passes of the residual rows, in copies (read + write = 1): the
# forward reads x (statistics), then x and z and writes y; the backward
# reads dy, x, z and writes dz (the gate), then the plain backward of dz
RESIDUAL_COPIES = {
    "fwd-train +res": 2.0,
    "fwd-train +res+relu": 2.0,
    "backward +res+relu": 4.5,
    "fwd-test +res+relu": 1.5,
}


def torch_bn_cases(t, train_row, test_row, backward_row):
    tx, tw, tb, tdy, rm, rv = t
    _, save_mean, save_invstd = torch.native_batch_norm(
        tx, tw, tb, rm.clone(), rv.clone(), True, 0.1, EPS
    )
    fns = {
        (train_row, "torch"): lambda: torch.native_batch_norm(
            tx, tw, tb, rm, rv, True, 0.1, EPS
        ),
        (
            backward_row,
            "torch",
        ): lambda nbb=aten_op("native_batch_norm_backward"): nbb(
            tdy,
            tx,
            tw,
            rm,
            rv,
            save_mean,
            save_invstd,
            True,
            EPS,
            [True, True, True],
        ),
    }
    if test_row is not None:
        # own running statistics: the train call updates rm, rv in place
        trm, trv = rm.clone(), rv.clone()
        fns[test_row, "torch"] = lambda: torch.native_batch_norm(
            tx, tw, tb, trm, trv, False, 0.1, EPS
        )
    return fns


def spatial_run(axis):
    def run(mod, data):
        x, g, b = data["x"], data["gamma"], data["beta"]
        p = bn_param(data, "train")
        out, cache = mod.spatial_batchnorm_forward(x, g, b, p, axis=axis)
        test_out, _ = mod.spatial_batchnorm_forward(
            x, g, b, bn_param(data, "test"), axis=axis
        )
        dx, dgamma, dbeta = mod.spatial_batchnorm_backward(data["dout"], cache)
        return [
            out,
            p["running_mean"],
            p["running_var"],
            test_out,
            dx,
            dgamma,
            dbeta,
        ]

    return run


def spatial_cases(prefix, axis, test):
    """Rows '<prefix> fwd-train', ['<prefix> fwd-test',] '<prefix> backward'
    of spatial batch norm with channels along axis (1 or -1)."""
    train_row, backward_row = f"{prefix} fwd-train", f"{prefix} backward"
    test_row = f"{prefix} fwd-test" if test else None

    def cases(data, peers=True):
        x, g, b, dout = data["x"], data["gamma"], data["beta"], data["dout"]
        fns = {}
        for name, mod in (("bnfast", bnfast), ("reference", reference)):
            train, tst = bn_param(data, "train"), bn_param(data, "test")
            _, cache = mod.spatial_batchnorm_forward(
                x, g, b, bn_param(data, "train"), axis=axis
            )
            fns[train_row, name] = lambda mod=mod, p=train: (
                mod.spatial_batchnorm_forward(x, g, b, p, axis=axis)
            )
            if test:
                fns[test_row, name] = lambda mod=mod, p=tst: (
                    mod.spatial_batchnorm_forward(x, g, b, p, axis=axis)
                )
            fns[backward_row, name] = lambda mod=mod, c=cache: (
                mod.spatial_batchnorm_backward(dout, c)
            )
        if axis == 1:  # the fused residual of a ResNet block (NCHW)
            fns.update(
                residual_cases(
                    data,
                    peers,
                    f"{prefix} ",
                    lambda mod, *a, **k: mod.spatial_batchnorm_forward(
                        *a, axis=axis, **k
                    ),
                    "spatial_batchnorm_backward",
                )
            )
        if peers and torch is not None:
            tx, tw, tb, tdy, rm, rv = tensors(data)
            if axis != 1:
                # (N, H, W, C) data as an NCHW-shaped channels_last tensor
                tx, tdy = tx.permute(0, 3, 1, 2), tdy.permute(0, 3, 1, 2)
            fns.update(
                torch_bn_cases(
                    (tx, tw, tb, tdy, rm, rv),
                    train_row,
                    test_row,
                    backward_row,
                )
            )
        return fns

    return cases


def ln_run(mod, data):
    out, cache = mod.layernorm_forward(
        data["x"], data["gamma"], data["beta"], {}
    )
    return [out, *mod.layernorm_backward(data["dout"], cache)]


def ln_cases(data, peers=True):
    x, g, b, dout = data["x"], data["gamma"], data["beta"], data["dout"]
    fns = {}
    for name, mod in (("bnfast", bnfast), ("reference", reference)):
        _, cache = mod.layernorm_forward(x, g, b, {})
        fns["layernorm forward", name] = lambda mod=mod: mod.layernorm_forward(
            x, g, b, {}
        )
        fns["layernorm backward", name] = lambda mod=mod, c=cache: (
            mod.layernorm_backward(dout, c)
        )
    if peers and torch is not None:
        tx, tw, tb, tdy, _, _ = tensors(data)
        shape = [x.shape[1]]
        _, mean, rstd = torch.native_layer_norm(tx, shape, tw, tb, EPS)
        fns["layernorm forward", "torch"] = lambda: torch.native_layer_norm(
            tx, shape, tw, tb, EPS
        )
        fns["layernorm backward", "torch"] = (
            lambda lnb=aten_op("native_layer_norm_backward"): lnb(
                tdy, tx, shape, mean, rstd, tw, tb, [True, True, True]
            )
        )
    return fns


def rms_run(mod, data):
    out, cache = mod.rmsnorm_forward(data["x"], data["gamma"], {"eps": EPS})
    return [out, *mod.rmsnorm_backward(data["dout"], cache)]


def rms_cases(data, peers=True):
    x, g, dout = data["x"], data["gamma"], data["dout"]
    p = {"eps": EPS}
    fns = {}
    for name, mod in (("bnfast", bnfast), ("reference", reference)):
        _, cache = mod.rmsnorm_forward(x, g, p)
        fns["rmsnorm forward", name] = lambda mod=mod: mod.rmsnorm_forward(
            x, g, p
        )
        fns["rmsnorm backward", name] = lambda mod=mod, c=cache: (
            mod.rmsnorm_backward(dout, c)
        )
    if peers and torch is not None:
        # F.rms_norm (CPU: a composite of aten ops; the fused
        # aten._fused_rms_norm has no CPU backward), and its backward by
        # autograd on one retained graph: dx and dgamma
        tx, tw, _, tdy, _, _ = tensors(data)
        shape = [x.shape[1]]
        gx = tx.detach().requires_grad_()
        gw = tw.detach().requires_grad_()
        rms_norm = torch.nn.functional.rms_norm
        out = rms_norm(gx, shape, gw, EPS)
        fns["rmsnorm forward", "torch"] = lambda: rms_norm(tx, shape, tw, EPS)
        fns["rmsnorm backward", "torch"] = lambda: torch.autograd.grad(
            out, (gx, gw), tdy, retain_graph=True
        )
    return fns


def gn_run(mod, data, axis=1):
    out, cache = mod.spatial_groupnorm_forward(
        data["x"], data["gamma"], data["beta"], data["G"], {}, axis=axis
    )
    return [out, *mod.spatial_groupnorm_backward(data["dout"], cache)]


def gn_cases(data, peers=True, axis=1, prefix="groupnorm"):
    x, g, b, dout, G = (data[k] for k in ("x", "gamma", "beta", "dout", "G"))
    fns = {}
    fwd_row, bwd_row = f"{prefix} forward", f"{prefix} backward"
    for name, mod in (("bnfast", bnfast), ("reference", reference)):
        _, cache = mod.spatial_groupnorm_forward(x, g, b, G, {}, axis=axis)
        fns[fwd_row, name] = lambda mod=mod: mod.spatial_groupnorm_forward(
            x, g, b, G, {}, axis=axis
        )
        fns[bwd_row, name] = lambda mod=mod, c=cache: (
            mod.spatial_groupnorm_backward(dout, c)
        )
    if peers and torch is not None:
        tx, tw, tb, tdy, _, _ = tensors(
            {k: v for k, v in data.items() if k != "G"}
        )
        if axis != 1:
            # (N, H, W, C) data as an NCHW-shaped channels_last tensor
            tx, tdy = tx.permute(0, 3, 1, 2), tdy.permute(0, 3, 1, 2)
        n, c = tx.shape[:2]
        hw = tx[0, 0].numel()
        if prefix == "instancenorm":
            fns.update(torch_in_cases(tx, tw, tb, tdy, fwd_row, bwd_row))
            return fns
        _, mean, rstd = torch.native_group_norm(tx, tw, tb, n, c, hw, G, EPS)
        # torch.group_norm: the same output, faster to call (see above)
        fns[fwd_row, "torch"] = lambda: torch.group_norm(tx, G, tw, tb, EPS)
        fns[bwd_row, "torch"] = (
            lambda gnb=aten_op("native_group_norm_backward"): gnb(
                tdy, tx, mean, rstd, tw, n, c, hw, G, [True, True, True]
            )
        )
    return fns


def torch_in_cases(tx, tw, tb, tdy, fwd_row, bwd_row):
    """PyTorch's instance norm (InstanceNorm2d without running
    statistics): torch.instance_norm forward, its autograd backward."""
    gx, gw, gb = (
        t.detach().clone().requires_grad_(True) for t in (tx, tw, tb)
    )
    y = torch.instance_norm(gx, gw, gb, None, None, True, 0.1, EPS, False)
    return {
        (fwd_row, "torch"): lambda: torch.instance_norm(
            tx, tw, tb, None, None, True, 0.1, EPS, False
        ),
        (bwd_row, "torch"): lambda: torch.autograd.grad(
            y, (gx, gw, gb), tdy, retain_graph=True
        ),
    }


def gn_nhwc_run(mod, data):
    return gn_run(mod, data, axis=-1)


def gn_nhwc_cases(data, peers=True):
    return gn_cases(data, peers, axis=-1, prefix="groupnorm-nhwc")


def in_cases(data, peers=True):
    return gn_cases(data, peers, prefix="instancenorm")


def nd_data(size, dtype):
    return make_data(size, dtype, seed_of(size))


def nhwc_data(size, dtype):
    return channels_last(make_data(size, dtype, seed_of(size)))


def gn_data(size, dtype):
    shape, G = size[:4], size[4]
    return {**make_data(shape, dtype, seed_of(shape)), "G": G}


def gn_nhwc_data(size, dtype):
    return {**channels_last(gn_data(size, dtype)), "G": size[4]}


def in_data(size, dtype):
    """instance norm: group norm's data with G = C"""
    return gn_data((*size, size[1]), dtype)


# --sweep: x of 8 KiB (float32) to 49 MiB (float64), in-L1 to many times L2
SPATIAL_SWEEP = [
    (2, 16, 8, 8),
    (4, 32, 16, 16),
    (8, 64, 28, 28),
    (16, 64, 56, 56),
    (32, 64, 56, 56),
]

FAMILIES = [
    {
        "name": "batchnorm",
        "data": nd_data,
        "sizes": [(64, 256), (256, 1024), (8192, 2048), (262144, 16)],
        "quick": [(64, 256), (256, 1024), (4096, 256)],
        # (2, 4): the tiny batch, all per-call cost
        "sweep": [
            (2, 4),
            (64, 256),
            (256, 1024),
            (1024, 1024),
            (4096, 1024),
            (8192, 2048),
        ],
        "quantities": BN_QUANTITIES,
        "run": bn_run,
        "cases": bn_cases,
        "scales": bn_scales,
        "copies": {
            "forward-train": 1.5,
            "forward-test": 1.0,
            "backward": 2.5,
            "backward_alt": 2.5,
            "fwd-train out=": 1.5,
            "fwd-test out=": 1.0,
            "backward out=": 2.5,
            "fwd-train +relu": 1.5,
            "backward +relu": 2.5,
            **RESIDUAL_COPIES,
        },
        "peer_alias": {
            "torch": {"backward_alt": "backward", "backward out=": "backward"},
            "numba": {"backward_alt": "backward"},
        },
    },
    {
        "name": "spatial-nchw",
        "data": nd_data,
        "sizes": [(32, 64, 56, 56)],
        "quick": [(4, 8, 10, 10)],
        "sweep": SPATIAL_SWEEP,
        "quantities": BN_QUANTITIES,
        "run": spatial_run(1),
        "cases": spatial_cases("spatial-nchw", 1, test=True),
        "copies": {
            "spatial-nchw fwd-train": 1.5,
            "spatial-nchw fwd-test": 1.0,
            "spatial-nchw backward": 2.5,
            **{f"spatial-nchw {k}": v for k, v in RESIDUAL_COPIES.items()},
        },
    },
    # sizes given as NCHW: the data is spatial-nchw's, moved channels-last
    {
        "name": "spatial-nhwc",
        "data": nhwc_data,
        "sizes": [(32, 64, 56, 56)],
        "quick": [(4, 8, 10, 10)],
        "sweep": SPATIAL_SWEEP,
        "quantities": BN_QUANTITIES,
        "run": spatial_run(-1),
        "cases": spatial_cases("spatial-nhwc", -1, test=False),
        "copies": {
            "spatial-nhwc fwd-train": 1.5,
            "spatial-nhwc backward": 2.5,
        },
    },
    {
        "name": "layernorm",
        "data": nd_data,
        "sizes": [(4096, 1024)],
        "quick": [(64, 256)],
        "sweep": [
            (64, 256),
            (256, 1024),
            (1024, 1024),
            (4096, 1024),
            (8192, 1024),
        ],
        "quantities": NORM_QUANTITIES,
        "run": ln_run,
        "cases": ln_cases,
        "copies": {"layernorm forward": 1.0, "layernorm backward": 1.5},
    },
    # RMS norm on the layer norm rows (issue 13)
    {
        "name": "rmsnorm",
        "data": nd_data,
        "sizes": [(4096, 1024)],
        "quick": [(64, 256)],
        "sweep": [
            (64, 256),
            (256, 1024),
            (1024, 1024),
            (4096, 1024),
            (8192, 1024),
        ],
        "quantities": ["out", "dx", "dgamma"],
        "run": rms_run,
        "cases": rms_cases,
        "copies": {"rmsnorm forward": 1.0, "rmsnorm backward": 1.5},
    },
    # sizes (N, C, H, W, G)
    {
        "name": "groupnorm",
        "data": gn_data,
        "sizes": [(32, 64, 56, 56, 8)],
        "quick": [(4, 8, 10, 10, 2)],
        "sweep": [(*size, min(8, size[1] // 4)) for size in SPATIAL_SWEEP],
        "quantities": NORM_QUANTITIES,
        "run": gn_run,
        "cases": gn_cases,
        "copies": {"groupnorm forward": 1.5, "groupnorm backward": 2.5},
    },
    # sizes (N, C, H, W, G) given as NCHW: groupnorm's data, moved
    # channels-last
    {
        "name": "groupnorm-nhwc",
        "data": gn_nhwc_data,
        "sizes": [(32, 64, 56, 56, 8)],
        "quick": [(4, 8, 10, 10, 2)],
        "sweep": [(*size, min(8, size[1] // 4)) for size in SPATIAL_SWEEP],
        "quantities": NORM_QUANTITIES,
        "run": gn_nhwc_run,
        "cases": gn_nhwc_cases,
        "copies": {
            "groupnorm-nhwc forward": 1.5,
            "groupnorm-nhwc backward": 2.5,
        },
    },
    # sizes (N, C, H, W); G = C
    {
        "name": "instancenorm",
        "data": in_data,
        "sizes": [(32, 64, 56, 56)],
        "quick": [(4, 8, 10, 10)],
        "sweep": SPATIAL_SWEEP,
        "quantities": NORM_QUANTITIES,
        "run": gn_run,
        "cases": in_cases,
        "copies": {"instancenorm forward": 1.5, "instancenorm backward": 2.5},
    },
]


def shape_label(data):
    label = "x".join(map(str, data["x"].shape))
    return label + (f" G{data['G']}" if "G" in data else "")


# ---------------------------------------------------------------- equivalence


def check_equivalence(family, data):
    """Relative error of bnfast vs the reference for each quantity, and
    the reference's results ({quantity: array}) and error floors."""
    fast = family["run"](bnfast, data)
    ref = dict(zip(family["quantities"], family["run"](reference, data)))
    floors = family.get("scales", lambda data: {})(data)
    return (
        {
            q: rel_err(f, ref[q], floors.get(q, 0.0))
            for q, f in zip(family["quantities"], fast)
        },
        ref,
        floors,
    )


def installed_peers():
    return [
        p
        for p, mod in (("torch", torch), ("numba", numba_bn))
        if mod is not None
    ]


def equivalence_section(families, sizes, report, peer_report):
    """bnfast against the reference, every family; then the peers' batch
    norm (N, D) against the same reference results (peer_report).  True
    if bnfast passes."""
    print("== Equivalence: max|fast - ref| / max|ref|")
    ok = True
    peer_rows = []
    for family in families:
        quantities = family["quantities"]
        print(
            f"\n{'op':12} {'dtype':8} {'shape':>15} "
            + " ".join(f"{q:>11}" for q in quantities)
            + "  status"
        )
        for size in family[sizes]:
            for dtype in DTYPES:
                name = np.dtype(dtype).name
                data = family["data"](size, dtype)
                shape = shape_label(data)
                log(f"equivalence {family['name']} {name} {shape}")
                errs, ref, floors = check_equivalence(family, data)
                if family["name"] == "batchnorm":
                    # the peers against the same reference results
                    peer_rows.extend(peer_check(data, ref, floors))
                tol = TOLERANCE[dtype]
                bad = [q for q, e in errs.items() if not e <= tol]
                ok &= not bad
                status = "PASS" if not bad else "FAIL: " + ", ".join(bad)
                print(
                    f"{family['name']:12} {name:8} {shape:>15} "
                    + " ".join(f"{errs[q]:11.2e}" for q in quantities)
                    + f"  {status} (tol {tol:g})"
                )
                report.append(
                    {
                        "family": family["name"],
                        "dtype": name,
                        "shape": list(data["x"].shape),
                        "groups": data.get("G"),
                        "tolerance": tol,
                        "errors": errs,
                        "pass": not bad,
                    }
                )
                del data, ref
    peer_report.extend(peer_rows)
    peer_equivalence_section(peer_rows, BN_QUANTITIES)
    return ok


def peer_bn_run(peer, data):
    """The quantities of bn_run that the peer computes, {name: array}, on
    batch norm (N, D): PyTorch through the entry points it is timed with
    (not its running statistics: it updates the running variance with the
    unbiased variance and its own momentum), numba_bn's fwd and bwd (no
    test mode, no running statistics)."""
    x, g, b, dout = data["x"], data["gamma"], data["beta"], data["dout"]
    if peer == "numba":
        out, mean, invstd = numba_bn.fwd(x, g, b, EPS)
        dx, dgamma, dbeta = numba_bn.bwd(dout, x, g, mean, invstd)
        return {"train.out": out, "dx": dx, "dgamma": dgamma, "dbeta": dbeta}
    tx, tw, tb, tdy, rm, rv = tensors(data)
    out, mean, invstd = torch.native_batch_norm(
        tx, tw, tb, rm, rv, True, 0.1, EPS
    )
    # test mode on the data's own running statistics, as bn_run
    _, _, _, _, rm, rv = tensors(data)
    test_out, _, _ = torch.native_batch_norm(
        tx, tw, tb, rm, rv, False, 0.1, EPS
    )
    dx, dgamma, dbeta = aten_op("native_batch_norm_backward")(
        tdy, tx, tw, rm, rv, mean, invstd, True, EPS, [True, True, True]
    )
    return {
        "train.out": out,
        "test.out": test_out,
        "dx": dx,
        "dgamma": dgamma,
        "dbeta": dbeta,
    }


def peer_check(data, ref, floors):
    """Records of each installed peer's batch norm (N, D) errors against
    the reference results ref ({quantity: array})."""
    x = data["x"]
    name, shape = x.dtype.name, shape_label(data)
    tol = TOLERANCE[x.dtype.type]
    out = []
    for peer in installed_peers():
        log(f"equivalence {peer} {name} {shape}")
        got = peer_bn_run(peer, data)
        errs = {
            q: rel_err(np.asarray(v), ref[q], floors.get(q, 0.0))
            for q, v in got.items()
        }
        out.append(
            {
                "family": "batchnorm",
                "peer": peer,
                "dtype": name,
                "shape": list(x.shape),
                "tolerance": tol,
                "errors": errs,
                "pass": all(e <= tol for e in errs.values()),
            }
        )
    return out


def peer_equivalence_section(rows, quantities):
    """Print the peer records of peer_check.  A mismatch is printed
    (MISMATCH) and recorded, but is not bnfast's failure: it does not
    change the exit status."""
    missing = [p for p in PEERS if p not in installed_peers()]
    print(
        "\n== Peers' batch norm (N, D) vs the reference: "
        "max|peer - ref| / max|ref|"
        + (
            f" ({', '.join(missing)} not installed: skipped)"
            if missing
            else ""
        )
    )
    if not rows:
        return
    print(
        f"{'peer':12} {'dtype':8} {'shape':>15} "
        + " ".join(f"{q:>11}" for q in quantities)
        + "  status"
    )
    for rec in rows:
        errs, tol = rec["errors"], rec["tolerance"]
        bad = [q for q, e in errs.items() if not e <= tol]
        status = "ok" if not bad else "MISMATCH: " + ", ".join(bad)
        print(
            f"{rec['peer']:12} {rec['dtype']:8} "
            f"{'x'.join(map(str, rec['shape'])):>15} "
            + " ".join(
                f"{errs[q]:11.2e}" if q in errs else f"{'-':>11}"
                for q in quantities
            )
            + f"  {status} (tol {tol:g})"
        )


# ---------------------------------------------------------------- accuracy
#
# float32 data far from zero: x = randn + 1e4 (offset 1e4 times the
# spread), the case where summing in float32 or x*scale + shift lose
# digits.  Each implementation's float32 result against the reference's
# float64 computation on the same float32 values (x, gamma, beta, dout
# widened exactly).

ACCURACY_SHAPE = (4096, 256)
ACCURACY_OFFSET = 1e4


def accuracy_data():
    rng = np.random.default_rng(11)
    n, d = ACCURACY_SHAPE
    return {
        "x": (rng.standard_normal((n, d)) + ACCURACY_OFFSET).astype(
            np.float32
        ),
        "gamma": rng.standard_normal(d).astype(np.float32),
        "beta": rng.standard_normal(d).astype(np.float32),
        "dout": rng.standard_normal((n, d)).astype(np.float32),
        "running_mean": np.zeros(d, np.float32),
        "running_var": np.ones(d, np.float32),
    }


def fmt_small_ratio(num, den):
    return "-" if num is None or not den else f"{num / den:.2g}"


def accuracy_section(report):
    """Max |error| of forward-train out and backward dx, float32, against
    float64; bnfast, the reference on float32, PyTorch, numba."""
    data = accuracy_data()
    wide = {k: v.astype(np.float64) for k, v in data.items()}
    oracle = {}
    out, cache = reference.batchnorm_forward(
        wide["x"], wide["gamma"], wide["beta"], bn_param(wide, "train")
    )
    oracle["out"] = out
    oracle["dx"] = reference.batchnorm_backward_alt(wide["dout"], cache)[0]
    results = {}
    for name, mod in (("bnfast", bnfast), ("reference", reference)):
        out, cache = mod.batchnorm_forward(
            data["x"], data["gamma"], data["beta"], bn_param(data, "train")
        )
        results[name] = {
            "out": out,
            "dx": mod.batchnorm_backward(data["dout"], cache)[0],
        }
    for peer, mod in (("torch", torch), ("numba", numba_bn)):
        if mod is not None:
            got = peer_bn_run(peer, data)
            results[peer] = {
                "out": np.asarray(got["train.out"]),
                "dx": np.asarray(got["dx"]),
            }
    n, d = ACCURACY_SHAPE
    print(
        f"\n== Accuracy: batch norm ({n}, {d}) float32, x = randn + "
        f"{ACCURACY_OFFSET:g} (offset {ACCURACY_OFFSET:g} x the spread): "
        "max|result - float64| (float64: the reference on the same "
        "float32 values, widened)"
    )
    print(
        f"{'quantity':18} {'max|f64|':>9} "
        + " ".join(f"{impl:>10}" for impl in IMPLS)
        + f" {'bnf/ref':>8} {'bnf/trc':>8}"
    )
    record = {
        "shape": [n, d],
        "offset": ACCURACY_OFFSET,
        "dtype": "float32",
        "max_abs_error": {},
        "oracle_max_abs": {},
    }
    for q, label in (("out", "forward-train out"), ("dx", "backward dx")):
        errs = {
            impl: float(np.abs(r[q].astype(np.float64) - oracle[q]).max())
            for impl, r in results.items()
        }
        scale = float(np.abs(oracle[q]).max())
        record["max_abs_error"][q] = errs
        record["oracle_max_abs"][q] = scale
        print(
            f"{label:18} {scale:9.2g} "
            + " ".join(
                f"{errs[i]:10.2e}" if i in errs else f"{'-':>10}"
                for i in IMPLS
            )
            + f" {fmt_small_ratio(errs['bnfast'], errs['reference']):>8}"
            + f" {fmt_small_ratio(errs['bnfast'], errs.get('torch')):>8}"
        )
    report.update(record)


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
    return (
        {key: statistics.median(s) for key, s in samples.items()},
        samples,
        loops,
    )


def fmt_us(t):
    return "-" if t is None else f"{t * 1e6:.1f}"


def fmt_ratio(num, den, suffix=""):
    return (
        "-"
        if num is None or den is None or den == 0
        else f"{num / den:.2f}{suffix}"
    )


def timing_section(families, sizes, repeat, target, report):
    impls = ["bnfast", "reference"] + installed_peers()
    rows = []
    total = sum(len(family[sizes]) for family in families) * len(DTYPES)
    done = 0
    start = time.perf_counter()
    for family in families:
        alias = family.get("peer_alias", {})
        for size in family[sizes]:
            for dtype in DTYPES:
                done += 1
                name = np.dtype(dtype).name
                data = family["data"](size, dtype)
                shape = shape_label(data)
                fns = family["cases"](data)
                x = data["x"]
                dst = np.empty_like(x)
                # the roofline: the faster of these two copies into dst
                fns["copy", "copyto"] = lambda x=x, dst=dst: np.copyto(dst, x)
                if stream_copy is not None:
                    stream_copy(x, dst)
                    if not np.array_equal(dst, x):
                        raise RuntimeError("stream_copy copied wrong bytes")
                    fns["copy", "stream"] = lambda x=x, dst=dst: stream_copy(
                        x, dst
                    )
                fns["copy", "fresh"] = x.copy
                med, samples, loops = measure(
                    fns,
                    repeat,
                    target,
                    f"[{done}/{total}] {family['name']} {name} {shape}",
                )
                copy_s = {
                    k: med[c, k]
                    for c, k in fns
                    if c == "copy" and k != "fresh"
                }
                winner = min(copy_s, key=copy_s.get)
                copy = copy_s[winner]
                fresh = med["copy", "fresh"] / copy
                for op, copies in family["copies"].items():
                    keys = {
                        impl: (alias.get(impl, {}).get(op, op), impl)
                        for impl in impls
                    }
                    t = {impl: med.get(key) for impl, key in keys.items()}
                    roof = copies * copy
                    rows.append((op, name, shape, t, roof, fresh, winner))
                    report.append(
                        {
                            "family": family["name"],
                            "op": op,
                            "dtype": name,
                            "shape": list(x.shape),
                            "groups": data.get("G"),
                            "x_bytes": x.nbytes,
                            "roofline_copies": copies,
                            "median_s": {**t, "roofline": roof},
                            "samples_s": {
                                i: samples.get(k) for i, k in keys.items()
                            },
                            "loops": {
                                i: loops.get(k) for i, k in keys.items()
                            },
                            # the roofline's copy: the faster of np.copyto and
                            # the streaming-store copy, both into an existing
                            # array ("copy_s": both medians)
                            "copy_median_s": copy,
                            "copy_winner": winner,
                            "copy_s": copy_s,
                            "copy_samples_s": {
                                k: samples["copy", k] for k in copy_s
                            },
                            "fresh_copy_in_copies": fresh,
                        }
                    )
                del fns, data, x, dst
                gc.collect()
    log(f"timing: {total} measurements in {time.perf_counter() - start:.0f} s")
    print(
        f"\n== Timing: median us per call over {repeat} repeats "
        "(roof = roofline_time / time; copy: the roofline's copy, np = "
        "np.copyto, nt = streaming stores)"
    )
    head = (
        f"{'op':22} {'dtype':8} {'shape':>15} {'bnfast':>9} "
        f"{'reference':>10} {'torch':>9} {'numba':>9} {'roofline':>9} "
        f"{'copy':>4} {'x ref':>7} {'x torch':>7} {'x numba':>7} "
        f"{'roof bnf':>8} {'roof trc':>8} {'roof nba':>8} {'fresh':>6}"
    )
    print(head)
    print("-" * len(head))
    for op, name, shape, t, roof, fresh, winner in rows:
        bnf, ref, trc, nba = (t.get(i) for i in IMPLS)
        print(
            f"{op:22} {name:8} {shape:>15} {fmt_us(bnf):>9} "
            f"{fmt_us(ref):>10} {fmt_us(trc):>9} {fmt_us(nba):>9} "
            f"{fmt_us(roof):>9} {COPY_ABBREV[winner]:>4} "
            f"{fmt_ratio(ref, bnf, 'x'):>7} {fmt_ratio(trc, bnf, 'x'):>7} "
            f"{fmt_ratio(nba, bnf, 'x'):>7} "
            f"{fmt_ratio(roof, bnf):>8} {fmt_ratio(roof, trc):>8} "
            f"{fmt_ratio(roof, nba):>8} {fresh:6.2f}"
        )
    copies_section(report)


COPY_ABBREV = {"copyto": "np", "stream": "nt"}


def copies_section(timing):
    """Which copy won the roofline at which sizes: per size of x, the
    median over its measurements of each copy's time and bandwidth
    (bytes read plus written)."""
    by_size = {}
    for rec in timing:
        key = (rec["x_bytes"], rec["family"], rec["dtype"])
        by_size.setdefault(rec["x_bytes"], {})[key] = rec["copy_s"]
    print(
        "\n== Roofline copy: np.copyto vs the streaming-store copy "
        "(bnfast._kernels.stream_copy), into an existing array"
        + (
            ""
            if stream_copy is not None
            else " (stream_copy not in this build: np.copyto only)"
        )
    )
    print(
        f"{'x bytes':>11} {'runs':>4} {'copyto us':>10} {'GB/s':>6} "
        f"{'stream us':>10} {'GB/s':>6}  faster"
    )
    for nbytes in sorted(by_size):
        meds = {}
        for copy_s in by_size[nbytes].values():
            for k, v in copy_s.items():
                meds.setdefault(k, []).append(v)
        meds = {k: statistics.median(v) for k, v in meds.items()}
        cols = []
        for k in ("copyto", "stream"):
            v = meds.get(k)
            cols.append(
                f"{fmt_us(v):>10} "
                + (f"{2 * nbytes / v / 1e9:6.1f}" if v else f"{'-':>6}")
            )
        best = min(meds, key=meds.get)
        print(
            f"{nbytes:11d} {len(by_size[nbytes]):4d} {' '.join(cols)}  {best}"
        )


# ---------------------------------------------------------------- targets
#
# Issue 11's targets, on the rows of one --sweep run (rows without out=;
# the out= rows only where the roofline asks for them).  A target "holds"
# here for this run; the issue asks for the median over 3 runs.

KIB = 1024
OUT_TWIN = {
    "forward-train": "fwd-train out=",
    "forward-test": "fwd-test out=",
    "backward": "backward out=",
    "backward_alt": "backward out=",
}
# a fresh output "dominates" when x.copy() costs this many copies or more
FRESH_DOMINATES = 1.25


def row_label(rec):
    shape = "x".join(map(str, rec["shape"]))
    if rec.get("groups"):
        shape += f" G{rec['groups']}"
    return f"{rec['op']} {rec['dtype']} {shape}"


def ratio(rec, num, den):
    t = rec["median_s"]
    return t[num] / t[den] if t.get(num) and t.get(den) else None


def targets(timing, accuracy):
    """{name: {"target", "holds" (None: not measured), "value", "misses"
    or "rows"}} for the targets of issue 11."""
    rows = [r for r in timing if "out=" not in r["op"]]
    index = {
        (r["family"], r["op"], r["dtype"], tuple(r["shape"])): r
        for r in timing
    }
    out = {}

    speed = [(r, ratio(r, "torch", "bnfast")) for r in rows]
    speed = [(r, v) for r, v in speed if v is not None]
    geo = (
        math.exp(statistics.fmean(math.log(v) for _, v in speed))
        if speed
        else None
    )
    out["geomean_vs_torch"] = {
        "target": "geometric mean of speedup vs PyTorch >= 1.5x",
        "value": geo,
        "rows": len(speed),
        "holds": None if geo is None else geo >= 1.5,
    }
    slow = [(row_label(r), v) for r, v in speed if v < 1.0]
    out["every_row_vs_torch"] = {
        "target": "every row >= 1.0x PyTorch",
        "rows": len(speed),
        "misses": slow,
        "holds": None if not speed else not slow,
    }

    vs_numba = [
        (r, ratio(r, "numba", "bnfast"))
        for r in rows
        if r["x_bytes"] >= 64 * KIB
    ]
    vs_numba = [(r, v) for r, v in vs_numba if v is not None]
    slow = [(row_label(r), v) for r, v in vs_numba if v < 1.0]
    out["from_64k_vs_numba"] = {
        "target": "from 64 KiB up, every row >= 1.0x numba",
        "rows": len(vs_numba),
        "misses": slow,
        "holds": None if not vs_numba else not slow,
    }

    roof, slow = [], []
    for r in rows:
        if r["x_bytes"] < 256 * KIB:
            continue
        judged = r
        twin = OUT_TWIN.get(r["op"])
        if (
            twin
            and r["fresh_copy_in_copies"] >= FRESH_DOMINATES
            and (r["family"], twin, r["dtype"], tuple(r["shape"])) in index
        ):
            judged = index[r["family"], twin, r["dtype"], tuple(r["shape"])]
        v = ratio(judged, "roofline", "bnfast")
        roof.append(v)
        if v < 0.8:
            slow.append(
                (
                    row_label(r)
                    + (
                        f" (judged on {judged['op']})"
                        if judged is not r
                        else ""
                    ),
                    v,
                )
            )
    out["from_256k_roofline"] = {
        "target": "from 256 KiB up, every row >= 0.8 of the roofline (on "
        f"its out= row where x.copy() costs >= {FRESH_DOMINATES} "
        "copies: a fresh output's page faults dominate)",
        "rows": len(roof),
        "misses": slow,
        "holds": None if not roof else not slow,
    }

    for name, shape, ops, limit in (
        ("tiny_2x4_vs_torch", (2, 4), ("forward-test", "backward"), 0.5),
        ("64x256_vs_torch", (64, 256), None, 0.7),
    ):
        sel = [
            (r, ratio(r, "bnfast", "torch"))
            for r in rows
            if tuple(r["shape"]) == shape and (ops is None or r["op"] in ops)
        ]
        sel = [(r, v) for r, v in sel if v is not None]
        what = "forward-test and backward" if ops else "every op"
        out[name] = {
            "target": f"{'x'.join(map(str, shape))} {what}: bnfast time "
            f"<= {limit} x PyTorch's",
            "rows": len(sel),
            "values": [(row_label(r), v) for r, v in sel],
            "misses": [(row_label(r), v) for r, v in sel if v > limit],
            "holds": None if not sel else all(v <= limit for _, v in sel),
        }

    if accuracy:
        errs = accuracy["max_abs_error"]
        checks = [
            (f"{q} vs {peer}", errs[q]["bnfast"] / errs[q][peer])
            for q in errs
            for peer in ("reference", "torch")
            if errs[q].get(peer)
        ]
        out["accuracy_offset_1e4"] = {
            "target": "float32 offset 1e4: bnfast's error <= 1/10 of the "
            "reference's and PyTorch's",
            "values": checks,
            "misses": [(k, v) for k, v in checks if v > 0.1],
            "holds": (
                None if not checks else all(v <= 0.1 for _, v in checks)
            ),
        }
    return out


def targets_section(result):
    print(
        "\n== Targets (issue 11) on this run; rows without out=, one "
        "thread (2 threads vs 1: benchmarks/threads.py --sweep)"
    )
    for t in result.values():
        holds = {None: "not measured", True: "HOLDS", False: "MISSES"}[
            t["holds"]
        ]
        extra = ""
        if t.get("value") is not None:
            extra = f": {t['value']:.2f}x over {t['rows']} rows"
        elif t.get("rows"):
            extra = f": {len(t.get('misses', []))} of {t['rows']} rows miss"
        print(f"  {t['target']}{extra}  [{holds}]")
        listed = t.get("values") if "values" in t else t.get("misses", [])
        for label, v in listed or []:
            print(
                f"      {label:44} {v:.3g}"
                + (
                    ""
                    if "values" not in t
                    or (label, v) not in t.get("misses", [])
                    else "  miss"
                )
            )


def median_targets(paths):
    """Print issue 11's targets on the per-row medians of several sweep
    runs: each implementation's time (and the fresh-output cost) is the
    median of the runs' medians; the accuracy row is the first run's."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))

    def key(r):
        return (
            r["family"],
            r["op"],
            r["dtype"],
            tuple(r["shape"]),
            r.get("groups"),
        )

    merged = []
    for rec in runs[0]["timing"]:
        same = [r for run in runs for r in run["timing"] if key(r) == key(rec)]
        m = dict(rec)
        m["median_s"] = {
            impl: statistics.median(
                r["median_s"][impl] for r in same if r["median_s"].get(impl)
            )
            for impl, v in rec["median_s"].items()
            if v
        }
        m["fresh_copy_in_copies"] = statistics.median(
            r["fresh_copy_in_copies"] for r in same
        )
        merged.append(m)
    print(f"medians over {len(runs)} runs: {', '.join(paths)}")
    targets_section(targets(merged, runs[0].get("accuracy")))
    return 0


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
                out[f"L{level}{'d' if kind == 'Data' else ''}"] = (
                    f.read().strip()
                )
    except OSError:
        pass
    return out


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                line.split(":", 1)[1].strip()
                for line in f
                if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else "not installed",
        "numba": (
            sys.modules["numba"].__version__
            if numba_bn is not None
            else "not installed"
        ),
        "stream_copy": (
            (
                "streaming stores"
                if bnfast._kernels.stream_copy_streams()
                else "memcpy"
            )
            if stream_copy is not None
            else "not in this build"
        ),
        "bnfast": bnfast.__version__,
        "simd": bnfast._kernels.simd_level(),
        "caches": caches(),
        # the extension may be rebuilt between runs: which build was timed
        "kernels_built": time.strftime(
            "%Y-%m-%d %H:%M:%S",
            time.localtime(os.path.getmtime(bnfast._kernels.__file__)),
        ),
    }


# ------------------------------------------------------- half precision

# issue 13's sizes: (N, D) rows and an NCHW image batch (and its
# channels-last form); --quick: small ones, so that CI runs the code
HALF_SIZES = {
    "sizes": {"rows": (8192, 2048), "image": (32, 64, 56, 56)},
    "quick": {"rows": (256, 128), "image": (4, 16, 8, 8)},
}
HALF_GROUPS = 32


def half_dtypes():
    """(name, numpy dtype, torch dtype or None) of the half dtypes this
    machine has: float16, and bfloat16 with ml_dtypes."""
    rows = [("float16", np.float16, None if torch is None else torch.float16)]
    try:
        import ml_dtypes
    except ImportError:
        return rows
    return rows + [
        (
            "bfloat16",
            ml_dtypes.bfloat16,
            None if torch is None else torch.bfloat16,
        )
    ]


def torch_of(a, tdtype):
    """A torch tensor of a half array (bfloat16 through its bits)."""
    if np.dtype(a.dtype) == np.float16:
        return torch.from_numpy(np.ascontiguousarray(a))
    bits = np.ascontiguousarray(a).view(np.int16)
    return torch.from_numpy(bits).view(tdtype)


def half_ops(family, data, tdtype):
    groups = math.gcd(HALF_GROUPS, data["x"].shape[1])
    return _half_ops(family, data, tdtype, groups)


def _half_ops(family, data, tdtype, HALF_GROUPS):
    """{(op, impl): fn} for one family on one dtype's data: bnfast on it
    (impl "half"), bnfast on the same values in float32 ("float32"), and
    PyTorch on the same dtype ("torch"); out= on both sides where PyTorch
    has it (forwards; its backwards have none)."""
    fns = {}
    for impl, d in (
        ("half", data),
        ("float32", {k: v.astype(np.float32) for k, v in data.items()}),
    ):
        x, g, b, dy = d["x"], d["gamma"], d["beta"], d["dout"]
        out, dx = np.empty_like(x), np.empty_like(x)
        if family in ("batchnorm", "spatial-nchw", "spatial-nhwc"):
            axis = -1 if family == "spatial-nhwc" else 1
            if family == "batchnorm":

                def fwd(p, x=x, g=g, b=b, out=out):
                    return bnfast.batchnorm_forward(x, g, b, p, out=out)

                bwd = bnfast.batchnorm_backward
            else:

                def fwd(p, x=x, g=g, b=b, out=out, axis=axis):
                    return bnfast.spatial_batchnorm_forward(
                        x, g, b, p, axis=axis, out=out
                    )

                bwd = bnfast.spatial_batchnorm_backward
            _, cache = fwd(bn_param(d, "train"))
            fns["fwd-train", impl] = lambda fwd=fwd, d=d: fwd(
                bn_param(d, "train")
            )
            ptest = bn_param(d, "test")
            fns["fwd-test", impl] = lambda fwd=fwd, p=ptest: fwd(p)
            fns["backward", impl] = lambda bwd=bwd, dy=dy, c=cache, dx=dx: bwd(
                dy, c, out=dx
            )
        elif family == "layernorm":
            _, cache = bnfast.layernorm_forward(x, g, b, {})
            fns["fwd-train", impl] = lambda x=x, g=g, b=b, out=out: (
                bnfast.layernorm_forward(x, g, b, {}, out=out)
            )
            fns["backward", impl] = lambda dy=dy, c=cache, dx=dx: (
                bnfast.layernorm_backward(dy, c, out=dx)
            )
        else:  # groupnorm (32 groups, fewer for the quick sizes)
            _, cache = bnfast.spatial_groupnorm_forward(
                x, g, b, HALF_GROUPS, {}
            )
            fns["fwd-train", impl] = lambda x=x, g=g, b=b, out=out: (
                bnfast.spatial_groupnorm_forward(
                    x, g, b, HALF_GROUPS, {}, out=out
                )
            )
            fns["backward", impl] = lambda dy=dy, c=cache, dx=dx: (
                bnfast.spatial_groupnorm_backward(dy, c, out=dx)
            )
    if torch is None or tdtype is None:
        return fns
    t = {k: torch_of(v, tdtype) for k, v in data.items()}
    tx, tw, tb, tdy = t["x"], t["gamma"], t["beta"], t["dout"]
    rm, rv = t["running_mean"].clone(), t["running_var"].clone()
    if family == "spatial-nhwc":  # the same memory, torch's channels_last
        tx = tx.permute(0, 3, 1, 2)
        tdy = tdy.permute(0, 3, 1, 2)
    if family in ("batchnorm", "spatial-nchw", "spatial-nhwc"):
        c = tx.shape[1]
        out = torch.empty_like(tx)
        m, s = torch.empty(c, dtype=tdtype), torch.empty(c, dtype=tdtype)
        trm, trv = rm.clone(), rv.clone()
        nbn = torch.ops.aten.native_batch_norm.out
        _, sm, si = torch.native_batch_norm(
            tx, tw, tb, rm.clone(), rv.clone(), True, 0.1, EPS
        )
        nbb = aten_op("native_batch_norm_backward")
        fns["fwd-train", "torch"] = lambda: nbn(
            tx,
            tw,
            tb,
            rm,
            rv,
            True,
            0.1,
            EPS,
            out=out,
            save_mean=m,
            save_invstd=s,
        )
        fns["fwd-test", "torch"] = lambda: nbn(
            tx,
            tw,
            tb,
            trm,
            trv,
            False,
            0.1,
            EPS,
            out=out,
            save_mean=m,
            save_invstd=s,
        )
        fns["backward", "torch"] = lambda: nbb(
            tdy, tx, tw, rm, rv, sm, si, True, EPS, [True, True, True]
        )
    elif family == "layernorm":
        shape = [tx.shape[1]]
        _, lm, lr = torch.native_layer_norm(tx, shape, tw, tb, EPS)
        lnb = aten_op("native_layer_norm_backward")
        fns["fwd-train", "torch"] = lambda: torch.native_layer_norm(
            tx, shape, tw, tb, EPS
        )
        fns["backward", "torch"] = lambda: lnb(
            tdy, tx, shape, lm, lr, tw, tb, [True, True, True]
        )
    else:
        n, c = tx.shape[:2]
        hw = tx[0, 0].numel()
        _, gm, gr = torch.native_group_norm(
            tx, tw, tb, n, c, hw, HALF_GROUPS, EPS
        )
        gnb = aten_op("native_group_norm_backward")
        fns["fwd-train", "torch"] = lambda: torch.group_norm(
            tx, HALF_GROUPS, tw, tb, EPS
        )
        fns["backward", "torch"] = lambda: gnb(
            tdy, tx, gm, gr, tw, n, c, hw, HALF_GROUPS, [True, True, True]
        )
    return fns


def half_section(sizes, repeat, target, report):
    """float16 and bfloat16 (issue 13): per op, bnfast's time on half data
    over its own on the same values in float32 (target <= 0.6: half the
    bytes) and PyTorch's on the same dtype over bnfast's (target >= 1.5),
    interleaved in one process."""
    shapes = HALF_SIZES[sizes]
    families = [
        ("batchnorm", shapes["rows"]),
        ("spatial-nchw", shapes["image"]),
        ("spatial-nhwc", shapes["image"]),
        ("layernorm", shapes["rows"]),
        ("groupnorm", shapes["image"]),
    ]
    print(
        "\n== half precision (issue 13): bnfast on float16/bfloat16 "
        "against its own float32 and PyTorch on the same dtype, out= "
        "where PyTorch has it =="
    )
    print(
        f"{'family':13} {'dtype':8} {'shape':18} {'op':10} "
        f"{'half us':>9} {'f32 us':>9} {'torch us':>9} "
        f"{'half/f32':>8} {'torch/half':>10}"
    )
    for name, dtype, tdtype in half_dtypes():
        for family, shape in families:
            data = make_data(shape, np.float64, seed_of(shape))
            if family == "spatial-nhwc":
                data = channels_last(data)
            data = {k: v.astype(dtype) for k, v in data.items()}
            fns = half_ops(family, data, tdtype)
            label = f"half {family} {name} {shape}"
            med, _, _ = measure(fns, repeat, target, label)
            for op in ("fwd-train", "fwd-test", "backward"):
                if (op, "half") not in med:
                    continue
                h, f, t = (
                    med[op, "half"],
                    med[op, "float32"],
                    med.get((op, "torch")),
                )
                rec = {
                    "family": family,
                    "dtype": name,
                    "shape": list(data["x"].shape),
                    "op": op,
                    "half_s": h,
                    "float32_s": f,
                    "torch_s": t,
                }
                report.append(rec)
                print(
                    f"{family:13} {name:8} {str(tuple(data['x'].shape)):18} "
                    f"{op:10} {fmt_us(h):>9} {fmt_us(f):>9} {fmt_us(t):>9} "
                    f"{fmt_ratio(h, f):>8} {fmt_ratio(t, h):>10}"
                )
            del fns, data
            gc.collect()


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run the report on the command line ``argv`` (default sys.argv[1:]);
    ``prog`` names the command in the usage.  Returns the exit status: 0,
    1 if bnfast's equivalence section FAILs, 2 for --torch-entry without
    PyTorch (bad usage exits 2 through argparse)."""
    ap = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0]
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, 3 repeats, 5 ms loops (CI)",
    )
    mode.add_argument(
        "--sweep",
        action="store_true",
        help="every family over sizes from tiny to larger "
        "than cache (for benchmarks/plot.py)",
    )
    mode.add_argument(
        "--median-of",
        nargs="+",
        metavar="JSON",
        help="no measurement: issue 11's targets on the "
        "per-row medians of several --sweep --json runs "
        "(the issue judges each ratio by its median over "
        "3 runs)",
    )
    mode.add_argument(
        "--torch-entry",
        action="store_true",
        help="only time PyTorch's entry points for each op "
        "(torch.native_batch_norm, torch.ops.aten..., "
        "torch.batch_norm, F.batch_norm, ...) at tiny "
        "to 1 MiB sizes, to pick the fastest",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="measurements per implementation (default 7, "
        "quick 3, --torch-entry 31)",
    )
    ap.add_argument(
        "--half",
        action="store_true",
        help="only the half-precision section (float16, "
        "bfloat16 against float32 and PyTorch; with "
        "--quick at small sizes)",
    )
    ap.add_argument("--json", metavar="PATH", help="write results as JSON")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads for bnfast and PyTorch alike (default 1)",
    )
    ap.add_argument(
        "--family",
        action="append",
        metavar="NAME",
        choices=[f["name"] for f in FAMILIES],
        help="only this family (repeatable; default all)",
    )
    args = ap.parse_args(argv)
    families = [
        f for f in FAMILIES if not args.family or f["name"] in args.family
    ]
    if args.median_of:
        return median_targets(args.median_of)
    import_peers()
    repeat = args.repeat or (
        3 if args.quick else 31 if args.torch_entry else 7
    )
    target = 0.005 if args.quick else 0.020
    bnfast.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    if args.torch_entry:
        if torch is None:
            print("--torch-entry needs PyTorch", file=sys.stderr)
            return 2
        entries = []
        torch_entry_section(repeat, entries)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {
                        "machine": machine(),
                        "repeat": repeat,
                        "threads": args.threads,
                        "torch_entry": entries,
                    },
                    f,
                    indent=1,
                )
        return 0

    sizes = "quick" if args.quick else "sweep" if args.sweep else "sizes"
    if args.half:
        half = []
        half_section("quick" if args.quick else "sizes", repeat, target, half)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {
                        "machine": machine(),
                        "repeat": repeat,
                        "threads": args.threads,
                        "half": half,
                    },
                    f,
                    indent=1,
                )
        return 0
    report = {
        "machine": machine(),
        "quick": args.quick,
        "sweep": args.sweep,
        "repeat": repeat,
        "threads": args.threads,
        "target_s": target,
        "equivalence": [],
        "timing": [],
    }
    load_start = os.getloadavg()
    report["peer_equivalence"] = []
    ok = equivalence_section(
        families, sizes, report["equivalence"], report["peer_equivalence"]
    )
    report["accuracy"] = {}
    accuracy_section(report["accuracy"])
    timing_section(families, sizes, repeat, target, report["timing"])
    if args.quick:  # the half-precision section's code, at small sizes
        report["half"] = []
        half_section("quick", repeat, target, report["half"])
    if args.sweep:
        report["targets"] = targets(report["timing"], report["accuracy"])
        targets_section(report["targets"])
    # a shared machine: load well above the 1.0 of this process means noise
    report["loadavg_1_5_15"] = {"start": load_start, "end": os.getloadavg()}
    log(
        "load average (1, 5, 15 min): start {:.2f} {:.2f} {:.2f}, "
        "end {:.2f} {:.2f} {:.2f}".format(*load_start, *os.getloadavg())
    )
    m = report["machine"]
    print(
        f"\nmachine: {m['cpu']}, python {m['python']}, numpy {m['numpy']}, "
        f"torch {m['torch']}, numba {m['numba']}, bnfast {m['bnfast']} "
        f"simd {m['simd']} "
        f"(bnfast and torch on {args.threads} thread"
        f"{'s' if args.threads > 1 else ''})"
    )
    print("equivalence:", "PASS" if ok else "FAIL")
    report["pass"] = ok
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if ok else 1
