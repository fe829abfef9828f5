"""What layer norm promises beyond the generic tests over the registry of
families (tests/families.py: equivalence, finite differences, out=,
errors, threads): exact constant rows, rows read in place."""

import numpy as np
import pytest

import bnfast


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 7, 5000])
def test_layernorm_constant_row_gives_beta_exactly(dtype, d):
    x = np.random.default_rng(22).standard_normal((3, d)).astype(dtype)
    x[1] = -1e4 + 0.1
    beta = np.linspace(-1, 1, d).astype(dtype)
    out, cache = bnfast.layernorm_forward(x, np.full(d, 2.5, dtype), beta, {})
    assert np.array_equal(out[1], beta)
    dx, _, _ = bnfast.layernorm_backward(np.ones_like(x), cache)
    assert np.all(dx[1] == 0.0)


def test_layernorm_reads_rows_in_place():
    x = np.random.default_rng(23).standard_normal((20, 6))[::2]
    _, cache = bnfast.layernorm_forward(x, np.ones(6), np.zeros(6), {})
    assert np.shares_memory(cache.x, x)
