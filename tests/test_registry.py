"""The registry of families itself (tests/families.py): it covers every
public forward and backward of bnfast.functional, each entry names
functions that exist in both bnfast and bnfast.reference, and the
fields the generic tests read are consistent."""

import inspect

import numpy as np
import pytest

import bnfast
from bnfast import functional, reference

from families import BASE, BY_NAME, FAMILIES

# public functions that are not entries yet (none: RMS norm is one, with
# Family.params saying it takes no beta)
NOT_YET_ENTRIES = set()


def test_every_public_function_has_a_family():
    forwards = {f.forward for f in FAMILIES} | NOT_YET_ENTRIES
    backwards = {b for f in FAMILIES for b in f.backwards} | NOT_YET_ENTRIES
    for name in functional.__all__:
        if name.endswith("_forward"):
            assert name in forwards, f"{name} has no entry in FAMILIES"
        elif "_backward" in name:
            assert name in backwards, f"{name} has no entry in FAMILIES"


def test_names_are_unique_and_variants_name_their_family():
    assert len(BY_NAME) == len(FAMILIES)
    for fam in FAMILIES:
        if fam.variant_of is not None:
            base = BY_NAME[fam.variant_of]
            assert base.variant_of is None
            assert fam.forward == base.forward
    assert {f.forward for f in BASE} == {f.forward for f in FAMILIES}


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_entry_is_consistent(fam):
    for module in (bnfast, reference):
        for name in (fam.forward,) + fam.backwards:
            assert callable(getattr(module, name)), (module, name)
    # the fast and the reference forward take the same arguments
    fast = inspect.signature(getattr(bnfast, fam.forward)).parameters
    ref = inspect.signature(getattr(reference, fam.forward)).parameters
    assert [p for p in fast if p != "out"] == list(ref)
    assert fam.param in ("bn", "plain")
    assert set(fam.backward_modes) <= set(fam.modes)
    assert fam.strategy in ("bn", "spatial", "ln", "gn", "rms")
    assert fam.params in (("gamma", "beta"), ("gamma",))
    # one gradient per parameter after dx
    assert (
        fam.grads
        == ("dx",)
        + tuple("d" + p for p in fam.params)
        + fam.grads[1 + len(fam.params) :]
    )
    if not fam.has_beta:
        assert "beta" not in ref
    assert fam.cases(), "no shared-generator case applies"
    assert fam.fd_shapes and fam.small
    # a small call gives the documented cache type, gradients and shapes
    case, extra = fam.case_params()[0]
    out, cache, _ = fam.run(bnfast, case, fam.modes[0], extra)
    assert isinstance(cache, fam.cache_type)
    assert out.shape == case.x.shape
    grads = fam.run_backward(bnfast, case.dout, cache)
    assert len(grads) == len(fam.grads)
    assert grads[0].shape == case.x.shape
    for g in grads[1 : 1 + len(fam.params)]:
        assert g.shape == fam.param_shape(case)
    for key in fam.options:
        assert key in fast, (fam.name, key)
    assert np.dtype(out.dtype) == case.x.dtype
