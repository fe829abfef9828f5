#!/usr/bin/env bash
# Every linter and formatter in check mode (issue 14, item 7); changes
# nothing and exits non-zero on any finding.  tools/format.sh applies the
# formatters.
#
#     bash tools/lint.sh [--install]
#
# The tools are the lint extra's pinned versions, run from the Python
# environment of $PYTHON (default: .venv/bin/python if there is one, else
# python3).  --install first pip-installs them there, read from
# pyproject.toml's lint extra (without building bnfast, as
# `pip install ".[lint]"` would).
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
if [ "${1:-}" = "--install" ]; then
    reqs=$("$py" -c 'import tomllib
with open("pyproject.toml", "rb") as f:
    meta = tomllib.load(f)
print(" ".join(meta["project"]["optional-dependencies"]["lint"]))') || exit 1
    # shellcheck disable=SC2086  # one word per requirement
    "$py" -m pip install -q $reqs || exit 1
fi
# the environment's scripts (ruff, clang-format, cython-lint, and the
# pycodestyle that cython-lint runs from PATH)
bin=$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
PATH="$bin:$PATH"

csrc=(csrc/*.c csrc/*.h)
pyx=(src/bnfast/*.pyx src/bnfast/*.pxd)
failed=()
run() {
    printf '+ %s\n' "$*"
    "$@" || failed+=("$1")
}
run ruff check .
run ruff format --check .
run clang-format --dry-run -Werror "${csrc[@]}"
run cython-lint "${pyx[@]}"
run "$py" tools/lint_lane_loops.py "${csrc[@]}"
# clang-format leaves comments as they are wrapped (.clang-format)
run awk 'length > 79 { print FILENAME ":" FNR ": over 79 columns"; bad = 1 }
         END { exit bad }' "${csrc[@]}"

if [ ${#failed[@]} -gt 0 ]; then
    echo "lint: findings from ${failed[*]} (tools/format.sh fixes the" \
         "formatting, the rest is by hand)" >&2
    exit 1
fi
echo "lint: clean"
