"""bnfast is a typed package: py.typed and the extension module's stub are
installed with it, and mypy --strict passes on examples/typed_usage.py
(and rejects misuse, so the annotations are not Any) against the bnfast
being tested.  The mypy test needs mypy (``pip install "bnfast[typing]"``)
and skips without it."""
import importlib.resources
import os
import pathlib
import subprocess
import sys

import pytest

import bnfast

EXAMPLE = (pathlib.Path(__file__).resolve().parent.parent / "examples"
           / "typed_usage.py")


def test_py_typed_and_stub_installed():
    package = importlib.resources.files("bnfast")
    assert package.joinpath("py.typed").is_file()
    assert package.joinpath("_kernels.pyi").is_file()
    assert package.joinpath("_typing.py").is_file()


def test_stub_names_the_extension_module():
    """Every public name of bnfast._kernels that Python code calls is in
    the stub (a name added to the .pyx without it would be Any to mypy,
    or an error)."""
    stub = importlib.resources.files("bnfast").joinpath(
        "_kernels.pyi").read_text()
    for name in dir(bnfast._kernels):
        if name.startswith("__") or name in ("np", "numbers",
                                             "_sys_modules"):
            continue
        assert (f"def {name}(" in stub or f"class {name}(" in stub
                or f"class {name}:" in stub or f"\n{name}:" in stub), name


MISUSE = '''\
import numpy as np
import bnfast

x = np.ones((3, 2))
out, cache = bnfast.batchnorm_forward(x, None, None, {"mode": "train"})
dx, dgamma = bnfast.batchnorm_backward(x, cache)
bnfast.layernorm_backward(x, cache)
bnfast.set_num_threads("2")
'''


@pytest.mark.skipif(not EXAMPLE.is_file(), reason="no examples/ here")
def test_mypy_strict(tmp_path):
    pytest.importorskip("mypy")
    misuse = tmp_path / "misuse.py"
    misuse.write_text(MISUSE)
    # mypy finds bnfast where this interpreter's site-packages has it (the
    # installed package, or an editable install's source), and reads its
    # py.typed; run in tmp_path, away from any configuration of the tree
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", os.devnull, "--python-executable", sys.executable,
         str(EXAMPLE), str(misuse)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    report = result.stdout + result.stderr
    errors = [line for line in report.splitlines() if ": error:" in line]
    assert not [e for e in errors if "typed_usage.py" in e], report
    # the misuse: each of the three calls rejected
    expected = ["Too many values to unpack", '"layernorm_backward"',
                '"set_num_threads"']
    assert len(errors) == len(expected), report
    for text in expected:
        assert any(text in e for e in errors), (text, report)
