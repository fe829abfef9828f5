"""Threads and the build configuration."""

from __future__ import annotations

import os
import platform
import sys
import warnings
from typing import IO, Any

import numpy as np

from bnfast import _kernels

__all__ = ["set_num_threads", "get_num_threads", "show_config"]


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


MAX_THREADS = _kernels.MAX_THREADS

# where the count set in C came from: None (OpenMP's count), "env"
# (BNFAST_NUM_THREADS at import) or "set" (set_num_threads)
_source: str | None = None


def set_num_threads(n: int | np.integer[Any] | None) -> None:
    """Set the number of threads the kernels use for large inputs.

    Jobs over less than 1 MiB of data always run on one thread (two
    threads pay from there on), larger ones on at most one thread per
    512 KiB.  Without OpenMP (see :func:`show_config`) the kernels run on
    one thread whatever is set.

    The count, in order of precedence: ``set_num_threads(n)``; else the
    environment variable ``BNFAST_NUM_THREADS`` read at import (a value
    that is not an int from 1 to 1024 is ignored with a warning); else
    OpenMP's count, looked up at each large call: what
    ``threadpoolctl.threadpool_limits`` (in the calling thread) or
    ``OMP_NUM_THREADS`` set, else the cores the process may run on.  It is
    at most 1024, and at most half of the threads the process could
    create when it cannot create as many as asked (a limit on processes or
    memory: the first large call finds out, and the count stays lowered).

    A process made by ``os.fork()`` (multiprocessing's 'fork' start
    method) runs the kernels on one thread until it calls
    ``set_num_threads``.  If its parent had already run threaded kernels
    before the fork, it stays on one thread for good: GNU OpenMP's threads
    do not survive ``fork()`` (a parallel region in the child would wait
    forever), so ``set_num_threads(n)`` with n > 1 then warns
    (RuntimeWarning) and keeps one thread; start such workers with the
    'spawn' or 'forkserver' method to give them threads.

    Parameters
    ----------
    n : int from 1 to 1024, or None
        The number of threads; None goes back to the default
        (``BNFAST_NUM_THREADS`` is not read again: OpenMP's count).

    Raises
    ------
    ValueError
        n is not None nor an int from 1 to 1024.

    Examples
    --------
    >>> import bnfast
    >>> bnfast.set_num_threads(1)
    >>> bnfast.get_num_threads()
    1
    >>> bnfast.set_num_threads(None)   # OpenMP's count again
    """
    global _source
    if n is None:
        setting = 0
    elif (
        isinstance(n, bool)
        or not isinstance(n, (int, np.integer))
        or not 1 <= n <= MAX_THREADS
    ):
        raise ValueError(
            f"set_num_threads: n must be an int from 1 to "
            f"{MAX_THREADS} or None (the default), got {n!r}"
        )
    else:
        setting = int(n)
    _source = "set" if setting else None
    if _kernels.set_num_threads(setting):
        warnings.warn(
            f"bnfast.set_num_threads({setting}) in a process made by fork() "
            "after its parent had run threaded kernels: GNU OpenMP's threads "
            "do not survive fork() (a parallel region here would wait "
            "forever), so the kernels stay on one thread in this process; "
            "start worker processes with multiprocessing's 'spawn' or "
            "'forkserver' method to give them threads",
            RuntimeWarning,
            stacklevel=2,
        )


def get_num_threads() -> int:
    """The number of threads a large call from this thread would use now
    (1 without OpenMP, and in a forked child until it calls
    :func:`set_num_threads`); :func:`set_num_threads` says how it is
    chosen.

    Examples
    --------
    >>> import bnfast
    >>> bnfast.get_num_threads() >= 1
    True
    """
    return _kernels.get_num_threads()


def _init_threads() -> None:
    global _source
    env = os.environ.get("BNFAST_NUM_THREADS")
    if not env:
        return
    try:
        n = int(env)
    except ValueError:
        n = 0
    if 1 <= n <= MAX_THREADS:
        _kernels.set_num_threads(n)
        _source = "env"
    else:
        warnings.warn(
            f"BNFAST_NUM_THREADS={env!r} is not an int from 1 to "
            f"{MAX_THREADS}; ignored: the kernels use "
            f"{get_num_threads()} threads (OMP_NUM_THREADS, else "
            "the cores)",
            RuntimeWarning,
            stacklevel=3,
        )


def _init_simd() -> None:
    """BNFAST_SIMD_LEVEL at import: run the kernels at that SIMD level
    (one of _kernels.simd_levels() that this CPU runs) instead of the best
    one; any other value is ignored with a warning."""
    env = os.environ.get("BNFAST_SIMD_LEVEL")
    if not env:
        return
    try:
        _kernels.set_simd_level(env)
    except ValueError as exc:
        warnings.warn(
            f"BNFAST_SIMD_LEVEL={env!r} ignored ({exc}); the "
            f"kernels run at {_kernels.simd_level()}",
            RuntimeWarning,
            stacklevel=3,
        )


def _simd_text() -> str:
    levels = _kernels.simd_levels()
    built = [k for k, (b, _) in levels.items() if b]
    cpu = [k for k, (_, c) in levels.items() if c]
    env = os.environ.get("BNFAST_SIMD_LEVEL")
    return (
        f"{_kernels.simd_level()} (built: {', '.join(built)}; this CPU "
        f"runs up to {cpu[-1]}; chosen at import"
        + (f", BNFAST_SIMD_LEVEL={env}" if env else "")
        + ")"
    )


def _threads_text() -> str:
    setting, forked, poisoned, cap = _kernels._thread_state()
    if not _kernels.have_openmp():
        why = "built without OpenMP"
    elif poisoned:
        why = (
            "forked after threaded kernels had run: one thread in this process"
        )
    elif forked:
        why = "forked child: one thread until set_num_threads"
    elif setting:
        why = "set_num_threads" if _source != "env" else "BNFAST_NUM_THREADS"
    else:
        why = "OpenMP's count: threadpoolctl, OMP_NUM_THREADS, else the cores"
    if cap < MAX_THREADS:
        why += f"; at most {cap}: more threads could not be created"
    return (
        f"{get_num_threads()} ({why}; usable cores: {_usable_cores()}; "
        f"BNFAST_NUM_THREADS={os.environ.get('BNFAST_NUM_THREADS', 'unset')}"
        f", OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
    )


def show_config(file: IO[str] | None = None) -> None:
    """Print how bnfast was built and how it runs here: compiler, flags,
    OpenMP, the SIMD level dispatched to on this CPU, threads.

    Examples
    --------
    >>> import bnfast
    >>> bnfast.show_config()  # doctest: +ELLIPSIS
    bnfast ...
    """
    from bnfast._version import __version__

    try:
        from bnfast._buildinfo import BUILD
    except ImportError:  # built by something other than setup.py
        BUILD = {}
    lines = [
        f"bnfast {__version__}",
        f"  compiler:    {BUILD.get('compiler', 'unknown')}",
        f"  flags:       {BUILD.get('flags', 'unknown')}",
        f"  OpenMP:      {'yes' if _kernels.have_openmp() else 'no'}",
        f"  SIMD level:  {_simd_text()}",
        f"  threads:     {_threads_text()}",
        f"  python:      {platform.python_version()} ({sys.platform}), "
        f"numpy {np.__version__}",
    ]
    print("\n".join(lines), file=file)
