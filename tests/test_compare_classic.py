"""The default ``compare()`` run equals a plain-torch transcription of the classic experiment.

The transcription below uses nothing of momenta: it reads the shipped iris.csv with NumPy,
shuffles as the classic does (``np.random.seed(116); np.random.shuffle``), initialises
W (4×3) then b (3) from one generator, and writes the five update rules out by hand. Its
initialisation is compare's own call (``torch.nn.init.trunc_normal_``), so that the runs
start from the same bits; test_compare.py checks those values against an independent
computation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")

from momenta.compare import compare  # noqa: E402

IRIS = Path(__file__).resolve().parents[1] / "momenta" / "compare" / "data" / "iris.csv"
LR, EPOCHS, BATCH = 0.1, 500, 32


def classic_data():
    table = np.loadtxt(IRIS, delimiter=",", skiprows=1)
    x_data, y_data = table[:, :4], table[:, 4].astype(np.int64)
    np.random.RandomState(116).shuffle(x_data)  # = np.random.seed(116); np.random.shuffle(x)
    np.random.RandomState(116).shuffle(y_data)
    x_train, y_train = torch.tensor(x_data[:-30], dtype=torch.float32), torch.tensor(y_data[:-30])
    x_test, y_test = torch.tensor(x_data[-30:], dtype=torch.float32), torch.tensor(y_data[-30:])
    return x_train, y_train, x_test, y_test


def classic_init():
    generator = torch.Generator().manual_seed(1)
    w1 = torch.nn.init.trunc_normal_(torch.empty(4, 3), std=0.1, a=-0.2, b=0.2, generator=generator)
    b1 = torch.nn.init.trunc_normal_(torch.empty(3), std=0.1, a=-0.2, b=0.2, generator=generator)
    return w1, b1


def classic_update(name, state, t, p, g):
    """One step of ``name`` on tensor p (in place); ``state`` holds m and V of p.

    The formulas of the seed, in torch.optim's order of float operations
    (``p.add_(m̂ / √V̂, alpha=−lr)``, ``(1−β)·g·g``, ``√V / √(1−β₂ᵗ)``), so float32 agrees to
    the last bit, which RMSProp's oscillating phase needs: it amplifies any rounding difference.
    """
    if name == "sgd":
        p.add_(g, alpha=-LR)
    elif name == "sgdm":
        state["m"] = 0.9 * state.get("m", torch.zeros_like(p)) + (1 - 0.9) * g
        p.add_(state["m"], alpha=-LR)
    elif name == "adagrad":
        state["v"] = state.get("v", torch.zeros_like(p)) + g * g
        p.add_(g / state["v"].sqrt(), alpha=-LR)
    elif name == "rmsprop":
        state["v"] = 0.9 * state.get("v", torch.zeros_like(p)) + (1 - 0.9) * g * g
        p.add_(g / state["v"].sqrt(), alpha=-LR)
    elif name == "adam":
        state["m"] = 0.9 * state.get("m", torch.zeros_like(p)) + (1 - 0.9) * g
        state["v"] = 0.999 * state.get("v", torch.zeros_like(p)) + (1 - 0.999) * g * g
        v_hat_sqrt = state["v"].sqrt() / (1 - 0.999**t) ** 0.5
        p.add_(state["m"] / v_hat_sqrt, alpha=-LR / (1 - 0.9**t))


def classic_run(name):
    x_train, y_train, x_test, y_test = classic_data()
    w1, b1 = classic_init()
    states = [{}, {}]
    t = 0
    losses, accuracies = [], []
    for _ in range(EPOCHS):
        loss_all = 0.0
        for start in range(0, len(y_train), BATCH):
            xb, yb = x_train[start : start + BATCH], y_train[start : start + BATCH]
            w1.requires_grad_(True)
            b1.requires_grad_(True)
            y = torch.softmax(xb @ w1 + b1, dim=1)
            loss = torch.mean(torch.square(torch.nn.functional.one_hot(yb, 3).float() - y))
            grads = torch.autograd.grad(loss, [w1, b1])
            loss_all += loss.item()
            t += 1
            with torch.no_grad():
                for p, g, state in zip([w1, b1], grads, states):
                    classic_update(name, state, t, p, g)
        losses.append(loss_all / 4)
        with torch.no_grad():
            pred = torch.argmax(x_test @ w1 + b1, dim=1)
        accuracies.append(float((pred == y_test).sum()) / len(y_test))
    return losses, accuracies


@pytest.fixture(scope="module")
def default_result():
    return compare()


@pytest.mark.parametrize("name", ["sgd", "sgdm", "adagrad", "rmsprop", "adam"])
def test_default_run_equals_plain_torch(default_result, name):
    run = default_result.results[name].runs[0]
    losses, accuracies = classic_run(name)
    assert run.epochs_done == EPOCHS and run.status == "ok"
    assert run.train_loss == losses  # bit for bit
    assert run.test_acc == accuracies
    assert run.steps == EPOCHS * 4


def test_default_configuration(default_result):
    c = default_result.config
    assert c.optimizers == ("sgd", "sgdm", "adagrad", "rmsprop", "adam")
    assert (c.lr, c.epochs, c.batch_size, c.seed, c.split_seed) == (None, 500, 32, 1, 116)
    assert {c.hyperparameters(name)["lr"] for name in c.optimizers} == {0.1}  # the classic lr
    assert (c.data, c.model, c.loss, c.repeats) == ("iris", "linear", "mse", 1)
    assert default_result.dataset["train_rows"] == 120
    assert default_result.dataset["test_rows"] == 30
    for r in default_result.results.values():  # the classic outcome: every optimizer learns iris
        assert r.runs[0].final_test_acc == 1.0
        assert r.runs[0].final_train_loss < 0.04
