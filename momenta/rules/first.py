"""First-moment rules: how ``m_t`` is made from the gradients ``g``.

| rule | m_t | buffer |
|---|---|---|
| :class:`Gradient` | ``g`` | — |
| :class:`EMA` | ``β·m + (1−β)·g``, optionally ``m̂ = m / (1−βᵗ)`` | ``exp_avg`` |
| :class:`Momentum` | ``buf = μ·buf + (1−τ)·g`` (``buf₁ = g``); ``buf`` or ``g + μ·buf`` | ``momentum_buffer`` |
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import FirstMoment, Scalar, State, Updates, check


@dataclass(frozen=True)
class Gradient(FirstMoment):
    """m_t = g_t: the gradient itself (SGD, Adagrad, RMSProp)."""

    @property
    def formula(self) -> str:
        return "m = g"

    def update(self, state: State, g: Tensor, t: float) -> tuple[Tensor, Updates]:
        return g, {}


@dataclass(frozen=True)
class EMA(FirstMoment):
    """m_t = β·m_{t−1} + (1−β)·g_t, m_0 = 0; bias-corrected m̂_t = m_t / (1 − βᵗ).

    Args:
        beta: decay rate β of the average, in [0, 1).
        bias_correction: divide by ``1 − βᵗ`` so that early steps are not biased to 0.
        name: the state buffer (torch's ``exp_avg``).

    Source: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """

    beta: float | Tensor = 0.9
    bias_correction: bool = False
    name: str = "exp_avg"

    def __post_init__(self) -> None:
        check(self, "beta", 0.0, 1.0)

    @property
    def needs_step(self) -> bool:  # type: ignore[override]
        return self.bias_correction

    @property
    def formula(self) -> str:
        ema = "m = β·m + (1−β)·g"
        return ema + ", m̂ = m/(1−βᵗ)" if self.bias_correction else ema

    def init(self, p: Tensor) -> Updates:
        return {self.name: torch.zeros_like(p, memory_format=torch.preserve_format)}

    def update(self, state: State, g: Tensor, t: float) -> tuple[Tensor, Updates]:
        m = self.beta * state[self.name] + (1 - self.beta) * g
        return m, {self.name: m}

    def correction(self, t: float) -> Scalar:
        return 1 - self.beta**t if self.bias_correction else 1.0


@dataclass(frozen=True)
class Momentum(FirstMoment):
    """torch's momentum buffer: buf_t = μ·buf_{t−1} + (1−τ)·g_t, with buf_1 = g_1.

    m_t = buf_t, or with Nesterov m_t = g_t + μ·buf_t. The first step copies the gradient
    (no dampening), as ``torch.optim.SGD`` does.

    Args:
        momentum: μ ≥ 0.
        dampening: τ, the share of the gradient held back from the buffer.
        nesterov: look ahead along the buffer (needs μ > 0 and τ = 0).
        name: the state buffer (torch's ``momentum_buffer``).

    Source: Polyak, "Some methods of speeding up the convergence of iteration methods",
    1964; Sutskever et al., "On the importance of initialization and momentum in deep
    learning", ICML 2013 (Nesterov form).
    """

    momentum: float | Tensor = 0.9
    dampening: float | Tensor = 0.0
    nesterov: bool = False
    name: str = "momentum_buffer"

    def __post_init__(self) -> None:
        check(self, "momentum", 0.0)
        # dampening is not range-checked: torch.optim.SGD accepts any value
        check(self, "dampening", float("-inf"))

    @property
    def formula(self) -> str:
        buf = "buf = μ·buf + (1−τ)·g"
        return f"{buf}, m = g + μ·buf" if self.nesterov else f"{buf}, m = buf"

    def buffers(self) -> tuple[str, ...]:
        return (self.name,)  # born at the first update

    def update(self, state: State, g: Tensor, t: float) -> tuple[Tensor, Updates]:
        buf = state.get(self.name)
        # The buffer is born on the first step equal to g: torch's semantics, which differ
        # from an EMA started at 0 (no dampening on step 1). The engine stores a copy.
        buf = g if buf is None else self.momentum * buf + (1 - self.dampening) * g
        m = g + self.momentum * buf if self.nesterov else buf
        return m, {self.name: buf}
