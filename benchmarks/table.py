"""The README's speed table from a bench.py --json file.

    python benchmarks/table.py benchmarks/results/latest.json [--all]

Prints a Markdown table: per row bnfast's median time, its speedup over
the NumPy reference, PyTorch and numba (where measured), and the roofline
fraction of bnfast and PyTorch (roofline time / op time).  By default the
rows the README shows (forward-train, forward-test, backward and their
out= versions of every family and shape, not backward_alt); --all for
every row.
"""

import argparse
import json


def label(t):
    fam, op = t["family"], t["op"]
    if fam in ("batchnorm",):
        return op
    if fam.startswith("spatial"):
        return f"{fam} {op}" if not op.startswith(fam) else op
    return op if op.startswith(fam) else f"{fam} {op}"


def shape(t):
    s = "x".join(str(v) for v in t["shape"])
    return s + (f" G{t['groups']}" if t.get("groups") else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json")
    ap.add_argument("--all", action="store_true", help="every row")
    args = ap.parse_args()
    with open(args.json) as f:
        d = json.load(f)
    print(
        "| op | dtype | shape | bnfast µs | vs reference | vs PyTorch "
        "| vs numba | roofline fraction (bnfast / PyTorch) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for t in d["timing"]:
        if not args.all and t["op"].startswith("backward_alt"):
            continue
        m = t["median_s"]
        b = m["bnfast"]
        roof = m.get("roofline")

        def ratio(k):
            return f"{m[k] / b:.2f}x" if m.get(k) else "-"

        rf = (
            f"{roof / b:.2f} / {roof / m['torch']:.2f}"
            if roof and m.get("torch")
            else "-"
        )
        print(
            f"| {label(t)} | {t['dtype']} | {shape(t)} | {b * 1e6:.0f} | "
            f"{ratio('reference')} | {ratio('torch')} | {ratio('numba')} "
            f"| {rf} |"
        )


if __name__ == "__main__":
    main()
