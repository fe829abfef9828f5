"""Check the promise that results are identical across SIMD levels: the
installed bnfast's kernels at every level that its build has and this CPU
runs (baseline, x86-64-v3, x86-64-v4: _kernels.set_simd_level) against the
baseline's, bitwise, on every family, every dtype (float16 and bfloat16
too), both kernel families, with and without the fused ReLU, frozen and
affine-free, at offsets 0 and 1e4.

    python tools/simd_identity.py
    python tools/simd_identity.py --save results.npz   # and keep them
    python tools/simd_identity.py --compare results.npz

--save writes the results (of the first level) to a file; --compare also
compares them with such a file, bitwise: another build (another compiler,
tools/ci_compilers.sh) must give the same results too.  Exits 1 on any
difference.  On a CPU that runs only the baseline it says
so.  CI runs it (.ci/run); tests/test_simd_levels.py runs the registry's
equivalence cases the same way.
"""

import sys

import numpy as np

import bnfast

# float16 and bfloat16 storage (issue 13; bfloat16 with ml_dtypes): their
# conversions must round alike at every SIMD level too
try:
    import ml_dtypes

    HALF = (np.float16, ml_dtypes.bfloat16)
except ImportError:
    HALF = (np.float16,)


def results(k, x, dy, g, b, axis):
    """Every output of every family on x, with module k's functions."""
    out = []
    for act in (None, "relu"):
        y, cache = k.spatial_batchnorm_forward(
            x, g, b, {"mode": "train"}, axis=axis, activation=act
        )
        out += [y, *k.batchnorm_backward(dy, cache)]
        p = {"mode": "test", "running_mean": g * 0.5, "running_var": g}
        y, cache = k.spatial_batchnorm_forward(
            x, g, b, p, axis=axis, activation=act
        )
        out += [y, *k.batchnorm_backward(dy, cache)]  # frozen
        # affine-free (gamma = 1, beta = 0 from NULL in the kernels)
        y, cache = k.spatial_batchnorm_forward(
            x, None, None, {"mode": "train"}, axis=axis, activation=act
        )
        out += [y, k.batchnorm_backward(dy, cache)[0]]
    if axis == 1:
        x2 = x.reshape(x.shape[0], -1)
        d = x2.shape[1]
        y, cache = k.layernorm_forward(
            x2,
            np.linspace(0.5, 1.5, d, dtype=x.dtype),
            np.zeros(d, x.dtype),
            {},
        )
        out += [y, *k.layernorm_backward(dy.reshape(x2.shape), cache)]
        y, cache = k.rmsnorm_forward(
            x2, np.linspace(0.5, 1.5, d, dtype=x.dtype), {"eps": 1e-5}
        )
        out += [y, *k.rmsnorm_backward(dy.reshape(x2.shape), cache)]
        if x.ndim == 4:
            for groups in (1, x.shape[1]):
                y, cache = k.spatial_groupnorm_forward(x, g, b, groups, {})
                out += [y, *k.spatial_groupnorm_backward(dy, cache)]
    if x.ndim == 4 and axis == x.ndim - 1:  # group norm, channels last
        for groups in (1, x.shape[-1]):
            y, cache = k.spatial_groupnorm_forward(
                x, g, b, groups, {}, axis=-1
            )
            out += [y, *k.spatial_groupnorm_backward(dy, cache)]
    return out


def _maxdiff(a, b):
    return np.max(np.abs(a.astype(float) - b.astype(float)))


def same(a, b):
    """Bitwise equal, every NaN counting as one value (which NaN an
    operation on NaNs gives depends on operand order; where they are may
    not differ)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype.itemsize != b.dtype.itemsize:
        return False
    na, nb = np.isnan(a.astype(np.float64)), np.isnan(b.astype(np.float64))
    ua = a.view(f"u{a.dtype.itemsize}")
    ub = b.view(f"u{b.dtype.itemsize}")
    return bool(np.array_equal(na, nb) and np.array_equal(ua[~na], ub[~nb]))


def main(argv):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--save", metavar="FILE")
    ap.add_argument("--compare", metavar="FILE")
    args = ap.parse_args(argv)
    saved = []
    k = bnfast._kernels
    levels = [
        name
        for name, (built, runs) in k.simd_levels().items()
        if built and runs
    ]
    print(
        "SIMD levels built: "
        f"{', '.join(n for n, (b, _) in k.simd_levels().items() if b)}; "
        f"compared (this CPU runs them): {', '.join(levels)}"
    )
    if len(levels) < 2:
        print("(only one level runs here: nothing to compare)")
    start = k.simd_level()
    k.set_num_threads(1)
    rng = np.random.default_rng(1)
    n = bad = 0
    try:
        for dt in (np.float32, np.float64) + HALF:
            for shape, axis in [
                ((300, 517), 1),
                ((64, 2049), 1),
                ((7, 5, 9, 13), 1),
                ((5, 9, 13, 7), 3),
                ((40000, 3), 1),
                ((3, 4, 70, 70), 1),
            ]:
                for offset in (0.0, 1e4):
                    x = (rng.standard_normal(shape) * 2 + 3 + offset).astype(
                        dt
                    )
                    dy = rng.standard_normal(shape).astype(dt)
                    c = shape[axis]
                    g = (rng.random(c) + 0.5).astype(dt)
                    b = rng.standard_normal(c).astype(dt)
                    k.set_simd_level(levels[0])
                    ref = results(k, x, dy, g, b, axis)
                    saved += ref
                    for level in levels[1:]:
                        k.set_simd_level(level)
                        for a, c2 in zip(results(k, x, dy, g, b, axis), ref):
                            n += 1
                            if not same(a, c2):
                                bad += 1
                                print(
                                    f"DIFFERS: {level} vs {levels[0]}: "
                                    f"{np.dtype(dt).name} {shape} axis "
                                    f"{axis} offset {offset:g}: max "
                                    f"{_maxdiff(a, c2):.3g}"
                                )
    finally:
        k.set_simd_level(start)
    print(f"simd_identity: {n} results compared across levels, {bad} differ")
    arrays = {f"r{i}": np.asarray(a) for i, a in enumerate(saved)}
    # bfloat16 (an ml_dtypes type) does not survive np.savez: its bits
    arrays = {
        key: a.view(np.uint16) if a.dtype.itemsize == 2 else a
        for key, a in arrays.items()
    }
    if args.save:
        np.savez(args.save, **arrays)
        print(f"simd_identity: {len(arrays)} results saved to {args.save}")
    if args.compare:
        with np.load(args.compare) as other:
            diff = [
                key
                for key in arrays
                if key not in other or not same(arrays[key], other[key])
            ]
            if len(other.files) != len(arrays):
                diff.append(f"{len(other.files)} results in the file")
        print(
            f"simd_identity: {len(arrays)} results compared with "
            f"{args.compare}, {len(diff)} differ"
            + (f": {diff[:10]}" if diff else "")
        )
        bad += len(diff)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
