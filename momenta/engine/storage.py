"""How a parameter's state is stored, and how its new weights are rounded.

    read:   m = decode(codes, scales)  or  m = float32(m_bf16)       (arithmetic in float32)
    step:   the rules' update, as at full precision
    write:  codes, scales = encode(m)  or  m_bf16 = round_stochastic(m)

A param group's ``state_precision`` chooses the storage of its state buffers:

* ``None`` (the default): the parameter's dtype, written as the rules compute it (today's
  numbers, bit for bit);
* ``"fp32"`` or ``"bf16"``: that float dtype; a write that narrows to bfloat16 rounds
  stochastically (an EMA of increments below half an ulp still moves);
* ``"int8"`` or ``"int4"``: blockwise codes (:mod:`momenta.precision.codecs`), a float32 scale a
  block of 256 (int8) or 128 (int4) elements, signed for buffers of either sign and unsigned
  for the buffers a rule declares never negative (:meth:`Rule.nonnegative`);
* a dict from buffer name to one of these, for per-buffer choices (others: the default).

What stays at the parameter's precision whatever the group says: parameters under
:data:`SMALL` elements (their state is a rounding error of the model's memory), the buffers a
rule declares exact (:meth:`Rule.exact`: Rprop's step sizes, iterates' weights), scalar state
(``step``, ``mu_product`` …), and buffers not shaped like their parameter (Adafactor's row and
column statistics).

A coded buffer ``m`` of a parameter of ``n`` elements is two plain tensors in its state,
``m_codes`` (uint8, ``n`` rounded up to the block, a byte an element for int8 and half a byte
for int4) and ``m_scales`` (float32, a scale a block): a block never straddles two parameters,
and the zeros padding the last block never change its scale. A ``bf16`` buffer keeps its name
and its parameter's shape. A sharded parameter (FSDP2's DTensor) codes each row on its own
(``rowwise``: codes ``(rows, bytes a row)``, scales ``(rows, blocks a row)``), so that every
rank codes its own shard (:mod:`.shards`); its 1-D parameters, and those whose rows are shorter
than a block, keep coded-precision requests at the parameter's precision.

``param_rounding`` (bfloat16 parameters only) chooses how the new weights are written:
``"nearest"`` (torch's, the default), ``"stochastic"`` (an unbiased rounding), or
``"compensated"`` (a bfloat16 buffer ``compensation`` keeps what rounding dropped: Kahan).
Either way the step's arithmetic runs in float32.

The random bits of stochastic rounding are a hash of the optimizer's seed, its count of
rounding steps (both in its state_dict), and each element's place: ``k·2³² + j`` for element
``j`` (memory order) of the optimizer's ``k``-th parameter, a place that does not depend on
how the fast path lays parameters out, so the reference and fast paths round alike and a
resumed run rounds as the uninterrupted one (:mod:`momenta.precision.rounding`).

Sources: Dettmers et al., "8-bit Optimizers via Block-wise Quantization", ICLR 2022; Li, Chen
& Zhu, "Memory Efficient Optimizers with 4-bit States", NeurIPS 2023; Zamirai et al.,
"Revisiting BFloat16 Training", 2020 (stochastic rounding and Kahan summation of weights).
"""

from __future__ import annotations

import array
import functools
import math
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, cast

import torch
from torch import Tensor

from ..precision import Codec, codec, compensated_read, compensated_write, step_key, stochastic_round_bf16
from ..precision.rounding import random_halves
from . import shards
from .composition import Rules
from .reference import Scalars, update

StatePrecision = Literal["fp32", "bf16", "int8", "int4"] | Mapping[str, str] | None
ParamRounding = Literal["nearest", "stochastic", "compensated"] | None

#: the param-group keys of low-precision state (a group has them only when asked for)
KEYS = ("state_precision", "param_rounding")
PRECISIONS = ("fp32", "bf16", "int8", "int4")
ROUNDINGS = ("nearest", "stochastic", "compensated")
#: parameters under this many elements keep their state at their own precision
SMALL = 4096
#: the buffer of a compensated parameter (``param_rounding="compensated"``)
COMPENSATION = "compensation"

_FLOATS = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Region:
    """Where one state key of a parameter lies in a flat buffer of the fast path: ``per``
    elements of ``dtype`` for every ``of`` elements of the parameter, over the parameter's
    elements rounded up to whole blocks of ``block``; ``shaped``: a view shaped and strided like
    the parameter (float buffers), else 1-D (codes, scales)."""

    dtype: torch.dtype
    per: int = 1
    of: int = 1
    block: int = 1
    shaped: bool = True

    def numel(self, n: int) -> int:
        """The key's elements for ``n`` of the parameter's (whole blocks)."""
        return -(-n // self.block) * self.block * self.per // self.of


@dataclass(frozen=True)
class Stored:
    """One state buffer stored otherwise than at its parameter's precision.

    Attributes:
        name: the rule's buffer (``exp_avg``).
        precision: ``"fp32"``, ``"bf16"``, ``"int8"`` or ``"int4"``.
        signed: the buffer takes either sign (an unsigned code reads negatives as 0).
    """

    name: str
    precision: str
    signed: bool = True
    rowwise: bool = False  # coded a row of the parameter at a time (a sharded parameter's)

    @property
    def coded(self) -> bool:
        return self.precision in ("int8", "int4")

    @property
    def stochastic(self) -> bool:
        """Its writes round stochastically: bf16, and int4 codes (whose neighbouring values
        near the top of a block are 25–50% apart: rounded to nearest, an average that moves
        by less than half a step a step stalls; measured on Lion's β₂ = 0.99 average, see
        benchmarks/RESULTS-lowbit.md). int8's codes round to nearest."""
        return self.precision in ("bf16", "int4")

    @cached_property
    def codec(self) -> Codec:
        return codec(self.precision, self.signed)

    @property
    def block(self) -> int:
        """Elements a block (1 for float storage)."""
        return self.codec.block if self.coded else 1

    def keys(self) -> tuple[str, ...]:
        """Its keys in ``optimizer.state[p]``."""
        return (f"{self.name}_codes", f"{self.name}_scales") if self.coded else (self.name,)

    def padded(self, n: int) -> int:
        """``n`` elements rounded up to whole blocks."""
        return -(-n // self.block) * self.block

    def shapes(self, p: Tensor) -> dict[str, tuple[torch.Size, torch.dtype]]:
        """Each key's shape and dtype for parameter ``p``."""
        if not self.coded:
            return {self.name: (p.shape, _FLOATS[self.precision])}
        codes, scales = self.keys()
        c = self.codec
        if self.rowwise:
            width = self.padded(_columns(p))
            return {
                codes: (torch.Size([p.shape[0], c.codes_numel(width)]), torch.uint8),
                scales: (torch.Size([p.shape[0], c.scales_numel(width)]), torch.float32),
            }
        n = self.padded(p.numel())
        return {codes: (torch.Size([c.codes_numel(n)]), torch.uint8), scales: (torch.Size([c.scales_numel(n)]), torch.float32)}

    def regions(self) -> dict[str, Region]:
        """Each key's region in a flat buffer (see :class:`Region`)."""
        if not self.coded:
            return {self.name: Region(_FLOATS[self.precision])}
        codes, scales = self.keys()
        c = self.codec
        return {
            codes: Region(torch.uint8, c.format.bits, 8, c.block, shaped=False),
            scales: Region(torch.float32, 1, c.block, c.block, shaped=False),
        }

    def encode(self, x: Tensor, noise: Tensor | None = None, columns: int = 1) -> dict[str, Tensor]:
        """The stored form of ``x`` (float, flat in memory order, at most ``padded`` long;
        the rest of the last block is zeros), by key. Float storage rounds to nearest; codes
        too, unless ``noise`` (uniform in [0, 1), ``padded`` long) rounds them stochastically.
        ``rowwise``: ``x`` is rows of ``columns`` elements, each coded on its own (``noise``:
        rows of whole blocks)."""
        if not self.coded:
            return {self.name: x.to(_FLOATS[self.precision])}
        if self.rowwise:
            x = x.reshape(-1, columns)
            x = torch.nn.functional.pad(x, (0, self.padded(columns) - columns))
            return dict(zip(self.keys(), self.codec.encode_rows(x, noise)))
        n = self.padded(x.numel())
        if n != x.numel():
            x = torch.nn.functional.pad(x.reshape(-1), (0, n - x.numel()))
        codes, scales = self.codec.encode(x, noise)
        return dict(zip(self.keys(), (codes, scales)))

    def decode(self, state: Mapping[str, Tensor], n: int, dtype: torch.dtype) -> Tensor:
        """The first ``n`` values (flat, memory order) of the stored buffer, in ``dtype``."""
        if not self.coded:
            return _flat(state[self.name]).to(dtype)
        codes, scales = self.keys()
        if self.rowwise:
            rows = state[scales].shape[0]
            values = self.codec.decode_rows(state[codes], state[scales])
            return values[:, : n // rows if rows else 0].reshape(-1).to(dtype)
        return self.codec.decode(_flat(state[codes]), _flat(state[scales]))[:n].to(dtype)

    def noise_numel(self, flat: Tensor, columns: int) -> int:
        """How many uniform numbers a stochastic write of ``flat`` (rows of ``columns``
        elements, if ``rowwise``) draws."""
        if self.rowwise:
            return flat.numel() // columns * self.padded(columns)
        return self.padded(flat.numel())


_cache: dict[tuple[Any, ...], tuple[Rules, Storage | None]] = {}  # Storage.of's, by rules id …


def _flat(t: Tensor) -> Tensor:
    """``t``'s elements in memory order (a view for dense tensors)."""
    if t.is_contiguous():
        return t.reshape(-1)
    return t.as_strided((t.numel(),), (1,), t.storage_offset()) if _dense(t) else t.contiguous().reshape(-1)


def _columns(p: Tensor) -> int:
    """Elements a row (along the first dimension) of ``p`` (1 for a scalar)."""
    return math.prod(p.shape[1:])


def _dense(t: Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) or t.is_contiguous(memory_format=torch.channels_last_3d)


def compute_dtype(p: Tensor) -> torch.dtype:
    """The dtype a step computes in: the parameter's real dtype, at least float32."""
    real = p.real.dtype if p.is_complex() else p.dtype
    return real if torch.finfo(real).bits >= 32 else torch.float32


def spec(group: Mapping[str, Any]) -> dict[str, Any]:
    """What a group asks of its storage: its ``state_precision`` and ``param_rounding``, those
    it has (empty: the engine's usual storage)."""
    return {k: group[k] for k in KEYS if k in group}


def precision_of(value: Any, name: str) -> str | None:
    """The precision a group's ``state_precision`` gives buffer ``name`` (None: default)."""
    if isinstance(value, Mapping):
        return value.get(name)  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Storage:
    """How one parameter's state is stored and its weights rounded (see the module).

    Attributes:
        stored: the buffers stored otherwise than at the parameter's precision.
        rounding: ``"nearest"``, ``"stochastic"`` or ``"compensated"`` (weights).
        dtype: the dtype the step computes in (float32 for 16-bit parameters).
    """

    stored: tuple[Stored, ...]
    rounding: str
    dtype: torch.dtype
    sharded: bool = False  # a DTensor's (FSDP2): every rank stores its own shard (:mod:`.shards`)

    @classmethod
    def of(cls, group: Mapping[str, Any], rules: Rules, p: Tensor) -> Storage | None:
        """``p``'s storage in ``group`` (``None``: everything at the parameter's precision,
        rounded to nearest, the engine's usual path). Worked out once per rules value,
        precision and kind of parameter (the reference path asks at every step)."""
        precision = group.get("state_precision")
        rounding = group.get("param_rounding") or "nearest"
        if precision is None and rounding == "nearest":
            return None
        spec = tuple(sorted(precision.items())) if isinstance(precision, Mapping) else precision
        key = (id(rules), spec, rounding, tuple(p.shape), p.dtype, shards.sharded(p))
        found = _cache.get(key)
        if found is not None and found[0] is rules:
            return found[1]
        value = cls._of(precision, rounding, rules, p)
        if len(_cache) > 4096:
            _cache.clear()
        _cache[key] = (rules, value)
        return value

    @classmethod
    def _of(cls, precision: Any, rounding: str, rules: Rules, p: Tensor) -> Storage | None:
        stored: list[Stored] = []
        sharded = shards.sharded(p)
        if precision is not None and p.numel() >= SMALL:
            dtype = p.real.dtype if p.is_complex() else p.dtype
            shapes = rules.initial_buffers(p)
            for name in sorted(rules.buffers()):
                chosen = precision_of(precision, name)
                if chosen is None or name in rules.exact or shapes.get(name, p.shape) != p.shape:
                    continue
                if chosen in _FLOATS and _FLOATS[chosen] == dtype and rounding == "nearest":
                    continue  # its own precision, written as the rules compute it
                if sharded and chosen not in _FLOATS and (p.dim() < 2 or _columns(p) < codec(chosen, True).block):
                    continue  # a sharded parameter's rows are its blocks: too short to code
                stored.append(Stored(name, chosen, name not in rules.nonnegative, rowwise=sharded))
        if not stored and rounding == "nearest":
            return None
        return cls(tuple(stored), rounding, compute_dtype(p), sharded)

    @cached_property
    def by_name(self) -> dict[str, Stored]:
        return {s.name: s for s in self.stored}

    @cached_property
    def own_keys(self) -> frozenset[str]:
        """The state keys this storage holds and checks itself (codes, scales, bf16 buffers,
        a compensation), in place of the rules' buffers by their names."""
        keys = {k for s in self.stored for k in s.keys()}
        return frozenset(keys | {COMPENSATION} if self.rounding == "compensated" else keys)

    @cached_property
    def random(self) -> bool:
        """The step needs random bits: a write that rounds stochastically (bf16 state, int4
        codes, weights with ``param_rounding="stochastic"``)."""
        return self.rounding == "stochastic" or any(s.stochastic for s in self.stored)

    @cached_property
    def block(self) -> int:
        """The largest block of a coded buffer (1 if none): the fast path starts each
        parameter's region on a multiple of it, so that no block straddles two parameters."""
        return max((s.block for s in self.stored), default=1)

    def regions(self, dtype: torch.dtype) -> dict[str, Region]:
        """The regions of the keys stored otherwise than at the parameter's ``dtype`` (and
        of the compensation, at it)."""
        found = {k: r for s in self.stored for k, r in s.regions().items()}
        if self.rounding == "compensated":
            found[COMPENSATION] = Region(dtype)
        return found

    def rows(self, flat: Tensor, key: str | None = None) -> Tensor:
        """A span of the fast path (whole blocks; 1-D, or already rows) as rows of
        :attr:`block` elements of the parameter: ``(rows, block)`` for the parameter, its
        gradient and float buffers, ``(rows, bytes)`` for codes, ``(rows, blocks)`` for
        scales."""
        width = self._widths.get(key, self.block) if key is not None else self.block
        if flat.dim() == 1:
            return flat.view(-1, width)
        if not isinstance(flat.shape[1], int):
            # traced with symbolic sizes, a 2-D span's width is a symbol too; pinned to its
            # constant, every index Inductor computes is a row times a constant plus a
            # column: no division or remainder, and results written where they were read
            torch._check(flat.shape[1] == width)
        return flat

    @cached_property
    def _widths(self) -> dict[str, int]:
        """A row's width in each 1-D key (codes, scales); shaped keys have the block's."""
        return {k: self.block * r.per // r.of for s in self.stored for k, r in s.regions().items() if not r.shaped}

    def keys(self, name: str) -> tuple[str, ...]:
        """The state keys that hold buffer ``name``."""
        found = self.by_name.get(name)
        return found.keys() if found is not None else (name,)

    # -- converting a whole state (new states, load_state_dict, a changed precision) ---------

    def store(self, state: MutableMapping[str, Any], p: Tensor) -> None:
        """A state at full precision (the rules' buffers by name) into this storage, in
        place; a compensated parameter gains its (zero) compensation."""
        if self.sharded and shards.sharded(p):
            return self._locally(self.store, state, p)
        for s in self.stored:
            if s.name in state:
                value = state.pop(s.name)
                state.update(s.encode(_flat(_real(value).detach().to(self.dtype)), columns=_columns(p)))
                if not s.coded:
                    state[s.name] = _shaped(state[s.name], p)
        if self.rounding == "compensated" and COMPENSATION not in state:
            state[COMPENSATION] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def restore(self, state: MutableMapping[str, Any], p: Tensor) -> None:
        """The inverse of :meth:`store`: every buffer at the parameter's precision (the
        compensation, if any, added into nothing: it is dropped)."""
        if self.sharded and shards.sharded(p):
            return self._locally(self.restore, state, p)
        for s in self.stored:
            if all(k in state for k in s.keys()):
                flat = s.decode(state, p.numel(), self.dtype)
                for k in s.keys():
                    del state[k]
                state[s.name] = _shaped(flat.to(p.dtype), p)
        state.pop(COMPENSATION, None)

    def _locally(self, run: Any, state: MutableMapping[str, Any], p: Any) -> None:
        """``run(local state, local parameter)`` on this rank's shard of DTensor ``p`` and its
        state, what it added wrapped back into DTensors (:mod:`.shards`)."""
        before = shards.local(state)
        after = dict(before)
        run(after, p.to_local())
        shapes = {k: tuple(shape) for s in self.stored for k, (shape, _) in s.shapes(p).items()}
        shards.write_back(state, before, after, p, shapes)

    def problems(self, state: Mapping[str, Any], p: Tensor) -> list[str]:
        """What is wrong with ``state``'s stored buffers for parameter ``p``."""
        found = []
        for s in self.stored:
            if s.name not in self._present(state):
                continue
            for key, (shape, dtype) in s.shapes(p).items():
                value = state.get(key)
                if not isinstance(value, Tensor):
                    found.append(f"{key!r} is missing or not a tensor (state_precision {s.precision!r})")
                elif value.shape != shape or value.dtype != dtype:
                    found.append(
                        f"{key!r} has shape {tuple(value.shape)} and dtype {value.dtype} "
                        f"(expected {tuple(shape)} and {dtype} for state_precision {s.precision!r})"
                    )
        problem = self.compensation_problem(state, p)
        return found + ([problem] if problem else [])

    def compensation_problem(self, state: Mapping[str, Any], p: Tensor) -> str | None:
        """What is wrong with a compensated parameter's ``compensation``, if anything."""
        value = state.get(COMPENSATION)
        if self.rounding != "compensated" or value is None:
            return None
        if not isinstance(value, Tensor) or value.shape != p.shape or value.dtype != p.dtype:
            return f"{COMPENSATION!r} must be a tensor shaped like its parameter {tuple(p.shape)}, of its dtype {p.dtype}"
        return None

    def _present(self, state: Mapping[str, Any]) -> set[str]:
        return {s.name for s in self.stored if any(k in state for k in s.keys())}

    # -- one step -----------------------------------------------------------------------------

    def step(
        self,
        p: Tensor,
        g: Tensor,
        state: MutableMapping[str, Any],
        rules: Rules,
        s: Scalars,
        maximize: bool,
        decays: bool,
        bits: Bits | None,
        scalar_names: tuple[str, ...] = (),
        valid: Tensor | None = None,
        rows: bool = False,
    ) -> None:
        """One step of ``p`` (a parameter, or a fast-path span) whose ``state`` is stored
        here: read, update in :attr:`dtype` (the gradient too), write, round the weights.
        ``valid``, ``rows``: the fast path's (:meth:`write`). A DTensor ``p`` steps its local
        shard (:mod:`.shards`), its random bits placed after the rows before it."""
        if self.sharded and shards.sharded(p):
            if bits is not None:  # this shard's places: after the rows of the shards before it
                width = max((b.padded(_columns(p)) for b in self.stored), default=_columns(p))
                bits = Bits(bits.key, bits.offset + shards.first_row(p) * width)
            grad = cast(Any, g).to_local()
            self._locally(lambda st, q: self.step(q, grad, st, rules, s, maximize, decays, bits, scalar_names), state, p)
            return
        w = self.weights(p, state)
        buffers = self.read(state, p, scalar_names, rows)
        updates = update(w, g.to(self.dtype), buffers, rules, s, maximize=maximize, decays=decays)
        self.write(state, updates, p, bits, valid, rows)
        self.round(p, w, state, bits)

    def read(self, state: Mapping[str, Any], p: Tensor, scalar_names: tuple[str, ...], rows: bool = False) -> dict[str, Tensor]:
        """The rules' buffers as they compute on them (stored ones decoded, in :attr:`dtype`,
        shaped like the parameter's real view; ``rows``: the fast path's, see :meth:`rows`)."""
        buffers: dict[str, Tensor] = {}
        keys = {k for s in self.stored for k in s.keys()} | {COMPENSATION}
        for k, v in state.items():
            if k not in scalar_names and k not in keys:
                buffers[k] = _real(v)
        for s in self.stored:
            if all(k in state for k in s.keys()):
                if s.coded and rows:
                    codes, scales = (state[k] for k in s.keys())
                    buffers[s.name] = s.codec.decode_rows(codes, scales).to(self.dtype)
                else:
                    buffers[s.name] = _shaped(s.decode(state, p.numel(), self.dtype), p)
        return buffers

    def write(
        self,
        state: MutableMapping[str, Any],
        updates: Mapping[str, Tensor],
        p: Tensor,
        bits: Bits | None,
        valid: Tensor | None = None,
        rows: bool = False,
    ) -> None:
        """New buffer values into the state, each in its storage (in place). ``rows``: the
        fast path's (see :meth:`rows`), whose spans run on to the end of the last block:
        ``valid`` says how many leading elements are the parameter's, the rest are coded as
        zeros, as the reference path pads."""
        for name, value in updates.items():
            s = self.by_name.get(name)
            if s is None:
                if name in state:
                    _real(state[name]).copy_(value)
                else:  # born at its first update: the parameter's precision
                    state[name] = value.detach().to(p.dtype).clone(memory_format=torch.preserve_format)
                continue
            stream = 1 + self.stored.index(s)  # the weights draw stream 0; streams 1 and 2 share a hash
            if s.coded and rows:
                value = value.to(self.dtype)
                if valid is not None:
                    index = torch.arange(value.numel(), device=value.device).view(value.shape)
                    value = torch.where(index < valid, value, 0.0)
                noise = bits.uniform(value.numel(), stream).view(value.shape) if s.stochastic and bits else None
                for k, v in zip(s.keys(), s.codec.encode_rows(value, noise)):
                    state[k].copy_(v)
                continue
            flat = _flat(value.to(self.dtype))
            if s.precision == "bf16" and bits is not None and flat.dtype != torch.bfloat16:
                new = {name: stochastic_round_bf16(flat.float(), bits.key, bits.offset, stream)}
            else:
                columns = _columns(p)  # (a rowwise buffer's rows)
                noise = bits.uniform(s.noise_numel(flat, columns), stream) if s.coded and s.stochastic and bits else None
                new = s.encode(flat, noise, columns)
            for k, v in new.items():
                if k in state:
                    _flat(state[k]).copy_(v.reshape(-1))  # (rowwise codes come as rows)
                else:
                    state[k] = _shaped(v, p) if k == name else v

    def weights(self, p: Tensor, state: Mapping[str, Any]) -> Tensor:
        """The weights the step computes on: ``p`` itself, or a float32 copy (plus the
        compensation) for a parameter that is rounded after the step."""
        if self.rounding == "nearest" and not _narrow(p):
            return p
        if self.rounding == "compensated":
            return compensated_read(p, state[COMPENSATION])
        return p.to(self.dtype)

    def round(self, p: Tensor, w: Tensor, state: MutableMapping[str, Any], bits: Bits | None) -> None:
        """The new weights ``w`` (computed at :attr:`dtype`) into ``p``, rounded."""
        if w is p:
            return
        if self.rounding == "stochastic":
            assert bits is not None
            p.copy_(_shaped(stochastic_round_bf16(_flat(w), bits.key, bits.offset), p))
        elif self.rounding == "compensated":
            new, comp = compensated_write(w, p.dtype)
            p.copy_(new)
            state[COMPENSATION].copy_(comp)
        else:
            p.copy_(w)


def convert(state: MutableMapping[str, Any], p: Tensor, was: Storage | None, now: Storage | None) -> None:
    """``p``'s state, stored as ``was``, into how ``now`` stores it (in place; ``None``: at
    the parameter's precision): decoded from the one, coded into the other."""
    if was == now:
        return
    if was is not None:
        was.restore(state, p)
    if now is not None:
        now.store(state, p)


def step(
    storage: Storage,
    rules: Rules,
    s: Scalars,
    maximize: bool,
    decays: bool,
    p: Tensor,
    g: Tensor,
    buffers: MutableMapping[str, Tensor],
    ints: Tensor,
) -> None:
    """One step over a span of a fast-path bucket whose state is stored by ``storage``
    (the body of its compiled kernel, and its eager twin): read, update, write, round.
    ``ints`` (int64): the step's random key, the offset of the span's first element's
    random bits, and how many of the span's elements are the parameter's."""
    bits = Bits(ints[0], ints[1]) if storage.random else None
    rows = storage.block > 1
    if rows:  # rows of a block (:meth:`Storage.rows`), their widths constants to the compiler
        p, g, buffers = storage.rows(p), storage.rows(g), {k: storage.rows(v, k) for k, v in buffers.items()}
    storage.step(p, g, buffers, rules, s, maximize, decays, bits, valid=ints[2], rows=rows)


def _narrow(p: Tensor) -> bool:
    return p.dtype in (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Bits:
    """Where a parameter's random bits come from: the step's key and the offset of its first
    element (``k·2³²`` for the optimizer's ``k``-th parameter)."""

    key: Tensor
    offset: int | Tensor

    @classmethod
    def of(cls, seed: int, count: int, index: int) -> Bits:
        return cls(_step_key(seed, count), index << 32)

    def uniform(self, n: int, stream: int) -> Tensor:
        """``n`` float32 values uniform in [0, 1) (16 random bits each), from ``stream``."""
        return random_halves(self.key, n, self.offset, stream).to(torch.float32) * 2.0**-16


@functools.lru_cache(maxsize=64)
def _step_key(seed: int, count: int) -> Tensor:
    """:func:`~momenta.precision.step_key`, once per step for all of a group's parameters
    (a few tensor operations each time otherwise; the tensor is never written)."""
    return step_key(seed, count)


def ints(places: Sequence[Bits], valid: Sequence[int]) -> tuple[Tensor, ...]:
    """Each parameter's ``[key, offset, valid]``, the int64 input of its fast-path kernel
    (:func:`step`), from its random bits ``places`` and its ``valid`` element count: rows of
    one tensor made at once over an array (a tensor a parameter took 3.5 µs each, 1 ms a
    step with 300 parameters); a key shared by parameters is read once."""
    if not places:
        return ()
    keys: dict[int, int] = {}
    flat = array.array("q")
    for place, n in zip(places, valid):
        key = keys.get(id(place.key))
        if key is None:
            key = keys[id(place.key)] = int(place.key)
        flat.extend((key, int(place.offset), n))
    return torch.frombuffer(flat, dtype=torch.int64).view(-1, 3).unbind(0)


#: the random bits of a step that draws none (its kernel's ``ints`` input still exists)
NO_BITS = Bits(torch.zeros((), dtype=torch.int64), 0)


def _real(x: Tensor) -> Tensor:
    return torch.view_as_real(x) if x.is_complex() else x


def _shaped(flat: Tensor, p: Tensor) -> Tensor:
    """A flat tensor in ``p``'s memory order, shaped and strided like ``p``."""
    if p.is_contiguous():
        return flat.reshape(p.shape)
    out = torch.empty_like(p, dtype=flat.dtype, memory_format=torch.preserve_format)
    _flat(out).copy_(flat)
    return out


def check(group: Mapping[str, Any], buffers: frozenset[str] | None, params: list[Tensor], where: str = "", elementwise: bool = True) -> None:
    """``state_precision`` and ``param_rounding`` of ``group`` are valid for the optimizer's
    state ``buffers`` (every name a dict gives must be one; ``None``: not checked here) and
    for the group's parameters: ``ValueError`` naming the argument and the value, before
    anything changes."""
    precision = group.get("state_precision")
    rounding = group.get("param_rounding")
    if rounding is not None and rounding not in ROUNDINGS:
        raise ValueError(f"Invalid param_rounding: {rounding!r}{where} (expected one of {', '.join(map(repr, ROUNDINGS))})")
    if isinstance(precision, Mapping):
        choices = dict(precision)
        unknown = sorted(set(choices) - buffers) if buffers is not None else []
        if unknown:
            have = ", ".join(sorted(buffers or ())) or "none"
            raise ValueError(f"Invalid state_precision: {precision!r}{where}: no state buffer {', '.join(map(repr, unknown))} (this optimizer's: {have})")
    elif precision is not None:
        choices = {"": precision}
    else:
        choices = {}
    for value in choices.values():
        if not isinstance(value, str) or value not in PRECISIONS:
            raise ValueError(f"Invalid state_precision: {precision!r}{where} (expected one of {', '.join(map(repr, PRECISIONS))}, or a dict from state key to one)")
    coded = any(v in ("int8", "int4") for v in choices.values())
    for i, p in enumerate(params):
        if (precision is not None or rounding not in (None, "nearest")) and shards.sharded(p):
            why = shards.problem(p) or (None if elementwise else "its optimizer's rules are not elementwise (its step gathers whole parameters)")
            if why:
                raise ValueError(
                    f"Invalid state_precision/param_rounding: {precision!r}/{rounding!r}{where}: parameter {i} "
                    f"is a DTensor and {why}; low-precision state of sharded parameters needs each rank's "
                    "blocks to be its own shard's"
                )
        if coded and p.is_complex():
            raise ValueError(f"Invalid state_precision: {precision!r}{where}: parameter {i} is complex ({p.dtype}); coded states hold real values only")
        if precision is not None and p.is_complex() and not coded:
            if any(_FLOATS[v] != compute_dtype(p) for v in choices.values()):
                raise ValueError(f"Invalid state_precision: {precision!r}{where}: parameter {i} is complex ({p.dtype}); its state stays at its precision")
        if rounding not in (None, "nearest") and p.dtype != torch.bfloat16:
            raise ValueError(f"Invalid param_rounding: {rounding!r}{where}: parameter {i} is {p.dtype}; rounding applies to bfloat16 parameters only")
