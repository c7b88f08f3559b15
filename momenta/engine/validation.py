"""Every hyperparameter check: a table per optimizer, run by the engine wherever a param
group's values can change.

A table maps a param-group key to the check of its value, in the order the checks run
(Adam's, abridged: ``{("lr", "foreach", "capturable"): tensor_lr_with_foreach, "lr": lr,
"eps": eps, "betas": betas, …, FLAGS: implementation}``).

A key that is a tuple hands those values to a check of several; a key a group lacks is
skipped. A check that torch makes of a constructor's arguments only, not of the values a
scheduler or a user sets later, is an :class:`Argument` (SparseAdam's ``lr > 0``: a
schedule may take it to 0). A check raises ``ValueError`` for a bad value and
``TypeError`` for one that is not a number. For torch's drop-ins the message is torch's
word for word, in torch's order (of two bad values, the one torch reports), so that code
written against torch's errors keeps working; for the others it names the argument and the
value.

The engine runs an optimizer's table (:meth:`momenta.Optimizer.checks_of`) once per place
where values can change:

* construction: the arguments (the defaults) before the parameters are added, and the
  implementation flags (:data:`FLAGS`) after them, both as torch;
* ``add_param_group``: a group with values of its own (:func:`checked_rules`);
* a step after a scheduler or a user changed a group's values (:func:`checked_rules`);
* ``load_state_dict``: every saved group, with state or without, before anything changes
  (:func:`checked_rules`).

:func:`checked_rules` then builds the group's rules, whose ``__post_init__`` checks
(:func:`momenta.rules.base.check`) are each rule's own invariants: what checks the keys of a
:class:`momenta.Composed` (its hyperparameters are its rules' fields). The tables of the
built-in optimizers check every value their rules check, so their messages are their own.

Where torch checks a value only at the step (Muon's ``ns_steps``, ``ns_coefficients``), the
table checks it at construction, with torch's message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from torch import Tensor

if TYPE_CHECKING:
    from .composition import Rules
    from .optimizer import Optimizer

Check = Callable[..., None]
"""Raises if its value (or values, for a key of several) is not valid."""


@dataclass(frozen=True)
class Argument:
    """A check torch makes of a constructor's argument only: ``check`` at construction;
    ``later`` (or nothing) where a group's values change afterwards."""

    check: Check
    later: Check | None = None


Checks = Mapping[str | tuple[str, ...], Check | Argument]
"""An optimizer's table: key (or keys) → check, in the order the checks run."""

#: The implementation flags, which torch checks after the parameters are added.
FLAGS = ("foreach", "fused", "differentiable")


def run(checks: Checks, group: Mapping[str, Any], when: Literal["arguments", "flags", "group"] = "group") -> None:
    """Every check of ``checks`` whose keys ``group`` has, in order, ``when``:

    * ``"arguments"``: a constructor's, before the parameters are added: all but the check
      of :data:`FLAGS`, an :class:`Argument`'s ``check``;
    * ``"flags"``: the check of :data:`FLAGS` alone, after the parameters (torch's order);
    * ``"group"``: a param group's values anywhere else: all, an :class:`Argument`'s ``later``.
    """
    for keys, entry in checks.items():
        if when != "group" and (keys == FLAGS) != (when == "flags"):
            continue  # the other half of construction
        if isinstance(entry, Argument):
            check = entry.check if when == "arguments" else entry.later
        else:
            check = entry
        names = (keys,) if isinstance(keys, str) else keys
        if check is not None and all(name in group for name in names):
            check(*(group[name] for name in names))


def checked_rules(optimizer: Optimizer, group: dict[str, Any]) -> Rules:
    """``group``'s rules, after its checks: the optimizer's table, in order, then the rules
    built from the values (each rule's own invariants; a Composed names the key)."""
    run(optimizer.checks_of(group), group)
    return optimizer.rules(group)


# -- the kinds of check --------------------------------------------------------------------


def _number(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
        raise TypeError(f"Invalid {what}: {value!r} (expected a number)")


def at_least(low: float, what: str, message: str | None = None, *, strict: bool = False) -> Check:
    """``low ≤ value`` (``low < value`` if ``strict``; NaN fails), else ``ValueError(message)``
    (``{}`` is the value; default ``"Invalid {what}: {}"``); not a number: ``TypeError``."""
    text = message or f"Invalid {what}: {{}}"

    def check(value: Any) -> None:
        _number(value, what)
        if not (low < value if strict else low <= value):
            raise ValueError(text.format(value))

    return check


def at_most(high: float, what: str, message: str) -> Check:
    """``value ≤ high`` (NaN fails), else ``ValueError(message)`` (``{}`` is the value)."""

    def check(value: Any) -> None:
        _number(value, what)
        if not value <= high:
            raise ValueError(message.format(value))

    return check


def in_unit_interval(name: str) -> Check:
    """``0 ≤ value < 1`` (a decay rate β), named ``name`` in the message."""

    def check(value: Any) -> None:
        _number(value, f"{name} value")
        if not 0.0 <= value < 1.0:
            raise ValueError(f"Invalid {name} value: {value} (expected 0 <= {name} < 1)")

    return check


def whole_number(low: int, name: str, *, optional: bool = False) -> Check:
    """A whole number of steps ``≥ low`` (or ``None`` when ``optional``)."""

    def check(value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            expected = f"None or a whole number >= {low}" if optional else f"a whole number >= {low}"
            raise ValueError(f"Invalid {name} value: {value!r} (expected {expected})")

    return check


def learning_rate(message: str | None = None, *, strict: bool = False, what: str = "learning rate") -> Check:
    """A learning rate: a number ≥ 0 (> 0 if ``strict``) or a 1-element tensor; ``message``
    is torch's where an optimizer words it otherwise (see :func:`at_least`)."""
    value_check = at_least(0.0, what, message, strict=strict)

    def check(value: Any) -> None:
        if isinstance(value, Tensor) and value.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        value_check(value)

    return check


# -- the checks of torch's keys, in torch's words -----------------------------------------

lr = learning_rate()
eps = at_least(0.0, "epsilon value")
weight_decay = at_least(0.0, "weight_decay value")
momentum = at_least(0.0, "momentum value")


def _pair(value: Any, name: str, names: str) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"Invalid {name}: {value!r} (expected a pair {names})")


def betas(value: Any) -> None:
    """torch's ``betas``: β₁ and β₂ in [0, 1), read by index as torch reads them (a shorter
    value raises torch's ``IndexError``); a longer one is refused too."""
    for i in (0, 1):
        _number(value[i], f"beta parameter at index {i}")
        if not 0.0 <= value[i] < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {value[i]}")
    _pair(value, "betas", "(beta1, beta2)")


def pair_of_betas(value: Any) -> None:
    """The others' ``betas``: a pair (β₁, β₂), each in [0, 1)."""
    _pair(value, "betas", "(beta1, beta2)")
    betas(value)


def tensor_lr_with_foreach(lr: Any, foreach: bool | None, capturable: bool) -> None:
    """torch's Adam family: a tensor lr needs capturable when foreach is asked for."""
    if isinstance(lr, Tensor) and foreach and not capturable:
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")


def tensor_betas(betas: Any, foreach: bool | None, capturable: bool) -> None:
    """torch's Adam family: ``betas`` two floats or two 1-element tensors (these need
    capturable when foreach is asked for)."""
    if not (all(isinstance(b, float) for b in betas) or all(isinstance(b, Tensor) for b in betas)):
        raise ValueError("betas must be either both floats or both Tensors")
    for i, beta in enumerate(betas):
        if isinstance(beta, Tensor):
            if not capturable and foreach:
                raise ValueError(f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True")
            if beta.numel() != 1:
                raise ValueError(f"Tensor betas[{i}] must be 1-element")


def implementation(foreach: bool | None, fused: bool | None, differentiable: bool) -> None:
    """The implementation flags torch accepts together."""
    if fused and differentiable:
        raise RuntimeError("`fused` does not support `differentiable`")
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def nesterov(nesterov: bool, momentum: Any, dampening: Any) -> None:
    """SGD: Nesterov momentum needs a momentum and no dampening."""
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")


def rho(value: Any) -> None:
    """Adadelta's ρ, in [0, 1]."""
    _number(value, "rho value")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"Invalid rho value: {value}")


def etas(value: Any) -> None:
    """Rprop's ``(η₋, η₊)``, ``0 < η₋ < 1 < η₊``, read by index as torch reads them; a
    longer value is refused too."""
    if not 0.0 < value[0] < 1.0 < value[1]:
        raise ValueError(f"Invalid eta values: {value[0]}, {value[1]}")
    _pair(value, "etas", "(etaminus, etaplus)")


def epsilons(value: Any) -> None:
    """Adafactor's ``eps = (ε₁, ε₂)``: ε₁ ≥ 0 or ``None`` (the dtype's machine epsilon), ε₂ ≥ 0."""
    _pair(value, "eps", "(eps1, eps2)")
    if value[0] is not None:
        at_least(0.0, "epsilon1", "epsilon1 should be >= 0 but is: {}")(value[0])
    at_least(0.0, "epsilon2", "epsilon2 should be >= 0 but is: {}")(value[1])


_MUON_MOMENTUM = at_least(0.0, "momentum", "momentum should be >= 0 but is: {}")


def muon_momentum(value: Any) -> None:
    """Muon's μ: ≥ 0 (torch's check), and < 1 (torch accepts 1 and more; the EMA of
    momenta's Muon does not average there)."""
    _MUON_MOMENTUM(value)
    if not value < 1.0:
        raise ValueError(f"Invalid momentum value: {value} (expected momentum < 1: Muon's momentum is an EMA's beta)")


def adjust_lr_fn(value: Any) -> None:
    """Muon's shape scaling: ``None``, ``"original"`` or ``"match_rms_adamw"``."""
    if value is not None and value not in ("original", "match_rms_adamw"):
        raise ValueError(f"Adjust learning rate function {value} is not supported")


_NS_STEPS = whole_number(0, "ns_steps")


def ns_steps(value: Any) -> None:
    """Muon's Newton–Schulz steps: a whole number below 100 (torch's message, which torch
    gives at the step)."""
    _NS_STEPS(value)
    if value >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")


def ns_coefficients(value: Any) -> None:
    """Muon's ``(a, b, c)`` (torch's message, which torch gives at the step)."""
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    for i, c in enumerate(value):
        _number(c, f"ns_coefficients[{i}]")


# -- the tables of torch's drop-ins, each in torch's order ---------------------------------

SGD: Checks = {
    "lr": lr,
    "momentum": momentum,
    "weight_decay": weight_decay,
    "dampening": at_least(-math.inf, "dampening value"),  # any number, as torch
    ("nesterov", "momentum", "dampening"): Argument(nesterov),
    FLAGS: implementation,
}

ADAM: Checks = {  # and AdamW
    ("lr", "foreach", "capturable"): tensor_lr_with_foreach,
    "lr": lr,
    "eps": eps,
    "betas": betas,
    "weight_decay": weight_decay,
    ("betas", "foreach", "capturable"): Argument(tensor_betas),
    FLAGS: implementation,
}

#: Adamax, RAdam (and NAdam's first four)
ADAM_FAMILY: Checks = {"lr": lr, "eps": eps, "betas": betas, "weight_decay": weight_decay}

NADAM: Checks = {**ADAM_FAMILY, "momentum_decay": at_least(0.0, "momentum_decay value")}

ADAGRAD: Checks = {
    "lr": lr,
    "lr_decay": at_least(0.0, "lr_decay value"),
    "weight_decay": weight_decay,
    "initial_accumulator_value": at_least(0.0, "initial_accumulator_value value"),
    "eps": eps,
    FLAGS: implementation,
}

RMSPROP: Checks = {
    "lr": lr,
    "eps": eps,
    "momentum": momentum,
    "weight_decay": weight_decay,
    "alpha": at_least(0.0, "alpha value"),
}

ADADELTA: Checks = {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay}

ASGD: Checks = {
    "lr": lr,
    "weight_decay": weight_decay,
    # momenta's: torch accepts λ < 0, where ηₜ can blow up, and α < 0, where it grows
    "lambd": at_least(0.0, "lambd value"),
    "alpha": at_least(0.0, "alpha value"),
}

RPROP: Checks = {"lr": lr, "etas": etas}

SPARSE_ADAM: Checks = {
    "lr": Argument(learning_rate(strict=True), later=lr),  # a schedule may take lr to 0
    "eps": at_least(0.0, "epsilon value", strict=True),
    "betas": betas,
}

ADAFACTOR: Checks = {
    "lr": learning_rate("Learning rate should be >= 0 but is: {}"),
    "beta2_decay": at_most(0.0, "beta2_decay", "beta2_decay should be <= 0 but is: {}"),
    "eps": epsilons,
    "d": at_least(1.0, "d", "Clipping threshold d should be >= 1 but is: {}"),
    "weight_decay": at_least(0.0, "weight_decay", "weight_decay should be >= 0 but is: {}"),
}

MUON: Checks = {  # and MuonWithAdamW's Muon groups
    "lr": learning_rate("Learning rate should be >= 0 but is: {}"),
    "momentum": muon_momentum,
    "weight_decay": at_least(0.0, "weight decay", "weight decay should be >= 0 but is: {}"),
    "adjust_lr_fn": adjust_lr_fn,
    "ns_steps": ns_steps,
    "ns_coefficients": ns_coefficients,
    "eps": eps,  # momenta's: torch accepts ε < 0, which no longer keeps ‖m‖ from 0
}

# -- the others' ---------------------------------------------------------------------------

#: The engine's own keys: the table of an optimizer that declares none, and Composed's
#: (whose other keys its rules check).
ENGINE: Checks = {"lr": lr, "eps": eps, "weight_decay": weight_decay}

#: MuonWithAdamW's AdamW groups, whose values are its ``adamw_*`` arguments.
MUON_ADAMW: Checks = {
    "lr": learning_rate("Invalid adamw_lr value: {}", what="adamw_lr value"),
    "betas": pair_of_betas,
    "eps": at_least(0.0, "adamw_eps value"),
    "weight_decay": at_least(0.0, "adamw_weight_decay value"),
}

#: AdaBelief, Lion (no eps), LAMB.
MODERN: Checks = {**ENGINE, "betas": pair_of_betas}

LARS: Checks = {
    **ENGINE,
    "momentum": momentum,
    "trust_coefficient": at_least(0.0, "trust_coefficient value"),
}

YOGI: Checks = {**MODERN, "initial_accumulator": at_least(0.0, "initial_accumulator value")}

SCHEDULE_FREE: Checks = {
    **MODERN,
    "warmup_steps": whole_number(0, "warmup_steps"),
    "r": at_least(0.0, "r value"),
    "weight_lr_power": at_least(0.0, "weight_lr_power value"),
}


def ademamix_betas(value: Any) -> None:
    """AdEMAMix's ``betas``: the pair (β₁, β₂); β₃ is an argument of its own."""
    if isinstance(value, (tuple, list)) and len(value) == 3:
        raise ValueError(f"Invalid betas: {value!r} (AdEMAMix takes betas=(beta1, beta2) and beta3 on its own)")
    pair_of_betas(value)


def beta3_warmup_from_beta1(beta3_warmup: int | None, betas: Any) -> None:
    """AdEMAMix: the β₃ warm-up starts at β₁, which must then be > 0."""
    if beta3_warmup is not None and betas[0] == 0:
        raise ValueError(
            f"Invalid beta parameter at index 0: {betas[0]} (the beta3 warm-up starts at beta1, which must be > 0)"
        )


ADEMAMIX: Checks = {
    **ENGINE,
    "betas": ademamix_betas,
    "beta3": in_unit_interval("beta3"),
    "alpha": at_least(0.0, "alpha value"),
    "alpha_warmup": whole_number(1, "alpha_warmup", optional=True),
    "beta3_warmup": whole_number(1, "beta3_warmup", optional=True),
    ("beta3_warmup", "betas"): beta3_warmup_from_beta1,
}

ADAFACTOR_PAPER: Checks = {
    "lr": lr,
    "eps1": at_least(0.0, "eps1 value"),
    "eps2": at_least(0.0, "eps2 value"),
    "clip_threshold": at_least(
        0.0, "clip_threshold value", "Invalid clip_threshold value: {} (expected clip_threshold > 0)", strict=True
    ),
    "decay_rate": at_most(0.0, "decay_rate value", "Invalid decay_rate value: {} (expected decay_rate <= 0)"),
    "beta1": in_unit_interval("beta1"),
    "weight_decay": weight_decay,
}


# -- direct checks, for a constructor outside the tables (momenta.seed) ---------------------


def non_negative(value: Any, what: str) -> None:
    """``at_least(0.0, what)(value)``."""
    at_least(0.0, what)(value)


def unit_interval(value: Any, name: str) -> None:
    """``in_unit_interval(name)(value)``."""
    in_unit_interval(name)(value)
