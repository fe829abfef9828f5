#!/usr/bin/env bash
# Applies the formatters (issue 14, item 7): ruff's safe fixes (import
# order, pyupgrade's safe rewrites), ruff format, clang-format on csrc/.
# What it cannot fix, tools/lint.sh still reports.  The tools are the lint
# extra's pinned versions, from the environment of $PYTHON (default:
# .venv/bin/python if there is one, else python3; `bash tools/lint.sh
# --install` installs them there).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
PATH="$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
# --exit-zero: findings without a safe fix are lint.sh's to report
ruff check --fix --exit-zero --quiet .
ruff format .
clang-format -i csrc/*.c csrc/*.h
