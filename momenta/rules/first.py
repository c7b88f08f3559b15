"""First-moment rules: how ``m_t`` is made from the gradients ``g``.

| rule | m_t | buffer |
|---|---|---|
| :class:`Gradient` | ``g`` | — |
| :class:`EMA` | ``β·m + (1−β)·g``, optionally ``m̂ = m / (1−βᵗ)`` | ``exp_avg`` |
| :class:`Momentum` | ``buf = μ·buf + (1−τ)·g`` (``buf₁ = g``); ``buf`` or ``g + μ·buf`` | ``momentum_buffer`` |
| :class:`NesterovEMA` | ``m = β·m + (1−β)·g``; ``(1−μ_t)/(1−Πμ)·g + μ_{t+1}/(1−Πμ·μ_{t+1})·m`` | ``exp_avg``, ``mu_product`` |
| :class:`Delta` | ``m = √(Δ + ε)·g``, ``Δ = ρ·Δ + (1−ρ)·m²`` | ``acc_delta`` |
| :class:`Resilient` | ``η ← clip(η·η±)``, ``m = η·sign(g)`` | ``prev``, ``step_size`` |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from collections.abc import Mapping

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

    With ``nesterov``, the step uses ``β·m_t + (1−β)·g_t`` (Muon's Nesterov momentum).

    Args:
        beta: decay rate β of the average, in [0, 1).
        bias_correction: divide by ``1 − βᵗ`` so that early steps are not biased to 0.
        name: the state buffer (torch's ``exp_avg``).
        nesterov: step along the look-ahead average.

    Source: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """

    beta: float | Tensor = 0.9
    bias_correction: bool = False
    name: str = "exp_avg"
    nesterov: bool = False

    def __post_init__(self) -> None:
        check(self, "beta", 0.0, 1.0)

    @property
    def needs_step(self) -> bool:  # type: ignore[override]
        return self.bias_correction

    @property
    def formula(self) -> str:
        ema = "m = β·m + (1−β)·g"
        if self.nesterov:
            ema += ", m ← β·m + (1−β)·g"
        return ema + ", m̂ = m/(1−βᵗ)" if self.bias_correction else ema

    def init(self, p: Tensor) -> Updates:
        return {self.name: torch.zeros_like(p, memory_format=torch.preserve_format)}

    def update(self, state: State, g: Tensor, t: float) -> tuple[Tensor, Updates]:
        m = self.beta * state[self.name] + (1 - self.beta) * g
        if self.nesterov:  # look ahead: the average as the next gradient equal to g would make it
            return (1 - self.beta) * g + self.beta * m, {self.name: m}
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


@dataclass(frozen=True)
class NesterovEMA(FirstMoment):
    """NAdam's Nesterov momentum, with the momentum schedule μ_t = β·(1 − ½·0.96^(t·ψ)):

        m_t = β·m_{t−1} + (1−β)·g_t
        m̂_t = (1 − μ_t)/(1 − Π_{s≤t} μ_s) · g_t + μ_{t+1}/(1 − Π_{s≤t+1} μ_s) · m_t

    The product ``Π μ`` is per-parameter scalar state (``mu_product``, torch's dtype).

    Args:
        beta: β₁.
        momentum_decay: ψ (torch's default 4e-3).
        name: the state buffer (``exp_avg``).

    Source: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016.
    As in ``torch.optim.NAdam``.
    """

    beta: float | Tensor = 0.9
    momentum_decay: float = 4e-3
    name: str = "exp_avg"
    needs_step = True

    def __post_init__(self) -> None:
        check(self, "beta", 0.0, 1.0)
        check(self, "momentum_decay", 0.0)

    @property
    def formula(self) -> str:
        return "m = β·m + (1−β)·g, m̂ = (1−μₜ)/(1−Πμ)·g + μₜ₊₁/(1−Πμ·μₜ₊₁)·m"

    def init(self, p: Tensor) -> Updates:
        return {self.name: torch.zeros_like(p, memory_format=torch.preserve_format)}

    def scalars(self) -> dict[str, float]:
        return {"mu_product": 1.0}

    def mu(self, t: float) -> float:
        """μ_t, the momentum at step ``t``."""
        return float(self.beta * (1.0 - 0.5 * (0.96 ** (t * self.momentum_decay))))

    def advance(self, scalars: Mapping[str, Tensor], t: float) -> tuple[dict[str, Any], dict[str, Any]]:
        mu, mu_next = self.mu(t), self.mu(t + 1)
        product = scalars["mu_product"] * mu  # in the state's dtype, as torch multiplies it
        value = product.item()
        weights = {"nadam_grad": (1.0 - mu) / (1.0 - value), "nadam_avg": mu_next / (1.0 - value * mu_next)}
        return {"mu_product": product}, weights

    def update(self, state: State, g: Tensor, t: float) -> tuple[Tensor, Updates]:
        m = self.beta * state[self.name] + (1 - self.beta) * g
        return state["nadam_grad"] * g + state["nadam_avg"] * m, {self.name: m}


@dataclass(frozen=True)
class Delta(FirstMoment):
    """Adadelta's numerator, over the preconditioned gradient u = g / √(V + ε):

        m_t = √(Δ_{t−1} + ε) · u_t,    Δ_t = ρ·Δ_{t−1} + (1−ρ)·m_t²

    so that the step has the units of the parameters (no learning rate needed, lr = 1).

    Args:
        rho: ρ, the decay of the average of squared steps.
        eps: ε, inside the root.
        name: the state buffer (torch's ``acc_delta``).

    Source: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012.
    """

    rho: float | Tensor = 0.9
    eps: float | Tensor = 1e-6
    name: str = "acc_delta"

    def __post_init__(self) -> None:
        check(self, "rho", 0.0, 1.0 + 1e-12)
        check(self, "eps", 0.0)

    @property
    def formula(self) -> str:
        return "m = √(Δ + ε)·g, Δ = ρ·Δ + (1−ρ)·m²"

    def init(self, p: Tensor) -> Updates:
        return {self.name: torch.zeros_like(p, memory_format=torch.preserve_format)}

    def update(self, state: State, g: Tensor, t: float) -> tuple[Tensor, Updates]:
        acc = state[self.name]
        m = (acc + self.eps).sqrt() * g
        return m, {self.name: self.rho * acc + (1 - self.rho) * m * m}


@dataclass(frozen=True)
class Resilient(FirstMoment):
    """Rprop's step: a step size η per coordinate, from the signs of the gradients alone.

        s = sign(g_t · g_{t−1});   η ← clip(η·η₊ if s > 0, η·η₋ if s < 0, η if s = 0)
        g_t ← 0 where s < 0 (no step after a sign change);   m_t = η · sign(g_t)

    The step sizes start at the learning rate (``initial``); the iterate is
    :class:`~momenta.rules.Unscaled` (``w ← w − m``), since ``m`` carries the step sizes.

    Args:
        initial: η at the first step (the learning rate).
        etaminus: η₋, the shrink factor, in (0, 1).
        etaplus: η₊, the growth factor, > 1.
        step_min: the smallest step size.
        step_max: the largest step size.

    Source: Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation
    Learning: The RPROP Algorithm", ICNN 1993. As in ``torch.optim.Rprop``.
    """

    initial: float | Tensor = 1e-2
    etaminus: float | Tensor = 0.5
    etaplus: float | Tensor = 1.2
    step_min: float | Tensor = 1e-6
    step_max: float | Tensor = 50.0

    @property
    def formula(self) -> str:
        return "η ← clip(η·η±), m = η·sign(g)"

    def init(self, p: Tensor) -> Updates:
        initial = self.initial.item() if isinstance(self.initial, Tensor) else self.initial
        return {
            "prev": torch.zeros_like(p, memory_format=torch.preserve_format),
            "step_size": torch.full_like(p, initial, memory_format=torch.preserve_format),
        }

    def update(self, state: State, g: Tensor, t: float) -> tuple[Tensor, Updates]:
        s = (g * state["prev"]).sign()
        one = torch.ones_like(g)
        factor = torch.where(s > 0, one * self.etaplus, torch.where(s < 0, one * self.etaminus, one))
        step = (state["step_size"] * factor).clamp(self.step_min, self.step_max)
        g = torch.where(s < 0, torch.zeros_like(g), g)
        return g.sign() * step, {"prev": g, "step_size": step}
