"""Build of the one extension module, bnfast._kernels (csrc/*.c + Cython).

Portable by default: the kernel files (csrc/*.c but the shared ones below)
are compiled once per SIMD level, the baseline and on x86-64 also x86-64-v3
(AVX2, FMA, F16C) and x86-64-v4 (AVX-512), each level's names suffixed
(csrc/internal.h); csrc/dispatch.c picks the best level the CPU runs, once,
through a table of function pointers.  This needs no GCC 12, no ifunc and no
target_clones: GCC >= 8, clang and MSVC build it; a level whose flags the
compiler rejects is left out (with a warning).  BNFAST_SIMD_LEVELS=baseline
builds the baseline only.  BNFAST_NATIVE=1 builds one level for this CPU
only (-march=native); such a build must not be shipped to other machines.

Debug information is left out (-g0: the kernels are 10 MB with it) unless
CFLAGS asks for it with -g (tools/sanitize.sh does).

OpenMP is used when the compiler supports it (probed at build time);
BNFAST_NO_OPENMP=1 builds without it.  Without OpenMP the kernels run on one
thread and the build says so.  The build writes bnfast/_buildinfo.py, which
bnfast.show_config() reports.
"""

import glob
import os
import platform
import sys
import tempfile
import textwrap

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# compiled once (the baseline) ...
SHARED_SOURCES = ["csrc/dispatch.c", "csrc/threads.c", "csrc/bench_copy.c"]
# ... and the kernels, once per SIMD level
KERNEL_SOURCES = sorted(set(glob.glob("csrc/*.c")) - set(SHARED_SOURCES))

# SIMD levels beyond the baseline: (suffix of the names, GCC/clang flags,
# MSVC flags).  The GCC/clang flags name each feature (not
# -march=x86-64-v3, which GCC < 11 and clang < 12 do not know); they are
# the features dispatch.c checks for.  Contraction stays off
# (-ffp-contract=off in every level): FMA instructions would change results.
V3_FLAGS = [
    "-msse4.2",
    "-mpopcnt",
    "-mavx",
    "-mavx2",
    "-mfma",
    "-mf16c",
    "-mbmi",
    "-mbmi2",
    "-mlzcnt",
    "-mmovbe",
]
SIMD_LEVELS = [
    ("v3", V3_FLAGS, ["/arch:AVX2"]),
    (
        "v4",
        V3_FLAGS
        + [
            "-mavx512f",
            "-mavx512bw",
            "-mavx512cd",
            "-mavx512dq",
            "-mavx512vl",
            "-mprefer-vector-width=512",
        ],
        ["/arch:AVX512"],
    ),
]


def simd_levels():
    """The levels to build beyond the baseline (setup.py's docstring)."""
    if (
        not X86_64
        or os.environ.get("BNFAST_NATIVE") == "1"
        or os.environ.get("BNFAST_SIMD_LEVELS") == "baseline"
    ):
        return []
    return SIMD_LEVELS


def compile_args():
    if sys.platform == "win32":
        # /fp:precise: no contraction (MSVC 2022 contracts only with
        # /fp:contract or /fp:fast)
        return ["/O2", "/fp:precise"]
    # -fno-trapping-math: nothing reads the floating-point exception flags,
    # and without it GCC will not if-convert a select whose arms multiply
    # (the fused ReLU's gradient gate stayed a scalar loop with a branch,
    # 3-60x slower than the plain backward).  Results are unchanged: it
    # permits no reassociation and no change of rounding.
    args = [
        "-O3",
        "-std=c99",
        "-ffp-contract=off",
        "-fno-math-errno",
        "-fno-trapping-math",
    ]
    if "-g" not in os.environ.get("CFLAGS", "").split():
        args.append("-g0")
    # the kernels' names stay inside the module (PyInit is exported by
    # its own attribute)
    args.append("-fvisibility=hidden")
    if os.environ.get("BNFAST_NATIVE") == "1":
        args += ["-march=native"]
    return args


class BuildExt(build_ext):
    """build_ext that probes OpenMP and records the build configuration."""

    def msvc(self):
        return self.compiler.compiler_type == "msvc"

    def openmp_flag(self):
        if os.environ.get("BNFAST_NO_OPENMP") == "1":
            return None, "disabled by BNFAST_NO_OPENMP=1"
        # MSVC's plain /openmp is OpenMP 2.0, which has no min reduction
        # (threads.c); /openmp:llvm is 3.1 and later (VS 2019 16.9)
        flag = "/openmp:llvm" if self.msvc() else "-fopenmp"
        src = (
            "#include <omp.h>\n"
            "int main(void) { return omp_get_max_threads() < 1; }\n"
        )
        error = self.probe(src, [flag], link=True)
        if error is not None:
            return None, f"the compiler rejected {flag}: {error}"
        return flag, None

    def probe(self, src, flags, link=False):
        """Compile (and with link, link) the C source src with flags: None
        when that works, else the compiler's or linker's error."""
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "probe.c")
            with open(path, "w") as f:
                f.write(src)
            try:
                objs = self.compiler.compile(
                    [path], output_dir=tmp, extra_postargs=flags
                )
                if link:
                    self.compiler.link_executable(
                        objs, "probe", output_dir=tmp, extra_postargs=flags
                    )
            except Exception as exc:  # any compiler or linker failure
                return exc
        return None

    def build_kernels(self, ext):
        """Compile the kernel files once per SIMD level into objects linked
        into ext; returns the names of the levels built."""
        built = ["baseline"]
        levels = [("base", [], [])] + simd_levels()
        for suffix, flags, msvc_flags in levels:
            flags = msvc_flags if self.msvc() else flags
            probe = "int bnf_probe(int a) { return a + 1; }\n"
            if suffix != "base" and self.probe(probe, flags) is not None:
                print(
                    f"warning: the compiler rejects {' '.join(flags)}; "
                    f"bnfast builds without its {suffix} kernels",
                    file=sys.stderr,
                )
                continue
            objects = self.compiler.compile(
                KERNEL_SOURCES,
                output_dir=os.path.join(self.build_temp, "simd", suffix),
                macros=list(ext.define_macros) + [("BNF_ISA", suffix)],
                include_dirs=ext.include_dirs,
                extra_postargs=ext.extra_compile_args + flags,
                depends=ext.depends,
            )
            ext.extra_objects = list(ext.extra_objects or []) + objects
            if suffix != "base":
                ext.define_macros = list(ext.define_macros) + [
                    (f"BNF_HAVE_{suffix.upper()}", "1")
                ]
                built.append(f"x86-64-{suffix}")
        return built

    def build_extensions(self):
        flag, why_not = self.openmp_flag()
        for ext in self.extensions:
            if flag:
                ext.extra_compile_args = ext.extra_compile_args + [
                    flag,
                    "-DBNF_OPENMP=1",
                ]
                ext.extra_link_args = ext.extra_link_args + [flag]
        if not flag:
            print(
                f"warning: bnfast builds without OpenMP ({why_not}); the "
                "kernels will run on one thread",
                file=sys.stderr,
            )
        ext = self.extensions[0]
        levels = self.build_kernels(ext)
        info = {
            "compiler": " ".join(
                getattr(self.compiler, "compiler_so", None)
                or [self.compiler.compiler_type]
            ),
            "flags": " ".join(ext.extra_compile_args),
            "openmp": bool(flag),
            "simd_levels": levels,
            "platform": platform.platform(),
            "python": platform.python_version(),
        }
        # beside the extension; and in the source tree for editable builds,
        # whose build directory is temporary
        dirs = {os.path.dirname(self.get_ext_fullpath(ext.name))}
        if self.inplace or getattr(self, "editable_mode", False):
            dirs.add(os.path.join("src", "bnfast"))
        for d in dirs:
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "_buildinfo.py"), "w") as f:
                f.write(
                    textwrap.dedent('''\
                    """Written by setup.py at build time: how bnfast was
                    built."""
                    BUILD = {!r}
                    ''').format(info)
                )
        super().build_extensions()


ext = Extension(
    "bnfast._kernels",
    sources=["src/bnfast/_kernels.pyx"] + SHARED_SOURCES,
    include_dirs=["csrc", numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    depends=sorted(glob.glob("csrc/*.h")),
    extra_compile_args=compile_args(),
)

setup(
    ext_modules=cythonize(
        [ext],
        compiler_directives={"language_level": "3"},
    ),
    cmdclass={"build_ext": BuildExt},
)
