"""torch.optim's optimizers from before Adam, each a composition of momenta's rules.

Drop-in replacements: same constructor (names, order, defaults), same ``defaults`` and
param-group keys, same state keys, same errors, same numbers (to float64 rounding).

| optimizer | m | V | direction, iterate |
|---|---|---|---|
| :class:`SGD` | ``g``, or torch's momentum buffer (``nesterov``) | ``1`` | — |
| :class:`Adagrad` | ``g`` | ``Σ g²`` | — |
| :class:`RMSprop` | ``g``, or momentum over ``g/√V`` | ``EMA(g²)`` (centered: ``− EMA(g)²``) | — |
| :class:`Adadelta` | ``√(Δ + ε)·g/√(V + ε)``, ``Δ = EMA(m²)`` | ``EMA(g²)`` | — |
| :class:`ASGD` | ``g`` | ``1`` | decaying step ``ηₜ``, average of iterates ``ax`` |
| :class:`Rprop` | ``η·sign(g)``, ``η`` grown or shrunk by sign agreement | ``1`` | ``w ← w − m`` |
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..engine import Optimizer, Rules, validation
from ..engine.optimizer import Nonfinite, ParamsT
from ..engine.storage import ParamRounding, StatePrecision
from ..rules import (
    Averaged,
    Delta,
    EMASq,
    Gradient,
    Momentum,
    One,
    Resilient,
    SumSq,
    Unscaled,
)


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum.

        buf = μ·buf + (1−τ)·g   (buf₁ = g)        m = buf, or g + μ·buf (nesterov)
        V = 1                                      w ← w − lr·m

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-3); a float or a 1-element tensor.
        momentum: μ (default 0: m = g and no buffer is kept).
        dampening: τ (default 0).
        weight_decay: L2 penalty λ, added to g (default 0).
        nesterov: Nesterov momentum (default False).
        maximize: ascend instead of descend (default False).
        foreach, differentiable, fused: accepted as in torch.optim.SGD.
        nonfinite: ``None`` (torch's behaviour), ``"skip"`` or ``"raise"`` on a NaN/inf
            gradient (see :class:`momenta.Optimizer`); momenta's only addition.

    Source: Robbins & Monro, "A Stochastic Approximation Method", 1951; Polyak, 1964;
    Sutskever et al., ICML 2013. Matches ``torch.optim.SGD``.
    """

    sparse_error = None
    checks = validation.SGD

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov, maximize=maximize, foreach=foreach,
            differentiable=differentiable, fused=fused,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        mu = group["momentum"]
        first = (
            Momentum(mu, group["dampening"], group["nesterov"]) if mu != 0 else Gradient()
        )
        return Rules(first, One(), count_steps=False)


class Adagrad(Optimizer):
    """Adagrad: per-coordinate step sizes from the sum of squared gradients.

        m = g
        V = V₀ + Σ g²
        w ← w − lr/(1 + (t−1)·lr_decay) · m/(√V + ε)

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-2).
        lr_decay: learning-rate decay (default 0).
        weight_decay: L2 penalty added to g (default 0).
        initial_accumulator_value: V₀ (default 0).
        eps: ε, added to √V (default 1e-10).
        foreach, maximize, differentiable, fused: as in torch.optim.Adagrad.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    Sparse gradients are accepted and densified (same numbers as torch; not its memory
    savings). Source: Duchi, Hazan & Singer, JMLR 2011. Matches ``torch.optim.Adagrad``,
    which creates the state of every parameter at construction.
    """

    sparse_error = None
    checks = validation.ADAGRAD

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value, foreach=foreach,
            maximize=maximize, differentiable=differentiable, fused=fused,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p] = self.new_state(p, group)

    def check_sparse_weight_decay(self) -> None:
        raise RuntimeError("weight_decay option is not compatible with sparse gradients")

    def rules(self, group: dict[str, Any]) -> Rules:
        # torch fills the accumulator from the constructor's value, whatever the group says
        initial = self.defaults["initial_accumulator_value"]
        return Rules(Gradient(), SumSq(initial, group["lr_decay"]))

    def share_memory(self) -> None:
        """Move the ``sum`` buffers to shared memory (for Hogwild-style training)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()


class RMSprop(Optimizer):
    """RMSprop: divide the gradient by a running root-mean-square.

        V = α·V + (1−α)·g²      (centered: ḡ = α·ḡ + (1−α)·g, V ← V − ḡ²)
        m = g/(√V + ε), or with momentum μ: buf = μ·buf + g/(√V + ε), m = buf
        w ← w − lr·m

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-2).
        alpha: α, the decay of the average of g² (default 0.99).
        eps: ε, added to √V (default 1e-8).
        weight_decay: L2 penalty added to g (default 0).
        momentum: μ (default 0); momentum is taken over the preconditioned gradient.
        centered: normalise by the variance estimate instead of the raw second moment.
        capturable, foreach, maximize, differentiable: as in torch.optim.RMSprop.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    Source: Tieleman & Hinton, COURSERA lecture 6.5, 2012; Graves, 2013 (centered).
    Matches ``torch.optim.RMSprop``.
    """

    sparse_error = "RMSprop does not support sparse gradients"
    checks = validation.RMSPROP

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
            weight_decay=weight_decay, capturable=capturable, foreach=foreach,
            maximize=maximize, differentiable=differentiable,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        second = EMASq(group["alpha"], centered=group["centered"], name="square_avg")
        if group["momentum"] > 0:
            return Rules(Momentum(group["momentum"]), second, precondition="gradient")
        return Rules(Gradient(), second)


class Adadelta(Optimizer):
    """Adadelta: steps in the units of the parameters, from two running averages.

        V = ρ·V + (1−ρ)·g²
        m = √(Δ + ε) · g/√(V + ε),   Δ = ρ·Δ + (1−ρ)·m²
        w ← w − lr·m

    Args:
        params: parameters or param groups.
        lr: a factor on the step (default 1.0: the method needs no learning rate); a
            float or a 1-element tensor.
        rho: ρ, the decay of both averages, in [0, 1] (default 0.9).
        eps: ε, inside both roots (default 1e-6).
        weight_decay: L2 penalty λ, added to g (default 0).
        foreach, capturable, maximize, differentiable: as in torch.optim.Adadelta.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    Source: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012.
    Matches ``torch.optim.Adadelta``.
    """

    checks = validation.ADADELTA

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
            capturable=capturable, foreach=foreach, differentiable=differentiable,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        rho = group["rho"]
        # V is made first and divides g; Δ's root then multiplies the result (its m)
        return Rules(
            Delta(rho, group["eps"]), EMASq(rho, name="square_avg"),
            precondition="gradient", eps="inside",
        )  # fmt: skip


class ASGD(Optimizer):
    """Averaged SGD: SGD with a decaying step size, and the average of its iterates.

        ηₜ = lr/(1 + λ·lr·(t−1))^α,   μₜ = 1/max(1, t − 1 − t₀)
        w ← w·(1 − λ·ηₜ) − ηₜ·g
        ax ← w if μₜ = 1, else ax + μₜ·(w − ax)

    ``ax`` (the average, the value to evaluate) is in the state; so are ``eta`` and ``mu``
    (0-dim tensors, set at the end of each step for the next one, as in torch).

    Args:
        params: parameters or param groups.
        lr: learning rate η₁ (default 1e-2); a float or a 1-element tensor.
        lambd: λ ≥ 0, the decay term (default 1e-4).
        alpha: α ≥ 0, the power of the step-size decay (default 0.75).
        t0: t₀, the step at which averaging starts (default 1e6).
        weight_decay: L2 penalty, added to g (default 0).
        foreach, maximize, differentiable, capturable: as in torch.optim.ASGD.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    Source: Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging",
    SIAM J. Control Optim. 1992. Matches ``torch.optim.ASGD``.
    """

    checks = validation.ASGD

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        *,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
            foreach=foreach, maximize=maximize, differentiable=differentiable,
            capturable=capturable,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        lr = group["lr"]
        if isinstance(lr, Tensor):  # a 1-element tensor makes 0-dim η's, as torch's
            lr = lr.squeeze()
        # torch's foreach and capturable implementations compute the η schedule with the
        # step as a tensor, its for-loop as a number: each flag gives torch's numbers
        step_as_tensor = bool(group["foreach"]) or bool(group["capturable"])
        averaged = Averaged(lr, group["lambd"], group["alpha"], group["t0"], step_as_tensor=step_as_tensor)
        return Rules(iterate=averaged)  # m = g, V = 1: SGD's direction

    def new_state(
        self, p: Tensor, group: dict[str, Any], rules: Rules | None = None
    ) -> dict[str, Any]:
        state = super().new_state(p, group, rules)
        for key in ("step", "eta", "mu"):  # torch's ASGD keeps them on the parameter's device
            state[key] = state[key].to(p.device)
        return state


class Rprop(Optimizer):
    """Rprop: a step size per coordinate, grown or shrunk by the signs of the gradients alone.

        s = sign(g·g_prev);   η ← clip(η·η₊ if s > 0, η·η₋ if s < 0, η if s = 0)
        g ← 0 where s < 0;    w ← w − η·sign(g);   g_prev ← g

    Args:
        params: parameters or param groups.
        lr: the initial step size η (default 1e-2); a float or a 1-element tensor.
        etas: (η₋, η₊), the shrink and growth factors, 0 < η₋ < 1 < η₊ (default (0.5, 1.2)).
        step_sizes: (smallest, largest) step size (default (1e-6, 50)).
        capturable, foreach, maximize, differentiable: as in torch.optim.Rprop.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    The learning rate only initialises the step sizes (``step_size`` in the state): a
    scheduler that changes it later has no effect, as in torch.

    Source: Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation
    Learning: The RPROP Algorithm", ICNN 1993. Matches ``torch.optim.Rprop``.
    """

    checks = validation.RPROP

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, etas=etas, step_sizes=step_sizes, foreach=foreach, maximize=maximize,
            differentiable=differentiable, capturable=capturable,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        (etaminus, etaplus), (step_min, step_max) = group["etas"], group["step_sizes"]
        first = Resilient(group["lr"], etaminus, etaplus, step_min, step_max)
        return Rules(first, iterate=Unscaled())


__all__ = ["SGD", "Adagrad", "RMSprop", "Adadelta", "ASGD", "Rprop"]
