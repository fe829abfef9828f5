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
import numbers

import numpy as np

from bnfast import functional

__all__ = [
    "BatchNorm",
    "LayerNorm",
    "GroupNorm",
    "from_torch",
    "fold_linear_batchnorm",
    "fold_batchnorm_linear",
]

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _init(init, shape, dtype, name):
    """A parameter array from an initializer: 'ones', 'zeros', a callable
    (shape, dtype) -> array, or an array of the shape."""
    if isinstance(init, str):
        if init not in ("ones", "zeros"):
            raise ValueError(
                f"{name} initializer must be 'ones', 'zeros', a callable or "
                f"an array, got {init!r}")
        return (np.ones if init == "ones" else np.zeros)(shape, dtype)
    value = init(shape, dtype) if callable(init) else init
    arr = np.array(value, dtype=dtype, copy=True)
    if arr.shape != shape:
        raise ValueError(
            f"{name} initializer must give shape {shape}, got {arr.shape}")
    return arr


def _as_numpy(value):
    """A NumPy array from an array-like or a PyTorch tensor (duck-typed:
    detached and moved to the CPU first)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class _Norm:
    """Shared machinery: parameters, gradients, mode, state dicts."""

    def __init__(self, shape, affine, dtype, gamma_init, beta_init):
        self.dtype = np.dtype(dtype)
        if self.dtype not in _DTYPES:
            raise TypeError(
                f"dtype must be float32 or float64, got {self.dtype}")
        self.affine = bool(affine)
        self.params = {}
        self.grads = {}
        if self.affine:
            self.params["gamma"] = _init(gamma_init, shape, self.dtype,
                                         "gamma")
            self.params["beta"] = _init(beta_init, shape, self.dtype, "beta")
        self._ones = np.ones(shape, self.dtype)
        self._zeros = np.zeros(shape, self.dtype)
        self._cache = None
        self._backward = None

    @property
    def gamma(self):
        return self.params.get("gamma", self._ones)

    @property
    def beta(self):
        return self.params.get("beta", self._zeros)

    def __call__(self, x, mode="train"):
        return self.forward(x, mode)

    def _check_mode(self, mode):
        if mode not in ("train", "test"):
            raise ValueError(
                f"mode must be one of ('train', 'test'), got {mode!r}")

    def _check_channels(self, x, axis, count):
        """x as an array, checked to have ``count`` channels along axis."""
        x = np.asarray(x)
        if x.ndim < 2 or not -x.ndim <= axis < x.ndim:
            raise ValueError(
                f"x must have a batch axis and a channel axis {axis}, got "
                f"shape {x.shape}")
        if x.shape[axis] != count:
            raise ValueError(
                f"x has {x.shape[axis]} channels along axis {axis}, "
                f"{type(self).__name__} expects {count}")
        return x

    def backward(self, dout):
        """dx for the last forward pass in 'train' mode (or with batch
        statistics); stores dgamma and dbeta in ``grads`` (affine layers)
        and as attributes."""
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward needs a forward pass in "
                "'train' mode (or with batch statistics) first")
        dx, dgamma, dbeta = self._backward(dout, self._cache)
        self.dgamma, self.dbeta = dgamma, dbeta
        if self.affine:
            self.grads["gamma"] = dgamma
            self.grads["beta"] = dbeta
        return dx

    # PyTorch-named state --------------------------------------------------

    def _state(self):
        """{torch name: live array}."""
        state = {}
        if self.affine:
            state["weight"] = self.params["gamma"]
            state["bias"] = self.params["beta"]
        return state

    def state_dict(self):
        """The layer's state under PyTorch's names, as NumPy copies."""
        return {k: np.array(v, copy=True) for k, v in self._state().items()}

    def load_state_dict(self, state, strict=True):
        """Load a state dict (NumPy arrays or PyTorch tensors) into the
        live arrays, in place.  With ``strict`` (default) the keys must
        match ``state_dict()``'s exactly.  Nothing is modified on error."""
        own = self._state()
        keys = set(state)
        if strict and keys != set(own):
            missing = sorted(set(own) - keys)
            unexpected = sorted(keys - set(own))
            raise KeyError(
                f"state dict keys do not match {type(self).__name__}: "
                f"missing {missing}, unexpected {unexpected}")
        values = {}
        for name in keys & set(own):
            value = _as_numpy(state[name])
            target = own[name]
            if np.ndim(target) == 0:
                if np.ndim(value) != 0:
                    raise ValueError(f"{name} must be a scalar, got shape "
                                     f"{np.shape(value)}")
            elif value.shape != target.shape:
                raise ValueError(
                    f"{name} must have shape {target.shape}, got "
                    f"{value.shape}")
            values[name] = value
        for name, value in values.items():
            self._load(name, value)

    def _load(self, name, value):
        self._state()[name][...] = value

    @classmethod
    def from_torch(cls, module):
        """The bnfast layer equivalent to a torch.nn.BatchNorm1d/2d/3d,
        LayerNorm or GroupNorm module (whatever class this is called on):
        same hyper-parameters (bnfast momentum = 1 - torch momentum, the
        unbiased running variance) and a copy of its state."""
        return from_torch(module)


class BatchNorm(_Norm):
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
        channels-last.  Default 1.
    affine : bool
        Learn gamma and beta.  Default True.
    track_running_stats : bool
        Keep running statistics and use them in 'test' mode; False uses the
        batch statistics in both modes.  Default True.
    unbiased_running_var : bool
        Average the unbiased batch variance into running_var, as PyTorch
        does.  Default False (the biased one, as cs231n).
    dtype : float32 or float64
        Of the parameters and running statistics.  Default float32.
    gamma_init, beta_init : 'ones', 'zeros', callable(shape, dtype) or array
        Defaults 'ones' and 'zeros'.
    activation : None or 'relu'
        'relu' fuses a ReLU into the layer (same pass over memory, forward
        and backward).  Default None.

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

    def __init__(self, num_features, *, eps=1e-5, momentum=0.9, axis=1,
                 affine=True, track_running_stats=True,
                 unbiased_running_var=False, dtype=np.float32,
                 gamma_init="ones", beta_init="zeros", activation=None):
        if activation not in (None, "relu"):
            raise ValueError(
                f"activation must be one of (None, 'relu'), got {activation!r}")
        if (not isinstance(num_features, numbers.Integral)
                or num_features < 1):
            raise ValueError(
                f"num_features must be a positive int, got {num_features!r}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"momentum must be in [0, 1] or None, got {momentum!r}")
        super().__init__((int(num_features),), affine, dtype, gamma_init,
                         beta_init)
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = momentum
        self.axis = axis
        self.track_running_stats = bool(track_running_stats)
        self.unbiased_running_var = bool(unbiased_running_var)
        self.activation = activation
        self._backward = functional.spatial_batchnorm_backward
        if self.track_running_stats:
            self.running_mean = np.zeros(self.num_features, self.dtype)
            self.running_var = np.ones(self.num_features, self.dtype)
            self.num_batches_tracked = 0
        else:
            self.running_mean = self.running_var = None

    def forward(self, x, mode="train"):
        """Normalize x: batch statistics in 'train' mode (updating the
        running statistics), running statistics in 'test' mode."""
        self._check_mode(mode)
        x = self._check_channels(x, self.axis, self.num_features)
        use_batch = mode == "train" or not self.track_running_stats
        momentum = self.momentum
        if self.track_running_stats and mode == "train" and momentum is None:
            momentum = 1.0 - 1.0 / (self.num_batches_tracked + 1)
        bn_param = {"mode": "train" if use_batch else "test", "eps": self.eps,
                    "momentum": 0.0 if momentum is None else momentum,
                    "unbiased_running_var": self.unbiased_running_var}
        if self.track_running_stats:
            bn_param["running_mean"] = self.running_mean
            bn_param["running_var"] = self.running_var
        out, self._cache = self._normalize(x, bn_param)
        if self.track_running_stats and mode == "train":
            self.running_mean[...] = bn_param["running_mean"]
            self.running_var[...] = bn_param["running_var"]
            self.num_batches_tracked += 1
        return out

    def _normalize(self, x, bn_param):
        """(out, cache) of x with the given bn_param (a hook for
        bnfast.distributed.SyncBatchNorm)."""
        return functional.spatial_batchnorm_forward(
            x, self.gamma, self.beta, bn_param, axis=self.axis,
            activation=self.activation)

    def fold(self):
        """Per-channel (scale, shift) with ``x * scale + shift`` equal to
        'test' mode (broadcast along the channel axis), in float64."""
        if not self.track_running_stats:
            raise ValueError("fold needs running statistics "
                             "(track_running_stats=True)")
        scale = (self.gamma.astype(np.float64)
                 / np.sqrt(self.running_var.astype(np.float64) + self.eps))
        shift = (self.beta.astype(np.float64)
                 - self.running_mean.astype(np.float64) * scale)
        return scale, shift

    def _state(self):
        state = super()._state()
        if self.track_running_stats:
            state["running_mean"] = self.running_mean
            state["running_var"] = self.running_var
            state["num_batches_tracked"] = np.asarray(
                self.num_batches_tracked, dtype=np.int64)
        return state

    def _load(self, name, value):
        if name == "num_batches_tracked":
            self.num_batches_tracked = int(value)
        else:
            super()._load(name, value)


class LayerNorm(_Norm):
    """Layer normalization: statistics per sample over the trailing
    ``normalized_shape`` axes; gamma and beta of that shape.

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

    def __init__(self, normalized_shape, *, eps=1e-5, elementwise_affine=True,
                 dtype=np.float32, gamma_init="ones", beta_init="zeros"):
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(d) for d in normalized_shape)
        super().__init__(self.normalized_shape, elementwise_affine, dtype,
                         gamma_init, beta_init)
        self.eps = float(eps)
        self._backward = self._ln_backward

    def forward(self, x, mode="train"):
        """Normalize x (the same in both modes)."""
        self._check_mode(mode)
        x = np.asarray(x)
        k = len(self.normalized_shape)
        if x.shape[x.ndim - k:] != self.normalized_shape or x.ndim <= k:
            raise ValueError(
                f"x must end with the normalized shape "
                f"{self.normalized_shape} after a batch axis, got {x.shape}")
        rows = x.reshape((-1,) + self.normalized_shape)
        out, self._cache = functional.layernorm_forward(
            rows, self.gamma, self.beta, {"eps": self.eps})
        self._shape = x.shape
        return out.reshape(x.shape)

    def _ln_backward(self, dout, cache):
        dout = np.asarray(dout)
        if dout.shape != self._shape:
            raise ValueError(
                f"dout must have the shape of x {self._shape}, got "
                f"{dout.shape}")
        dx, dgamma, dbeta = functional.layernorm_backward(
            dout.reshape(cache.shape), cache)
        return dx.reshape(self._shape), dgamma, dbeta


class GroupNorm(_Norm):
    """Group normalization: the channels (axis 1) in ``num_groups`` groups,
    statistics per sample and group; gamma and beta per channel.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> gn = bnfast.GroupNorm(2, 4, dtype=np.float64)
    >>> x = np.random.default_rng(0).standard_normal((3, 4, 5, 5))
    >>> out = gn(x)
    >>> dx = gn.backward(np.ones_like(out))
    """

    def __init__(self, num_groups, num_channels, *, eps=1e-5, affine=True,
                 dtype=np.float32, gamma_init="ones", beta_init="zeros"):
        if (not isinstance(num_channels, numbers.Integral) or num_channels < 1
                or not isinstance(num_groups, numbers.Integral)
                or num_groups < 1 or num_channels % num_groups):
            raise ValueError(
                "num_groups must divide num_channels (positive ints), got "
                f"{num_groups!r} and {num_channels!r}")
        super().__init__((int(num_channels),), affine, dtype, gamma_init,
                         beta_init)
        self.num_groups = int(num_groups)
        self.num_channels = int(num_channels)
        self.eps = float(eps)
        self._backward = functional.spatial_groupnorm_backward

    def forward(self, x, mode="train"):
        """Normalize x (the same in both modes)."""
        self._check_mode(mode)
        x = self._check_channels(x, 1, self.num_channels)
        out, self._cache = functional.spatial_groupnorm_forward(
            x, self.gamma, self.beta, self.num_groups, {"eps": self.eps})
        return out


def from_torch(module):
    """The bnfast layer equivalent to a PyTorch normalization module
    (BatchNorm1d/2d/3d, LayerNorm, GroupNorm), with a copy of its state.

    Momentum converts to bnfast's convention (1 - torch's; None stays the
    cumulative average) and batch norm averages the unbiased variance, as
    PyTorch does.  torch is not imported: the module is read through its
    attributes and ``state_dict()``.
    """
    kind = type(module).__name__
    state = {k: _as_numpy(v) for k, v in module.state_dict().items()}
    dtype = next((v.dtype for v in state.values() if v.dtype.kind == "f"),
                 np.dtype(np.float32))
    if kind in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"):
        m = module.momentum
        layer = BatchNorm(module.num_features, eps=module.eps,
                          momentum=None if m is None else 1.0 - m,
                          affine=module.affine,
                          track_running_stats=module.track_running_stats,
                          unbiased_running_var=True, dtype=dtype)
    elif kind == "LayerNorm":
        layer = LayerNorm(module.normalized_shape, eps=module.eps,
                          elementwise_affine=module.elementwise_affine,
                          dtype=dtype)
    elif kind == "GroupNorm":
        layer = GroupNorm(module.num_groups, module.num_channels,
                          eps=module.eps, affine=module.affine, dtype=dtype)
    else:
        raise TypeError(
            "from_torch takes a torch.nn BatchNorm1d/2d/3d, LayerNorm or "
            f"GroupNorm module, got {kind}")
    layer.load_state_dict(state)
    return layer


def fold_linear_batchnorm(W, b, bn):
    """Fold a batch norm that follows a linear layer, ``bn(x @ W + b)`` in
    'test' mode, into one linear layer ``x @ W2 + b2``.

    W has shape (D_in, D_out) (NumPy's ``x @ W``; a torch Linear's weight
    is its transpose), b (D_out,), bn a :class:`BatchNorm` with D_out
    features.  Returns (W2, b2) in float64.

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
    scale, shift = bn.fold()
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if W.ndim != 2 or W.shape[1] != scale.shape[0] or b.shape != scale.shape:
        raise ValueError(
            f"W must be (D_in, {scale.shape[0]}) and b ({scale.shape[0]},) "
            f"to match the batch norm, got {W.shape} and {b.shape}")
    return W * scale, (b - bn.running_mean) * scale + bn.beta


def fold_batchnorm_linear(bn, W, b):
    """Fold a batch norm that precedes a linear layer, ``bn(x) @ W + b`` in
    'test' mode, into one linear layer ``x @ W2 + b2``.

    bn a :class:`BatchNorm` with D_in features (channel axis last), W
    (D_in, D_out), b (D_out,).  Returns (W2, b2) in float64.

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
    scale, shift = bn.fold()
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != scale.shape[0] or b.shape != W.shape[1:]:
        raise ValueError(
            f"W must be ({scale.shape[0]}, D_out) and b (D_out,) to match "
            f"the batch norm, got {W.shape} and {b.shape}")
    return scale[:, None] * W, shift @ W + b
