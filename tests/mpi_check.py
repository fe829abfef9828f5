"""Synchronized batch norm against one process on the whole batch.

``check(comm)`` runs every case on the calling rank of ``comm`` (all ranks
must call it): the global batch is made identically on every rank, each
rank takes an uneven shard of it (some ranks an empty one), and the
synchronized forward and backward must equal bnfast's single-process
results on the whole batch (1e-12 in float64; float32 data, computed in
float32 arithmetic, to 1e-5, running statistics 1e-6), with running
statistics and reduced parameter gradients bitwise equal on every rank.

Run under MPI:  mpiexec -n 3 python -m mpi4py tests/mpi_check.py
(``-m mpi4py``: an exception on one rank aborts them all.)
(test_distributed.py runs it so when mpi4py and mpiexec are installed, and
runs check() on an in-process fake communicator otherwise.)
"""

import numpy as np

import bnfast
from bnfast import distributed

# (name, x shape of the whole batch, layout, axis (None: per feature),
#  dtype, options)
CASES = [
    ("(N, D)", (23, 7), "C", None, np.float64, {}),
    ("(N, D) Fortran", (23, 7), "F", None, np.float64, {}),
    ("(N, D, L) per feature", (11, 3, 4), "C", None, np.float64, {}),
    ("NCHW", (9, 4, 5, 3), "C", 1, np.float64, {}),
    ("channels-last", (9, 5, 3, 4), "C", -1, np.float64, {}),
    ("NCHW view of NHWC memory", (9, 4, 5, 3), "NHWC", 1, np.float64, {}),
    ("NCDHW", (7, 3, 2, 3, 2), "C", 1, np.float64, {}),
    ("NCHW relu", (9, 4, 5, 3), "C", 1, np.float64, {"activation": "relu"}),
    (
        "unbiased running var",
        (23, 7),
        "C",
        None,
        np.float64,
        {"unbiased": True},
    ),
    ("float32 NCHW", (9, 4, 5, 3), "C", 1, np.float32, {}),
]


def shards(n, size):
    """Uneven shard sizes of n rows over size ranks, rank 1 empty when
    there are 3 ranks or more."""
    if size == 1:
        return [n]
    weights = np.arange(1, size + 1, dtype=float)
    if size >= 3:
        weights[1] = 0
    sizes = np.floor(n * weights / weights.sum()).astype(int)
    sizes[-1] += n - sizes.sum()
    return list(sizes)


def _layout(a, layout):
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "NHWC":
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)
    return a


def _same_everywhere(comm, a):
    """Whether ``a`` is bitwise the same on every rank (a collective)."""
    a = np.ascontiguousarray(a, dtype=np.float64).ravel()
    every = np.empty((comm.Get_size(), a.size))
    comm.Allgather(a, every)
    return bool((every == every[0]).all())


def check_case(comm, case):
    name, shape, layout, axis, dtype, opts = case
    rank, size = comm.Get_rank(), comm.Get_size()
    rng = np.random.default_rng(2024)  # the same global batch everywhere
    x = _layout(rng.standard_normal(shape).astype(dtype) * 3 + 1, layout)
    dout = rng.standard_normal(shape).astype(dtype)
    c = (
        shape[1]
        if axis == 1
        else shape[-1]
        if axis == -1
        else int(np.prod(shape[1:]))
    )
    gamma, beta = rng.random(c) + 0.5, rng.standard_normal(c)
    act = opts.get("activation")

    def param():
        return {
            "mode": "train",
            "momentum": 0.7,
            "running_mean": np.full(c, 0.25),
            "running_var": np.full(c, 1.5),
            "unbiased_running_var": opts.get("unbiased", False),
        }

    # one process, the whole batch
    p1 = param()
    if axis is None:
        ref, rcache = bnfast.batchnorm_forward(
            x, gamma, beta, p1, activation=act
        )
        rgrads = bnfast.batchnorm_backward(dout, rcache)
    else:
        ref, rcache = bnfast.spatial_batchnorm_forward(
            x, gamma, beta, p1, axis=axis, activation=act
        )
        rgrads = bnfast.spatial_batchnorm_backward(dout, rcache)

    # this rank's shard
    sizes = shards(shape[0], size)
    lo = sum(sizes[:rank])
    hi = lo + sizes[rank]
    p = param()
    out, cache = distributed.sync_batchnorm_forward(
        x[lo:hi], gamma, beta, p, comm, axis=axis, activation=act
    )
    dx, dgamma, dbeta = distributed.sync_batchnorm_backward(dout[lo:hi], cache)
    _, dgamma_all, dbeta_all = distributed.sync_batchnorm_backward(
        dout[lo:hi], cache, reduce_param_grads=True
    )

    # the collectives of the checks, on every rank before any assertion
    # (a rank that raised early would leave the others waiting)
    totals = {}
    for mine, what in ((dgamma, "dgamma"), (dbeta, "dbeta")):
        totals[what] = np.empty(c)
        comm.Allreduce(
            np.ascontiguousarray(mine, dtype=np.float64), totals[what]
        )
    differ = [
        what
        for what, a in (
            ("running_mean", p["running_mean"]),
            ("running_var", p["running_var"]),
            ("reduced dgamma", dgamma_all),
            ("reduced dbeta", dbeta_all),
        )
        if not _same_everywhere(comm, a)
    ]

    # 'test' mode: the running statistics, no communication needed
    p_test, p1_test = dict(p, mode="test"), dict(p1, mode="test")
    if axis is None:
        rtest, _ = bnfast.batchnorm_forward(x, gamma, beta, p1_test)
    else:
        rtest, _ = bnfast.spatial_batchnorm_forward(
            x, gamma, beta, p1_test, axis=axis
        )
    test, _ = distributed.sync_batchnorm_forward(
        x[lo:hi], gamma, beta, p_test, comm, axis=axis
    )

    def assertions():
        # float32 data is computed in float32 arithmetic (short sums, merged
        # in double): shards sum in another order than the whole batch
        tol = (
            dict(rtol=1e-12, atol=1e-12)
            if dtype == np.float64
            else dict(rtol=1e-5, atol=1e-5)
        )
        stat_tol = (
            dict(rtol=1e-12, atol=1e-12)
            if dtype == np.float64
            else dict(rtol=1e-6, atol=1e-7)
        )
        grad_tol = (
            dict(rtol=1e-10, atol=1e-10)
            if dtype == np.float64
            else dict(rtol=1e-5, atol=1e-5)
        )
        assert out.shape == ref[lo:hi].shape and out.dtype == ref.dtype
        np.testing.assert_allclose(out, ref[lo:hi], err_msg="out", **tol)
        np.testing.assert_allclose(dx, rgrads[0][lo:hi], err_msg="dx", **tol)
        np.testing.assert_allclose(
            test, rtest[lo:hi], err_msg="test mode", **tol
        )
        for key in ("running_mean", "running_var"):
            np.testing.assert_allclose(
                p[key], p1[key], err_msg=key, **stat_tol
            )
        for what, everyone, whole in (
            ("dgamma", dgamma_all, rgrads[1]),
            ("dbeta", dbeta_all, rgrads[2]),
        ):
            np.testing.assert_allclose(
                totals[what], whole, err_msg=what, **grad_tol
            )
            np.testing.assert_allclose(
                everyone, whole, err_msg=f"reduced {what}", **grad_tol
            )
        assert not differ, f"differ between ranks: {differ}"

    failure = None
    try:
        assertions()
    except AssertionError as e:
        failure = e
    failed = np.empty(1)
    comm.Allreduce(np.array([float(failure is not None)]), failed)
    where = f"{name}, rank {rank} of {size} (rows {lo}:{hi})"
    if failure is not None:
        raise AssertionError(f"{where}: {failure}")
    if failed[0]:
        raise AssertionError(f"{where}: another rank failed")


def check(comm):
    for case in CASES:
        check_case(comm, case)
    return comm.Get_rank()


if __name__ == "__main__":
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    check(comm)
    comm.Barrier()
    if comm.Get_rank() == 0:
        print(
            f"mpi_check: {len(CASES)} cases passed on {comm.Get_size()} ranks"
        )
