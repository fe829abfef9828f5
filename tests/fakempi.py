"""An in-process stand-in for an mpi4py communicator: ``size`` ranks as
threads, with the buffer collectives bnfast.distributed uses (Allgather,
Allreduce with the sum), so the synchronized batch norm is tested without
MPI.  The real thing runs in tests/mpi_check.py under mpiexec."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class _World:
    def __init__(self, size):
        self.size = size
        # a rank that raises leaves the others waiting: time out instead
        self.barrier = threading.Barrier(size, timeout=20)
        self.slots = [None] * size
        self.calls = []  # (rank, method, doubles sent), for volume checks


class FakeComm:
    def __init__(self, world, rank):
        self.world, self.rank = world, rank

    def Get_size(self):
        return self.world.size

    def Get_rank(self):
        return self.rank

    def _exchange(self, sendbuf, method):
        w = self.world
        w.calls.append((self.rank, method, np.asarray(sendbuf).size))
        w.slots[self.rank] = np.array(sendbuf, dtype=np.float64)
        w.barrier.wait()
        gathered = list(w.slots)
        w.barrier.wait()  # every rank has read before the next call writes
        return gathered

    def Allgather(self, sendbuf, recvbuf):
        np.copyto(
            recvbuf,
            np.stack(self._exchange(sendbuf, "Allgather")).reshape(
                recvbuf.shape
            ),
        )

    def Allreduce(self, sendbuf, recvbuf):
        total = np.zeros_like(np.asarray(sendbuf, dtype=np.float64))
        for part in self._exchange(sendbuf, "Allreduce"):  # rank order
            total += part
        np.copyto(recvbuf, total)


def run_ranks(size, fn):
    """fn(comm) on ``size`` ranks at once; their results in rank order,
    and the world (for its call log)."""
    world = _World(size)
    with ThreadPoolExecutor(size) as pool:
        results = list(pool.map(lambda r: fn(FakeComm(world, r)), range(size)))
    return results, world
