"""An independent NumPy transcription of the seed's five optimizers and the iris task (no torch).

    w ← w − lr · m̂ / (√V̂ + ε),   and 0 where √V̂ + ε = 0

    | optimizer | m̂                                  | V̂                                  |
    | SGD       | g                                   | 1                                   |
    | SGDM      | m = β·m + (1−β)·g, m₀ = 0           | 1                                   |
    | Adagrad   | g                                   | V = V + g², V₀ = 0                  |
    | RMSProp   | g                                   | V = β·V + (1−β)·g², V₀ = 0          |
    | Adam      | m = β₁·m + (1−β₁)·g;  m/(1−β₁ᵗ)     | V = β₂·V + (1−β₂)·g²;  V/(1−β₂ᵗ)    |

    (t counts steps from 1)

The task: one dense layer z = x·W + b (W is 4×3), p = softmax(z), L = mean (p − onehot(y))²
over the batch and the classes; batches of 32 rows in order; float64. Gradients by hand:

    ∂L/∂p = 2·(p − onehot) / (B·C)
    ∂L/∂z = p ⊙ (∂L/∂p − Σ_c ∂L/∂p_c · p_c)          (softmax Jacobian)
    ∂L/∂W = xᵀ · ∂L/∂z,   ∂L/∂b = Σ_rows ∂L/∂z

Each optimizer is a pair of pure functions, ``init(w) -> state`` and
``moments(g, state, t) -> (m̂, V̂, state)``; :func:`step` applies the common update.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

Array = np.ndarray
IRIS = Path(__file__).resolve().parents[1] / "momenta" / "compare" / "data" / "iris.csv"


class Oracle(NamedTuple):
    init: Callable[[Array], Any]
    moments: Callable[[Array, Any, int], tuple[Array, Array, Any]]
    eps: float


def sgd(eps: float = 0.0) -> Oracle:
    return Oracle(lambda w: (), lambda g, s, t: (g, np.ones_like(g), s), eps)


def sgdm(beta: float = 0.9, eps: float = 0.0) -> Oracle:
    def moments(g: Array, m: Array, t: int) -> tuple[Array, Array, Array]:
        m = beta * m + (1 - beta) * g
        return m, np.ones_like(g), m

    return Oracle(np.zeros_like, moments, eps)


def adagrad(eps: float = 0.0) -> Oracle:
    def moments(g: Array, v: Array, t: int) -> tuple[Array, Array, Array]:
        v = v + g * g
        return g, v, v

    return Oracle(np.zeros_like, moments, eps)


def rmsprop(beta: float = 0.9, eps: float = 0.0) -> Oracle:
    def moments(g: Array, v: Array, t: int) -> tuple[Array, Array, Array]:
        v = beta * v + (1 - beta) * g * g
        return g, v, v

    return Oracle(np.zeros_like, moments, eps)


def adam(beta1: float = 0.9, beta2: float = 0.999, eps: float = 0.0) -> Oracle:
    def moments(g: Array, s: tuple[Array, Array], t: int) -> tuple[Array, Array, Any]:
        m, v = s
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        return m / (1 - beta1**t), v / (1 - beta2**t), (m, v)

    return Oracle(lambda w: (np.zeros_like(w), np.zeros_like(w)), moments, eps)


ORACLES: dict[str, Callable[..., Oracle]] = {
    "SGD": sgd,
    "SGDM": sgdm,
    "Adagrad": adagrad,
    "RMSProp": rmsprop,
    "Adam": adam,
}


def step(w: Array, g: Array, state: Any, t: int, lr: float, oracle: Oracle) -> tuple[Array, Any]:
    """w ← w − lr·m̂/(√V̂ + ε), 0 where √V̂ + ε = 0."""
    m_hat, v_hat, state = oracle.moments(g, state, t)
    denominator = np.sqrt(v_hat) + oracle.eps
    direction = np.divide(m_hat, denominator, out=np.zeros_like(m_hat), where=denominator > 0)
    return w - lr * direction, state


# ---------------------------------------------------------------- the iris task


def iris(split_seed: int = 116) -> tuple[Array, Array, Array, Array]:
    """(x_train, y_train, x_test, y_test): rows shuffled by RandomState(116), 120 / 30."""
    table = np.loadtxt(IRIS, delimiter=",", skiprows=1)
    order = np.random.RandomState(split_seed).permutation(len(table))
    x, y = table[order, :4], table[order, 4].astype(np.int64)
    return x[:120], y[:120], x[120:], y[120:]


def softmax(z: Array) -> Array:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def loss_and_gradients(w: Array, b: Array, x: Array, y: Array) -> tuple[float, Array, Array]:
    """L = mean (softmax(x·W + b) − onehot(y))² and its gradients (∂L/∂W, ∂L/∂b)."""
    p = softmax(x @ w + b)
    onehot = np.eye(w.shape[1])[y]
    diff = p - onehot
    loss = float(np.mean(diff**2))
    dp = 2 * diff / diff.size
    dz = p * (dp - np.sum(dp * p, axis=1, keepdims=True))
    return loss, x.T @ dz, dz.sum(axis=0)


def train(
    w: Array,
    b: Array,
    x: Array,
    y: Array,
    oracle: Oracle,
    lr: float = 0.1,
    epochs: int = 1,
    batch_size: int = 32,
) -> list[tuple[Array, Array]]:
    """(W, b) after every step: batches of ``batch_size`` rows in order, ``epochs`` times."""
    state_w, state_b = oracle.init(w), oracle.init(b)
    history, t = [], 0
    for _ in range(epochs):
        for start in range(0, len(y), batch_size):
            t += 1
            _, gw, gb = loss_and_gradients(
                w, b, x[start : start + batch_size], y[start : start + batch_size]
            )
            w, state_w = step(w, gw, state_w, t, lr, oracle)
            b, state_b = step(b, gb, state_b, t, lr, oracle)
            history.append((w.copy(), b.copy()))
    return history
