"""Iterate rules: how the direction ``d`` moves the weights ``w``.

| rule | w ← | state | elementwise |
|---|---|---|---|
| :class:`Descent` | ``w·(1 − lr·λ) − lr·d`` | — | yes |
| :class:`ShapeScaled` | ``w·(1 − lr·λ) − lr·s·d``, ``s`` by the matrix's shape (Muon's adjusted lr) | — | no (shape) |
| :class:`Unscaled` | ``w − d`` (``d`` carries its own step sizes) | — | yes |
| :class:`Averaged` | ``w·(1 − λ·η) − η·d``, and ``ax ← ax + μ·(w − ax)`` | ``eta``, ``mu``, ``ax`` | yes |
| :class:`RelativeStep` | ``w·(1 − lr·λ) − max(ε₂, RMS(w))·min(lr, 1/√t)·d`` | — | no (RMS) |
| :class:`ScheduleFree` | ``y ← (1−c)·y + c·z + lr·(β(1−c) − 1)·d``, ``z ← z − lr·d`` | ``z``, ``lr_max``, ``weight_sum`` | yes |
| :class:`RelativeUpdate` | ``w·(1 − α·λ) − u``, ``u = α·d`` or its EMA, ``α = max(ε₂, RMS(w))·min(lr, 1/√t)`` | (``exp_avg``) | no (RMS) |

``shrink`` is ``1 − lr·λ`` when decoupled weight decay is on (``None`` otherwise);
``step_size`` is ``lr / (c₁·d(t))``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from .base import (
    FirstMoment,
    Iterate,
    Move,
    Scalar,
    State,
    Updates,
    check,
    maximum,
    minimum,
    rms,
    sqrt,
    where,
    zeros,
)


def _decayed(w: Tensor, shrink: Scalar | None) -> Tensor:
    return w if shrink is None else w * shrink


@dataclass(frozen=True)
class Descent(Iterate):
    """w ← w·(1 − lr·λ) − lr·d: a step along ``−d`` (every optimizer's default)."""

    @property
    def formula(self) -> str:
        return "w ← w − lr·{d}"

    def apply(
        self, state: State, w: Tensor, d: Tensor, step_size: Scalar, lr: Scalar, shrink: Scalar | None, t: float
    ) -> tuple[Move, Updates]:
        return (_decayed(w, shrink), -step_size, d), {}


@dataclass(frozen=True)
class ShapeScaled(Iterate):
    """w ← w·(1 − lr·λ) − lr·s·d, with ``s`` set by the shape (rows, cols) of ``w``:

        s = √max(1, rows/cols)           ("original", Keller Jordan's)
        s = 0.2·√max(rows, cols)         ("match_rms_adamw", Moonshot's: AdamW's update RMS)
        s = 1                            ("none")

    so that orthogonalised updates of every shape have a comparable size (Muon). The
    decay takes ``lr`` itself, not ``lr·s``.

    ``lr·s`` is one number, torch's "adjusted lr", which the add multiplies into ``d``: with
    a tensor ``lr`` it is taken in the tensor's dtype, as torch does. (``lr·(s·d)`` would
    round ``s·d`` first, and Newton–Schulz's bfloat16 spreads such last-bit differences.)

    Args:
        adjust_lr: the shape scaling ``s``.

    Source: Jordan et al., "Muon: An optimizer for hidden layers in neural networks",
    2024; Liu et al., "Muon is Scalable for LLM Training", 2025 (``match_rms_adamw``).
    Matches ``torch.optim.Muon``'s ``_adjust_lr``.
    """

    adjust_lr: Literal["original", "match_rms_adamw", "none"] = "original"
    elementwise = False

    def __post_init__(self) -> None:
        if self.adjust_lr not in ("original", "match_rms_adamw", "none"):
            raise ValueError(
                f"ShapeScaled: invalid adjust_lr: {self.adjust_lr!r} "
                "(expected 'original', 'match_rms_adamw' or 'none')"
            )

    @property
    def formula(self) -> str:
        return "w ← w − lr·s·{d}"

    def scale(self, shape: torch.Size) -> float:
        """s(shape): the factor that evens out update sizes across matrix shapes."""
        rows, cols = shape[:2]
        if self.adjust_lr == "original":
            return math.sqrt(max(1, rows / cols))
        if self.adjust_lr == "match_rms_adamw":
            return 0.2 * math.sqrt(max(rows, cols))
        return 1.0

    def apply(
        self, state: State, w: Tensor, d: Tensor, step_size: Scalar, lr: Scalar, shrink: Scalar | None, t: float
    ) -> tuple[Move, Updates]:
        s = self.scale(w.shape)
        adjusted: Scalar
        if isinstance(lr, Tensor) and not isinstance(step_size, Tensor):
            # a tensor lr (the engine passed its step size on as a number): lr·s in its dtype
            adjusted = (torch.as_tensor(step_size, dtype=lr.dtype) * s).item()
        else:
            adjusted = step_size * s
        return (_decayed(w, shrink), -adjusted, d), {}


@dataclass(frozen=True)
class Unscaled(Iterate):
    """w ← w − d: the direction already holds per-coordinate step sizes (Rprop's), and the
    learning rate only initialised them."""

    @property
    def formula(self) -> str:
        return "w ← w − {d}"

    def apply(
        self, state: State, w: Tensor, d: Tensor, step_size: Scalar, lr: Scalar, shrink: Scalar | None, t: float
    ) -> tuple[Move, Updates]:
        return (_decayed(w, shrink), -1.0, d), {}


@dataclass(frozen=True)
class Averaged(Iterate):
    """Averaged SGD: w ← w·(1 − λ·η_t) − η_t·d, and the average ``ax ← ax + μ_t·(w − ax)``.

    ``η_t = lr / (1 + λ·lr·(t−1))^α`` and ``μ_t = 1 / max(1, t − 1 − t₀)``: the step
    size decays, and after step ``t₀`` the average of the iterates is kept in ``ax`` (the
    value to evaluate, by Polyak–Juditsky). ``η`` and ``μ`` are per-parameter scalar state,
    as in torch (set at the end of each step for the next one).

    Args:
        lr: the initial step size η₁.
        lambd: λ, the decay term.
        alpha: α, the power of the step-size decay.
        t0: t₀, the step at which averaging starts.
        step_as_tensor: compute the next η with the step as a 0-dim tensor of torch's dtype
            for ``step`` (float32 unless the default dtype is float64), as torch's foreach
            and capturable ASGD do; by default with the step as a number, as its for-loop
            does. The two round η differently in its last bits.

    Source: Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging",
    SIAM J. Control Optim. 1992; Bottou, "Stochastic Gradient Descent Tricks", 2012.
    Matches ``torch.optim.ASGD``.
    """

    lr: float = 1e-2
    lambd: float = 1e-4
    alpha: float = 0.75
    t0: float = 1e6
    name: str = "ax"
    step_as_tensor: bool = False
    needs_step = True

    def __post_init__(self) -> None:
        check(self, "lambd", 0.0)

    @property
    def formula(self) -> str:
        return "w ← w·(1 − λ·η) − η·{d}, ax ← ax + μ·(w − ax)"

    def scalars(self) -> dict[str, float]:
        return {"eta": float(self.lr), "mu": 1.0}

    def init(self, p: Tensor) -> Updates:
        return {self.name: zeros(p)}

    def advance(self, scalars: Mapping[str, Tensor], t: float) -> tuple[dict[str, Any], dict[str, Any]]:
        # this step runs with the η and μ set by the last one; the next one's are set now
        now = {"eta": scalars["eta"].item(), "mu": scalars["mu"].item()}
        step: float | Tensor = t
        if self.step_as_tensor:  # torch's dtype for `step`
            double = torch.get_default_dtype() == torch.float64
            step = torch.tensor(t, dtype=torch.float64 if double else torch.float32)
        # through a tensor (of the default dtype for a number), as torch rounds them before
        # they are copied into the state, whatever the state's dtype (float64 once loaded)
        after = {
            "eta": torch.as_tensor(self.lr / ((1 + self.lambd * self.lr * step) ** self.alpha)),
            "mu": torch.as_tensor(1 / max(1, t - self.t0)),
        }
        return after, now

    def apply(
        self, state: State, w: Tensor, d: Tensor, step_size: Scalar, lr: Scalar, shrink: Scalar | None, t: float
    ) -> tuple[Move, Updates]:
        eta, mu = state["eta"], state["mu"]
        base = w * (1 - self.lambd * eta)
        new = base - eta * d
        ax = state[self.name]
        return (base, -eta, d), {self.name: where(mu == 1, new, ax + (new - ax) * mu)}


@dataclass(frozen=True)
class RelativeStep(Iterate):
    """w ← w·(1 − lr·λ) − α_t·d with α_t = max(ε₂, RMS(w)) · min(lr, 1/√t).

    The step is relative to the parameter's own scale (measured before weight decay), and
    the learning rate is capped by ``1/√t``.

    Args:
        eps: ε₂, the smallest scale (so that parameters starting at 0 can move).

    Source: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", ICML 2018, section 8 (relative step size). As in ``torch.optim.Adafactor``.
    """

    eps: float = 1e-3
    needs_step = True
    elementwise = False

    def __post_init__(self) -> None:
        check(self, "eps", 0.0)

    @property
    def formula(self) -> str:
        return "w ← w − max(ε₂, RMS(w))·min(lr, 1/√t)·{d}"

    def apply(
        self, state: State, w: Tensor, d: Tensor, step_size: Scalar, lr: Scalar, shrink: Scalar | None, t: float
    ) -> tuple[Move, Updates]:
        alpha = maximum(self.eps, rms(w).item()) * minimum(lr, 1 / sqrt(t))
        return (_decayed(w, shrink), -alpha, d), {}


@dataclass(frozen=True)
class ScheduleFree(Iterate):
    """Schedule-free: the weights hold ``y``, an interpolation of the SGD iterate ``z`` and
    its running average ``x``; no learning-rate schedule is needed.

        c_t = w_t / Σ_{s≤t} w_s,  w_t = t^r · lr_max^p        (lr_max: the largest lr so far)
        y ← (1 − c)·y + c·z + lr·(β·(1 − c) − 1)·d
        z ← z − lr·d
        x = (y − (1 − β)·z) / β                              (what to evaluate)

    ``lr_max`` and ``weight_sum`` are per-parameter scalar state (the authors keep them
    per param group: the same numbers while a group's parameters step together; in
    float32, ``step``'s usual dtype, the sum gains a rounding error of up to 6e-8 a step, so
    :class:`momenta.ScheduleFreeAdamW` keeps both in float64, as the authors' floats). ``lr``
    here is the step size the engine computes (warm-up included), and the direction ``d``
    holds everything else: with ``Rules(weight_decay="direction")`` it is
    ``g/(√V̂ + ε) + λ·y``, the weight decay taken at ``y`` as the authors' AdamW does.

    Args:
        beta: β, the interpolation between ``z`` and ``x`` (Adam's β₁ plays this role).
        lr: the group's learning rate (for the weights ``w_t``).
        warmup_steps: linear warm-up of the learning rate over this many steps.
        r: the power of ``t`` in the averaging weights.
        weight_lr_power: p, the power of ``lr_max`` in the averaging weights.
        name: the buffer of ``z``.

    Source: Defazio et al., "The Road Less Scheduled", NeurIPS 2024 (the authors'
    ``schedulefree`` package, ``AdamWScheduleFree``).
    """

    beta: float = 0.9
    lr: float = 0.0025
    warmup_steps: int = 0
    r: float = 0.0
    weight_lr_power: float = 2.0
    name: str = "z"
    needs_step = True

    def __post_init__(self) -> None:
        check(self, "beta", 0.0, 1.0)
        check(self, "warmup_steps", 0)

    @property
    def formula(self) -> str:
        return "y ← (1−c)·y + c·z + lr·(β(1−c) − 1)·{d}, z ← z − lr·{d}"

    def init(self, p: Tensor) -> Updates:
        return {self.name: p.detach().clone(memory_format=torch.preserve_format)}

    def scalars(self) -> dict[str, float]:
        return {"lr_max": -1.0, "weight_sum": 0.0}

    def warmup(self, t: float) -> float:
        """The warm-up factor of the learning rate at step ``t``."""
        return t / self.warmup_steps if t <= self.warmup_steps else 1.0

    def decay(self, t: float) -> Scalar:
        return 1 / self.warmup(t)

    def advance(self, scalars: Mapping[str, Tensor], t: float) -> tuple[dict[str, Any], dict[str, Any]]:
        lr = float(self.lr) * self.warmup(t)
        lr_max = max(lr, scalars["lr_max"].item())
        weight = (t**self.r) * (lr_max**self.weight_lr_power)
        weight_sum = scalars["weight_sum"].item() + weight
        c = weight / weight_sum if weight_sum != 0 else 0.0
        return {"lr_max": lr_max, "weight_sum": weight_sum}, {"ckp1": c}

    def apply(
        self, state: State, w: Tensor, d: Tensor, step_size: Scalar, lr: Scalar, shrink: Scalar | None, t: float
    ) -> tuple[Move, Updates]:
        c, z = state["ckp1"], state[self.name]
        y = _decayed(w, shrink)
        return (y + c * (z - y), step_size * (self.beta * (1 - c) - 1), d), {self.name: z - step_size * d}


@dataclass(frozen=True)
class RelativeUpdate(Iterate):
    """Adafactor's step as its authors' code takes it: relative size, optional momentum of
    the scaled update, and weight decay at that size.

        α_t = max(ε₂, RMS(w)) · ρ_t,   ρ_t = min(lr, 1/√t)     (RMS(w) before the step)
        u = α_t·d,   or with momentum  u ← β₁·u + (1−β₁)·α_t·d
        w ← w·(1 − α_t·λ) − u

    ``scale_parameter=False`` drops the ``max(ε₂, RMS(w))`` factor, ``relative_step=False``
    makes ``ρ_t = lr``. The momentum (an :class:`~momenta.rules.EMA` over the already
    scaled updates) and the decay ``1 − α_t·λ`` are tensor2tensor's and its ports' (fairseq,
    Hugging Face, torch-optimizer); torch.optim.Adafactor decays by ``1 − lr·λ``
    (:class:`RelativeStep`). Weight decay is on when the engine passes ``shrink``
    (``Rules(weight_decay="decoupled")``); its value λ is this rule's.

    Args:
        eps: ε₂, the smallest parameter scale.
        relative_step: ``ρ_t = min(lr, 1/√t)`` (else ``lr``).
        scale_parameter: multiply by ``max(ε₂, RMS(w))``.
        weight_decay: λ.
        momentum: the EMA of the scaled updates (β₁, buffer ``exp_avg``), or ``None``.

    Source: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", ICML 2018 (arXiv:1804.04235), sections 8–9 (relative step size, ρ_t, α_t).
    """

    eps: float = 1e-3
    relative_step: bool = True
    scale_parameter: bool = True
    weight_decay: float = 0.0
    momentum: FirstMoment | None = None
    needs_step = True
    elementwise = False
    decay_formula = "w ← w·(1 − α·λ)"

    def __post_init__(self) -> None:
        check(self, "eps", 0.0)
        check(self, "weight_decay", 0.0)

    @property
    def formula(self) -> str:
        scale = "max(ε₂, RMS(w))·" if self.scale_parameter else ""
        rho = "min(lr, 1/√t)" if self.relative_step else "lr"
        step = f"{scale}{rho}·{{d}}"
        if self.momentum is not None:
            return f"u ← β₁·u + (1−β₁)·{step}, w ← w − u"
        return f"w ← w − {step}"

    def init(self, p: Tensor) -> Updates:
        return self.momentum.init(p) if self.momentum is not None else {}

    def buffers(self) -> tuple[str, ...]:
        return self.momentum.buffers() if self.momentum is not None else ()

    def exact(self) -> tuple[str, ...]:
        return ()  # its buffer is a first moment (Adafactor's ``exp_avg``), not weights

    def size(self, w: Tensor, lr: Scalar, t: float) -> Scalar:
        """α_t, the step size for weights ``w`` (before the step) at step ``t``."""
        rho = minimum(lr, 1 / sqrt(t)) if self.relative_step else lr
        return maximum(self.eps, rms(w).item()) * rho if self.scale_parameter else rho

    def apply(
        self, state: State, w: Tensor, d: Tensor, step_size: Scalar, lr: Scalar, shrink: Scalar | None, t: float
    ) -> tuple[Move, Updates]:
        alpha = self.size(w, lr, t)
        u: Tensor = alpha * d
        updates: Updates = {}
        if self.momentum is not None:
            u, updates = self.momentum.update(state, u, t)
        base = w * (1 - alpha * self.weight_decay) if shrink is not None else w
        return (base, -1.0, u), updates
