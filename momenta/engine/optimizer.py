"""The optimizer base: a ``torch.optim.Optimizer`` whose step is a pair of moment rules.

What a subclass implements:

* ``__init__``: validate its hyperparameters and pass them to ``super().__init__`` as the
  param-group defaults (schedulers edit param groups, so hyperparameters live there);
* :meth:`Optimizer.rules`: the :class:`Rules` of one param group, built from its values.

What the engine owns: param groups, the closure, steps, lazy state, weight decay, maximize,
complex parameters (their real view), epsilon, ``state_dict``/``load_state_dict`` (torch's
own, inherited), ``zero_grad``, hooks.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any, overload

import torch
from torch import Tensor

from . import flat, kernels, reference
from .composition import Rules

ParamsT = Any  # what torch.optim accepts: tensors, named tensors or param-group dicts


def _fused_devices() -> list[str]:
    try:  # the list torch quotes in its error message
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # pragma: no cover - older torch
        return ["cuda", "cpu"]
    return _get_fused_kernels_supported_devices()


def _scalar_dtype(fused: bool | None = None) -> torch.dtype:
    """torch's dtype for ``step``: float32 when fused, else float64 under a float64 default."""
    if fused:
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class Optimizer(torch.optim.Optimizer, metaclass=abc.ABCMeta):
    """``w ← w − lr · m̂ / (√V̂ + ε)``, with ``m`` and ``V`` given by :meth:`rules`.

    Args:
        params: parameters, named parameters, or param-group dicts, as for torch.optim.
        defaults: the default hyperparameters of every param group (``lr`` at least;
            ``eps``, ``weight_decay``, ``maximize`` are read by the engine when present).

    A new optimizer is a subclass with an ``__init__`` and a :meth:`rules` method; see
    README's "Your own optimizer" for a complete one in ten lines.
    """

    #: The error raised for a sparse gradient; ``None`` if sparse gradients are accepted
    #: (they are then densified: same numbers as torch, not its memory savings).
    sparse_error: str | None = "{name} does not support sparse gradients"

    def __init__(self, params: ParamsT, defaults: Mapping[str, Any]) -> None:
        if "lr" not in defaults:
            raise TypeError(f"{type(self).__name__} needs an 'lr' in its defaults")
        super().__init__(params, dict(defaults))
        self.state = flat.TrackedState(dict, self.state)

    @abc.abstractmethod
    def rules(self, group: dict[str, Any]) -> Rules:
        """The rules of param group ``group``, built from its current hyperparameters."""

    # -- the step ------------------------------------------------------------------------

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One optimisation step; returns ``closure()`` (evaluated with grad) if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.set_grad_enabled(bool(self.defaults.get("differentiable", False))):
            for index, group in enumerate(self.param_groups):
                self._step_group(index, group)
        return loss

    def _step_group(self, index: int, group: dict[str, Any]) -> None:
        rules = self.rules(group)
        hyper = reference.Hyper.of(group)
        params = group["params"]
        if self._uses_flat(group, rules):
            params = self._flat_group(index, params).step(
                rules, hyper, self.state, lambda p: self.new_state(p, group, rules)
            )
        for p in params:
            if p.grad is None:
                continue
            grad = self._gradient(p, group)
            # .get: reading must not create an entry (torch's SGD without momentum keeps
            # no state at all, and state_dicts must agree)
            state = self.state.get(p) or self.new_state(p, group, rules)
            reference.step(p, grad, state, rules, hyper)
            if state and self.state.get(p) is not state:
                self.state[p] = state

    # -- the fast path -------------------------------------------------------------------

    def _uses_flat(self, group: dict[str, Any], rules: Rules) -> bool:
        """Flat buffers unless the for-loop is asked for (``foreach=False``), autograd must
        see the step (``differentiable``), or a rule is not elementwise."""
        return (
            kernels.config.flat
            and group.get("foreach") is not False
            and not group.get("differentiable")
            and rules.first.elementwise
            and rules.second.elementwise
        )

    def _flat_group(self, index: int, params: list[Tensor]) -> flat.FlatGroup:
        """The group's flat buffers, rebuilt when its parameters changed or moved."""
        cache: dict[int, flat.FlatGroup] = self.__dict__.setdefault("_flat_groups", {})
        group = cache.get(index)
        if group is None or not group.current(params):
            group = cache[index] = flat.FlatGroup(params)
        return group

    def _gradient(self, p: Tensor, group: dict[str, Any]) -> Tensor:
        grad = p.grad
        assert grad is not None
        if grad.is_sparse:
            if self.sparse_error is not None:
                raise RuntimeError(self.sparse_error.format(name=type(self).__name__))
            if group.get("weight_decay", 0) != 0:
                self.check_sparse_weight_decay()
            grad = grad.coalesce().to_dense()
        return grad

    def check_sparse_weight_decay(self) -> None:
        """Called for a sparse gradient in a group with weight decay (torch's SGD allows it)."""

    def new_state(
        self, p: Tensor, group: dict[str, Any], rules: Rules | None = None
    ) -> dict[str, Any]:
        """A new state for ``p``: ``step`` where counted, then the rules' buffers."""
        fused = bool(group.get("fused"))
        if fused:
            devices = _fused_devices()
            if not (p.device.type in devices and torch.is_floating_point(p)):
                raise RuntimeError(
                    "`fused=True` requires all the params to be floating point Tensors of "
                    f"supported devices: {devices} but {p.dtype} and {p.device.type}"
                )
        # Where torch keeps `step`: on the parameter's device when capturable or fused
        # (float32 when fused), else a CPU scalar, so that state_dicts are interchangeable.
        on_device = fused or bool(group.get("capturable"))
        step = torch.zeros(
            (), dtype=_scalar_dtype(fused), device=p.device if on_device else "cpu"
        )
        state: dict[str, Any] = {}
        reference.init_state(rules or self.rules(group), p, state, step)
        return state

    # -- state_dict compatibility --------------------------------------------------------

    def __setstate__(self, state: dict[str, Any]) -> None:
        defaults = dict(getattr(self, "defaults", {}))  # before torch adds its own keys
        super().__setstate__(state)
        self.state = flat.TrackedState(dict, self.state)
        for group in self.param_groups:  # groups saved by older versions lack newer keys
            for key, value in defaults.items():
                group.setdefault(key, value)
            on_device = bool(group.get("capturable")) or bool(group.get("fused"))
            for p in group["params"]:
                s = self.state.get(p, {})
                if "step" in s and not torch.is_tensor(s["step"]):  # very old checkpoints
                    s["step"] = torch.tensor(
                        float(s["step"]),
                        dtype=_scalar_dtype(group.get("fused")),
                        device=p.device if on_device else None,
                    )

    # -- description ---------------------------------------------------------------------

    def formulas(self, group: int = 0) -> dict[str, str]:
        """The m rule, the V rule and the update of param group ``group``, as formulas."""
        return self.rules(self.param_groups[group]).formulas()
