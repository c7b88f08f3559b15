"""The kinds of rule, and what a rule promises the engine.

Every optimizer is ``w ← w − lr/d(t) · m̂ / √V̂`` with ``m̂ = m / c₁(t)`` and ``V̂ = V / c₂(t)``:
a first-moment rule makes ``m`` from the gradient ``g``; a second-moment rule makes ``V`` from
``g`` (and ``m``, for rules such as AdaBelief's). The per-step scalars are the rules' too:
``c(t)``, a bias correction (``1 − β^t``), and ``d(t)``, a decay that divides the learning
rate (Adagrad's ``lr_decay``). They are plain numbers computed once per step, outside the tensor math.

A rule is a small immutable value (a frozen dataclass). It

* names its state buffers and creates them in :meth:`init` (torch's names where torch has
  the same quantity: ``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``, ``sum`` …);
* computes, in :meth:`update`, the new moment and the new buffer values as plain tensor math,
  returning them instead of writing them;
* may give :meth:`correction` (``m̂ = m / c(t)``, ``V̂ = V / c(t)``) and :meth:`decay`
  (the learning rate at step ``t`` is ``lr / d(t)``).

Four kinds of part make an optimizer, each a rule of this module's kind:

* :class:`FirstMoment` — ``m`` from ``g``;
* :class:`SecondMoment` — ``V`` from ``g²``, and how ``V`` becomes the denominator
  (:meth:`SecondMoment.denominator`: ``√V̂ + ε`` unless the rule says otherwise);
* :class:`Direction` — what the step direction ``d = m̂ / (√V̂ + ε)`` becomes before it moves
  the weights (its sign, a trust ratio, an orthogonalisation, a clipping);
* :class:`Iterate` — how ``d`` moves the weights (``w ← w − lr·d``; an average of iterates,
  a schedule-free interpolation, a step size relative to ``‖w‖``).

Some rules keep per-parameter *scalar* state besides their buffers (NAdam's ``mu_product``,
ASGD's ``eta``): :meth:`Rule.scalars` names it, :meth:`Rule.advance` moves it once per step,
on the host, in torch's dtype (it is a 0-dim tensor in the state, like ``step``).

A rule never touches parameters, param groups or ``optimizer.state``: the engine
(:mod:`momenta.engine`) owns mutation, steps, weight decay, maximize, complex numbers,
epsilon and state_dicts. Hyperparameters are dataclass fields; the engine rebuilds the rules
from the param group at every step, so schedulers that edit a group take effect at once.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

State = Mapping[str, Any]
"""A rule's named buffers (tensors) and this step's scalar values (numbers, or 0-dim tensors
in kernels), as the engine hands them in (read-only for the rule)."""

#: the key under which a rule's ``state`` holds √c₂ of the step (:meth:`SecondMoment.denominator`)
ROOT_C2 = "√c₂"

Updates = dict[str, Tensor]
"""New values for a rule's buffers; the engine writes them into ``optimizer.state``."""

Scalar = float | Tensor
"""A per-step number: a Python float, or a 0-dim tensor (tensor hyperparameters, kernels)."""

Norm = Callable[[Tensor], Tensor]
"""A whole parameter's ``‖·‖₂``; on flat buffers, each element's own parameter's (what a
segmented rule receives as ``norm``)."""

Eps = Literal["outside", "inside", "uncorrected"]
"""Where ε goes: ``√V̂ + ε`` (outside), ``√(V̂ + ε)`` (inside), ``(√V + ε)/√c₂`` (uncorrected:
added before the bias correction, as torch's RAdam and SparseAdam do)."""


# -- arithmetic that reads the same on Python numbers and on tensors --------------------------
# Rules run on the reference path with Python-number hyperparameters and step counts, and in
# compiled kernels with 0-dim tensors for both; these keep one formula for the two.


def where(condition: bool | Tensor, a: Any, b: Any) -> Any:
    """``a`` where ``condition`` holds, else ``b`` (elementwise for tensors)."""
    if isinstance(condition, Tensor):
        return torch.where(condition, a, b)
    return a if condition else b


def sqrt(x: Scalar) -> Scalar:
    """``√x`` of a number or a tensor (``x ** 0.5`` for numbers: torch's bias corrections)."""
    return x.sqrt() if isinstance(x, Tensor) else x**0.5


def log(x: Scalar) -> Scalar:
    """``ln x`` of a number or a tensor."""
    return x.log() if isinstance(x, Tensor) else math.log(x)


def exp(x: Scalar) -> Scalar:
    """``eˣ`` of a number or a tensor."""
    return x.exp() if isinstance(x, Tensor) else math.exp(x)


def minimum(a: Scalar, b: Scalar) -> Scalar:
    """The smaller of two numbers or tensors."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return torch.minimum(torch.as_tensor(a), torch.as_tensor(b))
    return min(a, b)


def maximum(a: Scalar, b: Scalar) -> Scalar:
    """The larger of two numbers or tensors."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return torch.maximum(torch.as_tensor(a), torch.as_tensor(b))
    return max(a, b)


class Segments:
    """Parameters laid end to end in one flat buffer (the fast path): consecutive runs of
    ``lengths`` elements, each a parameter or an alignment gap between two (a gap is a
    segment of its own, so that whatever it holds never reaches a parameter's norm)."""

    def __init__(self, lengths: list[int], device: torch.device) -> None:
        self.lengths = torch.tensor(lengths, dtype=torch.int64, device=device)
        self.total = sum(lengths)

    def norm(self, x: Tensor) -> Tensor:
        """Every element's own parameter's ``‖·‖₂``, as a flat tensor like ``x``."""
        sums = torch.segment_reduce(x * x, "sum", lengths=self.lengths)
        return sums.sqrt().repeat_interleave(self.lengths, output_size=self.total)


def norm(x: Tensor) -> Tensor:
    """``‖x‖₂`` of a whole parameter, a 0-dim tensor. Segmented rules take the norm as an
    argument instead (``norm=``), so that on flat buffers the engine can hand them
    :meth:`Segments.norm`: each element's own parameter's norm."""
    return torch.linalg.vector_norm(x)


def rms(x: Tensor) -> Tensor:
    """The root mean square ``‖x‖ / √n`` of a whole tensor (0 for an empty one)."""
    return torch.linalg.vector_norm(x) / max(x.numel(), 1) ** 0.5


def ema_correction(beta: Scalar, t: Scalar, corrected: bool = True) -> Scalar:
    """``c(t) = 1 − βᵗ``, the bias correction of an average ``β·m + (1−β)·x`` started at 0:
    after ``t`` steps its weights sum to ``1 − βᵗ``, so ``m / c(t)`` is unbiased. 1 when
    not ``corrected``."""
    return 1 - beta**t if corrected else 1.0


def zeros(p: Tensor) -> Tensor:
    """A new buffer of zeros shaped like ``p``, in its memory layout (a channels_last
    parameter keeps channels_last buffers)."""
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def full(p: Tensor, value: Scalar) -> Tensor:
    """A new buffer like ``p`` (its layout kept) with every element ``value``."""
    value = value.item() if isinstance(value, Tensor) else value
    return torch.full_like(p, value, memory_format=torch.preserve_format)


def check(rule: object, name: str, low: float, high: float | None = None) -> None:
    """A rule's hyperparameter ``name`` lies in ``[low, high)`` (``[low, ∞)`` without
    ``high``). Python numbers only: tensors were checked where they came from (the param
    group), and kernels rebuild rules with tensor fields, where a check would be a host sync.

    A rule's own invariant, for a :class:`~momenta.Rules` value composed directly
    (:class:`momenta.Composed` names the group key of a refused value). The built-in
    optimizers check their groups' values first, in their tables
    (:mod:`momenta.engine.validation`), with their own messages."""
    value = getattr(rule, name)
    if isinstance(value, Tensor):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{type(rule).__name__}: invalid {name}: {value!r} (expected a number)")
    if not (low <= value and (high is None or value < high)):
        bound = f"{low} <= {name} < {high}" if high is not None else f"{name} >= {low}"
        raise ValueError(f"{type(rule).__name__}: invalid {name}: {value} (expected {bound})")


class Rule(ABC):
    """What first- and second-moment rules share."""

    #: The rule is a function of the step count ``t`` (bias correction, lr decay).
    needs_step: bool = False

    #: Every output element depends only on the same element of its inputs, so the engine
    #: may run the rule over flat buffers holding many parameters (its fast path).
    elementwise: bool = True

    #: Not elementwise, but only through whole-parameter norms, which it takes from its
    #: ``norm`` argument (a :class:`Direction`'s ``apply(..., norm=...)``): the fast path
    #: can still run it over flat buffers (eagerly, with per-parameter segments).
    segmented: bool = False

    def init(self, p: Tensor) -> Updates:
        """The rule's buffers for parameter ``p`` before its first step (default: none)."""
        return {}

    def initial_buffers(self) -> tuple[str, ...]:
        """The buffers :meth:`init` creates (asked of an empty tensor on the meta device)."""
        return tuple(self.init(torch.empty(0, device="meta")))

    def buffers(self) -> tuple[str, ...]:
        """Every buffer this rule's state may hold: those :meth:`init` creates, and those a
        rule creates at its first update (override then). ``load_state_dict`` checks against it."""
        return self.initial_buffers()

    def nonnegative(self) -> tuple[str, ...]:
        """The buffers that never hold a negative value (``V``-like: sums, averages and
        maxima of squares). A low-precision state (``state_precision``) codes them without a
        sign bit, and reads a positive value back as positive, never as 0 (a ``V`` read as 0
        would make the step ``m/ε``). Default: none; every second-moment rule's buffers."""
        return ()

    def exact(self) -> tuple[str, ...]:
        """The buffers that stay at the parameter's precision whatever ``state_precision``
        says: those whose coding error would compound (Rprop's step sizes, which are
        multiplied step after step) or that hold weights (an average of the iterates,
        schedule-free's ``z``). Default: none; every iterate rule's buffers."""
        return ()

    def scalars(self) -> dict[str, float]:
        """Per-parameter scalar state and its initial values (default: none). The engine
        keeps each as a 0-dim tensor in ``optimizer.state`` (torch's dtype and device for
        ``step``), right after ``step``, and moves it with :meth:`advance`."""
        return {}

    def advance(self, scalars: Mapping[str, Tensor], t: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Once per step, on the host, before the tensor math: ``(new scalar state, values)``.

        ``scalars`` are the 0-dim tensors of the state (compute on them to keep torch's
        dtype); the new state is written back into them; ``values`` (Python numbers) reach
        :meth:`update` in its ``state`` argument, by name. A rule without scalar state may
        still give values: per-step numbers (a schedule of ``t``) computed once on the host
        instead of inside every element's arithmetic."""
        return {}, {}

    def correction(self, t: float) -> Scalar:
        """The bias correction ``c(t)`` that divides this rule's moment (default 1)."""
        return 1.0

    def decay(self, t: float) -> Scalar:
        """The divisor ``d(t)`` of the learning rate at step ``t`` (default 1)."""
        return 1.0

    @property
    @abstractmethod
    def formula(self) -> str:
        """The rule in one line of math, as the README's table writes it."""


class FirstMoment(Rule):
    """``m_t``: a rule over the gradients."""

    @abstractmethod
    def update(self, state: State, g: Tensor, t: float) -> tuple[Tensor, Updates]:
        """Return ``(m, new_buffers)`` for gradient ``g`` at step ``t`` (1-based)."""

    def moment(self) -> str | None:
        """The buffer that holds ``m`` (``m̂ = m / c(t)``, :meth:`correction` of the rule
        that keeps it), or ``None`` where no buffer does (``m`` made afresh each step from
        other state). Read by :func:`momenta.inspect`. Default: the buffer the rule's
        ``name`` field names, if it keeps one."""
        return _named(self)


class SecondMoment(Rule):
    """``V_t``: a rule over the squared gradients."""

    def nonnegative(self) -> tuple[str, ...]:
        """Every buffer: sums, averages and maxima of squares are never negative."""
        return self.buffers()

    @abstractmethod
    def update(
        self, state: State, g: Tensor, m: Tensor | None, t: float
    ) -> tuple[Tensor | None, Updates]:
        """Return ``(V, new_buffers)``; ``V = None`` means ``V = 1`` (no division).

        ``m`` is the first moment of this step when the first-moment rule runs first
        (``precondition="moment"``), else ``None``.
        """

    def moment(self) -> str | None:
        """The buffer that holds ``V`` coordinate by coordinate, as :meth:`denominator`
        takes it (``V̂ = V / c(t)``): the outermost such buffer (AMSGrad's running maximum,
        not its inner average), or ``None`` where none does (``V = 1``, a factored ``V``,
        ``V`` made from two buffers). Read by :func:`momenta.inspect`. Default: the buffer
        the rule's ``name`` field names, if it keeps one."""
        return _named(self)

    def root(self, where_eps: Eps) -> str:
        """The denominator as a formula (for :meth:`Rules.formulas`)."""
        return {"inside": "√(V̂ + ε)", "outside": "(√V̂ + ε)", "uncorrected": "(√V + ε)/√c₂"}[where_eps]

    def denominator(self, v: Tensor, c2: Scalar, eps: Scalar, where_eps: Eps, t: float, state: State) -> Tensor:
        """What divides ``m``: ``√V̂ + ε`` with ``V̂ = V / c₂`` and ε placed as ``where_eps``
        says. A rule whose ``V`` is already a root (Adamax's ``u``), or that rectifies it
        (RAdam), says so here. ``state`` is what :meth:`update` sees: the buffers and this
        step's values from :meth:`advance` (RAdam's ``r_t``), and ``state[ROOT_C2]``, √c₂ as
        the engine computed it once for the step (on the host, as torch does; a compiled
        kernel would otherwise take the root in every vector iteration)."""
        if where_eps == "inside":
            return ((v / c2 if _corrected(c2) else v) + eps).sqrt()
        root = state.get(ROOT_C2)
        if root is None:
            root = sqrt(c2)
        if where_eps == "uncorrected":
            denom = v.sqrt() + eps
            return denom / root if _corrected(c2) else denom
        if _corrected(c2):
            # √V / √c₂ rather than √(V / c₂): torch's order, so results agree to the last bit
            return v.sqrt() / root + eps
        return v.sqrt() + eps


def _corrected(c: Scalar) -> bool:
    return isinstance(c, Tensor) or c != 1


def _named(rule: Rule) -> str | None:
    """The buffer ``rule.name`` names, if the rule keeps it (its default :meth:`moment`)."""
    name = getattr(rule, "name", None)
    return name if isinstance(name, str) and name in rule.buffers() else None


class Direction(Rule):
    """What the step direction ``d = m̂ / (√V̂ + ε)`` becomes before it moves the weights.

    Runs after the division (with ``precondition="gradient"``, on ``g / (√V̂ + ε)`` before
    the first moment), sees the parameter ``w`` (for trust ratios), and may keep buffers.
    The default, :class:`~momenta.rules.direction.Identity`, leaves ``d`` as it is.
    """

    @abstractmethod
    def apply(self, state: State, d: Tensor, w: Tensor, t: float) -> tuple[Tensor, Updates]:
        """Return ``(new direction, new buffers)``."""


class Iterate(Rule):
    """How the direction ``d`` moves the weights: ``w ← w·(1 − lr·λ) − lr·d`` by default.

    Decoupled weight decay is the iterate's (``shrink = 1 − lr·λ``, or ``None`` without
    decay), since it is part of how the weights move; so is the step size (``step_size`` is
    ``lr / (c₁·d(t))``, ``lr`` the group's).
    """

    #: decoupled weight decay, as a formula (for :meth:`Rules.formulas`)
    decay_formula = "w ← w·(1 − lr·λ)"

    def exact(self) -> tuple[str, ...]:
        """Every buffer: an iterate's buffers hold weights (an average, ``z``)."""
        return self.buffers()

    @abstractmethod
    def apply(
        self, state: State, w: Tensor, d: Tensor, step_size: Scalar, lr: Scalar, shrink: Scalar | None, t: float
    ) -> tuple[Move, Updates]:
        """Return ``(move, new buffers)``; the new weights are ``base + scale·direction``
        for ``move = (base, scale, direction)`` (the engine adds in place, in torch's
        order of rounding; ``base`` is ``w`` itself when only the step moves it)."""


Move = tuple[Tensor, Scalar, Tensor]
"""New weights as ``(base, scale, direction)``: ``w ← base + scale·direction``."""


@dataclass(frozen=True)
class Wrapping(Rule):
    """A rule that changes one thing about another (``inner``) and passes the rest on: its
    buffers, scalar state, step count, correction and decay. A first- or second-moment
    wrapper joins this with its kind (``class _Wrapping(Wrapping, FirstMoment)``), which
    passes on ``update`` (and for a second moment, its root)."""

    inner: Rule

    @property
    def needs_step(self) -> bool:  # type: ignore[override]
        return self.inner.needs_step

    @property
    def elementwise(self) -> bool:  # type: ignore[override]
        return self.inner.elementwise

    def init(self, p: Tensor) -> Updates:
        return self.inner.init(p)

    def buffers(self) -> tuple[str, ...]:
        return self.inner.buffers()

    def nonnegative(self) -> tuple[str, ...]:
        return self.inner.nonnegative()

    def exact(self) -> tuple[str, ...]:
        return self.inner.exact()

    def moment(self) -> str | None:
        """The inner rule's moment buffer (:meth:`FirstMoment.moment`,
        :meth:`SecondMoment.moment`): a wrapper keeps the inner rule's buffers."""
        inner = self.inner
        return inner.moment() if isinstance(inner, (FirstMoment, SecondMoment)) else None

    def scalars(self) -> dict[str, float]:
        return self.inner.scalars()

    def advance(self, scalars: Mapping[str, Tensor], t: float) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.inner.advance(scalars, t)

    def correction(self, t: float) -> Scalar:
        return self.inner.correction(t)

    def decay(self, t: float) -> Scalar:
        return self.inner.decay(t)
