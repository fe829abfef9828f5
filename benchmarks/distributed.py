"""Synchronized batch norm: communication volume and cost per step.

    mpiexec -n 2 python -m mpi4py benchmarks/distributed.py [--quick]

Each rank holds a shard of (N, C, H, W) float32 images; the table gives,
per channel count C, the float64 values each rank sends and receives per
training step (forward: an Allgather of 3C + 1; backward: an Allreduce of
2C, independent of the batch size) and the median times of the
synchronized forward-train and backward against the same calls on the
local shard alone (bnfast.spatial_batchnorm_forward/backward), so the
difference is the cost of the collectives and the merge.  bnfast runs on
one thread per rank (BNFAST_NUM_THREADS=1 unless set), the ranks on the
machine's cores.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("BNFAST_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import bnfast  # noqa: E402
from bnfast import distributed  # noqa: E402


def median_time(fn, comm, repeat):
    times = []
    for _ in range(repeat):
        comm.Barrier()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    shapes = (
        [(8, 16, 8, 8), (8, 256, 4, 4)]
        if args.quick
        else [
            (32, 16, 28, 28),
            (32, 64, 28, 28),
            (32, 256, 14, 14),
            (32, 1024, 7, 7),
        ]
    )
    repeat = 5 if args.quick else 21
    rows = []
    for shape in shapes:
        c = shape[1]
        rng = np.random.default_rng(rank)
        x = rng.standard_normal(shape).astype(np.float32)
        dout = rng.standard_normal(shape).astype(np.float32)
        g, b = np.ones(c, np.float32), np.zeros(c, np.float32)
        p = {"mode": "train"}
        _, cache = distributed.sync_batchnorm_forward(x, g, b, p, comm, axis=1)
        _, lcache = bnfast.spatial_batchnorm_forward(
            x, g, b, {"mode": "train"}
        )
        t = {
            "sync fwd": median_time(
                lambda: distributed.sync_batchnorm_forward(
                    x, g, b, p, comm, axis=1
                ),
                comm,
                repeat,
            ),
            "local fwd": median_time(
                lambda: bnfast.spatial_batchnorm_forward(
                    x, g, b, {"mode": "train"}
                ),
                comm,
                repeat,
            ),
            "sync bwd": median_time(
                lambda: distributed.sync_batchnorm_backward(dout, cache),
                comm,
                repeat,
            ),
            "local bwd": median_time(
                lambda: bnfast.spatial_batchnorm_backward(dout, lcache),
                comm,
                repeat,
            ),
        }
        volume = distributed.communication_doubles(c, size)
        rows.append((shape, volume, t))
    if rank == 0:
        lib = MPI.Get_library_version().splitlines()[0].strip()
        print(
            f"synchronized batch norm, {size} ranks, float32 NCHW shard per "
            f"rank, medians of {repeat}; {lib}"
        )
        print(
            f"{'shard (N,C,H,W)':>18} {'fwd sent/recv':>14} "
            f"{'bwd sent/recv':>14} {'sync fwd':>9} {'local fwd':>9} "
            f"{'sync bwd':>9} {'local bwd':>9}   (doubles; us)"
        )
        for shape, volume, t in rows:
            f, bw = volume["forward"], volume["backward"]
            print(
                f"{str(shape):>18} {f'{f[0]}/{f[1]}':>14} "
                f"{f'{bw[0]}/{bw[1]}':>14} "
                + " ".join(
                    f"{t[k] * 1e6:9.1f}"
                    for k in ("sync fwd", "local fwd", "sync bwd", "local bwd")
                )
            )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
