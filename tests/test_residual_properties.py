"""Hypothesis property tests of the fused residual (residual=z): drawn
batches, layouts of x, dout and z (strided, permuted, unaligned, broadcast),
eps and modes, against the reference twin with the accuracy rule (the
profiles of test_properties)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import bnfast
from bnfast import reference

from arrays import assert_as_accurate
from test_properties import (
    ACTIVATION,
    EPS,
    bn_param,
    bn_scales,
    build,
    lay_out,
    layouts,
    specs,
)


@st.composite
def residuals(draw, shape):
    layout = draw(layouts(len(shape)))
    seed = draw(st.integers(0, 2**31))
    spread = draw(st.sampled_from([1.0, 1e-3, 1e3]))
    return np.random.default_rng(seed).standard_normal(shape) * spread, layout


def forward(module, case, z, p, activation):
    if case.axis is None:
        return module.batchnorm_forward(
            case.x, case.gamma, case.beta, p, activation=activation, residual=z
        )
    return module.spatial_batchnorm_forward(
        case.x,
        case.gamma,
        case.beta,
        p,
        axis=case.axis,
        activation=activation,
        residual=z,
    )


def check(case, zdraw, mode, activation, eps):
    values, layout = zdraw
    z = lay_out(values, case.x.dtype, layout)
    wcase = case.widened()
    wz = values.astype(wcase.x.dtype)
    z_before = z.copy()
    out, cache = forward(
        bnfast, case, z, bn_param(case, mode, eps, 0.9, False), activation
    )
    ref, rcache = forward(
        reference, case, z, bn_param(case, mode, eps, 0.9, False), activation
    )
    wide, wcache = forward(
        reference,
        wcase,
        wz,
        bn_param(wcase, mode, eps, 0.9, False),
        activation,
    )
    scales = bn_scales(wcase, eps, mode)
    what = f"{mode} +res ({activation}, eps={eps:g}, z:{layout})"
    assert_as_accurate(
        f"{what} out",
        case,
        out,
        ref,
        wide,
        scales["out"] + float(np.max(np.abs(values), initial=0)),
    )
    np.testing.assert_array_equal(z, z_before, err_msg="z was written")
    back = (
        "batchnorm_backward"
        if case.axis is None
        else "spatial_batchnorm_backward"
    )
    fast = getattr(bnfast, back)(case.dout, cache)
    rb = getattr(reference, back)(case.dout, rcache)
    wb = getattr(reference, back)(wcase.dout, wcache)
    for name, f, r, w in zip(
        ("dx", "dgamma", "dbeta", "dresidual"), fast, rb, wb
    ):
        scale = scales.get(name)
        if name == "dx" and mode == "test":
            scale = None  # one product per element
        assert_as_accurate(f"{what} {name}", case, f, r, w, scale)


@given(
    spec=specs("bn"),
    data=st.data(),
    mode=st.sampled_from(["train", "test"]),
    activation=ACTIVATION,
    eps=EPS,
)
def test_batchnorm_residual(spec, data, mode, activation, eps):
    case = build(spec)
    check(case, data.draw(residuals(case.x.shape)), mode, activation, eps)


@given(
    spec=specs("spatial"),
    data=st.data(),
    mode=st.sampled_from(["train", "test"]),
    activation=ACTIVATION,
    eps=EPS,
)
def test_spatial_batchnorm_residual(spec, data, mode, activation, eps):
    case = build(spec)
    check(case, data.draw(residuals(case.x.shape)), mode, activation, eps)
