"""Every family of the registry (tests/families.py) against its twin in
bnfast.reference on the shared generator (tests/arrays.py), under the one
accuracy rule (``assert_as_accurate``: the reference one precision wider
as the oracle): the forward in each of the family's modes (out, the
running statistics, the cache), the backward with each twin after a
forward in each backward mode ('test': the frozen statistics)."""

import numpy as np
import pytest

import bnfast
from bnfast import reference

from arrays import assert_as_accurate
from families import EPS, FAMILIES, family_params, ident


def _forward_rows(fam):
    for mode in fam.modes:
        for case, extra in fam.case_params():
            suffix = ident(extra)
            yield (mode, case, extra), f"{mode}-{case.id}{suffix}"


def _backward_rows(fam):
    for mode in fam.backward_modes:
        for case, extra in fam.case_params():
            suffix = ident(extra)
            for twin in fam.backwards:
                yield (
                    (mode, case, extra, twin),
                    f"{mode}-{case.id}{suffix}-{twin}",
                )


@pytest.mark.parametrize(
    "fam,mode,case,extra", family_params(FAMILIES, _forward_rows)
)
def test_forward(fam, mode, case, extra):
    out, cache, p = fam.run(bnfast, case, mode, extra)
    ref, _, rp = fam.run(reference, case, mode, extra)
    wide, _, wp = fam.run(reference, case.widened(), mode, extra)
    what = f"{fam.forward} {mode or ''} {fam.options or ''} {extra or ''}"
    assert isinstance(cache, fam.cache_type)
    assert_as_accurate(
        f"{what} out",
        case,
        out,
        ref,
        wide,
        scale=fam.forward_scale(case.widened(), extra, wide),
    )
    if mode == "train":
        for key in ("running_mean", "running_var"):
            assert_as_accurate(f"{what} {key}", case, p[key], rp[key], wp[key])
    elif mode == "test":
        assert cache.frozen
        for key in ("running_mean", "running_var"):
            np.testing.assert_array_equal(p[key], getattr(case, key))


@pytest.mark.parametrize(
    "fam,mode,case,extra,twin", family_params(FAMILIES, _backward_rows)
)
def test_backward(fam, mode, case, extra, twin):
    _, cache, _ = fam.run(bnfast, case, mode, extra)
    _, rcache, _ = fam.run(reference, case, mode, extra)
    wcase = case.widened()
    _, wcache, _ = fam.run(reference, wcase, mode, extra)
    if mode == "test":
        assert cache.frozen
    fast = getattr(bnfast, twin)(case.dout, cache)
    ref = fam.run_backward(reference, case.dout, rcache, twin)
    wide = fam.run_backward(reference, wcase.dout, wcache, twin)
    scales = fam.scales(case, wcase, wcache, extra, EPS, mode)
    assert len(fast) == len(fam.grads)
    for name, f, r, w, s in zip(fam.grads, fast, ref, wide, scales):
        assert_as_accurate(
            f"{twin} {name} ({mode} {fam.options or ''} {extra or ''})",
            case,
            f,
            r,
            w,
            scale=s,
        )
