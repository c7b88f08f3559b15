"""The fast path: a param group's parameters, gradients and state in flat buffers.

The life of a step on the fast path (:meth:`Optimizer.step` calls these in this order):

1. **layout** (:class:`FlatGroup`): the group's parameters live in flat buffers, one bucket
   per (device, dtype) (:class:`~.layout.Layout`); rebuilt when something moved them
   (``model.to``, ``p.data = …``, a changed parameter list).
2. **gather** (:func:`gather`): each parameter's gradient is found, and nothing changes yet.
   A gradient autograd accumulated into its region is already in place; a large one that
   autograd allocated anew (``zero_grad()``'s default) is used where it is, by a kernel
   call of its own; small ones are copied into their regions, all in one call.
3. **check**: with ``nonfinite`` set, the optimizer checks the gathered gradients
   (:meth:`Gathered.to_check`); a skipped or refused step changes nothing.
4. **adopt** (:meth:`~.flatstate.FlatState.adopt`): the parameters' states are views into
   the bucket's flat buffers (copied in again if something replaced them).
5. **prepare** (:func:`prepare`): the parameters with a gradient are grouped by their
   scalar state (``step`` …; one group unless some parameter skipped a step). For each
   group the scalar state moves once on the host, the step's numbers are computed once
   (:class:`~.reference.Scalars`), and one call is laid out for each span of parameters
   (:func:`spans`).
6. **execute** (:func:`execute`): the calls run back to back, every param group's: the
   compiled kernel when the optimizer is large enough (:mod:`.kernels`), else
   :func:`~.reference.update` eagerly. Which one is fixed by the optimizer's size, never by
   its history, so a resumed run takes exactly the steps of the uninterrupted one.

A parameter without a gradient is skipped as torch skips it: no call covers its region.
What cannot be flat takes the reference path: DTensor and other tensor subclasses,
parameters that are views into someone else's buffer (DDP's, ZeroRedundancyOptimizer's),
sparse gradients or gradients of another dtype, states of another layout, rules that are
neither elementwise nor segmented, and segmented rules (LAMB, LARS: whole-parameter norms)
on a complex bucket or at a step where some parameter of the bucket has no gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
import itertools
from functools import partial
from operator import attrgetter, is_
from typing import Any, cast

import torch
from torch import Tensor

from . import compat, kernels, reference, storage
from .composition import Rules
from .flatstate import FlatState, NewState, TrackedState
from .layout import Layout, as_flat, flattenable, movable
from .storage import Bits, Storage

__all__ = ["Bucket", "FlatGroup", "Gathered", "Split", "TrackedState", "execute", "flattenable", "gather", "prepare"]

_grad = attrgetter("grad")
_kind = attrgetter("layout", "dtype", "device")


class Bucket:
    """Parameters of one device and dtype: their layout, flat gradient buffer and state.

    The parameters are laid out smallest first, so that the large ones, whose fresh
    gradients are used where autograd put them (:meth:`split`), end the layout: the flat
    gradient buffer holds only the others, and the small ones make one kernel call.

    With a ``storage`` (:mod:`.storage`: low-precision state, rounded weights), every
    parameter of the bucket is stored alike, each region starts on a whole block of its
    codes, and each parameter is a kernel call of its own."""

    def __init__(self, params: list[Tensor], storage: Storage | None = None) -> None:
        params = sorted(params, key=Tensor.numel)  # stable: equal sizes keep their order
        self.storage = storage
        self.layout = Layout(params, storage.block if storage is not None else 1)
        self.params = params
        self.state = FlatState(self.layout, storage.regions(self.layout.dtype) if storage is not None else None)
        self.strides = [p.stride() for p in params]
        self.everyone = list(range(len(params)))
        #: point ``p.grad`` at its region after copying a fresh gradient in, so that the
        #: next backward accumulates in place (turned off when gradients arrive fresh again
        #: anyway: ``zero_grad()``'s default drops them every step)
        self.repoint = True
        self._repointed = False
        self._views: dict[tuple[int, int], tuple[Tensor | None, dict[str, Tensor]]] = {}
        self._views_of: Split | None = None  # the split and state buffers the cached views are of
        self._buffers_of: Any = None
        self._split: tuple[int | None, Split] | None = None

    def split(self, least: int | None) -> Split:
        """The parameters of at least ``least`` elements, whose gradients are used where
        autograd put them (none when ``least`` is None), and the rest, whose gradients are
        in a flat buffer (accumulated there, or copied in); one split at a time."""
        if self._split is None or self._split[0] != least:
            self._split = (least, Split.of(self.layout, least))
        return self._split[1]

    @property
    def grad(self) -> Tensor:
        """The flat gradient buffer of the current split (the small parameters' regions)."""
        return self._current().grad

    @property
    def grad_views(self) -> list[Tensor | None]:
        """Each parameter's region of :attr:`grad` (``None`` for the large ones)."""
        return self._current().views

    def _current(self) -> Split:
        """The split the last step used (none large before any step)."""
        return self._split[1] if self._split else self.split(None)

    def views(self, split: Split, start: int, stop: int, direct: Tensor | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The parameters, the gradients and the state buffers over elements ``[start,
        stop)``, as real views: the gradients are ``direct`` (a large parameter's, where
        autograd put it) or else the split's flat gradient buffer there. The views of the
        buffers are kept from step to step while the buffers last. With a storage of coded
        blocks, every view comes as rows of a block, as its kernels take them
        (:meth:`.storage.Storage.rows`)."""
        if self._views_of is not split or self._buffers_of is not self.state.buffers:
            self._views, self._views_of, self._buffers_of = {}, split, self.state.buffers
        kept = self.storage if self.storage is not None and self.storage.block > 1 else None
        found = self._views.get((start, stop))
        if found is None:
            real, n = reference.real, stop - start
            buffers = {k: self.state.span(k, start, stop) for k in self.state.buffers}
            g = real(split.grad.narrow(0, start, n)) if direct is None else None
            if kept is not None:
                buffers = {k: kept.rows(v, k) for k, v in buffers.items()}
                g = kept.rows(g) if g is not None else None
            found = self._views[(start, stop)] = (g, buffers)
        if direct is None:
            g = found[0]
        else:
            g = reference.real(direct) if kept is None else kept.rows(reference.real(direct))
        p = self.layout.span(start, stop, kept.block if kept is not None else 0)
        return p, g, found[1]  # type: ignore[return-value]


@dataclass(frozen=True)
class Split:
    """A bucket's parameters split by size: the large ones (a suffix of the layout, which
    is smallest first) have no region in the flat gradient buffer, the small ones do."""

    large: list[int]  # gradients used where they are
    small: list[int]  # gradients in the flat buffer
    flags: bytes  # 1 for each large parameter, 0 for each small one, in order
    grad: Tensor  # the flat gradient buffer: the layout up to the first large region
    views: list[Tensor | None]  # each parameter's region of it, None for the large ones

    @classmethod
    def of(cls, layout: Layout, least: int | None) -> Split:
        n = len(layout.sizes)
        first = n if least is None else next((i for i, size in enumerate(layout.sizes) if size >= least), n)
        grad = torch.zeros(layout.offsets[first] if first < n else layout.numel, dtype=layout.dtype, device=layout.device)
        views: list[Tensor | None] = [layout.region(grad, i) for i in range(first)]
        return cls(list(range(first, n)), list(range(first)), bytes(i >= first for i in range(n)), grad, views + [None] * (n - first))


@dataclass
class Gathered:
    """A bucket's gradients for this step, gathered; nothing has changed yet."""

    bucket: Bucket
    split: Split
    present: list[int]  # the parameters with a gradient, by index
    direct: dict[int, Tensor] = field(default_factory=dict)  # gradients used where they are (1-D)

    def to_check(self) -> list[Tensor]:
        """This step's gradients, as the finiteness check reads them."""
        if not self.direct and len(self.present) == len(self.bucket.params):
            return [self.split.grad]  # the gaps between regions hold zeros
        views = self.split.views
        return [self.direct[i] if i in self.direct else views[i] for i in self.present]  # type: ignore[misc]


def gather(b: Bucket, direct: bool, native: bool = False) -> tuple[Gathered | None, list[Tensor]]:
    """Find every gradient of bucket ``b``: with ``direct``, large ones are used where
    autograd put them; small ones are in the flat buffer (accumulated there) or copied
    in. Returns what the flat step needs and the parameters whose gradients the flat
    buffers cannot hold (sparse, or of another dtype or device), which take the reference
    path.

    The usual cases, every small gradient in place or every one fresh, are one C++ call
    with ``native`` (an optimizer that compiles its kernels or has many tensors,
    :func:`~.compat.native`), else a few passes over the gradients in C (``map``), none in
    Python: with hundreds of small parameters, each pass costs tens of µs."""
    least = kernels.config.direct_min_numel
    if direct and b.storage is not None and b.storage.block > 1:
        # a call runs to the end of its parameter's last block, its gradient too: a large
        # gradient is used where autograd put it when every large parameter fills whole blocks
        direct = all(n % b.storage.block == 0 for n in b.layout.sizes if n >= least)
    split = b.split(least if direct else None)
    fast = compat.native() if native else None
    if fast is not None:
        found, flat_large = fast.gather(b.params, split.views, split.flags)
        if found:
            if found == compat.FRESH and (b.repoint or b._repointed):
                _repoint(b, split, list(map(_grad, b.params)), split.small)
            return Gathered(b, split, b.everyone, dict(zip(split.large, flat_large))), []
    params, views = b.params, split.views
    grads = list(map(_grad, params))
    if not split.large and all(map(is_, grads, views)):  # accumulated in place: nothing to do
        return Gathered(b, split, b.everyone), []
    everyone = not any(map(is_, grads, _NONES))
    present = b.everyone if everyone else [i for i, g in enumerate(grads) if g is not None]
    if not present:
        return None, []
    kind = (torch.strided, b.layout.dtype, b.layout.device)
    rest: list[Tensor] = []
    if set(map(_kind, grads if everyone else map(grads.__getitem__, present))) != {kind}:
        rest = [params[i] for i in present if _kind(grads[i]) != kind]
        present = [i for i in present if _kind(grads[i]) == kind]
        everyone = False
    used = {i: _flat_gradient(b, i, grads[i]) for i in present if views[i] is None}  # type: ignore[arg-type]
    copied = [i for i in present if views[i] is not None and grads[i] is not views[i]]
    compat.copy_all(list(map(views.__getitem__, copied)), list(map(grads.__getitem__, copied)))  # type: ignore[arg-type]
    _repoint(b, split, grads, copied)
    return (Gathered(b, split, present, used) if present else None), rest


def _flat_gradient(b: Bucket, i: int, g: Tensor) -> Tensor:
    """A large parameter's gradient as a 1-D view in its parameter's memory order: where
    autograd put it, or (strided otherwise: a user's transposed gradient) a dense copy."""
    if g.stride() != b.strides[i]:
        g = torch.empty_like(b.params[i]).copy_(g)
    return as_flat(g)


_NONES = itertools.repeat(None)


def _repoint(b: Bucket, split: Split, grads: list[Tensor | None], copied: list[int]) -> None:
    """``p.grad`` becomes its region for the gradients just copied in, unless the ones
    repointed last step came back fresh (then every step drops them: stop trying)."""
    if b._repointed and copied:
        b.repoint = False
    b._repointed = False
    if not b.repoint or not copied:
        return
    for i in copied:
        if compat.owns_storage(grads[i]):  # type: ignore[arg-type]  # a view into DDP's buckets stays there
            b.params[i].grad = split.views[i]
            b._repointed = True


def spans(b: Bucket, indices: Sequence[int], direct: dict[int, Tensor]) -> list[tuple[int, int, Tensor | None]]:
    """The kernel calls over parameters ``indices`` (ascending): ``(start, stop, gradient)``,
    a large parameter's gradient used where it is, ``None`` for a span of neighbours whose
    gradients are in the flat buffer. A span ends rounded up to the alignment (into the gap
    before the next region), so that no call sees 0 or 1 elements, on which compiled
    kernels would specialise."""
    layout = b.layout
    if not direct and len(indices) == len(b.params):
        return [(0, layout.numel, None)]
    offsets, sizes = layout.offsets, layout.sizes
    calls: list[tuple[int, int, Tensor | None]] = []
    span: list[int] = []  # [start, stop] of the span being built

    def close() -> None:
        if span:
            calls.append((span[0], layout.round_up(span[1]), None))
            span.clear()

    previous = -2
    for i in indices:
        start, stop = offsets[i], offsets[i] + sizes[i]
        g = direct.get(i)
        if g is not None:
            close()
            calls.append((start, stop, g))
        elif span and previous == i - 1:
            span[1] = stop
        else:
            close()
            span[:] = [start, stop]
        previous = i
    close()
    return [c for c in calls if c[1] > c[0]]


def _groups(state: FlatState, present: list[int], known: float | None) -> list[list[int]]:
    """``present`` split by scalar state: parameters at the same step (and the same rule
    scalars) step together; usually all of them (``known``: the step all are at, if known)."""
    if not state.scalars or known is not None:
        return [present]
    rows = list(zip(*(t.tolist() for t in state.scalars.values())))
    first = rows[present[0]]
    if all(rows[i] == first for i in present):
        return [present]
    by_row: dict[Any, list[int]] = {}
    for i in present:
        by_row.setdefault(rows[i], []).append(i)
    return list(by_row.values())


def _advance(
    state: FlatState, rules: Rules, indices: list[int], everyone: bool, known: float | None
) -> tuple[float, dict[str, Any]]:
    """Count the step of parameters ``indices`` and move their scalar state (the same for
    all of them), on the host (``known``: the step every parameter is at, if known). Returns
    the step ``t`` (NaN when not counted) and this step's values of the rules."""
    scalars = state.scalars
    t = float("nan")
    steps = scalars.get("step")
    if steps is not None:
        t = (known if everyone and known is not None else float(steps[indices[0]])) + 1
        if everyone:
            steps.fill_(t)
        else:
            steps[indices] = t
    firsts = {k: v[indices[0]] for k, v in scalars.items() if k != "step"}
    new, values = reference.advance(rules, firsts, t)
    for name, value in new.items():
        if everyone:
            reference.assign(scalars[name], value)
        else:
            scalars[name][indices] = value
    if everyone:
        state.stepped_all(t)
    return t, values


Eager = Callable[[Tensor, Tensor, dict[str, Tensor], "Tensor | None"], None]
Call = tuple["kernels.Kernel | None", Tensor, Tensor, dict[str, Tensor], "Tensor | None", Eager]
"""One kernel call: ``(kernel, p, g, buffers, ints, eager)``, ``eager`` the same step
without a compiled kernel (no kernel, or its compilation failed); ``ints`` the int64 input
of a bucket with a storage (:func:`.storage.step`), else ``None``."""


def prepare(
    g: Gathered,
    rules: Rules,
    h: reference.Hyper,
    state: TrackedState,
    new_state: NewState,
    compiled: bool,
    label: str = "",
    native: bool = False,
    bits: Callable[[Tensor, float], Bits] | None = None,
) -> tuple[list[Call], list[Tensor]]:
    """Everything of bucket ``g``'s step that happens on the host: the states adopted, the
    scalar state moved, this step's numbers computed, the calls laid out (:func:`execute`
    runs them). Returns the calls, and the parameters the flat buffers cannot step after
    all (states of another layout), for the reference path. With ``compiled``, the calls
    run compiled kernels (``label`` names the optimizer in messages); with ``native``, the
    states are checked in C++. ``bits``: a parameter's random bits at a step (a bucket
    whose storage rounds stochastically)."""
    b = g.bucket
    if b.storage is not None:
        return _prepare_stored(g, rules, h, state, new_state, compiled, label, native, bits)
    segmented = not rules.elementwise
    if segmented and (b.layout.dtype.is_complex or len(g.present) != len(b.params) or g.direct):
        return [], [b.params[i] for i in g.present]  # norms must see each whole parameter
    if not b.state.adopt(state, new_state, rules.scalar_names(), g.present, native=native):
        return [], [b.params[i] for i in g.present]
    layout = b.layout
    norm = layout.segments().norm if segmented else None
    calls: list[Call] = []
    known = b.state.uniform_step()
    for indices in _groups(b.state, g.present, known):
        t, values = _advance(b.state, rules, indices, len(indices) == len(b.params), known)
        s = reference.Scalars.of(rules, h, t, values)
        if not rules.buffers() <= b.state.buffers.keys():  # a buffer born at this update
            _birth(g, indices, rules, h, s, state, norm)
            continue
        kernel = None
        if compiled and not segmented:
            kernel = kernels.kernel(
                rules, tuple(b.state.buffers), s, h.maximize, h.decays, layout.dtype, layout.device, label
            )
        eager = partial(_eager, rules, s, h, norm)
        for start, stop, grad in spans(b, indices, g.direct):
            calls.append((kernel, *b.views(g.split, start, stop, grad), None, eager))
    return calls, []


def _prepare_stored(
    g: Gathered,
    rules: Rules,
    h: reference.Hyper,
    state: TrackedState,
    new_state: NewState,
    compiled: bool,
    label: str,
    native: bool,
    bits: Callable[[Tensor, float], Bits] | None,
) -> tuple[list[Call], list[Tensor]]:
    """:func:`prepare` for a bucket with a storage: a call a parameter, each over its
    region to the end of its last block, with its own random bits; a step at which a
    buffer is born (torch's ``momentum_buffer``) takes the reference path."""
    b, kept = g.bucket, g.bucket.storage
    assert kept is not None
    present = [b.params[i] for i in g.present]
    if not rules.elementwise or not b.state.adopt(state, new_state, rules.scalar_names(), g.present, native=native):
        return [], present
    if any(k not in b.state.buffers for name in rules.buffers() for k in kept.keys(name)):
        return [], present  # a buffer born at this update
    layout, calls = b.layout, cast(list[Call], [])
    known = b.state.uniform_step()
    for indices in _groups(b.state, g.present, known):
        t, values = _advance(b.state, rules, indices, len(indices) == len(b.params), known)
        s = reference.Scalars.of(rules, h, t, values)
        kernel = None
        if compiled:
            kernel = kernels.kernel(
                rules, tuple(b.state.buffers), s, h.maximize, h.decays, layout.dtype, layout.device, label, kept
            )
        eager = partial(_eager_stored, kept, rules, s, h)
        places = [bits(b.params[i], t) if bits is not None and kept.random else storage.NO_BITS for i in indices]
        for i, ints in zip(indices, storage.ints(places, [layout.sizes[i] for i in indices])):
            start, n = layout.offsets[i], layout.sizes[i]
            views = b.views(g.split, start, start + -(-n // kept.block) * kept.block, g.direct.get(i))
            calls.append((kernel, *views, ints, eager))
    return calls, []


def execute(calls: list[Call]) -> None:
    """Run prepared calls, back to back (the host work is done: between kernels that
    stream the whole model through the caches, nothing else runs)."""
    for kernel, p, g, buffers, ints, eager in calls:
        if kernel is None or not kernel(p, g, buffers, ints):
            eager(p, g, buffers, ints)


def _eager(
    rules: Rules, s: reference.Scalars, h: reference.Hyper, norm: Any, p: Tensor, g: Tensor, buffers: dict[str, Tensor], ints: Tensor | None
) -> None:
    """One call's step without a compiled kernel: :func:`reference.update` on its views."""
    updates = reference.update(p, g, buffers, rules, s, maximize=h.maximize, decays=h.decays, norm=norm)
    for name, value in updates.items():
        buffers[name].copy_(value)


def _eager_stored(
    kept: Storage, rules: Rules, s: reference.Scalars, h: reference.Hyper, p: Tensor, g: Tensor, buffers: dict[str, Tensor], ints: Tensor | None
) -> None:
    """:func:`_eager` for a bucket with a storage: :func:`.storage.step` on its views."""
    assert ints is not None
    storage.step(kept, rules, s, h.maximize, h.decays, p, g, buffers, ints)


def _birth(
    gathered: Gathered,
    indices: list[int],
    rules: Rules,
    h: reference.Hyper,
    s: reference.Scalars,
    state: TrackedState,
    norm: Any,
) -> None:
    """A step at which a rule's buffer is born (torch's ``momentum_buffer`` at the first
    step): eagerly, the new buffer made flat and handed out."""
    b = gathered.bucket
    for start, stop, grad in spans(b, indices, gathered.direct):
        p, g, buffers = b.views(gathered.split, start, stop, grad)
        updates = reference.update(p, g, buffers, rules, s, maximize=h.maximize, decays=h.decays, norm=norm)
        for name, value in updates.items():
            if name not in b.state.buffers:
                b.state.add(name, indices, state)
            reference.real(b.state.buffers[name].narrow(0, start, stop - start)).copy_(value)


class FlatGroup:
    """The fast path of one param group: its buckets, and the parameters left out of them."""

    buckets: list[Bucket]

    def __init__(
        self,
        params: list[Tensor],
        previous: FlatGroup | None = None,
        storage_of: Callable[[Tensor], Storage | None] | None = None,
        spec: Any = None,
    ) -> None:
        self.params = list(params)
        #: what the group's low-precision storage was built from (its ``state_precision``
        #: and ``param_rounding``): another spec needs other buckets
        self.spec = spec
        # a parameter still in the previous buckets' storage is ours to move again
        ours = {
            id(p)
            for b in (previous.buckets if previous else [])
            for p, ptr in zip(b.params, b.layout.ptrs)
            if p.data_ptr() == ptr
        }
        by_kind: dict[tuple[torch.device, torch.dtype, Storage | None], list[Tensor]] = {}
        for p, ok in zip(self.params, movable(self.params)):
            if p.requires_grad and flattenable(p) and (ok or id(p) in ours):
                kept = storage_of(p) if storage_of is not None else None
                by_kind.setdefault((p.device, p.dtype, kept), []).append(p)
        self.buckets = [Bucket(ps, kind[2]) for kind, ps in by_kind.items()]
        bucketed = {id(p) for b in self.buckets for p in b.params}
        self.others = [p for p in self.params if id(p) not in bucketed]
        self.numel = sum(b.layout.numel for b in self.buckets)

    def current(self, params: list[Tensor], native: bool = False) -> bool:
        """Same parameters, in place, and none left out that could now join a bucket (with
        ``native``, checked by a C++ call where it is built)."""
        return (
            len(params) == len(self.params)
            and all(map(is_, params, self.params))
            and all(b.layout.holds(native) for b in self.buckets)
            and not (self.others and any(movable([p for p in self.others if p.requires_grad])))
        )

    def gather(self, direct: bool, native: bool = False) -> tuple[list[Gathered], list[Tensor]]:
        """:func:`gather` for every bucket; the second list holds every parameter with a
        gradient that no flat step will take (left out of the buckets, or a gradient the
        flat buffers cannot hold)."""
        ready: list[Gathered] = []
        rest = [p for p in self.others if p.grad is not None]
        for b in self.buckets:
            gathered, left = gather(b, direct, native)
            if gathered is not None:
                ready.append(gathered)
            rest += left
        return ready, rest

