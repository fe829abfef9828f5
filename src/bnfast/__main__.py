"""The bnfast command line: ``python -m bnfast bench|info``.

    python -m bnfast info              # bnfast.show_config()
    python -m bnfast bench --quick     # the benchmark/equivalence report
    python -m bnfast bench --help      # the report's options
    python -m bnfast --version

``bench`` passes the rest of the command line, unchanged, to the report
(bnfast/_bench.py, the same as the repository's benchmarks/bench.py); it
is imported only then, since it imports PyTorch and numba when they are
installed.  Exit status: 0 on success, 2 on bad usage, 1 when the
report's equivalence section FAILs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

PROG = "python -m bnfast"


def _parser() -> argparse.ArgumentParser:
    from bnfast import __version__

    ap = argparse.ArgumentParser(
        prog=PROG,
        description="bnfast: fast batch normalization for NumPy on the CPU.",
    )
    ap.add_argument(
        "--version", action="version", version=f"bnfast {__version__}"
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    # bench is dispatched before parsing (its options are the report's own);
    # it is here for the usage and the help
    sub.add_parser(
        "bench",
        add_help=False,
        help="the benchmark and equivalence report (options: "
        f"{PROG} bench --help; PyTorch and numba columns "
        "with pip install 'bnfast[bench]')",
    )
    sub.add_parser(
        "info",
        help="how bnfast was built and runs here: "
        "version, compiler, flags, OpenMP, SIMD "
        "level, threads (bnfast.show_config())",
    )
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default sys.argv[1:]) and return
    its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "bench":
        from bnfast._bench import main as bench_main

        return bench_main(argv[1:], prog=f"{PROG} bench")
    ap = _parser()
    args = ap.parse_args(argv)
    if args.command == "info":
        import bnfast

        bnfast.show_config()
        return 0
    ap.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
