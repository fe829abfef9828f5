"""Every family's backward (tests/families.py; each backward mode: 'test'
is the frozen statistics) against central differences of
sum(forward(x, gamma, beta) * dout), in float64 (eps 1e-3 for the plain
families: its term in the gradients counts), on the family's small
shapes (``Family.fd_shapes``)."""

import numpy as np
import pytest

import bnfast

from arrays import numeric_grad
from families import FAMILIES, family_params, ident


def _rows(fam):
    for mode in fam.backward_modes:
        for shape, axis, extra, pshape in fam.fd_shapes:
            suffix = ident(extra)
            yield (
                (mode, shape, axis, extra, pshape),
                f"{mode}-{shape}-axis{axis}{suffix}",
            )


@pytest.mark.parametrize(
    "fam,mode,shape,axis,extra,pshape", family_params(FAMILIES, _rows)
)
def test_gradients_match_finite_differences(
    fam, mode, shape, axis, extra, pshape
):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = rng.uniform(0.5, 1.5, pshape), rng.uniform(-0.5, 0.5, pshape)
    rm, rv = rng.uniform(-1, 1, pshape), rng.uniform(0.5, 2, pshape)
    dout = rng.standard_normal(shape)

    def fwd():
        # a plain family's eps 1e-3: its term in the gradients counts
        param = {"eps": 1e-3}
        if fam.param == "bn":
            param = {"mode": mode}
            if mode == "test":
                param.update(running_mean=rm, running_var=rv)
        return fam.run_small(
            bnfast, x, gamma, beta, extra=extra, axis=axis, param=param
        )

    out, cache = fwd()
    assert isinstance(cache, fam.cache_type)
    if fam.options.get("activation") == "relu":
        assert 0 < np.mean(out == 0) < 1  # the ReLU clips some, not all
    grads = getattr(bnfast, fam.backward)(dout, cache)
    label = f"{fam.name} {mode} {shape} axis={axis} {extra}"
    # dx, dgamma, dbeta, and d<name> of an extra input array (dresidual)
    inputs = {
        "dx": x,
        "dgamma": gamma,
        "dbeta": beta,
        **{"d" + k: v for k, v in extra.items() if isinstance(v, np.ndarray)},
    }
    assert len(grads) == len(fam.grads)
    for name, got in zip(fam.grads, grads):
        a = inputs[name]
        num = numeric_grad(lambda: fwd()[0], a, 1e-6, dout)
        np.testing.assert_allclose(
            got, num, rtol=1e-6, atol=1e-8, err_msg=f"{label}: {name}"
        )
