"""Portability check: compile and link csrc for other targets with zig cc.

    pip install ziglang setuptools Cython numpy
    python tools/cross_compile.py                  # every target below
    python tools/cross_compile.py aarch64-macos    # some of them

``zig cc`` (ziglang, from the package index) is a clang that carries the C
libraries of many targets.  For each target the kernel files are compiled
once per SIMD level that setup.py builds there (x86-64: baseline, v3 and v4
with setup.py's flags; aarch64: the portable baseline, whose loops the
compiler vectorizes with NEON), the shared files once, with setup.py's
compile flags plus -Wall -Werror, and everything is linked into a shared
library (undefined symbols are errors on every target), as setup.py would
for the extension (without Python and OpenMP, which these targets' builds
bring themselves).  The flags and file lists are read from setup.py itself,
so the check cannot drift from the build.  Exits 1 if any target fails.
CI runs it (.ci/run).
"""

import os
import runpy
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# target -> (x86-64: the SIMD levels apply, shared library suffix)
TARGETS = {
    "aarch64-linux-gnu": (False, ".so"),
    "x86_64-linux-musl": (True, ".so"),
    "x86_64-macos": (True, ".dylib"),
    "aarch64-macos": (False, ".dylib"),
    "x86_64-windows-gnu": (True, ".dll"),
}


def build_config():
    """setup.py's file lists, SIMD levels and compile flags, read by
    running it with setup() and cythonize() replaced by no-ops."""
    import Cython.Build
    import setuptools

    saved = setuptools.setup, Cython.Build.cythonize
    setuptools.setup = lambda **kw: None
    Cython.Build.cythonize = lambda exts, **kw: exts
    cwd = os.getcwd()
    env = {
        k: os.environ.pop(k)
        for k in ("BNFAST_NATIVE", "CFLAGS")
        if k in os.environ
    }
    try:
        os.chdir(REPO)
        ns = runpy.run_path(
            os.path.join(REPO, "setup.py"), run_name="bnfast_setup"
        )
    finally:
        os.chdir(cwd)
        os.environ.update(env)
        setuptools.setup, Cython.Build.cythonize = saved
    return ns


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        print("  $ " + " ".join(cmd), file=sys.stderr)
        print(r.stdout + r.stderr, file=sys.stderr)
    return r.returncode == 0


def check(target, cfg, tmp):
    x86, suffix = TARGETS[target]
    zig = [sys.executable, "-m", "ziglang", "cc", "-target", target]
    flags = [f for f in cfg["compile_args"]() if f != "-fvisibility=hidden"]
    flags += ["-Wall", "-Werror", "-Icsrc"]
    if target.endswith("-linux-gnu") or target.endswith("-linux-musl"):
        flags.append("-fPIC")
    levels = [("base", [])] + (
        [(s, f) for s, f, _ in cfg["SIMD_LEVELS"]] if x86 else []
    )
    objects, have = [], []
    for isa, isa_flags in levels:
        for src in cfg["KERNEL_SOURCES"]:
            obj = os.path.join(tmp, f"{isa}-{os.path.basename(src)}.o")
            if not run(
                zig
                + ["-c", src, "-o", obj, f"-DBNF_ISA={isa}"]
                + flags
                + isa_flags
            ):
                return False
            objects.append(obj)
        if isa != "base":
            have.append(f"-DBNF_HAVE_{isa.upper()}=1")
    for src in cfg["SHARED_SOURCES"]:
        obj = os.path.join(tmp, f"shared-{os.path.basename(src)}.o")
        if not run(zig + ["-c", src, "-o", obj] + flags + have):
            return False
        objects.append(obj)
    lib = os.path.join(tmp, "libbnfast" + suffix)
    link = ["-shared", "-o", lib] + objects
    if "linux" in target:
        link.append("-Wl,--no-undefined")
    if not run(zig + link + (["-lm"] if "windows" not in target else [])):
        return False
    print(
        f"{target}: {len(levels)} SIMD level(s) "
        f"({', '.join(i for i, _ in levels)}), {len(objects)} objects, "
        f"{os.path.getsize(lib) // 1024} KiB {os.path.basename(lib)}"
    )
    return True


def main(argv):
    targets = argv or list(TARGETS)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        sys.exit(f"unknown target(s) {unknown}; known: {list(TARGETS)}")
    cfg = build_config()
    failed = []
    for target in targets:
        with tempfile.TemporaryDirectory() as tmp:
            cwd = os.getcwd()
            os.chdir(REPO)
            try:
                ok = check(target, cfg, tmp)
            finally:
                os.chdir(cwd)
        if not ok:
            failed.append(target)
    if failed:
        print(
            f"cross_compile: FAILED for {', '.join(failed)}", file=sys.stderr
        )
        return 1
    print(f"cross_compile: {len(targets)} targets OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
