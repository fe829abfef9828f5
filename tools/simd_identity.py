"""Check the README's promise that results are identical across SIMD
levels: the installed bnfast (its kernels dispatch at run time to this
CPU's clone: x86-64-v4, -v3 or baseline) against a baseline-only build of
the same sources (BNF_NO_DISPATCH), bitwise, on every family, both dtypes,
both kernel families, with and without the fused ReLU, at offsets 0 and
1e4.

    python tools/simd_identity.py

Builds the tracked tree in a temporary directory with the running
interpreter (needs setuptools, Cython and numpy: ``pip install setuptools
Cython``), loads that extension beside the installed one, compares, and
exits 1 on any difference.  On a CPU where the dispatch picks the baseline
too it says so (the comparison then checks only the build flags).
CI runs it (.ci/run).
"""
import glob
import importlib.util
import os
import subprocess
import sys
import tempfile
import types

import numpy as np

import bnfast

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_baseline(tmp):
    files = subprocess.run(["git", "-C", REPO, "ls-files", "-z"], check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src, dst = os.path.join(REPO, f), os.path.join(tmp, f)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(src, "rb") as a, open(dst, "wb") as b:
                b.write(a.read())
    env = dict(os.environ, CFLAGS="-DBNF_NO_DISPATCH")
    log = os.path.join(tmp, "build.log")
    with open(log, "w") as out:
        rc = subprocess.run([sys.executable, "setup.py", "build_ext",
                             "--inplace"], cwd=tmp, env=env, stdout=out,
                            stderr=subprocess.STDOUT).returncode
    if rc:
        sys.exit(open(log).read() + "\nthe baseline build failed")
    so = glob.glob(os.path.join(tmp, "src", "bnfast", "_kernels*.so"))[0]
    pkg = types.ModuleType("bnfast_baseline")
    pkg.__path__ = []
    sys.modules["bnfast_baseline"] = pkg
    spec = importlib.util.spec_from_file_location("bnfast_baseline._kernels",
                                                  so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def results(k, x, dy, g, b, axis):
    """Every output of every family on x, with module k's functions."""
    out = []
    for act in (None, "relu"):
        y, cache = k.spatial_batchnorm_forward(x, g, b, {"mode": "train"},
                                               axis=axis, activation=act)
        out += [y, *k.batchnorm_backward(dy, cache)]
        p = {"mode": "test", "running_mean": g * 0.5, "running_var": g}
        y, cache = k.spatial_batchnorm_forward(x, g, b, p, axis=axis,
                                               activation=act)
        out += [y, *k.batchnorm_backward(dy, cache)]  # frozen
        # affine-free (gamma = 1, beta = 0 from NULL in the kernels)
        y, cache = k.spatial_batchnorm_forward(x, None, None,
                                               {"mode": "train"}, axis=axis,
                                               activation=act)
        out += [y, k.batchnorm_backward(dy, cache)[0]]
    if axis == 1:
        x2 = x.reshape(x.shape[0], -1)
        d = x2.shape[1]
        y, cache = k.layernorm_forward(x2, np.linspace(0.5, 1.5, d, dtype=x.dtype),
                                       np.zeros(d, x.dtype), {})
        out += [y, *k.layernorm_backward(dy.reshape(x2.shape), cache)]
        y, cache = k.rmsnorm_forward(x2, np.linspace(0.5, 1.5, d, dtype=x.dtype),
                                     {"eps": 1e-5})
        out += [y, *k.rmsnorm_backward(dy.reshape(x2.shape), cache)]
        if x.ndim == 4:
            for groups in (1, x.shape[1]):
                y, cache = k.spatial_groupnorm_forward(x, g, b, groups, {})
                out += [y, *k.spatial_groupnorm_backward(dy, cache)]
    if x.ndim == 4 and axis == x.ndim - 1:  # group norm, channels last
        for groups in (1, x.shape[-1]):
            y, cache = k.spatial_groupnorm_forward(x, g, b, groups, {},
                                                   axis=-1)
            out += [y, *k.spatial_groupnorm_backward(dy, cache)]
    return out


def main():
    fast = bnfast._kernels
    with tempfile.TemporaryDirectory() as tmp:
        base = build_baseline(tmp)
        level = fast.simd_level()
        print(f"installed build: {level}; comparison build: "
              f"{base.simd_level()}")
        if level == base.simd_level():
            print("(this CPU runs the baseline clone: only the build flags "
                  "are compared)")
        rng = np.random.default_rng(1)
        n = bad = 0
        for dt in (np.float32, np.float64):
            for shape, axis in [((300, 517), 1), ((64, 2049), 1),
                                ((7, 5, 9, 13), 1), ((5, 9, 13, 7), 3),
                                ((40000, 3), 1), ((3, 4, 70, 70), 1)]:
                for offset in (0.0, 1e4):
                    x = (rng.standard_normal(shape) * 2 + 3 + offset).astype(dt)
                    dy = rng.standard_normal(shape).astype(dt)
                    c = shape[axis]
                    g = (rng.random(c) + 0.5).astype(dt)
                    b = rng.standard_normal(c).astype(dt)
                    for k in (fast, base):
                        k.set_num_threads(1)
                    for a, c2 in zip(results(fast, x, dy, g, b, axis),
                                     results(base, x, dy, g, b, axis)):
                        n += 1
                        if not np.array_equal(a, c2, equal_nan=True):
                            bad += 1
                            print(f"DIFFERS: {np.dtype(dt).name} {shape} "
                                  f"axis {axis} offset {offset:g}: max "
                                  f"{np.max(np.abs(a - c2)):.3g}")
        print(f"simd_identity: {n} results compared, {bad} differ")
        return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
