# mypy: ignore-errors
# (the numba peer, copied as it is: untyped)
# Copied as it is from ../shared/peers/numba_bn.py (the team's numba peer); do not tune it.
"""The numba peer for bnfast's benchmark: batch norm as a NumPy user would
write it with numba (njit, no fastmath, not parallel). Statistics are
two-pass in float64; the apply runs in x's dtype as x * scale + shift.
Copy it into the benchmark as it is; do not tune it.

    fwd(x, gamma, beta, eps) -> (y, mean, invstd)       x: (N, D) C-order
    bwd(dy, x, gamma, mean, invstd) -> (dx, dgamma, dbeta)
"""
import numpy as np
import numba


@numba.njit(cache=False)
def fwd(x, g, b, eps):
    N, D = x.shape
    mu = np.zeros(D, np.float64)
    m2 = np.zeros(D, np.float64)
    for i in range(N):
        for j in range(D):
            mu[j] += x[i, j]
    mu /= N
    for i in range(N):
        for j in range(D):
            d = x[i, j] - mu[j]
            m2[j] += d * d
    inv = 1.0 / np.sqrt(m2 / N + eps)
    sc = (g * inv).astype(x.dtype)
    sh = (b - mu * g * inv).astype(x.dtype)
    y = np.empty_like(x)
    for i in range(N):
        for j in range(D):
            y[i, j] = x[i, j] * sc[j] + sh[j]
    return y, mu, inv


@numba.njit(cache=False)
def bwd(dy, x, g, mu, inv):
    N, D = x.shape
    sdy = np.zeros(D, np.float64)
    sdyx = np.zeros(D, np.float64)
    for i in range(N):
        for j in range(D):
            sdy[j] += dy[i, j]
            sdyx[j] += dy[i, j] * (x[i, j] - mu[j])
    dg = sdyx * inv
    k1 = (g * inv).astype(x.dtype)
    k2 = (g * inv * inv * dg / N).astype(x.dtype)
    k3 = (g * inv * sdy / N).astype(x.dtype)
    dx = np.empty_like(x)
    for i in range(N):
        for j in range(D):
            dx[i, j] = k1[j] * dy[i, j] - k2[j] * (x[i, j] - mu[j]) - k3[j]
    return dx, dg, sdy
