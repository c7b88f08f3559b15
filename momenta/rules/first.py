"""First-moment rules: how ``m_t`` is made from the gradients ``g``.

| rule | m_t | buffer |
|---|---|---|
| :class:`Gradient` | ``g`` | — |
| :class:`EMA` | ``β·m + (1−β)·g``, optionally ``m̂ = m / (1−βᵗ)`` | ``exp_avg`` |
| :class:`Momentum` | ``buf = μ·buf + (1−τ)·g`` (``buf₁ = g``); ``buf`` or ``g + μ·buf`` | ``momentum_buffer`` |
| :class:`NesterovEMA` | ``m = β·m + (1−β)·g``; ``(1−μ_t)/(1−Πμ)·g + μ_{t+1}/(1−Πμ·μ_{t+1})·m`` | ``exp_avg``, ``mu_product`` |
| :class:`Delta` | ``m = √(Δ + ε)·g``, ``Δ = ρ·Δ + (1−ρ)·m²`` | ``acc_delta`` |
| :class:`Resilient` | ``η ← clip(η·η±)``, ``m = η·sign(g)`` | ``prev``, ``step_size`` |
| :class:`Interpolated` | ``m = β₁·μ + (1−β₁)·g``, then ``μ ← β₂·μ + (1−β₂)·g`` (Lion) | ``exp_avg`` |
| :class:`Initialized` | another rule with its buffers starting at a value (Yogi's ``m₀``) | the other's |
| :class:`Corrected` | another rule's ``m̂ = m / c(t)`` as ``m`` (LAMB's trust ratio sees ``m̂``) | the other's |
| :class:`EMAMix` | ``m₁/(1−β₁ᵗ) + α(t)·m₂``, fast and slow EMAs (AdEMAMix) | ``exp_avg_fast``, ``exp_avg_slow`` |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .base import FirstMoment, Scalar, State, Updates, Wrapping, check, ema_correction, exp, full, log, minimum, zeros


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
        lerp: compute both averages as ``torch.lerp`` does (``m_t = lerp(m_{t−1}, g_t, 1−β)``,
            look-ahead ``lerp(g_t, m_t, β)``), torch's Muon's rounding, which its
            bfloat16 Newton–Schulz would turn a last-bit difference of into a visible one.

    Source: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """

    beta: float | Tensor = 0.9
    bias_correction: bool = False
    name: str = "exp_avg"
    nesterov: bool = False
    lerp: bool = False

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
        return {self.name: zeros(p)}

    def update(self, state: State, g: Tensor, t: float) -> tuple[Tensor, Updates]:
        if self.lerp:
            m = torch.lerp(state[self.name], g, 1 - self.beta)
            return torch.lerp(g, m, self.beta) if self.nesterov else m, {self.name: m}
        m = self.beta * state[self.name] + (1 - self.beta) * g
        if self.nesterov:  # look ahead: the average as the next gradient equal to g would make it
            return (1 - self.beta) * g + self.beta * m, {self.name: m}
        return m, {self.name: m}

    def correction(self, t: float) -> Scalar:
        return ema_correction(self.beta, t, self.bias_correction)


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
        return {self.name: zeros(p)}

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
        return {self.name: zeros(p)}

    def nonnegative(self) -> tuple[str, ...]:
        return (self.name,)  # an average of squared steps

    def moment(self) -> str | None:
        """None: ``acc_delta`` averages squared steps; m = √(Δ + ε)·u is made afresh."""
        return None

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
        return {"prev": zeros(p), "step_size": full(p, self.initial)}

    def nonnegative(self) -> tuple[str, ...]:
        return ("step_size",)

    def exact(self) -> tuple[str, ...]:
        # step sizes are multiplied step after step, so a coding error compounds; ``prev``
        # is read for its sign, which a small value coded as 0 would lose
        return ("prev", "step_size")

    def moment(self) -> str | None:
        """None: ``prev`` is the last gradient, ``step_size`` is η; m = η·sign(g) is made afresh."""
        return None

    def update(self, state: State, g: Tensor, t: float) -> tuple[Tensor, Updates]:
        s = (g * state["prev"]).sign()
        one = torch.ones_like(g)
        factor = torch.where(s > 0, one * self.etaplus, torch.where(s < 0, one * self.etaminus, one))
        step = (state["step_size"] * factor).clamp(self.step_min, self.step_max)
        g = torch.where(s < 0, torch.zeros_like(g), g)
        return g.sign() * step, {"prev": g, "step_size": step}


@dataclass(frozen=True)
class Interpolated(FirstMoment):
    """Lion's momentum: the step interpolates with one β, the average keeps another.

        m_t = β₁·μ_{t−1} + (1−β₁)·g_t          (the step's moment)
        μ_t = β₂·μ_{t−1} + (1−β₂)·g_t          (the stored average), μ_0 = 0

    With ``β₂ > β₁`` the step leans on the current gradient more than the average that is
    kept does: a longer memory without a slower reaction.

    Args:
        beta1: β₁, the interpolation of the step.
        beta2: β₂, the decay of the stored average.
        name: the state buffer (``exp_avg``, as lion-pytorch).

    Source: Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023
    (arXiv:2302.06675), Algorithm 2.
    """

    beta1: float | Tensor = 0.9
    beta2: float | Tensor = 0.99
    name: str = "exp_avg"

    def __post_init__(self) -> None:
        check(self, "beta1", 0.0, 1.0)
        check(self, "beta2", 0.0, 1.0)

    @property
    def formula(self) -> str:
        return "m = β₁·μ + (1−β₁)·g, μ ← β₂·μ + (1−β₂)·g"

    def init(self, p: Tensor) -> Updates:
        return {self.name: zeros(p)}

    def update(self, state: State, g: Tensor, t: float) -> tuple[Tensor, Updates]:
        avg = state[self.name]
        m = self.beta1 * avg + (1 - self.beta1) * g
        return m, {self.name: self.beta2 * avg + (1 - self.beta2) * g}


@dataclass(frozen=True)
class _Wrapping(Wrapping, FirstMoment):
    """A first-moment rule that changes one thing about another (``inner``)."""

    inner: FirstMoment

    def update(self, state: State, g: Tensor, t: float) -> tuple[Tensor, Updates]:
        return self.inner.update(state, g, t)


@dataclass(frozen=True)
class Initialized(_Wrapping):
    """Another rule whose buffers start at ``value`` instead of 0 (``m_0 = value``).

    Yogi's reference implementations (TF-Addons' port in torch-optimizer, optax) start
    both moments at ``initial_accumulator = 1e-6``, and keep the bias correction.

    Args:
        inner: the rule (usually :class:`EMA`).
        value: the initial value of every buffer of ``inner``.
    """

    value: float = 1e-6

    @property
    def formula(self) -> str:
        return f"{self.inner.formula}, m₀ = {self.value:g}"

    def init(self, p: Tensor) -> Updates:
        return {name: full(b, self.value) for name, b in self.inner.init(p).items()}


@dataclass(frozen=True)
class Corrected(_Wrapping):
    """Another rule's bias-corrected moment ``m̂ = m / c(t)`` as the moment itself (c = 1).

    The engine usually folds ``1/c₁`` into the step size; a direction that is not linear
    in ``m`` (LAMB's trust ratio, and its weight decay added to the direction) must see
    ``m̂`` itself.

    Args:
        inner: the rule whose correction is applied (an :class:`EMA` with bias correction).
    """

    @property
    def formula(self) -> str:
        return f"{self.inner.formula}, m ← m̂"

    def update(self, state: State, g: Tensor, t: float) -> tuple[Tensor, Updates]:
        m, updates = self.inner.update(state, g, t)
        return m / self.inner.correction(t), updates

    def correction(self, t: float) -> Scalar:
        return 1.0


def ademamix_alpha(t: Scalar, alpha: Scalar, warmup: Scalar) -> Scalar:
    """AdEMAMix's α scheduler ``f_α(t) = min(t·α/T_α, α)`` (numbers or 0-dim tensors)."""
    return minimum(t * alpha / warmup, alpha)


def ademamix_beta3(t: Scalar, beta3: Scalar, beta_start: Scalar, warmup: Scalar) -> Scalar:
    """AdEMAMix's β₃ scheduler, a linear warm-up of the half-life ``ln ½ / ln β``:

        f_β₃(t) = min(exp(ln β_s·ln β₃ / ((1 − t/T)·ln β₃ + (t/T)·ln β_s)), β₃)

    from ``β_s`` (β₁) at ``t = 0`` to β₃ at ``t = T`` (numbers or 0-dim tensors)."""
    a = t / warmup
    ln_start, ln_end = log(beta_start), log(beta3)
    return minimum(exp(ln_start * ln_end / ((1 - a) * ln_end + a * ln_start)), beta3)


@dataclass(frozen=True)
class EMAMix(FirstMoment):
    """AdEMAMix's moment: a fast, bias-corrected EMA plus α times a slow one.

        m₁ = β₁·m₁ + (1−β₁)·g,   m₂ = β₃(t)·m₂ + (1−β₃(t))·g      (m₁ = m₂ = 0 at t = 0)
        m_t = m₁/(1−β₁ᵗ) + α(t)·m₂                                (m₂ is not corrected)

    The slow EMA (β₃ ≈ 0.9999) remembers gradients of tens of thousands of steps ago. Its
    weight and decay can be warmed up: ``α(t) = min(t·α/T_α, α)`` over ``alpha_warmup``
    steps, and β₃(t) from β₁ to β₃ by a linear warm-up of the half-life
    (:func:`ademamix_beta3`) over ``beta3_warmup`` steps (``None``: no warm-up). ``t`` is 1
    at the first step, as in the paper and the authors' PyTorch code.

    Args:
        beta1: β₁, the fast EMA.
        beta3: β₃, the slow EMA.
        alpha: α, the weight of the slow EMA.
        alpha_warmup: T_α, or ``None``.
        beta3_warmup: T_β₃, or ``None`` (needs β₁ > 0: the warm-up starts at β₁).
        fast, slow: the state buffers (the authors' ``exp_avg_fast``, ``exp_avg_slow``).

    Source: Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster,
    Older", ICLR 2025 (arXiv:2409.03137), Algorithm 1.
    """

    beta1: float | Tensor = 0.9
    beta3: float | Tensor = 0.9999
    alpha: float | Tensor = 5.0
    alpha_warmup: float | Tensor | None = None
    beta3_warmup: float | Tensor | None = None
    fast: str = "exp_avg_fast"
    slow: str = "exp_avg_slow"
    needs_step = True

    def __post_init__(self) -> None:
        check(self, "beta1", 0.0, 1.0)
        check(self, "beta3", 0.0, 1.0)
        check(self, "alpha", 0.0)
        for name in ("alpha_warmup", "beta3_warmup"):
            if getattr(self, name) is not None:
                check(self, name, 1.0)
        if self.beta3_warmup is not None and not isinstance(self.beta1, Tensor) and self.beta1 == 0:
            raise ValueError("EMAMix: the beta3 warm-up starts at beta1, which must be > 0 (got 0)")

    @property
    def formula(self) -> str:
        return "m₁ = β₁·m₁ + (1−β₁)·g, m₂ = β₃·m₂ + (1−β₃)·g, m = m₁/(1−β₁ᵗ) + α·m₂"

    def init(self, p: Tensor) -> Updates:
        return {self.fast: zeros(p), self.slow: zeros(p)}

    def moment(self) -> str | None:
        """The fast EMA m₁ stands for m (m = m₁/(1−β₁ᵗ) + α(t)·m₂ is made afresh each step)."""
        return self.fast

    def alpha_at(self, t: Scalar) -> Scalar:
        """α(t), the weight of the slow EMA at step ``t``."""
        return self.alpha if self.alpha_warmup is None else ademamix_alpha(t, self.alpha, self.alpha_warmup)

    def beta3_at(self, t: Scalar) -> Scalar:
        """β₃(t), the decay of the slow EMA at step ``t``."""
        if self.beta3_warmup is None:
            return self.beta3
        return ademamix_beta3(t, self.beta3, self.beta1, self.beta3_warmup)

    def advance(self, scalars: Mapping[str, Tensor], t: float) -> tuple[dict[str, Any], dict[str, Any]]:
        # the schedules and the bias correction are numbers of t: once a step, on the host
        return {}, {
            "ademamix_c1": ema_correction(self.beta1, t),
            "ademamix_alpha": self.alpha_at(t),
            "ademamix_beta3": self.beta3_at(t),
        }

    def update(self, state: State, g: Tensor, t: float) -> tuple[Tensor, Updates]:
        fast = self.beta1 * state[self.fast] + (1 - self.beta1) * g
        beta3 = state["ademamix_beta3"]
        slow = beta3 * state[self.slow] + (1 - beta3) * g
        m = fast / state["ademamix_c1"] + state["ademamix_alpha"] * slow
        return m, {self.fast: fast, self.slow: slow}
