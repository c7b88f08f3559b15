"""The formula, and the reference path that applies it one parameter at a time.

    g ← −∇ if maximize else ∇;   g ← g + λ·w (coupled) or w ← w·(1 − lr·λ) (decoupled)
    m, V  ← rules(state, g, t);  m̂ = m / c₁(t),  V̂ = V / c₂(t)
    w ← w − lr / d(t) · m̂ / (√V̂ + ε)

:func:`update` is the formula on real tensors. The reference path (:func:`step`) calls it
per parameter with Python-number scalars; the fast path (:mod:`.flat`, :mod:`.kernels`)
calls the same function over flat buffers, eagerly or compiled with 0-dim tensor scalars.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..rules import Updates
from .composition import Rules

Scalar = Any  # a Python number on the reference path, a 0-dim tensor in compiled kernels


@dataclass(frozen=True)
class Hyper:
    """The engine's hyperparameters of one param group."""

    lr: float | Tensor
    eps: float | Tensor
    weight_decay: float | Tensor
    maximize: bool

    @classmethod
    def of(cls, group: Mapping[str, Any]) -> Hyper:
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

    @property
    def decays(self) -> bool:
        """Weight decay is on (a host-side check: λ is a number, or a tensor)."""
        return isinstance(self.weight_decay, Tensor) or self.weight_decay != 0


@dataclass(frozen=True)
class Scalars:
    """The per-step numbers of one step, computed once on the host (never per element)."""

    step_size: Scalar  # lr / (c₁·d₁·d₂)
    c2: Scalar  # V̂ = V / c₂
    c2_sqrt: Scalar  # √V̂ = √V / √c₂ (torch's order of operations)
    eps: Scalar
    weight_decay: Scalar  # λ, added to g (coupled)
    shrink: Scalar  # 1 − lr·λ (decoupled)
    t: Scalar  # the step, 1-based (NaN when not counted)

    @classmethod
    def of(cls, rules: Rules, h: Hyper, t: float) -> Scalars:
        first, second = rules.first, rules.second
        # lr / (c₁·d₁·d₂): one division of lr, in lr's own precision (a float32 tensor lr
        # stays float32 here, as in torch)
        step_size = h.lr / (first.correction(t) * first.decay(t) * second.decay(t))
        if isinstance(step_size, Tensor) and not step_size.requires_grad:
            step_size = step_size.item()
        c2 = second.correction(t)
        return cls(
            step_size=step_size,
            c2=c2,
            c2_sqrt=c2**0.5,
            eps=h.eps,
            weight_decay=h.weight_decay,
            shrink=1 - h.lr * h.weight_decay,
            t=t,
        )


def real(x: Tensor) -> Tensor:
    """Complex tensors are optimised as their real view (real and imaginary parts)."""
    return torch.view_as_real(x) if x.is_complex() else x


def _corrected(c: Scalar) -> bool:
    return isinstance(c, Tensor) or c != 1


def divide(m: Tensor, v: Tensor | None, rules: Rules, s: Scalars) -> Tensor:
    """``m / (√V̂ + ε)`` (or ``m / √(V̂ + ε)``), with ``V̂ = V / c₂``; ``m`` when V = 1."""
    if v is None:
        return m
    if rules.eps == "inside":
        denom = ((v / s.c2 if _corrected(s.c2) else v) + s.eps).sqrt()
    elif _corrected(s.c2_sqrt):
        # √V / √c₂ rather than √(V / c₂): torch's order, so results agree to the last bit
        # more often
        denom = v.sqrt() / s.c2_sqrt + s.eps
    else:
        denom = v.sqrt() + s.eps
    if rules.zero_over_zero:
        return torch.where(denom == 0, torch.zeros_like(m), m / denom)
    return m / denom


def moments(rules: Rules, buffers: Mapping[str, Tensor], g: Tensor, s: Scalars) -> tuple[Tensor, Updates]:
    """The direction ``m̂ / (√V̂ + ε)`` (before lr and c₁) and the rules' new buffers."""
    first, second = rules.first, rules.second
    if rules.precondition == "moment":
        m, updates = first.update(buffers, g, s.t)
        v, more = second.update(buffers, g, m, s.t)
        return divide(m, v, rules, s), {**updates, **more}
    v, updates = second.update(buffers, g, None, s.t)
    m, more = first.update(buffers, divide(g, v, rules, s), s.t)
    return m, {**updates, **more}


def update(
    p: Tensor,
    g: Tensor,
    buffers: Mapping[str, Tensor],
    rules: Rules,
    s: Scalars,
    *,
    maximize: bool,
    decays: bool,
) -> Updates:
    """One step of the formula on real tensors: moves ``p`` in place, returns the new buffers."""
    if maximize:
        g = -g
    if decays:
        if rules.weight_decay == "decoupled":
            p.mul_(s.shrink)
        else:
            g = g + s.weight_decay * p
    d, updates = moments(rules, buffers, g, s)
    if isinstance(s.step_size, Tensor) or torch.compiler.is_compiling():
        # kernels, an lr that autograd follows, or a step traced by torch.compile: there a
        # Python-number alpha becomes a symbolic float, which torch 2.13's graph cache can
        # serve stale (a compiled training step then drifts from eager)
        p.sub_(s.step_size * d)
    else:
        p.add_(d, alpha=-s.step_size)
    return updates


def init_state(rules: Rules, p: Tensor, state: MutableMapping[str, Any], step: Tensor) -> None:
    """Fill an empty state: ``step`` (when counted), then the rules' buffers."""
    if rules.count_steps:
        state["step"] = step
    for rule in (rules.first, rules.second):
        for name, buffer in rule.init(real(p)).items():
            state[name] = torch.view_as_complex(buffer) if p.is_complex() else buffer


def write(state: MutableMapping[str, Any], updates: Updates, complex_: bool) -> None:
    """The engine's one place of mutation: new buffer values into the state, in place."""
    for name, value in updates.items():
        if name in state:
            real(state[name]).copy_(value)
        else:  # a buffer born at its first update (torch's momentum_buffer)
            value = value.detach().clone(memory_format=torch.preserve_format)
            state[name] = torch.view_as_complex(value) if complex_ else value


def step(p: Tensor, grad: Tensor, state: MutableMapping[str, Any], rules: Rules, h: Hyper) -> None:
    """One step of one parameter ``p`` with gradient ``grad``; state is updated in place."""
    t = math.nan
    if rules.count_steps:
        state["step"] += 1
        t = float(state["step"])
    buffers = {k: real(v) for k, v in state.items() if k != "step"}
    if torch.is_grad_enabled():  # differentiable=True: autograd may have saved the buffers,
        buffers = {k: v.clone() for k, v in buffers.items()}  # which are written below
    updates = update(
        real(p), real(grad), buffers, rules, Scalars.of(rules, h, t), maximize=h.maximize, decays=h.decays
    )
    write(state, updates, p.is_complex())
