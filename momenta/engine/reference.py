"""The reference path: one parameter at a time, the formula as written.

    g ← −∇ if maximize else ∇;   g ← g + λ·w (coupled) or w ← w·(1 − lr·λ) (decoupled)
    m, V  ← rules(state, g, t);  m̂ = m / c₁(t),  V̂ = V / c₂(t)
    w ← w − lr / d(t) · m̂ / (√V̂ + ε)

The fast path must give the same numbers; tests compare the two.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .composition import Rules


@dataclass(frozen=True)
class Hyper:
    """The engine's hyperparameters of one param group."""

    lr: float | Tensor
    eps: float | Tensor
    weight_decay: float | Tensor
    maximize: bool

    @classmethod
    def of(cls, group: dict[str, Any]) -> Hyper:
        lr = group["lr"]
        if group.get("fused") and isinstance(lr, Tensor) and not lr.requires_grad:
            # torch's fused kernels read a tensor lr as a double; its for-loop keeps the
            # tensor's dtype. Each flag gives torch's numbers for that flag.
            lr = lr.item()
        return cls(
            lr=lr,
            eps=group.get("eps", 0.0),
            weight_decay=group.get("weight_decay", 0.0),
            maximize=bool(group.get("maximize", False)),
        )


def real(x: Tensor) -> Tensor:
    """Complex tensors are optimised as their real view (real and imaginary parts)."""
    return torch.view_as_real(x) if x.is_complex() else x


def init_state(rules: Rules, p: Tensor, state: MutableMapping[str, Any], step: Tensor) -> None:
    """Fill an empty state: ``step`` (when counted), then the rules' buffers."""
    if rules.count_steps:
        state["step"] = step
    for rule in (rules.first, rules.second):
        for name, buffer in rule.init(real(p)).items():
            state[name] = torch.view_as_complex(buffer) if p.is_complex() else buffer


def write(state: MutableMapping[str, Any], updates: dict[str, Tensor], complex_: bool) -> None:
    """The engine's one place of mutation: new buffer values into the state, in place."""
    for name, value in updates.items():
        if name in state:
            real(state[name]).copy_(value)
        else:  # a buffer born at its first update (torch's momentum_buffer)
            value = value.detach().clone(memory_format=torch.preserve_format)
            state[name] = torch.view_as_complex(value) if complex_ else value


def divide(m: Tensor, v: Tensor | None, correction: Any, eps: Any, rules: Rules) -> Tensor:
    """``m / (√V̂ + ε)`` (or ``m / √(V̂ + ε)``), with ``V̂ = V / c₂``; ``m`` when V = 1."""
    if v is None:
        return m
    if rules.eps == "inside":
        denom = (v / correction + eps).sqrt() if correction != 1 else (v + eps).sqrt()
    elif correction != 1:
        # √V / √c₂ rather than √(V / c₂): torch's order of operations, so results agree
        # with torch.optim to the last bit more often.
        denom = v.sqrt() / correction**0.5 + eps
    else:
        denom = v.sqrt() + eps
    if rules.zero_over_zero:
        return torch.where(denom == 0, torch.zeros_like(m), m / denom)
    return m / denom


def step(p: Tensor, grad: Tensor, state: MutableMapping[str, Any], rules: Rules, h: Hyper) -> None:
    """One step of one parameter ``p`` with gradient ``grad``; state is updated in place."""
    t = math.nan
    if rules.count_steps:
        state["step"] += 1
        t = float(state["step"])
    g = -grad if h.maximize else grad
    if h.weight_decay != 0:
        if rules.weight_decay == "decoupled":
            p.mul_(1 - h.lr * h.weight_decay)
        else:
            g = g + h.weight_decay * p
    complex_ = p.is_complex()
    g = real(g)
    buffers = {k: real(v) for k, v in state.items() if k != "step"}
    if torch.is_grad_enabled():  # differentiable=True: autograd may have saved the buffers,
        buffers = {k: v.clone() for k, v in buffers.items()}  # which are written below
    first, second = rules.first, rules.second

    if rules.precondition == "moment":
        m, updates = first.update(buffers, g, t)
        v, more = second.update(buffers, g, m, t)
        d = divide(m, v, second.correction(t), h.eps, rules)
    else:
        v, updates = second.update(buffers, g, None, t)
        m, more = first.update(buffers, divide(g, v, second.correction(t), h.eps, rules), t)
        d = m
    write(state, {**updates, **more}, complex_)

    # lr / (c₁·d₁·d₂): one division of lr, in lr's own precision (a float32 tensor lr stays
    # float32 here, as in torch)
    step_size = h.lr / (first.correction(t) * first.decay(t) * second.decay(t))
    if isinstance(step_size, Tensor) and step_size.requires_grad:  # autograd follows lr
        real(p).sub_(step_size * d)
    else:
        real(p).add_(d, alpha=-float(step_size))
