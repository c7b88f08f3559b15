"""Second-moment rules: how ``V_t`` is made from the squared gradients ``g²``.

| rule | V_t | buffers |
|---|---|---|
| :class:`One` | ``1`` (no division) | — |
| :class:`SumSq` | ``V₀ + Σ g²``; lr ``/ (1 + (t−1)·decay)`` | ``sum`` |
| :class:`EMASq` | ``β·V + (1−β)·g²``, optionally ``/ (1−βᵗ)``; centered ``− ḡ²`` | ``exp_avg_sq`` (``grad_avg``) |
| :class:`AMSGrad` | ``max(V_max, V_t)`` of another rule | ``max_exp_avg_sq`` |
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import SecondMoment, Scalar, State, Updates, check


@dataclass(frozen=True)
class One(SecondMoment):
    """V_t = 1: no preconditioning (SGD, SGD with momentum)."""

    @property
    def formula(self) -> str:
        return "V = 1"

    def update(
        self, state: State, g: Tensor, m: Tensor | None, t: float
    ) -> tuple[Tensor | None, Updates]:
        return None, {}


@dataclass(frozen=True)
class SumSq(SecondMoment):
    """V_t = V₀ + Σ_{s≤t} g_s²: Adagrad's accumulator; lr_t = lr / (1 + (t−1)·lr_decay).

    Args:
        initial: V₀, the accumulator's starting value (torch's ``initial_accumulator_value``).
        lr_decay: torch Adagrad's learning-rate decay.
        name: the state buffer (torch's ``sum``).

    Source: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization", JMLR 2011.
    """

    initial: float = 0.0
    lr_decay: float | Tensor = 0.0
    name: str = "sum"

    def __post_init__(self) -> None:
        check(self, "initial", 0.0)
        check(self, "lr_decay", 0.0)

    @property
    def needs_step(self) -> bool:  # type: ignore[override]
        return bool(self.lr_decay != 0)

    @property
    def formula(self) -> str:
        return "V = Σ g²"

    def init(self, p: Tensor) -> Updates:
        return {self.name: torch.full_like(p, self.initial, memory_format=torch.preserve_format)}

    def update(
        self, state: State, g: Tensor, m: Tensor | None, t: float
    ) -> tuple[Tensor | None, Updates]:
        v = state[self.name] + g * g
        return v, {self.name: v}

    def decay(self, t: float) -> Scalar:
        return 1 + (t - 1) * self.lr_decay


@dataclass(frozen=True)
class EMASq(SecondMoment):
    """V_t = β·V_{t−1} + (1−β)·g_t², V_0 = 0; bias-corrected V̂_t = V_t / (1 − βᵗ).

    Centered (RMSprop's variant): also ḡ_t = β·ḡ_{t−1} + (1−β)·g_t and V_t ← max(V_t − ḡ_t², 0),
    an estimate of the variance instead of the raw second moment.

    Args:
        beta: decay rate β (torch's RMSprop calls it ``alpha``, Adam ``betas[1]``).
        bias_correction: divide by ``1 − βᵗ``.
        centered: subtract the squared mean gradient.
        name: the buffer of the average of g² (``exp_avg_sq``; RMSprop: ``square_avg``).
        mean_name: the buffer of the average of g when centered (``grad_avg``).

    Source: Tieleman & Hinton, "Lecture 6.5 — RMSProp", COURSERA: Neural Networks for
    Machine Learning, 2012; Graves, "Generating Sequences With Recurrent Neural Networks",
    2013 (centered form).
    """

    beta: float | Tensor = 0.999
    bias_correction: bool = False
    centered: bool = False
    name: str = "exp_avg_sq"
    mean_name: str = "grad_avg"

    def __post_init__(self) -> None:
        # torch's RMSprop accepts any alpha >= 0 (alpha >= 1 does not average); so do we
        check(self, "beta", 0.0)

    @property
    def needs_step(self) -> bool:  # type: ignore[override]
        return self.bias_correction

    @property
    def formula(self) -> str:
        v = "V = β·V + (1−β)·g²"
        if self.centered:
            v += ", ḡ = β·ḡ + (1−β)·g, V ← V − ḡ²"
        return v + ", V̂ = V/(1−βᵗ)" if self.bias_correction else v

    def init(self, p: Tensor) -> Updates:
        buffers = {self.name: torch.zeros_like(p, memory_format=torch.preserve_format)}
        if self.centered:
            buffers[self.mean_name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return buffers

    def update(
        self, state: State, g: Tensor, m: Tensor | None, t: float
    ) -> tuple[Tensor | None, Updates]:
        v = self.beta * state[self.name] + (1 - self.beta) * g * g
        if not self.centered:
            return v, {self.name: v}
        g_avg = self.beta * state[self.mean_name] + (1 - self.beta) * g
        # E[g²] − E[g]² ≥ 0 exactly, but rounding can take it just below 0 (√ → NaN, as
        # in torch): clamped, which changes nothing wherever torch's result is a number
        return (v - g_avg * g_avg).clamp_min(0), {self.name: v, self.mean_name: g_avg}

    def correction(self, t: float) -> Scalar:
        return 1 - self.beta**t if self.bias_correction else 1.0


@dataclass(frozen=True)
class AMSGrad(SecondMoment):
    """V_t = max(V_max, V_t^inner): the running maximum of another rule's V.

    The maximum is taken before bias correction, which stays the inner rule's.

    Args:
        inner: the rule whose V is maximised (usually :class:`EMASq`).
        name: the state buffer (torch's ``max_exp_avg_sq``).

    Source: Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
    """

    inner: SecondMoment
    name: str = "max_exp_avg_sq"

    @property
    def needs_step(self) -> bool:  # type: ignore[override]
        return self.inner.needs_step

    @property
    def formula(self) -> str:
        return f"{self.inner.formula}, V ← max(V_max, V)"

    def init(self, p: Tensor) -> Updates:
        return {
            **self.inner.init(p),
            self.name: torch.zeros_like(p, memory_format=torch.preserve_format),
        }

    def update(
        self, state: State, g: Tensor, m: Tensor | None, t: float
    ) -> tuple[Tensor | None, Updates]:
        v, updates = self.inner.update(state, g, m, t)
        if v is None:
            raise ValueError(f"AMSGrad needs a second moment, but {self.inner!r} has V = 1")
        v_max = torch.maximum(state[self.name], v)
        return v_max, {**updates, self.name: v_max}

    def correction(self, t: float) -> Scalar:
        return self.inner.correction(t)

    def decay(self, t: float) -> Scalar:
        return self.inner.decay(t)
