"""float32 data is computed in float32 arithmetic (issue 11), and what no
peer has stays: on data offset by 1e2 to 1e4 times its spread, and on a
trend along the batch, bnfast's float32 output (and dx) is at least 10x
closer to a float64 computation than the NumPy reference's float32 result
(or within 2 ulps of the result where the reference is itself that
close), in every family and kernel path.  (PyTorch's float32 error, the
other half of the promise, is compared in test_torch_crosscheck.py.)"""

import numpy as np
import pytest

import bnfast
from bnfast import reference

RNG = np.random.default_rng(11)


def _data(kind, shape, offset):
    x = RNG.standard_normal(shape)
    if kind == "offset":
        x = x + offset
    else:  # a trend along the batch: the mean drifts by offset * spread
        n = shape[0]
        x = x + np.linspace(0, offset, n).reshape(
            (n,) + (1,) * (len(shape) - 1)
        )
    return x


def _families():
    """(name, shape, forward(module, x) -> (out, dx))"""

    def bn(layout):
        def run(m, x):
            x = np.asfortranarray(x) if layout == "F" else x
            d = x.shape[1]
            out, cache = m.batchnorm_forward(
                x,
                np.full(d, 1.5, x.dtype),
                np.full(d, 0.25, x.dtype),
                {"mode": "train"},
            )
            dout = np.cos(np.arange(x.size)).reshape(x.shape).astype(x.dtype)
            return out, m.batchnorm_backward(dout, cache)[0]

        return run

    def spatial(axis):
        def run(m, x):
            c = x.shape[axis]
            out, cache = m.spatial_batchnorm_forward(
                x,
                np.full(c, 1.5, x.dtype),
                np.full(c, 0.25, x.dtype),
                {"mode": "train"},
                axis=axis,
            )
            dout = np.cos(np.arange(x.size)).reshape(x.shape).astype(x.dtype)
            return out, m.spatial_batchnorm_backward(dout, cache)[0]

        return run

    def ln(m, x):
        d = x.shape[1]
        out, cache = m.layernorm_forward(
            x, np.full(d, 1.5, x.dtype), np.full(d, 0.25, x.dtype), {}
        )
        dout = np.cos(np.arange(x.size)).reshape(x.shape).astype(x.dtype)
        return out, m.layernorm_backward(dout, cache)[0]

    def gn(m, x):
        c = x.shape[1]
        out, cache = m.spatial_groupnorm_forward(
            x, np.full(c, 1.5, x.dtype), np.full(c, 0.25, x.dtype), 2, {}
        )
        dout = np.cos(np.arange(x.size)).reshape(x.shape).astype(x.dtype)
        return out, m.spatial_groupnorm_backward(dout, cache)[0]

    return [
        ("batchnorm C (across rows)", (4096, 24), bn("C")),
        ("batchnorm F (along runs)", (4096, 24), bn("F")),
        ("spatial NCHW", (64, 8, 12, 12), spatial(1)),
        ("spatial NHWC", (64, 12, 12, 8), spatial(-1)),
        ("layernorm", (64, 2048), ln),
        ("groupnorm", (16, 8, 16, 16), gn),
    ]


@pytest.mark.parametrize(
    "kind,offset",
    [("offset", 1e2), ("offset", 1e3), ("offset", 1e4), ("trend", 1e3)],
)
@pytest.mark.parametrize(
    "name,shape,run", _families(), ids=[f[0] for f in _families()]
)
def test_float32_error_is_a_tenth_of_the_references(
    name, shape, run, kind, offset
):
    if name in ("layernorm", "groupnorm") and kind == "trend":
        pytest.skip(
            "statistics per sample: a trend along the batch is an "
            "offset per sample, covered by the offset rows"
        )
    x64 = _data(kind, shape, offset)
    x32 = x64.astype(np.float32)
    oracle = run(
        reference, x32.astype(np.float64)
    )  # float32 values, exact math
    fast = run(bnfast, x32)
    ref = run(reference, x32)
    for what, f, r, o in zip(("out", "dx"), fast, ref, oracle):
        err_fast = float(np.max(np.abs(f - o)))
        err_ref = float(np.max(np.abs(r - o)))
        # where the reference is itself within a few ulps, nothing in
        # float32 does 10x better than rounding the result: then 2 ulps
        floor = 2 * np.finfo(np.float32).eps * float(np.max(np.abs(o)))
        assert err_fast <= max(0.1 * err_ref, floor), (
            f"{name} {kind} {offset:g} {what}: bnfast float32 error "
            f"{err_fast:.3g} > 1/10 of the reference's {err_ref:.3g} "
            f"(and > 2 ulps of the result, {floor:.3g})"
        )
        if what == "out" and kind == "offset" and offset >= 1e3:
            # the case the promise is about: the reference is far off
            assert err_ref > 10 * floor, (name, err_ref, floor)
