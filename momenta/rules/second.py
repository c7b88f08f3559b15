"""Second-moment rules: how ``V_t`` is made from the squared gradients ``g²``.

| rule | V_t | buffers |
|---|---|---|
| :class:`One` | ``1`` (no division) | — |
| :class:`SumSq` | ``V₀ + Σ g²``; lr ``/ (1 + (t−1)·decay)`` | ``sum`` |
| :class:`EMASq` | ``β·V + (1−β)·g²``, optionally ``/ (1−βᵗ)``; centered ``− ḡ²`` | ``exp_avg_sq`` (``grad_avg``) |
| :class:`AMSGrad` | ``max(V_max, V_t)`` of another rule | ``max_exp_avg_sq`` |
| :class:`InfNorm` | ``u = max(β·u, |g| + ε)``, divides as ``u`` (no root) | ``exp_inf`` |
| :class:`Rectified` | another rule's ``V``, its root scaled by RAdam's ``r_t`` (or unused) | the other's |
| :class:`Factored` | ``V ≈ R·C / mean(R)`` from row and column averages of ``g²`` | ``row_var``, ``col_var`` (``variance``) |
| :class:`BeliefSq` | ``β·V + (1−β)·(g − m)² + ε``, optionally ``/ (1−βᵗ)`` (AdaBelief) | ``exp_avg_var`` |
| :class:`YogiSq` | ``V − (1−β)·sign(V − g²)·g²``, ``V₀ = 1e-6``, optionally ``/ (1−βᵗ)`` | ``exp_avg_sq`` |
| :class:`FactoredPaper` | ``R·C / mean(R)`` of ``g² + ε₁``, ``β̂ = 1 − t^c`` (Adafactor, Alg. 4–5) | ``exp_avg_sq_row``, ``exp_avg_sq_col`` (``exp_avg_sq``) |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .base import Eps, Scalar, SecondMoment, State, Updates, Wrapping, check, ema_correction, full, zeros


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
        return {self.name: full(p, self.initial)}

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
        buffers = {self.name: zeros(p)}
        if self.centered:
            buffers[self.mean_name] = zeros(p)
        return buffers

    def nonnegative(self) -> tuple[str, ...]:
        return (self.name,)  # the mean gradient (centered) takes either sign

    def moment(self) -> str | None:
        """``exp_avg_sq``; None when centered (V = the buffer − ḡ², no buffer holds it)."""
        return None if self.centered else self.name

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
        return ema_correction(self.beta, t, self.bias_correction)


@dataclass(frozen=True)
class _Wrapping(Wrapping, SecondMoment):
    """A second-moment rule that changes one thing about another (``inner``); its root
    is the other's unless it says otherwise."""

    inner: SecondMoment

    def update(
        self, state: State, g: Tensor, m: Tensor | None, t: float
    ) -> tuple[Tensor | None, Updates]:
        return self.inner.update(state, g, m, t)

    def denominator(self, v: Tensor, c2: Scalar, eps: Scalar, where_eps: Eps, t: float, state: State) -> Tensor:
        return self.inner.denominator(v, c2, eps, where_eps, t, state)

    def root(self, where_eps: Eps) -> str:
        return self.inner.root(where_eps)

    def nonnegative(self) -> tuple[str, ...]:
        return self.buffers()  # the inner rule's and this one's own


@dataclass(frozen=True)
class AMSGrad(_Wrapping):
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
    def formula(self) -> str:
        return f"{self.inner.formula}, V ← max(V_max, V)"

    def init(self, p: Tensor) -> Updates:
        return {
            **self.inner.init(p),
            self.name: zeros(p),
        }

    def buffers(self) -> tuple[str, ...]:
        return (*self.inner.buffers(), self.name)

    def moment(self) -> str | None:
        """The running maximum (what divides), not the inner rule's V."""
        return self.name

    def update(
        self, state: State, g: Tensor, m: Tensor | None, t: float
    ) -> tuple[Tensor | None, Updates]:
        v, updates = self.inner.update(state, g, m, t)
        if v is None:
            raise ValueError(f"AMSGrad needs a second moment, but {self.inner!r} has V = 1")
        v_max = torch.maximum(state[self.name], v)
        return v_max, {**updates, self.name: v_max}



@dataclass(frozen=True)
class InfNorm(SecondMoment):
    """u_t = max(β·u_{t−1}, |g_t| + ε): an exponentially weighted infinity norm (Adamax).

    ``u`` is already a root with ε inside, so it divides ``m`` as it is: the step is
    ``m̂ / u`` (the engine's ε is not added again).

    Args:
        beta: β₂.
        eps: ε, added to ``|g|``.
        name: the state buffer (torch's ``exp_inf``).

    Source: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, section 7.1.
    """

    beta: float | Tensor = 0.999
    eps: float | Tensor = 1e-8
    name: str = "exp_inf"

    def __post_init__(self) -> None:
        check(self, "beta", 0.0, 1.0)
        check(self, "eps", 0.0)

    @property
    def formula(self) -> str:
        return "u = max(β·u, |g| + ε), √V = u"

    def init(self, p: Tensor) -> Updates:
        return {self.name: zeros(p)}

    def update(
        self, state: State, g: Tensor, m: Tensor | None, t: float
    ) -> tuple[Tensor | None, Updates]:
        u = torch.maximum(self.beta * state[self.name], g.abs() + self.eps)
        return u, {self.name: u}

    def denominator(self, v: Tensor, c2: Scalar, eps: Scalar, where_eps: Eps, t: float, state: State) -> Tensor:
        return v

    def root(self, where_eps: Eps) -> str:
        return "u"


@dataclass(frozen=True)
class Rectified(_Wrapping):
    """RAdam's rectified V: the adaptive step only once its variance is tractable.

        ρ_∞ = 2/(1−β) − 1,   ρ_t = ρ_∞ − 2t·βᵗ/(1−βᵗ)
        r_t = √((ρ_t−4)(ρ_t−2)ρ_∞ / ((ρ_∞−4)(ρ_∞−2)ρ_t))
        step ∝ r_t · m̂ / ((√V + ε)/√(1−βᵗ))  if ρ_t > 5,   else m̂ (no division)

    Args:
        inner: the bias-corrected EMA of g² (:class:`EMASq`) being rectified.

    Source: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond",
    ICLR 2020. As in ``torch.optim.RAdam``.
    """

    inner: EMASq

    @property
    def needs_step(self) -> bool:  # type: ignore[override]
        return True

    @property
    def formula(self) -> str:
        return f"{self.inner.formula}, √V̂ ← √V̂/r_t (ρ_t > 5; else V̂ = 1)"

    def root(self, where_eps: Eps) -> str:
        return f"{self.inner.root(where_eps)}/r_t"

    def advance(self, scalars: Mapping[str, Tensor], t: float) -> tuple[dict[str, Any], dict[str, Any]]:
        # r_t once per step on the host, in double precision as torch computes it: ρ_t is a
        # difference of two large numbers (≈ 2/(1−β) each), which float32 would round badly
        new, values = self.inner.advance(scalars, t)
        beta = float(self.inner.beta)
        rho_inf = 2 / (1 - beta) - 1
        rho = rho_inf - 2 * t * beta**t / ema_correction(beta, t)
        rect = ((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)) ** 0.5 if rho > 5 else 0.0
        return new, {**values, "radam_rect": rect}

    def denominator(self, v: Tensor, c2: Scalar, eps: Scalar, where_eps: Eps, t: float, state: State) -> Tensor:
        rect = state["radam_rect"]  # r_t, or 0 while ρ_t ≤ 5 (no division then)
        adaptive = lambda: self.inner.denominator(v, c2, eps, where_eps, t, state) / rect  # noqa: E731
        if isinstance(rect, Tensor):  # a kernel: both branches, chosen per step
            return torch.where(rect > 0, adaptive(), torch.ones_like(v))
        return adaptive() if rect > 0 else torch.ones_like(v)


@dataclass(frozen=True)
class Factored(SecondMoment):
    """V ≈ R·C / mean(R): Adafactor's factored second moment, with ``β̂_t = t^c``:

        R ← R + β̂_t·(mean_cols(g²) − R),   C ← C + β̂_t·(mean_rows(g²) − C)
        V = R·C / max(mean(R), ε₁),   √V̂ = √max(V, ε₁²)

    A matrix (or a batch of matrices: the last two dimensions) keeps a row and a column of
    averages instead of a full ``V``; vectors and scalars keep a full ``variance``. Not
    elementwise (rows and columns), so it runs on the reference path.

    Args:
        beta2_decay: c, the power in ``β̂_t = t^c`` (torch's default −0.8).
        eps: ε₁, the floor of V (``None``: the dtype's machine epsilon).

    Source: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", ICML 2018. As in ``torch.optim.Adafactor``.
    """

    beta2_decay: float = -0.8
    eps: float | None = None
    needs_step = True
    elementwise = False

    def __post_init__(self) -> None:
        if not self.beta2_decay <= 0:
            raise ValueError(f"Factored: invalid beta2_decay: {self.beta2_decay} (expected beta2_decay <= 0)")

    @property
    def formula(self) -> str:
        return "V = R·C/mean(R), R, C: row and column averages of g² (β̂ = t^c)"

    def buffers(self) -> tuple[str, ...]:
        return ("row_var", "col_var", "variance")

    def init(self, p: Tensor) -> Updates:
        if p.dim() > 1:
            rows, cols = list(p.shape), list(p.shape)
            rows[-1], cols[-2] = 1, 1
            return {"row_var": p.new_zeros(rows), "col_var": p.new_zeros(cols)}
        return {"variance": zeros(p)}

    def _eps(self, g: Tensor) -> float:
        return self.eps if self.eps is not None else torch.finfo(g.dtype).eps

    def update(
        self, state: State, g: Tensor, m: Tensor | None, t: float
    ) -> tuple[Tensor | None, Updates]:
        weight = t**self.beta2_decay
        if g.dim() > 1:
            row = state["row_var"].lerp(g.square().mean(dim=-1, keepdim=True), weight)
            col = state["col_var"].lerp(g.square().mean(dim=-2, keepdim=True), weight)
            v = (row @ col) / row.mean(dim=-2, keepdim=True).clamp(min=self._eps(g))
            return v, {"row_var": row, "col_var": col}
        variance = state["variance"].lerp(g * g, weight)
        return variance, {"variance": variance}

    def root(self, where_eps: Eps) -> str:
        return "√max(V, ε₁²)"

    def denominator(self, v: Tensor, c2: Scalar, eps: Scalar, where_eps: Eps, t: float, state: State) -> Tensor:
        eps1 = self._eps(v)
        return v.clamp(min=eps1 * eps1).sqrt()


@dataclass(frozen=True)
class BeliefSq(SecondMoment):
    """AdaBelief's V: the EMA of the squared deviation of g from its own EMA m.

        s_t = β·s_{t−1} + (1−β)·(g_t − m_t)² + ε,   s_0 = 0;   ŝ_t = s_t / (1 − βᵗ)

    ``m_t`` is this step's first moment (the rule needs ``precondition="moment"``). ε is
    added to the state itself, every step, and again outside the root by the engine
    (``√ŝ + ε``), as in the paper and its authors' code. A gradient close to its average
    (a "belief" the step trusts) takes a large step, a surprising one a small step.

    Args:
        beta: β₂.
        eps: ε, added to ``s`` every step (the group's ε).
        bias_correction: divide by ``1 − βᵗ``.
        name: the state buffer (the authors' ``exp_avg_var``).

    Source: Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in
    Observed Gradients", NeurIPS 2020 (arXiv:2010.07468), Algorithm 2.
    """

    beta: float | Tensor = 0.999
    eps: float | Tensor = 1e-8
    bias_correction: bool = True
    name: str = "exp_avg_var"

    def __post_init__(self) -> None:
        check(self, "beta", 0.0, 1.0)
        check(self, "eps", 0.0)

    @property
    def needs_step(self) -> bool:  # type: ignore[override]
        return self.bias_correction

    @property
    def formula(self) -> str:
        s = "V = β·V + (1−β)·(g − m)² + ε"
        return s + ", V̂ = V/(1−βᵗ)" if self.bias_correction else s

    def init(self, p: Tensor) -> Updates:
        return {self.name: zeros(p)}

    def update(
        self, state: State, g: Tensor, m: Tensor | None, t: float
    ) -> tuple[Tensor | None, Updates]:
        if m is None:
            raise ValueError("BeliefSq needs this step's first moment: use Rules(precondition='moment')")
        residual = g - m
        s = self.beta * state[self.name] + (1 - self.beta) * residual * residual + self.eps
        return s, {self.name: s}

    def correction(self, t: float) -> Scalar:
        return ema_correction(self.beta, t, self.bias_correction)


@dataclass(frozen=True)
class YogiSq(SecondMoment):
    """Yogi's V: an additive update whose size is ``(1−β)·g²`` and whose sign follows g²:

        V_t = V_{t−1} − (1−β)·sign(V_{t−1} − g_t²)·g_t²,   V_0 = initial;   V̂ = V/(1 − βᵗ)

    Adam's ``V − (1−β)·(V − g²)`` moves V by a share of its distance to g², so a burst of
    large gradients can make it forget quickly; Yogi's step is bounded by g² itself.
    V₀ and the bias correction are the reference implementations' (TF-Addons, its port in
    torch-optimizer, optax): both start at ``initial_accumulator = 1e-6`` and are corrected.

    Args:
        beta: β₂.
        initial: V₀.
        bias_correction: divide by ``1 − βᵗ``.
        name: the state buffer (``exp_avg_sq``).

    Source: Zaheer, Reddi, Sachan, Kale & Kumar, "Adaptive Methods for Nonconvex
    Optimization", NeurIPS 2018, Algorithm 2.
    """

    beta: float | Tensor = 0.999
    initial: float = 1e-6
    bias_correction: bool = True
    name: str = "exp_avg_sq"

    def __post_init__(self) -> None:
        check(self, "beta", 0.0, 1.0)
        check(self, "initial", 0.0)

    @property
    def needs_step(self) -> bool:  # type: ignore[override]
        return self.bias_correction

    @property
    def formula(self) -> str:
        v = "V = V − (1−β)·sign(V − g²)·g²"
        return v + ", V̂ = V/(1−βᵗ)" if self.bias_correction else v

    def init(self, p: Tensor) -> Updates:
        return {self.name: full(p, self.initial)}

    def update(
        self, state: State, g: Tensor, m: Tensor | None, t: float
    ) -> tuple[Tensor | None, Updates]:
        v, sq = state[self.name], g * g
        v = v - (1 - self.beta) * (v - sq).sign() * sq
        return v, {self.name: v}

    def correction(self, t: float) -> Scalar:
        return ema_correction(self.beta, t, self.bias_correction)


@dataclass(frozen=True)
class FactoredPaper(SecondMoment):
    """Adafactor's factored V as the paper (and its authors' code) writes it, ε₁ inside:

        β̂_t = 1 − t^c,   G = g² + ε₁
        R ← β̂_t·R + (1−β̂_t)·mean_cols(G),   C ← β̂_t·C + (1−β̂_t)·mean_rows(G)
        V = R·C / mean(R),   √V divides (no ε outside)

    The row and column averages of a matrix (the last two dimensions; a batch of matrices
    keeps one pair per matrix) replace a full V; vectors and scalars keep a full
    ``V ← β̂_t·V + (1−β̂_t)·G``. Means rather than the paper's sums give the same V
    (``R̄·C̄/mean(R̄) = R·Cᵀ/ΣR``). Unlike :class:`Factored` (torch.optim.Adafactor's, which
    floors V at ε₁ afterwards), ε₁ = 1e-30 enters the statistics, as in Algorithms 4–5.

    Args:
        decay_rate: c ≤ 0, the power in ``β̂_t = 1 − t^c`` (the paper's −0.8).
        eps1: ε₁, added to g².

    Source: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", ICML 2018 (arXiv:1804.04235), Algorithms 4 and 5; state names and shapes of its
    authors' tensor2tensor code as ported to fairseq and Hugging Face (``exp_avg_sq_row``,
    ``exp_avg_sq_col``, ``exp_avg_sq``).
    """

    decay_rate: float = -0.8
    eps1: float = 1e-30
    needs_step = True
    elementwise = False

    def __post_init__(self) -> None:
        if not isinstance(self.decay_rate, Tensor) and not self.decay_rate <= 0:
            raise ValueError(f"FactoredPaper: invalid decay_rate: {self.decay_rate} (expected decay_rate <= 0)")
        check(self, "eps1", 0.0)

    @property
    def formula(self) -> str:
        return "V = R·C/mean(R), R, C: row and column averages of g² + ε₁ (β̂ = 1 − t^c)"

    def buffers(self) -> tuple[str, ...]:
        return ("exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq")

    def init(self, p: Tensor) -> Updates:
        if p.dim() >= 2:
            shape = tuple(p.shape)
            return {
                "exp_avg_sq_row": p.new_zeros(shape[:-1]),
                "exp_avg_sq_col": p.new_zeros(shape[:-2] + shape[-1:]),
            }
        return {"exp_avg_sq": zeros(p)}

    def update(
        self, state: State, g: Tensor, m: Tensor | None, t: float
    ) -> tuple[Tensor | None, Updates]:
        beta = 1.0 - t**self.decay_rate
        sq = g * g + self.eps1
        if g.dim() >= 2:
            row = beta * state["exp_avg_sq_row"] + (1 - beta) * sq.mean(dim=-1)
            col = beta * state["exp_avg_sq_col"] + (1 - beta) * sq.mean(dim=-2)
            v = (row / row.mean(dim=-1, keepdim=True)).unsqueeze(-1) * col.unsqueeze(-2)
            return v, {"exp_avg_sq_row": row, "exp_avg_sq_col": col}
        v = beta * state["exp_avg_sq"] + (1 - beta) * sq
        return v, {"exp_avg_sq": v}

    def root(self, where_eps: Eps) -> str:
        return "√V"

    def denominator(self, v: Tensor, c2: Scalar, eps: Scalar, where_eps: Eps, t: float, state: State) -> Tensor:
        return v.sqrt()
