"""Plot a bnfast benchmark JSON (bench.py --json): speedup and roofline
fraction against the size of x.

    python benchmarks/bench.py --sweep --json benchmarks/results/sweep.json
    python benchmarks/plot.py benchmarks/results/sweep.json
    python benchmarks/plot.py results.json -o out.png

One row of panels per op family (batch norm (N, D), NCHW, channels-last,
layer norm, group norm), three or four panels each, against the bytes of x
(log scale): bnfast's speedup over PyTorch (torch_time / bnfast_time; empty
when the run had no PyTorch), its speedup over the NumPy reference, over
the numba loop (only when the run had numba; numba has batch norm (N, D)
forward-train and backward only), and its roofline fraction
(roofline_time / bnfast_time, 1.0 = copy speed).  One
colour per op (forward-train, forward-test, backward, ...); float32 solid
with circles, float64 dashed with squares.  Dotted vertical lines mark the
per-core L2 (and L3, when in range) recorded in the JSON.

Needs matplotlib (pip install ".[bench]" or pip install matplotlib); exits
with status 2 and a message when it is missing.
"""

import argparse
import json
import math
import re
import sys
from collections import defaultdict

ITEMSIZE = {"float32": 4, "float64": 8}
DTYPE_STYLE = {
    "float32": {"linestyle": "-", "marker": "o"},
    "float64": {"linestyle": "--", "marker": "s"},
}
PANELS = [
    ("speedup vs PyTorch (x)", "torch"),
    ("speedup vs reference (x)", "reference"),
    ("speedup vs numba (x)", "numba"),
    ("bnfast roofline fraction", "roofline"),
]


def size_bytes(text):
    """'2048K' -> 2097152 (sysfs cache sizes)."""
    m = re.fullmatch(r"(\d+)\s*([KMG]?)", text.strip())
    if not m:
        return None
    return (
        int(m.group(1))
        * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
    )


def fmt_bytes(b, _pos=None):
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= scale:
            v = b / scale
            return (
                f"{v:.0f} {unit}"
                if v >= 10 or v == int(v)
                else f"{v:.1f} {unit}"
            )
    return f"{b:.0f} B"


def fmt_factor(v, _pos=None):
    return f"{v:g}"


def fmt_minor(v, _pos=None):
    """Label the 2s and 5s of a log axis (0.2, 0.5, 2, 5, 20, ...)."""
    if v <= 0:
        return ""
    mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
    return f"{v:g}" if round(mantissa, 6) in (2.0, 5.0) else ""


def x_bytes(rec):
    if rec.get("x_bytes"):
        return rec["x_bytes"]
    n = 1
    for s in rec["shape"]:
        n *= s
    return n * ITEMSIZE[rec["dtype"]]


def series(timing):
    """{family: {(op, dtype): [(bytes, {what: value})]}} sorted by size,
    with what of PANELS (speedups other_time / bnfast_time, roofline
    fraction; None where not measured); families and ops in the order of
    the JSON."""
    out = defaultdict(lambda: defaultdict(list))
    for rec in timing:
        t = rec["median_s"]
        bnf = t["bnfast"]
        point = (
            x_bytes(rec),
            {
                what: t[what] / bnf if t.get(what) else None
                for _, what in PANELS
            },
        )
        out[rec["family"]][rec["op"], rec["dtype"]].append(point)
    for fam in out.values():
        for pts in fam.values():
            pts.sort(key=lambda p: p[0])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "json",
        nargs="?",
        default="benchmarks/results/sweep.json",
        help="bench.py --json output (default %(default)s)",
    )
    ap.add_argument(
        "-o",
        "--output",
        default="benchmarks/results/sweep.png",
        help="PNG to write (default %(default)s)",
    )
    ap.add_argument("--dpi", type=int, default=110)
    args = ap.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    except ImportError:
        print(
            "plot.py needs matplotlib: pip install matplotlib "
            "(or pip install '.[bench]')",
            file=sys.stderr,
        )
        return 2

    with open(args.json) as f:
        report = json.load(f)
    data = series(report["timing"])
    if not data:
        print(f"{args.json}: no timing records", file=sys.stderr)
        return 1
    m = report.get("machine", {})
    caches = {k: size_bytes(v) for k, v in m.get("caches", {}).items()}
    all_bytes = [
        p[0] for fam in data.values() for pts in fam.values() for p in pts
    ]
    lo, hi = min(all_bytes) / 1.6, max(all_bytes) * 1.6
    # ticks at powers of 4 bytes: 4 KiB, 16 KiB, ..., 256 MiB
    ticks = [4.0**k for k in range(0, 20) if lo <= 4.0**k <= hi]
    if len(ticks) > 9:
        # from the (2, 4) rows' 32 bytes up: powers of 16 (16 B, 256 B, ...)
        ticks = [16.0**k for k in range(0, 10) if lo <= 16.0**k <= hi]

    # the numba panel only for a run that had numba
    panels = [
        (title, what)
        for title, what in PANELS
        if what != "numba"
        or any(
            p[1]["numba"] is not None
            for fam in data.values()
            for pts in fam.values()
            for p in pts
        )
    ]
    fig, axes = plt.subplots(
        len(data),
        len(panels),
        figsize=(5.7 * len(panels), 3.5 * len(data)),
        squeeze=False,
        sharex=True,
    )
    cmap = plt.get_cmap("tab10")
    for row, (family, fam) in enumerate(data.items()):
        ops = list(dict.fromkeys(op for op, _ in fam))
        for col, (title, what) in enumerate(panels):
            ax = axes[row][col]
            plotted = False
            for (op, dtype), pts in fam.items():
                ys = [p[1][what] for p in pts]
                if all(y is None for y in ys):
                    continue
                xs = [p[0] for p, y in zip(pts, ys) if y is not None]
                ys = [y for y in ys if y is not None]
                ax.plot(
                    xs,
                    ys,
                    color=cmap(ops.index(op)),
                    markersize=5,
                    linewidth=1.4,
                    label=f"{op} {dtype}",
                    **DTYPE_STYLE.get(dtype, {}),
                )
                plotted = True
            ax.set_xscale("log")
            ax.set_xlim(lo, hi)
            if len(ticks) >= 2:
                ax.xaxis.set_major_locator(FixedLocator(ticks))
                ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(fmt_bytes))
            ax.tick_params(axis="x", labelbottom=True, labelsize=8)
            ax.grid(True, which="major", alpha=0.3)
            if what == "roofline":
                ax.axhline(1.0, color="k", linewidth=0.8)
                ax.set_ylim(0, max(1.3, ax.get_ylim()[1]))
            else:
                ax.set_yscale("log")
                ax.axhline(1.0, color="k", linewidth=0.8)
                ax.yaxis.set_major_formatter(FuncFormatter(fmt_factor))
                ax.yaxis.set_minor_formatter(FuncFormatter(fmt_minor))
            if not plotted:
                ax.text(
                    0.5,
                    0.5,
                    "not measured"
                    + (
                        " (PyTorch not installed)"
                        if what == "torch"
                        else " (numba has batch norm (N, D) only)"
                        if what == "numba"
                        else ""
                    ),
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                )
            for name in ("L2", "L3"):
                b = caches.get(name)
                if b and lo < b < hi:
                    ax.axvline(b, color="grey", linestyle=":", linewidth=1)
                    ax.text(
                        b,
                        0.98,
                        f" {name}",
                        color="grey",
                        va="top",
                        fontsize=8,
                        transform=ax.get_xaxis_transform(),
                    )
            ax.set_title(f"{family}: {title}", fontsize=10)
            if row == len(data) - 1:
                ax.set_xlabel("size of x (bytes)")
        # one legend per family, right of its row: colour = op, style = dtype
        handles = [
            Line2D([], [], color=cmap(i), linewidth=2, label=op)
            for i, op in enumerate(ops)
        ]
        handles += [
            Line2D([], [], color="k", markersize=5, label=dtype, **style)
            for dtype, style in DTYPE_STYLE.items()
            if any(d == dtype for _, d in fam)
        ]
        axes[row][-1].legend(
            handles=handles,
            fontsize=8,
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
            frameon=False,
        )
    kind = (
        "sweep"
        if report.get("sweep")
        else "quick"
        if report.get("quick")
        else "default sizes"
    )
    threads = report.get("threads", 1)
    fig.suptitle(
        f"bnfast {m.get('bnfast', '?')} ({kind}): above 1 = bnfast faster; "
        f"roofline fraction 1 = copy speed.  {m.get('cpu', '?')}, simd "
        f"{m.get('simd', '?')}, {threads} thread{'s' if threads > 1 else ''}"
        f", numpy {m.get('numpy', '?')}, torch {m.get('torch', '?')}, "
        f"numba {m.get('numba', '?')}, "
        f"medians of {report.get('repeat', '?')} interleaved repeats",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(args.output, dpi=args.dpi)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
