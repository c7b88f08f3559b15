"""Parameter groups as training scripts build them, from a model and a few rules.

Every parameter of the model that requires a gradient is claimed by exactly one rule; a
rule's parameters make one torch param group ``{"params": [...], **options}``::

    a rule claims w  ⇔  some pattern of ``match`` fits w  and  no pattern of ``exclude`` does
    group["lr"] = lr · lr_scale                 (when a base ``lr`` is given)

A pattern is one of

* a ``str``: a glob (:mod:`fnmatch`) on the parameter's dotted name (``"*.bias"``,
  ``"lm_head.*"``); a compiled ``re.Pattern``: ``search`` on the name;
* an ``nn.Module`` subclass: the module that holds the parameter is one (``nn.LayerNorm``,
  :data:`NORMS`, ``nn.Embedding``);
* :func:`dims` ``(min, max)``: the parameter's number of dimensions lies in ``[min, max]``;
* a callable ``(name, parameter) -> bool``.

A tied parameter (GPT's ``wte.weight`` is ``lm_head.weight``) is one parameter: it fits a
pattern if any of its names, or any module holding it, does. A rule without ``match``
claims what no other rule claims (at most one such rule). A parameter claimed by two rules,
or by none when there is no such rule, is refused with its name.

The result is a list of plain dicts (torch.optim's optimizers take it as momenta's do),
with :meth:`ParamGroups.summary` and :meth:`ParamGroups.group_of` telling which parameter
went where. Presets: :func:`weight_decay_rules` (nanoGPT's ``configure_optimizers``: decay on
matrices and embeddings, none on biases and norms) and :func:`muon_rules` (Muon on hidden
matrices, AdamW on the rest, for :class:`momenta.MuonWithAdamW`).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from torch import Tensor, nn

__all__ = [
    "NORMS",
    "Dims",
    "ParamGroups",
    "Rule",
    "dims",
    "muon_rules",
    "param_groups",
    "rule",
    "weight_decay_rules",
]


@dataclass(frozen=True)
class Dims:
    """Parameters with ``min ≤ w.dim() ≤ max`` dimensions (``max=None``: no upper bound)."""

    min: int = 0
    max: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("min", self.min), ("max", self.max)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"dims: invalid {name}: {value!r} (expected an int >= 0)")
        if self.max is not None and self.max < self.min:
            raise ValueError(f"dims: invalid range: min={self.min} > max={self.max}")

    def __call__(self, p: Tensor) -> bool:
        return self.min <= p.dim() and (self.max is None or p.dim() <= self.max)

    def __str__(self) -> str:
        return f"dims({self.min}, {self.max})"


def dims(min: int = 0, max: int | None = None) -> Dims:  # noqa: A002 - the natural names
    """The pattern of parameters with ``min`` to ``max`` dimensions: ``dims(max=1)`` for
    biases and gains, ``dims(2, 2)`` for matrices, ``dims(min=2)`` for nanoGPT's decay."""
    return Dims(min, max)


#: torch's normalisation layers (their gains and shifts take no weight decay by custom)
NORMS: tuple[type[nn.Module], ...] = (
    nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.LocalResponseNorm,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
)  # fmt: skip

Pattern = Union[str, "re.Pattern[str]", type, Dims, Callable[[str, Tensor], bool]]
"""What a rule matches on: a name glob, a regex, a module type, :func:`dims`, or a
predicate ``(name, parameter) -> bool``."""


@dataclass(frozen=True)
class Rule:
    """A param group by what it holds: the parameters fitting ``match`` and no ``exclude``
    (every parameter no other rule claims, when ``match`` is empty), with ``options`` as the
    group's hyperparameters and its lr ``lr_scale`` times the base lr."""

    name: str
    match: tuple[Pattern, ...] = ()
    exclude: tuple[Pattern, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"rule: invalid name: {self.name!r} (expected a non-empty str)")
        for argument in ("match", "exclude"):
            for pattern in getattr(self, argument):
                _check_pattern(pattern, f"rule {self.name!r}, {argument}")
        scale = self.lr_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"rule {self.name!r}: invalid lr_scale: {scale!r} (expected a finite number >= 0)")
        if "params" in self.options:
            raise ValueError(f"rule {self.name!r}: 'params' is not an option (the rule's patterns choose them)")
        if "lr" in self.options and scale != 1.0:
            raise ValueError(f"rule {self.name!r}: give lr or lr_scale, not both (lr={self.options['lr']!r}, lr_scale={scale!r})")

    @property
    def rest(self) -> bool:
        """The rule claims what no other rule claims."""
        return not self.match

    def claims(self, names: Sequence[str], owners: Sequence[nn.Module], p: Tensor) -> bool:
        """``p`` (known by ``names``, held by ``owners``) fits ``match`` and no ``exclude``."""
        fits = any(_fits(pattern, names, owners, p) for pattern in self.match)
        return fits and not any(_fits(pattern, names, owners, p) for pattern in self.exclude)


def rule(
    name: str,
    *match: Pattern,
    exclude: Iterable[Pattern] = (),
    lr_scale: float = 1.0,
    **options: Any,
) -> Rule:
    """A :class:`Rule`: ``rule("no_decay", dims(max=1), *NORMS, weight_decay=0.0)``;
    without patterns, the group of every parameter no other rule claims."""
    return Rule(name, tuple(match), tuple(exclude), dict(options), lr_scale)


def _check_pattern(pattern: Any, where: str) -> None:
    if isinstance(pattern, (str, re.Pattern, Dims)):
        return
    if isinstance(pattern, type):
        if issubclass(pattern, nn.Module):
            return
        raise TypeError(f"{where}: {pattern!r} is a class but not an nn.Module subclass")
    if callable(pattern):
        return
    raise TypeError(
        f"{where}: unknown pattern {pattern!r} of type {type(pattern).__name__} (expected a name glob "
        "(str), a compiled re.Pattern, an nn.Module subclass, dims(...) or a callable (name, parameter) -> bool)"
    )


def _fits(pattern: Pattern, names: Sequence[str], owners: Sequence[nn.Module], p: Tensor) -> bool:
    if isinstance(pattern, str):
        return any(fnmatch.fnmatchcase(n, pattern) for n in names)
    if isinstance(pattern, re.Pattern):
        return any(pattern.search(n) for n in names)
    if isinstance(pattern, Dims):
        return pattern(p)
    if isinstance(pattern, type):
        return any(isinstance(m, pattern) for m in owners)
    return any(bool(pattern(n, p)) for n in names)


class ParamGroups(list):  # type: ignore[type-arg]
    """The param groups (plain dicts, in the order of the rules that made them; a rule that
    claimed nothing makes none), and which parameter went where.

    Attributes:
        rules: the rule of each group.
        names: the names of each group's parameters (a tied parameter by its first name).
        frozen: the names of the parameters left out (``requires_grad=False``).
        empty: the rules that claimed no parameter.
    """

    def __init__(
        self,
        groups: list[dict[str, Any]],
        rules: list[Rule],
        names: list[list[str]],
        frozen: list[str],
        empty: list[Rule],
    ) -> None:
        super().__init__(groups)
        self.rules, self.names, self.frozen, self.empty = rules, names, frozen, empty

    def group_of(self, name: str) -> str:
        """The rule name of the group holding parameter ``name``."""
        for r, names in zip(self.rules, self.names):
            if name in names:
                return r.name
        raise KeyError(f"no parameter {name!r} in these groups (frozen: {name in self.frozen})")

    def summary(self, width: int = 4) -> str:
        """One line a group: its rule, options, tensors, elements and the first ``width``
        names; then the rules that claimed nothing and the frozen parameters."""
        lines = []
        for r, group, names in zip(self.rules, self, self.names):
            options = ", ".join(f"{k}={v!r}" for k, v in group.items() if k != "params")
            elements = sum(p.numel() for p in group["params"])
            shown = ", ".join(names[:width]) + (f", … (+{len(names) - width})" if len(names) > width else "")
            lines.append(f"{r.name}: {len(names)} tensors, {elements:,} elements; {options or 'defaults'}; {shown}")
        if self.empty:
            lines.append("claimed nothing: " + ", ".join(r.name for r in self.empty))
        if self.frozen:
            lines.append(f"frozen (left out): {len(self.frozen)} tensors: " + ", ".join(self.frozen[:width]))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def param_groups(model: nn.Module, rules: Sequence[Rule], *, lr: float | None = None) -> ParamGroups:
    """The param groups of ``model``'s trainable parameters, one for each rule that claims
    some: ``{"params": [...], **rule.options}``, with ``"lr": lr · rule.lr_scale`` when ``lr``
    is given (required when a rule scales it).

    Args:
        model: the module whose parameters to group (``requires_grad=False`` ones are left
            out, and listed in :attr:`ParamGroups.frozen`).
        rules: the rules, distinct names; at most one without patterns (it takes the rest).
        lr: the base learning rate that ``lr_scale`` multiplies.

    Raises:
        ValueError: a parameter claimed by two rules, or by none with no rule for the rest
            (the message names them); duplicate rule names; an ``lr_scale`` without ``lr``.
        TypeError: ``rules`` holds something that is not a :class:`Rule`.
    """
    rules = list(rules)
    for i, r in enumerate(rules):
        if not isinstance(r, Rule):
            raise TypeError(f"param_groups: rules[{i}] is {r!r}, not a Rule (build one with momenta.integrations.rule)")
    seen = [r.name for r in rules]
    duplicates = sorted({n for n in seen if seen.count(n) > 1})
    if duplicates:
        raise ValueError(f"param_groups: rule names must be distinct; repeated: {duplicates}")
    rests = [r.name for r in rules if r.rest]
    if len(rests) > 1:
        raise ValueError(f"param_groups: at most one rule without patterns (the rest), got {rests}")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr >= 0):
        raise ValueError(f"param_groups: invalid lr: {lr!r} (expected a number >= 0)")
    scaled = [r.name for r in rules if r.lr_scale != 1.0]
    if scaled and lr is None:
        raise ValueError(f"param_groups: rules {scaled} scale the lr, but no lr was given (lr=...)")

    names, owners = _names_and_owners(model)
    claimed: dict[str, list[Tensor]] = {r.name: [] for r in rules}
    claimed_names: dict[str, list[str]] = {r.name: [] for r in rules}
    frozen, unclaimed, twice = [], [], []
    for p, ps_names in names.items():
        label = ps_names[0] if len(ps_names) == 1 else f"{ps_names[0]} (= {', '.join(ps_names[1:])})"
        if not p.requires_grad:
            frozen.append(ps_names[0])
            continue
        by = [r for r in rules if not r.rest and r.claims(ps_names, owners[p], p)]
        if not by and rests:
            by = [r for r in rules if r.rest]
        if len(by) > 1:
            twice.append(f"{label} by {[r.name for r in by]}")
        elif not by:
            unclaimed.append(label)
        else:
            claimed[by[0].name].append(p)
            claimed_names[by[0].name].append(ps_names[0])
    if twice:
        raise ValueError("param_groups: parameters claimed by two rules: " + "; ".join(twice))
    if unclaimed:
        raise ValueError(
            f"param_groups: parameters no rule claims: {', '.join(unclaimed)} "
            "(add a rule without patterns, rule('rest', ...), to take every parameter left)"
        )
    groups, kept, kept_names, empty = [], [], [], []
    for r in rules:
        if not claimed[r.name]:
            empty.append(r)
            continue
        group: dict[str, Any] = {"params": claimed[r.name], **r.options}
        if lr is not None and "lr" not in r.options:
            group["lr"] = lr * r.lr_scale
        groups.append(group)
        kept.append(r)
        kept_names.append(claimed_names[r.name])
    return ParamGroups(groups, kept, kept_names, frozen, empty)


def _names_and_owners(model: nn.Module) -> tuple[dict[Tensor, list[str]], dict[Tensor, list[nn.Module]]]:
    """Every parameter once (in ``named_parameters`` order) with all its names and the
    modules that hold it directly (a tied parameter has several)."""
    names: dict[Tensor, list[str]] = {}
    owners: dict[Tensor, list[nn.Module]] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for local, p in module.named_parameters(prefix="", recurse=False):
            name = f"{prefix}.{local}" if prefix else local
            if name not in names.setdefault(p, []):
                names[p].append(name)
            if not any(m is module for m in owners.setdefault(p, [])):
                owners[p].append(module)
    order: dict[Tensor, int] = {p: i for i, (_, p) in enumerate(model.named_parameters())}
    ordered = sorted(names, key=lambda p: order.get(p, len(order)))
    return {p: names[p] for p in ordered}, owners


# -- presets ------------------------------------------------------------------------------------


def weight_decay_rules(
    weight_decay: float = 0.1,
    *,
    no_decay: Sequence[Pattern] = (dims(max=1), *NORMS),
    extra: Sequence[Rule] = (),
) -> list[Rule]:
    """nanoGPT's two groups: ``"decay"`` (``weight_decay``) for every parameter but those
    fitting ``no_decay``, ``"no_decay"`` (0.0) for those (default: biases, gains and any
    parameter of a norm layer; add ``nn.Embedding`` to spare embeddings, as many scripts do).

    ``extra`` rules come first and their parameters are excluded from both groups: e.g.
    ``rule("embeddings", nn.Embedding, weight_decay=0.0, lr_scale=0.1)`` or
    ``rule("head", "lm_head.*", lr_scale=0.5)`` for a group with its own lr."""
    taken = tuple(p for r in extra for p in r.match)
    return [
        *extra,
        rule("no_decay", *no_decay, exclude=taken, weight_decay=0.0),
        rule("decay", weight_decay=weight_decay),
    ]


def muon_rules(
    *,
    head: Sequence[Pattern] = ("lm_head.*", "*.lm_head.*", "head.*"),
    adamw: Mapping[str, Any] | None = None,
) -> list[Rule]:
    """Muon's split: ``"muon"`` (``muon=True``) for the hidden matrices, 2-D parameters
    that are neither an embedding nor the ``head``; ``"adamw"`` (``muon=False``, with the
    ``adamw`` options, e.g. ``lr``, ``betas``, ``eps``, ``weight_decay``) for the rest:
    embeddings, the head, biases, gains. :class:`momenta.MuonWithAdamW` takes groups with a
    ``muon`` key as they are (so the ``adamw`` options should be complete: lr, betas, eps,
    weight_decay); for ``torch.optim.Muon`` plus ``torch.optim.AdamW``, give each one group
    (their optimizers ignore ``muon``)."""
    return [
        rule("muon", dims(2, 2), exclude=(nn.Embedding, *head), muon=True),
        rule("adamw", muon=False, **dict(adamw or {})),
    ]
