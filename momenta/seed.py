"""The seed's five optimizers, exactly as the formula table writes them.

    w_{t+1} = w_t − lr · m_t / √V_t

| optimizer | m_t | V_t |
|---|---|---|
| :class:`SGD` | ``g`` | ``1`` |
| :class:`SGDM` | ``β·m + (1−β)·g``, m₀ = 0 | ``1`` |
| :class:`Adagrad` | ``g`` | ``Σ g²`` |
| :class:`RMSProp` | ``g`` | ``β·V + (1−β)·g²`` |
| :class:`Adam` | ``β₁·m + (1−β₁)·g``, bias-corrected | ``β₂·V + (1−β₂)·g²``, bias-corrected |

No epsilon (an optional ``eps``, default 0, added to √V). Where V = 0 the step is 0, never
NaN: for these rules m = 0 wherever V = 0, and 0 is the limit. ``lr`` is required. These
are teaching optimizers: SGDM is an EMA (not torch's momentum), nothing is torch-compatible.
"""

from __future__ import annotations

from typing import Any

from .engine import Optimizer, Rules
from .engine import validation as check
from .engine.optimizer import Nonfinite, ParamsT
from .engine.storage import ParamRounding, StatePrecision
from .rules import EMA, EMASq, Gradient, One, SumSq


class SGD(Optimizer):
    """m = g, V = 1: w ← w − lr·g.

    Args:
        params: parameters or param groups.
        lr: learning rate (required).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        *,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        check.lr(lr)
        super().__init__(params, dict(lr=lr), nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        return Rules(Gradient(), One())


class SGDM(Optimizer):
    """m = β·m + (1−β)·g with m₀ = 0, V = 1: w ← w − lr·m.

    Args:
        params: parameters or param groups.
        lr: learning rate (required).
        beta: β, the decay of the average (default 0.9).

    Source: Polyak's heavy ball in its exponential-moving-average form.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        beta: float = 0.9,
        *,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        check.lr(lr)
        check.unit_interval(beta, "beta")
        super().__init__(params, dict(lr=lr, beta=beta), nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        return Rules(EMA(group["beta"]), One())


class Adagrad(Optimizer):
    """m = g, V = Σ g²: w ← w − lr·g/(√V + ε).

    Args:
        params: parameters or param groups.
        lr: learning rate (required).
        eps: ε added to √V (default 0).

    Source: Duchi, Hazan & Singer, JMLR 2011.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        eps: float = 0.0,
        *,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        check.lr(lr)
        check.non_negative(eps, "epsilon value")
        super().__init__(params, dict(lr=lr, eps=eps), nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        return Rules(Gradient(), SumSq(), zero_over_zero=True)


class RMSProp(Optimizer):
    """m = g, V = β·V + (1−β)·g² with V₀ = 0: w ← w − lr·g/(√V + ε).

    Args:
        params: parameters or param groups.
        lr: learning rate (required).
        beta: β, the decay of the average of g² (default 0.9).
        eps: ε added to √V (default 0).

    Source: Tieleman & Hinton, COURSERA lecture 6.5, 2012.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        beta: float = 0.9,
        eps: float = 0.0,
        *,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        check.lr(lr)
        check.unit_interval(beta, "beta")
        check.non_negative(eps, "epsilon value")
        super().__init__(params, dict(lr=lr, beta=beta, eps=eps), nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        return Rules(Gradient(), EMASq(group["beta"], name="square_avg"), zero_over_zero=True)


class Adam(Optimizer):
    """m = β₁·m + (1−β₁)·g, V = β₂·V + (1−β₂)·g², both bias-corrected (t from 1):
    w ← w − lr·m̂/(√V̂ + ε), m̂ = m/(1−β₁ᵗ), V̂ = V/(1−β₂ᵗ).

    Args:
        params: parameters or param groups.
        lr: learning rate (required).
        beta1: β₁ (default 0.9).
        beta2: β₂ (default 0.999).
        eps: ε added to √V̂ (default 0).

    Source: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 0.0,
        *,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        check.lr(lr)
        check.unit_interval(beta1, "beta1")
        check.unit_interval(beta2, "beta2")
        check.non_negative(eps, "epsilon value")
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps), nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        return Rules(
            EMA(group["beta1"], bias_correction=True),
            EMASq(group["beta2"], bias_correction=True),
            zero_over_zero=True,
        )


__all__ = ["SGD", "SGDM", "Adagrad", "RMSProp", "Adam"]
