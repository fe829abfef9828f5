"""Fail on a pragma macro (LANE_LOOP, BNF_LANE_LOOP) that is the unbraced
body of a loop or if: clang-format cannot see that the macro is a pragma
and re-indents the loop after it as if it were outside (.clang-format).

usage: python tools/lint_lane_loops.py [FILE ...]   (default csrc/*.[ch])
"""

import glob
import re
import sys

PRAGMA = re.compile(r"^\s*(BNF_)?LANE_LOOP\s*$")
# the line before the macro heads an unbraced body: `for (...)`,
# `while (...)`, `if (...)`, `else`, `do`
HEADS = re.compile(r"(\)|\belse|\bdo)\s*$")


def main(paths):
    bad = 0
    for path in paths:
        with open(path) as f:
            lines = f.read().split("\n")
        for i, line in enumerate(lines):
            if PRAGMA.match(line) and i and HEADS.search(lines[i - 1]):
                print(
                    f"{path}:{i + 1}: {line.strip()} is an unbraced loop "
                    "body: put the loop it precedes in braces"
                )
                bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    args = sys.argv[1:] or sorted(glob.glob("csrc/*.[ch]"))
    sys.exit(main(args))
