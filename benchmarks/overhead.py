"""Per-call time of every public bnfast function at small sizes, where the
call path (validation, allocation, the cache) rather than the kernels
decides, against PyTorch's fastest entry points.

Run from the repository root, with bnfast installed:

    python benchmarks/overhead.py            # 15 repeats
    python benchmarks/overhead.py --quick    # 3 repeats, shorter loops (CI)

Rows: batch norm (N, D) at (2, 4) and (64, 256) (forward-train,
forward-test, backward, backward_alt), spatial batch norm NCHW (2, 3, 4, 4)
(forward-train, forward-test, backward), layer norm (2, 4) and (64, 256),
group norm (2, 4, 2, 2) with G = 2; float32 and float64.  PyTorch (when
``import torch`` works) is timed through torch.native_batch_norm,
torch.native_layer_norm, torch.native_group_norm and
torch.ops.aten.native_*_backward (all three gradients), the fastest entry
points a user has; batch norm's one backward is shown on both backward
rows.  Both libraries run on one thread.

Each measurement times a loop of k calls (k chosen once per row so that a
loop takes about 2 ms, 0.5 ms with --quick) and divides by k; within a
repeat the implementations of a row run interleaved, so machine noise hits
them alike; the table shows the median per-call time over the repeats in
microseconds and bnfast's time over PyTorch's ("ratio": below 1 is bnfast
faster).  Without torch the torch column is empty.
"""

import argparse
import statistics
import sys
import time

import numpy as np

import bnfast

try:
    import torch
except ImportError:  # PyTorch is an optional peer
    torch = None

EPS = 1e-5


def _bn_param(c, dtype, mode):
    return {
        "mode": mode,
        "eps": EPS,
        "momentum": 0.9,
        "running_mean": np.zeros(c, dtype),
        "running_var": np.ones(c, dtype),
    }


def _torch_bn(x, g, b, dout, train_row, test_row, backward_rows):
    tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, g, b, dout))
    c = g.shape[0]
    rm, rv = torch.zeros(c, dtype=tx.dtype), torch.ones(c, dtype=tx.dtype)
    trm, trv = rm.clone(), rv.clone()
    _, sm, si = torch.native_batch_norm(
        tx, tw, tb, rm.clone(), rv.clone(), True, 0.1, EPS
    )
    fns = {
        train_row: lambda: torch.native_batch_norm(
            tx, tw, tb, rm, rv, True, 0.1, EPS
        ),
        test_row: lambda: torch.native_batch_norm(
            tx, tw, tb, trm, trv, False, 0.1, EPS
        ),
    }

    def backward():
        return torch.ops.aten.native_batch_norm_backward(
            tdy, tx, tw, rm, rv, sm, si, True, EPS, [True, True, True]
        )

    for row in backward_rows:
        fns[row] = backward
    return fns


def batchnorm_rows(n, d, dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((n, d)) + 3).astype(dtype)
    g, b = (
        rng.standard_normal(d).astype(dtype),
        rng.standard_normal(d).astype(dtype),
    )
    dout = rng.standard_normal((n, d)).astype(dtype)
    train, test = _bn_param(d, dtype, "train"), _bn_param(d, dtype, "test")
    _, cache = bnfast.batchnorm_forward(x, g, b, _bn_param(d, dtype, "train"))
    tag = f"bn ({n}, {d})"
    rows = {
        f"{tag} forward-train": lambda: bnfast.batchnorm_forward(
            x, g, b, train
        ),
        f"{tag} forward-test": lambda: bnfast.batchnorm_forward(x, g, b, test),
        f"{tag} backward": lambda: bnfast.batchnorm_backward(dout, cache),
        f"{tag} backward_alt": lambda: bnfast.batchnorm_backward_alt(
            dout, cache
        ),
    }
    torch_fns = (
        {}
        if torch is None
        else _torch_bn(
            x,
            g,
            b,
            dout,
            f"{tag} forward-train",
            f"{tag} forward-test",
            (f"{tag} backward", f"{tag} backward_alt"),
        )
    )
    return rows, torch_fns


def spatial_rows(shape, dtype):
    rng = np.random.default_rng(1)
    c = shape[1]
    x = (rng.standard_normal(shape) + 3).astype(dtype)
    g, b = (
        rng.standard_normal(c).astype(dtype),
        rng.standard_normal(c).astype(dtype),
    )
    dout = rng.standard_normal(shape).astype(dtype)
    train, test = _bn_param(c, dtype, "train"), _bn_param(c, dtype, "test")
    _, cache = bnfast.spatial_batchnorm_forward(
        x, g, b, _bn_param(c, dtype, "train")
    )
    tag = f"spatial {shape}"
    rows = {
        f"{tag} forward-train": lambda: bnfast.spatial_batchnorm_forward(
            x, g, b, train
        ),
        f"{tag} forward-test": lambda: bnfast.spatial_batchnorm_forward(
            x, g, b, test
        ),
        f"{tag} backward": lambda: bnfast.spatial_batchnorm_backward(
            dout, cache
        ),
    }
    torch_fns = (
        {}
        if torch is None
        else _torch_bn(
            x,
            g,
            b,
            dout,
            f"{tag} forward-train",
            f"{tag} forward-test",
            (f"{tag} backward",),
        )
    )
    return rows, torch_fns


def layernorm_rows(n, d, dtype):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((n, d)) + 3).astype(dtype)
    g, b = (
        rng.standard_normal(d).astype(dtype),
        rng.standard_normal(d).astype(dtype),
    )
    dout = rng.standard_normal((n, d)).astype(dtype)
    param = {}
    _, cache = bnfast.layernorm_forward(x, g, b, param)
    tag = f"ln ({n}, {d})"
    rows = {
        f"{tag} forward": lambda: bnfast.layernorm_forward(x, g, b, param),
        f"{tag} backward": lambda: bnfast.layernorm_backward(dout, cache),
    }
    torch_fns = {}
    if torch is not None:
        tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, g, b, dout))
        shape = [d]
        _, mean, rstd = torch.native_layer_norm(tx, shape, tw, tb, EPS)
        torch_fns = {
            f"{tag} forward": lambda: torch.native_layer_norm(
                tx, shape, tw, tb, EPS
            ),
            f"{tag} backward": lambda: (
                torch.ops.aten.native_layer_norm_backward(
                    tdy, tx, shape, mean, rstd, tw, tb, [True, True, True]
                )
            ),
        }
    return rows, torch_fns


def groupnorm_rows(shape, G, dtype):
    rng = np.random.default_rng(3)
    n, c = shape[:2]
    hw = int(np.prod(shape[2:]))
    x = (rng.standard_normal(shape) + 3).astype(dtype)
    g, b = (
        rng.standard_normal(c).astype(dtype),
        rng.standard_normal(c).astype(dtype),
    )
    dout = rng.standard_normal(shape).astype(dtype)
    param = {}
    _, cache = bnfast.spatial_groupnorm_forward(x, g, b, G, param)
    tag = f"gn {shape} G={G}"
    rows = {
        f"{tag} forward": lambda: bnfast.spatial_groupnorm_forward(
            x, g, b, G, param
        ),
        f"{tag} backward": lambda: bnfast.spatial_groupnorm_backward(
            dout, cache
        ),
    }
    torch_fns = {}
    if torch is not None:
        tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, g, b, dout))
        _, mean, rstd = torch.native_group_norm(tx, tw, tb, n, c, hw, G, EPS)
        torch_fns = {
            f"{tag} forward": lambda: torch.native_group_norm(
                tx, tw, tb, n, c, hw, G, EPS
            ),
            f"{tag} backward": lambda: (
                torch.ops.aten.native_group_norm_backward(
                    tdy, tx, mean, rstd, tw, n, c, hw, G, [True, True, True]
                )
            ),
        }
    return rows, torch_fns


def all_rows(dtype):
    for rows, torch_fns in (
        batchnorm_rows(2, 4, dtype),
        batchnorm_rows(64, 256, dtype),
        spatial_rows((2, 3, 4, 4), dtype),
        layernorm_rows(2, 4, dtype),
        layernorm_rows(64, 256, dtype),
        groupnorm_rows((2, 4, 2, 2), 2, dtype),
    ):
        for name, fn in rows.items():
            yield name, fn, torch_fns.get(name)


def loop_time(fn, k):
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    return (time.perf_counter() - t0) / k


def calls_for(fn, target):
    """Calls per timed loop: about ``target`` seconds."""
    k = 1
    while True:
        t = loop_time(fn, k) * k
        if t >= target / 4 or k >= 1 << 20:
            return max(1, int(k * target / max(t, 1e-9)))
        k *= 4


def measure(impls, repeats, target):
    """Median seconds per call of each callable, timed interleaved."""
    ks = [calls_for(fn, target) for fn in impls]
    times = [[] for _ in impls]
    for _ in range(repeats):
        for j, fn in enumerate(impls):
            times[j].append(loop_time(fn, ks[j]))
    return [statistics.median(t) for t in times]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="3 repeats of 0.5 ms loops (CI)"
    )
    ap.add_argument("--repeat", type=int, default=None)
    args = ap.parse_args(argv)
    repeats = args.repeat or (3 if args.quick else 15)
    target = 0.0005 if args.quick else 0.002
    bnfast.set_num_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
    print(
        f"bnfast {bnfast.__version__}, numpy {np.__version__}, torch "
        f"{torch.__version__ if torch is not None else 'not installed'}; "
        f"one thread; median of {repeats} interleaved repeats, µs per call"
    )
    head = (
        f"{'row':42s} {'dtype':7s} {'bnfast':>8s} {'torch':>8s} {'ratio':>6s}"
    )
    print(head)
    print("-" * len(head))
    ratios = []
    for dtype in (np.float32, np.float64):
        for name, fn, tfn in all_rows(dtype):
            impls = [fn] + ([tfn] if tfn is not None else [])
            res = measure(impls, repeats, target)
            us = [r * 1e6 for r in res]
            if tfn is not None:
                ratio = us[0] / us[1]
                ratios.append(ratio)
                tcol, rcol = f"{us[1]:8.2f}", f"{ratio:6.2f}"
            else:
                tcol, rcol = f"{'':8s}", f"{'':6s}"
            print(
                f"{name:42s} {np.dtype(dtype).name:7s} {us[0]:8.2f} "
                f"{tcol} {rcol}",
                flush=True,
            )
    if ratios:
        gm = float(np.exp(np.mean(np.log(ratios))))
        print(f"geometric mean of the ratios: {gm:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
