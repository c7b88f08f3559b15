"""Any :class:`~momenta.Rules` value, trained as it is: no subclass needed.

| optimizer | m | V | direction, iterate |
|---|---|---|---|
| :class:`Composed` | ``rules.first`` | ``rules.second`` | ``rules.direction``, ``rules.iterate`` |
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor

from ..engine import Optimizer, Rules, kernels
from ..engine.optimizer import Nonfinite, ParamsT
from ..engine.storage import ParamRounding, StatePrecision


def _rebuild(template: Rules, values: dict[str, Any]) -> Rules:
    """``template`` with each hyperparameter taken from ``values`` by its path name (each
    rule's own ``__post_init__`` checks it)."""
    parts = {
        part: kernels.rebuild(getattr(template, part), part, values)
        for part in kernels.PARTS
    }
    return dataclasses.replace(template, **parts)  # type: ignore[arg-type]


class Composed(Optimizer):
    """The optimizer a :class:`~momenta.Rules` value describes:

        m, V  ← rules.first, rules.second           m̂ = m / c₁(t),  V̂ = V / c₂(t)
        d ← rules.direction(m̂ / (√V̂ + ε))
        w ← rules.iterate(w, d):  w·(1 − lr·λ) − lr·d  by default

    joined as ``rules`` says (``precondition``, ``weight_decay``, ``eps`` …). Every
    hyperparameter of the rules (a numeric field of a part) is a param-group key named by
    its path (``"first.beta"``, ``"second.inner.beta"``, ``"direction.coefficient"``;
    :func:`momenta.engine.kernels.hyperparameters`), its default the value in ``rules``: a
    scheduler or a user that changes ``group["first.beta"]`` changes the rule at the next
    step, without recompiling a kernel (kernels take hyperparameters as inputs). The rest of
    ``rules`` (the rules' kinds, flags and buffer names, how the parts are joined) is fixed.
    A rule's own learning rate (``Averaged.lr``, ``ScheduleFree.lr``) is a key of its own
    (``"iterate.lr"``), which an lr scheduler does not move; torch's ``OneCycleLR`` cycles
    ``betas`` or ``momentum``, which these groups do not have (``cycle_momentum=False``).

    Args:
        params: parameters or param groups (a group may set its own ``"first.beta"`` …).
        rules: the :class:`~momenta.Rules`.
        lr: learning rate (required); a float or a 1-element tensor.
        weight_decay: λ (default 0), applied as ``rules.weight_decay`` says.
        eps: ε (default 1e-8), placed as ``rules.eps`` says (unused where V = 1).
        maximize: ascend instead of descend (default False).
        foreach: ``False`` runs the for-loop (reference path); ``None``/``True`` the fast
            path where the rules allow it.
        differentiable: let autograd through the step (default False).
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    A group value the rules refuse raises at the step (or in ``add_param_group``), naming
    the key: ``Invalid param group value 'first.beta': 1.5 (EMA: invalid beta: …)``.

    Example, a Lion (``momenta.Lion``'s numbers; its own rules also keep no step count)::

        lion = Rules(Interpolated(0.9, 0.99), One(), direction=Sign(), weight_decay="decoupled")
        opt = Composed(model.parameters(), lion, lr=1e-4, weight_decay=1e-2)
        opt.param_groups[0]["first.beta2"] = 0.98
    """

    def __init__(
        self,
        params: ParamsT,
        rules: Rules,
        *,
        lr: float | Tensor,
        weight_decay: float | Tensor = 0.0,
        eps: float | Tensor = 1e-8,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        if not isinstance(rules, Rules):
            raise TypeError(
                f"Composed: rules must be a momenta.Rules, got {type(rules).__name__}"
            )
        try:
            hyperparameters = kernels.hyperparameters(rules)
        except TypeError as error:  # a rule that is not a dataclass: no fields to name
            raise TypeError(
                f"Composed: every rule in rules must be a dataclass (its fields are its hyperparameters): {error}"
            ) from error
        #: the rules as given: their structure, and the default of every hyperparameter
        self.template = rules
        defaults = dict(
            lr=lr,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            **hyperparameters,
        )
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)

    def rules(self, group: dict[str, Any]) -> Rules:
        """The template with each hyperparameter the group's (``group["first.beta"]`` …)."""
        try:
            return _rebuild(self.template, group)
        except (TypeError, ValueError) as error:
            kind = TypeError if isinstance(error, TypeError) else ValueError
            raise kind(
                f"Invalid param group value {self._refused(group)} ({error})"
            ) from error

    def _refused(self, group: dict[str, Any]) -> str:
        """The group keys and values the rules refuse: each tried alone in the template
        (whose own values are valid); all of them if none fails alone."""
        defaults = kernels.hyperparameters(self.template)

        def fails(path: str) -> bool:
            try:
                _rebuild(self.template, {**defaults, path: group[path]})
            except (TypeError, ValueError):
                return True
            return False

        paths = [path for path in defaults if fails(path)] or list(defaults)
        return ", ".join(f"{path!r}: {group[path]!r}" for path in paths)

    def __getstate__(self) -> dict[str, Any]:  # pickling and deepcopy keep the rules
        return {**super().__getstate__(), "template": self.template}


__all__ = ["Composed"]
