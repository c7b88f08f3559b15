"""Where parameters live on the fast path: regions of one flat buffer.

A :class:`Layout` places the parameters of one (param group, device, dtype) end to end in a
flat buffer, each region starting on a 64-byte boundary and keeping its parameter's strides
(channels_last stays channels_last). The gaps between regions start as zeros in every flat
buffer; a step may write there what its rule makes of zeros (Adamax's ε in ``exp_inf``), and
nothing reads a gap back as a parameter's. Every flat buffer of a bucket (parameters, gradients, each
state buffer) has this same layout, so region ``i`` of any of them belongs to parameter ``i``.
"""

from __future__ import annotations

import array
import weakref
from operator import methodcaller

import torch
from torch import Tensor

from ..rules import base
from . import compat


def flattenable(p: Tensor) -> bool:
    """A plain dense tensor the fast path can hold in a region of a flat buffer."""
    return (
        type(p) in (Tensor, torch.nn.Parameter)
        and p.layout == torch.strided
        and p.device.type != "meta"
        and (p.is_contiguous() or p.is_contiguous(memory_format=torch.channels_last)
             or p.is_contiguous(memory_format=torch.channels_last_3d))
    )  # fmt: skip


#: the layouts alive, by the address of their data's storage
_layouts: dict[int, weakref.ref[Layout]] = {}


def _storage(p: Tensor) -> int:
    return p.untyped_storage().data_ptr()


def movable(params: list[Tensor]) -> list[bool]:
    """Which of ``params`` may be moved into a new flat buffer: re-pointing their
    ``.data`` must leave no other tensor on the old values (a view into DDP's or
    ZeroRedundancyOptimizer's buckets, a user's alias). A parameter that is its storage's
    only tenant may move; so may parameters in a momenta layout's buffer (an optimizer
    rebuilt over the same parameters), when nothing but that layout and its parameters
    holds it: a layout notices that its parameters moved (:meth:`Layout.holds`)."""
    by_storage: dict[int, list[int]] = {}
    for i, p in enumerate(params):
        if flattenable(p):
            by_storage.setdefault(_storage(p), []).append(i)
    result = [False] * len(params)
    for address, indices in by_storage.items():
        users = compat.storage_users(params[indices[0]])
        ref = _layouts.get(address)
        layout = ref() if ref is not None else None
        if layout is not None and _storage(layout.data) == address:
            layout.release()
            users = compat.storage_users(params[indices[0]])
            ok = users == 1 + sum(1 for q in layout.params if _storage(q) == address)
        elif len(indices) == 1:
            ok = compat.owns_storage(params[indices[0]])
        else:  # several of ours share a storage nothing else holds (a layout gone)
            ok = users == len(indices)
        for i in indices:
            result[i] = ok
    return result


def as_flat(t: Tensor) -> Tensor:
    """``t``'s elements in memory order, as a 1-D view (``t`` non-overlapping and dense)."""
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


_data_ptr = methodcaller("data_ptr")


class Layout:
    """The regions of ``params`` in a flat buffer of ``numel`` elements.

    Building a layout moves the parameters in: each ``p.data`` becomes a view of
    :attr:`data`, holding the same values. ``block``: each region starts on a multiple of
    this many elements too (a coded state's block, which must not straddle two parameters).
    """

    def __init__(self, params: list[Tensor], block: int = 1) -> None:
        self.params = params
        self.dtype, self.device = params[0].dtype, params[0].device
        self.align = max(1, 64 // params[0].element_size(), block)
        self.offsets: list[int] = []
        total = 0
        for p in params:
            total = self.round_up(total)
            self.offsets.append(total)
            total += p.numel()
        self.numel = self.round_up(total)
        self.sizes = [p.numel() for p in params]
        self.data = self.zeros()
        for p, view in zip(params, self.regions(self.data)):
            view.copy_(p.detach())
            p.data = view
        self.ptrs = array.array("q", map(_data_ptr, params))  # where each parameter's data starts
        self._segments: base.Segments | None = None
        self._spans: dict[tuple[int, int, int], Tensor] = {}
        _layouts[_storage(self.data)] = weakref.ref(self)

    def round_up(self, n: int) -> int:
        """``n`` rounded up to the alignment (a region's start)."""
        return -(-n // self.align) * self.align

    def zeros(self) -> Tensor:
        """A new flat buffer of this layout, all zeros."""
        return torch.zeros(self.numel, dtype=self.dtype, device=self.device)

    def region(self, flat: Tensor, i: int) -> Tensor:
        """Parameter ``i``'s region of ``flat``, shaped and strided like the parameter."""
        p = self.params[i]
        return flat.as_strided(p.shape, p.stride(), flat.storage_offset() + self.offsets[i])

    def regions(self, flat: Tensor) -> list[Tensor]:
        """Every parameter's region of ``flat``."""
        return [self.region(flat, i) for i in range(len(self.params))]

    def span(self, start: int, stop: int, width: int = 0) -> Tensor:
        """Elements ``[start, stop)`` of :attr:`data`, as a real view (kept for later steps
        until :meth:`release`); with a ``width``, as rows of that many elements."""
        found = self._spans.get((start, stop, width))
        if found is None:
            data = self.data.narrow(0, start, stop - start)
            found = torch.view_as_real(data) if data.is_complex() else data
            found = self._spans[(start, stop, width)] = found.view(-1, width) if width else found
        return found

    def release(self) -> None:
        """Drop the views :meth:`span` kept (so that they do not count as holders of the
        storage when another layout asks whether it may take the parameters over)."""
        self._spans = {}

    def holds(self, native: bool = False) -> bool:
        """The parameters are still in our buffer (``model.to``, ``p.data = …`` move them);
        with ``native``, checked by one C++ call where it is built (:func:`~.compat.native`)."""
        fast = compat.native() if native else None
        if fast is not None:
            return fast.holds(self.params, self.ptrs)
        return array.array("q", map(_data_ptr, self.params)) == self.ptrs

    def segments(self) -> base.Segments:
        """Where each parameter's elements lie, gaps as segments of their own (for the
        whole-parameter norms of segmented rules on flat buffers)."""
        if self._segments is None:
            ends = [*self.offsets[1:], self.numel]
            lengths = [n for o, e, size in zip(self.offsets, ends, self.sizes) for n in (size, e - o - size)]
            self._segments = base.Segments(lengths, self.device)
        return self._segments
