"""Fast batch normalization: the signatures and results of bnfast.reference,
computed by the C kernels in csrc/ (see bnfast._kernels).

Dtype policy (shared with the reference): ``out`` and ``dx`` have x's dtype
(float32 or float64, computed natively with double accumulation); gamma,
beta and the running statistics may be either float dtype; ``dgamma`` and
``dbeta`` have gamma's dtype and shape; running statistics keep their own
dtype and shape (x's dtype and shape (D,) when absent).
"""
import numpy as np

from bnfast import _checks, _kernels

__all__ = [
    "BatchNormCache",
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_alt",
]


class BatchNormCache:
    """What batchnorm_forward keeps for the backward pass.

    References to x (as an (N, D) view, or the copy that was normalized) and
    to gamma, plus the per-feature batch mean and 1/sqrt(var + eps): O(D)
    memory beside x, no copy of x_hat (the backward recomputes it).

    Do not modify x between the forward and the backward pass: the backward
    reads it again.
    """

    __slots__ = ("x", "gamma", "mean", "invstd", "x_shape", "gamma_dtype",
                 "gamma_shape")

    def __init__(self, x, gamma, mean, invstd, x_shape, gamma_dtype,
                 gamma_shape):
        self.x = x
        self.gamma = gamma
        self.mean = mean
        self.invstd = invstd
        self.x_shape = x_shape
        self.gamma_dtype = gamma_dtype
        self.gamma_shape = gamma_shape

    def __repr__(self):
        return (f"<BatchNormCache x{self.x_shape} {self.x.dtype}, "
                f"{self.mean.shape[0]} features>")


def batchnorm_forward(x, gamma, beta, bn_param):
    """Forward pass for batch normalization.

    Same signature and results as ``bnfast.reference.batchnorm_forward``.
    In 'train' mode the per-feature mean and biased variance of the batch are
    computed in one fused pass (double accumulation), x is normalized with
    them, and the running statistics are updated as
    ``running = momentum * running + (1 - momentum) * batch``.  In 'test'
    mode x is normalized with the running statistics.

    Parameters
    ----------
    x : array_like of float32 or float64, shape (N, D) or (N, d1, ..., dk)
        The batch.  More than two dimensions are normalized per feature of
        ``x.reshape(N, -1)``.  Read in place when that (N, D) view has
        unit-stride columns (C order, and row-strided views such as
        ``x[::2]``, ``x[::-1]`` or broadcast rows); otherwise (Fortran order,
        column-strided views, unaligned or byte-swapped data) it is first
        copied to a C-contiguous array.
    gamma, beta : array_like of float32 or float64, shape (D,) or x.shape[1:]
        Scale and shift.
    bn_param : dict
        'mode': 'train' or 'test' (required); 'eps' (default 1e-5, >= 0);
        'momentum' (default 0.9, in [0, 1]); 'running_mean', 'running_var'
        (zeros of shape (D,) in x's dtype when absent).  On return it holds
        the running statistics as new arrays (updated in 'train' mode), as
        the seeds do; the arrays passed in are never written.

    Returns
    -------
    out : ndarray, x's shape and dtype
    cache : BatchNormCache in 'train' mode, for batchnorm_backward; None in
        'test' mode.

    Raises
    ------
    TypeError
        A non-float32/float64 array, or bn_param not a dict.
    KeyError
        bn_param has no 'mode'.
    ValueError
        An unknown mode, x of fewer than 2 dimensions, an empty batch, zero
        features, gamma/beta/running statistics of the wrong shape, eps < 0
        or momentum outside [0, 1].  Nothing is modified when it raises.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> bn_param = {"mode": "train"}
    >>> out, cache = bnfast.batchnorm_forward(x, np.ones(2), np.zeros(2), bn_param)
    >>> np.round(out, 4)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> bn_param["running_mean"]
    array([0.2, 0.4])
    """
    mode = _checks.mode(bn_param)
    x, x2 = _checks.batch(x)
    fshape = x.shape[1:]
    g, g64 = _checks.per_feature(gamma, "gamma", fshape)
    _, b64 = _checks.per_feature(beta, "beta", fshape)
    eps = _checks.real_in(bn_param.get("eps", 1e-5), "bn_param['eps']", 0.0)
    momentum = _checks.real_in(bn_param.get("momentum", 0.9),
                               "bn_param['momentum']", 0.0, 1.0)
    d = x2.shape[1]
    running = []
    for key in ("running_mean", "running_var"):
        value = bn_param.get(key)
        if value is None:
            value = np.zeros(d, dtype=x.dtype)
        running.append(_checks.per_feature(value, f"bn_param[{key!r}]", fshape))
    (rm, rm64), (rv, rv64) = running

    x2 = _checks.panel(x2)
    out = np.empty(x2.shape, dtype=x.dtype)
    if mode == "train":
        mean = np.empty(d)
        invstd = np.empty(d)
        var = np.empty(d)
        _kernels.bn_forward_train(x2, g64, b64, eps, out, mean, invstd, var)
        cache = BatchNormCache(x2, g64, mean, invstd, x.shape, g.dtype,
                               g.shape)
        keep = 1.0 - momentum
        rm = (momentum * rm64 + keep * mean).astype(rm.dtype).reshape(rm.shape)
        rv = (momentum * rv64 + keep * var).astype(rv.dtype).reshape(rv.shape)
    else:
        _kernels.bn_forward_test(x2, g64, b64, rm64, rv64, eps, out)
        cache = None
    bn_param["running_mean"] = rm
    bn_param["running_var"] = rv
    return out.reshape(x.shape), cache


def batchnorm_backward(dout, cache):
    """Backward pass for batch normalization.

    Same signature and results as ``bnfast.reference.batchnorm_backward``
    (and ``batchnorm_backward_alt``): the simplified single formula
    ``dx = gamma/std/N * (N*dout - sum(dout) - x_hat*sum(dout*x_hat))``,
    computed in one reduce pass over (dout, x) and one apply pass, x_hat
    recomputed on the fly.

    Parameters
    ----------
    dout : array_like of float32 or float64, x's shape
        Upstream gradient.  Converted to x's dtype if it differs; copied if
        its rows are not unit-stride.
    cache : BatchNormCache
        From ``batchnorm_forward`` in 'train' mode.

    Returns
    -------
    dx : ndarray, x's shape and dtype
    dgamma, dbeta : ndarray, gamma's shape and dtype

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0], [2.0, 1.0]])
    >>> _, cache = bnfast.batchnorm_forward(x, np.ones(2), np.zeros(2),
    ...                                     {"mode": "train"})
    >>> dx, dgamma, dbeta = bnfast.batchnorm_backward(np.ones((3, 2)), cache)
    >>> dbeta
    array([3., 3.])
    >>> print(np.abs(dx).max() < 1e-12)
    True
    """
    if not isinstance(cache, BatchNormCache):
        raise TypeError(
            "cache must be the cache returned by bnfast.batchnorm_forward in "
            f"'train' mode, got {type(cache).__name__}")
    dout = _checks.float_array(dout, "dout")
    if dout.shape != cache.x_shape:
        raise ValueError(
            f"dout must have the shape of x {cache.x_shape}, got {dout.shape}")
    x = cache.x
    dy = _checks.panel(dout.astype(x.dtype, copy=False).reshape(x.shape))
    d = x.shape[1]
    dx = np.empty(x.shape, dtype=x.dtype)
    dgamma = np.empty(d)
    dbeta = np.empty(d)
    _kernels.bn_backward(dy, x, cache.mean, cache.invstd, cache.gamma, dx,
                         dgamma, dbeta)
    gdt, gshape = cache.gamma_dtype, cache.gamma_shape
    return (dx.reshape(cache.x_shape),
            dgamma.astype(gdt, copy=False).reshape(gshape),
            dbeta.astype(gdt, copy=False).reshape(gshape))


batchnorm_backward_alt = batchnorm_backward
