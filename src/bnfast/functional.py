"""Fast batch normalization: the signatures and results of bnfast.reference,
computed by the C kernels in csrc/.

Each function here is its documentation and signature; the call path
(validation, the layout, allocation, the running statistics, the caches)
is Cython on the NumPy C API in bnfast._kernels, a few microseconds.

Dtype policy (shared with the reference): ``out`` and ``dx`` have x's dtype
(float32 or float64, computed natively: float32 in float32 arithmetic with
double sums and statistics, see docs/guide/accuracy.md; float16 and
bfloat16 -- ``ml_dtypes.bfloat16``, optional -- are half-precision
storage, computed as float32 and each result rounded once to nearest
even); gamma, beta and the running statistics may be any of these float
dtypes; integer and bool gamma and beta are converted to x's dtype;
``dgamma`` and ``dbeta`` have gamma's dtype (after that conversion) and
shape; running statistics keep their own dtype and shape (x's dtype and
shape (D,) when absent).  x, dout and the running statistics must be
float16, bfloat16, float32 or float64.

Affine-free: gamma=None and beta=None (each on its own) mean gamma = 1 and
beta = 0, as PyTorch's ``weight=None`` / ``bias=None``; no array of ones
or zeros is made (the kernels read a NULL gamma as 1 and a NULL beta as
0).  The backward then returns None for the gradient of a None parameter
(and dbeta has beta's dtype and shape when gamma is None); dx is the one
of gamma = ones, beta = zeros, bitwise.

Arrays: ndarray subclasses (np.matrix, np.memmap) are read, and written as
``out``, as plain ndarrays; results are plain ndarrays.  A masked array
(numpy.ma) in any argument is a TypeError naming it: the kernels would
read its masked values as data.

``out=``: an ndarray of the result's shape and x's dtype, writeable, whose
elements do not overlap one another (no stride of 0, no sliding window
view), sharing no memory with anything the call reads, nor with the
caller's arrays those were converted from (a byte-swapped, strided,
integer or reshaped input): a ValueError naming the array otherwise,
with nothing written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

from bnfast import _kernels
from bnfast._kernels import (
    BatchNormCache,
    GroupNormCache,
    LayerNormCache,
    RMSNormCache,
)

if TYPE_CHECKING:
    from bnfast._kernels import _ResidualBatchNormCache
    from bnfast._typing import (
        Activation,
        ArrayLike,
        FloatArray,
        Grad,
        Param,
        ParamDict,
        ShapeLike,
    )

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
    "RMSNormCache",
    "rmsnorm_forward",
    "rmsnorm_backward",
    "GroupNormCache",
    "spatial_groupnorm_forward",
    "spatial_groupnorm_backward",
]


@overload
def batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    *,
    activation: Activation = None,
    out: FloatArray | None = None,
    residual: None = None,
) -> tuple[FloatArray, BatchNormCache]: ...
@overload
def batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    *,
    activation: Activation = None,
    out: FloatArray | None = None,
    residual: ArrayLike,
) -> tuple[FloatArray, _ResidualBatchNormCache]: ...
@overload
def batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    *,
    activation: Activation = None,
    out: FloatArray | None = None,
    residual: ArrayLike | None = None,
) -> tuple[FloatArray, BatchNormCache]: ...
def batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    *,
    activation: Activation = None,
    out: FloatArray | None = None,
    residual: ArrayLike | None = None,
) -> tuple[FloatArray, BatchNormCache]:
    """Forward pass for batch normalization.

    Same signature and results as ``bnfast.reference.batchnorm_forward``.
    In 'train' mode the per-feature mean and biased variance of the batch are
    computed in one fused pass (double sums), x is normalized with
    them, and the running statistics are updated as
    ``running = momentum * running + (1 - momentum) * batch``.  In 'test'
    mode x is normalized with the running statistics.

    Parameters
    ----------
    x : array_like of floats, shape (N, D) or (N, d1, ..., dk)
        The batch.  More than two dimensions are normalized per feature of
        ``x.reshape(N, -1)``.  N = 1 in 'train' mode is allowed, as in the
        reference: each feature's batch variance is 0, so out == beta and
        dx == 0.  Read in place in C order (also row-strided
        views such as ``x[::2]``, ``x[::-1]`` or broadcast rows: the
        across-rows kernels) and in Fortran order (the along-runs kernels:
        each feature a contiguous column).  Column-strided views, unaligned
        or byte-swapped data, and inputs of more than 2 dimensions that
        ``reshape(N, -1)`` cannot view are copied to C order first.
    gamma, beta : array_like of floats, shape (D,) or x.shape[1:]
        Scale and shift.  Integers and bools are converted to x's dtype.
        None: 1 and 0 (affine-free; no array made), and the backward
        returns None for its gradient.
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
    residual : ndarray, keyword-only
        z, added to the batch norm's output before the activation in the
        same pass: ``out = relu(bn(x) + z)`` with ``activation='relu'``,
        else ``bn(x) + z`` (a ResNet block's skip connection).  x's exact
        shape and dtype (no broadcasting or conversion: TypeError for
        another dtype, ValueError for another shape); any layout (read in
        place when its layout fits x's, else copied).  The backward then
        returns a fourth gradient, dresidual.  With the ReLU the cache
        keeps a reference to z (the backward's mask reads it): do not
        modify z between forward and backward.  ``out=residual`` (the very
        same array view) is the in-place add of an inference block: allowed
        in 'test' mode (the cache's ReLU backward then raises: z is gone)
        and in 'train' mode without the ReLU (the backward does not read
        z); in 'train' mode with the ReLU, or any other overlap of out
        and residual, it raises ValueError.
    out : ndarray, keyword-only
        Write the result into this array (x's shape and dtype, writeable,
        its elements not overlapping one another, sharing no memory with
        any input: see the module's notes) and return it.  The kernels write
        it directly when its layout allows (e.g. any C- or Fortran-order
        out for an x of the same order), else compute into a new array and
        copy.  Reusing one out across calls saves the page faults of a new
        output: for outputs of many MB that is a large share of the time.

    Returns
    -------
    out : ndarray, x's shape and dtype
    cache : BatchNormCache, for batchnorm_backward.  In 'test' mode it
        holds float64 copies of the running statistics used (``frozen``
        True): the backward then treats them as constants.

    Raises
    ------
    TypeError
        An array not of float16, bfloat16, float32 or float64 (gamma and
        beta: integers and bools are converted), a masked array, or
        bn_param not a dict.
    KeyError
        bn_param has no 'mode'.
    ValueError
        An unknown mode, x of fewer than 2 dimensions, an empty batch, zero
        features, gamma/beta/running statistics of the wrong shape, eps < 0
        or momentum outside [0, 1], a bad ``out`` (see the module's notes).
        Nothing is modified when it raises.

    See Also
    --------
    bnfast.reference.batchnorm_forward : the plain-NumPy twin.
    bnfast.batchnorm_backward : the backward.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> bn_param = {"mode": "train"}
    >>> out, cache = bnfast.batchnorm_forward(
    ...     x, np.ones(2), np.zeros(2), bn_param)
    >>> np.round(out, 4)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> bn_param["running_mean"]
    array([0.2, 0.4])
    """
    return _kernels.batchnorm_forward(
        x, gamma, beta, bn_param, activation, out, residual
    )


# (the first overload is the cache of a forward with residual=, a typing-only
# subclass: mypy calls a narrower first overload with another return type
# an unsafe overlap, which it is meant to be)
@overload
def batchnorm_backward(  # type: ignore[overload-overlap]
    dout: ArrayLike,
    cache: _ResidualBatchNormCache,
    *,
    out: FloatArray | None = None,
) -> tuple[FloatArray, Grad, Grad, FloatArray]: ...
@overload
def batchnorm_backward(
    dout: ArrayLike, cache: BatchNormCache, *, out: FloatArray | None = None
) -> tuple[FloatArray, Grad, Grad]: ...
def batchnorm_backward(
    dout: ArrayLike,
    cache: BatchNormCache,
    *,
    out: FloatArray | None = None,
) -> tuple[FloatArray, Grad, Grad] | tuple[FloatArray, Grad, Grad, FloatArray]:
    """Backward pass for batch normalization.

    Same signature and results as ``bnfast.reference.batchnorm_backward``
    (and ``batchnorm_backward_alt``): the simplified single formula
    ``dx = gamma/std/N * (N*dout - sum(dout) - x_hat*sum(dout*x_hat))``,
    computed in one reduce pass over (dout, x) and one apply pass, x_hat
    recomputed on the fly.

    Parameters
    ----------
    dout : array_like of floats, x's shape
        Upstream gradient.  Converted to x's dtype if it differs; copied if
        its rows are not unit-stride.
    cache : BatchNormCache
        From ``batchnorm_forward`` in either mode.  After 'test' mode
        (``cache.frozen``) the running statistics are constants, as in
        PyTorch's eval mode: with ``s = 1/sqrt(running_var + eps)`` and
        ``g = dout`` (masked by the fused ReLU), ``dx = g * gamma * s``,
        ``dgamma = sum(g * (x - running_mean) * s)``, ``dbeta = sum(g)``
        (the same two passes, the apply pass without the terms through
        the batch's statistics).  After a forward with ``residual=z``
        the ReLU's mask is that of ``bn(x) + z`` (z read from the cache)
        and a fourth gradient, dresidual, is returned.

    out : ndarray, keyword-only
        Write dx into this array (x's shape and dtype, writeable, its
        elements not overlapping one another, sharing no memory with dout
        or with what the backward reads from the cache: x, gamma, the
        statistics, and beta after a fused ReLU) and return it, as
        ``out=`` of the forward.

    Returns
    -------
    dx : ndarray, x's shape and dtype
    dgamma, dbeta : ndarray, gamma's shape and dtype, or None
        None for a parameter that was None in the forward (dbeta has
        beta's shape and dtype when only gamma was None).
    dresidual : ndarray, x's shape and dtype (only after ``residual=``)
        With the fused ReLU: dout masked by ``bn(x) + z > 0``, a new array
        (written by the pass that forms the mask; the rest of the backward
        reads it as its dout).  Without: ``dout`` itself, not a copy, when
        it is an ndarray of x's dtype (as PyTorch's autograd passes the
        same gradient to both summands; copy it before modifying it in
        place), else dout converted to x's dtype.

    See Also
    --------
    bnfast.reference.batchnorm_backward : the plain-NumPy twin.
    bnfast.batchnorm_forward : the forward.

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

    Affine-free (gamma=None, beta=None): no parameter gradients.

    >>> _, cache = bnfast.batchnorm_forward(x, None, None, {"mode": "train"})
    >>> bnfast.batchnorm_backward(np.ones((3, 2)), cache)[1:]
    (None, None)
    >>> print(np.abs(dx).max() < 1e-12)
    True

    Through 'test' mode (frozen running statistics): dx = dout * gamma / std

    >>> p = {"mode": "test", "running_mean": np.zeros(2),
    ...      "running_var": np.full(2, 4.0), "eps": 0.0}
    >>> _, cache = bnfast.batchnorm_forward(x, np.ones(2), np.zeros(2), p)
    >>> dx, dgamma, dbeta = bnfast.batchnorm_backward(np.ones((3, 2)), cache)
    >>> dx[0], dgamma
    (array([0.5, 0.5]), array([3. , 4.5]))

    Fused residual and ReLU, out = relu(bn(x) + z): four gradients.

    >>> z = np.array([[0.5, -2.0], [0.0, 0.0], [0.0, 0.0]])
    >>> out, cache = bnfast.batchnorm_forward(
    ...     x, np.ones(2), np.zeros(2), {"mode": "train"}, residual=z,
    ...     activation="relu")
    >>> dx, dgamma, dbeta, dz = bnfast.batchnorm_backward(
    ...     np.ones((3, 2)), cache)
    >>> dz
    array([[0., 0.],
           [1., 1.],
           [0., 0.]])
    """
    return _kernels.batchnorm_backward(dout, cache, out)


batchnorm_backward_alt = batchnorm_backward


@overload
def spatial_batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    *,
    axis: int = 1,
    activation: Activation = None,
    out: FloatArray | None = None,
    residual: None = None,
) -> tuple[FloatArray, BatchNormCache]: ...
@overload
def spatial_batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    *,
    axis: int = 1,
    activation: Activation = None,
    out: FloatArray | None = None,
    residual: ArrayLike,
) -> tuple[FloatArray, _ResidualBatchNormCache]: ...
@overload
def spatial_batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    *,
    axis: int = 1,
    activation: Activation = None,
    out: FloatArray | None = None,
    residual: ArrayLike | None = None,
) -> tuple[FloatArray, BatchNormCache]: ...
def spatial_batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    *,
    axis: int = 1,
    activation: Activation = None,
    out: FloatArray | None = None,
    residual: ArrayLike | None = None,
) -> tuple[FloatArray, BatchNormCache]:
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
    x : array_like of floats, at least 2-D
    gamma, beta : array_like of floats, shape (C,)
        Also accepted with the shape of x with ones except along ``axis``
        (e.g. (1, C, 1, 1)).  Integers and bools are converted to x's dtype.
        None: 1 and 0 (affine-free), the backward's gradient then None.
    bn_param : dict
        As for :func:`batchnorm_forward`; running statistics of shape (C,).
    axis : int, keyword-only
        The channel axis (not 0, the batch axis).  Default 1.
    activation : None or 'relu', keyword-only
        As for :func:`batchnorm_forward`: fused ReLU.
    residual : ndarray, keyword-only
        As for :func:`batchnorm_forward`: ``relu(bn(x) + z)`` in one pass.
    out : ndarray, keyword-only
        Write the result into this array (x's shape and dtype, writeable,
        its elements not overlapping one another, sharing no memory with
        any input: see the module's notes) and return it.  The kernels write
        it directly when its layout allows (e.g. any C- or Fortran-order
        out for an x of the same order), else compute into a new array and
        copy.  Reusing one out across calls saves the page faults of a new
        output: for outputs of many MB that is a large share of the time.

    Returns
    -------
    out : ndarray, x's shape and dtype
    cache : BatchNormCache, for spatial_batchnorm_backward (in 'test' mode
        with frozen statistics, as for :func:`batchnorm_forward`)

    See Also
    --------
    bnfast.reference.spatial_batchnorm_forward : the plain-NumPy twin.
    bnfast.spatial_batchnorm_backward : the backward.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.arange(16.0).reshape(2, 2, 2, 2)
    >>> out, cache = bnfast.spatial_batchnorm_forward(
    ...     x, np.ones(2), np.zeros(2), {"mode": "train"})
    >>> (out.shape, round(float(out[:, 0].mean()), 12),
    ...  round(float(out[:, 0].std()), 4))
    ((2, 2, 2, 2), 0.0, 1.0)
    """
    return _kernels.spatial_batchnorm_forward(
        x, gamma, beta, bn_param, axis, activation, out, residual
    )


# (the first overload is the cache of a forward with residual=, a typing-only
# subclass: mypy calls a narrower first overload with another return type
# an unsafe overlap, which it is meant to be)
@overload
def spatial_batchnorm_backward(  # type: ignore[overload-overlap]
    dout: ArrayLike,
    cache: _ResidualBatchNormCache,
    *,
    out: FloatArray | None = None,
) -> tuple[FloatArray, Grad, Grad, FloatArray]: ...
@overload
def spatial_batchnorm_backward(
    dout: ArrayLike, cache: BatchNormCache, *, out: FloatArray | None = None
) -> tuple[FloatArray, Grad, Grad]: ...
def spatial_batchnorm_backward(
    dout: ArrayLike,
    cache: BatchNormCache,
    *,
    out: FloatArray | None = None,
) -> tuple[FloatArray, Grad, Grad] | tuple[FloatArray, Grad, Grad, FloatArray]:
    """Backward pass for spatial batch normalization.

    Same results as ``bnfast.reference.spatial_batchnorm_backward``; the
    simplified single formula, on the layout of the forward pass.

    Parameters
    ----------
    dout, cache
        As for :func:`batchnorm_backward`.
    out : ndarray, keyword-only
        Write dx into this array (x's shape and dtype, writeable, its
        elements not overlapping one another, sharing no memory with dout
        or with what the backward reads from the cache: x, gamma, the
        statistics, and beta after a fused ReLU) and return it, as
        ``out=`` of the forward.

    Returns
    -------
    dx : ndarray, x's shape and dtype
    dgamma, dbeta : ndarray, gamma's shape and dtype, or None
        None for a parameter that was None in the forward (dbeta has
        beta's shape and dtype when only gamma was None).
    dresidual : ndarray (only after ``residual=``)
        As for :func:`batchnorm_backward`.

    See Also
    --------
    bnfast.reference.spatial_batchnorm_backward : the plain-NumPy twin.
    bnfast.spatial_batchnorm_forward : the forward.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.random.default_rng(0).standard_normal((4, 3, 5, 5))
    >>> _, cache = bnfast.spatial_batchnorm_forward(
    ...     x, np.ones(3), np.zeros(3), {"mode": "train"})
    >>> dx, dgamma, dbeta = bnfast.spatial_batchnorm_backward(
    ...     np.ones_like(x), cache)
    >>> dbeta
    array([100., 100., 100.])
    """
    return _kernels.batchnorm_backward(dout, cache, out)


def layernorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    ln_param: ParamDict,
    *,
    normalized_shape: ShapeLike | None = None,
    out: FloatArray | None = None,
) -> tuple[FloatArray, LayerNormCache]:
    """Forward pass for layer normalization.

    Same signature and results as ``bnfast.reference.layernorm_forward``:
    the mean and (biased) variance of each sample over its features
    (``x.reshape(N, -1)``), or with ``normalized_shape`` over that trailing
    shape (as ``torch.nn.functional.layer_norm``: (B, T, D) normalized over
    D), then ``gamma * x_hat + beta`` per feature.  Each row is normalized
    while it sits in cache: one read of x, one write of the output.

    Parameters
    ----------
    x : array_like of floats, shape (N, D) or (N, d1, ..., dk)
        (with normalized_shape: any shape ending with it)
        Read in place when its rows (the leading axes merged into one,
        the normalized ones into one run) have one row stride and
        unit-stride columns, as NumPy's reshape to (rows, D) gives a view;
        otherwise (Fortran order, column-strided, leading axes that do not
        merge) copied first.
    gamma, beta : array_like of floats, shape (D,) or the
        feature shape (x.shape[1:], or normalized_shape)
        Integers and bools are converted to x's dtype.  None: 1 and 0
        (affine-free), the backward's gradient then None.
    ln_param : dict
        'eps' (default 1e-5, >= 0).  Not modified.
    normalized_shape : int or tuple of ints, keyword-only
        The trailing shape of x normalized over, as PyTorch's.  None (the
        default): all axes after the first (the cs231n form).

    out : ndarray, keyword-only
        Write the result into this array (x's shape and dtype, writeable,
        its elements not overlapping one another, sharing no memory with
        any input: see the module's notes) and return it.  The kernels write
        it directly when its layout allows (e.g. any C- or Fortran-order
        out for an x of the same order), else compute into a new array and
        copy.  Reusing one out across calls saves the page faults of a new
        output: for outputs of many MB that is a large share of the time.

    Returns
    -------
    out : ndarray, x's shape and dtype
    cache : LayerNormCache, for layernorm_backward

    See Also
    --------
    bnfast.reference.layernorm_forward : the plain-NumPy twin.
    bnfast.layernorm_backward : the backward.

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
    return _kernels.layernorm_forward(
        x, gamma, beta, ln_param, out, normalized_shape
    )


def layernorm_backward(
    dout: ArrayLike,
    cache: LayerNormCache,
    *,
    out: FloatArray | None = None,
) -> tuple[FloatArray, Grad, Grad]:
    """Backward pass for layer normalization.

    Same results as ``bnfast.reference.layernorm_backward``; fused per row:
    one read of dout and x, one write of dx, with dgamma and dbeta summed
    on the way.

    Parameters
    ----------
    dout, cache
        The upstream gradient (x's shape) and the forward's cache.
    out : ndarray, keyword-only
        Write dx into this array (x's shape and dtype, writeable, its
        elements not overlapping one another, sharing no memory with dout
        or with what the backward reads from the cache: x, gamma, the
        statistics, and beta after a fused ReLU) and return it, as
        ``out=`` of the forward.

    Returns
    -------
    dx : ndarray, x's shape and dtype
    dgamma, dbeta : ndarray, gamma's shape and dtype, or None
        None for a parameter that was None in the forward (dbeta has
        beta's shape and dtype when only gamma was None).

    See Also
    --------
    bnfast.reference.layernorm_backward : the plain-NumPy twin.
    bnfast.layernorm_forward : the forward.

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
    return _kernels.layernorm_backward(dout, cache, out)


def rmsnorm_forward(
    x: ArrayLike,
    gamma: Param,
    rms_param: ParamDict,
    *,
    normalized_shape: ShapeLike | None = None,
    out: FloatArray | None = None,
) -> tuple[FloatArray, RMSNormCache]:
    """Forward pass for RMS normalization.

    Same signature and results as ``bnfast.reference.rmsnorm_forward``:
    per row over the trailing ``normalized_shape``, ``x / sqrt(mean(x**2)
    + eps) * gamma``, as ``torch.nn.functional.rms_norm``.  Each row is
    normalized while it sits in cache: one read of x, one write of the
    output (the layer norm kernels' structure; a row whose sum of squares
    leaves the floating-point range is summed again in double, scaled).

    Parameters
    ----------
    x : array_like of floats, at least the normalized shape
        Read in place when its (rows, D) view has unit-stride columns, as
        for layernorm_forward; otherwise copied first.
    gamma : array_like of floats, shape (D,) or the feature
        shape, or None
        Integers and bools are converted to x's dtype.  None: 1
        (affine-free), the backward's dgamma then None.
    rms_param : dict
        'eps': >= 0, or None (the default): the machine epsilon of x's
        dtype, as PyTorch's eps=None.  Not modified.
    normalized_shape : int or tuple of ints, keyword-only
        The trailing shape of x normalized over.  None (the default):
        gamma's shape when x ends with it, else all axes after the first.
    out : ndarray, keyword-only
        As layernorm_forward's.

    Returns
    -------
    out : ndarray, x's shape and dtype
    cache : RMSNormCache, for rmsnorm_backward

    See Also
    --------
    bnfast.reference.rmsnorm_forward : the plain-NumPy twin.
    bnfast.rmsnorm_backward : the backward.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[3.0, 4.0], [1.0, 1.0]])
    >>> out, cache = bnfast.rmsnorm_forward(x, np.ones(2), {"eps": 0.0})
    >>> np.round(out, 4)
    array([[0.8485, 1.1314],
           [1.    , 1.    ]])
    """
    return _kernels.rmsnorm_forward(x, gamma, rms_param, out, normalized_shape)


def rmsnorm_backward(
    dout: ArrayLike,
    cache: RMSNormCache,
    *,
    out: FloatArray | None = None,
) -> tuple[FloatArray, Grad]:
    """Backward pass for RMS normalization.

    Same results as ``bnfast.reference.rmsnorm_backward``; fused per row:
    one read of dout and x, one write of dx, with dgamma summed on the way.

    Parameters
    ----------
    dout, cache
        The upstream gradient (x's shape) and the forward's cache.
    out : ndarray, keyword-only
        Write dx into this array, as layernorm_backward's ``out``.

    Returns
    -------
    dx : ndarray, x's shape and dtype
    dgamma : ndarray, gamma's shape and dtype, or None (gamma None)

    See Also
    --------
    bnfast.reference.rmsnorm_backward : the plain-NumPy twin.
    bnfast.rmsnorm_forward : the forward.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[3.0, 4.0], [1.0, 1.0]])
    >>> _, cache = bnfast.rmsnorm_forward(x, np.ones(2), {"eps": 0.0})
    >>> dx, dgamma = bnfast.rmsnorm_backward(np.ones((2, 2)), cache)
    >>> np.round(dgamma, 4)
    array([1.8485, 2.1314])
    """
    return _kernels.rmsnorm_backward(dout, cache, out)


def spatial_groupnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    G: int,
    gn_param: ParamDict,
    *,
    axis: int = 1,
    out: FloatArray | None = None,
) -> tuple[FloatArray, GroupNormCache]:
    """Forward pass for spatial group normalization.

    Same signature and results as
    ``bnfast.reference.spatial_groupnorm_forward``: the C channels of x
    (N, C, ...) form G groups of C // G adjacent channels; each sample's
    group is normalized by its own mean and (biased) variance, then scaled
    and shifted per channel.  G = C is instance norm, G = 1 layer norm over
    (C, H, W).

    Parameters
    ----------
    x : array_like of floats, shape (N, C, ...), or
        (N, ..., C) with ``axis=-1``
        Read in place when each sample is C-contiguous (C order, also with a
        strided batch axis); otherwise copied first.  Channels last: read
        in place when the channels are adjacent and the spatial axes merge
        into one row axis (C order, strided batch or rows), no transposing
        copy; otherwise copied to C order first.
    gamma, beta : array_like of floats, shape (C,) or
        x's shape with ones except along ``axis`` ((1, C, 1, ...) or
        (1, ..., 1, C))
        Integers and bools are converted to x's dtype.  None: 1 and 0
        (affine-free), the backward's gradient then None.
    G : int
        The number of groups, dividing C.
    gn_param : dict
        'eps' (default 1e-5, >= 0).  Not modified.
    axis : int, keyword-only
        The channel axis: 1 (default, NCHW) or the last axis (-1 or
        x.ndim - 1: channels last, (N, H, W, C) or any rank >= 2); other
        axes raise ValueError.  The backward returns dx in x's layout.

    out : ndarray, keyword-only
        Write the result into this array (x's shape and dtype, writeable,
        its elements not overlapping one another, sharing no memory with
        any input: see the module's notes) and return it.  The kernels write
        it directly when its layout allows (e.g. any C- or Fortran-order
        out for an x of the same order), else compute into a new array and
        copy.  Reusing one out across calls saves the page faults of a new
        output: for outputs of many MB that is a large share of the time.

    Returns
    -------
    out : ndarray, x's shape and dtype
    cache : GroupNormCache

    See Also
    --------
    bnfast.reference.spatial_groupnorm_forward : the plain-NumPy twin.
    bnfast.spatial_groupnorm_backward : the backward.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.arange(16.0).reshape(1, 4, 2, 2)
    >>> out, cache = bnfast.spatial_groupnorm_forward(
    ...     x, np.ones(4), np.zeros(4), 2, {})
    >>> round(float(out[0, :2].std()), 4), round(float(out[0, 2:].mean()), 12)
    (1.0, 0.0)
    >>> x_last = np.ascontiguousarray(np.moveaxis(x, 1, -1))  # (N, H, W, C)
    >>> out_last, _ = bnfast.spatial_groupnorm_forward(
    ...     x_last, None, None, 2, {}, axis=-1)
    >>> np.allclose(np.moveaxis(out_last, -1, 1), out)
    True
    """
    return _kernels.spatial_groupnorm_forward(
        x, gamma, beta, G, gn_param, out, axis
    )


def spatial_groupnorm_backward(
    dout: ArrayLike,
    cache: GroupNormCache,
    *,
    out: FloatArray | None = None,
) -> tuple[FloatArray, Grad, Grad]:
    """Backward pass for spatial group normalization.

    Same results as ``bnfast.reference.spatial_groupnorm_backward``; per
    sample, one reduce pass over (dout, x) and one apply pass from cache.

    Parameters
    ----------
    dout, cache
        The upstream gradient (x's shape) and the forward's cache.
    out : ndarray, keyword-only
        Write dx into this array (x's shape and dtype, writeable, its
        elements not overlapping one another, sharing no memory with dout
        or with what the backward reads from the cache: x, gamma, the
        statistics, and beta after a fused ReLU) and return it, as
        ``out=`` of the forward.

    Returns
    -------
    dx : ndarray, x's shape and dtype
    dgamma, dbeta : ndarray, gamma's shape and dtype, or None
        None for a parameter that was None in the forward (dbeta has
        beta's shape and dtype when only gamma was None).

    See Also
    --------
    bnfast.reference.spatial_groupnorm_backward : the plain-NumPy twin.
    bnfast.spatial_groupnorm_forward : the forward.

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
    return _kernels.spatial_groupnorm_backward(dout, cache, out)
