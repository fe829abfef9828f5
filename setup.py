"""Build of the one extension module, bnfast._kernels (csrc/*.c + Cython).

Portable by default: baseline x86-64 code with AVX2/AVX-512 clones chosen at
run time (see csrc/internal.h).  BNFAST_NATIVE=1 builds for this CPU only
(-march=native); such a build must not be shipped to other machines.
"""
import glob
import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup


def compile_args():
    if sys.platform == "win32":
        return ["/O2", "/fp:precise"]
    args = ["-O3", "-std=c99", "-ffp-contract=off", "-fno-math-errno",
            "-mprefer-vector-width=512"]
    if os.environ.get("BNFAST_NATIVE") == "1":
        args += ["-march=native", "-DBNF_NO_DISPATCH"]
    return args


ext = Extension(
    "bnfast._kernels",
    sources=["src/bnfast/_kernels.pyx"] + sorted(glob.glob("csrc/*.c")),
    include_dirs=["csrc"],
    depends=sorted(glob.glob("csrc/*.h")),
    extra_compile_args=compile_args(),
)

setup(
    ext_modules=cythonize(
        [ext],
        compiler_directives={"language_level": "3"},
    ),
)
