"""torch.optim's Adam family, each a composition of momenta's rules.

Drop-in replacements: same constructor (names, order, defaults), same ``defaults`` and
param-group keys, same state keys, same errors, same numbers (to float64 rounding).

| optimizer | m | V | direction, iterate |
|---|---|---|---|
| :class:`Adam` | ``EMA(g)``, bias-corrected | ``EMA(g²)``, bias-corrected (``max`` with amsgrad) | — |
| :class:`AdamW` | as Adam | as Adam | weight decay decoupled |
| :class:`Adamax` | ``EMA(g)``, bias-corrected | ``u = max(β₂·u, |g| + ε)``, divides as ``u`` | — |
| :class:`NAdam` | Nesterov ``EMA(g)`` with a momentum schedule | ``EMA(g²)``, bias-corrected | weight decay coupled or decoupled |
| :class:`RAdam` | ``EMA(g)``, bias-corrected | ``EMA(g²)``, rectified by ``r_t`` (or unused early) | weight decay coupled or decoupled |
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..engine import Optimizer, Rules, validation
from ..engine.optimizer import Nonfinite, ParamsT
from ..engine.storage import ParamRounding, StatePrecision
from ..rules import EMA, AMSGrad, EMASq, InfNorm, NesterovEMA, Rectified


class Adam(Optimizer):
    """Adam: adaptive moment estimation.

        m = β₁·m + (1−β₁)·g,   m̂ = m/(1−β₁ᵗ)
        V = β₂·V + (1−β₂)·g²,  V̂ = V/(1−β₂ᵗ)   (amsgrad: V ← max(V_max, V))
        w ← w − lr·m̂/(√V̂ + ε)

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-3); a float or a 1-element tensor.
        betas: (β₁, β₂) (default (0.9, 0.999)); two floats or two 1-element tensors.
        eps: ε, added to √V̂ (default 1e-8).
        weight_decay: λ (default 0): L2 added to g, or decoupled (AdamW) when
            ``decoupled_weight_decay``.
        amsgrad: divide by the running maximum of V (default False).
        foreach, maximize, capturable, differentiable, fused: as in torch.optim.Adam.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).
        decoupled_weight_decay: ``w ← w·(1 − lr·λ)`` instead of L2 (default False).

    Source: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
    Reddi et al., ICLR 2018 (AMSGrad). Matches ``torch.optim.Adam``.
    """

    sparse_error = "Adam does not support sparse gradients, please consider SparseAdam instead"
    checks = validation.ADAM

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, betas=_squeezed(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            maximize=maximize, foreach=foreach, capturable=capturable,
            differentiable=differentiable, fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        return adam_rules(group["betas"], group["amsgrad"], group["decoupled_weight_decay"])


def adam_rules(betas: tuple[float, float], amsgrad: bool = False, decoupled: bool = False) -> Rules:
    """Adam's rules (AdamW's with ``decoupled``): both moments EMAs, bias-corrected."""
    beta1, beta2 = betas
    second = EMASq(beta2, bias_correction=True)
    return Rules(
        EMA(beta1, bias_correction=True),
        AMSGrad(second) if amsgrad else second,
        weight_decay="decoupled" if decoupled else "coupled",
    )


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay.

        w ← w·(1 − lr·λ)
        m = β₁·m + (1−β₁)·g,   m̂ = m/(1−β₁ᵗ)
        V = β₂·V + (1−β₂)·g²,  V̂ = V/(1−β₂ᵗ)   (amsgrad: V ← max(V_max, V))
        w ← w − lr·m̂/(√V̂ + ε)

    Args:
        params, lr, betas, eps, amsgrad, maximize, foreach, capturable, differentiable,
        fused, nonfinite: as :class:`Adam`.
        weight_decay: λ (default 1e-2), decoupled from the gradient.

    Source: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    Matches ``torch.optim.AdamW``.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
            maximize=maximize, capturable=capturable, differentiable=differentiable,
            fused=fused, decoupled_weight_decay=True, nonfinite=nonfinite,
            state_precision=state_precision, param_rounding=param_rounding,
        )  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # AdamW is always decoupled, as in torch
            group["decoupled_weight_decay"] = True


class Adamax(Optimizer):
    """Adamax: Adam with the infinity norm of the gradients in place of their root mean square.

        m = β₁·m + (1−β₁)·g,   m̂ = m/(1−β₁ᵗ)
        u = max(β₂·u, |g| + ε)                  (u is already a root: no √, no bias correction)
        w ← w − lr·m̂/u

    Args:
        params: parameters or param groups.
        lr: learning rate (default 2e-3); a float or a 1-element tensor.
        betas: (β₁, β₂) (default (0.9, 0.999)).
        eps: ε, added to |g| inside the maximum (default 1e-8).
        weight_decay: L2 penalty λ, added to g (default 0).
        foreach, maximize, differentiable, capturable: as in torch.optim.Adamax.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    Source: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
    section 7.1. Matches ``torch.optim.Adamax``.
    """

    checks = validation.ADAM_FAMILY

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach,
            maximize=maximize, differentiable=differentiable, capturable=capturable,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        beta1, beta2 = group["betas"]
        return Rules(EMA(beta1, bias_correction=True), InfNorm(beta2, group["eps"]))


class NAdam(Optimizer):
    """NAdam: Adam with Nesterov momentum, under the momentum schedule μₜ = β₁·(1 − ½·0.96^(t·ψ)).

        m = β₁·m + (1−β₁)·g,   m̂ = (1−μₜ)/(1−Π_{s≤t} μₛ)·g + μₜ₊₁/(1−Π_{s≤t+1} μₛ)·m
        V = β₂·V + (1−β₂)·g²,  V̂ = V/(1−β₂ᵗ)
        w ← w − lr·m̂/(√V̂ + ε)

    Args:
        params: parameters or param groups.
        lr: learning rate (default 2e-3); a float or a 1-element tensor.
        betas: (β₁, β₂) (default (0.9, 0.999)).
        eps: ε, added to √V̂ (default 1e-8).
        weight_decay: λ (default 0): L2 added to g, or decoupled (NAdamW) when
            ``decoupled_weight_decay``.
        momentum_decay: ψ, the speed of the momentum schedule (default 4e-3).
        decoupled_weight_decay: ``w ← w·(1 − lr·λ)`` instead of L2 (default False).
        foreach, maximize, capturable, differentiable: as in torch.optim.NAdam.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    The product ``Π μ`` is kept per parameter as ``mu_product`` (a 0-dim tensor, as in torch).

    Source: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016;
    Loshchilov & Hutter, ICLR 2019 (decoupled weight decay). Matches ``torch.optim.NAdam``.
    """

    checks = validation.NADAM

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
            momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize, foreach=foreach, capturable=capturable,
            differentiable=differentiable,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        beta1, beta2 = group["betas"]
        return Rules(
            NesterovEMA(beta1, group["momentum_decay"]),
            EMASq(beta2, bias_correction=True),
            weight_decay="decoupled" if group["decoupled_weight_decay"] else "coupled",
        )


class RAdam(Optimizer):
    """RAdam: Adam whose adaptive step is rectified, and skipped while its variance is intractable.

        m = β₁·m + (1−β₁)·g,   m̂ = m/(1−β₁ᵗ)
        V = β₂·V + (1−β₂)·g²
        ρ_∞ = 2/(1−β₂) − 1,    ρₜ = ρ_∞ − 2t·β₂ᵗ/(1−β₂ᵗ)
        rₜ = √((ρₜ−4)(ρₜ−2)ρ_∞ / ((ρ_∞−4)(ρ_∞−2)ρₜ))
        w ← w − lr·rₜ·m̂·√(1−β₂ᵗ)/(√V + ε)   if ρₜ > 5,   else   w ← w − lr·m̂

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-3); a float or a 1-element tensor.
        betas: (β₁, β₂) (default (0.9, 0.999)).
        eps: ε, added to √V before the bias correction (default 1e-8).
        weight_decay: λ (default 0): L2 added to g, or decoupled (as AdamW) when
            ``decoupled_weight_decay``.
        decoupled_weight_decay: ``w ← w·(1 − lr·λ)`` instead of L2 (default False).
        foreach, maximize, capturable, differentiable: as in torch.optim.RAdam.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    Source: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond",
    ICLR 2020. Matches ``torch.optim.RAdam``.
    """

    checks = validation.ADAM_FAMILY

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
            foreach=foreach, capturable=capturable,
            decoupled_weight_decay=decoupled_weight_decay, differentiable=differentiable,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        beta1, beta2 = group["betas"]
        return Rules(
            EMA(beta1, bias_correction=True),
            Rectified(EMASq(beta2, bias_correction=True)),
            weight_decay="decoupled" if group["decoupled_weight_decay"] else "coupled",
            # ε joins √V before the bias correction: torch's (√V + ε)/√(1−β₂ᵗ)
            eps="uncorrected",
        )


def _squeezed(betas: Any) -> Any:
    """torch's Adam: tensor betas as 0-dim tensors (a pair of floats stays as it is)."""
    if not isinstance(betas, (tuple, list)):
        return betas  # refused by the checks
    return tuple(b.squeeze() if isinstance(b, Tensor) and b.dim() != 0 else b for b in betas)


__all__ = ["Adam", "AdamW", "Adamax", "NAdam", "RAdam"]
