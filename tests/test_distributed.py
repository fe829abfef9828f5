"""Synchronized batch norm (bnfast.distributed): on an in-process fake
communicator always, under mpiexec -n 2 and -n 3 when mpi4py and an MPI are
installed (pip install bnfast[mpi])."""

import copy
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

import bnfast
from bnfast import distributed

import mpi_check
from fakempi import run_ranks

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "case", mpi_check.CASES, ids=[c[0] for c in mpi_check.CASES]
)
def test_equals_one_process_on_the_whole_batch(case, size):
    run_ranks(size, lambda comm: mpi_check.check_case(comm, case))


def test_shards():
    assert mpi_check.shards(23, 3) == [5, 0, 18]
    assert mpi_check.shards(9, 4)[1] == 0 and sum(mpi_check.shards(9, 4)) == 9


def _step(comm, x, mode="train"):
    p = {"mode": mode}
    out, cache = distributed.sync_batchnorm_forward(
        x, np.ones(3), np.zeros(3), p, comm
    )
    return out, cache, p


def test_communication_volume():
    c, size = 3, 3
    x = np.random.default_rng(0).standard_normal((4, c))

    def fn(comm):
        _, cache, _ = _step(comm, x)
        distributed.sync_batchnorm_backward(np.ones_like(x), cache)
        _step(comm, x, mode="test")

    _, world = run_ranks(size, fn)
    per_rank = sorted((m, n) for r, m, n in world.calls if r == 0)
    assert per_rank == [("Allgather", 3 * c + 1), ("Allreduce", 2 * c)]
    assert distributed.communication_doubles(c, size) == {
        "forward": (3 * c + 1, (3 * c + 1) * size),
        "backward": (2 * c, 2 * c),
    }


def test_an_empty_global_batch_raises_on_every_rank():
    def fn(comm):
        with pytest.raises(ValueError, match="the global batch is empty"):
            _step(comm, np.empty((0, 3)))
        return True

    assert run_ranks(2, fn)[0] == [True, True]


def test_comm_must_have_the_collectives():
    with pytest.raises(
        TypeError,
        match="comm must be an mpi4py "
        "communicator .* got dict without Get_size",
    ):
        distributed.sync_batchnorm_forward(
            np.ones((2, 3)), np.ones(3), np.zeros(3), {"mode": "train"}, {}
        )


def test_caches_do_not_mix():
    x = np.random.default_rng(1).standard_normal((4, 3))
    _, cache = bnfast.batchnorm_forward(
        x, np.ones(3), np.zeros(3), {"mode": "train"}
    )
    with pytest.raises(
        TypeError,
        match="cache must be the cache returned by "
        "bnfast.distributed.sync_batchnorm_forward",
    ):
        distributed.sync_batchnorm_backward(x, cache)
    ((out, sync_cache, _),) = run_ranks(1, lambda comm: _step(comm, x))[0]
    with pytest.raises(
        TypeError, match="cache is from a synchronized forward pass"
    ):
        bnfast.batchnorm_backward(x, sync_cache)


def test_sync_layer_trains_as_one_layer_on_the_whole_batch():
    rng = np.random.default_rng(3)
    batches = [rng.standard_normal((10, 4, 3)) for _ in range(3)]
    douts = [rng.standard_normal((10, 4, 3)) for _ in range(3)]
    whole = bnfast.BatchNorm(4, dtype=np.float64, momentum=0.8)
    expected = []
    for x, d in zip(batches, douts):
        out = whole.forward(x)
        dx = whole.backward(d)
        expected.append((out, dx, whole.grads["gamma"].copy()))
        whole.params["gamma"] -= 0.1 * whole.grads["gamma"]
    sizes = mpi_check.shards(10, 3)

    def fn(comm):
        layer = distributed.SyncBatchNorm(
            4, comm, dtype=np.float64, momentum=0.8, reduce_param_grads=True
        )
        r = comm.Get_rank()
        lo = sum(sizes[:r])
        hi = lo + sizes[r]
        for (x, d), (out, dx, dgamma) in zip(zip(batches, douts), expected):
            np.testing.assert_allclose(
                layer.forward(x[lo:hi]), out[lo:hi], rtol=1e-12, atol=1e-12
            )
            np.testing.assert_allclose(
                layer.backward(d[lo:hi]), dx[lo:hi], rtol=1e-12, atol=1e-12
            )
            np.testing.assert_allclose(
                layer.grads["gamma"], dgamma, rtol=1e-10
            )
            layer.params["gamma"] -= 0.1 * layer.grads["gamma"]
        np.testing.assert_allclose(
            layer.running_mean, whole.running_mean, rtol=1e-12
        )
        np.testing.assert_allclose(
            layer.running_var, whole.running_var, rtol=1e-12
        )
        test = layer.forward(batches[0][lo:hi], mode="test")
        np.testing.assert_allclose(
            test,
            whole.forward(batches[0], mode="test")[lo:hi],
            rtol=1e-12,
            atol=1e-12,
        )

    run_ranks(3, fn)


def _trained(comm, rows, **kw):
    """A SyncBatchNorm after two steps on this rank's rows."""
    layer = distributed.SyncBatchNorm(
        3, comm, dtype=np.float64, momentum=0.5, **kw
    )
    rng = np.random.default_rng(comm.Get_rank())
    for _ in range(2):
        layer(rng.standard_normal((rows, 3)) * 2 + 1)
        layer.backward(rng.standard_normal((rows, 3)))
        layer.params["gamma"] -= 0.1 * layer.grads["gamma"]
    return layer


def test_sync_layer_deepcopy_is_independent_on_the_same_comm():
    x = np.random.default_rng(5).standard_normal((4, 3)) + 1
    d = np.random.default_rng(6).standard_normal((4, 3))

    def fn(comm):
        layer = _trained(comm, 4)
        layer(x)  # a cache to copy
        clone = copy.deepcopy(layer)
        assert clone.comm is comm and layer.comm is comm
        assert clone.params["gamma"] is not layer.params["gamma"]
        assert clone.running_mean is not layer.running_mean
        # the copied cache (with its global count) gives the same backward
        np.testing.assert_array_equal(clone.backward(d), layer.backward(d))
        np.testing.assert_array_equal(
            clone.grads["gamma"], layer.grads["gamma"]
        )
        # the copy's backward is its own: its reduce_param_grads, its grads
        clone.reduce_param_grads = True
        clone.params["gamma"] += 1.0
        local = layer.grads["gamma"].copy()
        clone(x)
        clone.backward(d)
        layer(x)
        layer.backward(d)
        np.testing.assert_array_equal(layer.grads["gamma"], local)
        return clone.grads["gamma"], local, layer.running_mean.copy()

    results, _ = run_ranks(2, fn)
    (g0, local0, rm0), (g1, local1, rm1) = results
    np.testing.assert_array_equal(g0, g1)  # the global sum
    np.testing.assert_allclose(g0, local0 + local1, rtol=1e-12)
    np.testing.assert_array_equal(rm0, rm1)


def test_sync_layer_pickles_without_its_comm():
    x = np.random.default_rng(7).standard_normal((6, 3)) + 1

    def fn(comm):
        layer = _trained(comm, 3, reduce_param_grads=True)
        restored = pickle.loads(pickle.dumps(layer))
        assert restored.comm is None and restored.reduce_param_grads
        assert repr(restored) == repr(layer).replace("<FakeComm>", "None")
        for k, v in layer.state_dict().items():
            np.testing.assert_array_equal(restored.state_dict()[k], v)
        # test mode needs no communicator
        np.testing.assert_array_equal(
            restored(x, mode="test"), layer(x, mode="test")
        )
        before = restored.state_dict()
        with pytest.raises(
            RuntimeError,
            match=r"SyncBatchNorm.comm is None "
            r"\(as after unpickling\): set layer.comm",
        ):
            restored(x)
        # the backward after 'test' mode is local, but its
        # reduce_param_grads would communicate
        with pytest.raises(
            RuntimeError,
            match="comm is None .* backward pass with reduce_param_grads",
        ):
            restored.backward(x)
        with pytest.raises(
            TypeError, match="comm must be an mpi4py communicator"
        ):
            restored.comm = {}
        for k, v in before.items():
            np.testing.assert_array_equal(restored.state_dict()[k], v)
        # with a communicator again, it trains as the original
        restored.comm = comm
        out = restored(x)
        np.testing.assert_array_equal(out, layer(x))
        np.testing.assert_array_equal(restored.backward(x), layer.backward(x))
        np.testing.assert_array_equal(restored.running_var, layer.running_var)
        return True

    assert run_ranks(2, fn)[0] == [True, True]


def test_sync_layer_checks_its_arguments():
    with pytest.raises(
        TypeError,
        match="comm must be an mpi4py "
        "communicator .* got dict without Get_size",
    ):
        distributed.SyncBatchNorm(3, {})
    with pytest.raises(TypeError, match="reduce_param_grads must be a bool"):
        distributed.SyncBatchNorm(3, None, reduce_param_grads="yes")
    with pytest.raises(ValueError, match="eps must be a finite number"):
        distributed.SyncBatchNorm(3, None, eps=-1)


def _mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    return shutil.which(
        "mpiexec", path=os.path.dirname(sys.executable)
    ) or shutil.which("mpiexec")


# CI sets BNFAST_REQUIRE_MPI=1 after installing the mpi extra: fail, not
# skip, if it is missing
@pytest.mark.skipif(
    _mpiexec() is None and os.environ.get("BNFAST_REQUIRE_MPI") != "1",
    reason="needs mpi4py and mpiexec (pip install bnfast[mpi])",
)
@pytest.mark.parametrize("ranks", [2, 3])
def test_under_mpiexec(ranks):
    cmd = [_mpiexec(), "-n", str(ranks)]
    if (
        os.geteuid() == 0
        and "Open MPI"
        in subprocess.run(
            [_mpiexec(), "--version"], capture_output=True, text=True
        ).stdout
    ):
        cmd += ["--allow-run-as-root", "--oversubscribe"]
    env = dict(os.environ, BNFAST_NUM_THREADS="1")
    run = subprocess.run(
        cmd
        + [sys.executable, "-m", "mpi4py", os.path.join(HERE, "mpi_check.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert (
        f"{len(mpi_check.CASES)} cases passed on {ranks} ranks" in run.stdout
    )


@pytest.fixture(params=[False, True], ids=["1-thread", "2-threads"])
def threads_per_rank(request):
    """One thread, or as the property tests run: the threaded kernels from
    64 KiB on two threads (one where OpenMP is missing)."""
    least = bnfast._kernels._get_parallel_min()
    threads = bnfast.get_num_threads()
    if request.param:
        bnfast._kernels._set_parallel_min(64 * 1024)
        bnfast.set_num_threads(2)
    else:
        bnfast.set_num_threads(1)
    yield
    bnfast.set_num_threads(threads)
    bnfast._kernels._set_parallel_min(least)


@pytest.mark.parametrize("shape", [(4097, 8), (4097, 2, 4)])
@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("size", [2, 3])
def test_merge_of_an_offset_batch_is_as_accurate_as_one_process(
    threads_per_rank, shape, layout, size
):
    # float64 rows at an offset of 1e4 times the spread, split between the
    # ranks: each rank's mean, rounded at the scale of the offset (ulp(1e4)),
    # went into Chan's merge, whose delta**2 * n_a n_b / n term carried that
    # rounding into M2 (as the threads' merge did, test_accuracy.py): the
    # variance 3x past the bound on 2 ranks, 7x on 3, 9.5x on 4.  The
    # means now travel and merge as pairs hi + lo (bnf_results.mean_lo).
    from bnfast import reference

    from arrays import assert_as_accurate
    from test_accuracy import spec
    from test_properties import bn_param, bn_scales, build, channels_last

    for seed in range(4):
        case = build(spec(shape, None, layout, "C", seed, 1e4))
        wcase = case.widened()
        n = case.x.shape[0]
        cuts = [0] + [n * (r + 1) // size + r for r in range(size - 1)] + [n]
        p = [bn_param(case, "train", 1e-5, 0.0, False) for _ in range(size)]

        def fn(comm):
            r = comm.Get_rank()
            out, _ = distributed.sync_batchnorm_forward(
                case.x[cuts[r] : cuts[r + 1]],
                case.gamma,
                case.beta,
                p[r],
                comm,
            )
            return out

        outs, _ = run_ranks(size, fn)
        out = np.concatenate(outs)
        rp = bn_param(case, "train", 1e-5, 0.0, False)
        wp = bn_param(wcase, "train", 1e-5, 0.0, False)
        ref, _ = reference.batchnorm_forward(case.x, case.gamma, case.beta, rp)
        wide, _ = reference.batchnorm_forward(
            wcase.x, wcase.gamma, wcase.beta, wp
        )
        assert_as_accurate(
            "sync out", case, out, ref, wide, bn_scales(wcase, 1e-5)["out"]
        )
        xmax = np.max(np.abs(channels_last(wcase, wcase.x)), axis=0)
        for key, scale in (
            ("running_mean", float(np.max(xmax))),
            ("running_var", None),
        ):
            for q in p[1:]:  # the same on every rank
                np.testing.assert_array_equal(q[key], p[0][key])
            assert_as_accurate(
                f"sync {key}", case, p[0][key], rp[key], wp[key], scale
            )
