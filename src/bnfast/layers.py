"""Stateful normalization layers for NumPy training loops and inference.

Each layer owns its parameters (gamma, beta) and, for batch norm, its
running statistics; ``forward`` runs the fast functions of
:mod:`bnfast.functional`, ``backward`` returns dx and stores the parameter
gradients.  ``params`` and ``grads`` are dicts of the live arrays, so an
optimizer can update them in place::

    for name, p in layer.params.items():
        p -= lr * layer.grads[name]

``state_dict`` / ``load_state_dict`` use PyTorch's names (weight, bias,
running_mean, running_var, num_batches_tracked) with NumPy arrays; PyTorch
tensors are accepted on load and :func:`from_torch` builds a layer from a
torch module, all without importing torch.
"""

from __future__ import annotations

import collections.abc
import math
import numbers
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import numpy.typing as npt

from bnfast import functional

if TYPE_CHECKING:
    from bnfast._typing import (
        Activation,
        ArrayLike,
        DTypeLike,
        FloatArray,
        Grad,
        ShapeLike,
    )

    #: A parameter initializer: 'ones', 'zeros', a callable (shape, dtype)
    #: -> array, or an array of the parameter's shape.
    Init = Union[
        str, Callable[[tuple[int, ...], np.dtype[Any]], ArrayLike], ArrayLike
    ]
    #: What from_torch returns.
    Layer = Union[
        "BatchNorm", "LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm"
    ]
    F64Array = npt.NDArray[np.float64]
    #: What a layer's _backward returns: dx, dgamma, dbeta (and
    #: dresidual after batch norm's residual=).
    _Grads = Union[
        tuple[FloatArray, Grad, Grad],
        tuple[FloatArray, Grad, Grad, FloatArray],
    ]

__all__ = [
    "BatchNorm",
    "LayerNorm",
    "RMSNorm",
    "GroupNorm",
    "InstanceNorm",
    "from_torch",
    "fold_linear_batchnorm",
    "fold_batchnorm_linear",
    "fold_conv_batchnorm",
]

_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


# Constructor arguments are checked when the layer is made, with messages
# that name the argument (TypeError for a wrong type, ValueError for a value
# out of range), so that a bad layer never reaches the functional API, whose
# messages name bn_param entries the user never passed.


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(
        value, (bool, np.bool_)
    )


def _positive_int(value: Any, name: str) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _real(value: Any, name: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(
        value, (bool, np.bool_)
    ):
        raise TypeError(
            f"{name} must be a real number, got {type(value).__name__}"
        )
    return float(value)


def _check_eps(eps: float) -> float:
    """eps: a finite real >= 0 (the functional API takes any eps >= 0; an
    infinite one would make every output beta)."""
    value = _real(eps, "eps")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    return value


def _check_momentum(momentum: float | None) -> float | None:
    if momentum is None:
        return None
    if not isinstance(momentum, numbers.Real) or isinstance(
        momentum, (bool, np.bool_)
    ):
        raise TypeError(
            "momentum must be a real number in [0, 1] or None, got "
            f"{type(momentum).__name__}"
        )
    value = float(momentum)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"momentum must be in [0, 1] or None, got {momentum!r}"
        )
    return value


def _is_bfloat16(dt: np.dtype[Any]) -> bool:
    """dt is ml_dtypes.bfloat16 (told without importing ml_dtypes: such a
    dtype exists only once it is imported)."""
    mld = sys.modules.get("ml_dtypes")
    return (
        mld is not None
        and dt.itemsize == 2
        and dt.name == "bfloat16"
        and dt == np.dtype(mld.bfloat16)
    )


def _is_float_dtype(dt: np.dtype[Any]) -> bool:
    """A float dtype bnfast takes: numpy's floats, or bfloat16."""
    return dt.kind == "f" or _is_bfloat16(dt)


_DTYPE_NAMES = "float16, bfloat16, float32 or float64"


def _check_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    if dtype is None:
        raise TypeError(f"dtype must be {_DTYPE_NAMES}, got None")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"dtype must be {_DTYPE_NAMES}, got {dtype!r}"
        ) from None
    if dt not in _DTYPES and not _is_bfloat16(dt):
        raise TypeError(f"dtype must be {_DTYPE_NAMES}, got {dt}")
    return dt


class _Shown(str):
    """A repr value shown as is (not quoted)."""

    def __repr__(self) -> str:
        return str(self)


def _init(
    init: Init, shape: tuple[int, ...], dtype: np.dtype[Any], name: str
) -> FloatArray:
    """A parameter array from an initializer: 'ones', 'zeros', a callable
    (shape, dtype) -> array, or an array of the shape."""
    if isinstance(init, str):
        if init not in ("ones", "zeros"):
            raise ValueError(
                f"{name} initializer must be 'ones', 'zeros', a callable or "
                f"an array, got {init!r}"
            )
        return (np.ones if init == "ones" else np.zeros)(shape, dtype)
    value = init(shape, dtype) if callable(init) else init
    arr = np.array(value, dtype=dtype, copy=True)
    if arr.shape != shape:
        raise ValueError(
            f"{name} initializer must give shape {shape}, got {arr.shape}"
        )
    return arr


def _as_numpy(value: Any) -> npt.NDArray[Any]:
    """A NumPy array from an array-like or a PyTorch tensor (duck-typed:
    detached and moved to the CPU first)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":
            # NumPy has no bfloat16: the bits, seen as ml_dtypes.bfloat16
            try:
                import ml_dtypes  # type: ignore[import-not-found, unused-ignore]
            except ImportError:
                raise TypeError(
                    "a bfloat16 tensor needs ml_dtypes (pip install "
                    "ml_dtypes, or bnfast[bfloat16])"
                ) from None
            torch = sys.modules[type(value).__module__.split(".")[0]]
            # (torch is duck-typed: Any)
            bits: FloatArray = (
                value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
            )
            return bits
        value = value.numpy()
    return np.asarray(value)


class _Norm:
    """Shared machinery: parameters, gradients, mode, state dicts."""

    if TYPE_CHECKING:
        # each layer's forward(x, mode="train", ...), which __call__ runs
        forward: Callable[..., FloatArray]

    def __init__(
        self,
        shape: tuple[int, ...],
        affine: bool,
        bias: bool,
        dtype: DTypeLike,
        gamma_init: Init,
        beta_init: Init,
        affine_name: str = "affine",
    ) -> None:
        # arguments are checked by the subclass (shape) and here, before
        # anything is made
        dtype = _check_dtype(dtype)
        affine = _flag(affine, affine_name)
        bias = _flag(bias, "bias")
        params: dict[str, FloatArray] = {}
        if affine:
            params["gamma"] = _init(gamma_init, shape, dtype, "gamma")
            if bias:
                params["beta"] = _init(beta_init, shape, dtype, "beta")
        self.dtype = dtype
        self.affine = affine
        self.bias = bias
        self.params = params
        self.grads: dict[str, FloatArray] = {}
        self._param_shape = tuple(shape)
        self._cache: Any = None

    @property
    def gamma(self) -> FloatArray:
        """gamma, or for a layer without one a new read-only array of
        ones (the forward passes gamma=None to the functional API)."""
        return self.params.get("gamma", self._fixed(1))

    @property
    def beta(self) -> FloatArray:
        """beta, or for a layer without one a new read-only array of
        zeros (the forward passes beta=None)."""
        return self.params.get("beta", self._fixed(0))

    def _fixed(self, value: float) -> FloatArray:
        a = np.full(self._param_shape, value, self.dtype)
        a.flags.writeable = False
        return a

    @property
    def _gamma(self) -> FloatArray | None:
        """What the forward passes: gamma, None without one."""
        return self.params.get("gamma")

    @property
    def _beta(self) -> FloatArray | None:
        return self.params.get("beta")

    def __call__(
        self, x: ArrayLike, mode: str = "train", **kwargs: Any
    ) -> FloatArray:
        return self.forward(x, mode, **kwargs)

    def __repr__(self) -> str:
        """PyTorch-like: the positional arguments and eps (and momentum),
        then the other arguments that differ from their defaults (dtype as
        a string, so that the repr evaluates to an equal layer)."""
        args, kwargs, defaults = self._repr_parts()
        parts = [repr(a) for a in args]
        for key, value in kwargs:
            if key not in defaults or value != defaults[key]:
                parts.append(f"{key}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def _repr_parts(
        self,
    ) -> tuple[list[Any], list[tuple[str, Any]], dict[str, Any]]:
        """(positional values, [(keyword, value)], {keyword: default});
        keywords without a default are always shown."""
        raise NotImplementedError

    def _common_repr(self) -> list[tuple[str, Any]]:
        return [("bias", self.bias), ("dtype", str(self.dtype))]

    def _backward(self, dout: ArrayLike, cache: Any) -> _Grads:
        raise NotImplementedError

    def _check_mode(self, mode: str) -> None:
        if mode not in ("train", "test"):
            raise ValueError(
                f"mode must be one of ('train', 'test'), got {mode!r}"
            )

    def _check_channels(
        self, x: ArrayLike, axis: int, count: int
    ) -> FloatArray:
        """x as an array, checked to have ``count`` channels along axis."""
        x = np.asarray(x)
        if x.ndim < 2 or not -x.ndim <= axis < x.ndim:
            raise ValueError(
                f"x must have a batch axis and a channel axis {axis}, got "
                f"shape {x.shape}"
            )
        if x.shape[axis] != count:
            raise ValueError(
                f"x has {x.shape[axis]} channels along axis {axis}, "
                f"{type(self).__name__} expects {count}"
            )
        return x

    def backward(
        self,
        dout: ArrayLike,
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        """dx for the last forward pass, in either mode (batch norm after
        'test' mode: through the frozen running statistics, dx = dout *
        gamma / sqrt(running_var + eps)); stores dgamma and dbeta in
        ``grads`` (affine layers) and as attributes.  After a batch norm
        forward with ``residual=z``: (dx, dresidual)."""
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward needs a forward pass first"
            )
        dx, dgamma, dbeta, *dres = self._backward(dout, self._cache)
        self.dgamma, self.dbeta = dgamma, dbeta
        for name, grad in (("gamma", dgamma), ("beta", dbeta)):
            if name in self.params:
                # (a parameter's gradient is not None)
                self.grads[name] = grad  # type: ignore[assignment]
        if dres:
            return dx, dres[0]
        return dx

    # PyTorch-named state --------------------------------------------------

    def _state(self) -> dict[str, npt.NDArray[Any]]:
        """{torch name: live array}."""
        state: dict[str, npt.NDArray[Any]] = {}
        if "gamma" in self.params:
            state["weight"] = self.params["gamma"]
        if "beta" in self.params:
            state["bias"] = self.params["beta"]
        return state

    def state_dict(self) -> dict[str, npt.NDArray[Any]]:
        """The layer's state under PyTorch's names, as NumPy copies."""
        return {k: np.array(v, copy=True) for k, v in self._state().items()}

    def load_state_dict(
        self, state: Mapping[str, Any], strict: bool = True
    ) -> None:
        """Load a state dict (NumPy arrays or PyTorch tensors) into the
        live arrays, in place.  With ``strict`` (default) the keys must
        match ``state_dict()``'s exactly.

        Every entry is checked (and converted to the layer's dtype) before
        anything is written: real numbers of the entry's shape, values
        within the dtype's range, ``num_batches_tracked`` a non-negative
        integer.  Nothing is modified on error, and the message names the
        key.
        """
        if not isinstance(state, collections.abc.Mapping):
            raise TypeError(
                f"state must be a mapping (a state dict), got "
                f"{type(state).__name__}"
            )
        strict = _flag(strict, "strict")
        own = self._state()
        keys = set(state)
        if strict and keys != set(own):
            missing = sorted(set(own) - keys)
            unexpected = sorted(map(str, keys - set(own)))
            raise KeyError(
                f"state dict keys do not match {type(self).__name__}: "
                f"missing {missing}, unexpected {unexpected}"
            )
        # validate and convert everything first (into new arrays: an entry
        # may share memory with a live array written before it) ...
        values = {
            name: self._checked(name, state[name], own[name])
            for name in own
            if name in keys
        }
        # ... then write, which cannot fail
        for name, value in values.items():
            self._load(name, value)

    @staticmethod
    def _checked(
        name: str, raw: Any, target: npt.NDArray[Any]
    ) -> npt.NDArray[Any] | int:
        """The state dict entry ``name`` as what _load writes to target,
        or an exception naming the key."""
        try:
            value = _as_numpy(raw)
        except Exception as exc:
            raise TypeError(
                f"{name} could not be converted to a NumPy array: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if value.dtype.kind not in "fiu" and not _is_bfloat16(value.dtype):
            raise TypeError(
                f"{name} must hold real numbers, got dtype {value.dtype}"
            )
        target = np.asarray(target)
        if target.ndim == 0:
            if value.ndim != 0:
                raise ValueError(
                    f"{name} must be a scalar, got shape {value.shape}"
                )
        elif value.shape != target.shape:
            raise ValueError(
                f"{name} must have shape {target.shape}, got {value.shape}"
            )
        if not _is_float_dtype(target.dtype):  # num_batches_tracked
            v = value.item()
            if (
                not (isinstance(v, int) or math.isfinite(v))
                or v != int(v)
                or not 0 <= v < 2**63
            ):
                raise ValueError(
                    f"{name} must be a non-negative integer, got {v!r}"
                )
            return int(v)
        with np.errstate(over="ignore", invalid="ignore"):
            converted = value.astype(target.dtype, copy=True)
        if _is_float_dtype(value.dtype):
            lost = np.isfinite(value) & ~np.isfinite(converted)
        else:
            lost = ~np.isfinite(converted)
        if lost.any():
            raise ValueError(
                f"{name} has finite values outside the range of {target.dtype}"
            )
        return converted

    def _load(self, name: str, value: Any) -> None:
        self._state()[name][...] = value

    @classmethod
    def from_torch(cls, module: Any) -> Layer:
        """The bnfast layer equivalent to a torch.nn.BatchNorm1d/2d/3d,
        LayerNorm, GroupNorm or InstanceNorm1d/2d/3d module (whatever class
        this is called on):
        same hyper-parameters (bnfast momentum = 1 - torch momentum, the
        unbiased running variance) and a copy of its state."""
        return from_torch(module)


class _RunningStats(_Norm):
    """The state of a layer with running statistics (BatchNorm,
    InstanceNorm with track_running_stats): running_mean, running_var and
    num_batches_tracked in the state dict, after _Norm's parameters."""

    track_running_stats: bool
    running_mean: FloatArray | None
    running_var: FloatArray | None
    num_batches_tracked: int

    def _state(self) -> dict[str, npt.NDArray[Any]]:
        state = super()._state()
        if self.track_running_stats:
            # (tracked: the running statistics are not None)
            state["running_mean"] = self.running_mean  # type: ignore[assignment]
            state["running_var"] = self.running_var  # type: ignore[assignment]
            state["num_batches_tracked"] = np.asarray(
                self.num_batches_tracked, dtype=np.int64
            )
        return state

    def _load(self, name: str, value: Any) -> None:
        if name == "num_batches_tracked":
            self.num_batches_tracked = value
        else:
            super()._load(name, value)


class BatchNorm(_RunningStats, _Norm):
    """Batch normalization layer: statistics per channel over the batch
    (and the spatial axes).

    Parameters
    ----------
    num_features : int
        C, the number of channels (features).
    eps : float
        Added to the variance.  Default 1e-5.
    momentum : float in [0, 1] or None
        ``running = momentum * running + (1 - momentum) * batch`` (the
        cs231n convention; PyTorch's momentum is 1 - this).  None: a
        cumulative moving average over all batches so far (PyTorch's
        meaning of None).  Default 0.9.
    axis : int
        The channel axis: 1 for (N, C) and (N, C, ...) data, -1 for
        channels-last (not 0, the batch axis).  Default 1.
    affine : bool
        Learn gamma and beta.  Default True.
    bias : bool
        With ``affine``: learn beta too.  False: no beta (zero), as
        PyTorch's ``bias=False``; ``params`` and the state dict then hold
        gamma (weight) only.  Default True.
    track_running_stats : bool
        Keep running statistics and use them in 'test' mode; False uses the
        batch statistics in both modes.  Default True.
    unbiased_running_var : bool
        Average the unbiased batch variance into running_var, as PyTorch
        does.  Default False (the biased one, as cs231n).
    dtype : float16, bfloat16, float32 or float64
        Of the parameters and running statistics.  Default float32.
        float16 and bfloat16 (``ml_dtypes.bfloat16``) are half-precision
        storage, computed in float32; x may have any of these dtypes (the
        output keeps x's).
    gamma_init, beta_init : 'ones', 'zeros', callable(shape, dtype) or array
        Defaults 'ones' and 'zeros'.
    activation : None or 'relu'
        'relu' fuses a ReLU into the layer (same pass over memory, forward
        and backward).  Default None.

    Every argument is checked here: TypeError for a wrong type (bools must
    be bools, ints ints), ValueError for a value out of range (eps finite
    and >= 0).  The repr shows the arguments as PyTorch's does.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> bn = bnfast.BatchNorm(3, dtype=np.float64)
    >>> x = np.random.default_rng(0).standard_normal((8, 3, 4, 4))
    >>> out = bn(x)                         # train mode
    >>> dx = bn.backward(np.ones_like(out))
    >>> sorted(bn.grads), bn.grads["beta"]
    (['beta', 'gamma'], array([128., 128., 128.]))
    >>> out_test = bn(x, mode="test")       # running statistics
    """

    def __init__(
        self,
        num_features: int,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.9,
        axis: int = 1,
        affine: bool = True,
        bias: bool = True,
        track_running_stats: bool = True,
        unbiased_running_var: bool = False,
        dtype: DTypeLike = np.float32,
        gamma_init: Init = "ones",
        beta_init: Init = "zeros",
        activation: Activation = None,
    ) -> None:
        num_features = _positive_int(num_features, "num_features")
        eps = _check_eps(eps)
        momentum = _check_momentum(momentum)
        if not _is_int(axis):
            raise TypeError(f"axis must be an int, got {type(axis).__name__}")
        if axis == 0:
            raise ValueError("axis must not be 0, the batch axis")
        track_running_stats = _flag(track_running_stats, "track_running_stats")
        unbiased_running_var = _flag(
            unbiased_running_var, "unbiased_running_var"
        )
        if activation is not None and not isinstance(activation, str):
            raise TypeError(
                "activation must be None or 'relu', got "
                f"{type(activation).__name__}"
            )
        if activation not in (None, "relu"):
            raise ValueError(
                f"activation must be one of (None, 'relu'), got {activation!r}"
            )
        super().__init__(
            (num_features,), affine, bias, dtype, gamma_init, beta_init
        )
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.axis = int(axis)
        self.track_running_stats = track_running_stats
        self.unbiased_running_var = unbiased_running_var
        self.activation = activation
        if self.track_running_stats:
            self.running_mean = np.zeros(self.num_features, self.dtype)
            self.running_var = np.ones(self.num_features, self.dtype)
            self.num_batches_tracked = 0
        else:
            self.running_mean = self.running_var = None

    def _repr_parts(
        self,
    ) -> tuple[list[Any], list[tuple[str, Any]], dict[str, Any]]:
        return (
            [self.num_features],
            [
                ("eps", self.eps),
                ("momentum", self.momentum),
                ("axis", self.axis),
                ("affine", self.affine),
            ]
            + self._common_repr()
            + [
                ("track_running_stats", self.track_running_stats),
                ("unbiased_running_var", self.unbiased_running_var),
                ("activation", self.activation),
            ],
            {
                "axis": 1,
                "affine": True,
                "bias": True,
                "dtype": "float32",
                "track_running_stats": True,
                "unbiased_running_var": False,
                "activation": None,
            },
        )

    def _backward(self, dout: ArrayLike, cache: Any) -> _Grads:
        return functional.spatial_batchnorm_backward(dout, cache)

    def forward(
        self,
        x: ArrayLike,
        mode: str = "train",
        *,
        residual: ArrayLike | None = None,
    ) -> FloatArray:
        """Normalize x: batch statistics in 'train' mode (updating the
        running statistics), running statistics in 'test' mode.
        ``residual=z`` (keyword; x's shape and dtype): ``relu(bn(x) + z)``
        (``bn(x) + z`` without the activation) in the same pass, as
        :func:`bnfast.batchnorm_forward`'s; backward then returns (dx,
        dresidual)."""
        self._check_mode(mode)
        x = self._check_channels(x, self.axis, self.num_features)
        use_batch = mode == "train" or not self.track_running_stats
        momentum = self.momentum
        if self.track_running_stats and mode == "train" and momentum is None:
            momentum = 1.0 - 1.0 / (self.num_batches_tracked + 1)
        bn_param: dict[str, Any] = {
            "mode": "train" if use_batch else "test",
            "eps": self.eps,
            "momentum": 0.0 if momentum is None else momentum,
            "unbiased_running_var": self.unbiased_running_var,
        }
        if self.track_running_stats:
            bn_param["running_mean"] = self.running_mean
            bn_param["running_var"] = self.running_var
        out, self._cache = self._normalize(x, bn_param, residual)
        if self.track_running_stats and mode == "train":
            # (tracked: the running statistics are not None)
            self.running_mean[...] = bn_param["running_mean"]  # type: ignore[index]
            self.running_var[...] = bn_param["running_var"]  # type: ignore[index]
            self.num_batches_tracked += 1
        return out

    def _normalize(
        self,
        x: FloatArray,
        bn_param: dict[str, Any],
        residual: ArrayLike | None = None,
    ) -> tuple[FloatArray, Any]:
        """(out, cache) of x with the given bn_param (a hook for
        bnfast.distributed.SyncBatchNorm)."""
        return functional.spatial_batchnorm_forward(
            x,
            self._gamma,
            self._beta,
            bn_param,
            axis=self.axis,
            activation=self.activation,
            residual=residual,
        )

    def fold(
        self, *, drop_activation: bool = False
    ) -> tuple[F64Array, F64Array]:
        """Per-channel (scale, shift) with ``x * scale + shift`` equal to
        'test' mode (broadcast along the channel axis), in float64.

        A layer with ``activation='relu'`` is not an affine map: fold
        raises a ValueError, unless ``drop_activation=True``, which returns
        the affine part; ``np.maximum(x * scale + shift, 0)`` is then
        'test' mode.
        """
        drop_activation = _flag(drop_activation, "drop_activation")
        if not self.track_running_stats:
            raise ValueError(
                "fold needs running statistics (track_running_stats=True)"
            )
        if self.activation is not None and not drop_activation:
            raise ValueError(
                f"this BatchNorm has activation={self.activation!r}, which "
                "cannot be folded into an affine map: pass "
                "drop_activation=True for the affine part and apply the "
                "ReLU (np.maximum(..., 0)) to its result"
            )
        # (tracked: the running statistics are not None)
        scale = self.gamma.astype(np.float64) / np.sqrt(
            self.running_var.astype(  # type: ignore[union-attr]
                np.float64
            )
            + self.eps
        )
        shift = (
            self.beta.astype(np.float64)
            - self.running_mean.astype(  # type: ignore[union-attr]
                np.float64
            )
            * scale
        )
        return scale, shift


def _check_normalized_shape(value: Any) -> tuple[int, ...]:
    """normalized_shape as a non-empty tuple of positive ints."""
    if _is_int(value):
        value = (value,)
    elif isinstance(value, (str, bytes)) or not isinstance(
        value, collections.abc.Iterable
    ):
        raise TypeError(
            "normalized_shape must be an int or a sequence of "
            f"ints, got {type(value).__name__}"
        )
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(
            "normalized_shape must be an int or a sequence of "
            f"ints, got {value!r}"
        ) from None
    if not value:
        raise ValueError("normalized_shape must not be empty")
    for d in value:
        if not _is_int(d):
            raise TypeError(
                "normalized_shape must be an int or a sequence "
                f"of ints, got {value!r}"
            )
        if d < 1:
            raise ValueError(
                f"normalized_shape must be positive ints, got {value!r}"
            )
    return tuple(int(d) for d in value)


class LayerNorm(_Norm):
    """Layer normalization: statistics per sample over the trailing
    ``normalized_shape`` axes; gamma and beta of that shape.

    Parameters
    ----------
    normalized_shape : int or sequence of positive ints
        The trailing shape normalized over.
    eps : float
        Added to the variance: finite, >= 0.  Default 1e-5.
    elementwise_affine : bool
        Learn gamma and beta.  Default True.
    bias : bool
        With ``elementwise_affine``: learn beta too; False: gamma only, as
        PyTorch's ``bias=False``.  Default True.
    dtype, gamma_init, beta_init
        As :class:`BatchNorm`'s.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> ln = bnfast.LayerNorm(4, dtype=np.float64)
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 4))
    >>> out = ln(x)
    >>> np.allclose(out.mean(axis=-1), 0)
    True
    """

    if TYPE_CHECKING:
        # (typing only) this layer's backward returns dx alone
        def backward(self, dout: ArrayLike) -> FloatArray: ...

    def __init__(
        self,
        normalized_shape: ShapeLike,
        *,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
        gamma_init: Init = "ones",
        beta_init: Init = "zeros",
    ) -> None:
        self.normalized_shape = _check_normalized_shape(normalized_shape)
        self.eps = _check_eps(eps)
        super().__init__(
            self.normalized_shape,
            elementwise_affine,
            bias,
            dtype,
            gamma_init,
            beta_init,
            "elementwise_affine",
        )
        self.elementwise_affine = self.affine

    def _repr_parts(
        self,
    ) -> tuple[list[Any], list[tuple[str, Any]], dict[str, Any]]:
        return (
            [self.normalized_shape],
            [
                ("eps", self.eps),
                ("elementwise_affine", self.elementwise_affine),
            ]
            + self._common_repr(),
            {"elementwise_affine": True, "bias": True, "dtype": "float32"},
        )

    def forward(self, x: ArrayLike, mode: str = "train") -> FloatArray:
        """Normalize x (the same in both modes)."""
        self._check_mode(mode)
        x = np.asarray(x)
        k = len(self.normalized_shape)
        if x.shape[x.ndim - k :] != self.normalized_shape or x.ndim <= k:
            raise ValueError(
                f"x must end with the normalized shape "
                f"{self.normalized_shape} after a batch axis, got {x.shape}"
            )
        # the kernels take x's rows in place (no reshaping copy where the
        # leading axes merge into one row stride)
        out, self._cache = functional.layernorm_forward(
            x,
            self._gamma,
            self._beta,
            {"eps": self.eps},
            normalized_shape=self.normalized_shape,
        )
        return out

    def _backward(self, dout: ArrayLike, cache: Any) -> _Grads:
        return functional.layernorm_backward(dout, cache)


def _check_rms_eps(eps: float | None) -> float | None:
    """RMSNorm's eps: None (the machine epsilon of x's dtype, as
    PyTorch's) or a finite real >= 0."""
    return None if eps is None else _check_eps(eps)


class RMSNorm(_Norm):
    """RMS normalization: per sample over the trailing ``normalized_shape``
    axes, ``x / sqrt(mean(x**2) + eps) * gamma``; gamma of that shape
    (PyTorch's ``torch.nn.RMSNorm``).

    Parameters
    ----------
    normalized_shape : int or sequence of positive ints
        The trailing shape normalized over.
    eps : float or None
        Added to the mean of squares: finite, >= 0, or None (the default:
        the machine epsilon of x's dtype, as PyTorch's).
    elementwise_affine : bool
        Learn gamma (PyTorch's weight).  Default True.
    dtype, gamma_init
        As :class:`BatchNorm`'s.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> rms = bnfast.RMSNorm(4, dtype=np.float64)
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 4))
    >>> out = rms(x)
    >>> np.allclose((out ** 2).mean(axis=-1), 1)
    True
    >>> dx = rms.backward(np.ones_like(out))
    """

    if TYPE_CHECKING:
        # (typing only) this layer's backward returns dx alone
        def backward(self, dout: ArrayLike) -> FloatArray: ...

    def __init__(
        self,
        normalized_shape: ShapeLike,
        eps: float | None = None,
        elementwise_affine: bool = True,
        *,
        dtype: DTypeLike = np.float32,
        gamma_init: Init = "ones",
    ) -> None:
        self.normalized_shape = _check_normalized_shape(normalized_shape)
        self.eps = _check_rms_eps(eps)
        super().__init__(
            self.normalized_shape,
            elementwise_affine,
            False,
            dtype,
            gamma_init,
            "zeros",
            "elementwise_affine",
        )
        self.elementwise_affine = self.affine

    @property
    def beta(self) -> FloatArray:
        """RMS norm has no shift: an AttributeError (rather than the
        zeros of the other layers without a beta)."""
        raise AttributeError(
            "RMSNorm has no beta (no shift: x / rms(x) * gamma)"
        )

    def _repr_parts(
        self,
    ) -> tuple[list[Any], list[tuple[str, Any]], dict[str, Any]]:
        return (
            [self.normalized_shape],
            [
                ("eps", self.eps),
                ("elementwise_affine", self.elementwise_affine),
                ("dtype", str(self.dtype)),
            ],
            {"elementwise_affine": True, "dtype": "float32"},
        )

    def forward(self, x: ArrayLike, mode: str = "train") -> FloatArray:
        """Normalize x (the same in both modes)."""
        self._check_mode(mode)
        x = np.asarray(x)
        k = len(self.normalized_shape)
        if x.shape[x.ndim - k :] != self.normalized_shape or x.ndim <= k:
            raise ValueError(
                f"x must end with the normalized shape "
                f"{self.normalized_shape} after a batch axis, got {x.shape}"
            )
        out, self._cache = functional.rmsnorm_forward(
            x,
            self._gamma,
            {"eps": self.eps},
            normalized_shape=self.normalized_shape,
        )
        return out

    def _backward(self, dout: ArrayLike, cache: Any) -> _Grads:
        dx, dgamma = functional.rmsnorm_backward(dout, cache)
        return dx, dgamma, None


def _check_axis(axis: int) -> int:
    """axis: an int that is not 0, the batch axis (the forward checks it
    against x: 1 or the last axis)."""
    if not _is_int(axis):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    if axis == 0:
        raise ValueError("axis must not be 0, the batch axis")
    return int(axis)


class GroupNorm(_Norm):
    """Group normalization: the channels (axis 1, or the last axis) in
    ``num_groups`` groups, statistics per sample and group; gamma and beta
    per channel.

    Parameters
    ----------
    num_groups : positive int dividing num_channels
    num_channels : positive int
    eps : float
        Added to the variance: finite, >= 0.  Default 1e-5.
    axis : int
        The channel axis: 1 (default) or -1 for channels-last data
        ((N, H, W, C), computed in place: no transposing copy).
    affine, bias, dtype, gamma_init, beta_init
        As :class:`BatchNorm`'s.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> gn = bnfast.GroupNorm(2, 4, dtype=np.float64)
    >>> x = np.random.default_rng(0).standard_normal((3, 4, 5, 5))
    >>> out = gn(x)
    >>> dx = gn.backward(np.ones_like(out))
    """

    if TYPE_CHECKING:
        # (typing only) this layer's backward returns dx alone
        def backward(self, dout: ArrayLike) -> FloatArray: ...

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        *,
        eps: float = 1e-5,
        axis: int = 1,
        affine: bool = True,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
        gamma_init: Init = "ones",
        beta_init: Init = "zeros",
    ) -> None:
        num_groups = _positive_int(num_groups, "num_groups")
        num_channels = _positive_int(num_channels, "num_channels")
        if num_channels % num_groups:
            raise ValueError(
                "num_groups must divide num_channels, got "
                f"{num_groups!r} and {num_channels!r}"
            )
        eps = _check_eps(eps)
        axis = _check_axis(axis)
        super().__init__(
            (num_channels,), affine, bias, dtype, gamma_init, beta_init
        )
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.axis = axis

    def _repr_parts(
        self,
    ) -> tuple[list[Any], list[tuple[str, Any]], dict[str, Any]]:
        return (
            [self.num_groups, self.num_channels],
            [("eps", self.eps), ("axis", self.axis), ("affine", self.affine)]
            + self._common_repr(),
            {"axis": 1, "affine": True, "bias": True, "dtype": "float32"},
        )

    def _backward(self, dout: ArrayLike, cache: Any) -> _Grads:
        return functional.spatial_groupnorm_backward(dout, cache)

    def forward(self, x: ArrayLike, mode: str = "train") -> FloatArray:
        """Normalize x (the same in both modes)."""
        self._check_mode(mode)
        x = self._check_channels(x, self.axis, self.num_channels)
        out, self._cache = functional.spatial_groupnorm_forward(
            x,
            self._gamma,
            self._beta,
            self.num_groups,
            {"eps": self.eps},
            axis=self.axis,
        )
        return out


class InstanceNorm(_RunningStats, _Norm):
    """Instance normalization: statistics per sample and channel over the
    spatial axes (group norm with one channel per group); gamma and beta
    per channel.  PyTorch's InstanceNorm1d/2d/3d in one layer.

    Parameters
    ----------
    num_features : positive int
        C, the number of channels.
    eps : float
        Added to the variance: finite, >= 0.  Default 1e-5.
    momentum : float in [0, 1] or None
        With ``track_running_stats``: ``running = momentum * running +
        (1 - momentum) * batch`` (bnfast's convention, as
        :class:`BatchNorm`; PyTorch's momentum is 1 - this), where batch
        is the mean over the samples of the per-instance statistics (as
        PyTorch).  None: the running statistics are not updated (PyTorch's
        InstanceNorm with momentum=None).  Default 0.9 (PyTorch's 0.1).
    affine : bool
        Learn gamma and beta.  Default False, as PyTorch.
    bias : bool
        With ``affine``: learn beta too.  Default True.
    track_running_stats : bool
        Keep per-channel running mean and variance, updated in 'train'
        mode; 'test' mode then normalizes with them (per channel, as batch
        norm's 'test' mode; the backward treats them as constants).
        Default False: the instance statistics in both modes.
    unbiased_running_var : bool
        Average the unbiased per-instance variance into running_var, as
        PyTorch does.  Default False (the biased one, as
        :class:`BatchNorm`).
    axis : int
        The channel axis: 1 (default) or -1 for channels-last data.
    dtype, gamma_init, beta_init
        As :class:`BatchNorm`'s.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> inorm = bnfast.InstanceNorm(3, dtype=np.float64)
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    >>> out = inorm(x)
    >>> np.allclose(out.mean(axis=(2, 3)), 0)
    True
    >>> dx = inorm.backward(np.ones_like(out))
    """

    if TYPE_CHECKING:
        # (typing only) this layer's backward returns dx alone
        def backward(self, dout: ArrayLike) -> FloatArray: ...

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.9,
        affine: bool = False,
        track_running_stats: bool = False,
        *,
        bias: bool = True,
        unbiased_running_var: bool = False,
        axis: int = 1,
        dtype: DTypeLike = np.float32,
        gamma_init: Init = "ones",
        beta_init: Init = "zeros",
    ) -> None:
        num_features = _positive_int(num_features, "num_features")
        eps = _check_eps(eps)
        momentum = _check_momentum(momentum)
        track_running_stats = _flag(track_running_stats, "track_running_stats")
        unbiased_running_var = _flag(
            unbiased_running_var, "unbiased_running_var"
        )
        axis = _check_axis(axis)
        super().__init__(
            (num_features,), affine, bias, dtype, gamma_init, beta_init
        )
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.axis = axis
        self.track_running_stats = track_running_stats
        self.unbiased_running_var = unbiased_running_var
        if self.track_running_stats:
            self.running_mean = np.zeros(self.num_features, self.dtype)
            self.running_var = np.ones(self.num_features, self.dtype)
            self.num_batches_tracked = 0
        else:
            self.running_mean = self.running_var = None
        self._frozen = False

    def _repr_parts(
        self,
    ) -> tuple[list[Any], list[tuple[str, Any]], dict[str, Any]]:
        return (
            [self.num_features],
            [
                ("eps", self.eps),
                ("momentum", self.momentum),
                ("affine", self.affine),
                ("track_running_stats", self.track_running_stats),
            ]
            + self._common_repr()
            + [
                ("unbiased_running_var", self.unbiased_running_var),
                ("axis", self.axis),
            ],
            {
                "affine": False,
                "track_running_stats": False,
                "bias": True,
                "dtype": "float32",
                "unbiased_running_var": False,
                "axis": 1,
            },
        )

    def _backward(self, dout: ArrayLike, cache: Any) -> _Grads:
        if self._frozen:
            return functional.spatial_batchnorm_backward(dout, cache)
        return functional.spatial_groupnorm_backward(dout, cache)

    def forward(self, x: ArrayLike, mode: str = "train") -> FloatArray:
        """Normalize x: per-instance statistics, except in 'test' mode with
        ``track_running_stats`` (the running statistics).  'train' mode
        with ``track_running_stats`` updates them."""
        self._check_mode(mode)
        x = self._check_channels(x, self.axis, self.num_features)
        if self.track_running_stats and mode == "test":
            bn_param = {
                "mode": "test",
                "eps": self.eps,
                "running_mean": self.running_mean,
                "running_var": self.running_var,
            }
            out, cache = functional.spatial_batchnorm_forward(
                x, self._gamma, self._beta, bn_param, axis=self.axis
            )
            self._cache, self._frozen = cache, True
            return out
        update = self.track_running_stats and mode == "train"
        if (
            update
            and self.unbiased_running_var
            and x.size
            and (x.size // (x.shape[0] * self.num_features) < 2)
        ):
            raise ValueError(
                "unbiased_running_var needs more than 1 value per sample "
                f"and channel, got x of shape {x.shape}"
            )
        # (cache: a GroupNormCache here, a BatchNormCache above)
        out, cache = functional.spatial_groupnorm_forward(  # type: ignore[assignment]
            x,
            self._gamma,
            self._beta,
            self.num_features,
            {"eps": self.eps},
            axis=self.axis,
        )
        if update:
            self._update_running(cache)
        self._cache, self._frozen = cache, False
        return out

    def _update_running(self, cache: Any) -> None:
        """The running statistics from the forward's per-(sample, channel)
        mean and 1/sqrt(var + eps), averaged over the samples."""
        if self.momentum is None:
            self.num_batches_tracked += 1
            return
        c = self.num_features
        mean = cache.mean.reshape(-1, c)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            var = np.maximum(
                1.0 / (cache.invstd * cache.invstd) - self.eps, 0.0
            ).reshape(-1, c)
            if self.unbiased_running_var:
                m = cache.x.size // (cache.x.shape[0] * c)
                var = var * (m / (m - 1))
        mom = self.momentum
        with np.errstate(invalid="ignore", over="ignore"):
            # (tracked: the running statistics are not None)
            rm = (
                mom * self.running_mean  # type: ignore[operator]
                + (1.0 - mom) * mean.mean(axis=0)
            )
            rv = (
                mom * self.running_var  # type: ignore[operator]
                + (1.0 - mom) * var.mean(axis=0)
            )
        self.running_mean[...] = rm  # type: ignore[index]
        self.running_var[...] = rv  # type: ignore[index]
        self.num_batches_tracked += 1


_TORCH_KINDS = (
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "LayerNorm",
    "GroupNorm",
    "RMSNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
)


def _torch_class(module: Any) -> type:
    """The torch.nn class along type(module).__mro__ that from_torch
    converts (so subclasses of the torch modules convert too), found by
    name and module without importing torch."""
    for cls in type(module).__mro__:
        if (
            cls.__name__ in _TORCH_KINDS
            and cls.__module__.split(".")[0] == "torch"
        ):
            return cls
    raise TypeError(
        "from_torch takes a torch.nn BatchNorm1d/2d/3d, LayerNorm, "
        "GroupNorm, RMSNorm or InstanceNorm1d/2d/3d module, got "
        f"{type(module).__name__}"
    )


def from_torch(module: Any) -> Layer:
    """The bnfast layer equivalent to a PyTorch normalization module
    (BatchNorm1d/2d/3d, LayerNorm, GroupNorm, RMSNorm, InstanceNorm1d/2d/3d,
    or a subclass of one), with a copy of its state.

    Momentum converts to bnfast's convention (1 - torch's; None stays the
    cumulative average for batch norm, no update for instance norm) and
    batch and instance norm average the unbiased variance, as PyTorch
    does.  A module made with ``bias=False`` gives a layer without
    beta (``bias=False``).  A subclass converts as the torch class it
    derives from; if it overrides ``forward``, a UserWarning says that
    what it computes may differ.  torch is not imported: the module is
    read through its attributes and ``state_dict()``.

    Parameters
    ----------
    module : torch.nn.Module
        A ``torch.nn`` BatchNorm1d/2d/3d, LayerNorm, GroupNorm, RMSNorm or
        InstanceNorm1d/2d/3d (affine or not, with or without running
        statistics, ``bias=False`` too; float32, float64, float16 or
        bfloat16, the last through its bits, which needs ml_dtypes), or a
        subclass of one.

    Returns
    -------
    BatchNorm, LayerNorm, RMSNorm, GroupNorm or InstanceNorm
        A new layer with a copy of the module's parameters, running
        statistics and hyperparameters, in the module's dtype.

    Raises
    ------
    TypeError
        For a module that is none of these classes.
    """
    base = _torch_class(module)
    kind = base.__name__
    if getattr(type(module), "forward", None) is not getattr(
        base, "forward", None
    ):
        warnings.warn(
            f"{type(module).__name__} overrides forward; from_torch converts "
            f"it as a torch.nn.{kind}, which may not compute the same",
            UserWarning,
            stacklevel=2,
        )
    state = {k: _as_numpy(v) for k, v in module.state_dict().items()}
    dtype = next(
        (v.dtype for v in state.values() if _is_float_dtype(v.dtype)),
        np.dtype(np.float32),
    )
    affine = bool(
        getattr(
            module,
            "elementwise_affine"
            if kind in ("LayerNorm", "RMSNorm")
            else "affine",
        )
    )
    # torch >= 2.1: bias=False leaves module.bias None; without affine there
    # is no bias either way
    bias = not affine or getattr(module, "bias", None) is not None
    layer: Layer
    if kind.startswith("BatchNorm"):
        m = module.momentum
        layer = BatchNorm(
            module.num_features,
            eps=module.eps,
            momentum=None if m is None else 1.0 - m,
            affine=affine,
            bias=bias,
            track_running_stats=bool(module.track_running_stats),
            unbiased_running_var=True,
            dtype=dtype,
        )
    elif kind == "RMSNorm":
        layer = RMSNorm(
            tuple(module.normalized_shape),
            eps=module.eps,
            elementwise_affine=affine,
            dtype=dtype,
        )
    elif kind.startswith("InstanceNorm"):
        m = module.momentum
        layer = InstanceNorm(
            module.num_features,
            eps=module.eps,
            momentum=None if m is None else 1.0 - m,
            affine=affine,
            track_running_stats=bool(module.track_running_stats),
            unbiased_running_var=bool(module.track_running_stats),
            dtype=dtype,
        )
    elif kind == "LayerNorm":
        layer = LayerNorm(
            tuple(module.normalized_shape),
            eps=module.eps,
            elementwise_affine=affine,
            bias=bias,
            dtype=dtype,
        )
    else:
        layer = GroupNorm(
            module.num_groups,
            module.num_channels,
            eps=module.eps,
            affine=affine,
            bias=bias,
            dtype=dtype,
        )
    layer.load_state_dict(state)
    return layer


def _check_bn(bn: object) -> None:
    if not isinstance(bn, BatchNorm):
        raise TypeError(
            f"bn must be a bnfast.BatchNorm, got {type(bn).__name__}"
        )


def fold_linear_batchnorm(
    W: ArrayLike,
    b: ArrayLike,
    bn: BatchNorm,
    *,
    drop_activation: bool = False,
) -> tuple[F64Array, F64Array]:
    """Fold a batch norm that follows a linear layer, ``bn(x @ W + b)`` in
    'test' mode, into one linear layer ``x @ W2 + b2``.

    W has shape (D_in, D_out) (NumPy's ``x @ W``; a torch Linear's weight
    is its transpose), b (D_out,), bn a :class:`BatchNorm` with D_out
    features.  Returns (W2, b2) in float64.

    A batch norm with ``activation='relu'`` raises a ValueError (the ReLU
    is not affine), unless ``drop_activation=True``: then
    ``np.maximum(x @ W2 + b2, 0)`` is the batch norm's 'test' mode.

    Parameters
    ----------
    W : array_like
        The linear layer's weight, (D_in, D_out).
    b : array_like
        Its bias, (D_out,).
    bn : BatchNorm
        The batch norm that follows it, D_out features.
    drop_activation : bool, keyword-only
        Fold the affine part of a batch norm with a fused ReLU.

    Returns
    -------
    W2 : ndarray
        float64, (D_in, D_out).
    b2 : ndarray
        float64, (D_out,).

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> rng = np.random.default_rng(0)
    >>> W, b = rng.standard_normal((5, 3)), rng.standard_normal(3)
    >>> bn = bnfast.BatchNorm(3, dtype=np.float64)
    >>> _ = bn(rng.standard_normal((10, 3)))    # some running statistics
    >>> W2, b2 = bnfast.fold_linear_batchnorm(W, b, bn)
    >>> x = rng.standard_normal((4, 5))
    >>> np.allclose(x @ W2 + b2, bn(x @ W + b, mode="test"))
    True
    """
    _check_bn(bn)
    scale, shift = bn.fold(drop_activation=drop_activation)
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if W.ndim != 2 or W.shape[1] != scale.shape[0] or b.shape != scale.shape:
        raise ValueError(
            f"W must be (D_in, {scale.shape[0]}) and b ({scale.shape[0]},) "
            f"to match the batch norm, got {W.shape} and {b.shape}"
        )
    return W * scale, (b - bn.running_mean) * scale + bn.beta


def fold_conv_batchnorm(
    W: ArrayLike,
    b: ArrayLike | None,
    bn: BatchNorm,
    *,
    drop_activation: bool = False,
) -> tuple[F64Array, F64Array]:
    """Fold a batch norm that follows a convolution, ``bn(conv(x, W) + b)``
    in 'test' mode, into one convolution ``conv(x, W2) + b2``.

    W has PyTorch's layout, ``(C_out, C_in / groups, *kernel)``, for any
    number of spatial dimensions (Conv1d, Conv2d, Conv3d; not a transposed
    convolution, whose output channels are W's second axis); b (C_out,) or
    None (a convolution without bias); bn a :class:`BatchNorm` with C_out
    channels.  Returns (W2, b2) in float64: output channel o of W scaled by
    ``gamma[o] / sqrt(running_var[o] + eps)``, each weight rounded once.

    A batch norm with ``activation='relu'`` raises a ValueError (the ReLU
    is not affine), unless ``drop_activation=True``: then
    ``np.maximum(conv(x, W2) + b2, 0)`` is the batch norm's 'test' mode.

    Parameters
    ----------
    W : array_like
        The convolution's weight, ``(C_out, C_in / groups, *kernel)``.
    b : array_like or None
        Its bias, (C_out,), or None for a convolution without bias.
    bn : BatchNorm
        The batch norm that follows it, C_out channels.
    drop_activation : bool, keyword-only
        Fold the affine part of a batch norm with a fused ReLU.

    Returns
    -------
    W2 : ndarray
        float64, W's shape.
    b2 : ndarray
        float64, (C_out,).

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> rng = np.random.default_rng(0)
    >>> W, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    >>> bn = bnfast.BatchNorm(4, axis=1, dtype=np.float64)
    >>> _ = bn(rng.standard_normal((8, 4, 5, 5)))   # some running statistics
    >>> W2, b2 = bnfast.fold_conv_batchnorm(W, b, bn)
    >>> W2.shape, b2.shape
    ((4, 3, 3, 3), (4,))
    """
    _check_bn(bn)
    scale, shift = bn.fold(drop_activation=drop_activation)
    c = scale.shape[0]
    W = np.asarray(W, dtype=np.float64)
    b = np.zeros(c) if b is None else np.asarray(b, dtype=np.float64)
    if W.ndim < 3 or W.shape[0] != c or b.shape != (c,):
        raise ValueError(
            f"W must be ({c}, C_in, *kernel) and b ({c},) or None to match "
            f"the batch norm, got {W.shape} and {b.shape}"
        )
    return (W * scale.reshape((c,) + (1,) * (W.ndim - 1)), b * scale + shift)


def fold_batchnorm_linear(
    bn: BatchNorm, W: ArrayLike, b: ArrayLike
) -> tuple[F64Array, F64Array]:
    """Fold a batch norm that precedes a linear layer, ``bn(x) @ W + b`` in
    'test' mode, into one linear layer ``x @ W2 + b2``.

    bn a :class:`BatchNorm` with D_in features (channel axis last), W
    (D_in, D_out), b (D_out,).  Returns (W2, b2) in float64.  A batch norm
    with ``activation='relu'`` raises a ValueError: the ReLU between it and
    the linear layer cannot be folded into an affine map.

    Parameters
    ----------
    bn : BatchNorm
        The batch norm that precedes the linear layer, D_in features.
    W : array_like
        The linear layer's weight, (D_in, D_out).
    b : array_like
        Its bias, (D_out,).

    Returns
    -------
    W2 : ndarray
        float64, (D_in, D_out).
    b2 : ndarray
        float64, (D_out,).

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> rng = np.random.default_rng(0)
    >>> bn = bnfast.BatchNorm(5, dtype=np.float64)
    >>> _ = bn(rng.standard_normal((10, 5)) * 3 + 1)
    >>> W, b = rng.standard_normal((5, 2)), rng.standard_normal(2)
    >>> W2, b2 = bnfast.fold_batchnorm_linear(bn, W, b)
    >>> x = rng.standard_normal((4, 5))
    >>> np.allclose(x @ W2 + b2, bn(x, mode="test") @ W + b)
    True
    """
    _check_bn(bn)
    if bn.activation is not None:
        raise ValueError(
            f"the batch norm has activation={bn.activation!r}: the ReLU "
            "between it and the linear layer cannot be folded into an "
            "affine map"
        )
    scale, shift = bn.fold()
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != scale.shape[0] or b.shape != W.shape[1:]:
        raise ValueError(
            f"W must be ({scale.shape[0]}, D_out) and b (D_out,) to match "
            f"the batch norm, got {W.shape} and {b.shape}"
        )
    return scale[:, None] * W, shift @ W + b
