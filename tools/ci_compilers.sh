#!/usr/bin/env bash
# Build and test bnfast with other compilers than the default GCC: the
# oldest GCC Debian's registry has here (gcc-11, the default of Ubuntu
# 22.04 and RHEL 9, which the target_clones dispatch could not build) and
# clang (with LLVM's OpenMP).  Each gets a fresh venv under WORK
# (default .ci-work), `CC=... pip install ".[test]"` of the tree, then:
#   - show_config (compiler, SIMD levels built, OpenMP);
#   - the SIMD levels' bitwise identity (tests/test_simd_levels.py,
#     tools/simd_identity.py);
#   - the registry's equivalence tests against the reference, the layers
#     and the hostile-input tests (the whole suite runs with the default
#     compiler in CI's first step and again against the wheel);
#   - the same results as the default build: simd_identity.py --compare
#     against the file the default build saved (--save), bitwise.
#
#   tools/ci_compilers.sh [gcc-11 clang-14 ...]
#
# Installs the compilers with apt-get when they are missing (as root, or
# through sudo).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${WORK:-$repo/.ci-work}
py=${PYTHON:-python3}
compilers=("$@")
[[ ${#compilers[@]} -gt 0 ]] || compilers=(gcc-11 clang-14)
mkdir -p "$work"

packages=()
for cc in "${compilers[@]}"; do
  command -v "$cc" >/dev/null || packages+=("$cc")
  [[ $cc == clang-* ]] && packages+=("libomp-${cc#clang-}-dev")
done
if [[ ${#packages[@]} -gt 0 ]]; then
  sudo=""; [[ $(id -u) == 0 ]] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${packages[@]}"
fi

# the default build's results, to compare each compiler's with
"$repo/.venv/bin/python" "$repo/tools/simd_identity.py" --save "$work/results-default.npz"

for cc in "${compilers[@]}"; do
  printf '\n=== %s\n' "$cc: build and test"
  "$cc" --version | head -1
  venv="$work/venv-$cc"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  # a copy of the tree: the build must not reuse the default build's
  # objects (build/) or extension (src/bnfast)
  src="$work/src-$cc"
  rm -rf "$src"
  mkdir -p "$src"
  (cd "$repo" && git ls-files -z | xargs -0 tar cf -) | tar xf - -C "$src"
  CC=$cc "$venv/bin/pip" install -q "$src[test]"
  (cd "$work" && "$venv/bin/python" -c "import bnfast; bnfast.show_config()")
  (cd "$work" && "$venv/bin/python" - "$cc" <<'PY'
import sys
import bnfast
from bnfast._buildinfo import BUILD
cc = sys.argv[1]
assert "site-packages" in bnfast.__file__, bnfast.__file__
assert BUILD["compiler"].split()[0] == cc, BUILD["compiler"]
assert BUILD["openmp"], "no OpenMP with " + cc
if bnfast._kernels.simd_levels()["x86-64-v3"][1]:  # an AVX2 machine
    assert BUILD["simd_levels"] == ["baseline", "x86-64-v3", "x86-64-v4"]
PY
  )
  (cd "$src" && "$venv/bin/python" -m pytest -q -p no:cacheprovider -x \
     tests/test_simd_levels.py tests/test_equivalence.py tests/test_layers.py \
     tests/test_hostile.py)
  "$venv/bin/python" "$src/tools/simd_identity.py" --compare "$work/results-default.npz"
done
printf '\n%s\n' "ci_compilers: ${compilers[*]} built and passed"
