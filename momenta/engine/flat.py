"""The fast path: the parameters of a (param group, device, dtype) in one flat buffer.

A :class:`Bucket` re-points each parameter's ``.data`` at a region of one contiguous buffer,
keeps gradients and every state buffer the same way, and so runs a whole step as one pass
over memory (:func:`reference.update` on the flat tensors, compiled or eager). Regions keep
each parameter's strides (channels_last stays channels_last), so ``optimizer.state`` holds
ordinary per-parameter tensors: views into the flat buffers, which state_dicts save as usual.

torch's semantics are kept by checking, before every step, that nothing moved underneath:

* a parameter whose storage changed (``model.to(...)``, ``p.data = ...``) or a parameter
  list that changed rebuilds the group's buckets from the parameters' current values;
* a state replaced (``load_state_dict``, ``opt.state[p] = ...``, a buffer assigned anew) is
  copied into the flat buffers again;
* a gradient that is not the bucket's own view (``zero_grad(set_to_none=True)`` lets
  autograd allocate a new one) is copied in, and ``p.grad`` is pointed at the bucket's view
  so that the next backward accumulates there in place;
* a step where some of a bucket's parameters have no gradient, or where their step counts
  differ, runs the reference path on the same views (torch's skipping, the same numbers).

What cannot be flattened takes the reference path: DTensor and other tensor subclasses,
parameters that are views into someone else's buffer (DDP's, ZeroRedundancyOptimizer's),
sparse gradients, layouts that are not dense, rules that are not elementwise.

The checks are C-level ``map`` comparisons (identity, ``data_ptr``), so that a step over
thousands of small tensors costs one kernel plus microseconds of bookkeeping.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, MutableMapping
from operator import attrgetter, is_, itemgetter
from typing import Any

import torch
from torch import Tensor

from ..rules import base
from . import kernels, reference
from .composition import Rules

STEP = "step"
_grad = attrgetter("grad")
#: In a per-tensor step, parameters this large get a kernel call of their own on the
#: gradient autograd allocated; smaller ones are copied into the flat buffer and share calls.
DIRECT_MIN_NUMEL = 4096


class TrackedState(defaultdict):  # type: ignore[type-arg]
    """``optimizer.state`` with a version that changes whenever an entry is set or removed,
    so the fast path knows in O(1) that its cached per-parameter states are still current.
    (Per-parameter states stay plain dicts: state_dicts hold them and must load with
    ``torch.load(weights_only=True)``.)"""

    version = 0

    def __setitem__(self, key: Any, value: Any) -> None:
        self.version += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        self.version += 1
        super().__delitem__(key)

    def _bump(name: str) -> Callable[..., Any]:  # type: ignore[misc]
        def method(self: TrackedState, *args: Any, **kwargs: Any) -> Any:
            self.version += 1
            return getattr(super(TrackedState, self), name)(*args, **kwargs)

        return method

    clear = _bump("clear")
    pop = _bump("pop")
    popitem = _bump("popitem")
    update = _bump("update")
    setdefault = _bump("setdefault")
    del _bump

    def __reduce__(self) -> Any:  # pickles (and deep-copies) as torch's defaultdict(dict)
        return (defaultdict, (dict,), None, None, iter(self.items()))


def flattenable(p: Tensor) -> bool:
    """A plain dense tensor the fast path can hold in a region of a flat buffer."""
    return (
        type(p) in (Tensor, torch.nn.Parameter)
        and p.layout == torch.strided
        and p.device.type != "meta"
        and (p.is_contiguous() or p.is_contiguous(memory_format=torch.channels_last)
             or p.is_contiguous(memory_format=torch.channels_last_3d))
    )  # fmt: skip


def _storage_users(t: Tensor) -> int | None:
    """How many tensors hold ``t``'s storage (``None`` where torch cannot tell)."""
    try:
        # the Python storage object made here holds one reference itself
        return torch._C._storage_Use_Count(t.untyped_storage()._cdata) - 1
    except (AttributeError, RuntimeError):  # pragma: no cover - other torch builds
        return None


def owns_storage(p: Tensor) -> bool:
    """``p`` is its storage's only tenant: not a view into someone else's buffer (DDP's or
    ZeroRedundancyOptimizer's buckets, even one that holds this parameter alone), and no
    other tensor shares it. Re-pointing ``p.data`` at a flat buffer is safe only then: any
    other holder would go on seeing the old values."""
    return (
        p.storage_offset() == 0
        and p.untyped_storage().nbytes() == p.numel() * p.element_size()
        and _storage_users(p) in (1, None)
    )


def _region(flat: Tensor, p: Tensor, offset: int) -> Tensor:
    return flat.as_strided(p.shape, p.stride(), flat.storage_offset() + offset)


class Bucket:
    """Parameters of one dtype and device, their gradients and their state, each flat."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params
        self.dtype, self.device = params[0].dtype, params[0].device
        # regions start on 64-byte boundaries (aligned inputs for vectorised kernels when a
        # kernel runs on one region); the gaps hold zeros everywhere and are never read back
        align = max(1, 64 // params[0].element_size())
        self.offsets: list[int] = []
        total = 0
        for p in params:
            total = -(-total // align) * align
            self.offsets.append(total)
            total += p.numel()
        self.align = align
        self.numel = total = -(-total // align) * align
        self.data = torch.zeros(total, dtype=self.dtype, device=self.device)
        for p, offset in zip(params, self.offsets):
            view = _region(self.data, p, offset)
            view.copy_(p.detach())
            p.data = view
        self.ptrs = [p.data_ptr() for p in params]
        self.storage = self.data.untyped_storage().data_ptr()
        self.grad = torch.zeros_like(self.data)
        self.grad_views = [_region(self.grad, p, o) for p, o in zip(params, self.offsets)]
        self.state: dict[str, Tensor] = {}  # flat buffers by name (scalar state: one entry a parameter)
        self.scalar_keys: tuple[str, ...] = ()  # step and the rules' scalar state
        self.views: dict[str, list[Tensor]] = {}  # the per-parameter views we handed out
        self.dicts: list[MutableMapping[str, Any]] = []  # optimizer.state[p] of our params
        self.seen: tuple[Any, int] = (None, -1)  # (optimizer.state, its version) at that time
        self.complete = False  # the last flat step created no buffer: the kernel's inputs are known
        self.t = float("nan")  # the step about to be taken (set by steps_agree)
        self.direct: list[Tensor | None] | None = None  # gradients used where they are, this step

    def holds(self) -> bool:
        """Our parameters are still in our storage (``model.to``, ``p.data = …`` move them)."""
        return list(map(Tensor.data_ptr, self.params)) == self.ptrs

    # -- state ------------------------------------------------------------------------------

    def _states_current(self, state: TrackedState) -> bool:
        seen_state, seen_version = self.seen
        if seen_state is not state or seen_version != state.version:
            return False
        dicts = self.dicts
        if list(map(len, dicts)) != [len(self.views)] * len(dicts):
            return False
        return all(all(map(is_, map(itemgetter(k), dicts), views)) for k, views in self.views.items())

    def adopt(
        self, state: TrackedState, new_state: Callable[[Tensor], dict[str, Any]], scalar_keys: tuple[str, ...] = (STEP,)
    ) -> bool:
        """Make the flat buffers hold the parameters' states (copying them in, creating the
        missing ones); ``False`` if they do not fit one layout (different keys, shapes or
        dtypes), and the reference path runs instead. ``scalar_keys`` name the
        per-parameter scalar state (``step`` …), kept as one entry a parameter."""
        if self._states_current(state) and self.scalar_keys == scalar_keys:
            return True
        self.scalar_keys = scalar_keys
        dicts = []
        for p in self.params:
            d = state.get(p)
            if not d:
                d = new_state(p)
                if d:
                    state[p] = d
            dicts.append(d)
        keys = list(dicts[0])
        if any(d.keys() != dicts[0].keys() for d in dicts):  # same keys, in any order
            return False
        flat: dict[str, Tensor] = {}
        for key in keys:
            tensors = [d[key] for d in dicts]
            if key in scalar_keys:
                if any(not torch.is_tensor(t) or t.dim() != 0 for t in tensors):
                    return False
                flat[key] = torch.stack([t.detach() for t in tensors])
            elif any(
                type(t) is not Tensor or t.shape != p.shape or t.dtype != self.dtype
                or t.device != self.device or t.stride() != p.stride()
                for t, p in zip(tensors, self.params)
            ):  # fmt: skip
                return False
            else:
                flat[key] = torch.zeros_like(self.data)
                for t, p, o in zip(tensors, self.params, self.offsets):
                    _region(flat[key], p, o).copy_(t)
        self.state, self.complete, self.dicts = flat, False, dicts
        self.views = {}
        for key in keys:
            self._hand_out(key)
        self.seen = (state, state.version)
        return True

    def _hand_out(self, key: str) -> None:
        """Point every parameter's ``state[key]`` at its region of the flat buffer."""
        flat = self.state[key]
        if key in self.scalar_keys:
            views = [flat[i] for i in range(len(self.params))]
        else:
            views = [_region(flat, p, o) for p, o in zip(self.params, self.offsets)]
        for d, view in zip(self.dicts, views):
            d[key] = view
        self.views[key] = views

    def steps_agree(self) -> bool:
        """Every parameter is at the same step, with the same scalar state (or none is
        kept); remembers that step for :meth:`step` (one host read per scalar, which the
        bias corrections need anyway)."""
        self.t = float("nan")
        for key in self.scalar_keys:
            values = self.state[key].tolist()
            if key == STEP:
                self.t = values[0] + 1
            if min(values) != max(values):
                return False
        return True

    # -- gradients ----------------------------------------------------------------------------

    def gather_grads(self, per_tensor: bool = False) -> bool:
        """Bring every gradient into the flat gradient buffer (nothing to do for gradients
        that autograd accumulated into our views); ``False`` if some cannot be flat (a
        missing or sparse gradient). With ``per_tensor``, gradients that autograd allocated
        anew are left where they are (:attr:`direct`) for a kernel call per tensor."""
        self.direct = None
        grads = list(map(_grad, self.params))
        if all(map(is_, grads, self.grad_views)):
            return True
        if any(g is None or g.is_sparse or g.shape != p.shape for g, p in zip(grads, self.params)):
            return False
        if per_tensor:
            # large gradients stay where autograd put them; small ones are copied in
            direct: list[Tensor | None] = []
            for p, g, view in zip(self.params, grads, self.grad_views):
                if (
                    p.numel() >= DIRECT_MIN_NUMEL and g.dtype == self.dtype
                    and g.device == self.device and g.stride() == p.stride()
                ):  # fmt: skip
                    direct.append(g)
                else:
                    if g is not view:
                        view.copy_(g)
                    direct.append(None)
            self.direct = direct  # type: ignore[assignment]
            return True
        stale = [(view, g) for g, view in zip(grads, self.grad_views) if g is not view]
        torch._foreach_copy_([v for v, _ in stale], [g for _, g in stale])  # one call, not n
        for p, g, view in zip(self.params, grads, self.grad_views):
            if g is not view and owns_storage(g):  # a view into DDP's buckets stays there
                p.grad = view
        return True

    def compiles(self, rules: Rules) -> bool:
        """This bucket's step asks for a compiled kernel (which compilation switched off, or
        failing here, turns down with one warning)."""
        return (
            self.complete
            and rules.elementwise  # segmented rules (whole-parameter norms) run eagerly
            and self.numel >= kernels.config.compile_min_numel
            and kernels.compilable(rules)
        )

    def grads_to_check(self) -> list[Tensor]:
        """The gradients of this step, as the finiteness check should read them."""
        if self.direct is None:
            return [self.grad]
        return [g if g is not None else view for g, view in zip(self.direct, self.grad_views)]

    def _calls(self) -> list[tuple[int, int, Tensor | None]]:
        """The kernel calls of a per-tensor step: ``(start, stop, gradient)`` with the
        gradient of a large parameter used where it is, and ``None`` for a span of small
        parameters whose gradients were copied in (span ends rounded up to the alignment, so
        that no call sees 0 or 1 elements, which compiled kernels would specialise on)."""
        assert self.direct is not None
        calls: list[tuple[int, int, Tensor | None]] = []
        span: list[int] | None = None
        for p, offset, g in zip(self.params, self.offsets, self.direct):
            end = offset + p.numel()
            if g is not None:
                if span:
                    calls.append((span[0], span[1], None))
                span = None
                calls.append((offset, end, g))
            elif span is None:
                span = [offset, end]
            else:
                span[1] = end
        if span:
            calls.append((span[0], span[1], None))
        round_up = lambda n: -(-n // self.align) * self.align  # noqa: E731
        return [(a, b if g is not None else round_up(b), g) for a, b, g in calls if b > a]

    def _step_per_tensor(
        self, fn: kernels.Kernel | None, names: tuple[str, ...], rules: Rules, h: reference.Hyper, s: reference.Scalars
    ) -> None:
        """One call per large tensor and per span of small ones; a call the kernel cannot
        take (no kernel, or compilation failing midway) runs the same formula eagerly on its
        slice, so that every element moves exactly once."""
        real = reference.real
        scalar_inputs = kernels.inputs(rules, s, self.dtype, self.device) if fn is not None else None
        for start, stop, g in self._calls():
            n = stop - start
            grad = self.grad.narrow(0, start, n) if g is None else g.as_strided((n,), (1,), g.storage_offset())
            p, grad = real(self.data.narrow(0, start, n)), real(grad)
            buffers = tuple(real(self.state[k].narrow(0, start, n)) for k in names)
            if fn is not None and scalar_inputs is not None:
                if kernels.run(fn, p, grad, buffers, scalar_inputs):
                    continue
                fn = None
            state = dict(zip(names, buffers))
            updates = reference.update(p, grad, state, rules, s, maximize=h.maximize, decays=h.decays)
            for name, value in updates.items():  # complete: every buffer exists
                state[name].copy_(value)

    # -- the step -----------------------------------------------------------------------------

    def segments(self) -> base.Segments:
        """Where each parameter's elements lie (for whole-parameter norms on flat buffers)."""
        if getattr(self, "_segments", None) is None:
            ends = [*self.offsets[1:], self.numel]
            lengths = [
                n for p, o, e in zip(self.params, self.offsets, ends) for n in (p.numel(), e - o - p.numel())
            ]
            self._segments = base.Segments(lengths, self.device)
        return self._segments

    def step(self, rules: Rules, h: reference.Hyper, state: TrackedState) -> None:
        """One flat step for every parameter (gradients gathered, states adopted, steps agree)."""
        steps = self.state.get(STEP)
        if steps is not None:
            steps += 1
        # the rules' scalar state and per-step values, once for the bucket, on the host
        firsts = {k: self.state[k][0] for k in self.scalar_keys}
        values = reference.advance(rules, firsts, self.t, into=self.state)
        s = reference.Scalars.of(rules, h, self.t, values)
        names = tuple(k for k in self.state if k not in self.scalar_keys)
        real = reference.real
        p, g = real(self.data), real(self.grad)
        buffers = tuple(real(self.state[k]) for k in names)
        fn = None
        if self.compiles(rules):
            fn = kernels.kernel(rules, names, tuple(values), h.maximize, h.decays, self.dtype, self.device)
        if self.direct is not None:  # chosen only for compiling buckets: complete
            self._step_per_tensor(fn, names, rules, h, s)
            return
        if fn is not None and kernels.run(fn, p, g, buffers, kernels.inputs(rules, s, self.dtype, self.device)):
            return
        token = None if rules.elementwise else base.segments.set(self.segments())
        try:
            updates = reference.update(p, g, dict(zip(names, buffers)), rules, s, maximize=h.maximize, decays=h.decays)
        finally:
            if token is not None:
                base.segments.reset(token)
        self.complete = all(name in names for name in updates)
        for name, value in updates.items():
            if name not in self.state:  # a buffer born at its first update: flat from birth
                self.state[name] = torch.zeros_like(self.data)
                self._hand_out(name)
            real(self.state[name]).copy_(value)
        if not self.complete:  # states that were empty now hold buffers: register them
            for param, d in zip(self.params, self.dicts):
                if state.get(param) is not d:
                    state[param] = d
            self.seen = (state, state.version)


class FlatGroup:
    """The fast path of one param group: its buckets, and the parameters left out of them."""

    buckets: list[Bucket]

    def __init__(self, params: list[Tensor], previous: FlatGroup | None = None) -> None:
        self.params = list(params)
        # a parameter still in the previous buckets' storage is ours to move again
        ours = {
            id(p)
            for b in (previous.buckets if previous else [])
            for p, ptr in zip(b.params, b.ptrs)
            if p.data_ptr() == ptr
        }
        by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for p in self.params:
            if p.grad is not None and flattenable(p) and (id(p) in ours or owns_storage(p)):
                by_kind.setdefault((p.device, p.dtype), []).append(p)
        self.buckets = [Bucket(ps) for ps in by_kind.values()]
        bucketed = {id(p) for b in self.buckets for p in b.params}
        self.others = [p for p in self.params if id(p) not in bucketed]

    def current(self, params: list[Tensor]) -> bool:
        """Same parameters, in place, and none left out that could now join a bucket."""
        return (
            len(params) == len(self.params)
            and all(map(is_, params, self.params))
            and all(b.holds() for b in self.buckets)
            and not any(p.grad is not None and flattenable(p) and owns_storage(p) for p in self.others)
        )

    def gather(self, rules: Rules) -> tuple[list[Bucket], list[Tensor]]:
        """Bring gradients into the flat buffers. Returns the buckets ready for a flat step
        and the parameters left to the reference path (those with a gradient that no ready
        bucket holds). Nothing of the parameters or the state has changed yet."""
        ready, rest = [], [p for p in self.others if p.grad is not None]
        for b in self.buckets:
            per_tensor = (
                kernels.config.compile
                and b.compiles(rules)
                and b.numel >= kernels.config.per_tensor_min_numel * len(b.params)
            )
            if b.gather_grads(per_tensor):
                ready.append(b)
            else:
                rest += [p for p in b.params if p.grad is not None]
        return ready, rest

    @staticmethod
    def step(
        ready: list[Bucket],
        rules: Rules,
        h: reference.Hyper,
        state: TrackedState,
        new_state: Callable[[Tensor], dict[str, Any]],
    ) -> list[Tensor]:
        """Step every ready bucket; return the parameters of those that could not take a flat
        step after all (states of another layout, unequal step counts)."""
        rest: list[Tensor] = []
        scalar_keys = rules.scalar_names()
        for b in ready:
            # whole-parameter norms over a complex bucket's real view are not per parameter
            takes = rules.elementwise or not b.dtype.is_complex
            if takes and b.adopt(state, new_state, scalar_keys) and b.steps_agree():
                b.step(rules, h, state)
            else:
                rest += b.params
        return rest
