"""An optimizer's rules and the engine options that go with them, for one param group."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import torch

from ..rules import (
    Descent,
    Direction,
    FirstMoment,
    Gradient,
    Identity,
    Iterate,
    One,
    Rule,
    SecondMoment,
)
from ..rules.base import Eps


def _fill(template: str, d: str) -> str:
    """A part's formula with ``{d}`` standing for ``d``: written in once, or, when it recurs,
    named ``d`` and defined after (``‖w‖/‖d‖·d, d = m̂ / (√V̂ + ε)``)."""
    if template.count("{d}") > 1 and len(d) > 2:
        return template.replace("{d}", "d") + f", d = {d}"
    return template.format(d=d)


_BETA = re.compile("β(?![₀-₉])")  # a bare β, not β₁ or β₂


def _corrects(rule: Rule) -> bool:
    """The rule divides its moment by a bias correction (``c(t) ≠ 1``)."""
    try:
        return float(rule.correction(2.0)) != 1.0
    except (TypeError, ValueError, RuntimeError):  # a correction that is not a number here
        return True


def _root(root: str, corrected: bool, eps: bool) -> str:
    """The V rule's denominator as written (``(√V̂ + ε)``): without the hat where V is not
    bias-corrected, without ε where it is 0."""
    if not corrected:
        root = root.replace("V̂", "V").replace("/√c₂", "")
    if not eps:
        root = root.replace(" + ε", "")
        for wrapped, plain in (("(√V)", "√V"), ("√(V)", "√V"), ("√(V̂)", "√V̂"), ("(√V̂)", "√V̂")):
            root = root.replace(wrapped, plain)
    return root


@dataclass(frozen=True)
class Rules:
    """``w ← w − lr · D(m̂ / (√V̂ + ε))``: which rule makes ``m``, which makes ``V``, what the
    direction ``D`` is, how it moves the weights, and how the engine joins them.

    Args:
        first: the first-moment rule (``m``).
        second: the second-moment rule (``V``); :class:`~momenta.rules.One` for none.
        direction: what ``d = m̂ / (√V̂ + ε)`` becomes (:class:`~momenta.rules.Identity`:
            itself; ``Sign``, ``TrustRatio``, ``Orthogonalize``, ``ClipRMS`` …).
        iterate: how ``d`` moves the weights (:class:`~momenta.rules.Descent`:
            ``w ← w·(1 − lr·λ) − lr·d``; ``Averaged``, ``ScheduleFree`` …).
        precondition: what ``√V̂`` divides. ``"moment"`` (Adam): ``m`` is made from ``g``
            and then divided, ``m̂ / (√V̂ + ε)``. ``"gradient"`` (RMSprop with momentum):
            ``g`` is divided (and given its direction) first and ``m`` is made from that.
        weight_decay: ``"coupled"`` adds ``λ·w`` to ``g`` (L2, torch's Adam/SGD);
            ``"decoupled"`` shrinks ``w ← w·(1 − lr·λ)`` in the iterate (AdamW);
            ``"direction"`` adds ``λ·w`` to ``d`` before the direction part (LAMB).
        eps: ``"outside"`` divides by ``√V̂ + ε`` (torch); ``"inside"`` by ``√(V̂ + ε)``;
            ``"uncorrected"`` by ``(√V + ε) / √c₂`` (torch's RAdam, SparseAdam).
        zero_over_zero: where ``√V̂ + ε = 0`` the step is 0 instead of ``0/0`` (the seed's
            rules with ``ε = 0``: ``m = 0`` wherever ``V = 0``, so 0 is the limit).
        count_steps: keep a per-parameter ``step`` in the state (torch's SGD does not).
    """

    first: FirstMoment = field(default_factory=Gradient)
    second: SecondMoment = field(default_factory=One)
    direction: Direction = field(default_factory=Identity)
    iterate: Iterate = field(default_factory=Descent)
    precondition: Literal["moment", "gradient"] = "moment"
    weight_decay: Literal["coupled", "decoupled", "direction"] = "coupled"
    eps: Eps = "outside"
    zero_over_zero: bool = False
    count_steps: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.first, FirstMoment):
            raise TypeError(f"Rules.first must be a FirstMoment rule, got {self.first!r}")
        if not isinstance(self.second, SecondMoment):
            raise TypeError(f"Rules.second must be a SecondMoment rule, got {self.second!r}")
        if not isinstance(self.direction, Direction):
            raise TypeError(f"Rules.direction must be a Direction rule, got {self.direction!r}")
        if not isinstance(self.iterate, Iterate):
            raise TypeError(f"Rules.iterate must be an Iterate rule, got {self.iterate!r}")
        for name, value, allowed in [
            ("precondition", self.precondition, ("moment", "gradient")),
            ("weight_decay", self.weight_decay, ("coupled", "decoupled", "direction")),
            ("eps", self.eps, ("outside", "inside", "uncorrected")),
        ]:
            if value not in allowed:
                raise ValueError(f"Invalid Rules.{name}: {value!r} (expected one of {allowed})")
        if not self.count_steps:
            for rule in self.parts():
                if rule.needs_step:
                    raise ValueError(
                        f"{rule!r} needs the step count, but Rules.count_steps is False"
                    )

    def parts(self) -> tuple[Rule, ...]:
        """The four parts, in the order the step runs them."""
        return (self.first, self.second, self.direction, self.iterate)

    # The properties below are asked at every step; a Rules value is immutable, so each is
    # computed once (functools.cached_property writes past the frozen dataclass's setattr).

    @cached_property
    def elementwise(self) -> bool:
        """Every part is elementwise: the step may run over flat buffers (the fast path)."""
        return all(part.elementwise for part in self.parts())

    @cached_property
    def flat(self) -> bool:
        """The step may run over flat buffers: every part is elementwise, or takes no
        whole-parameter quantity but norms (``segmented``: then eagerly, never compiled)."""
        return all(part.elementwise or part.segmented for part in self.parts())

    @cached_property
    def compilable(self) -> bool:
        """Elementwise parts that are all dataclasses, so that their hyperparameters can
        become a compiled kernel's inputs (:mod:`.kernels`). Segmented rules (whole-parameter
        norms) run eagerly."""
        return self.elementwise and all(dataclasses.is_dataclass(part) for part in self.parts())

    @cached_property
    def advancing(self) -> tuple[Rule, ...]:
        """The parts that keep scalar state or give per-step values (:meth:`Rule.advance`);
        the others' advance is the base's, which does nothing."""
        return tuple(p for p in self.parts() if p.scalars() or type(p).advance is not Rule.advance)

    @cached_property
    def decaying(self) -> tuple[Rule, ...]:
        """The parts with a learning-rate divisor of their own (:meth:`Rule.decay`); the
        others' is the base's constant 1."""
        return tuple(p for p in self.parts() if type(p).decay is not Rule.decay)

    def scalar_names(self) -> tuple[str, ...]:
        """The per-parameter scalar state: ``step`` (when counted), then the parts'."""
        return self._scalar_names

    @cached_property
    def _scalar_names(self) -> tuple[str, ...]:
        names = ("step",) if self.count_steps else ()
        return names + tuple(name for part in self.parts() for name in part.scalars())

    def initial_buffers(self, p: torch.Tensor | None = None) -> dict[str, torch.Size]:
        """The buffers a new state holds (scalar state aside), with their shapes for a
        parameter shaped like ``p`` (asked of a tensor on the meta device)."""
        meta = torch.empty(p.shape if p is not None else (0,), device="meta")
        return {name: t.shape for part in self.parts() for name, t in part.init(meta).items()}

    def buffers(self) -> frozenset[str]:
        """Every buffer a state may hold (some are born at a rule's first update)."""
        return self._buffers

    @cached_property
    def _buffers(self) -> frozenset[str]:
        return frozenset(name for part in self.parts() for name in part.buffers())

    @cached_property
    def nonnegative(self) -> frozenset[str]:
        """The buffers that are never negative (:meth:`Rule.nonnegative`: coded unsigned)."""
        return frozenset(name for part in self.parts() for name in part.nonnegative())

    @cached_property
    def exact(self) -> frozenset[str]:
        """The buffers that stay at the parameter's precision (:meth:`Rule.exact`)."""
        return frozenset(name for part in self.parts() for name in part.exact())

    def formulas(self, eps: float | None = None) -> dict[str, str]:
        """``{"m": …, "V": …, "update": …}`` in the README's notation (the direction and
        iterate parts appear inside ``update``). Each optimizer's own symbols: β₁ and β₂ when
        both moments are EMAs, a hat only on a bias-corrected moment, and no ε when the
        group's ``eps`` is 0 (the seed's optimizers)."""
        m, v = self.first.formula, self.second.formula
        if _BETA.search(m) and _BETA.search(v):  # two EMAs: each its own β
            m, v = _BETA.sub("β₁", m), _BETA.sub("β₂", v)
        division = _root(self.second.root(self.eps), corrected="V̂" in v or _corrects(self.second), eps=eps != 0)
        x = ("m̂" if "m̂" in m or _corrects(self.first) else "m") if self.precondition == "moment" else "g"
        d = "m" if self.second.formula == "V = 1" and x != "g" else x
        if self.second.formula != "V = 1":
            d = f"{x} / {division}"
        if self.weight_decay == "direction":
            d = f"({d} + λ·w)"
        d = _fill(self.direction.formula, d)
        if self.precondition == "gradient":
            update = f"m over {d}; " + _fill(self.iterate.formula, "m")
        else:
            update = _fill(self.iterate.formula, d)
        if self.weight_decay == "decoupled":
            update = f"{self.iterate.decay_formula}; {update}"
        return {"m": m, "V": v, "update": update}
