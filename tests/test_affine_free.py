"""The affine-free form (issue 13, item 5): gamma=None and/or beta=None in
every functional forward, on the shared generator, for every family of
the registry (tests/families.py; the variants are
``families.affine_free_variants``).

For each case and each variant (no gamma, no beta, neither):

* the forward's out against the reference's with the same None arguments
  (the accuracy rule of tests/arrays.py, the wide reference as oracle);
* the backward returns None exactly for the gradient of a None parameter,
  in both bnfast and the reference;
* every result (out, dx, and the gradient still returned) is bitwise the
  one of the same call with gamma = ones and beta = zeros, whose accuracy
  against the reference the equivalence tests check with their
  conditioning scales; the reference's too, so both sides of that check
  are the affine-free ones (the reference's only when the parameters have
  x's dtype: its None is a 1 of x's dtype, and float64 ones with float32 x
  compute in float64).
"""

import numpy as np
import pytest

import bnfast
from bnfast import reference

from arrays import assert_as_accurate
from families import FAMILIES, affine_free_variants, family_params, ident


def _equal(what, a, b):
    assert (a is None) == (b is None), what
    if a is not None:
        assert a.dtype == b.dtype and a.shape == b.shape, what
        np.testing.assert_array_equal(a, b, err_msg=what)


def check(fam, mode, extra, case, free, ones):
    """The checks above for one family (tests/families.py), mode, extra
    arguments and variant: the backward after the forward in ``mode``
    when it is one of the family's backward modes."""
    label = f"{fam.name} {mode or ''} {extra or ''}"
    out, cache, _ = fam.run(bnfast, free, mode, extra)
    ref, rcache, _ = fam.run(reference, free, mode, extra)
    wide, wcache, _ = fam.run(reference, free.widened(), mode, extra)
    out1, cache1, _ = fam.run(bnfast, ones, mode, extra)
    ref1, rcache1, _ = fam.run(reference, ones, mode, extra)
    same = case.gamma.dtype == case.x.dtype == case.beta.dtype
    assert_as_accurate(
        f"{label} out",
        case,
        out,
        ref,
        wide,
        scale=fam.forward_scale(free.widened(), extra, wide),
    )
    _equal(f"{label} out vs ones [{case.id}]", out, out1)
    if same:
        _equal(f"{label} reference out vs ones [{case.id}]", ref, ref1)
    if cache is None or mode not in fam.backward_modes:
        return
    grads = fam.run_backward(bnfast, case.dout, cache)
    grads1 = fam.run_backward(bnfast, case.dout, cache1)
    rgrads = fam.run_backward(reference, case.dout, rcache)
    rgrads1 = fam.run_backward(reference, case.dout, rcache1)
    wanted = (True, free.gamma is not None, free.beta is not None)
    for name, g, g1, r, r1, want in zip(
        fam.grads, grads, grads1, rgrads, rgrads1, wanted
    ):
        what = f"{label} {name} [{case.id}]"
        assert (g is not None) == want, what
        assert (r is not None) == want, what + " (reference)"
        if want:
            assert g.dtype == r.dtype and g.shape == r.shape, what
            _equal(what + " vs ones", g, g1)
            if same:
                _equal(what + " vs ones (reference)", r, r1)


# a variant (ReLU, residual) reads gamma and beta as its base family does
# (the same per-channel coefficients), which runs on every content
VARIANT_CONTENTS = ("plain", "offset1e4", "nan-inf", "mixed-params")


def _rows(fam):
    for mode in fam.modes:
        for case, extra in fam.case_params():
            if (
                fam.variant_of is not None
                and case.contents not in VARIANT_CONTENTS
            ):
                continue
            suffix = ident(extra)
            for name, free, ones in affine_free_variants(case, fam):
                yield (
                    (mode, extra, case, free, ones),
                    f"{mode}-{case.id}{suffix}-{name}",
                )


@pytest.mark.parametrize(
    "fam,mode,extra,case,free,ones", family_params(FAMILIES, _rows)
)
def test_affine_free(fam, mode, extra, case, free, ones):
    check(fam, mode, extra, case, free, ones)


# -- out=, errors, caches, layers ---------------------------------------


def test_out_with_none_params():
    x = np.random.default_rng(0).standard_normal((5, 4))
    out = np.empty_like(x)
    res, cache = bnfast.batchnorm_forward(
        x, None, None, {"mode": "train"}, out=out
    )
    assert res is out
    dx = np.empty_like(x)
    got = bnfast.batchnorm_backward(np.ones_like(x), cache, out=dx)
    assert got[0] is dx and got[1] is None and got[2] is None
    # out= still may not be an argument (x), None or not
    with pytest.raises(ValueError, match="out must not share memory with x"):
        bnfast.layernorm_forward(x, None, None, {}, out=x)
    with pytest.raises(ValueError, match="out must not share memory"):
        bnfast.spatial_groupnorm_forward(
            x.reshape(5, 4, 1), None, None, 2, {}, out=x.reshape(5, 4, 1)
        )


def test_wrong_types_still_raise():
    x = np.ones((3, 2))
    for bad in ("a", [1j, 2j], np.ones(2, complex), np.ones(3)):
        for kw in ("gamma", "beta"):
            args = {"gamma": None, "beta": None}
            args[kw] = bad
            with pytest.raises((TypeError, ValueError), match=kw):
                bnfast.batchnorm_forward(
                    x, args["gamma"], args["beta"], {"mode": "train"}
                )
            with pytest.raises((TypeError, ValueError), match=kw):
                bnfast.layernorm_forward(x, args["gamma"], args["beta"], {})


def test_cache_and_gradient_dtypes():
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    # only beta: dbeta in beta's dtype and shape (float64, (3,))
    _, cache = bnfast.batchnorm_forward(
        x, None, np.zeros(3), {"mode": "train"}
    )
    assert cache.gamma is None and cache.affine == (False, True)
    dx, dg, db = bnfast.batchnorm_backward(np.ones_like(x), cache)
    assert dx.dtype == np.float32 and dg is None
    assert db.dtype == np.float64 and db.shape == (3,)
    # integer beta converted to x's dtype, feature-shaped kept
    _, cache = bnfast.layernorm_forward(
        x.reshape(4, 3, 1), None, np.zeros((3, 1), int), {}
    )
    _, dg, db = bnfast.layernorm_backward(np.ones((4, 3, 1)), cache)
    assert dg is None and db.dtype == np.float32 and db.shape == (3, 1)
    _, cache = bnfast.spatial_groupnorm_forward(
        x.reshape(4, 3, 1), None, None, 3, {}
    )
    assert cache.affine == (False, False)


@pytest.mark.parametrize(
    "make",
    [
        lambda: bnfast.BatchNorm(4, affine=False, dtype=np.float64),
        lambda: bnfast.BatchNorm(4, bias=False, dtype=np.float64),
        lambda: bnfast.LayerNorm(
            4, elementwise_affine=False, dtype=np.float64
        ),
        lambda: bnfast.LayerNorm(4, bias=False, dtype=np.float64),
        lambda: bnfast.GroupNorm(2, 4, affine=False, dtype=np.float64),
        lambda: bnfast.GroupNorm(2, 4, bias=False, dtype=np.float64),
    ],
)
def test_layers_pass_none(make):
    """A layer without gamma or beta gives what explicit ones and zeros
    give (bitwise), its grads dict holds its parameters only, and its
    gamma / beta properties still read as ones / zeros."""
    layer = make()
    x = np.random.default_rng(2).standard_normal((3, 4, 5))
    if isinstance(layer, bnfast.LayerNorm):
        x = x[:, :, 0]
    dout = np.random.default_rng(3).standard_normal(x.shape)
    out = layer.forward(x, "train")
    dx = layer.backward(dout)
    assert sorted(layer.grads) == sorted(layer.params)
    g, b = layer.gamma, layer.beta
    for name, a in (("gamma", g), ("beta", b)):
        assert a.flags.writeable == (name in layer.params)
    if isinstance(layer, bnfast.BatchNorm):
        ref, cache = bnfast.spatial_batchnorm_forward(
            x, g, b, {"mode": "train"}
        )
        rdx = bnfast.spatial_batchnorm_backward(dout, cache)[0]
    elif isinstance(layer, bnfast.LayerNorm):
        ref, cache = bnfast.layernorm_forward(x, g, b, {})
        rdx = bnfast.layernorm_backward(dout, cache)[0]
    else:
        ref, cache = bnfast.spatial_groupnorm_forward(x, g, b, 2, {})
        rdx = bnfast.spatial_groupnorm_backward(dout, cache)[0]
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(dx, rdx)
    if "gamma" not in layer.params:
        np.testing.assert_array_equal(g, np.ones(g.shape))
        assert layer.dgamma is None
    if "beta" not in layer.params:
        np.testing.assert_array_equal(b, np.zeros(b.shape))
        assert layer.dbeta is None


@pytest.mark.parametrize("reduce", [False, True])
def test_sync_batchnorm(reduce):
    """Synchronized batch norm with None parameters: what explicit ones
    and zeros give, bitwise, and None gradients."""
    from bnfast import distributed

    from fakempi import run_ranks

    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((n, 3, 2)) for n in (4, 0, 3)]
    dys = [rng.standard_normal(x.shape) for x in xs]
    beta = rng.standard_normal(3)

    def fn(comm, gamma, b):
        x, dy = xs[comm.rank], dys[comm.rank]
        out, cache = distributed.sync_batchnorm_forward(
            x, gamma, b, {"mode": "train"}, comm, axis=1
        )
        return (
            out,
            *distributed.sync_batchnorm_backward(
                dy, cache, reduce_param_grads=reduce
            ),
        )

    free, _ = run_ranks(3, lambda comm: fn(comm, None, beta))
    ones, _ = run_ranks(3, lambda comm: fn(comm, np.ones(3), beta))
    for f, o in zip(free, ones):
        assert f[2] is None
        for a, b in ((f[0], o[0]), (f[1], o[1]), (f[3], o[3])):
            np.testing.assert_array_equal(a, b)
    free, _ = run_ranks(3, lambda comm: fn(comm, None, None))
    assert all(f[2] is None and f[3] is None for f in free)
    for f, o in zip(free, ones):
        assert f[0].shape == o[0].shape


def test_torch_batch_norm_without_weight_and_bias():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 3, 4, 4))
    dout = rng.standard_normal(x.shape)
    out, cache = bnfast.spatial_batchnorm_forward(
        x, None, None, {"mode": "train"}
    )
    dx, dg, db = bnfast.spatial_batchnorm_backward(dout, cache)
    assert dg is None and db is None
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.batch_norm(
        tx, None, None, None, None, training=True, eps=1e-5
    )
    ty.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, ty.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), atol=1e-12)
    # layer norm and group norm, weight=None / bias=None
    out, cache = bnfast.spatial_groupnorm_forward(x, None, None, 3, {})
    tg = torch.nn.functional.group_norm(torch.tensor(x), 3, None, None, 1e-5)
    np.testing.assert_allclose(out, tg.numpy(), atol=1e-12)
    out, cache = bnfast.layernorm_forward(x, None, None, {})
    tl = torch.nn.functional.layer_norm(
        torch.tensor(x), x.shape[1:], None, None, 1e-5
    )
    np.testing.assert_allclose(out, tl.numpy(), atol=1e-12)
