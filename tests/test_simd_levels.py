"""Every SIMD level gives bitwise the same results.

The kernels are compiled once per SIMD level (setup.py: baseline, and on
x86-64 x86-64-v3 and x86-64-v4) and the best one the CPU runs is chosen at
import (csrc/dispatch.c).  Here every registry family (tests/families.py)
runs on every shared-generator case (float32 and float64, every layout
and content) and on the half-precision cases, at each level this build has
and this CPU runs, forward in each mode and backward, against the
baseline's results, bitwise (NaNs as one value).  On a CPU that runs
only the baseline the
comparison tests skip; the setter's tests still run.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import bnfast
from bnfast import _kernels

from families import FAMILIES
from test_half import HALF_FAMILIES

LEVELS = [
    name
    for name, (built, runs) in _kernels.simd_levels().items()
    if built and runs
]


@pytest.fixture
def restore_level():
    start = _kernels.simd_level()
    yield
    _kernels.set_simd_level(start)


def _bits(a):
    """The array's bits, with every NaN as one value: which NaN an
    operation on NaNs returns (its sign and payload) depends on operand
    order, which vectorization may change; where the NaNs are may not."""
    if a is None:
        return None
    a = np.array(a)
    bits = a.view(f"u{a.dtype.itemsize}").copy()
    bits[np.isnan(a)] = 1
    return bits


def _outputs(fam, case, mode, extra):
    out, cache, p = fam.run(bnfast, case, mode, extra)
    res = [out]
    if mode == "train":
        res += [p["running_mean"], p["running_var"]]
    grads = fam.run_backward(bnfast, case.dout, cache)
    return res + list(grads)


@pytest.mark.skipif(
    len(LEVELS) < 2,
    reason="this CPU runs only the baseline SIMD level: nothing to compare",
)
@pytest.mark.parametrize("half", [False, True], ids=["f32-f64", "half"])
@pytest.mark.parametrize("fam", FAMILIES, ids=[f.name for f in FAMILIES])
def test_levels_bitwise_equal(fam, half, restore_level):
    if half:
        fam = HALF_FAMILIES[FAMILIES.index(fam)]
    n = 0
    for case, extra in fam.case_params():
        for mode in fam.modes:
            _kernels.set_simd_level(LEVELS[0])
            ref = [_bits(a) for a in _outputs(fam, case, mode, extra)]
            for level in LEVELS[1:]:
                _kernels.set_simd_level(level)
                got = [_bits(a) for a in _outputs(fam, case, mode, extra)]
                for i, (a, b) in enumerate(zip(got, ref)):
                    n += 1
                    if a is None or b is None:
                        assert a is None and b is None
                        continue
                    assert np.array_equal(a, b), (
                        f"{fam.name} {mode} {case.id} {extra}: result {i} "
                        f"differs at {level} from {LEVELS[0]}"
                    )
    assert n > 0


def test_simd_levels_report():
    levels = _kernels.simd_levels()
    assert list(levels) == ["baseline", "x86-64-v3", "x86-64-v4"]
    assert levels["baseline"] == (True, True)
    assert _kernels.simd_level() in LEVELS
    # the best level built and run is the one chosen at import (unless
    # the environment chose another)
    if not os.environ.get("BNFAST_SIMD_LEVEL"):
        assert _kernels.simd_level() == LEVELS[-1]


def test_set_simd_level_errors(restore_level):
    start = _kernels.simd_level()
    with pytest.raises(
        ValueError,
        match="unknown SIMD level 'avx2'; the "
        "levels are 'baseline', 'x86-64-v3', 'x86-64-v4'",
    ):
        _kernels.set_simd_level("avx2")
    assert _kernels.simd_level() == start
    for name, (built, runs) in _kernels.simd_levels().items():
        if not built:
            with pytest.raises(ValueError, match="is not in this build"):
                _kernels.set_simd_level(name)
        elif not runs:
            with pytest.raises(ValueError, match="this CPU does not run"):
                _kernels.set_simd_level(name)
        assert _kernels.simd_level() == start
    assert _kernels.set_simd_level("baseline") == start
    assert _kernels.simd_level() == "baseline"


@pytest.mark.parametrize("value,ok", [("baseline", True), ("nope", False)])
def test_environment_variable(value, ok):
    code = (
        "import warnings, bnfast\n"
        "from bnfast import _kernels\n"
        "print(_kernels.simd_level())\n"
    )
    env = dict(os.environ, BNFAST_SIMD_LEVEL=value)
    r = subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    if ok:
        assert r.stdout.strip() == value and not r.stderr
    else:
        assert r.stdout.strip() == LEVELS[-1]
        assert (
            "RuntimeWarning: BNFAST_SIMD_LEVEL='nope' ignored (unknown "
            "SIMD level 'nope'"
        ) in r.stderr
