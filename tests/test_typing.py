"""bnfast is a typed package: py.typed and the extension module's stub are
installed with it, and mypy --strict passes on bnfast itself (-p bnfast)
and on examples/typed_usage.py, and rejects misuse (so the annotations
are not Any), against the bnfast being tested.  The mypy test needs mypy
(``pip install "bnfast[typing]"``) and skips without it."""

import importlib.resources
import pathlib
import subprocess
import sys

import pytest

import bnfast

EXAMPLE = (
    pathlib.Path(__file__).resolve().parent.parent
    / "examples"
    / "typed_usage.py"
)


def test_py_typed_and_stub_installed():
    package = importlib.resources.files("bnfast")
    assert package.joinpath("py.typed").is_file()
    assert package.joinpath("_kernels.pyi").is_file()
    assert package.joinpath("_typing.py").is_file()


def test_stub_names_the_extension_module():
    """Every public name of bnfast._kernels that Python code calls is in
    the stub (a name added to the .pyx without it would be Any to mypy,
    or an error)."""
    stub = (
        importlib.resources.files("bnfast")
        .joinpath("_kernels.pyi")
        .read_text()
    )
    for name in dir(bnfast._kernels):
        if name.startswith("__") or name in ("np", "numbers", "_sys_modules"):
            continue
        assert (
            f"def {name}(" in stub
            or f"class {name}(" in stub
            or f"class {name}:" in stub
            or f"\n{name}:" in stub
        ), name


MISUSE = """\
import numpy as np
import bnfast

x = np.ones((3, 2))
out, cache = bnfast.batchnorm_forward(x, None, None, {"mode": "train"})
dx, dgamma = bnfast.batchnorm_backward(x, cache)
bnfast.layernorm_backward(x, cache)
bnfast.set_num_threads("2")
"""


def _mypy(args, cwd):
    """mypy --strict's errors and its whole report, run on args in cwd
    (away from any configuration of the tree) with this interpreter: mypy
    finds bnfast where its site-packages has it (the installed package,
    or an editable install's source) and reads its py.typed."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(cwd / ".mypy_cache"),
            "--python-executable",
            sys.executable,
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = result.stdout + result.stderr
    return [line for line in report.splitlines() if "error:" in line], report


@pytest.mark.skipif(not EXAMPLE.is_file(), reason="no examples/ here")
def test_mypy_strict(tmp_path):
    pytest.importorskip("mypy")
    errors, report = _mypy(["-p", "bnfast"], tmp_path)
    assert not errors, report
    misuse = tmp_path / "misuse.py"
    misuse.write_text(MISUSE)
    errors, report = _mypy([str(EXAMPLE), str(misuse)], tmp_path)
    assert not [e for e in errors if "misuse.py" not in e], report
    # the misuse: each of the three calls rejected
    expected = [
        "Too many values to unpack",
        '"layernorm_backward"',
        '"set_num_threads"',
    ]
    assert len(errors) == len(expected), report
    for text in expected:
        assert any(text in e for e in errors), (text, report)
