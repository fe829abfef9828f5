"""bnfast in type-checked code: a small training step with every family.

A linear layer followed by batch norm and a ReLU fused into it, trained
for a few SGD steps on random regression data with the functional API
(bnfast.batchnorm_forward / batchnorm_backward, the running statistics
in bn_param); then the layers (BatchNorm with a residual, LayerNorm,
RMSNorm, GroupNorm) and their functional twins once each, the caches'
attributes, and the thread settings.

    python examples/typed_usage.py
    mypy --strict examples/typed_usage.py

Both must pass (CI runs them, and tests/test_typing.py runs mypy): mypy
reads bnfast's annotations and the stub of its extension module through
the installed package's py.typed.  Exits with status 1 if the loss does
not fall.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import numpy.typing as npt

import bnfast
from bnfast.functional import BatchNormCache, LayerNormCache

Array = npt.NDArray[np.float64]


def linear_bn_relu_step(
    x: Array,
    y: Array,
    W: Array,
    gamma: Array,
    beta: Array,
    bn_param: dict[str, Any],
    lr: float,
) -> float:
    """One SGD step of relu(bn(x @ W)) -> mean over features, squared
    error against y; updates W, gamma and beta in place."""
    h = x @ W
    out, cache = bnfast.batchnorm_forward(
        h, gamma, beta, bn_param, activation="relu"
    )
    pred = out.mean(axis=1)
    err = pred - y
    loss = float(np.mean(err**2))
    dout = np.repeat((2.0 * err / err.size)[:, None], out.shape[1], axis=1)
    dh, dgamma, dbeta = bnfast.batchnorm_backward(dout, cache)
    # gamma and beta were given: their gradients are arrays, not None
    assert dgamma is not None and dbeta is not None
    W -= lr * (x.T @ dh)
    gamma -= lr * dgamma
    beta -= lr * dbeta
    return loss


def describe(cache: BatchNormCache) -> str:
    """What a batch norm cache holds (its public, read-only attributes)."""
    gamma = "None" if cache.gamma is None else str(cache.gamma.shape)
    return (
        f"x{cache.shape} {cache.x.dtype}, mean {cache.mean.shape}, "
        f"invstd {cache.invstd.dtype}, gamma {gamma}, frozen "
        f"{cache.frozen}, relu {cache.relu}"
    )


def main() -> int:
    rng = np.random.default_rng(0)
    n, d_in, d = 256, 8, 16
    x = rng.standard_normal((n, d_in))
    y = np.tanh(x[:, 0] - 0.5 * x[:, 1])
    W = rng.standard_normal((d_in, d)) / np.sqrt(d_in)
    gamma, beta = np.ones(d), np.zeros(d)
    bn_param: dict[str, Any] = {"mode": "train", "momentum": 0.9}

    losses = [
        linear_bn_relu_step(x, y, W, gamma, beta, bn_param, lr=0.5)
        for _ in range(30)
    ]
    running_mean: Array = bn_param["running_mean"]
    print(
        f"functional batch norm + ReLU: loss {losses[0]:.4f} -> "
        f"{losses[-1]:.4f}; running mean of feature 0 "
        f"{running_mean[0]:.4f}"
    )

    # 'test' mode with the running statistics; its cache is frozen
    bn_param["mode"] = "test"
    _, frozen = bnfast.batchnorm_forward(x @ W, gamma, beta, bn_param)
    print("frozen cache:", describe(frozen))

    # the fused residual: the backward returns dresidual too
    z = rng.standard_normal((n, d))
    _, res_cache = bnfast.batchnorm_forward(
        x @ W, None, None, {"mode": "train"}, residual=z
    )
    dx, dgamma, dbeta, dz = bnfast.batchnorm_backward(
        np.ones((n, d)), res_cache
    )
    print(
        f"residual backward: dx {dx.shape}, dgamma {dgamma}, "
        f"dbeta {dbeta}, dresidual {dz.shape}"
    )

    # layers: a channels-last BatchNorm with a fused residual, then
    # LayerNorm, RMSNorm and GroupNorm on (batch, tokens, features) and
    # (batch, channels, height, width) data
    images = rng.standard_normal((4, 6, 5, 5)).astype(np.float32)
    bn = bnfast.BatchNorm(6, axis=1, activation="relu")
    out = bn(images)
    bn.forward(images, residual=out)
    grads = bn.backward(np.ones_like(images))
    if isinstance(grads, tuple):  # (dx, dresidual) after residual=
        dx_img, dres = grads
        print(
            f"BatchNorm: dx {dx_img.shape}, dresidual {dres.shape}, "
            f"params {sorted(bn.params)}"
        )

    tokens = rng.standard_normal((2, 3, 8))
    ln = bnfast.LayerNorm(8, dtype=np.float64)
    rms = bnfast.RMSNorm(8, dtype=np.float64)
    gn = bnfast.GroupNorm(2, 6, dtype=np.float32)
    pairs: list[
        tuple[
            bnfast.LayerNorm | bnfast.RMSNorm | bnfast.GroupNorm,
            npt.NDArray[np.floating[Any]],
        ]
    ] = [(ln, tokens), (rms, tokens), (gn, images)]
    for layer, data in pairs:
        y_layer = layer(data)
        dx_layer = layer.backward(np.ones_like(y_layer))
        print(
            f"{layer!r}: out {y_layer.dtype} {y_layer.shape}, "
            f"dx {dx_layer.shape}"
        )

    # the functional twins of the layers
    ln_out, ln_cache = bnfast.layernorm_forward(
        tokens, np.ones(8), np.zeros(8), {"eps": 1e-5}, normalized_shape=8
    )
    ln_grads = bnfast.layernorm_backward(np.ones_like(ln_out), ln_cache)
    layer_cache: LayerNormCache = ln_cache
    rms_out, rms_cache = bnfast.rmsnorm_forward(tokens, None, {})
    rms_dx, rms_dgamma = bnfast.rmsnorm_backward(
        np.ones_like(rms_out), rms_cache
    )
    gn_out, gn_cache = bnfast.spatial_groupnorm_forward(
        images, np.ones(6, np.float32), np.zeros(6, np.float32), 3, {}
    )
    gn_dx, gn_dgamma, gn_dbeta = bnfast.spatial_groupnorm_backward(
        np.ones_like(gn_out), gn_cache
    )
    dgamma_shape = None if gn_dgamma is None else gn_dgamma.shape
    print(
        f"layer norm: {len(ln_grads)} gradients, mean per row "
        f"{layer_cache.mean.shape}; RMS norm: dgamma {rms_dgamma} "
        f"(affine-free), dx {rms_dx.dtype}; group norm: "
        f"{gn_cache.groups} groups, dgamma {dgamma_shape}, dx "
        f"{gn_dx.shape}, dbeta {gn_dbeta is not None}"
    )

    # threads and the build
    bnfast.set_num_threads(1)
    threads: int = bnfast.get_num_threads()
    bnfast.set_num_threads(None)
    print(f"threads after set_num_threads(1): {threads}")
    bnfast.show_config()

    if not losses[-1] < losses[0]:
        print("the loss did not fall", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
