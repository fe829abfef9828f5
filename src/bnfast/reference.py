"""The NumPy reference: textbook batch normalization, the oracle of the tests.

These are the seeds' functions with cs231n signatures, written for clarity,
not speed: every intermediate is a full array.  ``bnfast.batchnorm_forward``
and friends must give the same results (to rounding) on every input the
test suite generates.

Dtype policy, shared with the fast functions: ``out`` and ``dx`` have x's
dtype; ``dgamma`` and ``dbeta`` have gamma's dtype and shape; running
statistics keep their own dtype and shape (x's dtype and shape (D,) when
absent).  Inputs with more than two dimensions are normalized per feature
of ``x.reshape(N, -1)``.

Every function also takes ``out=`` (keyword-only), as the fast ones: the
first result (out or dx) is then copied into that array, which is returned.
The fast functions compute into it directly where its layout allows; the
reference only copies, with np.copyto's casting and broadcasting.  Both
raise the same ValueError, before anything is computed or written, for an
``out`` whose elements overlap one another or that shares memory with
any array argument.

Integer and bool gamma and beta are converted to x's dtype first (as the
fast functions do), so dgamma and dbeta then have x's dtype.

float16 and bfloat16 x (``ml_dtypes.bfloat16``) are half-precision
storage: computed in float32 (x converted, the same code), out and dx
rounded once to x's dtype.  Parameters and running statistics may have
any float dtype (half ones are computed in float32 too).

gamma=None and beta=None (independently) are the affine-free form, as
PyTorch's ``weight=None`` / ``bias=None``: gamma = 1, beta = 0 (0-d
scalars of x's dtype here, no array), and the backward returns None for
the gradient of a None parameter (dbeta in beta's dtype and shape when
only gamma is None).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from bnfast._typing import (
        Activation,
        ArrayLike,
        FloatArray,
        Grad,
        Param,
        ParamDict,
        ShapeLike,
    )

    _R = TypeVar("_R", bound=tuple[Any, ...])
    _Fn = TypeVar("_Fn", bound=Callable[..., Any])
    #: The reference's caches: tuples (or a _HalfCache around one), opaque.
    Cache = Any

__all__ = [
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_alt",
    "spatial_batchnorm_forward",
    "spatial_batchnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "rmsnorm_forward",
    "rmsnorm_backward",
    "spatial_groupnorm_forward",
    "spatial_groupnorm_backward",
]


def _overlaps_itself(a: npt.NDArray[Any]) -> bool:
    """Whether two elements of ``a`` share a byte: contiguous arrays never
    do; otherwise every element's byte offset, sorted."""
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return False
    offsets = np.zeros(1, np.int64)
    for n, s in zip(a.shape, a.strides):
        offsets = (offsets[:, None] + np.arange(n, dtype=np.int64) * s).ravel()
    return bool((np.diff(np.sort(offsets)) < a.itemsize).any())


def _arrays(name: str, value: Any) -> Iterator[tuple[str, npt.NDArray[Any]]]:
    """(name, array) for every array in an argument, including the values
    of a dict (bn_param) and the items of a tuple (a cache)."""
    if isinstance(value, np.ndarray):
        yield name, value
    elif isinstance(value, memoryview):
        yield name, np.asarray(value)
    elif isinstance(value, dict):
        for key, v in value.items():
            yield from _arrays(f"{name}[{key!r}]", v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _arrays(name, v)


def _same_view(a: npt.NDArray[Any], b: Any) -> bool:
    """a and b are the same elements in the same order."""
    return (
        isinstance(b, np.ndarray)
        and a.shape == b.shape
        and a.__array_interface__["data"][0]
        == b.__array_interface__["data"][0]
        and all(
            s == t for s, t, n in zip(a.strides, b.strides, a.shape) if n > 1
        )
    )


def _check_out(out: npt.NDArray[Any], arguments: dict[str, Any]) -> None:
    if _overlaps_itself(out):
        raise ValueError(
            "out has elements sharing memory: each result needs its own"
        )
    residual = arguments.get("residual")
    if residual is not None and _same_view(out, residual):
        # out=residual: the in-place add, except where the backward reads z
        kw = arguments.get("kwargs", {})
        relu = arguments.get("activation", kw.get("activation")) == "relu"
        if relu and arguments["bn_param"].get("mode") == "train":
            raise ValueError(
                "out must not be residual in 'train' mode with "
                "activation='relu': the backward reads residual"
            )
        arguments = {k: v for k, v in arguments.items() if k != "residual"}
    for name, value in arguments.items():
        for what, a in _arrays(name, value):
            try:
                # (numpy's stub allows max_work -1 or 0 only; any int works)
                shared = np.shares_memory(out, a, max_work=100_000)  # type: ignore[arg-type]
            except np.exceptions.TooHardError:
                shared = True
            if shared:
                raise ValueError(f"out must not share memory with {what}")


def _takes_out(f: Callable[..., _R]) -> Callable[..., _R]:
    """Add the keyword ``out=``: the first result is copied into it (after
    the checks of _check_out)."""
    signature = inspect.signature(f)

    @functools.wraps(f)
    def wrapper(
        *args: Any, out: npt.NDArray[Any] | None = None, **kwargs: Any
    ) -> Any:
        if out is not None:
            _check_out(out, signature.bind(*args, **kwargs).arguments)
        first, *rest = f(*args, **kwargs)
        if out is not None:
            np.copyto(out, first)
            first = out
        return (first, *rest)

    return wrapper


def _is_half(dtype: npt.DTypeLike) -> bool:
    """float16 or bfloat16 (ml_dtypes.bfloat16, told by its name: this
    module never imports ml_dtypes)."""
    dtype = np.dtype(dtype)
    return dtype == np.float16 or (
        dtype.itemsize == 2 and dtype.name == "bfloat16"
    )


def _wide(a: Any) -> Any:
    """A float16 or bfloat16 array as float32 (the compute type of half
    storage), anything else as it is."""
    if isinstance(a, np.ndarray) and _is_half(a.dtype):
        return a.astype(np.float32)
    return a


# the storage dtype of the x being computed in float32 (None: x's own):
# batch norm rounds its output to it before the ReLU's mask, so that the
# mask is out > 0 on the stored output, as the fast kernels' (a float32
# value below half the smallest subnormal is stored as 0)
_STORAGE: contextvars.ContextVar[np.dtype[Any] | None] = (
    contextvars.ContextVar("bnfast_reference_storage", default=None)
)


def _finfo(dtype: npt.DTypeLike) -> Any:
    """np.finfo, and ml_dtypes.finfo for bfloat16 (its owner imported it
    if an array of it exists)."""
    dtype = np.dtype(dtype)
    if _is_half(dtype) and dtype != np.float16:
        # (ml_dtypes is optional, and its finfo unannotated)
        import ml_dtypes  # type: ignore[import-not-found, unused-ignore]

        return ml_dtypes.finfo(  # type: ignore[no-untyped-call, unused-ignore]
            dtype
        )
    return np.finfo(dtype)


class _HalfCache:
    """The cache of a forward on half-precision x: the float32
    computation's cache and x's dtype, which dx is rounded to."""

    def __init__(self, cache: Any, dtype: np.dtype[Any]) -> None:
        self.cache, self.dtype = cache, dtype


def _half_forward(f: _Fn) -> _Fn:
    """float16 and bfloat16 x (half storage): f computes on x in float32,
    out is rounded once to x's dtype.  Integer gamma and beta are
    converted to x's dtype first, and absent running statistics are zeros
    of x's dtype, as for any x; parameters of any float dtype are used as
    they are."""
    signature = inspect.signature(f)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        x = args[0] if args else kwargs.get("x")
        if not (isinstance(x, np.ndarray) and _is_half(x.dtype)):
            return f(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        a = bound.arguments
        a["x"] = x.astype(np.float32)
        if a.get("residual") is not None:  # x's dtype, then as x
            a["residual"] = _residual(  # type: ignore[union-attr]  # not None
                a["residual"], x
            ).astype(np.float32)
        for k in ("gamma", "beta"):  # (RMS norm has no beta)
            if k in a:
                a[k] = _param(a[k], x)
        param = a.get("bn_param")
        absent = [
            k
            for k in ("running_mean", "running_var")
            if isinstance(param, dict) and k not in param
        ]
        token = _STORAGE.set(x.dtype)
        try:
            out, cache = f(*bound.args, **bound.kwargs)
        finally:
            _STORAGE.reset(token)
        for k in absent:
            if k in param:  # type: ignore[operator]  # a dict: see absent
                param[k] = param[k].astype(x.dtype)  # type: ignore[index]
        return out.astype(x.dtype), _HalfCache(cache, x.dtype)

    return wrapper  # type: ignore[return-value]  # f's signature


def _half_backward(f: _Fn) -> _Fn:
    """The backward of a _half_forward: dout in float32, dx rounded once
    to x's dtype (dgamma and dbeta in gamma's dtype, as always)."""

    @functools.wraps(f)
    def wrapper(dout: Any, cache: Any) -> Any:
        if not isinstance(cache, _HalfCache):
            return f(dout, cache)
        dx, *grads = f(
            _wide(np.asarray(dout)).astype(np.float32, copy=False), cache.cache
        )
        if len(grads) == 3:  # dresidual (residual=): x's dtype, as dx
            grads[2] = grads[2].astype(cache.dtype)
        return (dx.astype(cache.dtype), *grads)

    return wrapper  # type: ignore[return-value]  # f's signature


def _affine(
    gamma: Any, beta: Any, x: npt.NDArray[Any], shape: Any
) -> tuple[Any, Any, np.dtype[Any], tuple[int, ...], tuple[bool, bool]]:
    """gamma and beta as multipliers reshaped to shape (None: the 0-d
    1 and 0 of x's dtype), the dtype and shape of the parameter gradients
    (gamma's, else beta's, else x's dtype and shape (1,): never used),
    and which of the two were given."""
    one = np.ones((), x.dtype)
    g = one if gamma is None else np.reshape(gamma, shape)
    b = np.zeros((), x.dtype) if beta is None else np.reshape(beta, shape)
    like = gamma if gamma is not None else beta
    if like is None:
        like = np.ones(1, x.dtype)
    return g, b, like.dtype, like.shape, (gamma is not None, beta is not None)


def _residual(
    z: ArrayLike | None, x: npt.NDArray[Any]
) -> npt.NDArray[Any] | None:
    """The residual checked: x's exact dtype and shape."""
    if z is None:
        return None
    z = np.asarray(z)
    if z.dtype != x.dtype:
        if z.dtype.kind != "f" and not _is_half(z.dtype):
            raise TypeError(
                "residual must be a float16, bfloat16, float32 "
                f"or float64 array, got dtype {z.dtype}"
            )
        raise TypeError(
            f"residual must have dtype {x.dtype} (x's), got {z.dtype}"
        )
    if z.shape != x.shape:
        raise ValueError(
            f"residual must have the shape of x {x.shape}, got {z.shape}"
        )
    return z


def _param(p: Param, x: npt.NDArray[Any]) -> npt.NDArray[Any] | None:
    """gamma or beta as an array; integers and bools converted to x's
    dtype (otherwise dgamma and dbeta would be truncated to integers);
    None stays None."""
    if p is None:
        return None
    p = np.asanyarray(p)
    if p.dtype.kind in "biu":
        p = p.astype(x.dtype)
    return p


@_takes_out
@_half_forward
def batchnorm_forward(
    x: npt.NDArray[Any],
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    *,
    activation: Activation = None,
    residual: ArrayLike | None = None,
) -> tuple[FloatArray, Cache]:
    """Forward pass for batch normalization (reference).

    Parameters
    ----------
    x : ndarray, shape (N, D) or (N, d1, ..., dk)
    gamma, beta : ndarray, shape (D,) or x.shape[1:], or None
        Scale and shift; None: 1 and 0 (affine-free), and the backward
        returns None for its gradient.
    bn_param : dict
        'mode': 'train' or 'test' (required); 'eps' (1e-5); 'momentum'
        (0.9); 'running_mean', 'running_var' (zeros of shape (D,) when
        absent); 'unbiased_running_var' (False: the running variance
        averages the biased batch variance; True: the unbiased one, as
        PyTorch).  Updated with the new running statistics.
    activation : None or 'relu'
        'relu': ``np.maximum(out, 0)`` (after the residual), and the
        backward masks dout with
        ``out > 0`` first.

    Returns
    -------
    out : ndarray, x's shape and dtype
    cache : tuple, for batchnorm_backward.  In 'test' mode it holds the
        running statistics used (the backward treats them as constants:
        ``dx = dout * gamma / sqrt(running_var + eps)``).

    See Also
    --------
    bnfast.batchnorm_forward : the fast twin (C kernels).
    bnfast.reference.batchnorm_backward : the backward.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast import reference
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> out, _ = reference.batchnorm_forward(x, np.ones(2), np.zeros(2),
    ...                                      {"mode": "train"})
    >>> np.round(out, 4)
    array([[-1., -1.],
           [ 1.,  1.]])
    """
    gamma, beta = _param(gamma, x), _param(beta, x)
    residual = _residual(residual, x)
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)

    N = x.shape[0]
    xr = x.reshape(N, -1)
    D = xr.shape[1]
    g, b, p_dtype, p_shape, wants = _affine(gamma, beta, x, -1)
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))
    rm = _wide(np.reshape(running_mean, -1))
    rv = _wide(np.reshape(running_var, -1))

    cache: Any = None
    if mode == "train":
        sample_mean = xr.mean(axis=0)
        sample_var = xr.var(axis=0)
        x_hat = (xr - sample_mean) / np.sqrt(sample_var + eps)
        out = g * x_hat + b
        cache = (
            xr,
            x_hat,
            sample_mean,
            sample_var,
            g,
            eps,
            x.shape,
            p_dtype,
            p_shape,
        )
        run_var = sample_var
        if bn_param.get("unbiased_running_var", False):
            run_var = sample_var * N / (N - 1)
        new_rm = momentum * rm + (1 - momentum) * sample_mean
        new_rv = momentum * rv + (1 - momentum) * run_var
        running_mean = new_rm.astype(running_mean.dtype).reshape(
            running_mean.shape
        )
        running_var = new_rv.astype(running_var.dtype).reshape(
            running_var.shape
        )
    elif mode == "test":
        out = g * (xr - rm) / np.sqrt(rv + eps) + b
        x_hat = (xr - rm) / np.sqrt(rv + eps)
        # copies: the statistics used, whatever happens to bn_param's
        cache = (
            xr,
            x_hat,
            rm.copy(),
            rv.copy(),
            g,
            eps,
            x.shape,
            p_dtype,
            p_shape,
        )
    else:
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')

    if residual is not None:  # out = bn(x) + z, then the activation
        out = out + residual.reshape(N, -1)
    out = out.astype(x.dtype, copy=False)
    if _STORAGE.get() is not None:  # half storage: as stored (exact)
        out = out.astype(_STORAGE.get()).astype(x.dtype)
    mask = None
    if activation == "relu":
        out = np.maximum(out, 0)
        mask = out > 0
    elif activation is not None:
        raise ValueError(f"unknown activation {activation!r}")
    cache = cache + (wants, mask, mode == "test")
    if residual is not None:  # the backward returns dresidual too
        cache = cache + (True,)
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out.reshape(x.shape), cache


@_takes_out
@_half_backward
def batchnorm_backward(
    dout: npt.NDArray[Any], cache: Cache
) -> tuple[Any, ...]:
    """Backward pass for batch normalization (reference), node by node.

    Walks the computational graph of the forward pass backwards:
    mean -> xmu -> var -> sqrtvar -> ivar -> xhat -> out.

    Returns
    -------
    dx : ndarray, x's shape and dtype
    dgamma, dbeta : ndarray, gamma's shape and dtype

    See Also
    --------
    bnfast.batchnorm_backward : the fast twin (C kernels).
    bnfast.reference.batchnorm_forward : the forward.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast import reference
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0], [2.0, 1.0]])
    >>> _, cache = reference.batchnorm_forward(x, np.ones(2), np.zeros(2),
    ...                                        {"mode": "train"})
    >>> dx, dgamma, dbeta = reference.batchnorm_backward(
    ...     np.ones((3, 2)), cache)
    >>> dbeta
    array([3., 3.])
    """
    x, x_hat, mu, var, gamma, eps, N, dout, finish = _unpack(dout, cache)
    if cache[11]:
        return _frozen(x_hat, var, gamma, eps, dout, finish)

    xmu = x - mu
    sqrtvar = np.sqrt(var + eps)
    ivar = 1.0 / sqrtvar

    dbeta = dout.sum(axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)
    dxhat = dout * gamma
    divar = np.sum(dxhat * xmu, axis=0)
    dxmu1 = dxhat * ivar
    dsqrtvar = -1.0 / (sqrtvar**2) * divar
    dvar = 0.5 * 1.0 / np.sqrt(var + eps) * dsqrtvar
    dsq = 1.0 / N * np.ones_like(dout) * dvar
    dxmu2 = 2 * xmu * dsq
    dx1 = dxmu1 + dxmu2
    dmu = -1 * np.sum(dxmu1 + dxmu2, axis=0)
    dx2 = 1.0 / N * np.ones_like(dout) * dmu
    dx = dx1 + dx2
    return finish(dx, dgamma, dbeta)


@_takes_out
@_half_backward
def batchnorm_backward_alt(
    dout: npt.NDArray[Any], cache: Cache
) -> tuple[Any, ...]:
    """Backward pass for batch normalization (reference), simplified formula.

    ``dx = gamma / std / N * (N*dout - sum(dout) - x_hat * sum(dout*x_hat))``

    See Also
    --------
    bnfast.batchnorm_backward_alt : the fast twin (C kernels).
    bnfast.reference.batchnorm_forward : the forward.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast import reference
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0], [2.0, 1.0]])
    >>> _, cache = reference.batchnorm_forward(x, np.ones(2), np.zeros(2),
    ...                                        {"mode": "train"})
    >>> dx, _, _ = reference.batchnorm_backward_alt(np.ones((3, 2)), cache)
    >>> print(np.abs(dx).max() < 1e-12)
    True
    """
    x, x_hat, mu, var, gamma, eps, N, dout, finish = _unpack(dout, cache)
    if cache[11]:
        return _frozen(x_hat, var, gamma, eps, dout, finish)
    inv_std = 1.0 / np.sqrt(var + eps)
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)
    dx = (gamma * inv_std / N) * (N * dout - dbeta - x_hat * dgamma)
    return finish(dx, dgamma, dbeta)


def _frozen(
    x_hat: Any,
    var: Any,
    gamma: Any,
    eps: float,
    dout: Any,
    finish: Callable[[Any, Any, Any], tuple[Any, ...]],
) -> tuple[Any, ...]:
    """The backward after a 'test' mode forward: mean and var (the running
    statistics) are constants, so dx = dout * gamma / std, with no terms
    through the batch's mean and variance; dgamma and dbeta as in 'train'
    mode."""
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)
    dx = dout * gamma / np.sqrt(var + eps)
    return finish(dx, dgamma, dbeta)


def _grads(
    dgamma: Any,
    dbeta: Any,
    dtype: np.dtype[Any],
    shape: Any,
    wants: tuple[bool, bool],
) -> tuple[Grad, ...]:
    """dgamma and dbeta in dtype and shape, None where not wanted."""
    return tuple(
        d.astype(dtype, copy=False).reshape(shape) if want else None
        for d, want in zip((dgamma, dbeta), wants)
    )


def _unpack(
    dout: Any, cache: Any
) -> tuple[
    Any,
    Any,
    Any,
    Any,
    Any,
    float,
    int,
    Any,
    Callable[[Any, Any, Any], tuple[Any, ...]],
]:
    """The forward's cache, dout as (N, D) (masked by the ReLU of the
    forward, if any), and a function that gives the gradients their dtypes
    and shapes (dx: x's; dgamma, dbeta: gamma's, or beta's without gamma;
    None for a parameter the forward had as None)."""
    x, x_hat, mu, var, gamma, eps, x_shape, g_dtype, g_shape = cache[:9]
    wants = cache[9] if len(cache) > 9 else (True, True)
    mask = cache[10] if len(cache) > 10 else None
    residual = len(cache) > 12 and cache[12]
    N = x.shape[0]
    dres = dout  # without the ReLU: the same gradient (PyTorch's autograd)
    if mask is not None:
        dout = dout * mask.reshape(dout.shape)
        dres = dout
    if residual and not (
        isinstance(dres, np.ndarray) and dres.dtype == x.dtype
    ):
        dres = np.asarray(dres).astype(x.dtype)

    def finish(dx: Any, dgamma: Any, dbeta: Any) -> tuple[Any, ...]:
        res = (
            dx.astype(x.dtype, copy=False).reshape(x_shape),
            *_grads(dgamma, dbeta, g_dtype, g_shape, wants),
        )
        if residual:  # dresidual: dout, masked by the ReLU
            return res + (dres.reshape(x_shape),)
        return res

    return x, x_hat, mu, var, gamma, eps, N, dout.reshape(N, -1), finish


@_takes_out
@_half_forward
def spatial_batchnorm_forward(
    x: npt.NDArray[Any],
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    *,
    axis: int = 1,
    activation: Activation = None,
    residual: ArrayLike | None = None,
) -> tuple[FloatArray, Cache]:
    """Forward pass for spatial batch normalization (reference).

    The textbook way: move the channel axis last, flatten to
    (everything else, C), run :func:`batchnorm_forward`, and undo the
    reshape and transpose (each step a full copy of the batch).

    Parameters
    ----------
    x : ndarray, at least 2-D, channels along ``axis`` (1: NCHW; -1:
        channels-last)
    gamma, beta : ndarray, shape (C,) or x's shape with ones except along
        ``axis``, or None (1 and 0; the gradient is then None)
    bn_param : dict, as for batchnorm_forward

    See Also
    --------
    bnfast.spatial_batchnorm_forward : the fast twin (C kernels).
    bnfast.reference.spatial_batchnorm_backward : the backward.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast import reference
    >>> x = np.arange(16.0).reshape(2, 2, 2, 2)
    >>> out, _ = reference.spatial_batchnorm_forward(
    ...     x, np.ones(2), np.zeros(2), {"mode": "train"})
    >>> round(float(out[:, 1].std()), 4)
    1.0
    """
    gamma, beta = _param(gamma, x), _param(beta, x)
    residual = _residual(residual, x)
    moved = np.moveaxis(x, axis, -1)
    c = moved.shape[-1]
    flat = moved.reshape(-1, c)
    g = None if gamma is None else np.reshape(gamma, c)
    b = None if beta is None else np.reshape(beta, c)
    z = (
        None
        if residual is None
        else np.moveaxis(residual, axis, -1).reshape(-1, c)
    )
    out, cache = batchnorm_forward(
        flat, g, b, bn_param, activation=activation, residual=z
    )
    out = np.moveaxis(out.reshape(moved.shape), -1, axis)
    if cache is not None:
        cache = (cache, axis, moved.shape, _affine(gamma, beta, x, c)[3])
    return out, cache


@_takes_out
@_half_backward
def spatial_batchnorm_backward(
    dout: npt.NDArray[Any], cache: Cache
) -> tuple[Any, ...]:
    """Backward pass for spatial batch normalization (reference): the same
    transposes around :func:`batchnorm_backward_alt`.

    See Also
    --------
    bnfast.spatial_batchnorm_backward : the fast twin (C kernels).
    bnfast.reference.spatial_batchnorm_forward : the forward.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast import reference
    >>> x = np.random.default_rng(0).standard_normal((4, 3, 5, 5))
    >>> _, cache = reference.spatial_batchnorm_forward(
    ...     x, np.ones(3), np.zeros(3), {"mode": "train"})
    >>> dx, dgamma, dbeta = reference.spatial_batchnorm_backward(
    ...     np.ones_like(x), cache)
    >>> dbeta
    array([100., 100., 100.])
    """
    bn_cache, axis, moved_shape, g_shape = cache
    c = moved_shape[-1]
    flat = np.moveaxis(dout, axis, -1).reshape(-1, c)
    dx, dgamma, dbeta, *dres = batchnorm_backward_alt(flat, bn_cache)
    dx = np.moveaxis(dx.reshape(moved_shape), -1, axis)
    grads = tuple(
        None if d is None else d.reshape(g_shape) for d in (dgamma, dbeta)
    )
    if dres:  # dresidual, laid back as dout
        if (
            bn_cache[10] is None
            and isinstance(dout, np.ndarray)
            and (dout.dtype == dx.dtype)
        ):
            return dx, *grads, dout
        dres = np.moveaxis(dres[0].reshape(moved_shape), -1, axis)
        return dx, *grads, dres
    return dx, *grads


def _rows_shape(x: npt.NDArray[Any], normalized_shape: Any) -> tuple[int, int]:
    """(rows, features) of x for layer and RMS norm: normalized_shape None
    normalizes the axes after the first (x.reshape(N, -1)), else the
    trailing normalized_shape (an int or a tuple: PyTorch's)."""
    if normalized_shape is None:
        return x.shape[0], -1
    k = 1 if np.ndim(normalized_shape) == 0 else len(normalized_shape)
    return int(np.prod(x.shape[: x.ndim - k])), -1


@_takes_out
@_half_forward
def layernorm_forward(
    x: npt.NDArray[Any],
    gamma: Param,
    beta: Param,
    ln_param: ParamDict,
    *,
    normalized_shape: ShapeLike | None = None,
) -> tuple[FloatArray, Cache]:
    """Forward pass for layer normalization (reference).

    Statistics per sample over its features (x.reshape(N, -1)), or with
    ``normalized_shape`` (an int or a tuple, as PyTorch's) over that
    trailing shape of x (x.reshape(-1, prod(normalized_shape))); gamma and
    beta per feature, shape (D,) or the feature shape (x.shape[1:], or
    normalized_shape), or None (1 and 0; the backward's gradient is then
    None).  ln_param: 'eps' (1e-5).

    See Also
    --------
    bnfast.layernorm_forward : the fast twin (C kernels).
    bnfast.reference.layernorm_backward : the backward.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast import reference
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 8.0]])
    >>> out, _ = reference.layernorm_forward(x, np.ones(3), np.zeros(3), {})
    >>> np.round(out.mean(axis=1), 12)
    array([0., 0.])
    """
    gamma, beta = _param(gamma, x), _param(beta, x)
    eps = ln_param.get("eps", 1e-5)
    xr = x.reshape(_rows_shape(x, normalized_shape))
    g, b, p_dtype, p_shape, wants = _affine(gamma, beta, x, -1)
    mu = xr.mean(axis=1, keepdims=True)
    var = xr.var(axis=1, keepdims=True)
    x_hat = (xr - mu) / np.sqrt(var + eps)
    out = g * x_hat + b
    cache = (xr, x_hat, mu, var, g, eps, x.shape, p_dtype, p_shape, wants)
    return out.astype(x.dtype, copy=False).reshape(x.shape), cache


@_takes_out
@_half_backward
def layernorm_backward(
    dout: npt.NDArray[Any], cache: Cache
) -> tuple[FloatArray, Grad, Grad]:
    """Backward pass for layer normalization (reference).

    ``dx = inv_std / D * (D * dxhat - sum(dxhat) - x_hat * sum(dxhat *
    x_hat))`` per sample, with dxhat = dout * gamma.

    See Also
    --------
    bnfast.layernorm_backward : the fast twin (C kernels).
    bnfast.reference.layernorm_forward : the forward.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast import reference
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 8.0]])
    >>> _, cache = reference.layernorm_forward(x, np.ones(3), np.zeros(3), {})
    >>> dx, dgamma, dbeta = reference.layernorm_backward(
    ...     np.ones((2, 3)), cache)
    >>> dbeta
    array([2., 2., 2.])
    """
    x, x_hat, mu, var, gamma, eps, N, dout, finish = _unpack(dout, cache)
    D = x.shape[1]
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)
    dxhat = dout * gamma
    inv_std = 1.0 / np.sqrt(var + eps)
    dx = (
        inv_std
        / D
        * (
            D * dxhat
            - dxhat.sum(axis=1, keepdims=True)
            - x_hat * np.sum(dxhat * x_hat, axis=1, keepdims=True)
        )
    )
    return finish(dx, dgamma, dbeta)


@_takes_out
@_half_forward
def rmsnorm_forward(
    x: npt.NDArray[Any],
    gamma: Param,
    rms_param: ParamDict,
    *,
    normalized_shape: ShapeLike | None = None,
) -> tuple[FloatArray, Cache]:
    """Forward pass for RMS normalization (reference).

    Per row of x over its trailing ``normalized_shape`` (an int or a
    tuple, as PyTorch's; None: gamma's shape when x ends with it, else
    the axes after the first): ``x / sqrt(mean(x**2) + eps) * gamma``.
    gamma of shape (D,) or the feature shape, or None (1; the backward's
    dgamma is then None).  rms_param: 'eps' (None, the default: the
    machine epsilon of x's dtype, as PyTorch's eps=None).

    See Also
    --------
    bnfast.rmsnorm_forward : the fast twin (C kernels).
    bnfast.reference.rmsnorm_backward : the backward.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast import reference
    >>> x = np.array([[3.0, 4.0], [1.0, 1.0]])
    >>> out, _ = reference.rmsnorm_forward(x, np.ones(2), {"eps": 0.0})
    >>> out
    array([[0.84852814, 1.13137085],
           [1.        , 1.        ]])
    """
    gamma = _param(gamma, x)
    eps = rms_param.get("eps")
    if eps is None:
        eps = float(_finfo(_STORAGE.get() or x.dtype).eps)
    if normalized_shape is None and gamma is not None:
        k = np.ndim(gamma)
        if 0 < k <= x.ndim and x.shape[x.ndim - k :] == np.shape(gamma):
            normalized_shape = np.shape(gamma)
    xr = x.reshape(_rows_shape(x, normalized_shape))
    g, _, p_dtype, p_shape, wants = _affine(gamma, None, x, -1)
    ms = np.mean(xr * xr, axis=1, keepdims=True)
    inv_rms = 1.0 / np.sqrt(ms + eps)
    x_hat = xr * inv_rms
    out = x_hat * g
    cache = (xr, x_hat, inv_rms, g, x.shape, p_dtype, p_shape, wants[0])
    return out.astype(x.dtype, copy=False).reshape(x.shape), cache


@_takes_out
@_half_backward
def rmsnorm_backward(
    dout: npt.NDArray[Any], cache: Cache
) -> tuple[FloatArray, Grad]:
    """Backward pass for RMS normalization (reference).

    ``dx = inv_rms * (dxhat - x_hat * mean(dxhat * x_hat))`` per row, with
    dxhat = dout * gamma; ``dgamma = sum(dout * x_hat)`` over the rows.
    Returns (dx, dgamma), dgamma None when the forward's gamma was None.

    See Also
    --------
    bnfast.rmsnorm_backward : the fast twin (C kernels).
    bnfast.reference.rmsnorm_forward : the forward.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast import reference
    >>> x = np.array([[3.0, 4.0], [1.0, 1.0]])
    >>> _, cache = reference.rmsnorm_forward(x, np.ones(2), {"eps": 0.0})
    >>> dx, dgamma = reference.rmsnorm_backward(np.ones((2, 2)), cache)
    >>> np.round(dgamma, 4)
    array([1.8485, 2.1314])
    """
    xr, x_hat, inv_rms, g, x_shape, p_dtype, p_shape, want = cache
    dout = dout.reshape(xr.shape)
    dgamma = np.sum(dout * x_hat, axis=0)
    dxhat = dout * g
    dx = inv_rms * (
        dxhat - x_hat * np.mean(dxhat * x_hat, axis=1, keepdims=True)
    )
    return (
        dx.astype(xr.dtype, copy=False).reshape(x_shape),
        dgamma.astype(p_dtype, copy=False).reshape(p_shape) if want else None,
    )


@_takes_out
@_half_forward
def spatial_groupnorm_forward(
    x: npt.NDArray[Any],
    gamma: Param,
    beta: Param,
    G: int,
    gn_param: ParamDict,
    *,
    axis: int = 1,
) -> tuple[FloatArray, Cache]:
    """Forward pass for spatial group normalization (reference).

    x of shape (N, C, ...) ; the C channels form G groups of C // G adjacent
    channels, normalized per sample and group; gamma and beta per channel,
    shape (C,) or (1, C, 1, ...), or None (1 and 0; the backward's
    gradient is then None).  gn_param: 'eps' (1e-5).  G = C is
    instance norm, G = 1 layer norm over (C, ...).  axis: the channel
    axis, 1 or the last (-1: channels last, (N, ..., C), gamma and beta
    (C,) or (1, ..., 1, C)); the textbook way: the channel axis moved to
    1 (a transposing copy), the NCHW math, and the result moved back.

    See Also
    --------
    bnfast.spatial_groupnorm_forward : the fast twin (C kernels).
    bnfast.reference.spatial_groupnorm_backward : the backward.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast import reference
    >>> x = np.arange(16.0).reshape(1, 4, 2, 2)
    >>> out, _ = reference.spatial_groupnorm_forward(
    ...     x, np.ones(4), np.zeros(4), 2, {})
    >>> round(float(out[0, :2].std()), 4), round(float(out[0, 2:].mean()), 12)
    (1.0, 0.0)
    """
    gamma, beta = _param(gamma, x), _param(beta, x)
    eps = gn_param.get("eps", 1e-5)
    if axis not in (1, -1, x.ndim - 1):
        raise ValueError(
            f"axis must be 1 (channels first) or -1 (channels last), got "
            f"{axis} for x of {x.ndim} dimensions"
        )
    x = np.moveaxis(x, axis, 1)
    N, C = x.shape[:2]
    xg = x.reshape(N, G, -1)
    mean = xg.mean(axis=2, keepdims=True)
    var = xg.var(axis=2, keepdims=True)
    x_hat = ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape)
    shape = (1, C) + (1,) * (x.ndim - 2)
    g, b, p_dtype, p_shape, wants = _affine(gamma, beta, x, shape)
    out = g * x_hat + b
    cache = (x_hat, var, g, eps, G, p_dtype, p_shape, wants, axis)
    return np.moveaxis(out.astype(x.dtype, copy=False), 1, axis), cache


@_takes_out
@_half_backward
def spatial_groupnorm_backward(
    dout: npt.NDArray[Any], cache: Cache
) -> tuple[FloatArray, Grad, Grad]:
    """Backward pass for spatial group normalization (reference).

    Per sample and group of M elements, with dxhat = dout * gamma:
    ``dx = inv_std / M * (M*dxhat - sum(dxhat) - x_hat * sum(dxhat*x_hat))``.

    See Also
    --------
    bnfast.spatial_groupnorm_backward : the fast twin (C kernels).
    bnfast.reference.spatial_groupnorm_forward : the forward.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast import reference
    >>> x = np.random.default_rng(0).standard_normal((2, 4, 3, 3))
    >>> _, cache = reference.spatial_groupnorm_forward(
    ...     x, np.ones(4), np.zeros(4), 2, {})
    >>> dx, dgamma, dbeta = reference.spatial_groupnorm_backward(
    ...     np.ones_like(x), cache)
    >>> dbeta
    array([18., 18., 18., 18.])
    """
    x_hat, var, g, eps, G, g_dtype, g_shape, wants, axis = cache
    dout = np.moveaxis(dout, axis, 1)
    N = x_hat.shape[0]
    axes = (0,) + tuple(range(2, x_hat.ndim))
    dbeta = dout.sum(axis=axes)
    dgamma = np.sum(dout * x_hat, axis=axes)
    dxhat = (dout * g).reshape(N, G, -1)
    xh = x_hat.reshape(N, G, -1)
    M = xh.shape[2]
    inv_std = 1.0 / np.sqrt(var + eps)
    dx = (
        inv_std
        / M
        * (
            M * dxhat
            - dxhat.sum(axis=2, keepdims=True)
            - xh * np.sum(dxhat * xh, axis=2, keepdims=True)
        )
    )
    dx = dx.reshape(x_hat.shape).astype(x_hat.dtype, copy=False)
    return (
        np.moveaxis(dx, 1, axis),
        *_grads(dgamma, dbeta, g_dtype, g_shape, wants),
    )
