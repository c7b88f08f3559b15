"""The optimizer step inside backward: each parameter steps as soon as its gradient is whole.

    for each parameter w, when autograd has accumulated its gradient g (during backward):
        w, state[w] ← the optimizer's step of w alone;   w.grad ← None

The ordinary loop keeps every gradient until ``optimizer.step()``; here a gradient is freed
as soon as its parameter has stepped, so at most the gradients autograd is still producing
are alive (the memory this saves is in ``benchmarks/bench_backward.py``). Each step is the
user's optimizer's own, run on a one-parameter view of its param group: the same rules,
hyperparameters (a scheduler's edits included) and ``optimizer.state`` (its dict, so
``state_dict``/``load_state_dict`` and checkpoints are torch's, unchanged). The view takes
the engine's reference path (``foreach=False``): the fast path's flat buffers would hold
every gradient at once, which is what this avoids.

Every momenta rule sees one parameter at a time (elementwise rules, LAMB's and LARS's
per-parameter norms, Adafactor's rows and columns, Muon's Newton–Schulz of one matrix), so
stepping parameters one by one gives the ordinary loop's numbers: exactly for rules the
ordinary loop also runs eagerly (tested), to the last bits where it runs them compiled
(optimizers of ≥ ``kernels.config.compile_min_numel`` elements) or as segmented norms (LAMB,
LARS). What needs the whole step is refused when attaching, with the reason:

* ``nonfinite="skip"``/``"raise"``: a step is skipped whole when any gradient is not
  finite, which cannot be known before the last gradient;
* DTensor parameters (FSDP2): rules that see whole parameters gather the shards (a
  collective), which must not run inside a backward hook; not supported;
* a subclass whose ``step`` is overridden outside momenta: it may read every parameter;
* gradient accumulation (``accumulate > 1``) and global-norm clipping (``max_grad_norm``):
  both need every gradient before any parameter steps;
* gradients already present (an accumulation in progress), and a second attachment to the
  same parameters.

Use::

    handle = step_in_backward(model, optimizer)
    for x, y in batches:
        loss = model(x, y)
        loss.backward()        # every parameter steps here; no optimizer.step()
        scheduler.step()       # as usual
    handle.remove()            # the ordinary loop again, exactly

``optimizer.step()`` and ``optimizer.zero_grad()`` may still be called (there are no
gradients left: the step changes nothing), but the step would build the fast path's flat
buffers, a gradient's worth of memory: leave it out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from torch.utils.weak import WeakIdKeyDictionary

from ..engine import Optimizer

__all__ = ["BackwardStep", "step_in_backward"]

# every parameter with a step attached (by identity), and the handle that owns it
_ATTACHED = WeakIdKeyDictionary()


def _raw_step(cls: type) -> Callable[..., Any]:
    """``cls.step`` without torch's profiling wrapper (which runs the optimizer's step hooks:
    those are for a step of the optimizer, not of one parameter)."""
    step: Any = getattr(cls, "step")
    return step.__wrapped__ if getattr(step, "hooked", False) else step  # type: ignore[no-any-return]


def _refusal(optimizer: torch.optim.Optimizer) -> str | None:
    """Why ``optimizer`` cannot step parameter by parameter, or ``None``."""
    name = type(optimizer).__name__
    if not isinstance(optimizer, Optimizer):
        return (
            f"{name} is not a momenta optimizer: momenta steps its own optimizers inside backward "
            "(for torch.optim, torch's recipe builds one optimizer a parameter)"
        )
    step = _raw_step(type(optimizer))
    if not getattr(step, "__module__", "").startswith("momenta."):
        return (
            f"{name} overrides step() ({step.__module__}.{step.__qualname__}): a step of its own may "
            "read every parameter at once, which a step of one parameter cannot honour"
        )
    if optimizer.nonfinite is not None:
        return (
            f"{name}(nonfinite={optimizer.nonfinite!r}) skips or refuses the whole step when any "
            "gradient is not finite, which is known only after the last gradient; use nonfinite=None"
        )
    return None


class _ParameterStep:
    """One parameter's step by the user's optimizer, on a one-parameter view of its group.

    The view is an object of the optimizer's class whose attributes are the optimizer's
    (copied at each step, so ``load_state_dict``'s new state and groups are seen) but for
    its param groups, ``[group with params=[w], foreach=False]``, and its own rules cache."""

    def __init__(self, optimizer: Optimizer, p: Tensor, index: int) -> None:
        self.optimizer, self.p, self.index = optimizer, p, index
        self.view: Any = object.__new__(type(optimizer))
        self.step = _raw_step(type(optimizer))
        self.cache: dict[int, Any] = {}

    def group(self) -> dict[str, Any]:
        groups = self.optimizer.param_groups
        if not (self.index < len(groups) and any(q is self.p for q in groups[self.index]["params"])):
            found = [i for i, g in enumerate(groups) if any(q is self.p for q in g["params"])]
            if not found:
                raise RuntimeError(
                    "a parameter with its step in backward is no longer in any param group of the "
                    f"{type(self.optimizer).__name__}; remove the handle before changing the groups"
                )
            self.index = found[0]
        return groups[self.index]

    def __call__(self) -> None:
        group = self.group()
        view = {k: v for k, v in group.items() if k not in ("params", "param_names")}
        view.update(params=[self.p], foreach=False)
        attributes = self.view.__dict__
        attributes.clear()
        attributes.update(self.optimizer.__dict__)
        attributes.pop("step", None)  # a scheduler's wrapper of the optimizer's bound step
        attributes.update(param_groups=[view], _rules_cache=self.cache, _flat_groups={})
        self.step(self.view)


class BackwardStep:
    """The steps attached by :func:`step_in_backward`; :meth:`remove` detaches them all.

    Attributes:
        optimizer: the optimizer whose steps run inside backward.
        names: the names of the parameters that step there.
        steps: the parameter steps taken so far.
    """

    def __init__(self, optimizer: Optimizer, params: list[tuple[str, Tensor]]) -> None:
        self.optimizer = optimizer
        self.names = [n for n, _ in params]
        self.steps = 0
        self._handles: list[RemovableHandle] = []
        self._params = [p for _, p in params]
        index = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
        for _, p in params:
            self._handles.append(p.register_post_accumulate_grad_hook(self._hook(_ParameterStep(optimizer, p, index[id(p)]))))
            _ATTACHED[p] = self

    def _hook(self, step: _ParameterStep) -> Callable[[Tensor], None]:
        optimizer = self.optimizer

        def hook(p: Tensor) -> None:
            step()
            p.grad = None
            self.steps += 1
            # torch's LR schedulers warn unless the optimizer's step ran (private, harmless)
            optimizer._opt_called = True  # type: ignore[attr-defined]

        return hook

    @property
    def attached(self) -> bool:
        """The steps still run inside backward."""
        return bool(self._handles)

    def remove(self) -> None:
        """Detach every step: backward only accumulates gradients again, the ordinary loop
        (``optimizer.step()``) steps. Removing twice does nothing."""
        for handle in self._handles:
            handle.remove()
        for p in self._params:
            if _ATTACHED.get(p) is self:
                del _ATTACHED[p]
        self._handles, self._params = [], []

    def __enter__(self) -> BackwardStep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def step_in_backward(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    accumulate: int = 1,
    max_grad_norm: float | None = None,
) -> BackwardStep:
    """Step each of ``optimizer``'s parameters inside backward, as soon as autograd has
    accumulated its gradient (``Tensor.register_post_accumulate_grad_hook``), then free the
    gradient: ``w ← step(w, g); w.grad ← None``. Returns the handle that detaches the steps
    (:meth:`BackwardStep.remove`, or use it as a context manager).

    Args:
        model: the module whose parameters the optimizer holds (for names, and to check
            that every one of the optimizer's parameters is the model's).
        optimizer: a momenta optimizer over ``model``'s parameters.
        accumulate: micro-batches a step; only 1 can be honoured (a gradient accumulated
            over several backward passes must outlive them, so nothing is freed early, and
            the step of the last one cannot wait for it).
        max_grad_norm: global-norm clipping; only ``None`` can be honoured (the norm of
            every gradient is known only after the last one, when the first parameters have
            stepped). Clip each gradient in a hook of your own instead, if per-parameter
            clipping serves.

    Raises:
        ValueError: what cannot be honoured (the messages say why): an optimizer that
            needs the whole step (see the module's docstring), ``accumulate > 1``,
            ``max_grad_norm``, a parameter of the optimizer not in ``model``, a gradient
            already present.
        RuntimeError: a parameter whose step is already attached (detach the first handle).
    """
    refusal = _refusal(optimizer)
    if refusal is not None:
        raise ValueError(f"step_in_backward: {refusal}")
    assert isinstance(optimizer, Optimizer)
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ValueError(f"step_in_backward: invalid accumulate: {accumulate!r} (expected 1)")
    if accumulate != 1:
        raise ValueError(
            f"step_in_backward: accumulate={accumulate} cannot be honoured: each backward steps every "
            "parameter it reaches, so gradients cannot be summed over micro-batches first; accumulate "
            "with the ordinary loop (optimizer.step() every accumulate backward passes)"
        )
    if max_grad_norm is not None:
        raise ValueError(
            f"step_in_backward: max_grad_norm={max_grad_norm!r} cannot be honoured: the global norm "
            "needs every gradient, and parameters step as soon as theirs is ready; clip with the "
            "ordinary loop (torch.nn.utils.clip_grad_norm_ before optimizer.step())"
        )
    names: dict[Tensor, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(p, name)
    params: list[tuple[str, Tensor]] = []
    for g_index, group in enumerate(optimizer.param_groups):
        for p_index, p in enumerate(group["params"]):
            label = f"param group {g_index}, index {p_index}, shape {tuple(p.shape)}"
            if p not in names:
                raise ValueError(f"step_in_backward: the optimizer's parameter ({label}) is not one of the model's")
            label = f"{names[p]!r} ({label})"
            if type(p).__name__ == "DTensor" or type(p.data).__name__ == "DTensor":
                raise ValueError(
                    f"step_in_backward: parameter {label} is a DTensor (FSDP2's shard): not supported "
                    "(rules that see whole parameters would gather its shards, a collective, inside "
                    "a backward hook)"
                )
            if p.grad is not None:
                raise ValueError(
                    f"step_in_backward: parameter {label} already has a gradient (an accumulation in "
                    "progress?); step or zero it (optimizer.zero_grad()) before attaching"
                )
            if p in _ATTACHED:
                raise RuntimeError(
                    f"step_in_backward: parameter {label} already steps inside backward; remove() "
                    "that handle before attaching again"
                )
            if p.requires_grad:
                params.append((names[p], p))
    return BackwardStep(optimizer, params)
