"""Synchronized batch norm across processes (data-parallel training over
MPI): statistics over the global batch, not each process's shard, with the
results of one process on the whole batch.

``comm`` is an mpi4py communicator (``pip install bnfast[mpi]`` installs
mpi4py and MPICH), or any object with the same buffer methods
``Get_size()``, ``Allgather(sendbuf, recvbuf)`` and
``Allreduce(sendbuf, recvbuf)`` (summing); this module never imports
mpi4py itself.  Every process of ``comm`` must make the same calls in the
same order (they are collectives), including processes whose shard is
empty (N = 0).

Forward ('train' mode): each process computes its shard's count, mean and
M2 per channel with the C kernels (float64 data: each mean with its low
part, its rounding error); one Allgather of 3C + 1 float64 per process;
every process merges them with Chan's formula in rank order (the means as
pairs hi + lo, as the threads' partial means), so all hold bitwise the same
statistics and running statistics.  Never sums of
x and x**2.  'test' mode uses the running statistics and communicates
nothing.

Backward: one Allreduce (sum) of 2C float64: the sums of dy and
dy * (x - mean); then dx with the global count.  dgamma and dbeta are the
process's own shares (sum them across processes, as the gradients of the
other parameters) unless ``reduce_param_grads=True``, which returns the
global ones on every process at no extra communication.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import numpy.typing as npt

from bnfast import _kernels, layers

if TYPE_CHECKING:
    from bnfast._kernels import BnForward, _ResidualBatchNormCache
    from bnfast._typing import (
        Activation,
        ArrayLike,
        Comm,
        FloatArray,
        Grad,
        Param,
        ParamDict,
    )

    F64Array = npt.NDArray[np.float64]

__all__ = [
    "sync_batchnorm_forward",
    "sync_batchnorm_backward",
    "SyncBatchNorm",
    "SyncBatchNormCache",
    "communication_doubles",
]


class SyncBatchNormCache(_kernels.BatchNormCache):
    """BatchNormCache of a synchronized forward: also the global count and
    the merge used.  bnfast.batchnorm_backward rejects it."""

    __slots__ = ("count", "sync")
    count: int | None
    sync: _Sync | None

    # the Cython pickling of BatchNormCache knows nothing of these slots:
    # carry them (a deepcopy of a cache, or of a layer holding one, would
    # otherwise lose them)
    def __reduce__(self) -> tuple[Any, ...]:
        fn, args, state = super().__reduce__()
        return (
            fn,
            args,
            (state, getattr(self, "count", None), getattr(self, "sync", None)),
        )

    def __setstate__(self, state: Any) -> None:
        base, count, sync = state
        super().__setstate__(base)
        if count is not None:
            self.count = count
        if sync is not None:
            self.sync = sync


if TYPE_CHECKING:

    class _ResidualSyncBatchNormCache(
        SyncBatchNormCache, _ResidualBatchNormCache
    ):
        """Typing only: the cache of a forward with residual= (its
        backward returns dresidual too), as _ResidualBatchNormCache."""


def _two_sum(a: F64Array, b: F64Array) -> tuple[F64Array, F64Array]:
    """a + b and its rounding error (TwoSum, as bnf_two_sum in
    csrc/internal.h: 0 where the sum is not finite)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, np.where(np.isfinite(s), e, 0.0)


class _Sync:
    """The two collectives of synchronized batch norm over ``comm``."""

    def __init__(self, comm: Comm) -> None:
        for method in ("Get_size", "Allgather", "Allreduce"):
            if not callable(getattr(comm, method, None)):
                raise TypeError(
                    "comm must be an mpi4py communicator (or have its "
                    f"Get_size, Allgather and Allreduce), got "
                    f"{type(comm).__name__} without {method}"
                )
        self.comm = comm

    def merge(
        self,
        n: int,
        mean: F64Array,
        m2: F64Array,
        mean_lo: F64Array | None = None,
    ) -> tuple[int, F64Array, F64Array]:
        """(count, mean, M2) of the union of every process's shard.

        mean_lo: the low parts of the float64 means (BnForward.stats), None
        for float32 data.  When every non-empty shard has them the means
        are merged as pairs hi + lo, as the threads' partial means in
        bnf_merge_moments (csrc/threads.c): a difference of means then
        carries no rounding at the scale of the means (float64 data offset
        by 1e4 times its spread: before, the variance 2-3x past the
        suite's bound on 2 processes).  Otherwise (float32 data, which
        sends NaN for them) the means alone, as before."""
        c = mean.shape[0]
        send = np.empty(3 * c + 1)
        send[0], send[1 : c + 1], send[2 * c + 1 :] = n, mean, m2
        # a float64 mean's low part is finite (0 where the mean is not):
        # NaN marks a shard without them
        send[c + 1 : 2 * c + 1] = np.nan if mean_lo is None else mean_lo
        recv = np.empty((self.comm.Get_size(), 3 * c + 1))
        self.comm.Allgather(send, recv)
        rows = [row for row in recv if row[0] != 0]  # rank order
        pairs = not any(np.isnan(row[c + 1 : 2 * c + 1]).any() for row in rows)
        count, mu, lo, q = 0.0, np.zeros(c), np.zeros(c), np.zeros(c)
        for row in rows:  # rank order: the same arithmetic everywhere
            nb, mb, lb, qb = (
                row[0],
                row[1 : c + 1],
                row[c + 1 : 2 * c + 1],
                row[2 * c + 1 :],
            )
            if count == 0:
                count, mu, q = nb, mb.copy(), qb.copy()
                lo = lb.copy() if pairs else lo
                continue
            total = count + nb
            wb = nb / total
            with np.errstate(invalid="ignore", over="ignore"):
                if pairs:  # as bnf_merge_moments with the low parts
                    delta = (mb - mu) + (lb - lo)
                    moved, err = _two_sum(mu, delta * wb)
                else:
                    delta = mb - mu
                    moved = mu + delta * wb
                # as bnf_chan_merge in csrc/internal.h (an infinite delta
                # falls back to the weighted average)
                avg = mu * (count / total) + mb * wb
                q = q + (qb + delta * delta * (count * wb))
            finite = np.isfinite(moved)
            mu = np.where(finite, moved, avg)
            if pairs:
                lo = np.where(finite, lo + err, 0.0)
            count = total
        if pairs:
            with np.errstate(invalid="ignore", over="ignore"):
                mu = mu + np.where(np.isfinite(lo), lo, 0.0)
        return int(count), mu, q

    def sum(self, a: F64Array) -> F64Array:
        """The elementwise sum of ``a`` over every process."""
        out = np.empty_like(a)
        self.comm.Allreduce(a, out)
        return out


def _sync_forward(
    call: BnForward, sync: _Sync
) -> tuple[FloatArray, SyncBatchNormCache]:
    """'train' mode of synchronized batch norm: local statistics by the C
    kernels, merged across processes by sync.merge (every process gets the
    same), then the normalization and the running update with them.
    call: the validated local call (bnfast._kernels.BnForward)."""
    mean, mean_lo, m2 = call.stats()  # zeros for an empty shard
    count, mean, m2 = sync.merge(call.count, mean, m2, mean_lo)  # collective
    if count == 0:
        raise ValueError(
            "the global batch is empty: every process passed an empty x"
        )
    factor = call.unbiased_factor(count)  # the same on every process
    var = m2 / count
    invstd = 1.0 / np.sqrt(var + call.eps)
    res = call.apply(mean, invstd)
    cache = call.cache(mean, invstd, SyncBatchNormCache)
    cache.count, cache.sync = count, sync
    call.update_running(mean, var, factor)  # as batchnorm_forward's
    return res, cache


@overload
def sync_batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    comm: Comm,
    *,
    axis: int | None = None,
    activation: Activation = None,
    out: FloatArray | None = None,
    residual: None = None,
) -> tuple[FloatArray, SyncBatchNormCache]: ...
@overload
def sync_batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    comm: Comm,
    *,
    axis: int | None = None,
    activation: Activation = None,
    out: FloatArray | None = None,
    residual: ArrayLike,
) -> tuple[FloatArray, _ResidualSyncBatchNormCache]: ...
@overload
def sync_batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    comm: Comm,
    *,
    axis: int | None = None,
    activation: Activation = None,
    out: FloatArray | None = None,
    residual: ArrayLike | None = None,
) -> tuple[FloatArray, SyncBatchNormCache]: ...
def sync_batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    comm: Comm,
    *,
    axis: int | None = None,
    activation: Activation = None,
    out: FloatArray | None = None,
    residual: ArrayLike | None = None,
) -> tuple[FloatArray, SyncBatchNormCache]:
    """Batch norm forward with statistics over the batch of every process.

    Same arguments and results as :func:`bnfast.batchnorm_forward`
    (``axis=None``) or :func:`bnfast.spatial_batchnorm_forward` (``axis``
    the channel axis), computed over the concatenation of every process's
    x along the batch axis; each process gets its own rows of the output.
    A collective: every process calls it, x may be empty (N = 0) on some.
    'train' mode: one ``Allgather`` of 3C + 1 float64 per call, merged with
    Chan's formula in rank order, so every process holds bitwise the same
    statistics.  'test' mode communicates nothing.

    Parameters
    ----------
    x : ndarray
        This process's shard of the batch, float16, bfloat16, float32 or
        float64.
    gamma, beta : ndarray or None
        Scale and shift, as in :func:`bnfast.batchnorm_forward`; None: 1
        and 0 (affine-free), and the backward returns None for that
        gradient.
    bn_param : dict
        As in :func:`bnfast.batchnorm_forward`.  On return every process
        holds the same running statistics in it.
    comm : communicator
        An mpi4py communicator (``MPI.COMM_WORLD``, a split of it) or
        anything with its ``Get_size``, ``Allgather`` and ``Allreduce``.
    axis : int or None, keyword-only
        None: x of shape (N, ...) normalized per feature of
        ``x.reshape(N, -1)``; else the channel axis (1: NCHW, -1:
        channels-last, any rank).
    activation : None or 'relu', keyword-only
        As in :func:`bnfast.batchnorm_forward`.
    out : ndarray or None, keyword-only
        As in :func:`bnfast.batchnorm_forward`.
    residual : ndarray or None, keyword-only
        z, this process's rows, of x's shape and dtype: ``bn(x) + z`` (with
        ``activation='relu'``: ``relu(bn(x) + z)``) as in the local
        functions; z is local, it adds nothing to the communication.

    Returns
    -------
    out : ndarray
        This process's rows of the output, x's shape and dtype.
    cache : SyncBatchNormCache
        For :func:`sync_batchnorm_backward`.  After 'test' mode (frozen
        running statistics) that backward's dx is local and it
        communicates nothing but the parameter gradients with
        ``reduce_param_grads``.

    Examples
    --------
    One process with a stand-in for ``MPI.COMM_WORLD`` (the three methods
    bnfast calls): the result is the local batch norm's.

    >>> import numpy as np
    >>> import bnfast
    >>> from bnfast import distributed
    >>> class OneProcess:
    ...     def Get_size(self):
    ...         return 1
    ...     def Allgather(self, sendbuf, recvbuf):
    ...         recvbuf[...] = np.reshape(sendbuf, recvbuf.shape)
    ...     def Allreduce(self, sendbuf, recvbuf):
    ...         recvbuf[...] = sendbuf
    >>> x = np.random.default_rng(0).standard_normal((16, 4))
    >>> out, cache = distributed.sync_batchnorm_forward(
    ...     x, None, None, {"mode": "train"}, OneProcess())
    >>> local, _ = bnfast.batchnorm_forward(x, None, None, {"mode": "train"})
    >>> np.allclose(out, local)
    True
    """
    sync = _Sync(comm)
    call = _kernels.bn_forward(
        x, gamma, beta, bn_param, axis, activation, out, True, residual
    )
    if call.train:
        return _sync_forward(call, sync)
    # 'test' mode communicates nothing; its cache (frozen statistics, also
    # for an empty shard) is for sync_batchnorm_backward
    res, cache = call.run(SyncBatchNormCache)
    cache.count, cache.sync = None, sync
    return res, cache


# (the first overload is the cache of a forward with residual=, a typing-only
# subclass: mypy calls a narrower first overload with another return type
# an unsafe overlap, which it is meant to be)
@overload
def sync_batchnorm_backward(  # type: ignore[overload-overlap]
    dout: ArrayLike,
    cache: _ResidualSyncBatchNormCache,
    *,
    reduce_param_grads: bool = False,
    out: FloatArray | None = None,
) -> tuple[FloatArray, Grad, Grad, FloatArray]: ...
@overload
def sync_batchnorm_backward(
    dout: ArrayLike,
    cache: SyncBatchNormCache,
    *,
    reduce_param_grads: bool = False,
    out: FloatArray | None = None,
) -> tuple[FloatArray, Grad, Grad]: ...
def sync_batchnorm_backward(
    dout: ArrayLike,
    cache: SyncBatchNormCache,
    *,
    reduce_param_grads: bool = False,
    out: FloatArray | None = None,
) -> tuple[FloatArray, Grad, Grad] | tuple[FloatArray, Grad, Grad, FloatArray]:
    """Backward of :func:`sync_batchnorm_forward` (a collective: every
    process calls it).

    Local sums of dy and dy * (x - mean), summed across processes (one
    ``Allreduce`` of 2C float64), then dx with the global count; dgamma
    and dbeta from the local sums, or the global ones with
    ``reduce_param_grads``.  After 'test' mode (frozen statistics) dx is
    local, ``dout * gamma / sqrt(running_var + eps)``, and only
    ``reduce_param_grads`` communicates.

    Parameters
    ----------
    dout : ndarray
        Upstream gradient for this process's rows, of x's shape.
    cache : SyncBatchNormCache
        From :func:`sync_batchnorm_forward` (the local functions' caches
        are a TypeError).
    reduce_param_grads : bool, keyword-only
        False: dgamma and dbeta are this process's shares; True: their
        sums over every process (no extra communication in 'train' mode).
    out : ndarray or None, keyword-only
        Where to write dx, as in :func:`bnfast.batchnorm_backward`.

    Returns
    -------
    dx : ndarray
        For this process's rows.
    dgamma, dbeta : ndarray or None
        None for a parameter that was None in the forward.
    dresidual : ndarray
        Only after a forward with ``residual=``: local, as
        :func:`bnfast.batchnorm_backward`'s.
    """
    reduce_param_grads = bool(reduce_param_grads)
    if not isinstance(cache, SyncBatchNormCache):
        raise TypeError(
            "cache must be the cache returned by bnfast.distributed."
            f"sync_batchnorm_forward, got {type(cache).__name__}"
        )
    call = _kernels.bn_backward(
        dout, cache, out, "bnfast.distributed.sync_batchnorm_forward"
    )
    c = call.channels
    sums = call.reduce()  # sum dy, sum dy * (x - mean); zeros when empty
    if cache.frozen:  # after 'test' mode: dx local (count not read)
        if reduce_param_grads and cache.sync is None:
            raise RuntimeError(
                "SyncBatchNorm.comm is None (as after unpickling): set "
                "layer.comm to the communicator before a backward pass "
                "with reduce_param_grads"
            )
        dx = call.apply(1.0, sums)
        total = (
            cache.sync.sum(sums)  # type: ignore[union-attr]  # checked
            if reduce_param_grads
            else sums
        )
    else:  # a 'train' mode cache: sync and count set
        total = cache.sync.sum(sums)  # type: ignore[union-attr]  # collective
        dx = call.apply(float(cache.count), total)  # type: ignore[arg-type]
    use = total if reduce_param_grads else sums
    dgamma = use[c:] * cache.invstd  # as bn_backward_apply computes them
    dbeta = use[:c].copy()
    if cache.has_residual:
        # (has_residual: dresidual is not None)
        return (
            dx,
            *call.param_grads(  # type: ignore[return-value]
                dgamma, dbeta
            ),
            call.dresidual,
        )
    return (dx, *call.param_grads(dgamma, dbeta))


def communication_doubles(
    channels: int, processes: int
) -> dict[str, tuple[int, int]]:
    """float64 values each process sends and receives per step:
    {'forward': (sent, received), 'backward': (sent, received)}.

    Parameters
    ----------
    channels : int
        The number of channels (features) normalized.
    processes : int
        The number of processes of the communicator.

    Returns
    -------
    dict
        ``{'forward': (sent, received), 'backward': (sent, received)}``:
        the forward's ``Allgather`` and the backward's ``Allreduce``, in
        float64 values.

    Examples
    --------
    >>> from bnfast import distributed
    >>> distributed.communication_doubles(64, 4)
    {'forward': (193, 772), 'backward': (128, 128)}
    """
    per = 3 * channels + 1
    return {
        "forward": (per, per * processes),
        "backward": (2 * channels, 2 * channels),
    }


class SyncBatchNorm(layers.BatchNorm):
    """:class:`bnfast.BatchNorm` whose 'train' mode (and 'test' mode
    without running statistics) normalizes with the statistics of the
    batches of every process of ``comm``.  Every process must call forward
    and backward together.  ``reduce_param_grads=True``: ``grads`` hold
    the gradients summed over the processes (equal everywhere), ready for
    identical optimizer steps; otherwise this process's shares.

    ``comm`` may be None (or set to None): 'test' mode with running
    statistics works (it communicates nothing); anything that would
    communicate raises a RuntimeError until ``layer.comm`` is set.

    backward after a 'test' mode forward (frozen running statistics) is
    local: dx and this process's dgamma and dbeta, the latter summed over
    the processes with ``reduce_param_grads`` (then a collective, in which
    processes with empty shards take part).

    Copies: ``copy.deepcopy`` gives an independent layer (its own
    parameters, running statistics, gradients and last forward's cache)
    on the same communicator, which is shared, not copied.  Pickling
    carries everything but the communicator (not picklable, and tied to
    the running processes) and the last forward's cache: an unpickled
    layer has ``comm`` None (set ``layer.comm`` before training) and needs
    a forward pass before a backward.

    Parameters
    ----------
    num_features : int
        The number of channels C.
    comm : communicator or None
        As in :func:`sync_batchnorm_forward`; None until set.
    reduce_param_grads : bool, keyword-only
        Whether ``grads`` hold the sums over every process.
    **kwargs
        The keyword arguments of :class:`bnfast.BatchNorm` (eps, momentum,
        axis, affine, bias, track_running_stats, unbiased_running_var,
        dtype, gamma_init, beta_init, activation).
    """

    def __init__(
        self,
        num_features: int,
        comm: Comm | None,
        *,
        reduce_param_grads: bool = False,
        **kwargs: Any,
    ) -> None:
        reduce_param_grads = layers._flag(
            reduce_param_grads, "reduce_param_grads"
        )
        if comm is not None:
            _Sync(comm)  # checks comm
        super().__init__(num_features, **kwargs)
        self.comm = comm
        self.reduce_param_grads = reduce_param_grads

    @property
    def comm(self) -> Comm | None:
        """The communicator (mpi4py-like), or None."""
        return self._comm

    @comm.setter
    def comm(self, comm: Comm | None) -> None:
        if comm is not None:
            _Sync(comm)  # checks comm
        self._comm = comm

    def _repr_parts(
        self,
    ) -> tuple[list[Any], list[tuple[str, Any]], dict[str, Any]]:
        args, kwargs, defaults = super()._repr_parts()
        comm = self._comm
        shown = layers._Shown(
            "None" if comm is None else f"<{type(comm).__name__}>"
        )
        kwargs = (
            [("comm", shown)]
            + kwargs
            + [("reduce_param_grads", self.reduce_param_grads)]
        )
        return args, kwargs, {**defaults, "reduce_param_grads": False}

    def _backward(self, dout: ArrayLike, cache: Any) -> layers._Grads:
        return sync_batchnorm_backward(
            dout, cache, reduce_param_grads=self.reduce_param_grads
        )

    def _normalize(
        self,
        x: FloatArray,
        bn_param: dict[str, Any],
        residual: ArrayLike | None = None,
    ) -> tuple[FloatArray, Any]:
        if self._comm is None:
            if bn_param["mode"] == "test":
                # communicates nothing; takes empty shards, as with a comm
                out, cache = _kernels.bn_forward(
                    x,
                    self._gamma,
                    self._beta,
                    bn_param,
                    self.axis,
                    self.activation,
                    None,
                    True,
                    residual,
                ).run(SyncBatchNormCache)
                cache.count, cache.sync = None, None
                return out, cache
            raise RuntimeError(
                "SyncBatchNorm.comm is None (as after unpickling): set "
                "layer.comm to the communicator before a forward pass "
                "with batch statistics"
            )
        # 'test' mode communicates nothing, but takes empty shards too
        return sync_batchnorm_forward(
            x,
            self._gamma,
            self._beta,
            bn_param,
            self._comm,
            axis=self.axis,
            activation=self.activation,
            residual=residual,
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> SyncBatchNorm:
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        if self._comm is not None:
            memo[id(self._comm)] = self._comm  # shared, never copied
        for key, value in self.__dict__.items():
            new.__dict__[key] = copy.deepcopy(value, memo)
        return new

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_comm"] = None
        state["_cache"] = None  # holds the communicator
        return state
