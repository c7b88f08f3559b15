"""The fast path: the parameters of a (param group, device, dtype) in one flat buffer.

A :class:`Bucket` re-points each parameter's ``.data`` at a region of one contiguous buffer,
keeps gradients and every state buffer the same way, and so runs a whole step as one pass
over memory (:func:`reference.update` on the flat tensors, compiled or eager). Regions keep
each parameter's strides (channels_last stays channels_last), so ``optimizer.state`` holds
ordinary per-parameter tensors: views into the flat buffers, which state_dicts save as usual.

torch's semantics are kept by checking, before every step, that nothing moved underneath:

* a parameter whose storage changed (``model.to(...)``, ``p.data = ...``, ZeroRedundancy
  re-pointing its buckets) is copied back into the buffer, or leaves the bucket;
* a state replaced (``load_state_dict``, ``opt.state[p] = ...``) is copied in again;
* a gradient that is not the bucket's own view (``zero_grad(set_to_none=True)`` lets
  autograd allocate a new one) is copied in, and ``p.grad`` is pointed at the bucket's view
  so that the next backward accumulates there in place;
* a step where some parameters have no gradient, or where their step counts differ, runs
  the reference path on the same views (same numbers, no flat pass).

What cannot be flattened takes the reference path: DTensor and other tensor subclasses,
parameters that are views of someone else's buffer, sparse gradients, layouts that are not
dense, rules that are not elementwise.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import torch
from torch import Tensor

from . import kernels, reference
from .composition import Rules

STEP = "step"


def flattenable(p: Tensor) -> bool:
    """A plain dense tensor that owns its storage (or already lives in one of our buckets)."""
    return (
        type(p) in (Tensor, torch.nn.Parameter)
        and p.layout == torch.strided
        and p.device.type != "meta"
        and (p.is_contiguous() or p.is_contiguous(memory_format=torch.channels_last)
             or p.is_contiguous(memory_format=torch.channels_last_3d))
    )  # fmt: skip


def owns_storage(p: Tensor) -> bool:
    """``p`` is its storage's only tenant: not a view into someone else's buffer (DDP's or
    ZeroRedundancyOptimizer's buckets), which the engine must not take over."""
    return p.storage_offset() == 0 and p.untyped_storage().nbytes() == p.numel() * p.element_size()


def _region(flat: Tensor, p: Tensor, offset: int) -> Tensor:
    return flat.as_strided(p.shape, p.stride(), flat.storage_offset() + offset)


class Bucket:
    """Parameters of one dtype and device, their gradients and their state, each flat."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params
        self.dtype, self.device = params[0].dtype, params[0].device
        self.offsets: list[int] = []
        total = 0
        for p in params:
            self.offsets.append(total)
            total += p.numel()
        self.numel = total
        self.data = torch.empty(total, dtype=self.dtype, device=self.device)
        self.views = [_region(self.data, p, o) for p, o in zip(params, self.offsets)]
        for p, view in zip(params, self.views):
            view.copy_(p.detach())
            p.data = view
        self.ptrs = [p.data_ptr() for p in params]
        self.storage = self.data.untyped_storage().data_ptr()
        self.grad = torch.zeros_like(self.data)
        self.grad_views = [_region(self.grad, p, o) for p, o in zip(params, self.offsets)]
        self.state: dict[str, Tensor] = {}  # flat buffers by name (STEP: one entry a parameter)
        self.state_seen: list[tuple[Any, tuple[Tensor, ...]]] = []  # what optimizer.state held
        self.complete = False  # the last flat step created no buffer: the kernel's inputs are known

    # -- checks ---------------------------------------------------------------------------

    def holds(self, params: list[Tensor]) -> bool:
        """These are still our parameters, in our storage."""
        return (
            len(params) == len(self.params)
            and all(a is b for a, b in zip(params, self.params))
            and all(p.data_ptr() == ptr for p, ptr in zip(params, self.ptrs))
            and all(p.dtype == self.dtype for p in params)
        )

    def _state_is_ours(self, states: list[MutableMapping[str, Any]]) -> bool:
        if len(self.state_seen) != len(states):
            return False
        for state, (seen_dict, seen_tensors) in zip(states, self.state_seen):
            if state is not seen_dict or len(state) != len(seen_tensors):
                return False
            if not all(a is b for a, b in zip(state.values(), seen_tensors)):
                return False
        return True

    def adopt_state(self, states: list[MutableMapping[str, Any]]) -> bool:
        """Make the flat buffers hold these states (copying them in); ``False`` if they do
        not fit one layout (different keys, shapes or dtypes: the reference path runs)."""
        if self._state_is_ours(states):
            return True
        keys = list(states[0])
        if any(list(s) != keys for s in states):
            return False
        flat: dict[str, Tensor] = {}
        for key in keys:
            tensors = [s[key] for s in states]
            if key == STEP:
                if any(not torch.is_tensor(t) or t.dim() != 0 for t in tensors):
                    return False
                flat[key] = torch.stack([t.detach() for t in tensors]).to(tensors[0].device)
                continue
            if any(
                type(t) is not Tensor or t.shape != p.shape or t.dtype != self.dtype
                or t.device != self.device or t.stride() != p.stride()
                for t, p in zip(tensors, self.params)
            ):  # fmt: skip
                return False
            buffer = torch.empty_like(self.data)
            for t, p, o in zip(tensors, self.params, self.offsets):
                _region(buffer, p, o).copy_(t)
            flat[key] = buffer
        self.state, self.complete = flat, False
        for i, state in enumerate(states):
            for key in keys:
                state[key] = flat[key][i] if key == STEP else _region(flat[key], self.params[i], self.offsets[i])
        self.state_seen = [(s, tuple(s.values())) for s in states]
        return True

    # -- the step -------------------------------------------------------------------------

    def gather_grads(self) -> None:
        """Bring every gradient into the flat gradient buffer (a no-op for our own views)."""
        for p, view in zip(self.params, self.grad_views):
            g = p.grad
            if g is view:
                continue
            assert g is not None
            view.copy_(g)
            if not g._is_view():  # a foreign view (DDP's buckets) stays where it is
                p.grad = view

    def steps_agree(self) -> bool:
        """Every parameter is at the same step (or steps are not counted)."""
        steps = self.state.get(STEP)
        return steps is None or bool(steps.min() == steps.max())

    def step(self, rules: Rules, h: reference.Hyper, states: list[MutableMapping[str, Any]]) -> None:
        """One flat step for every parameter (all have gradients, states adopted, steps agree)."""
        t = float("nan")
        steps = self.state.get(STEP)
        if steps is not None:
            steps += 1
            t = float(steps[0])
        s = reference.Scalars.of(rules, h, t)
        names = tuple(k for k in self.state if k != STEP)
        real = reference.real
        p, g = real(self.data), real(self.grad)
        buffers = tuple(real(self.state[k]) for k in names)
        if self.complete and self.numel >= kernels.config.compile_min_numel and kernels.compilable(rules):
            fn = kernels.kernel(rules, names, h.maximize, h.decays, self.dtype, self.device)
            if fn is not None and kernels.run(fn, rules, p, g, buffers, s):
                return
        updates = reference.update(p, g, dict(zip(names, buffers)), rules, s, maximize=h.maximize, decays=h.decays)
        self.complete = all(name in names for name in updates)
        for name, value in updates.items():
            if name not in self.state:  # a buffer born at its first update: flat from birth
                self.state[name] = torch.empty_like(self.data)
                for state, param, offset in zip(states, self.params, self.offsets):
                    state[name] = _region(self.state[name], param, offset)
            real(self.state[name]).copy_(value)
        if not self.complete:
            self.state_seen = [(st, tuple(st.values())) for st in states]
