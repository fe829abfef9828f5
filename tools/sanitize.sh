#!/usr/bin/env bash
# Build bnfast with AddressSanitizer + UndefinedBehaviorSanitizer and run the
# test suite under it, without touching the build in src/bnfast.
#
#   tools/sanitize.sh                       # the whole suite
#   tools/sanitize.sh -x -q tests/test_out.py   # extra args go to pytest
#
# How: the working-tree files that git tracks (uncommitted edits included;
# untracked files too with BNFAST_SANITIZE_UNTRACKED=1) are copied into a
# scratch directory (mktemp -d, removed on exit; BNFAST_SANITIZE_KEEP=1 keeps
# it).  A throwaway venv there gets setuptools>=77, Cython>=3.1, numpy>=2 and
# pytest (and hypothesis when a test imports it; never torch or mpi4py: the
# tests that need them skip).  `setup.py build_ext --inplace` builds the copy
# with the sanitizer flags in CFLAGS (which recent setuptools puts in place of
# Python's own CFLAGS, older ones after them: -fno-wrapv wins over Python's
# -fwrapv either way), LDFLAGS and CC (see below); setup.py's -O3, target
# clones and -fopenmp stay.  The script checks the flags on the compile line
# and libasan/libubsan in the extension.  pytest then runs in the copy with
# only its src/ on PYTHONPATH (bnfast.__file__ is printed and checked),
# libasan and libubsan preloaded (Python itself is not instrumented),
# PYTHONMALLOC=malloc and UBSan fatal; pytest runs with --capture=sys so
# that reports reach the terminal even when the process aborts, and they are
# printed again at the end (ASan's from log files, UBSan's from a copy of
# stderr).  Any report makes the script fail.
#
# Environment: PYTHON (default python3) makes the venv; BNFAST_NO_OPENMP and
# BNFAST_NATIVE reach setup.py as usual; ASAN_OPTIONS / UBSAN_OPTIONS given
# are appended to the script's own; BNFAST_SANITIZE_EXTRA_CFLAGS is added to
# the sanitizer flags.
set -euo pipefail

t_start=$(date +%s.%N)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
san_flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -fno-wrapv -g"
# e.g. "-fsanitize-recover=alignment" (with UBSAN_OPTIONS=halt_on_error=0)
# to list every misaligned access instead of stopping at the first
san_flags+=${BNFAST_SANITIZE_EXTRA_CFLAGS:+ $BNFAST_SANITIZE_EXTRA_CFLAGS}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bnfast-sanitize.XXXXXX")
status=0
phase=setup
declare -A took=()
t_phase=$t_start

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
mark() {  # end the current phase, start the next
  local now; now=$(date +%s.%N)
  took[$phase]=$(elapsed "$t_phase" "$now")
  t_phase=$now
  phase=$1
}
step() { printf '\n=== %s\n' "$*"; }

finish() {
  status=$?
  mark done
  local logs=() f
  # UBSan's reports go to stderr (see below), copied to stderr.log
  if [[ -s $tmp/stderr.log ]] && grep -q 'runtime error:' "$tmp/stderr.log"; then
    step "UBSAN REPORTS (first 12 frames each)"
    awk '/runtime error:/ { on = 1; print; next }
         on && /^    #[0-9]+ / { if (substr($1, 2) + 0 < 12) print; next }
         on && (/^0x[0-9a-f]+: note:/ || /^ /) { print; next }
         { on = 0 }' "$tmp/stderr.log"
    mkdir -p "$tmp/sanitizer-logs"
    grep -A200 'runtime error:' "$tmp/stderr.log" >"$tmp/sanitizer-logs/ubsan-stderr"
    [[ $status -ne 0 ]] || status=1
  fi
  logs=()
  if [[ -d $tmp/sanitizer-logs ]]; then
    for f in "$tmp"/sanitizer-logs/*; do [[ -s $f ]] && logs+=("$f"); done
  fi
  if ((${#logs[@]})); then
    for f in "${logs[@]}"; do
      [[ ${f##*/} == ubsan-stderr ]] && continue  # printed above
      step "ASAN REPORT ${f##*/}"; cat "$f"
    done
    local keep; keep=$(mktemp -d "${TMPDIR:-/tmp}/bnfast-sanitize-logs.XXXXXX")
    cp "${logs[@]}" "$keep/"
    echo "reports kept in $keep"
    [[ $status -ne 0 ]] || status=1
  fi
  if [[ ${BNFAST_SANITIZE_KEEP:-0} == 1 ]]; then
    echo "scratch copy kept in $tmp"
  else
    rm -rf "$tmp"
  fi
  local total; total=$(elapsed "$t_start" "$(date +%s.%N)")
  printf '\n=== sanitize.sh %s in %ss (copy+venv %ss, build %ss, tests %ss)\n' \
    "$([[ $status -eq 0 ]] && echo passed || echo "FAILED (exit $status)")" \
    "$total" "${took[setup]:-0}" "${took[build]:-0}" "${took[tests]:-0}"
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

step "copy of the working tree in $tmp/src"
src=$tmp/src
mkdir -p "$src"
ls_args=(--cached)
[[ ${BNFAST_SANITIZE_UNTRACKED:-0} == 1 ]] && ls_args+=(--others --exclude-standard)
# files git knows, as they are in the working tree now (deleted ones skipped)
git -C "$repo" ls-files -z "${ls_args[@]}" |
  (cd "$repo" && while IFS= read -r -d '' f; do
     [[ -e $f || -L $f ]] && printf '%s\0' "$f"
   done | tar --null -T - -cf -) |
  tar -xf - -C "$src"
echo "$(find "$src" -type f | wc -l) files"

step "throwaway venv ($py)"
"$py" -m venv "$tmp/venv"
vpy=$tmp/venv/bin/python
pkgs=("setuptools>=77" "Cython>=3.1" "numpy>=2" "pytest>=7")
if grep -rqsE '^\s*(import|from) hypothesis' "$src/tests"; then pkgs+=(hypothesis); fi
"$vpy" -m pip install -q "${pkgs[@]}" >"$tmp/pip.log" 2>&1 ||
  { cat "$tmp/pip.log"; echo "pip install failed" >&2; exit 1; }
"$vpy" -m pip list --format=freeze 2>/dev/null | grep -iE '^(setuptools|cython|numpy|pytest|hypothesis)=' | tr '\n' ' '
echo

mark build
step "build with $san_flags"
cd "$src"
# CFLAGS reaches the compile and shared-link lines, LDFLAGS the shared link;
# neither reaches the link of setup.py's OpenMP probe executable (distutils'
# linker_exe is bare $CC), which then fails on the __asan_* symbols and the
# build silently goes serial: so the sanitizer flag rides on CC as well.
cc=${CC:-$("$vpy" -c 'import sysconfig; print(sysconfig.get_config_var("CC") or "cc")')}
CC="$cc -fsanitize=address,undefined" CFLAGS="$san_flags" LDFLAGS="$san_flags" \
  "$vpy" setup.py build_ext --inplace >"$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log"; echo "build failed" >&2; exit 1; }
# setuptools' build_ext --inplace builds in build/ and copies only the .so
# back, so setup.py's _buildinfo.py (read by show_config, checked by
# tests/test_threads.py) stays in build/lib*: copy it beside the .so
if [[ ! -e src/bnfast/_buildinfo.py ]]; then
  cp build/lib*/bnfast/_buildinfo.py src/bnfast/
fi
# the flags must be on the compiler's command line and the runtimes linked in
cc_line=$(grep -E -- ' -c csrc/batchnorm\.c ' "$tmp/build.log" | head -1)
echo "${cc_line:-no compile line for csrc/batchnorm.c found}"
for flag in -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-wrapv; do
  [[ " $cc_line " == *" $flag "* ]] || { echo "$flag missing from the compile line" >&2; exit 1; }
done
so=$(ls "$src"/src/bnfast/_kernels*.so)
needed=$(readelf -d "$so" | grep NEEDED | sed 's/.*\[\(.*\)\]/\1/' | tr '\n' ' ')
echo "$so needs: $needed"
[[ $needed == *libasan* && $needed == *libubsan* ]] ||
  { echo "the extension is not linked with libasan and libubsan" >&2; exit 1; }

mark tests
step "pytest under ASan+UBSan"
libasan=$(gcc -print-file-name=libasan.so)
libubsan=$(gcc -print-file-name=libubsan.so)
[[ -e $libasan && -e $libubsan ]] || { echo "libasan/libubsan not found" >&2; exit 1; }
mkdir -p "$tmp/sanitizer-logs"
# Only the Python processes get these (never this shell: a sanitizer runtime
# preloaded into date or rm would, among other things, recreate log_path's
# directory after the cleanup).
# detect_leaks=0: CPython's own are not ours; abort_on_error: SIGABRT, so
# that pytest's faulthandler can print the Python stack (which test) too.
asan_opts="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:log_path=$tmp/sanitizer-logs/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
san_env=(env
  LD_PRELOAD="$libasan:$libubsan${LD_PRELOAD:+:$LD_PRELOAD}"
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
  PYTHONMALLOC=malloc
  PYTHONPATH="$src/src"
  PYTHONDONTWRITEBYTECODE=1)
"${san_env[@]}" ASAN_OPTIONS="$asan_opts" "$vpy" - "$src" <<'PY'
import sys, bnfast
print("bnfast from", bnfast.__file__)
print("kernels from", bnfast._kernels.__file__)
assert bnfast.__file__.startswith(sys.argv[1] + "/src/bnfast/"), bnfast.__file__
bnfast.show_config()
PY
# pytest --capture=sys: the sanitizers write to fd 2, which pytest's default
# fd capture would keep (and lose when the process aborts).  ASan's reports
# go to the log files; UBSan's to stderr (its log_path is never applied:
# libubsan's call to __sanitizer_set_report_path binds to the preloaded
# libasan's copy), so stderr is also copied to stderr.log.
run_pytest() {  # extra ASAN_OPTIONS, pytest args...
  local opts=$1; shift
  { "${san_env[@]}" ASAN_OPTIONS="$asan_opts$opts" \
      "$vpy" -m pytest -p no:cacheprovider --capture=sys "$@" 2>&1 1>&3 3>&- |
      tee -a "$tmp/stderr.log" >&2; } 3>&1
  return "${PIPESTATUS[0]}"
}
# The RSS leak tests measure resident memory over 10,000 calls; ASan keeps
# freed blocks in its quarantine (256 MB) to catch use-after-free, so the
# resident memory grows by design and they fail without any leak.  They run
# in a second pass with the quarantine off (everything else still checked).
rss_tests=tests/test_concurrency.py::test_no_leak_over_ten_thousand_calls
set +e
run_pytest "" --deselect "$rss_tests" "$@"
status=$?
if [[ $status -eq 0 || $status -eq 5 ]]; then
  step "pytest: the RSS leak tests, ASan quarantine off"
  run_pytest ":quarantine_size_mb=0" "$@" -k "${rss_tests##*::}"
  s2=$?
  # 5: nothing selected (the arguments left the leak tests out)
  if [[ $s2 -ne 5 ]]; then
    [[ $status -eq 5 ]] && status=$s2 || { [[ $s2 -eq 0 ]] || status=$s2; }
  fi
fi
set -e
exit "$status"
