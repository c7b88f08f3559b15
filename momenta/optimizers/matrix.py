"""Optimizers that see whole matrices: their rules take norms, rows and columns of a
parameter, so the engine runs them on the reference path, one parameter at a time.

Drop-in replacements: same constructor (names, order, defaults), same ``defaults`` and
param-group keys, same state keys, same errors, same numbers (to float64 rounding).

| optimizer | m | V | direction, iterate |
|---|---|---|---|
| :class:`Adafactor` | ``g`` | ``R·C / mean(R)``, factored row and column averages of ``g²`` | RMS clipped at ``d``; step ``max(ε₂, RMS(w))·min(lr, 1/√t)``; decay decoupled |
| :class:`Muon` | ``EMA(g)`` (Nesterov) | ``1`` | Newton–Schulz orthogonalised; step ``lr·s(shape)``; decay decoupled |
| :class:`MuonWithAdamW` | Muon's for 2-D parameters, AdamW's for the rest | | (not in torch) |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..engine import Optimizer, Rules, validation
from ..engine.optimizer import Nonfinite, ParamsT
from ..engine.storage import ParamRounding, StatePrecision
from ..rules import (
    EMA,
    ClipRMS,
    Factored,
    Gradient,
    One,
    Orthogonalize,
    RelativeStep,
    ShapeScaled,
)
from ..rules.direction import NS_COEFFICIENTS
from .adam import adam_rules


class Adafactor(Optimizer):
    """Adafactor: Adam's second moment in sublinear memory, and steps relative to ‖w‖.

        w ← w·(1 − lr·λ)
        R ← R + t^c·(mean_cols(g²) − R),  C ← C + t^c·(mean_rows(g²) − C)
        V = R·C / max(mean(R), ε₁)              (vectors and scalars: V ← V + t^c·(g² − V))
        u = g / √max(V, ε₁²),  û = u / max(1, RMS(u)/d)
        w ← w − max(ε₂, RMS(w))·min(lr, 1/√t)·û   (RMS(w) before the decay)

    A matrix keeps a row ``row_var`` and a column ``col_var`` of averages (the last two
    dimensions: a batch of matrices keeps one of each per matrix) instead of a full ``V``;
    vectors and scalars keep a full ``variance``.

    Args:
        params: parameters or param groups.
        lr: the cap of the relative step size ``min(lr, 1/√t)``, and the scale of the weight
            decay (default 1e-2); a float or a 1-element tensor.
        beta2_decay: c ≤ 0, the power in the averaging weight ``t^c`` (default −0.8).
        eps: (ε₁, ε₂) (default (None, 1e-3)): ε₁ floors ``V`` (``None``: the parameter
            dtype's machine epsilon); ε₂ is the smallest parameter scale.
        d: the clipping threshold of the update's RMS, ≥ 1 (default 1).
        weight_decay: λ, decoupled (default 0).
        foreach, maximize: as in torch.optim.Adafactor.
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    Complex parameters and sparse gradients are refused at the step, as torch does.

    Source: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", ICML 2018. Matches ``torch.optim.Adafactor`` (its use of ``lr`` and ε₁).
    """

    sparse_error = "Adafactor does not support sparse gradients"
    complex_error = "Adafactor does not support complex parameters"
    checks = validation.ADAFACTOR

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay,
            foreach=foreach, maximize=maximize,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        eps1, eps2 = group["eps"]
        return Rules(
            Gradient(),
            Factored(group["beta2_decay"], eps1),
            direction=ClipRMS(group["d"]),
            iterate=RelativeStep(eps2),
            weight_decay="decoupled",
        )


def muon_rules(group: Mapping[str, Any]) -> Rules:
    """Muon's rules for a param group (of :class:`Muon`, and the Muon groups of
    :class:`MuonWithAdamW`): the group's ``momentum``, ``nesterov``, ``ns_coefficients``,
    ``ns_steps``, ``eps`` and ``adjust_lr_fn``, with decoupled weight decay and no step count.

    The momentum is an EMA (torch's ``lerp``), the direction ``NSₖ(m)``, the step ``lr·s``
    for the shape scaling ``s``: see :class:`Muon`."""
    return Rules(
        EMA(group["momentum"], name="momentum_buffer", nesterov=group["nesterov"], lerp=True),
        One(),
        direction=Orthogonalize(group["ns_coefficients"], group["ns_steps"], group["eps"]),
        iterate=ShapeScaled(group["adjust_lr_fn"] or "original"),
        weight_decay="decoupled",
        count_steps=False,
    )


class Muon(Optimizer):
    """Muon: momentum, orthogonalised by Newton–Schulz, for 2-D parameters.

        w ← w·(1 − lr·λ)
        B = μ·B + (1−μ)·g,   m = μ·B + (1−μ)·g (nesterov) or B
        O = NSₖ(m)  (≈ U·Vᵀ of m = U·S·Vᵀ: k quintic iterations with (a, b, c), in bfloat16)
        w ← w − lr·s·O,   s = √max(1, rows/cols) ("original") or 0.2·√max(rows, cols)

    Args:
        params: 2-D parameters or param groups (anything else is refused at construction).
        lr: learning rate (default 1e-3); a float or a 1-element tensor.
        weight_decay: λ, decoupled (default 0.1).
        momentum: μ in [0, 1) (default 0.95).
        nesterov: step along the look-ahead average (default True).
        ns_coefficients: (a, b, c) of the Newton–Schulz iteration (default Keller
            Jordan's (3.4445, −4.7750, 2.0315)).
        eps: ε ≥ 0, the floor of ‖m‖_F when it is first normalised (default 1e-7).
        ns_steps: k, the number of iterations (default 5, at most 99).
        adjust_lr_fn: the shape scaling s: ``None`` or ``"original"`` (Keller Jordan's),
            ``"match_rms_adamw"`` (Moonshot's: the RMS of AdamW's updates).
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    Complex parameters and sparse gradients are refused at the step, as torch does. There
    is no step count in the state (as in torch). Each quantity is computed with torch's
    ops in torch's order (both averages as ``lerp``, ``NSₖ`` in bfloat16, ``lr·s`` one
    number, in a tensor lr's dtype), so float32 results are torch's bit for bit: the
    bfloat16 iteration would spread any last-bit difference of its input.

    Source: Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
    (kellerjordan.github.io/posts/muon); Liu et al., "Muon is Scalable for LLM Training",
    2025. Matches ``torch.optim.Muon``.
    """

    sparse_error = "Muon does not support sparse gradients"
    complex_error = "Muon does not support complex parameters"
    checks = validation.MUON

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        *,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
            ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(
                        f"Muon only supports 2D parameters whereas we found a parameter with size: {p.size()}"
                    )

    def rules(self, group: dict[str, Any]) -> Rules:
        return muon_rules(group)


class MuonWithAdamW(Optimizer):
    """Muon for the 2-D parameters, AdamW for the others: the setup Muon is meant for.

        2-D w (the "muon" groups):   Muon's rules, as :class:`Muon`
        other w (biases, gains, …):  m = EMA_β₁(g), V = EMA_β₂(g²) (both bias-corrected),
                                     w ← w·(1 − lr·λ) − lr·m̂/(√V̂ + ε)

    One optimizer, two kinds of param group: every group given is split into a Muon group
    (``muon=True``) of its 2-D parameters and an AdamW group (``muon=False``) of the rest,
    which takes the ``adamw_*`` hyperparameters. A group is a group as torch knows it, so
    schedulers, state_dicts and the fast path (for the AdamW groups) work as usual.

    Args:
        params: parameters or param groups (of any shapes).
        lr: Muon's learning rate (default 0.02).
        momentum, nesterov, ns_coefficients, ns_steps, adjust_lr_fn: Muon's (see :class:`Muon`).
        weight_decay: Muon's decoupled weight decay λ (default 0).
        adamw_lr: AdamW's learning rate (default 3e-4).
        adamw_betas: AdamW's (β₁, β₂) (default (0.9, 0.95)).
        adamw_eps: AdamW's ε (default 1e-10).
        adamw_weight_decay: AdamW's decoupled weight decay (default 0).
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    Source: Jordan et al., "Muon: an optimizer for hidden layers in neural networks", 2024
    (defaults of its ``MuonWithAuxAdam``); Loshchilov & Hutter, ICLR 2019 (AdamW).
    """

    sparse_error = "MuonWithAdamW does not support sparse gradients"
    complex_error = "MuonWithAdamW does not support complex parameters"
    checks = validation.MUON  # its defaults' (the Muon groups'); see checks_of

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        weight_decay: float = 0.0,
        adamw_lr: float = 3e-4,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-10,
        adamw_weight_decay: float = 0.0,
        *,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        self._adamw = dict(lr=adamw_lr, betas=adamw_betas, eps=adamw_eps, weight_decay=adamw_weight_decay)
        # the AdamW groups' values, checked even where no parameter makes an AdamW group yet
        validation.run(validation.MUON_ADAMW, self._adamw)
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, ns_coefficients=ns_coefficients,
            ns_steps=ns_steps, eps=1e-7, adjust_lr_fn=adjust_lr_fn, weight_decay=weight_decay,
            betas=adamw_betas, muon=True,
        )  # fmt: skip
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group: its 2-D parameters as a Muon group, the rest as an AdamW group."""
        if "muon" in param_group:  # already one kind (a state_dict's groups, or split)
            super().add_param_group(param_group)
            return
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        matrices = [p for p in params if (p[1] if isinstance(p, tuple) else p).ndim == 2]
        others = [p for p in params if (p[1] if isinstance(p, tuple) else p).ndim != 2]
        if matrices or not others:
            super().add_param_group({**param_group, "params": matrices, "muon": True})
        if others:
            super().add_param_group({**param_group, **self._adamw, "params": others, "muon": False})

    def checks_of(self, group: Mapping[str, Any]) -> validation.Checks:
        """Muon's checks for the Muon groups, the ``adamw_*`` arguments' for the others."""
        return validation.MUON if group["muon"] else validation.MUON_ADAMW

    def rules(self, group: dict[str, Any]) -> Rules:
        if group["muon"]:
            return muon_rules(group)
        return adam_rules(group["betas"], decoupled=True)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_adamw": self._adamw}


__all__ = ["Adafactor", "Muon", "MuonWithAdamW"]
