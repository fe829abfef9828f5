"""Train a small MLP with batch norm in plain NumPy.

Synthetic 3-class problem (three interleaved spirals), the network
Linear -> BatchNorm -> ReLU -> Linear -> BatchNorm -> ReLU -> Linear, softmax
cross-entropy, SGD with momentum.  Prints the loss as it falls and the
accuracy on held-out points (using the running statistics: 'test' mode).

    python examples/mlp_train.py

Exits with status 1 if the loss does not fall or the test accuracy stays
below 90%, so that CI notices.
"""

import sys

import numpy as np

import bnfast


def spirals(n_per_class, rng):
    """Points of three interleaved noisy spirals and their class labels."""
    xs, ys = [], []
    for k in range(3):
        r = np.linspace(0.1, 1.0, n_per_class)
        t = np.linspace(k * 4.2, k * 4.2 + 4.0, n_per_class)
        t = t + rng.standard_normal(n_per_class) * 0.2
        xs.append(np.column_stack([r * np.sin(t), r * np.cos(t)]))
        ys.append(np.full(n_per_class, k))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


class Linear:
    """x @ W + b, with its gradients."""

    def __init__(self, n_in, n_out, rng):
        self.params = {
            "W": (
                rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)
            ).astype(np.float32),
            "b": np.zeros(n_out, np.float32),
        }
        self.grads = {}

    def __call__(self, x, mode="train"):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        self.grads = {"W": self.x.T @ dout, "b": dout.sum(axis=0)}
        return dout @ self.params["W"].T


class ReLU:
    params = grads = {}

    def __call__(self, x, mode="train"):
        self.mask = x > 0
        return x * self.mask

    def backward(self, dout):
        return dout * self.mask


def softmax_loss(scores, y):
    shifted = scores - scores.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y]).mean()
    dscores = p
    dscores[np.arange(len(y)), y] -= 1
    return loss, dscores / len(y)


def main():
    rng = np.random.default_rng(0)
    x_train, y_train = spirals(600, rng)
    x_test, y_test = spirals(200, np.random.default_rng(1))
    layers = [
        Linear(2, 128, rng),
        bnfast.BatchNorm(128),
        ReLU(),
        Linear(128, 128, rng),
        bnfast.BatchNorm(128),
        ReLU(),
        Linear(128, 3, rng),
    ]
    velocity = [
        {k: np.zeros_like(v) for k, v in layer.params.items()}
        for layer in layers
    ]
    lr, mu, batch = 0.01, 0.9, 64

    def forward(x, mode):
        for layer in layers:
            x = layer(x, mode)
        return x

    losses = []
    for epoch in range(40):
        order = rng.permutation(len(x_train))
        epoch_loss = []
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            loss, dout = softmax_loss(
                forward(x_train[idx], "train"), y_train[idx]
            )
            for layer in reversed(layers):
                dout = layer.backward(dout)
            for layer, vel in zip(layers, velocity):
                for name, p in layer.params.items():
                    vel[name] = mu * vel[name] - lr * layer.grads[name]
                    p += vel[name]  # in place: the layers' live arrays
            epoch_loss.append(loss)
        losses.append(float(np.mean(epoch_loss)))
        if epoch % 5 == 0 or epoch == 39:
            print(f"epoch {epoch:2d}  loss {losses[-1]:.4f}")
    accuracy = float(np.mean(forward(x_test, "test").argmax(axis=1) == y_test))
    print(f"test accuracy {accuracy:.3f} (running statistics, 'test' mode)")
    if not (losses[-1] < 0.5 * losses[0] and accuracy >= 0.9):
        print("FAILED: the loss did not fall or the accuracy is below 90%")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
