"""Who owns the optimizer state on the fast path: flat buffers, with views handed out.

``optimizer.state[p]`` stays torch's plain ``dict[str, Tensor]`` (state_dicts save it and
load it with ``torch.load(weights_only=True)``), but on the fast path its tensors are views:
each buffer (``exp_avg`` …) is parameter ``p``'s region of one flat buffer of the bucket,
each scalar (``step``, ``mu_product`` …) one element of a tensor with an element a
parameter. :class:`FlatState` makes that so (:meth:`~FlatState.adopt`), and notices in O(1)
when something replaced a state (``load_state_dict``, ``opt.state[p] = …``): then it copies
the new values in again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from operator import is_, itemgetter
from typing import Any

import torch
from torch import Tensor

from . import compat
from .layout import Layout
from .storage import Region


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


NewState = Callable[[Tensor], dict[str, Any]]


class FlatState:
    """The state of a layout's parameters in flat buffers.

    Attributes:
        buffers: flat buffers by name, laid out like the parameters (``exp_avg`` …).
        scalars: per-parameter scalar state by name, one element a parameter (``step`` …).
        owners: the indices of the parameters that have a state (torch creates a state at a
            parameter's first gradient; the others have none yet).
    """

    def __init__(self, layout: Layout, regions: Mapping[str, Region] | None = None) -> None:
        self.layout = layout
        #: the keys stored otherwise than like the parameters (low-precision state,
        #: :mod:`.storage`): where each lies in its flat buffer
        self.regions = dict(regions or {})
        self.buffers: dict[str, Tensor] = {}
        self.scalars: dict[str, Tensor] = {}
        self.owners: list[int] = []
        self._dicts: list[dict[str, Any]] = []  # optimizer.state[p] of the owners
        self._views: dict[str, list[Tensor]] = {}  # the views we handed out, by name
        self._seen: tuple[Any, int] = (None, -1)  # (optimizer.state, its version) then
        self._held: list[Tensor] | None = None  # the owners' state values, all ours, in order
        #: after a step of every parameter: the scalar tensors, their versions then, and the
        #: step then (so the next step neither reads it back nor compares the rows)
        self._uniform: tuple[list[Tensor], list[int], float] | None = None

    def uniform_step(self) -> float | None:
        """The step every parameter is at, known without reading the scalar state, if
        nothing wrote to it since the last step of all of them (an in-place edit of a
        ``state[p]["step"]`` view changes its buffer's version); else ``None``."""
        known = self._uniform
        if known is None:
            return None
        tensors, versions, t = known
        now = list(self.scalars.values())
        if len(now) != len(tensors) or not all(map(is_, now, tensors)):
            return None
        if [compat.version(x) for x in tensors] != versions:
            return None
        return t

    def stepped_all(self, t: float) -> None:
        """Every parameter has just taken step ``t`` (its scalar state written): remember
        it, while ``t`` is exact in the step's dtype (float32 counts stop at 2**24)."""
        tensors = list(self.scalars.values())
        versions = [compat.version(x) for x in tensors]
        exact = t < 2**24 and None not in versions
        self._uniform = (tensors, versions, t) if exact else None  # type: ignore[assignment]

    def current(self, state: TrackedState, present: Sequence[int], native: bool = False) -> bool:
        """Our views are still what ``optimizer.state`` holds, and every parameter with a
        gradient this step has a state (with ``native``, checked by a C++ call where it is
        built, :func:`~.compat.native`)."""
        seen_state, seen_version = self._seen
        if seen_state is not state or seen_version != state.version:
            return False
        if len(self.owners) != len(self.layout.params) and not set(present) <= set(self.owners):
            return False
        fast = compat.native() if native and self._held is not None else None
        if fast is not None:
            return fast.same_values(self._dicts, self._held)  # type: ignore[arg-type]
        held = list(chain.from_iterable(map(dict.values, self._dicts)))
        if self._held is not None:  # one pass: every value is the view it was
            return len(held) == len(self._held) and all(map(is_, held, self._held))
        dicts = self._dicts
        if list(map(len, dicts)) != [len(self._views)] * len(dicts):
            return False
        if all(all(map(is_, map(itemgetter(k), dicts), views)) for k, views in self._views.items()):
            self._held = held
            return True
        return False

    def adopt(
        self,
        state: TrackedState,
        new_state: NewState,
        scalar_names: tuple[str, ...],
        present: Sequence[int],
        native: bool = False,
    ) -> bool:
        """Make the flat buffers hold the parameters' states: copy them in, create the states
        of parameters with a gradient and none yet. ``False`` if the states do not fit one
        layout (different keys, shapes or dtypes): the reference path steps them instead.
        ``native``: check with C++ (:meth:`current`)."""
        if self.current(state, present, native):
            return True
        params = self.layout.params
        wanted = set(present)
        dicts: list[dict[str, Any] | None] = []
        for i, p in enumerate(params):
            d = state.get(p)
            if not d and i in wanted:
                d = new_state(p)
                if d:
                    state[p] = d
            dicts.append(d or None)
        owners = [i for i, d in enumerate(dicts) if d is not None]
        owned: list[dict[str, Any]] = [d for d in dicts if d is not None]
        keys = list(owned[0]) if owned else []
        if any(d.keys() != owned[0].keys() for d in owned):  # same keys, in any order
            return False
        buffers: dict[str, Tensor] = {}
        scalars: dict[str, Tensor] = {}
        for key in keys:
            tensors = [d[key] for d in owned]
            if key in scalar_names:
                if any(not torch.is_tensor(t) or t.dim() != 0 for t in tensors):
                    return False
                if any(t.dtype != tensors[0].dtype or t.device != tensors[0].device for t in tensors):
                    return False
                stacked = torch.zeros(len(params), dtype=tensors[0].dtype, device=tensors[0].device)
                stacked[owners] = torch.stack([t.detach() for t in tensors])
                scalars[key] = stacked
            elif not all(self._fits(key, t, i) for t, i in zip(tensors, owners)):
                return False
            else:
                flat = buffers[key] = self.zeros(key)
                compat.copy_all([self.region(key, flat, i) for i in owners], [t.detach() for t in tensors])
        self.buffers, self.scalars, self.owners, self._dicts = buffers, scalars, owners, owned
        self._held = None
        self._views = {}
        for key in keys:
            self._hand_out(key)
        self._seen = (state, state.version)
        return True

    def _fits(self, key: str, t: Any, i: int) -> bool:
        """State tensor ``t`` of parameter ``i`` can live in ``key``'s flat buffer."""
        p, region = self.layout.params[i], self.regions.get(key)
        if type(t) is not Tensor or t.device != self.layout.device:
            return False
        if region is None:
            return t.shape == p.shape and t.dtype == self.layout.dtype and t.stride() == p.stride()
        if region.shaped:
            return t.shape == p.shape and t.dtype == region.dtype and t.stride() == p.stride()
        return t.dim() == 1 and t.numel() == region.numel(p.numel()) and t.dtype == region.dtype

    def zeros(self, key: str) -> Tensor:
        """A new flat buffer for state ``key``, all zeros."""
        region = self.regions.get(key)
        if region is None:
            return self.layout.zeros()
        n = self.layout.numel * region.per // region.of
        return torch.zeros(n, dtype=region.dtype, device=self.layout.device)

    def region(self, key: str, flat: Tensor, i: int) -> Tensor:
        """Parameter ``i``'s part of ``key``'s flat buffer ``flat``: shaped like the parameter,
        or (codes, scales) its 1-D run."""
        region = self.regions.get(key)
        if region is None or region.shaped:
            return self.layout.region(flat, i)
        start = self.layout.offsets[i] * region.per // region.of
        return flat.narrow(0, start, region.numel(self.layout.sizes[i]))

    def span(self, key: str, start: int, stop: int) -> Tensor:
        """Elements ``[start, stop)`` of the layout, in ``key``'s flat buffer (1-D; complex
        buffers as their real view)."""
        flat, region = self.buffers[key], self.regions.get(key)
        if region is not None:
            start, stop = start * region.per // region.of, stop * region.per // region.of
        view = flat.narrow(0, start, stop - start)
        return torch.view_as_real(view) if view.is_complex() else view

    def _hand_out(self, key: str) -> None:
        """Point every owner's ``state[key]`` at its region (or element) of our buffer."""
        if key in self.scalars:
            views = [self.scalars[key][i] for i in self.owners]
        else:
            views = [self.region(key, self.buffers[key], i) for i in self.owners]
        for d, view in zip(self._dicts, views):
            d[key] = view
        self._views[key] = views
        self._held = None

    def add(self, key: str, stepped: Sequence[int], state: TrackedState) -> Tensor:
        """A buffer born at a rule's first update (torch's ``momentum_buffer``): a new flat
        buffer, handed out to the parameters ``stepped`` (whose states are registered in
        ``optimizer.state`` if they had none)."""
        flat = self.layout.zeros()
        self.buffers = {**self.buffers, key: flat}  # a new dict: views kept of the old are stale
        params = self.layout.params
        dicts = dict(zip(self.owners, self._dicts))
        for i in stepped:
            if i not in dicts:
                dicts[i] = state[params[i]] = {}
        self.owners = sorted(dicts)
        self._dicts = [dicts[i] for i in self.owners]
        if len(stepped) == len(self.owners):
            for k in [*self.scalars, *self.buffers]:
                self._hand_out(k)
            self._seen = (state, state.version)
        else:  # owners that did not step lack the new buffer: the states no longer share
            for i in stepped:  # one layout, and the next step adopts them anew
                dicts[i][key] = self.layout.region(flat, i)
            self._seen = (None, -1)
        return flat
