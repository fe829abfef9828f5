"""Build of the one extension module, bnfast._kernels (csrc/*.c + Cython).

Portable by default: baseline x86-64 code with AVX2/AVX-512 clones chosen at
run time (see csrc/internal.h).  BNFAST_NATIVE=1 builds for this CPU only
(-march=native); such a build must not be shipped to other machines.

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


def compile_args():
    if sys.platform == "win32":
        return ["/O2", "/fp:precise"]
    # -fno-trapping-math: nothing reads the floating-point exception flags,
    # and without it GCC will not if-convert a select whose arms multiply
    # (the fused ReLU's gradient gate stayed a scalar loop with a branch,
    # 3-60x slower than the plain backward).  Results are unchanged: it
    # permits no reassociation and no change of rounding.
    args = ["-O3", "-std=c99", "-ffp-contract=off", "-fno-math-errno",
            "-fno-trapping-math"]
    if X86_64:
        args.append("-mprefer-vector-width=512")
    if os.environ.get("BNFAST_NATIVE") == "1":
        args += ["-march=native", "-DBNF_NO_DISPATCH"]
    return args


class BuildExt(build_ext):
    """build_ext that probes OpenMP and records the build configuration."""

    def openmp_flag(self):
        if os.environ.get("BNFAST_NO_OPENMP") == "1":
            return None, "disabled by BNFAST_NO_OPENMP=1"
        flag = "/openmp" if self.compiler.compiler_type == "msvc" else "-fopenmp"
        src = "#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n"
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "probe.c")
            with open(path, "w") as f:
                f.write(src)
            try:
                objs = self.compiler.compile([path], output_dir=tmp,
                                             extra_postargs=[flag])
                self.compiler.link_executable(objs, "probe", output_dir=tmp,
                                              extra_postargs=[flag])
            except Exception as exc:  # any compiler or linker failure
                return None, f"the compiler rejected {flag}: {exc}"
        return flag, None

    def build_extensions(self):
        flag, why_not = self.openmp_flag()
        for ext in self.extensions:
            if flag:
                ext.extra_compile_args = ext.extra_compile_args + [
                    flag, "-DBNF_OPENMP=1"]
                ext.extra_link_args = ext.extra_link_args + [flag]
        if not flag:
            print(f"warning: bnfast builds without OpenMP ({why_not}); the "
                  "kernels will run on one thread", file=sys.stderr)
        ext = self.extensions[0]
        info = {
            "compiler": " ".join(getattr(self.compiler, "compiler_so", None)
                                 or [self.compiler.compiler_type]),
            "flags": " ".join(ext.extra_compile_args),
            "openmp": bool(flag),
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
                f.write(textwrap.dedent('''\
                    """Written by setup.py at build time: how bnfast was
                    built."""
                    BUILD = {!r}
                    ''').format(info))
        super().build_extensions()


ext = Extension(
    "bnfast._kernels",
    sources=["src/bnfast/_kernels.pyx"] + sorted(glob.glob("csrc/*.c")),
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
