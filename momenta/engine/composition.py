"""An optimizer's rules and the engine options that go with them, for one param group."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..rules import FirstMoment, Gradient, One, SecondMoment


@dataclass(frozen=True)
class Rules:
    """``w ← w − lr · s · m̂ / (√V̂ + ε)``: which rule makes ``m``, which makes ``V``, and how
    the engine joins them.

    Args:
        first: the first-moment rule (``m``).
        second: the second-moment rule (``V``); :class:`~momenta.rules.One` for none.
        precondition: what ``√V̂`` divides. ``"moment"`` (Adam): ``m`` is made from ``g``
            and then divided, ``m̂ / (√V̂ + ε)``. ``"gradient"`` (RMSprop with momentum):
            ``g`` is divided first and ``m`` is made from ``g / (√V̂ + ε)``.
        weight_decay: ``"coupled"`` adds ``λ·w`` to ``g`` (L2, torch's Adam/SGD);
            ``"decoupled"`` shrinks ``w ← w·(1 − lr·λ)`` before the step (AdamW).
        eps: ``"outside"`` divides by ``√V̂ + ε`` (torch); ``"inside"`` by ``√(V̂ + ε)``.
        zero_over_zero: where ``√V̂ + ε = 0`` the step is 0 instead of ``0/0`` (the seed's
            rules with ``ε = 0``: ``m = 0`` wherever ``V = 0``, so 0 is the limit).
        count_steps: keep a per-parameter ``step`` in the state (torch's SGD does not).
    """

    first: FirstMoment = field(default_factory=Gradient)
    second: SecondMoment = field(default_factory=One)
    precondition: Literal["moment", "gradient"] = "moment"
    weight_decay: Literal["coupled", "decoupled"] = "coupled"
    eps: Literal["outside", "inside"] = "outside"
    zero_over_zero: bool = False
    count_steps: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.first, FirstMoment):
            raise TypeError(f"Rules.first must be a FirstMoment rule, got {self.first!r}")
        if not isinstance(self.second, SecondMoment):
            raise TypeError(f"Rules.second must be a SecondMoment rule, got {self.second!r}")
        for name, value, allowed in [
            ("precondition", self.precondition, ("moment", "gradient")),
            ("weight_decay", self.weight_decay, ("coupled", "decoupled")),
            ("eps", self.eps, ("outside", "inside")),
        ]:
            if value not in allowed:
                raise ValueError(f"Invalid Rules.{name}: {value!r} (expected one of {allowed})")
        if not self.count_steps:
            for rule in (self.first, self.second):
                if rule.needs_step:
                    raise ValueError(
                        f"{rule!r} needs the step count, but Rules.count_steps is False"
                    )

    def formulas(self) -> dict[str, str]:
        """``{"m": …, "V": …, "update": …}`` in the README's notation."""
        division = "√(V̂ + ε)" if self.eps == "inside" else "(√V̂ + ε)"
        if self.second.formula == "V = 1":
            update = "w ← w − lr·m"
        elif self.precondition == "moment":
            update = f"w ← w − lr·m̂ / {division}"
        else:
            update = f"m over g / {division}; w ← w − lr·m"
        if self.weight_decay == "decoupled":
            update = "w ← w·(1 − lr·λ); " + update
        return {"m": self.first.formula, "V": self.second.formula, "update": update}
