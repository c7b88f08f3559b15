"""differentiable=True: autograd flows through a step, as torch's own gradcheck tests ask."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

import momenta


def _rand(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, dtype=torch.float64, requires_grad=True)


CASES = {
    "SGD": (dict(momentum=0.9), ["momentum_buffer"]),
    "Adam": (dict(amsgrad=True), ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
    "AdamW": (dict(weight_decay=0.1), ["exp_avg", "exp_avg_sq"]),
    "Adagrad": (dict(lr_decay=0.1), ["sum"]),
    "RMSprop": (dict(momentum=0.9, centered=True), ["square_avg", "momentum_buffer", "grad_avg"]),
    "Adamax": (dict(weight_decay=0.1), ["exp_avg", "exp_inf"]),
    "NAdam": (dict(decoupled_weight_decay=True, weight_decay=0.1), ["exp_avg", "exp_avg_sq"]),
    "RAdam": (dict(weight_decay=0.1), ["exp_avg", "exp_avg_sq"]),
    "Adadelta": (dict(weight_decay=0.1), ["square_avg", "acc_delta"]),
    "ASGD": (dict(t0=1), ["ax"]),
    "Rprop": (dict(), ["prev", "step_size"]),
}
#: per-parameter scalar state besides ``step`` (0-dim tensors, not differentiated)
SCALARS = {"NAdam": dict(mu_product=0.5), "ASGD": dict(eta=0.05, mu=0.5)}
#: buffers kept away from 0, where a square root is not differentiable
POSITIVE = ("sq", "square", "acc_delta")


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck_through_step(name):
    kwargs, buffers = CASES[name]
    cls = getattr(momenta, name)

    def one_step(p, grad, *state):
        p = p.clone()
        p.grad = grad
        opt = cls([p], lr=0.9, differentiable=True, **kwargs)
        opt.state[p]["step"] = torch.tensor(10.0, dtype=torch.float64)
        for key, value in SCALARS.get(name, {}).items():
            opt.state[p][key] = torch.tensor(value, dtype=torch.float64)
        for key, value in zip(buffers, state):
            # square averages stay positive so that the square root is differentiable
            opt.state[p][key] = value.clone() + (1.0 if any(k in key for k in POSITIVE) else 0.0)
        opt.step()
        return (p, *[opt.state[p][key] for key in buffers])

    inputs = (_rand(6), _rand(6), *[_rand(6) for _ in buffers])
    assert gradcheck(one_step, inputs)
