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
}


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck_through_step(name):
    kwargs, buffers = CASES[name]
    cls = getattr(momenta, name)

    def one_step(p, grad, *state):
        p = p.clone()
        p.grad = grad
        opt = cls([p], lr=0.9, differentiable=True, **kwargs)
        opt.state[p]["step"] = torch.tensor(10.0, dtype=torch.float64)
        for key, value in zip(buffers, state):
            # square averages stay positive so that the square root is differentiable
            opt.state[p][key] = value.clone() + (1.0 if "sq" in key or "square" in key else 0.0)
        opt.step()
        return (p, *[opt.state[p][key] for key in buffers])

    inputs = (_rand(6), _rand(6), *[_rand(6) for _ in buffers])
    assert gradcheck(one_step, inputs)
