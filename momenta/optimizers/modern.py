"""Optimizers from after torch.optim's set, each a composition of momenta's rules.

torch-style constructors (``params`` first, the paper's defaults, ``weight_decay``,
``maximize``, ``foreach``, ``nonfinite``), hyperparameters in the param groups (schedulers
work), and the numbers of each method's established implementation (to float64 rounding).

| optimizer | m | V | direction, iterate |
|---|---|---|---|
| :class:`AdaBelief` | ``EMA(g)``, bias-corrected | ``EMA((g − m)²) + ε``, bias-corrected | decay decoupled (or L2) |
| :class:`Lion` | ``β₁·μ + (1−β₁)·g``; ``μ = EMA_β₂(g)`` kept | ``1`` | ``sign``; decay decoupled |
| :class:`LAMB` | ``EMA(g)``, corrected before the direction | ``EMA(g²)``, bias-corrected | ``+ λ·w``, then trust ratio ``‖w‖/‖d‖`` |
| :class:`LARS` | momentum over the direction | ``1`` | ``g + λ·w`` scaled by ``η·‖w‖/(‖g‖ + λ‖w‖)`` |
| :class:`Yogi` | ``EMA(g)`` from ``1e-6``, bias-corrected | ``V − (1−β₂)·sign(V − g²)·g²``, bias-corrected | L2 decay |
| :class:`ScheduleFreeAdamW` | ``g`` | ``EMA(g²)``, bias-corrected | ``+ λ·y``; schedule-free ``y``, ``z`` |
| :class:`AdEMAMix` | ``m₁/(1−β₁ᵗ) + α(t)·m₂``, fast and slow EMAs | ``EMA(g²)``, bias-corrected | decay decoupled |
| :class:`AdafactorPaper` | ``g`` | factored ``R·C/mean(R)`` of ``g² + ε₁`` | RMS clipped; step ``max(ε₂, RMS(w))·min(lr, 1/√t)``, optional momentum |

AdaBelief, Lion, Yogi, ScheduleFreeAdamW and AdEMAMix are elementwise and run on the fast
path (flat buffers, compiled kernels); LAMB and LARS take only norms of whole parameters and
run on flat buffers too, eagerly, with per-parameter segments; AdafactorPaper (rows and
columns) runs on the reference path, one parameter at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..engine import Optimizer, Rules, validation
from ..engine.optimizer import Nonfinite, ParamsT
from ..engine.storage import ParamRounding, StatePrecision
from ..rules import (
    EMA,
    BeliefSq,
    ClipRMS,
    Corrected,
    EMAMix,
    EMASq,
    FactoredPaper,
    Gradient,
    Initialized,
    Interpolated,
    LocalLR,
    Momentum,
    One,
    RelativeUpdate,
    ScheduleFree,
    Sign,
    TrustRatio,
    YogiSq,
)

# -- AdaBelief -------------------------------------------------------------------------------


class AdaBelief(Optimizer):
    """AdaBelief: Adam that divides by the spread of g around its EMA, not by its size.

        m = β₁·m + (1−β₁)·g,                 m̂ = m/(1−β₁ᵗ)
        s = β₂·s + (1−β₂)·(g − m)² + ε,      ŝ = s/(1−β₂ᵗ)     (ε stays in s)
        d = m̂/(√ŝ + ε)
        w ← w·(1 − lr·λ) − lr·d                                (L2 instead: g ← g + λ·w)

    A gradient close to what the EMA predicts (small ``(g − m)²``) takes a large step; a
    surprising one, a small step. The residual uses this step's ``m``.

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-3); a float or a 1-element tensor.
        betas: (β₁, β₂) (default (0.9, 0.999)).
        eps: ε, added to ``s`` every step and to ``√ŝ`` (default 1e-8; the authors'
            package defaults to 1e-16, Algorithm 2 to 1e-8).
        weight_decay: λ (default 0).
        decoupled_weight_decay: ``w ← w·(1 − lr·λ)`` (default True, the authors' package
            and experiments), else L2 added to ``g``.
        maximize: ascend instead of descend (default False).
        foreach: ``False`` runs the for-loop (reference path); ``None``/``True`` the fast path.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    State: ``step``, ``exp_avg``, ``exp_avg_var`` (the authors' names). Without the
    authors' optional rectification (``rectify``) and AMSGrad variant.

    Source: Juntang Zhuang, Tommy Tang, Yifan Ding, Sekhar Tatikonda, Nicha Dvornek,
    Xenophon Papademetris, James S. Duncan, "AdaBelief Optimizer: Adapting Stepsizes by the
    Belief in Observed Gradients", NeurIPS 2020, arXiv:2010.07468 (Algorithm 2). Matches
    ``torch_optimizer.AdaBelief`` (and the authors' ``adabelief_pytorch``) with
    ``rectify=False``.
    """

    checks = validation.MODERN

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = True,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, foreach=foreach,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        beta1, beta2 = group["betas"]
        return Rules(
            EMA(beta1, bias_correction=True),
            BeliefSq(beta2, group["eps"], bias_correction=True),
            weight_decay="decoupled" if group["decoupled_weight_decay"] else "coupled",
        )


# -- Lion ------------------------------------------------------------------------------------


class Lion(Optimizer):
    """Lion: the sign of an interpolated momentum, found by program search.

        c = β₁·m + (1−β₁)·g
        w ← w·(1 − lr·λ) − lr·sign(c)          (sign(0) = 0)
        m ← β₂·m + (1−β₂)·g                    (m₀ = 0; stored after the step)

    Every coordinate moves by exactly ``lr`` (or not at all), so the update has a larger
    norm than Adam's: the paper's advice is an lr 3–10× smaller than AdamW's and a λ 3–10×
    larger (the same ``lr·λ``).

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-4, the authors' code).
        betas: (β₁, β₂) (default (0.9, 0.99)).
        weight_decay: λ, decoupled (default 0).
        maximize: ascend instead of descend (default False).
        foreach: ``False`` runs the for-loop (reference path); ``None``/``True`` the fast path.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    State: ``exp_avg`` (no step count, as lion-pytorch).

    Source: Xiangning Chen, Chen Liang, Da Huang, Esteban Real, Kaiyuan Wang, Hieu Pham,
    Xuanyi Dong, Thang Luong, Cho-Jui Hsieh, Yifeng Lu, Quoc V. Le, "Symbolic Discovery of
    Optimization Algorithms", NeurIPS 2023, arXiv:2302.06675 (Algorithm 2). Matches
    ``lion_pytorch.Lion`` and ``optax.lion``.
    """

    checks = validation.MODERN

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize, foreach=foreach)
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        beta1, beta2 = group["betas"]
        return Rules(
            Interpolated(beta1, beta2), One(), direction=Sign(), weight_decay="decoupled", count_steps=False
        )


# -- LAMB ------------------------------------------------------------------------------------


class LAMB(Optimizer):
    """LAMB: Adam's direction, plus weight decay, scaled per tensor to a step of ``lr·‖w‖``.

        m = β₁·m + (1−β₁)·g,   V = β₂·V + (1−β₂)·g²,   m̂ = m/(1−β₁ᵗ),  V̂ = V/(1−β₂ᵗ)
        d = m̂/(√V̂ + ε) + λ·w
        w ← w − lr·‖w‖/‖d‖·d                   (ratio 1 where ‖w‖ = 0 or ‖d‖ = 0)

    Each parameter tensor is a layer: its step has norm ``lr·‖w‖`` whatever its gradient's
    scale (φ(z) = z, the paper's default scaling function).

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-3; the paper tunes it per batch size).
        betas: (β₁, β₂) (default (0.9, 0.999)).
        eps: ε, added to √V̂ (default 1e-6).
        weight_decay: λ, added to the direction before the trust ratio (default 0.01,
            the paper's BERT setting).
        maximize: ascend instead of descend (default False).
        foreach: ``False`` runs the for-loop (reference path); ``None``/``True`` flat
            buffers, with the trust ratio's norms taken per parameter segment.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    State: ``step``, ``exp_avg``, ``exp_avg_sq``.

    Source: Yang You, Jing Li, Sashank Reddi, Jonathan Hseu, Sanjiv Kumar, Srinadh
    Bhojanapalli, Xiaodan Song, James Demmel, Kurt Keutzer, Cho-Jui Hsieh, "Large Batch
    Optimization for Deep Learning: Training BERT in 76 minutes", ICLR 2020,
    arXiv:1904.00962 (Algorithm 2). Matches ``optax.lamb`` (``torch_optimizer.Lamb``
    differs: no bias correction by default, φ clipped at 10).
    """

    checks = validation.MODERN

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize, foreach=foreach)
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        beta1, beta2 = group["betas"]
        return Rules(
            # the trust ratio and the decay see m̂ itself, not m with 1/c₁ left for the step
            Corrected(EMA(beta1, bias_correction=True)),
            EMASq(beta2, bias_correction=True),
            direction=TrustRatio(1.0),
            weight_decay="direction",
        )


# -- LARS ------------------------------------------------------------------------------------


class LARS(Optimizer):
    """LARS: SGD with momentum, each tensor's step scaled by its local learning rate.

        λ_l = η·‖w‖ / (‖g‖ + β·‖w‖ + ε)        (1 where ‖w‖ = 0 or ‖g‖ = 0)
        v = μ·v + λ_l·(g + β·w)                 (v₁ = λ_l·(g + β·w))
        w ← w − lr·v

    β is the weight decay; the local rate keeps every tensor's step a fixed fraction η of
    its norm. The paper writes ``v = μ·v + γ_t·λ_l·(g + β·w)``, the global rate γ_t inside
    the momentum; here, as in torch's SGD and torch-optimizer's LARS, ``lr`` multiplies
    ``v``: the same for a constant lr, not when a scheduler changes it.

    Args:
        params: parameters or param groups.
        lr: the global learning rate γ (default 1.0; the paper tunes it per batch size,
            with a polynomial decay of power 2).
        momentum: μ (default 0.9).
        weight_decay: β (default 5e-4).
        trust_coefficient: η (default 1e-3).
        eps: ε in the local rate's denominator (default 0).
        maximize: ascend instead of descend (default False).
        foreach: ``False`` runs the for-loop (reference path); ``None``/``True`` flat
            buffers, with the norms taken per parameter segment.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    State: ``momentum_buffer`` (no step count, as torch's SGD).

    Source: Yang You, Igor Gitman, Boris Ginsburg, "Large Batch Training of Convolutional
    Networks", technical report 2017, arXiv:1708.03888 (Algorithm 1). Matches
    ``torch_optimizer.LARS`` for λ > 0 (for λ = 0 it skips the local rate) and
    ``optax.lars`` for λ = 0 (for λ > 0 it divides by ``‖g + β·w‖``).
    """

    checks = validation.LARS

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        trust_coefficient: float = 1e-3,
        eps: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
            eps=eps, maximize=maximize, foreach=foreach,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        mu = group["momentum"]
        return Rules(
            Momentum(mu) if mu != 0 else Gradient(),
            One(),
            direction=LocalLR(group["trust_coefficient"], group["weight_decay"], group["eps"]),
            precondition="gradient",  # the momentum averages the scaled directions
            weight_decay="direction",
            count_steps=False,
        )


# -- Yogi ------------------------------------------------------------------------------------


class Yogi(Optimizer):
    """Yogi: Adam whose V moves by at most ``(1−β₂)·g²`` a step, towards g².

        m = β₁·m + (1−β₁)·g,                      m̂ = m/(1−β₁ᵗ)
        V = V − (1−β₂)·sign(V − g²)·g²,           V̂ = V/(1−β₂ᵗ)
        w ← w − lr·m̂/(√V̂ + ε)                     (m₀ = V₀ = initial_accumulator)

    Adam's V forgets its past at a rate proportional to ``V − g²`` and can grow its steps
    quickly after large gradients pass; Yogi's additive change cannot.

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-2).
        betas: (β₁, β₂) (default (0.9, 0.999)).
        eps: ε, added to √V̂ (default 1e-3).
        initial_accumulator: m₀ and V₀ (default 1e-6).
        weight_decay: L2 penalty added to g (default 0).
        maximize: ascend instead of descend (default False).
        foreach: ``False`` runs the for-loop (reference path); ``None``/``True`` the fast path.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    State: ``step``, ``exp_avg``, ``exp_avg_sq``. The initial values of both moments and
    the bias corrections are those of the implementations everyone uses (TF-Addons,
    torch-optimizer, optax); ``initial_accumulator=0`` starts both at 0.

    Source: Manzil Zaheer, Sashank Reddi, Devendra Sachan, Satyen Kale, Sanjiv Kumar,
    "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018 (no arXiv version;
    Algorithm 2). Matches ``torch_optimizer.Yogi`` and ``optax.yogi``.
    """

    checks = validation.YOGI

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-3,
        initial_accumulator: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, initial_accumulator=initial_accumulator,
            weight_decay=weight_decay, maximize=maximize, foreach=foreach,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        beta1, beta2 = group["betas"]
        initial = group["initial_accumulator"]
        return Rules(Initialized(EMA(beta1, bias_correction=True), initial), YogiSq(beta2, initial))


# -- Schedule-Free AdamW ---------------------------------------------------------------------


#: ScheduleFree's scalar state: sums of averaging weights, kept in float64 (the authors keep
#: Python floats) whatever the dtype of ``step``, since float32 sums drift over long runs
_EXACT = ("lr_max", "weight_sum")


class ScheduleFreeAdamW(Optimizer):
    """Schedule-Free AdamW: no learning-rate schedule, an average of iterates instead.

        v = β₂·v + (1−β₂)·g²,   v̂ = v/(1−β₂ᵗ)         (g taken at y, what the weights hold)
        d = g/(√v̂ + ε) + λ·y                           (the decay at y)
        γ = lr·min(1, t/warmup_steps),   c = γ_max^p·t^r / Σ_{s≤t} γ_max^p·s^r
        z ← z − γ·d                                    (the SGD-like iterate; z₁ = w₁)
        x ← (1 − c)·x + c·z                            (its weighted average)
        y = (1 − β₁)·z + β₁·x                          (the interpolation, in the weights)

    The weights hold ``y`` while training. ``x`` is the point to evaluate: call
    :meth:`eval` before evaluating (or saving a checkpoint, as the authors advise) to put
    ``x`` in the weights, and :meth:`train` before training again to put ``y`` back (both
    are exact and cheap: ``y`` and ``x`` lie on a line through ``z``). Unlike the authors'
    class, which starts in eval mode and refuses ``step`` until ``train()`` is called, this
    one starts in train mode (before the first step x = y = z, so the two agree); ``step``
    in eval mode raises. The group key ``train_mode`` says which point the weights hold.

    Args:
        params: parameters or param groups.
        lr: learning rate γ (default 0.0025).
        betas: (β₁, β₂) (default (0.9, 0.999)): β₁ interpolates ``y`` between ``z`` and
            ``x``, β₂ averages ``g²``.
        eps: ε, added to √v̂ (default 1e-8).
        weight_decay: λ, taken at ``y`` and moved with ``z`` (default 0).
        warmup_steps: linear warm-up of γ over this many steps (default 0).
        r: the power of ``t`` in the averaging weights (default 0).
        weight_lr_power: p, the power of the largest γ so far in the averaging weights
            (default 2).
        maximize: ascend instead of descend (default False).
        foreach: ``False`` runs the for-loop (reference path); ``None``/``True`` the fast path.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    State: ``step``, ``lr_max``, ``weight_sum`` (per parameter, float64; the authors keep
    them per group), ``z``, ``exp_avg_sq``.

    Source: Aaron Defazio, Xingyu (Alice) Yang, Harsh Mehta, Konstantin Mishchenko, Ahmed
    Khaled, Ashok Cutkosky, "The Road Less Scheduled", NeurIPS 2024, arXiv:2405.15682.
    Matches the authors' ``schedulefree.AdamWScheduleFree`` (its bias correction divides
    ``v``, where the paper's Algorithm 1 folds ``√(1−β₂ᵗ)`` into γ).
    """

    checks = validation.SCHEDULE_FREE

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps,
            r=r, weight_lr_power=weight_lr_power, maximize=maximize, foreach=foreach,
            train_mode=True,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        beta1, beta2 = group["betas"]
        return Rules(
            Gradient(),
            EMASq(beta2, bias_correction=True),
            iterate=ScheduleFree(beta1, group["lr"], group["warmup_steps"], group["r"], group["weight_lr_power"]),
            weight_decay="direction",
        )

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One step (see :meth:`momenta.Optimizer.step`); the weights must hold ``y``."""
        for index, group in enumerate(self.param_groups):
            if not group["train_mode"]:
                raise RuntimeError(
                    f"ScheduleFreeAdamW.step() in eval mode (param group {index}): the weights "
                    "hold x, the average; call optimizer.train() before training steps"
                )
        return super().step(closure)

    @torch.no_grad()
    def eval(self) -> None:
        """Put ``x`` in the weights (``x = y + (1 − 1/β₁)·(z − y)``): the point to evaluate."""
        self._switch(False)

    @torch.no_grad()
    def train(self) -> None:
        """Put ``y`` back in the weights (``y = x + (1 − β₁)·(z − x)``): the point to train."""
        self._switch(True)

    def _switch(self, train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == train:
                continue
            beta1 = group["betas"][0]
            stepped = [p for p in group["params"] if "z" in self.state.get(p, {})]
            if stepped and beta1 == 0:
                raise ValueError("eval() needs betas[0] > 0: with beta1 = 0 the weights hold z and x is not kept")
            weight = 1 - beta1 if train else 1 - 1 / beta1
            for p in stepped:
                p.lerp_(self.state[p]["z"].to(p.device), weight)
            group["train_mode"] = train

    def new_state(self, p: Tensor, group: dict[str, Any], rules: Rules | None = None) -> dict[str, Any]:
        state = super().new_state(p, group, rules)
        for key in _EXACT:
            state[key] = state[key].to(torch.float64)
        return state


# -- AdEMAMix --------------------------------------------------------------------------------


class AdEMAMix(Optimizer):
    """AdEMAMix: Adam with a second, much slower EMA of the gradients added to the first.

        m₁ = β₁·m₁ + (1−β₁)·g,   m₂ = β₃(t)·m₂ + (1−β₃(t))·g,   V = β₂·V + (1−β₂)·g²
        d = (m₁/(1−β₁ᵗ) + α(t)·m₂) / (√(V/(1−β₂ᵗ)) + ε)            (m₂ is not corrected)
        w ← w·(1 − lr·λ) − lr·d

    The slow EMA (β₃ = 0.9999: a half-life of about 7000 steps) keeps old gradients
    useful. Large β₃ and α can destabilise early training, hence the paper's warm-ups:
    ``α(t) = min(t·α/T_α, α)`` and β₃(t) rising from β₁ to β₃ by a linear warm-up of the
    half-life (:func:`momenta.rules.first.ademamix_beta3`); the paper sets
    ``T_α = T_β₃ = T``, the length of training. ``t = 1`` at the first step.

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-3).
        betas: (β₁, β₂) (default (0.9, 0.999)).
        beta3: β₃, the slow EMA (default 0.9999).
        alpha: α, the weight of the slow EMA (default 5.0, optax's; the authors' PyTorch
            class defaults to 2).
        alpha_warmup: T_α, steps of the α warm-up (default ``None``: none).
        beta3_warmup: T_β₃, steps of the β₃ warm-up (default ``None``: none).
        eps: ε, added to √V̂ (default 1e-8).
        weight_decay: λ, decoupled (default 0).
        maximize: ascend instead of descend (default False).
        foreach: ``False`` runs the for-loop (reference path); ``None``/``True`` the fast path.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    State: ``step``, ``exp_avg_fast``, ``exp_avg_slow``, ``exp_avg_sq`` (the authors'
    names). β₃ is its own argument (the authors' class takes ``betas=(β₁, β₂, β₃)``), since
    param groups keep torch's pair of ``betas``.

    Source: Matteo Pagliardini, Pierre Ablin, David Grangier, "The AdEMAMix Optimizer:
    Better, Faster, Older", ICLR 2025, arXiv:2409.03137 (Algorithm 1). Matches
    ``optax.contrib.ademamix`` with the schedules evaluated at ``t`` (optax evaluates them
    at ``t − 1``), and the paper's β₃ warm-up (the authors' PyTorch code takes
    ``log(β + 1e-8)`` in it).
    """

    checks = validation.ADEMAMIX

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float = 0.9999,
        alpha: float = 5.0,
        alpha_warmup: int | None = None,
        beta3_warmup: int | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, beta3=beta3, alpha=alpha, alpha_warmup=alpha_warmup,
            beta3_warmup=beta3_warmup, eps=eps, weight_decay=weight_decay, maximize=maximize,
            foreach=foreach,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        beta1, beta2 = group["betas"]
        first = EMAMix(beta1, group["beta3"], group["alpha"], group["alpha_warmup"], group["beta3_warmup"])
        return Rules(first, EMASq(beta2, bias_correction=True), weight_decay="decoupled")


# -- Adafactor, as in the paper ----------------------------------------------------------------


class AdafactorPaper(Optimizer):
    """Adafactor as Shazeer & Stern wrote it: factored second moments, update clipping and
    a step size relative to the parameter's scale.

        β̂₂ = 1 − t^c,   G = g² + ε₁
        R ← β̂₂·R + (1−β̂₂)·mean_cols(G),   C ← β̂₂·C + (1−β̂₂)·mean_rows(G),   V = R·C/mean(R)
        u = g/√V,   û = u / max(1, RMS(u)/d)                    (update clipping)
        α = max(ε₂, RMS(w))·ρ,   ρ = min(lr, 1/√t)              (RMS(w) before the step)
        w ← w·(1 − α·λ) − α·û         (with β₁ > 0: w ← w·(1 − α·λ) − m, m = EMA_β₁(α·û))

    Matrices (the last two dimensions) keep a row and a column of statistics instead of a
    full V; vectors and scalars keep a full ``exp_avg_sq``. With the defaults this is the
    paper's Algorithms 4–5 with the settings of its section 8: ρ_t = min(10⁻², 1/√t),
    β̂₂ = 1 − t^(−0.8), ε₁ = 10⁻³⁰, ε₂ = 10⁻³, d = 1, no momentum.

    Why another name: :class:`momenta.Adafactor` is torch.optim.Adafactor's variant, which
    is not the paper's (ε₁ floors V instead of entering it, the weight decay is
    ``1 − lr·λ``, no ``relative_step``/``scale_parameter`` switches, no momentum); this
    class is the algorithm of the paper and of its authors' tensor2tensor code (as ported to
    fairseq, Hugging Face and torch-optimizer), under the name that says so.

    Args:
        params: parameters or param groups.
        lr: the cap of the relative step ρ_t = min(lr, 1/√t) (default 1e-2, the paper's),
            or ρ_t itself with ``relative_step=False``; schedulers scale it.
        eps1: ε₁, added to g² (default 1e-30).
        eps2: ε₂, the smallest parameter scale (default 1e-3).
        clip_threshold: d, the largest RMS of an update (default 1.0).
        decay_rate: c ≤ 0 in β̂₂ = 1 − t^c (default −0.8).
        beta1: β₁, momentum of the scaled updates (default ``None``: none, the paper's 0).
        weight_decay: λ, taken at the step size α (default 0).
        scale_parameter: multiply the step by ``max(ε₂, RMS(w))`` (default True).
        relative_step: ρ_t = min(lr, 1/√t) (default True), else ρ_t = lr.
        maximize: ascend instead of descend (default False).
        foreach: accepted for torch compatibility (the factored statistics run on the
            reference path).
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    State: ``step``, ``exp_avg_sq_row`` and ``exp_avg_sq_col`` (matrices) or
    ``exp_avg_sq``, and ``exp_avg`` with β₁ (the names and shapes of Hugging Face's and
    fairseq's Adafactor). Complex parameters are refused.

    Source: Noam Shazeer, Mitchell Stern, "Adafactor: Adaptive Learning Rates with
    Sublinear Memory Cost", ICML 2018, arXiv:1804.04235 (Algorithms 4 and 5, sections 8–9).
    Matches ``torch_optimizer.Adafactor`` (fairseq's code) with ``lr=None``.
    """

    complex_error = "AdafactorPaper does not support complex parameters"
    checks = validation.ADAFACTOR_PAPER

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        eps1: float = 1e-30,
        eps2: float = 1e-3,
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
        relative_step: bool = True,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, eps1=eps1, eps2=eps2, clip_threshold=clip_threshold, decay_rate=decay_rate,
            # None (Hugging Face's spelling of "no momentum") is β₁ = 0
            beta1=0.0 if beta1 is None else beta1, weight_decay=weight_decay,
            scale_parameter=scale_parameter, relative_step=relative_step, maximize=maximize,
            foreach=foreach,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        beta1 = group["beta1"]
        iterate = RelativeUpdate(
            group["eps2"], group["relative_step"], group["scale_parameter"], group["weight_decay"],
            EMA(beta1) if beta1 != 0 else None,
        )  # fmt: skip
        return Rules(
            Gradient(),
            FactoredPaper(group["decay_rate"], group["eps1"]),
            direction=ClipRMS(group["clip_threshold"]),
            iterate=iterate,
            weight_decay="decoupled",
        )


__all__ = ["LAMB", "LARS", "AdEMAMix", "AdaBelief", "AdafactorPaper", "Lion", "ScheduleFreeAdamW", "Yogi"]
