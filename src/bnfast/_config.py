"""Threads and the build configuration."""
import os
import platform
import sys
import warnings

import numpy as np

from bnfast import _kernels

__all__ = ["set_num_threads", "get_num_threads", "show_config"]


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_num_threads(n):
    """Set the number of threads the kernels use for large inputs.

    Jobs over less than 1 MiB of data always run on one thread (two
    threads pay from there on), larger ones on at most one thread per
    512 KiB.
    Without OpenMP (see :func:`show_config`) the kernels run on one thread
    whatever is set.  The default is ``BNFAST_NUM_THREADS`` when set, else
    the cores this process may run on.

    Examples
    --------
    >>> import bnfast
    >>> bnfast.set_num_threads(1)
    >>> bnfast.get_num_threads()
    1
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"the number of threads must be an int >= 1, got {n!r}")
    _kernels.set_num_threads(int(n))


def get_num_threads():
    """The number of threads the kernels use for large inputs (1 without
    OpenMP)."""
    return _kernels.get_num_threads()


def _init_threads():
    env = os.environ.get("BNFAST_NUM_THREADS")
    n = _usable_cores()
    if env:
        try:
            n = int(env)
            if n < 1:
                raise ValueError
        except ValueError:
            warnings.warn(f"BNFAST_NUM_THREADS={env!r} is not an int >= 1; "
                          f"using {_usable_cores()} threads", RuntimeWarning,
                          stacklevel=3)
            n = _usable_cores()
    _kernels.set_num_threads(n)


def show_config(file=None):
    """Print how bnfast was built and how it runs here: compiler, flags,
    OpenMP, the SIMD level dispatched to on this CPU, threads.

    Examples
    --------
    >>> import bnfast
    >>> bnfast.show_config()  # doctest: +ELLIPSIS
    bnfast ...
    """
    from bnfast import __version__
    try:
        from bnfast._buildinfo import BUILD
    except ImportError:  # built by something other than setup.py
        BUILD = {}
    lines = [
        f"bnfast {__version__}",
        f"  compiler:    {BUILD.get('compiler', 'unknown')}",
        f"  flags:       {BUILD.get('flags', 'unknown')}",
        f"  OpenMP:      {'yes' if _kernels.have_openmp() else 'no'}",
        f"  SIMD level:  {_kernels.simd_level()} (dispatched at run time)",
        f"  threads:     {get_num_threads()} (usable cores: "
        f"{_usable_cores()}; BNFAST_NUM_THREADS="
        f"{os.environ.get('BNFAST_NUM_THREADS', 'unset')})",
        f"  python:      {platform.python_version()} ({sys.platform}), "
        f"numpy {np.__version__}",
    ]
    print("\n".join(lines), file=file)
