"""Fast batch normalization: the signatures and results of bnfast.reference,
computed by the C kernels in csrc/ (see bnfast._kernels).

Dtype policy (shared with the reference): ``out`` and ``dx`` have x's dtype
(float32 or float64, computed natively with double accumulation); gamma,
beta and the running statistics may be either float dtype; ``dgamma`` and
``dbeta`` have gamma's dtype and shape; running statistics keep their own
dtype and shape (x's dtype and shape (D,) when absent).
"""
import numpy as np

from bnfast import _checks, _kernels, _layout

__all__ = [
    "BatchNormCache",
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_alt",
    "spatial_batchnorm_forward",
    "spatial_batchnorm_backward",
    "LayerNormCache",
    "layernorm_forward",
    "layernorm_backward",
    "GroupNormCache",
    "spatial_groupnorm_forward",
    "spatial_groupnorm_backward",
]


class _Cache:
    """Base of the caches the forward passes return: references to the
    normalized x and to gamma (flattened, float32 or float64), per-channel
    or per-sample statistics, and what the gradients' shapes and dtypes
    need.  The backward reads x and gamma again: do not modify them in
    between (as with the reference's cache)."""

    __slots__ = ()

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields[name])

    def __repr__(self):
        return (f"<{type(self).__name__} x{self.shape} {self.x.dtype}, "
                f"{self.mean.shape[0]} statistics>")


def _dout(dout, cache, cache_type, forward_name, out):
    """Validate dout against a cache of cache_type, and the caller's out
    for dx (None: a new array); dout as an array of x's dtype and internal
    shape."""
    if not isinstance(cache, cache_type):
        raise TypeError(
            f"cache must be the cache returned by {forward_name}, "
            f"got {type(cache).__name__}")
    dout = _checks.float_array(dout, "dout")
    if dout.shape != cache.shape:
        raise ValueError(
            f"dout must have the shape of x {cache.shape}, got {dout.shape}")
    if out is not None:
        _checks.out_array(out, cache.shape, cache.x.dtype, (
            ("dout", dout), ("the cached x", cache.x),
            ("the cached gamma", cache.gamma)))
    return dout.astype(cache.x.dtype, copy=False).reshape(cache.x.shape)


def _grads(dx, dgamma, dbeta, cache, out):
    """The gradients in the caller's shapes and dtypes: dx as x (into out
    when given), dgamma and dbeta as gamma."""
    gdt, gshape = cache.gamma_dtype, cache.gamma_shape
    return (_result(dx, out, cache.shape),
            dgamma.astype(gdt, copy=False).reshape(gshape),
            dbeta.astype(gdt, copy=False).reshape(gshape))


class BatchNormCache(_Cache):
    """What the batch norm forward passes keep for the backward pass.

    References to x (the array that was normalized: the caller's, or a
    view or copy of it), its panel view and to gamma, plus the per-channel
    batch mean and 1/sqrt(var + eps): O(channels) memory beside x, no copy
    of x_hat (the backward recomputes it).
    """

    __slots__ = ("x", "panel", "axis", "gamma", "beta", "relu", "mean",
                 "invstd", "shape", "gamma_dtype", "gamma_shape")

    def __init__(self, x, panel, axis, gamma, beta, relu, mean, invstd,
                 shape, gamma_dtype, gamma_shape):
        # spelled out, not the base's loop: this is on every training call
        self.x, self.panel, self.axis = x, panel, axis
        self.gamma, self.beta, self.relu = gamma, beta, relu
        self.mean, self.invstd, self.shape = mean, invstd, shape
        self.gamma_dtype, self.gamma_shape = gamma_dtype, gamma_shape


def _bn_forward(x, axis, shape, gamma, beta, bn_param, pshape, activation,
                out, sync=None):
    """Batch norm of x with channels along axis; shape: the caller's shape
    of x (the output's); pshape: the accepted per-channel shapes besides
    (C,).  Validates everything before it writes anything.  sync: None, or
    in 'train' mode the statistics' merge across processes
    (bnfast.distributed); x may then be empty."""
    mode = _checks.mode(bn_param)
    relu = _checks.activation(activation)
    g, gflat = _checks.per_feature(gamma, "gamma", pshape)
    _, bflat = _checks.per_feature(beta, "beta", pshape)
    eps = _checks.real_in(bn_param.get("eps", 1e-5), "bn_param['eps']", 0.0)
    momentum = _checks.real_in(bn_param.get("momentum", 0.9),
                               "bn_param['momentum']", 0.0, 1.0)
    c = x.shape[axis]
    running = []
    for key in ("running_mean", "running_var"):
        value = bn_param.get(key)
        if value is None:
            value = np.zeros(c, dtype=x.dtype)
        running.append(_checks.per_feature(value, f"bn_param[{key!r}]",
                                           pshape))
    (rm, rmflat), (rv, rvflat) = running
    if out is not None:
        _checks.out_array(out, shape, x.dtype, (
            ("x", x), ("gamma", g), ("beta", bflat),
            ("bn_param['running_mean']", rm),
            ("bn_param['running_var']", rv)))

    if sync is not None and mode == "train":
        rm, rv, cache, res = _sync_forward(
            x, axis, shape, g, gflat, bflat, eps, momentum, rm, rmflat, rv,
            rvflat, bn_param, relu, out, sync)
        bn_param["running_mean"] = rm
        bn_param["running_var"] = rv
        return _result(res, out, shape), cache
    if x.size == 0:  # an empty shard in 'test' mode: nothing to compute
        return (np.empty(shape, x.dtype) if out is None else out), None
    x, xp = _layout.panel_or_copy(x, axis)
    res, op = _into(out, x, lambda o: _layout.panel_as(o, x, axis),
                    lambda: _layout.like(x, axis))
    if mode == "train":
        factor = _unbiased_factor(bn_param, xp.shape[0] * xp.shape[2])
        mean = np.empty(c)
        invstd = np.empty(c)
        rm_new = np.empty(rm.shape, rm.dtype)
        rv_new = np.empty(rv.shape, rv.dtype)
        _kernels.bn_forward_train(xp, gflat, bflat, eps, op, mean, invstd,
                                  relu, rmflat, rvflat, rm_new, rv_new,
                                  momentum, factor)
        cache = BatchNormCache(x, xp, axis, gflat, bflat, relu, mean, invstd,
                               shape, g.dtype, g.shape)
        rm, rv = rm_new, rv_new
    else:
        _kernels.bn_forward_test(xp, gflat, bflat, rmflat, rvflat, eps, op,
                                 relu)
        cache = None
    bn_param["running_mean"] = rm
    bn_param["running_var"] = rv
    return _result(res, out, shape), cache


class SyncBatchNormCache(BatchNormCache):
    """BatchNormCache of a synchronized forward: also the global count and
    the merge used (bnfast.distributed)."""

    __slots__ = ("count", "sync")


def _unbiased_factor(bn_param, count):
    if not bn_param.get("unbiased_running_var", False):
        return 1.0
    if count < 2:
        raise ValueError(
            "bn_param['unbiased_running_var'] needs more than 1 value per "
            f"channel, got {count}")
    return count / (count - 1)


def _sync_forward(x, axis, shape, g, gflat, bflat, eps, momentum, rm,
                  rmflat, rv, rvflat, bn_param, relu, out, sync):
    """'train' mode of synchronized batch norm: local statistics by the C
    kernels, merged across processes by sync.merge (every process gets the
    same), then the normalization and the running update with them."""
    c = x.shape[axis]
    n = x.size // c
    mean, m2 = np.zeros(c), np.zeros(c)
    if n:
        x, xp = _layout.panel_or_copy(x, axis)
        _kernels.bn_stats(xp, mean, m2)
    count, mean, m2 = sync.merge(n, mean, m2)  # collective: every process
    if count == 0:
        raise ValueError("the global batch is empty: every process passed "
                         "an empty x")
    factor = _unbiased_factor(bn_param, count)  # the same on every process
    var = m2 / count
    invstd = 1.0 / np.sqrt(var + eps)
    if n:
        res, op = _into(out, x, lambda o: _layout.panel_as(o, x, axis),
                        lambda: _layout.like(x, axis))
        _kernels.bn_apply(xp, gflat, bflat, mean, invstd, op, relu)
    else:
        res, xp = (np.empty(x.shape, x.dtype) if out is None else out), None
    cache = SyncBatchNormCache(x, xp, axis, gflat, bflat, relu, mean, invstd,
                               shape, g.dtype, g.shape)
    cache.count, cache.sync = count, sync
    rm_new = np.empty(rm.shape, rm.dtype)
    rv_new = np.empty(rv.shape, rv.dtype)
    _kernels.running_update(rmflat, rvflat, mean, var, momentum, factor,
                            rm_new, rv_new)  # as batchnorm_forward's
    return rm_new, rv_new, cache, res


def _into(out, x, fast, new):
    """(array, its kernel view) to compute into: the caller's ``out``
    itself when ``fast(out viewed with x's shape)`` gives a kernel view
    (None if not), else new() (a fresh array, copied into out by
    _result)."""
    if out is not None:
        o = _layout.view(out, x.shape)
        v = None if o is None else fast(o)
        if v is not None:
            return out, v
    return new()


def _result(res, out, shape):
    """The result in the caller's shape: ``out`` (copied into when the
    kernel could not write it directly), else the new array."""
    if out is None:
        return res.reshape(shape)
    if res is not out:
        np.copyto(out, res.reshape(shape))
    return out


def _dout_panel(dout, x, axis):
    """dout's panel in the element order of x's: a view when its layout
    allows, else a copy laid out like x.  (Not _layout.panel(dout): panels
    of the same shape can order their elements differently, e.g. C-order
    x and Fortran-order dout with N == H * W.)"""
    dp = _layout.panel_as(dout, x, axis)
    if dp is None:
        relaid, dp = _layout.like(x, axis)
        np.copyto(relaid, dout)
    return dp


def _bn_backward(dout, cache, out):
    dout = _dout(dout, cache, BatchNormCache,
                 "a bnfast batch norm forward pass in 'train' mode", out)
    if isinstance(cache, SyncBatchNormCache):
        raise TypeError("cache is from a synchronized forward pass: use "
                        "bnfast.distributed.sync_batchnorm_backward")
    x, axis = cache.x, cache.axis
    dp = _dout_panel(dout, x, axis)
    dx, dxp = _into(out, x, lambda o: _layout.panel_as(o, x, axis),
                    lambda: _layout.like(x, axis))
    c = x.shape[axis]
    dgamma = np.empty(c)
    dbeta = np.empty(c)
    _kernels.bn_backward(dp, cache.panel, cache.mean, cache.invstd,
                         cache.gamma, cache.beta, cache.relu, dxp, dgamma,
                         dbeta)
    return _grads(dx, dgamma, dbeta, cache, out)


def _sync_backward(dout, cache, out, reduce_param_grads):
    """Backward of a synchronized forward: local sums of dy and
    dy * (x - mean), summed across processes by cache.sync.sum (a
    collective), then dx with the global count; dgamma and dbeta from the
    local sums, or the global ones with reduce_param_grads."""
    if not isinstance(cache, SyncBatchNormCache):
        raise TypeError(
            "cache must be the cache returned by bnfast.distributed."
            f"sync_batchnorm_forward in 'train' mode, got "
            f"{type(cache).__name__}")
    dout = _dout(dout, cache, SyncBatchNormCache,
                 "bnfast.distributed.sync_batchnorm_forward", out)
    x, axis = cache.x, cache.axis
    c = x.shape[axis]
    sums = np.zeros(2 * c)  # sum dy, sum dy * (x - mean)
    if x.size:
        dp = _dout_panel(dout, x, axis)
        _kernels.bn_backward_reduce(dp, cache.panel, cache.mean, cache.invstd,
                                    cache.gamma, cache.beta, cache.relu,
                                    sums[:c], sums[c:])
    total = cache.sync.sum(sums)  # collective: every process
    if x.size:
        dx, dxp = _into(out, x, lambda o: _layout.panel_as(o, x, axis),
                        lambda: _layout.like(x, axis))
        global_grads = np.empty(2 * c)  # the global dgamma, dbeta: unused
        _kernels.bn_backward_apply(dp, cache.panel, cache.mean, cache.invstd,
                                   cache.gamma, cache.beta, cache.relu,
                                   float(cache.count), total[:c], total[c:],
                                   dxp, global_grads[:c], global_grads[c:])
    else:
        dx = np.empty(x.shape, x.dtype) if out is None else out
    use = total if reduce_param_grads else sums
    dgamma = use[c:] * cache.invstd  # as bn_backward_apply computes them
    dbeta = use[:c].copy()
    return _grads(dx, dgamma, dbeta, cache, out)


def batchnorm_forward(x, gamma, beta, bn_param, *, activation=None,
                      out=None):
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
        ``x.reshape(N, -1)``.  N = 1 in 'train' mode is allowed, as in the
        reference: each feature's batch variance is 0, so out == beta and
        dx == 0.  Read in place in C order (also row-strided
        views such as ``x[::2]``, ``x[::-1]`` or broadcast rows: the
        across-rows kernels) and in Fortran order (the along-runs kernels:
        each feature a contiguous column).  Column-strided views, unaligned
        or byte-swapped data, and inputs of more than 2 dimensions that
        ``reshape(N, -1)`` cannot view are copied to C order first.
    gamma, beta : array_like of float32 or float64, shape (D,) or x.shape[1:]
        Scale and shift.
    bn_param : dict
        'mode': 'train' or 'test' (required); 'eps' (default 1e-5, >= 0);
        'momentum' (default 0.9, in [0, 1]); 'running_mean', 'running_var'
        (zeros of shape (D,) in x's dtype when absent);
        'unbiased_running_var' (default False: the running variance
        averages the biased batch variance, as the seeds; True: the
        unbiased one, as PyTorch).  On return it holds the running
        statistics as new arrays (updated in 'train' mode), as the seeds
        do; the arrays passed in are never written.
    activation : None or 'relu', keyword-only
        'relu' applies max(., 0) to the output in the same pass (fused
        batch norm + ReLU, 'train' and 'test' mode); the backward then
        takes dout as the gradient of the ReLU's output.

    out : ndarray, keyword-only
        Write the result into this array (x's shape and dtype, writeable,
        sharing no memory with any input) and return it.  The kernels write
        it directly when its layout allows (e.g. any C- or Fortran-order
        out for an x of the same order), else compute into a new array and
        copy.  Reusing one out across calls saves the page faults of a new
        output: for outputs of many MB that is a large share of the time.

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
    x, x2 = _checks.batch(x)
    return _bn_forward(x2, 1, x.shape, gamma, beta, bn_param, x.shape[1:],
                       activation, out)


def batchnorm_backward(dout, cache, *, out=None):
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

    out : ndarray, keyword-only
        Write dx into this array (x's shape and dtype, writeable, sharing
        no memory with dout or the cached x or gamma) and return it, as
        ``out=`` of the forward.

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
    return _bn_backward(dout, cache, out)


batchnorm_backward_alt = batchnorm_backward


def spatial_batchnorm_forward(x, gamma, beta, bn_param, *, axis=1,
                              activation=None, out=None):
    """Forward pass for spatial batch normalization: statistics per channel.

    Same signature and results as
    ``bnfast.reference.spatial_batchnorm_forward``: for x of shape
    (N, C, H, W) and ``axis=1`` the mean and variance of each channel are
    taken over N, H and W; ``axis=-1`` is channels-last (N, H, W, C).  Any
    rank >= 2 works: (N, C), (N, C, L), (N, C, D, H, W).

    The kernels run on x as it is laid out, with no transposed copy: C-order
    NCHW (runs along the H*W planes) also with a strided or reversed batch
    axis, channels-last and NCHW views of channels-last memory (across rows
    of channels), Fortran order.  Layouts whose other axes do not merge
    into runs and rows are copied first: strided runs (``x[..., ::2]``) and
    channels-last data with a strided or reversed batch axis.  Extra
    memory: the output plus O(C).

    Parameters
    ----------
    x : array_like of float32 or float64, at least 2-D
    gamma, beta : array_like of float32 or float64, shape (C,)
        Also accepted with the shape of x with ones except along ``axis``
        (e.g. (1, C, 1, 1)).
    bn_param : dict
        As for :func:`batchnorm_forward`; running statistics of shape (C,).
    axis : int, keyword-only
        The channel axis (not 0, the batch axis).  Default 1.
    activation : None or 'relu', keyword-only
        As for :func:`batchnorm_forward`: fused ReLU.

    out : ndarray, keyword-only
        Write the result into this array (x's shape and dtype, writeable,
        sharing no memory with any input) and return it.  The kernels write
        it directly when its layout allows (e.g. any C- or Fortran-order
        out for an x of the same order), else compute into a new array and
        copy.  Reusing one out across calls saves the page faults of a new
        output: for outputs of many MB that is a large share of the time.

    Returns
    -------
    out : ndarray, x's shape and dtype
    cache : BatchNormCache ('train' mode) or None ('test' mode)

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.arange(16.0).reshape(2, 2, 2, 2)
    >>> out, cache = bnfast.spatial_batchnorm_forward(
    ...     x, np.ones(2), np.zeros(2), {"mode": "train"})
    >>> out.shape, round(float(out[:, 0].mean()), 12), round(float(out[:, 0].std()), 4)
    ((2, 2, 2, 2), 0.0, 1.0)
    """
    x = _checks.float_array(x, "x")
    axis = _checks.channel_axis(x, axis)
    keep = tuple(1 if k != axis else x.shape[axis] for k in range(x.ndim))
    return _bn_forward(x, axis, x.shape, gamma, beta, bn_param, keep,
                       activation, out)


def spatial_batchnorm_backward(dout, cache, *, out=None):
    """Backward pass for spatial batch normalization.

    Same results as ``bnfast.reference.spatial_batchnorm_backward``; the
    simplified single formula, on the layout of the forward pass.

    Parameters
    ----------
    dout, cache
        As for :func:`batchnorm_backward`.
    out : ndarray, keyword-only
        Write dx into this array (x's shape and dtype, writeable, sharing
        no memory with dout or the cached x or gamma) and return it, as
        ``out=`` of the forward.

    Returns
    -------
    dx : ndarray, x's shape and dtype
    dgamma, dbeta : ndarray, gamma's shape and dtype

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.random.default_rng(0).standard_normal((4, 3, 5, 5))
    >>> _, cache = bnfast.spatial_batchnorm_forward(
    ...     x, np.ones(3), np.zeros(3), {"mode": "train"})
    >>> dx, dgamma, dbeta = bnfast.spatial_batchnorm_backward(np.ones_like(x), cache)
    >>> dbeta
    array([100., 100., 100.])
    """
    return _bn_backward(dout, cache, out)


class LayerNormCache(_Cache):
    """What layernorm_forward keeps for the backward pass: references to x
    (as (N, D) rows) and gamma, and the per-sample mean and 1/std."""

    __slots__ = ("x", "gamma", "mean", "invstd", "shape", "gamma_dtype",
                 "gamma_shape")


def layernorm_forward(x, gamma, beta, ln_param, *, out=None):
    """Forward pass for layer normalization.

    Same signature and results as ``bnfast.reference.layernorm_forward``:
    the mean and (biased) variance of each sample over its features
    (``x.reshape(N, -1)``), then ``gamma * x_hat + beta`` per feature.  Each
    row is normalized while it sits in cache: one read of x, one write of
    the output.

    Parameters
    ----------
    x : array_like of float32 or float64, shape (N, D) or (N, d1, ..., dk)
        Read in place when its (N, D) view has unit-stride columns;
        otherwise (Fortran order, column-strided) copied first.
    gamma, beta : array_like of float32 or float64, shape (D,) or x.shape[1:]
    ln_param : dict
        'eps' (default 1e-5, >= 0).  Not modified.

    out : ndarray, keyword-only
        Write the result into this array (x's shape and dtype, writeable,
        sharing no memory with any input) and return it.  The kernels write
        it directly when its layout allows (e.g. any C- or Fortran-order
        out for an x of the same order), else compute into a new array and
        copy.  Reusing one out across calls saves the page faults of a new
        output: for outputs of many MB that is a large share of the time.

    Returns
    -------
    out : ndarray, x's shape and dtype
    cache : LayerNormCache, for layernorm_backward

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 8.0]])
    >>> out, cache = bnfast.layernorm_forward(x, np.ones(3), np.zeros(3), {})
    >>> np.round(out, 4)
    array([[-1.2247,  0.    ,  1.2247],
           [-0.7071, -0.7071,  1.4142]])
    """
    if not isinstance(ln_param, dict):
        raise TypeError(
            f"ln_param must be a dict, got {type(ln_param).__name__}")
    x, x2 = _checks.batch(x)
    g, gflat = _checks.per_feature(gamma, "gamma", x.shape[1:])
    _, bflat = _checks.per_feature(beta, "beta", x.shape[1:])
    eps = _checks.real_in(ln_param.get("eps", 1e-5), "ln_param['eps']", 0.0)
    if out is not None:
        _checks.out_array(out, x.shape, x.dtype, (
            ("x", x), ("gamma", g), ("beta", bflat)))
    x2 = _layout.unit_rows(x2)
    n = x2.shape[0]
    res, y = _into(out, x2, _layout.as_unit_rows,
                   lambda: (np.empty(x2.shape, x.dtype),) * 2)
    mean = np.empty(n)
    invstd = np.empty(n)
    _kernels.ln_forward(x2, gflat, bflat, eps, y, mean, invstd)
    cache = LayerNormCache(x=x2, gamma=gflat, mean=mean, invstd=invstd,
                           shape=x.shape, gamma_dtype=g.dtype,
                           gamma_shape=g.shape)
    return _result(res, out, x.shape), cache


def layernorm_backward(dout, cache, *, out=None):
    """Backward pass for layer normalization.

    Same results as ``bnfast.reference.layernorm_backward``; fused per row:
    one read of dout and x, one write of dx, with dgamma and dbeta summed
    on the way.

    Parameters
    ----------
    dout, cache
        The upstream gradient (x's shape) and the forward's cache.
    out : ndarray, keyword-only
        Write dx into this array (x's shape and dtype, writeable, sharing
        no memory with dout or the cached x or gamma) and return it, as
        ``out=`` of the forward.

    Returns
    -------
    dx : ndarray, x's shape and dtype
    dgamma, dbeta : ndarray, gamma's shape and dtype

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 8.0]])
    >>> _, cache = bnfast.layernorm_forward(x, np.ones(3), np.zeros(3), {})
    >>> dx, dgamma, dbeta = bnfast.layernorm_backward(np.ones((2, 3)), cache)
    >>> dbeta
    array([2., 2., 2.])
    """
    dout = _dout(dout, cache, LayerNormCache, "bnfast.layernorm_forward",
                 out)
    x = cache.x
    dy = _layout.unit_rows(dout)
    d = x.shape[1]
    dx, dxv = _into(out, x, _layout.as_unit_rows,
                    lambda: (np.empty(x.shape, x.dtype),) * 2)
    dgamma = np.empty(d)
    dbeta = np.empty(d)
    _kernels.ln_backward(dy, x, cache.mean, cache.invstd, cache.gamma, dxv,
                         dgamma, dbeta)
    return _grads(dx, dgamma, dbeta, cache, out)


class GroupNormCache(_Cache):
    """What spatial_groupnorm_forward keeps for the backward pass:
    references to x (as (N, C, H*W)) and gamma, the number of groups, and
    the per-(sample, group) mean and 1/std."""

    __slots__ = ("x", "gamma", "groups", "mean", "invstd", "shape",
                 "gamma_dtype", "gamma_shape")


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param, *, out=None):
    """Forward pass for spatial group normalization.

    Same signature and results as
    ``bnfast.reference.spatial_groupnorm_forward``: the C channels of x
    (N, C, ...) form G groups of C // G adjacent channels; each sample's
    group is normalized by its own mean and (biased) variance, then scaled
    and shifted per channel.  G = C is instance norm, G = 1 layer norm over
    (C, H, W).

    Parameters
    ----------
    x : array_like of float32 or float64, shape (N, C, ...)
        Read in place when each sample is C-contiguous (C order, also with a
        strided batch axis); otherwise copied first.
    gamma, beta : array_like of float32 or float64, shape (C,) or
        (1, C, 1, ...)
    G : int
        The number of groups, dividing C.
    gn_param : dict
        'eps' (default 1e-5, >= 0).  Not modified.

    out : ndarray, keyword-only
        Write the result into this array (x's shape and dtype, writeable,
        sharing no memory with any input) and return it.  The kernels write
        it directly when its layout allows (e.g. any C- or Fortran-order
        out for an x of the same order), else compute into a new array and
        copy.  Reusing one out across calls saves the page faults of a new
        output: for outputs of many MB that is a large share of the time.

    Returns
    -------
    out : ndarray, x's shape and dtype
    cache : GroupNormCache

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.arange(16.0).reshape(1, 4, 2, 2)
    >>> out, cache = bnfast.spatial_groupnorm_forward(
    ...     x, np.ones(4), np.zeros(4), 2, {})
    >>> round(float(out[0, :2].std()), 4), round(float(out[0, 2:].mean()), 12)
    (1.0, 0.0)
    """
    if not isinstance(gn_param, dict):
        raise TypeError(
            f"gn_param must be a dict, got {type(gn_param).__name__}")
    x = _checks.float_array(x, "x")
    _checks.channel_axis(x, 1)
    n, c = x.shape[:2]
    if (not isinstance(G, (int, np.integer)) or isinstance(G, bool)):
        raise TypeError(f"G must be an int, got {type(G).__name__}")
    if not 1 <= G <= c or c % G:
        raise ValueError(
            f"G must divide the number of channels C = {c}, got {G}")
    keep = (1, c) + (1,) * (x.ndim - 2)
    g, gflat = _checks.per_feature(gamma, "gamma", keep)
    _, bflat = _checks.per_feature(beta, "beta", keep)
    eps = _checks.real_in(gn_param.get("eps", 1e-5), "gn_param['eps']", 0.0)
    if out is not None:
        _checks.out_array(out, x.shape, x.dtype, (
            ("x", x), ("gamma", g), ("beta", bflat)))
    x3 = _layout.samples(x.reshape(n, c, -1))
    res, y = _into(out, x3, _layout.as_samples,
                   lambda: (np.empty(x3.shape, x.dtype),) * 2)
    mean = np.empty(n * int(G))
    invstd = np.empty(n * int(G))
    _kernels.gn_forward(x3, int(G), gflat, bflat, eps, y, mean, invstd)
    cache = GroupNormCache(x=x3, gamma=gflat, groups=int(G), mean=mean,
                           invstd=invstd, shape=x.shape, gamma_dtype=g.dtype,
                           gamma_shape=g.shape)
    return _result(res, out, x.shape), cache


def spatial_groupnorm_backward(dout, cache, *, out=None):
    """Backward pass for spatial group normalization.

    Same results as ``bnfast.reference.spatial_groupnorm_backward``; per
    sample, one reduce pass over (dout, x) and one apply pass from cache.

    Parameters
    ----------
    dout, cache
        The upstream gradient (x's shape) and the forward's cache.
    out : ndarray, keyword-only
        Write dx into this array (x's shape and dtype, writeable, sharing
        no memory with dout or the cached x or gamma) and return it, as
        ``out=`` of the forward.

    Returns
    -------
    dx : ndarray, x's shape and dtype
    dgamma, dbeta : ndarray, gamma's shape and dtype

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.random.default_rng(0).standard_normal((2, 4, 3, 3))
    >>> _, cache = bnfast.spatial_groupnorm_forward(
    ...     x, np.ones(4), np.zeros(4), 2, {})
    >>> dx, dgamma, dbeta = bnfast.spatial_groupnorm_backward(
    ...     np.ones_like(x), cache)
    >>> dbeta
    array([18., 18., 18., 18.])
    """
    dout = _dout(dout, cache, GroupNormCache,
                 "bnfast.spatial_groupnorm_forward", out)
    x = cache.x
    dy = _layout.samples(dout)
    c = x.shape[1]
    dx, dxv = _into(out, x, _layout.as_samples,
                    lambda: (np.empty(x.shape, x.dtype),) * 2)
    dgamma = np.empty(c)
    dbeta = np.empty(c)
    _kernels.gn_backward(dy, x, cache.groups, cache.mean, cache.invstd,
                         cache.gamma, dxv, dgamma, dbeta)
    return _grads(dx, dgamma, dbeta, cache, out)
