"""Extremes of the floating-point range (issue 12, item 6): finite data
whose squares overflow or underflow the dtype still normalizes to the
math's finite answer, in every family, forward ('train') and backward.

* one huge value in every channel (row, group) next to ordinary ones
  (float64: 1e200, 1e300, -1.7e308; float32: -3.4e38): M2 overflows, so
  the channel came out NaN (and float32's backward sums overflowed);
* a huge value in a long batch (float64 3e155 among 2000 values): M2
  overflows but the variance does not, so running_var must be finite;
* a tiny spread with eps = 0 (float64 1e-160, 1e-200, 1e-300; float32
  1e-22, 1e-30, 1e-37): the squares underflow to subnormals or zero;
* a wide spread (float64 1e200, 1e306): the squares overflow.
GUARDS were right before and must stay so (float32 statistics already
re-summed in double; no 1/std**3 in the layer norm backward).

Oracle: normalization is invariant under an exact power-of-two scaling,
x -> x * 2**k with eps -> eps * 4**k: out, dgamma and dbeta are unchanged,
mean and std scale by 2**k, dx by 2**-k.  So the reference (and its
wide-precision twin, the accuracy oracle) runs on x * 2**k, k chosen so
that max |x| * 2**k is near 1, and its results are scaled back; then the
rule of tests/arrays.py applies as everywhere else.  The plain reference
itself overflows on these inputs (NaN output, or beta where the math says
otherwise, and an infinite running_var): what is checked is the math.
"""

import math

import numpy as np
import pytest

import bnfast
from bnfast import reference

from arrays import assert_as_accurate
from families import BASE, BY_NAME

MOMENTUM = 0.9


class Family:
    """One family of the registry (tests/families.py, ``base``; its
    "+relu" variant for the fused ReLU) on shapes of its own, with the
    axes of its statistics (for the oracle's conditioning scales)."""

    def __init__(
        self, name, base, small, large, axis=None, kind="bn", groups=2
    ):
        self.name, self.base, self.small, self.large = name, base, small, large
        self.axis, self.kind, self.groups = axis, kind, groups

    def entry(self, activation=None):
        return BY_NAME[self.base + ("+" + activation if activation else "")]

    def forward(self, m, x, gamma, beta, eps, activation=None):
        fam = self.entry(activation)
        if fam.param == "bn":
            p = {"mode": "train", "eps": eps, "momentum": MOMENTUM}
        else:
            p = {"eps": eps}
        extra = {"G": self.groups} if "G" in fam.positional else {}
        out, cache = fam.call(m, x, gamma, beta, p, extra, self.axis)
        return out, cache, (p if fam.param == "bn" else None)

    def backward(self, m, dout, cache):
        """(dx, dgamma, dbeta), dbeta None without beta (RMS norm)."""
        grads = tuple(getattr(m, self.entry().backward)(dout, cache))
        return grads + (None,) * (3 - len(grads))

    def channels(self, shape):
        if self.kind in ("ln", "rms"):
            return int(np.prod(shape[1:]))
        if self.kind == "gn" or self.axis is None:
            return shape[1] if self.kind == "gn" else int(np.prod(shape[1:]))
        return shape[self.axis]

    def groups_view(self, a):
        """a (x's shape) as (statistics' groups, elements): one row per
        channel, row or group."""
        n = a.shape[0]
        if self.kind in ("ln", "rms"):
            return a.reshape(n, -1)
        if self.kind == "gn":
            return a.reshape(n * self.groups, -1)
        if self.axis is None:
            return a.reshape(n, -1).T
        return np.moveaxis(a, self.axis, -1).reshape(-1, a.shape[self.axis]).T

    def param_view(self, a):
        """a (x's shape) as (parameters' channels, elements)."""
        n = a.shape[0]
        if (
            self.kind in ("ln", "rms")
            or self.axis is None
            and self.kind == "bn"
        ):
            return a.reshape(n, -1).T
        ax = 1 if self.kind == "gn" else self.axis
        return np.moveaxis(a, ax, 0).reshape(a.shape[ax], -1)

    def gamma_full(self, gamma, shape):
        """gamma broadcast to x's shape."""
        if (
            self.kind in ("ln", "rms")
            or self.axis is None
            and self.kind == "bn"
        ):
            return np.broadcast_to(gamma.reshape(shape[1:]), shape)
        ax = 1 if self.kind == "gn" else self.axis % len(shape)
        sh = [1] * len(shape)
        sh[ax] = shape[ax]
        return np.broadcast_to(gamma.reshape(sh), shape)


FAMILIES = [
    Family("batchnorm C (across rows)", "batchnorm", (64, 5), (2000, 3)),
    Family("batchnorm F (along runs)", "batchnorm", (64, 5), (2000, 3)),
    Family(
        "spatial NCHW",
        "spatial_batchnorm",
        (8, 3, 6, 5),
        (20, 3, 10, 10),
        axis=1,
    ),
    Family(
        "spatial NHWC",
        "spatial_batchnorm",
        (8, 6, 5, 3),
        (20, 10, 10, 3),
        axis=-1,
    ),
    Family("layernorm", "layernorm", (6, 200), (4, 2000), kind="ln"),
    Family(
        "groupnorm",
        "spatial_groupnorm",
        (4, 6, 5, 5),
        (3, 4, 25, 40),
        kind="gn",
    ),
    # statistics: the root mean square per row (no mean, no beta)
    Family("rmsnorm", "rmsnorm", (6, 200), (4, 2000), kind="rms"),
]


def test_every_family_of_the_registry_is_here():
    assert {f.base for f in FAMILIES} == {f.name for f in BASE}
    for f in FAMILIES:
        if f.kind == "bn":
            assert f.entry("relu").options == {"activation": "relu"}


# (dtype, contents, value, eps, size); each of these failed before the
# rescue kernels (csrc/extremes_tmpl.h)
CASES = [
    (np.float64, "spike", 1e200, 1e-5, "small"),
    (np.float64, "spike", 1e300, 1e-5, "small"),
    (np.float64, "spike", -1.7e308, 1e-5, "small"),
    (np.float64, "spike", 3e155, 1e-5, "large"),  # M2 over, var not
    (np.float64, "spread", 1e-160, 0.0, "small"),
    (np.float64, "spread", 1e-200, 0.0, "small"),
    (np.float64, "spread", 1e-300, 0.0, "small"),
    (np.float64, "spread", 1e200, 1e-5, "small"),
    (np.float64, "spread", 1e306, 1e-5, "small"),
    (np.float32, "spike", -3.4e38, 1e-5, "small"),  # backward's C sums
    (np.float32, "spread", 1e-22, 0.0, "small"),
    (np.float32, "spread", 1e-30, 0.0, "small"),
    (np.float32, "spread", 1e-37, 0.0, "small"),
]
# guards: right before too (the float32 double re-sum of the statistics;
# no 1/std**3 in the layer norm backward), and must stay so
GUARDS = [
    (np.float64, "spread", 1e120, 1e-5, "small"),
    (np.float32, "spike", 1e25, 1e-5, "small"),
    (np.float32, "spike", 1e38, 1e-5, "small"),
    (np.float32, "spread", 1e15, 1e-5, "small"),
    (np.float32, "spread", 1e30, 1e-5, "small"),
    (np.float32, "spread", 1e37, 1e-5, "small"),
]


def _data(fam, dtype, contents, value, size, seed=3):
    rng = np.random.default_rng(seed)
    shape = fam.small if size == "small" else fam.large
    x = rng.standard_normal(shape) + rng.uniform(-1, 1, shape[-1])
    if contents == "spike":
        # one in every channel (row, group), at various places: scaling the
        # whole x by one power of two then keeps every group's squares in
        # range (the oracle needs that)
        ids = fam.groups_view(np.arange(x.size).reshape(shape))
        at = (3 * np.arange(len(ids)) + 2) % ids.shape[1]
        x.flat[ids[np.arange(len(ids)), at]] = value
    else:
        x = x * value
    if fam.name.startswith("batchnorm F"):
        x = np.asfortranarray(x)
    c = fam.channels(shape)
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype)
    beta = rng.uniform(-1, 1, c).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    return x.astype(dtype), gamma, beta, dout


def _eps(eps, k):
    """eps * 4**k (0 stays 0)"""
    return math.ldexp(eps, 2 * k) if eps else 0.0


def _scaled(fam, x, gamma, beta, dout, eps, k, dtype, activation=None):
    """The reference's results on x * 2**k (eps * 4**k) in dtype, scaled
    back, and the wide-precision x * 2**k's xhat and 1/std."""
    with np.errstate(all="ignore"):
        xs = np.ldexp(x.astype(dtype), k)
        out, cache, p = fam.forward(
            reference,
            xs,
            gamma.astype(dtype),
            beta.astype(dtype),
            _eps(eps, k),
            activation,
        )
        dx, dg, db = fam.backward(reference, dout.astype(dtype), cache)
        res = {"out": out, "dx": np.ldexp(dx, k), "dgamma": dg}
        if db is not None:
            res["dbeta"] = db
        if p is not None:
            res["running_mean"] = np.ldexp(p["running_mean"], -k)
            res["running_var"] = np.ldexp(p["running_var"], -2 * k)
        g = fam.groups_view(xs)
        if fam.kind == "rms":  # "std": the root mean square; no mean
            mean = np.zeros((len(g), 1), dtype)
            std = np.sqrt(
                np.mean(g * g, axis=1, keepdims=True) + dtype(_eps(eps, k))
            )
        else:
            mean = g.mean(axis=1, keepdims=True)
            std = np.sqrt(g.var(axis=1, keepdims=True) + dtype(_eps(eps, k)))
    return res, g, mean, std


def _ids(cases):
    return [
        f"{np.dtype(d).name}-{c}-{v:g}-eps{e:g}-{s}" for d, c, v, e, s in cases
    ]


@pytest.mark.parametrize(
    "dtype,contents,value,eps,size", CASES, ids=_ids(CASES)
)
@pytest.mark.parametrize("fam", FAMILIES, ids=[f.name for f in FAMILIES])
def test_extremes_match_the_scaled_reference(
    fam, dtype, contents, value, eps, size
):
    _check(fam, dtype, contents, value, eps, size)


@pytest.mark.parametrize(
    "dtype,contents,value,eps,size", GUARDS, ids=_ids(GUARDS)
)
@pytest.mark.parametrize("fam", FAMILIES, ids=[f.name for f in FAMILIES])
def test_extremes_that_were_right_stay_right(
    fam, dtype, contents, value, eps, size
):
    _check(fam, dtype, contents, value, eps, size)


# positive spikes: the ReLU keeps their dy, whose products overflow
RELU_CASES = [
    (np.float64, "spike", 1.7e308, 1e-5, "small"),
    (np.float32, "spike", 3.4e38, 1e-5, "small"),
    (np.float64, "spread", 1e-200, 0.0, "small"),
]


@pytest.mark.parametrize(
    "dtype,contents,value,eps,size", RELU_CASES, ids=_ids(RELU_CASES)
)
@pytest.mark.parametrize(
    "fam", [f for f in FAMILIES if f.kind == "bn"], ids=lambda f: f.name
)
def test_extremes_with_the_fused_relu(fam, dtype, contents, value, eps, size):
    """The backward's rescue masks g with the forward's ReLU as the fast
    kernels do."""
    _check(fam, dtype, contents, value, eps, size, "relu")


def _check(fam, dtype, contents, value, eps, size, activation=None):
    x, gamma, beta, dout = _data(fam, dtype, contents, value, size)
    wide = np.longdouble if dtype == np.float64 else np.float64
    # 2**k * max|x| in [0.5, 1): exact in both precisions
    k = -math.frexp(float(np.max(np.abs(x.astype(np.float64)))))[1]

    out, cache, p = fam.forward(bnfast, x, gamma, beta, eps, activation)
    dx, dg, db = fam.backward(bnfast, dout, cache)
    fast = {"out": out, "dx": dx, "dgamma": dg}
    if db is not None:
        fast["dbeta"] = db
    if p is not None:
        fast["running_mean"] = p["running_mean"]
        fast["running_var"] = p["running_var"]
    ref, _, _, _ = _scaled(
        fam, x, gamma, beta, dout, eps, k, dtype, activation
    )
    orc, g, mean, std = _scaled(
        fam, x, gamma, beta, dout, eps, k, wide, activation
    )

    # the conditioning scales of tests/families.py (test_equivalence.py), on
    # the scaled wide data (dx's scaled back)
    with np.errstate(all="ignore"):
        shape = x.shape
        dw = dout.astype(wide)
        gw = fam.gamma_full(gamma.astype(wide), shape)
        m_over_s = np.abs(mean) / std  # per group, broadcast along it
        xhat = np.abs((g - mean) / std)
        if fam.kind == "rms":  # tests/families.py's _rms_scales
            dx_terms = (
                np.abs(fam.groups_view(gw * dw))
                / std
                * (1 + xhat * np.max(xhat, axis=1, keepdims=True))
            )
        else:
            dx_terms = np.abs(fam.groups_view(gw * dw)) / std * (1 + m_over_s)
        dg_terms = np.abs(fam.groups_view(dw)) * (xhat + m_over_s)
        # back to x's shape, then summed per parameter channel
        back = _ungroup(fam, dg_terms, shape)
        dg_scale = float(np.max(fam.param_view(back).sum(axis=1)))
        db_scale = float(np.max(fam.param_view(np.abs(dw)).sum(axis=1)))
    dx_scale = float(np.max(dx_terms)) * 2.0**k
    scales = {"dx": dx_scale, "dgamma": dg_scale, "dbeta": db_scale}

    label = type(
        "L",
        (),
        {
            "id": f"{fam.name}-{np.dtype(dtype).name}-"
            f"{contents}-{value:g}-eps{eps:g}",
            "x": x,
        },
    )()
    # a result in the subnormal range is a multiple of the smallest
    # subnormal: its rounding is relative to the smallest normal number
    tiny = float(np.finfo(dtype).smallest_normal)
    for key in fast:
        scale = scales.get(key)
        if scale is None:
            scale = float(
                np.max(np.abs(orc[key][np.isfinite(orc[key])]), initial=0.0)
            )
        assert_as_accurate(
            f"{key}",
            label,
            fast[key],
            ref[key],
            orc[key],
            scale=max(scale, tiny),
        )
    # the math is finite: so is everything but a variance beyond the range
    for key in ("out", "dx", "dgamma", "dbeta", "running_mean"):
        if key in fast:
            assert np.isfinite(fast[key]).all(), (label.id, key)


def _ungroup(fam, a, shape):
    """The inverse of fam.groups_view for an array of x's size."""
    if fam.kind in ("ln", "gn", "rms"):
        return a.reshape(shape)
    if fam.axis is None:
        return a.T.reshape(shape)
    moved = np.moveaxis(np.empty(shape), fam.axis, -1).shape
    return np.moveaxis(a.T.reshape(moved), -1, fam.axis)


@pytest.mark.parametrize(
    "fam", [f for f in FAMILIES if f.kind == "bn"], ids=lambda f: f.name
)
def test_running_var_finite_when_only_m2_overflows(fam):
    """3e155 among 2000 values: the sum of squares (9e310) overflows, the
    variance (~4.5e307) does not; running_var = 0.1 * var, finite."""
    x, gamma, beta, _ = _data(fam, np.float64, "spike", 3e155, "large")
    _, _, p = fam.forward(bnfast, x, gamma, beta, 1e-5)
    xw = fam.groups_view(x.astype(np.longdouble))
    var = np.ldexp(np.ldexp(xw, -600).var(axis=1), 1200)
    want = ((1 - MOMENTUM) * var).astype(np.float64)
    assert np.isfinite(want).all()
    np.testing.assert_allclose(p["running_var"], want, rtol=1e-13)
