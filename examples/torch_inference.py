"""Run a PyTorch model's batch norm in NumPy: load its state_dict, reproduce
its outputs, and fold the batch norms into the linear layers.

The model is the seeds' shape: Linear -> BatchNorm1d -> ReLU ->
BatchNorm1d -> Linear (a batch norm after a linear layer and one before
one).  It is trained for a few steps so that its running statistics mean
something, saved as a state_dict of NumPy arrays (what an inference
service would ship), then evaluated in NumPy with bnfast layers and again
with everything folded into two matrix products.

    python examples/torch_inference.py

Needs torch (the model's side only); without it, says so and exits 0.
Exits with status 1 if the NumPy outputs differ from PyTorch's.
"""

import sys

import numpy as np

import bnfast


def main():
    try:
        import torch
    except ImportError:
        print("torch is not installed: skipping the PyTorch inference example")
        return 0
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 32),
        torch.nn.BatchNorm1d(32),
        torch.nn.ReLU(),
        torch.nn.BatchNorm1d(32),
        torch.nn.Linear(32, 4),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(50):
        x = torch.randn(64, 8) * 3 + 1
        loss = (model(x) - x[:, :4].sin()).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

    # what ships: NumPy arrays under PyTorch's names
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}

    def sub(prefix):
        return {
            k[len(prefix) :]: v
            for k, v in state.items()
            if k.startswith(prefix)
        }

    bn1, bn2 = bnfast.BatchNorm(32), bnfast.BatchNorm(32)
    bn1.load_state_dict(sub("1."))
    bn2.load_state_dict(sub("3."))
    W0, b0 = state["0.weight"].T, state["0.bias"]  # x @ W: transpose
    W4, b4 = state["4.weight"].T, state["4.bias"]

    x = (
        np.random.default_rng(1).standard_normal((1000, 8)).astype(np.float32)
        * 3
        + 1
    )
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()

    h = np.maximum(bn1(x @ W0 + b0, mode="test"), 0)
    layered = bn2(h, mode="test") @ W4 + b4

    Wa, ba = bnfast.fold_linear_batchnorm(W0, b0, bn1)
    Wb, bb = bnfast.fold_batchnorm_linear(bn2, W4, b4)
    folded = np.maximum(x @ Wa + ba, 0) @ Wb + bb

    err_layered = float(np.abs(layered - expected).max())
    err_folded = float(np.abs(folded - expected).max())
    scale = float(np.abs(expected).max())
    print(
        f"max |NumPy - PyTorch| over {len(x)} samples (outputs up to "
        f"{scale:.2f}): bnfast layers {err_layered:.2e}, folded "
        f"{err_folded:.2e}"
    )
    if max(err_layered, err_folded) > 1e-4 * max(scale, 1.0):
        print("FAILED: the NumPy outputs differ from PyTorch's")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
