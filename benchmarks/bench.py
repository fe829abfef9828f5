"""bnfast benchmark and equivalence report: the same as
``python -m bnfast bench`` (the report ships inside the package, in
bnfast/_bench.py, whose docstring says what it measures; the options are
the same).

    python benchmarks/bench.py --quick         # small sizes (CI)
    python benchmarks/bench.py --help          # every option
"""

import sys

from bnfast._bench import main

if __name__ == "__main__":
    sys.exit(main())
