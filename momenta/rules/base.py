"""The two kinds of rule, and what a rule promises the engine.

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

A rule never touches parameters, param groups or ``optimizer.state``: the engine
(:mod:`momenta.engine`) owns mutation, steps, weight decay, maximize, complex numbers,
epsilon and state_dicts. Hyperparameters are dataclass fields; the engine rebuilds the rules
from the param group at every step, so schedulers that edit a group take effect at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
from torch import Tensor

State = Mapping[str, Tensor]
"""A rule's named buffers, as the engine hands them in (read-only for the rule)."""

Updates = dict[str, Tensor]
"""New values for a rule's buffers; the engine writes them into ``optimizer.state``."""

Scalar = float | Tensor
"""A per-step number: a Python float, or a 0-dim tensor (tensor hyperparameters, kernels)."""


def check(rule: object, name: str, low: float, high: float | None = None) -> None:
    """A rule's hyperparameter ``name`` lies in ``[low, high)`` (``[low, ∞)`` without
    ``high``). Python numbers only: tensors were checked where they came from (the param
    group), and kernels rebuild rules with tensor fields, where a check would be a host sync."""
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


class SecondMoment(Rule):
    """``V_t``: a rule over the squared gradients."""

    @abstractmethod
    def update(
        self, state: State, g: Tensor, m: Tensor | None, t: float
    ) -> tuple[Tensor | None, Updates]:
        """Return ``(V, new_buffers)``; ``V = None`` means ``V = 1`` (no division).

        ``m`` is the first moment of this step when the first-moment rule runs first
        (``precondition="moment"``), else ``None``.
        """
