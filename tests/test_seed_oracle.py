"""momenta.seed against an independent NumPy transcription of its formulas (tests/seed_oracle.py).

Both train the iris task (4→3 softmax, MSE, batch 32, lr 0.1, float64) from the same weights;
after every step the parameters agree to rtol 1e-9.
"""

from __future__ import annotations

import numpy as np
import pytest
import seed_oracle as oracle
import torch

from momenta import seed

CASES = [  # (seed class, oracle factory, hyperparameters)
    ("SGD", {}),
    ("SGDM", {}),
    ("SGDM", {"beta": 0.5}),
    ("Adagrad", {}),
    ("Adagrad", {"eps": 1e-3}),
    ("RMSProp", {}),
    ("RMSProp", {"beta": 0.99, "eps": 1e-6}),
    ("Adam", {}),
    ("Adam", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-8}),
]
EPOCHS = 3


def initial_weights(n_features: int = 4, seed_: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed_)
    return rng.normal(0, 0.1, (n_features, 3)), rng.normal(0, 0.1, 3)


def train_seed(name, hyper, w0, b0, x, y, epochs=EPOCHS, lr=0.1):
    """The same loop with momenta.seed.<name>, in float64 torch."""
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
    opt = getattr(seed, name)([w, b], lr=lr, **hyper)
    xt, yt = torch.tensor(x), torch.tensor(y)
    history = []
    for _ in range(epochs):
        for start in range(0, len(yt), 32):
            xb, yb = xt[start : start + 32], yt[start : start + 32]
            p = torch.softmax(xb @ w + b, dim=1)
            loss = torch.mean((p - torch.nn.functional.one_hot(yb, 3).to(p.dtype)) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append((w.detach().numpy().copy(), b.detach().numpy().copy()))
    return history


@pytest.mark.parametrize(("name", "hyper"), CASES, ids=lambda v: str(v) if v else "defaults")
def test_seed_matches_numpy_oracle(name, hyper):
    x, y, _, _ = oracle.iris()
    w0, b0 = initial_weights()
    expected = oracle.train(w0, b0, x, y, oracle.ORACLES[name](**hyper), epochs=EPOCHS)
    actual = train_seed(name, hyper, w0, b0, x, y)
    assert len(actual) == len(expected) == EPOCHS * 4
    for k, ((w, b), (w_ref, b_ref)) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(w, w_ref, rtol=1e-9, atol=1e-15, err_msg=f"W, step {k + 1}")
        np.testing.assert_allclose(b, b_ref, rtol=1e-9, atol=1e-15, err_msg=f"b, step {k + 1}")
    assert not np.allclose(actual[-1][0], w0), "training moved nothing: the test proves nothing"


@pytest.mark.parametrize("name", list(oracle.ORACLES))
def test_zero_gradient_rows_stay_put(name):
    """An all-zero feature column gives g = 0 forever in its row of W: V̂ = 0 there, step 0."""
    x, y, _, _ = oracle.iris()
    x = np.hstack([x, np.zeros((len(x), 1))])
    w0, b0 = initial_weights(n_features=5)
    expected = oracle.train(w0, b0, x, y, oracle.ORACLES[name](), epochs=1)
    actual = train_seed(name, {}, w0, b0, x, y, epochs=1)
    w, b = actual[-1]
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(b))
    np.testing.assert_array_equal(w[4], w0[4])
    np.testing.assert_allclose(w, expected[-1][0], rtol=1e-9, atol=1e-15)


def test_oracle_gradients_match_finite_differences():
    """The oracle's analytic gradient is itself right (central differences, float64)."""
    x, y, _, _ = oracle.iris()
    x, y = x[:32], y[:32]
    w, b = initial_weights()
    _, gw, gb = oracle.loss_and_gradients(w, b, x, y)
    h = 1e-6
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            up, down = w.copy(), w.copy()
            up[i, j] += h
            down[i, j] -= h
            numeric = (
                oracle.loss_and_gradients(up, b, x, y)[0]
                - oracle.loss_and_gradients(down, b, x, y)[0]
            ) / (2 * h)
            assert numeric == pytest.approx(gw[i, j], rel=1e-5, abs=1e-10)
    for j in range(b.shape[0]):
        up, down = b.copy(), b.copy()
        up[j] += h
        down[j] -= h
        numeric = (
            oracle.loss_and_gradients(w, up, x, y)[0] - oracle.loss_and_gradients(w, down, x, y)[0]
        ) / (2 * h)
        assert numeric == pytest.approx(gb[j], rel=1e-5, abs=1e-10)


def test_oracle_formulas_by_hand():
    """Two Adam steps on a scalar, written out: m̂₁ = g₁, V̂₁ = g₁², so the first step is lr·sign."""
    o = oracle.adam()
    w, state = np.array([1.0]), o.init(np.array([1.0]))
    w, state = oracle.step(w, np.array([2.0]), state, 1, 0.1, o)
    assert w == pytest.approx([0.9])
    m = 0.9 * 0.1 * 2.0 + 0.1 * -1.0  # m₁ = 0.2, m₂ = 0.9·0.2 + 0.1·(−1)
    v = 0.999 * 0.001 * 4.0 + 0.001 * 1.0
    w, _ = oracle.step(w, np.array([-1.0]), state, 2, 0.1, o)
    expected = 0.9 - 0.1 * (m / (1 - 0.9**2)) / np.sqrt(v / (1 - 0.999**2))
    assert w == pytest.approx([expected], rel=1e-12)
