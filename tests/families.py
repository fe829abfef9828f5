"""The registry of families: one entry per normalization family (and per
option of a family that needs its own checks), which the generic test
files iterate over.

Generic files (each takes every entry of :data:`FAMILIES`):

* ``test_equivalence.py``: forward (each mode) and backward (each twin,
  each backward mode) against the reference twin on the shared generator
  (tests/arrays.py), under the one accuracy rule (``assert_as_accurate``,
  with the entry's conditioning scales, :attr:`Family.scales`);
* ``test_affine_free.py``: gamma=None / beta=None (a transformation of the
  case, :func:`affine_free_variants`, applied to every family);
* ``test_out.py``: ``out=`` of forward and backward into every layout;
* ``test_finite_differences.py``: backward against central differences
  (:attr:`Family.fd_shapes`);
* ``test_hostile.py``: the hostile-input matrix (:func:`hostile_forwards`,
  on :attr:`Family.small` arguments);
* ``test_threads.py``, ``test_concurrency.py``: thread counts, Python
  threads (:meth:`Family.run_small`);
* ``test_properties.py``: hypothesis equivalence (:attr:`Family.strategy`);
* ``test_extremes.py`` (its own shapes per base family, checked to cover
  :data:`BASE`), ``test_registry.py`` (the registry covers every public
  function of bnfast.functional; each entry is consistent).

Family-specific semantics stay in ``test_<family>.py`` files (e.g.
test_batchnorm.py, test_layernorm.py, test_groupnorm.py,
test_frozen_backward.py, test_affine_free.py's layer and sync tests).

How to add a family (e.g. RMS norm)
-----------------------------------
1. Write the fast function and its reference twin (same name, same
   signature) in bnfast and bnfast.reference.
2. Add one :class:`Family` entry to :data:`FAMILIES` below.  It must
   provide:

   ``name``
       the id in test names (``rmsnorm``); unique.
   ``forward``, ``backwards``
       names of the forward and of the backward twins, looked up in both
       ``bnfast`` and ``bnfast.reference`` (the first backward is the one
       the other files use; further ones are alternative twins with the
       same signature, e.g. ``batchnorm_backward_alt``).
   ``source``
       the shared-generator cases that apply: :func:`arrays.cases`
       (``axis`` None: statistics of ``x.reshape(N, -1)``) or
       :func:`arrays.spatial_cases` (a channel axis), optionally narrowed
       by ``select`` (a predicate on a Case, e.g. ``axis == 1``).
   ``extras``
       the extra arguments per case: a function Case -> list of dicts
       (default ``[{}]``).  Keys listed in ``positional`` are passed
       positionally between beta and the param dict (``G`` of group
       norm); the others as keywords.  A value may be a function of the
       Case (e.g. ``lambda c: c.dout`` for an extra input array): it is
       evaluated on the case actually run, so the widened oracle gets the
       widened array.
   ``param``
       which param dict it takes: "bn" (mode, eps, momentum, running
       statistics: the 'train'/'test' modes apply) or "plain" (eps only).
   ``modes``, ``backward_modes``
       the modes the forward is checked in, and the modes whose cache the
       backward is checked with (("train", "test") for batch norm: the
       frozen 'test' backward; (None,) for a family without modes).
   ``axis_keyword``
       whether the forward takes ``axis=`` (the case's channel axis).
   ``options``
       fixed keywords of a variant (``{"activation": "relu"}``).
   ``variant_of``
       for a variant, its base family's name (:data:`BASE` lists the
       families proper: the hostile matrix and extremes take those).
   ``cache_type``
       the type of the fast forward's cache (bnfast.functional.*Cache).
   ``grads``
       the names of what the backward returns, in order (dx first).
   ``param_shape``
       a function Case -> the shape of gamma and beta.
   ``scales``
       the conditioning scales of the backward's results for the accuracy
       rule: ``scales(case, wcase, wcache, extra, eps, mode)`` -> one scale
       (or None: the result's own magnitude) per gradient, from the
       reference's cache on the widened case.
   ``out_scale``
       the forward's out scale, or None (its own magnitude):
       ``out_scale(wcase, extra, wide_out)`` with the extras evaluated on
       the widened case (the residual: |bn(x)| + |z|).
   ``small``
       small arguments for the error-path, out= and thread tests: a tuple
       of (label suffix, x shape, axis or None, extra dict); a function in
       the extra dict gets an object whose ``x`` is the small x.
   ``fd_shapes``
       (x shape, axis, extra, gamma's shape) rows for finite differences
       (in each backward mode); an array in extra (the residual) is
       differentiated too, as ``d<key>`` of ``grads``.
   ``params``
       the parameter arrays the forward takes: ("gamma", "beta"), or
       ("gamma",) for a family without beta (RMS norm: ``call`` passes no
       beta, ``grads`` is ("dx", "dgamma"), the affine-free variants are
       gamma=None only, the hostile matrix's beta rows do not apply).
   ``strategy``
       the hypothesis strategy and conditioning scales of
       test_properties.py: "bn" ((N, ...) features, statistics over the
       batch), "spatial" (a channel axis), "ln" (per-sample statistics),
       "gn" (per sample and group of channels; draws G), "rms" (per-sample
       root mean squares: the "ln" inputs, RMS norm's scales).  A family with
       other statistics adds its kind there.
   (and a row in test_threads.py's table: a test checks every family has
   one.)
3. Add the family's own semantics tests in ``tests/test_<family>.py``.

A new option of a family (like ``residual=``) is a variant entry:
``dataclasses.replace(BATCHNORM, name="batchnorm+residual",
extras=lambda c: [{"residual": residual_of}], grads=(..., "dresidual"),
scales=..., out_scale=..., variant_of="batchnorm")`` (see
:func:`_residual_variant`), so that every generic file runs it; an
option every family has (gamma=None) is a case transformation instead
(:func:`affine_free_variants`).  An option of a variant's own (group
norm's channels last) can instead widen the entry's cases (``select``
with ``axis_keyword``).

A new dtype is one line: ``arrays.DTYPES``; every generated case, hence
every family, then covers it.  The accuracy rule takes its eps from
``np.finfo`` of x's dtype and the oracle's precision from
``Case.widened`` (float32 -> float64, otherwise longdouble): a dtype
NumPy's finfo does not know (bfloat16 from ml_dtypes) needs its eps
there too.
"""

import dataclasses
import functools
import types

import numpy as np

import bnfast

from arrays import _layout, cases, spatial_cases, sum_scale

EPS = 1e-5
MOMENTUM = 0.8


@functools.cache
def _cases():
    return tuple(cases())


@functools.cache
def _spatial_cases():
    return tuple(spatial_cases())


def _finite_max(terms):
    return float(np.nanmax(terms[np.isfinite(terms)], initial=0.0))


def _bn_scales(case, wcase, wcache, extra, eps, mode):
    """dx = gamma/std * (dout - mean(dout) - x_hat * mean(dout * x_hat)) is
    a cancellation of terms of size |gamma * dout / std|, whose x_hat
    carries the rounding of x - mean: a relative error of eps*|mean|/std.
    Frozen ('test'): dx = g * gamma / std, one product per element (its own
    magnitude).  dbeta = sum g, dgamma = sum g * xhat per channel (g =
    dout, masked by the ReLU): sums whose terms carry xhat's rounding as
    dx's do."""
    bn_cache = wcache if case.axis is None else wcache[0]
    _, xhat, mean, var, g, *_, mask, frozen = bn_cache
    assert bool(frozen) == (mode == "test")
    std = np.sqrt(var + eps)
    dout = (
        wcase.dout
        if case.axis is None
        else np.moveaxis(wcase.dout, case.axis, -1)
    )
    dout = dout.reshape(-1, len(g))
    if mode == "test":
        dx_scale = None
    else:
        terms = np.abs(g * dout / std)
        terms = terms * (1 + np.abs(mean) / std)
        dx_scale = _finite_max(terms)
    grad = dout if mask is None else dout * mask.reshape(dout.shape)
    with np.errstate(invalid="ignore"):
        dg_terms = grad * (np.abs(xhat) + np.abs(mean) / std)
    return (dx_scale, sum_scale(dg_terms), sum_scale(grad))


def _ln_scales(case, wcase, wcache, extra, eps, mode):
    """As for batch norm, per sample: terms |gamma * dout / std| carrying
    the rounding of x - mean; dgamma, dbeta: sums over the rows of
    dout * xhat and dout."""
    _, xhat, mean, var, g, *_ = wcache
    std = np.sqrt(var + eps)
    dout = wcase.dout.reshape(len(std), -1)
    terms = np.abs(g * dout / std)
    terms = terms * (1 + np.abs(mean) / std)
    with np.errstate(invalid="ignore"):
        dg_terms = dout * (np.abs(xhat) + np.abs(mean) / std)
    return (_finite_max(terms), sum_scale(dg_terms), sum_scale(dout))


def _gn_scales(case, wcase, wcache, extra, eps, mode):
    """Terms |gamma * dout / std| per group, carrying the rounding of
    x - mean; dgamma = sum dout * (x - mean) / std per channel over samples
    whose group means differ: each carries its own rounding of the mean.
    Channels last: the same in the NCHW frame (channels moved to axis 1,
    as the reference's cache holds them)."""
    groups = extra["G"]
    x, dout = wcase.x, wcase.dout
    if case.axis not in (None, 1):
        x, dout = np.moveaxis(x, case.axis, 1), np.moveaxis(dout, case.axis, 1)
    n, c = x.shape[:2]
    _, var, g, *_ = wcache
    std = np.sqrt(var + eps)
    xg = x.reshape(n, groups, -1)
    with np.errstate(invalid="ignore"):
        mean = xg.mean(axis=2, keepdims=True)
        terms = np.abs((dout * g).reshape(n, groups, -1) / std)
        terms = terms * (1 + np.abs(mean) / std)
    dx_scale = _finite_max(terms)
    with np.errstate(invalid="ignore"):
        xhat = (xg - mean) / std
        per = np.abs(dout.reshape(n, groups, -1)) * (
            np.abs(xhat) + np.abs(mean) / std
        )
        dg_terms = per.reshape(dout.shape).reshape(n, c, -1).sum(axis=(0, 2))
    dg_scale = _finite_max(dg_terms)
    db_scale = sum_scale(np.moveaxis(dout, 1, 0).reshape(c, -1), axis=1)
    return (dx_scale, dg_scale, db_scale)


def _rms_scales(case, wcase, wcache, extra, eps, mode):
    """dx = inv_rms * (g - xhat * mean(g * xhat)) (g = gamma * dout): terms
    |g| * inv_rms, and |xhat| times the mean's terms (|xhat| up to its
    row's largest); dgamma = sum dout * xhat over the rows (as
    test_rmsnorm.py computed them)."""
    xr, xhat, inv_rms, g, *_ = wcache
    dout = wcase.dout.reshape(xr.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        gd = np.abs(g * dout)
        terms = (
            gd
            * inv_rms
            * (
                1
                + np.abs(xhat)
                * np.nanmax(
                    np.where(np.isfinite(xhat), np.abs(xhat), 0),
                    axis=1,
                    keepdims=True,
                )
            )
        )
        dg_terms = dout * xhat
    return (_finite_max(terms), sum_scale(dg_terms))


def group_counts(c):
    """The group counts a group norm case runs with: 1, C and a divisor."""
    return sorted({1, c} | {g for g in range(2, c) if c % g == 0})[:3]


@dataclasses.dataclass(frozen=True)
class Family:
    """One family (or variant) of the registry; see the module docstring
    for what each field means."""

    name: str
    forward: str
    backwards: tuple
    source: object  # () -> sequence of Case
    param: str  # "bn" or "plain"
    cache_type: type
    param_shape: object  # Case -> shape of gamma and beta
    scales: object
    small: tuple
    fd_shapes: tuple
    select: object = None  # Case -> bool, or None: all
    extras: object = None  # Case -> [dict], or None: [{}]
    positional: tuple = ()
    modes: tuple = (None,)
    backward_modes: tuple = (None,)
    axis_keyword: bool = False
    options: dict = dataclasses.field(default_factory=dict)
    grads: tuple = ("dx", "dgamma", "dbeta")
    params: tuple = ("gamma", "beta")  # the parameter arrays it takes
    out_scale: object = None  # forward's scale, or None
    variant_of: str = None  # the base family's name
    strategy: str = None  # test_properties.py's inputs

    @property
    def has_beta(self):
        return "beta" in self.params

    @property
    def backward(self):
        return self.backwards[0]

    def cases(self):
        """The shared-generator cases that apply."""
        return [
            c for c in self.source() if self.select is None or self.select(c)
        ]

    def extras_of(self, case):
        return [{}] if self.extras is None else self.extras(case)

    @staticmethod
    def eval_extra(case, extra):
        """The extra arguments with their functions of the Case evaluated
        on ``case`` (a Case, or anything with an ``x``: run_small)."""
        return {
            k: v(case) if callable(v) else v for k, v in (extra or {}).items()
        }

    def forward_scale(self, wcase, extra, wide):
        """The conditioning scale of the forward's out (None: its own
        magnitude), from the widened case, the extra arguments (evaluated
        on it) and the oracle's out."""
        if self.out_scale is None:
            return None
        return self.out_scale(wcase, self.eval_extra(wcase, extra), wide)

    def case_params(self):
        """(case, extra) pairs over every applicable case."""
        return [(c, e) for c in self.cases() for e in self.extras_of(c)]

    def make_param(self, case, mode, eps=EPS, momentum=MOMENTUM):
        if self.param == "bn":
            return {
                "mode": mode,
                "eps": eps,
                "momentum": momentum,
                "running_mean": case.running_mean.copy(),
                "running_var": case.running_var.copy(),
            }
        return {"eps": eps}

    def call(self, module, x, gamma, beta, param, extra=None, axis=None, **kw):
        """module.<forward>(x, gamma, beta, [positional extras], param,
        axis=..., **options, **extra keywords, **kw); without beta in
        ``params`` (RMS norm) ``beta`` is ignored and not passed."""
        extra = extra or {}
        args = [x, gamma] + ([beta] if self.has_beta else [])
        args += [extra[k] for k in self.positional]
        kwargs = {k: v for k, v in extra.items() if k not in self.positional}
        if self.axis_keyword and axis is not None:
            kwargs["axis"] = axis
        kwargs.update(self.options)
        kwargs.update(kw)
        return getattr(module, self.forward)(*args, param, **kwargs)

    def run(
        self, module, case, mode, extra=None, eps=EPS, momentum=MOMENTUM, **kw
    ):
        """The forward on a Case: (out, cache, param dict).  The NumPy
        reference warns on the NaN and Inf cases; bnfast does not."""
        p = self.make_param(case, mode, eps, momentum)
        extra = self.eval_extra(case, extra)
        with np.errstate(invalid="ignore", over="ignore"):
            out, cache = self.call(
                module,
                case.x,
                case.gamma,
                case.beta,
                p,
                extra,
                case.axis,
                **kw,
            )
        return out, cache, p

    def run_backward(self, module, dout, cache, twin=None, **kw):
        with np.errstate(invalid="ignore", over="ignore"):
            return getattr(module, twin or self.backward)(dout, cache, **kw)

    def run_small(
        self,
        module,
        x,
        gamma,
        beta,
        mode="train",
        extra=None,
        axis=None,
        param=None,
        **kw,
    ):
        """The forward on plain arrays with a fresh param dict (``mode``
        ignored without modes); functions in ``extra`` get an object
        whose ``x`` is x."""
        extra = self.eval_extra(types.SimpleNamespace(x=x), extra)
        if param is None:
            param = {"mode": mode} if self.param == "bn" else {}
        return self.call(module, x, gamma, beta, param, extra, axis, **kw)


def _bn_param_shape(case):
    return case.gamma.shape


BATCHNORM = Family(
    name="batchnorm",
    forward="batchnorm_forward",
    backwards=("batchnorm_backward", "batchnorm_backward_alt"),
    source=_cases,
    param="bn",
    modes=("train", "test"),
    backward_modes=("train", "test"),
    cache_type=bnfast.functional.BatchNormCache,
    param_shape=_bn_param_shape,
    scales=_bn_scales,
    strategy="bn",
    small=(("", (4, 6), None, {}),),
    fd_shapes=(
        ((6, 4), None, {}, (4,)),
        ((3, 2, 3), None, {}, (2, 3)),
        ((2, 1), None, {}, (1,)),
        ((5, 3), None, {}, (3,)),
        ((3, 4, 2), None, {}, (8,)),
    ),
)

SPATIAL_BATCHNORM = Family(
    name="spatial_batchnorm",
    forward="spatial_batchnorm_forward",
    backwards=("spatial_batchnorm_backward",),
    source=_spatial_cases,
    param="bn",
    modes=("train", "test"),
    backward_modes=("train", "test"),
    axis_keyword=True,
    cache_type=bnfast.functional.BatchNormCache,
    param_shape=_bn_param_shape,
    scales=_bn_scales,
    strategy="spatial",
    small=(
        ("", (4, 6, 3, 2), 1, {}),
        (" channels-last", (4, 3, 2, 6), -1, {}),
    ),
    fd_shapes=(
        ((3, 2, 3, 2), 1, {}, (2,)),
        ((2, 3, 2, 3), -1, {}, (3,)),
        ((4, 3), 1, {}, (3,)),
        ((2, 3, 4, 2), 1, {}, (3,)),
        ((2, 3, 2, 4), -1, {}, (4,)),
    ),
)

LAYERNORM = Family(
    name="layernorm",
    forward="layernorm_forward",
    backwards=("layernorm_backward",),
    source=_cases,
    param="plain",
    cache_type=bnfast.functional.LayerNormCache,
    param_shape=_bn_param_shape,
    scales=_ln_scales,
    strategy="ln",
    small=(("", (4, 6), None, {}),),
    fd_shapes=(((4, 2, 3), None, {}, (2, 3)),),
)

GROUPNORM = Family(
    name="spatial_groupnorm",
    forward="spatial_groupnorm_forward",
    backwards=("spatial_groupnorm_backward",),
    # channels along axis 1 or last (axis=-1, the keyword)
    source=_spatial_cases,
    select=lambda c: c.axis in (1, -1),
    extras=lambda c: [{"G": g} for g in group_counts(c.x.shape[c.axis])],
    positional=("G",),
    param="plain",
    axis_keyword=True,
    cache_type=bnfast.functional.GroupNormCache,
    param_shape=_bn_param_shape,
    scales=_gn_scales,
    strategy="gn",
    small=(
        ("", (4, 6, 3, 2), None, {"G": 3}),
        (" channels-last", (4, 3, 2, 6), -1, {"G": 3}),
    ),
    fd_shapes=(
        ((2, 4, 2, 3), None, {"G": 1}, (4,)),
        ((2, 4, 2, 3), None, {"G": 2}, (4,)),
        ((2, 4, 2, 3), None, {"G": 4}, (4,)),
        ((2, 3, 2, 4), -1, {"G": 2}, (4,)),
        ((2, 3, 6), -1, {"G": 3}, (6,)),
    ),
)

RMSNORM = Family(
    name="rmsnorm",
    forward="rmsnorm_forward",
    backwards=("rmsnorm_backward",),
    source=_cases,
    param="plain",
    params=("gamma",),
    grads=("dx", "dgamma"),
    cache_type=bnfast.functional.RMSNormCache,
    param_shape=_bn_param_shape,
    scales=_rms_scales,
    strategy="rms",
    small=(("", (4, 6), None, {}),),
    # gamma's shape is the normalized shape when x ends with it (else
    # all axes after the first): the last axis, the last two, all
    fd_shapes=(
        ((3, 4), None, {}, (4,)),
        ((2, 3, 5), None, {}, (5,)),
        ((2, 3, 4), None, {}, (3, 4)),
        ((2, 3, 4), None, {}, (12,)),
        ((4, 1), None, {}, (1,)),
    ),
)

# variants: options of a family that every generic file runs as a family
BATCHNORM_RELU = dataclasses.replace(
    BATCHNORM,
    name="batchnorm+relu",
    options={"activation": "relu"},
    variant_of="batchnorm",
    fd_shapes=(
        ((6, 4), None, {}, (4,)),
        ((5, 3), None, {}, (3,)),
        ((3, 4, 2), None, {}, (8,)),
    ),
)
SPATIAL_BATCHNORM_RELU = dataclasses.replace(
    SPATIAL_BATCHNORM,
    name="spatial_batchnorm+relu",
    options={"activation": "relu"},
    variant_of="spatial_batchnorm",
    fd_shapes=(
        ((3, 2, 3, 2), 1, {}, (2,)),
        ((2, 3, 4, 2), 1, {}, (3,)),
        ((2, 3, 2, 4), -1, {}, (4,)),
    ),
)


# the fused residual: out = [relu](bn(x) + z), gradients + dresidual

_ZLAYOUTS = ("C", "F", "rows-strided", "cols-strided", "reversed")


def residual_of(c):
    """z for a Case: its dout reversed along the batch and halved (exact
    ops: the widened case's z is the narrow z widened, as the oracle
    needs), a NaN in the NaN/Inf cases, in a layout other than x's; for
    the small arrays of run_small (no dout), x reversed and halved."""
    a = getattr(c, "dout", c.x)
    z = np.flip(a, 0) * a.dtype.type(0.5)
    if getattr(c, "contents", None) == "nan-inf":
        z.flat[z.size // 3] = np.nan
    layout = getattr(c, "layout", "C")
    layout = _ZLAYOUTS[
        (_ZLAYOUTS.index(layout) + 1) % len(_ZLAYOUTS)
        if layout in _ZLAYOUTS
        else 0
    ]
    return _layout(np.ascontiguousarray(z), layout)


def _residual_out_scale(wcase, extra, wide):
    """bn(x) + z cancels: the magnitude of its terms, |bn(x)| + |z| <=
    |out| + 2 |z| (test_residual.py's test_forward)."""
    with np.errstate(invalid="ignore", over="ignore"):
        terms = np.abs(wide) + 2 * np.abs(extra["residual"].astype(wide.dtype))
    return _finite_max(terms)


def _residual_scales(case, wcase, wcache, extra, eps, mode):
    """Batch norm's scales (the cache without its has-residual flag);
    dresidual (dout, masked by the ReLU): its own magnitude."""
    bn_cache = wcache if case.axis is None else wcache[0]
    assert bn_cache[-1], "no residual in the cache"
    stripped = (
        bn_cache[:-1]
        if case.axis is None
        else (bn_cache[:-1],) + tuple(wcache[1:])
    )
    return _bn_scales(case, wcase, stripped, extra, eps, mode) + (None,)


_FD_RNG = np.random.default_rng(21)


def _residual_variant(base, name, fd_shapes):
    return dataclasses.replace(
        base,
        name=name,
        variant_of=base.variant_of or base.name,
        extras=lambda c: [{"residual": residual_of}],
        grads=base.grads + ("dresidual",),
        scales=_residual_scales,
        out_scale=_residual_out_scale,
        small=tuple(
            (s + " +residual", shape, axis, {**extra, "residual": residual_of})
            for s, shape, axis, extra in base.small
        ),
        # a fixed z per shape: the finite differences give dresidual too
        fd_shapes=tuple(
            (shape, axis, {"residual": _FD_RNG.standard_normal(shape)}, pshape)
            for shape, axis, pshape in fd_shapes
        ),
    )


BATCHNORM_RESIDUAL = _residual_variant(
    BATCHNORM,
    "batchnorm+residual",
    (((6, 4), None, (4,)), ((3, 4, 2), None, (8,))),
)
BATCHNORM_RELU_RESIDUAL = _residual_variant(
    BATCHNORM_RELU,
    "batchnorm+relu+residual",
    (((6, 4), None, (4,)), ((5, 3), None, (3,))),
)
SPATIAL_BATCHNORM_RESIDUAL = _residual_variant(
    SPATIAL_BATCHNORM,
    "spatial_batchnorm+residual",
    (((3, 2, 3, 2), 1, (2,)), ((2, 3, 2, 4), -1, (4,))),
)
SPATIAL_BATCHNORM_RELU_RESIDUAL = _residual_variant(
    SPATIAL_BATCHNORM_RELU,
    "spatial_batchnorm+relu+residual",
    (((3, 2, 3, 2), 1, (2,)), ((2, 3, 2, 4), -1, (4,))),
)

FAMILIES = [
    BATCHNORM,
    BATCHNORM_RELU,
    SPATIAL_BATCHNORM,
    SPATIAL_BATCHNORM_RELU,
    LAYERNORM,
    GROUPNORM,
    RMSNORM,
    BATCHNORM_RESIDUAL,
    BATCHNORM_RELU_RESIDUAL,
    SPATIAL_BATCHNORM_RESIDUAL,
    SPATIAL_BATCHNORM_RELU_RESIDUAL,
]
BY_NAME = {f.name: f for f in FAMILIES}
# the families proper (no variants): one of each kind of function
BASE = [f for f in FAMILIES if f.variant_of is None]


def ident(extra):
    """The test-id part of extra arguments: G=3 -> "-G3"; arrays and
    functions by their name only."""
    return "".join(
        f"-{k}{v}" if isinstance(v, (int, float, str)) else f"-{k}"
        for k, v in extra.items()
    )


def family_params(families=None, each=None):
    """pytest.param rows over families: ``each(family)`` -> rows of
    (values tuple, id suffix); the family goes first."""
    import pytest

    rows = []
    for fam in families or FAMILIES:
        for values, ident in each(fam):
            rows.append(pytest.param(fam, *values, id=f"{fam.name}-{ident}"))
    return rows


# -- affine-free: an option of every family, a transformation of its case

AFFINE_FREE = {
    "no-gamma": (False, True),
    "no-beta": (True, False),
    "neither": (False, False),
}


def affine_free_variants(case, fam=None):
    """[(variant name, affine-free case, the same with explicit ones and
    zeros)] for gamma=None / beta=None (gamma=None only for a family
    without beta)."""
    names = AFFINE_FREE if fam is None or fam.has_beta else ["no-gamma"]
    return [
        (
            name,
            dataclasses.replace(
                case,
                gamma=case.gamma if keep_g else None,
                beta=case.beta if keep_b else None,
            ),
            dataclasses.replace(
                case,
                gamma=case.gamma if keep_g else np.ones_like(case.gamma),
                beta=case.beta if keep_b else np.zeros_like(case.beta),
            ),
        )
        for name, (keep_g, keep_b) in AFFINE_FREE.items()
        if name in names
    ]


# -- the hostile matrix's small arguments


def _rng(seed=0):
    return np.random.default_rng(seed)


def hostile_forwards():
    """{name: (make() -> good arguments, call(module, args, **kw) -> (out,
    cache), backward name)} for the base families, each of their
    ``small`` configurations: the table of test_hostile.py."""
    table = {}
    for fam in BASE:
        for suffix, x_shape, axis, extra in fam.small:
            p_shape = (x_shape[axis],) if axis is not None else x_shape[1:2]

            def make(fam=fam, x_shape=x_shape, p_shape=p_shape, extra=extra):
                rng = _rng()
                args = {
                    "x": rng.standard_normal(x_shape),
                    "gamma": rng.standard_normal(p_shape),
                    "beta": rng.standard_normal(p_shape),
                }
                if not fam.has_beta:
                    del args["beta"]
                if fam.param == "bn":
                    args["param"] = {
                        "mode": "train",
                        "eps": 1e-5,
                        "momentum": 0.9,
                        "running_mean": rng.standard_normal(p_shape),
                        "running_var": rng.random(p_shape) + 0.5,
                    }
                else:
                    args["param"] = {"eps": 1e-5}
                args.update(extra)
                return args

            def call(m, a, fam=fam, axis=axis, extra=extra, **kw):
                ex = {k: a[k] for k in extra}
                return fam.call(
                    m,
                    a["x"],
                    a["gamma"],
                    a.get("beta"),
                    a["param"],
                    ex,
                    None if axis in (None, 1) else axis,
                    **kw,
                )

            table[fam.forward + suffix] = (make, call, fam.backward)
    return table
