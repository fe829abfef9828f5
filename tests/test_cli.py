"""The command line, ``python -m bnfast``: info, bench, usage, version and
exit statuses, each in a fresh interpreter started from a temporary
directory (the installed package, not the source tree, is what runs).
The report's speed is never asserted; bench runs its smallest case."""

import json
import os
import subprocess
import sys

import pytest

import bnfast

BENCH_SHIM = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "benchmarks",
    "bench.py",
)


def run(args, cwd, timeout=120):
    """``python -m bnfast *args`` in cwd, on one thread."""
    return python(["-m", "bnfast", *args], cwd, timeout)


def python(argv, cwd, timeout=120):
    """``python *argv`` (this interpreter) in cwd, on one thread."""
    env = dict(os.environ, BNFAST_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_info(tmp_path):
    r = run(["info"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"bnfast {bnfast.__version__}" in r.stdout
    assert f"SIMD level:  {bnfast._kernels.simd_level()}" in r.stdout
    for field in ("compiler:", "OpenMP:", "threads:"):
        assert field in r.stdout, r.stdout


@pytest.mark.parametrize(
    "args", [["--help"], ["-h"], []], ids=["--help", "-h", "no-argument"]
)
def test_usage(tmp_path, args):
    r = run(args, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python -m bnfast"), r.stdout
    assert "bench" in r.stdout and "info" in r.stdout, r.stdout


def test_version(tmp_path):
    r = run(["--version"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"bnfast {bnfast.__version__}"


@pytest.mark.parametrize(
    "args,named",
    [
        (["frobnicate"], "frobnicate"),  # no such command
        (["--quick"], "--quick"),  # a bench option without bench
        (["info", "--all"], "--all"),  # info takes no option
        (["bench", "--no-such-option"], "--no-such-option"),
        (["bench", "--family", "nosuchfamily"], "nosuchfamily"),
        (["bench", "--quick", "--sweep"], "not allowed with"),
    ],
)
def test_bad_usage(tmp_path, args, named):
    r = run(args, tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "usage: python -m bnfast" in r.stderr, r.stderr
    assert named in r.stderr, r.stderr


def test_bench_help(tmp_path):
    r = run(["bench", "--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python -m bnfast bench"), r.stdout
    for option in (
        "--quick",
        "--sweep",
        "--median-of",
        "--torch-entry",
        "--repeat",
        "--half",
        "--json",
        "--threads",
        "--family",
    ):
        assert option in r.stdout, option


def test_bench_quick(tmp_path):
    """The smallest report the options allow: one family, quick sizes, one
    repeat; bnfast's equivalence section passes and the JSON says so.
    The peers are hidden (modules torch and numba that raise ImportError,
    first on the path: the working directory) so that it takes seconds
    where they are installed too (their import and numba's compiling take
    half a minute here); CI's quick report runs them."""
    for peer in ("torch", "numba"):
        (tmp_path / f"{peer}.py").write_text(
            f"raise ImportError('{peer} hidden by test_cli')\n"
        )
    out = tmp_path / "bench.json"
    r = run(
        [
            "bench",
            "--quick",
            "--family",
            "batchnorm",
            "--repeat",
            "1",
            "--json",
            str(out),
        ],
        tmp_path,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    section = r.stdout.split("== Equivalence", 1)[1].split("\n== ", 1)[0]
    rows = [
        line for line in section.splitlines() if line.startswith("batchnorm ")
    ]
    assert rows and all(" PASS " in line for line in rows), section
    assert r.stdout.rstrip().endswith("equivalence: PASS"), r.stdout[-2000:]
    report = json.loads(out.read_text())
    assert report["pass"] is True
    assert {rec["family"] for rec in report["timing"]} == {"batchnorm"}
    assert report["machine"]["torch"] == "not installed"


def test_bench_fail_exit_status(tmp_path):
    """An equivalence FAIL makes the exit status 1 (through
    ``python -m bnfast``'s main): here with zero tolerances and the
    timing sections left out, so that it takes a second."""
    for peer in ("torch", "numba"):
        (tmp_path / f"{peer}.py").write_text("raise ImportError\n")
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from bnfast import _bench\n"
        "from bnfast.__main__ import main\n"
        "_bench.TOLERANCE = {np.float32: 0.0, np.float64: 0.0}\n"
        "_bench.accuracy_section = _bench.timing_section = \\\n"
        "    _bench.half_section = lambda *args: None\n"
        "sys.exit(main(['bench', '--quick', '--family', 'layernorm']))\n"
    )
    r = python(["-c", code], tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.rstrip().endswith("equivalence: FAIL"), r.stdout


def test_bench_median_of(tmp_path):
    """--median-of reads JSON only (no measurement): forwarded unchanged."""
    run_json = {
        "timing": [
            {
                "family": "batchnorm",
                "op": "forward-train",
                "dtype": "float32",
                "shape": [64, 256],
                "groups": None,
                "x_bytes": 65536,
                "fresh_copy_in_copies": 1.0,
                "median_s": {
                    "bnfast": 1e-5,
                    "reference": 1e-4,
                    "torch": 2e-5,
                    "numba": None,
                    "roofline": 5e-6,
                },
            }
        ],
        "accuracy": {},
    }
    paths = []
    for i in range(2):
        path = tmp_path / f"run{i}.json"
        path.write_text(json.dumps(run_json))
        paths.append(str(path))
    r = run(["bench", "--median-of", *paths], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("medians over 2 runs"), r.stdout
    assert "2.00x over 1 rows  [HOLDS]" in r.stdout, r.stdout


def test_bench_importable_without_peers(tmp_path):
    """The report imports without PyTorch and numba (their columns stay
    empty), and ``import bnfast`` does not import the report."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = sys.modules['numba'] = None\n"
        "import bnfast\n"
        "assert 'bnfast._bench' not in sys.modules\n"
        "from bnfast import _bench\n"
        "_bench.import_peers()\n"
        "assert _bench.torch is None and _bench.numba_bn is None\n"
        "assert _bench.installed_peers() == []\n"
    )
    r = python(["-c", code], tmp_path)
    assert r.returncode == 0, r.stderr
    # where they are installed, the peers are imported by the report's
    # main(), not on import
    code = (
        "import sys\n"
        "from bnfast import _bench\n"
        "assert 'torch' not in sys.modules, 'torch'\n"
        "assert 'numba' not in sys.modules, 'numba'\n"
    )
    r = python(["-c", code], tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(
    not os.path.exists(BENCH_SHIM), reason="no benchmarks/ beside tests/"
)
def test_bench_shim(tmp_path):
    """benchmarks/bench.py is the same report."""
    r = python([BENCH_SHIM, "--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--median-of" in r.stdout and "--torch-entry" in r.stdout
