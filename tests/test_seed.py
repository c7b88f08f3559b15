"""The seed's five optimizers: formulas as written, validation, and no NaN where V = 0."""

from __future__ import annotations

import pytest
import torch

import momenta
from momenta import seed

CLASSES = [seed.SGD, seed.SGDM, seed.Adagrad, seed.RMSProp, seed.Adam]


def _param():
    return torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("cls", CLASSES)
def test_lr_is_required(cls):
    with pytest.raises(TypeError, match="lr"):
        cls([_param()])


@pytest.mark.parametrize("cls", CLASSES)
def test_invalid_lr(cls):
    with pytest.raises(ValueError, match="Invalid learning rate: -0.1"):
        cls([_param()], lr=-0.1)
    with pytest.raises(TypeError, match="Invalid learning rate: 'x'"):
        cls([_param()], lr="x")


@pytest.mark.parametrize(
    "cls,kwargs,message",
    [
        (seed.SGDM, dict(beta=1.0), "Invalid beta value: 1.0"),
        (seed.RMSProp, dict(beta=-0.1), "Invalid beta value: -0.1"),
        (seed.Adam, dict(beta1=1.5), "Invalid beta1 value: 1.5"),
        (seed.Adam, dict(beta2=1.0), "Invalid beta2 value: 1.0"),
        (seed.Adagrad, dict(eps=-1.0), "Invalid epsilon value: -1.0"),
        (seed.Adam, dict(eps=float("nan")), "Invalid epsilon value: nan"),
    ],
)
def test_invalid_hyperparameters_name_the_argument(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls([_param()], lr=0.1, **kwargs)


@pytest.mark.parametrize("cls", CLASSES)
def test_bad_params_as_torch(cls):
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        cls([], lr=0.1)
    with pytest.raises(ValueError, match="can't optimize a non-leaf Tensor"):
        cls([_param() * 2], lr=0.1)


@pytest.mark.parametrize("cls", [seed.Adagrad, seed.RMSProp, seed.Adam])
def test_zero_gradient_where_v_is_zero_gives_no_step_and_no_nan(cls):
    p = _param()
    opt = cls([p], lr=0.1)
    for step in range(3):
        p.grad = torch.tensor([0.0, 1.0 if step else 0.0, 0.0], dtype=torch.float64)
        opt.step()
        assert torch.isfinite(p).all()
    assert p[0].item() == 1.0 and p[2].item() == 0.5


def test_formulas_are_the_seed_table():
    p = [_param()]
    assert seed.SGD(p, lr=0.1).formulas()["m"] == "m = g"
    assert seed.SGDM(p, lr=0.1).formulas() | {} == {"m": "m = β·m + (1−β)·g", "V": "V = 1", "update": "w ← w − lr·m"}
    # each optimizer's own terms: no hat without a bias correction, no ε (the seed's is 0),
    # β₁ and β₂ where both moments are EMAs
    assert seed.Adagrad(p, lr=0.1).formulas() | {} == {"m": "m = g", "V": "V = Σ g²", "update": "w ← w − lr·m / √V"}
    assert seed.RMSProp(p, lr=0.1).formulas()["V"] == "V = β·V + (1−β)·g²"
    assert seed.RMSProp(p, lr=0.1).formulas()["update"] == "w ← w − lr·m / √V"
    assert seed.Adam(p, lr=0.1).formulas() | {} == {
        "m": "m = β₁·m + (1−β₁)·g, m̂ = m/(1−β₁ᵗ)",
        "V": "V = β₂·V + (1−β₂)·g², V̂ = V/(1−β₂ᵗ)",
        "update": "w ← w − lr·m̂ / √V̂",
    }
    # torch's, with its ε
    assert momenta.RMSprop(p).formulas()["update"] == "w ← w − lr·m / (√V + ε)"
    assert momenta.Adam(p).formulas()["update"] == "w ← w − lr·m̂ / (√V̂ + ε)"


def test_sgdm_is_an_ema_not_torch_momentum():
    p = _param()
    opt = seed.SGDM([p], lr=1.0, beta=0.5)
    p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()  # m = 0.5·0 + 0.5·1: half a step, where torch's SGD would take a whole one
    torch.testing.assert_close(p.detach(), torch.tensor([0.5, -2.5, 0.0], dtype=torch.float64))


def test_seed_adam_first_step_is_lr_times_sign():
    p = _param()
    opt = seed.Adam([p], lr=0.1)
    p.grad = torch.tensor([3.0, -0.2, 1e-6], dtype=torch.float64)
    opt.step()  # m̂ = g and V̂ = g², so the first step is lr·sign(g)
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, -1.9, 0.4], dtype=torch.float64))


def test_registered_by_name():
    for name, cls in zip(["sgd", "sgdm", "adagrad", "rmsprop", "adam"], CLASSES):
        assert momenta.registry.get(name).factory is cls
