#!/usr/bin/env bash
# Build the HTML documentation (docs/) with warnings as errors, nitpicky
# (-n: every cross-reference must resolve).
#
#   bash tools/build_docs.sh [OUTDIR]      (default: build/docs-html)
#   PYTHON=/path/to/venv/bin/python bash tools/build_docs.sh /tmp/html
#
# autodoc imports the installed bnfast (the Cython extension included), so
# install the package with its docs extra first, into the Python that runs
# this script:   pip install ".[docs]"
# PYTHON picks that interpreter (default: python3).  Nothing is fetched
# over the network (no intersphinx inventories).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$here/build/docs-html}"
mkdir -p "$out" && out="$(cd "$out" && pwd)"
py="${PYTHON:-python3}"
case "$py" in  # a relative path to a venv's python: make it absolute (no symlinks resolved)
    */*) py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")" ;;
esac
# the installed package, not the source tree: run from outside it so that
# "import bnfast" cannot pick up src/ without the compiled extension
cd "$here/docs"
if ! "$py" -c "import bnfast._kernels, sphinx, numpydoc, myst_parser" 2>/dev/null; then
    echo "build_docs.sh: $py cannot import bnfast (with its compiled" \
         "extension), sphinx, numpydoc and myst_parser;" \
         "pip install \".[docs]\" into it, or set PYTHON" >&2
    exit 2
fi
echo "build_docs.sh: bnfast $("$py" -c 'import bnfast; print(bnfast.__version__, bnfast.__file__)')"
exec "$py" -m sphinx -n -W --keep-going -b html -d "$out/.doctrees" "$here/docs" "$out"
