"""Compiled kernels: :func:`reference.update` for one rule structure, as one fused loop.

A kernel is generated from the rules, not written by hand: :func:`reference.update` is traced
by ``torch.compile`` (Inductor: one OpenMP/SIMD loop on CPU, Triton on CUDA) with

* every number it reads packed into one 1-D tensor, by name: the rules' hyperparameters
  (``"first.beta"``), the per-step scalars (``"step_size"``, ``"c2"``, ``"eps"`` …) and the
  rules' per-step values (``"nadam_grad"`` …). A scheduler that changes lr or betas causes
  no recompilation, nothing scalar is recomputed per element, and a reordered dataclass
  field cannot feed a kernel the wrong value: inside the kernel every number is looked up
  by its name;
* buffers passed as a dict by name (``{"exp_avg": …, "exp_avg_sq": …}``);
* dynamic shapes: one kernel serves every call, a flat buffer or one parameter's region;
* one code object per rule *structure* (types, flags, names), so that dynamo's cache, which
  lives on the code object, holds one graph per structure and dtype, shared by every
  optimizer instance with that structure.

Whether an optimizer compiles is decided once from its size (:data:`config`), never from
its history: a step after ``load_state_dict`` or in a new process runs the same kernel as
the uninterrupted run, so that resuming is exact to the bit. A step waits for its kernel to
compile (once per structure and process; seconds, or about one from the on-disk cache) and
says so when that takes long. Without a working compiler, or with ``MOMENTA_COMPILE=0``,
the engine runs the same formula eagerly and warns once per rule structure.
"""

from __future__ import annotations

import array
import dataclasses
import itertools
import logging
import operator
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..precision import COMPILE_OPTIONS
from ..rules import Rule
from . import blocks, compat, storage
from .composition import Rules
from .reference import Scalars, update
from .storage import Storage

log = logging.getLogger("momenta")


@dataclass
class Config:
    """Fast-path switches (environment variables give the defaults).

    Attributes:
        flat: keep parameters, gradients and state in flat buffers (``MOMENTA_FLAT``).
        compile: compile kernels with torch.compile (``MOMENTA_COMPILE``).
        compile_min_numel: an optimizer compiles its kernels when its flat buffers hold
            at least this many elements in all (``MOMENTA_COMPILE_MIN_NUMEL``, default
            2**16): below it a model is so small that compiling (seconds) would cost more
            than it saves; the decision is the same at every step.
        direct_min_numel: a gradient that autograd allocated anew (``zero_grad()`` with
            ``set_to_none=True``) is used where it is, by a kernel call of its own, when its
            parameter has at least this many elements (``MOMENTA_DIRECT_MIN_NUMEL``, default
            2**16); smaller ones are copied into the flat gradient buffer, where one call
            serves them all. The break-even: a copy costs about 8 bytes an element of memory
            traffic, a call about 25 µs (compiled kernels only; eager ones always copy).
        native_min_tensors: the per-step checks and gradient copies run in C++
            (:func:`~.compat.native`, built in the background by the C++ compiler that
            compiles the kernels; off with ``compile``) in an optimizer that compiles its
            kernels or holds at least this many tensors on the fast path
            (``MOMENTA_NATIVE_MIN_TENSORS``, default 128): Python's checks cost a few
            hundred nanoseconds a tensor, nothing that matters for a small model.
        slow_compile_s: a compile that takes longer than this is reported on the
            ``momenta`` logger at WARNING level, with how to turn compilation off.
        blocks: 8-bit coded state steps in block kernels of its own (:mod:`.blocks`: one
            pass a block, C++ generated from the rules) where they cover the bucket, else
            in Inductor's kernel (``MOMENTA_BLOCKS``; both give the same bits).
    """

    flat: bool = os.environ.get("MOMENTA_FLAT", "1") != "0"
    compile: bool = os.environ.get("MOMENTA_COMPILE", "1") != "0"
    compile_min_numel: int = int(os.environ.get("MOMENTA_COMPILE_MIN_NUMEL", str(2**16)))
    direct_min_numel: int = int(os.environ.get("MOMENTA_DIRECT_MIN_NUMEL", str(2**16)))
    native_min_tensors: int = int(os.environ.get("MOMENTA_NATIVE_MIN_TENSORS", "128"))
    slow_compile_s: float = 2.0
    blocks: bool = os.environ.get("MOMENTA_BLOCKS", "1") != "0"


config = Config()

# -- rules as (structure, named values) ---------------------------------------------------

PARTS = ("first", "second", "direction", "iterate")


def _is_value(x: Any) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) or isinstance(x, Tensor)


def structure(rule: Rule) -> tuple[Any, ...]:
    """What a kernel is specialised on: the rule's type and its non-numeric fields."""
    parts: list[Any] = [type(rule)]
    for f in dataclasses.fields(rule):  # type: ignore[arg-type]
        value = getattr(rule, f.name)
        if isinstance(value, Rule):
            parts.append((f.name, structure(value)))
        elif _is_value(value):
            parts.append((f.name, "value"))
        else:
            parts.append((f.name, value))
    return tuple(parts)


def values(rule: Rule, prefix: str) -> Iterator[tuple[str, Any]]:
    """The rule's numeric fields (its hyperparameters), named by their path
    (``"first.beta"``, ``"second.inner.beta"``)."""
    for f in dataclasses.fields(rule):  # type: ignore[arg-type]
        value = getattr(rule, f.name)
        if isinstance(value, Rule):
            yield from values(value, f"{prefix}.{f.name}")
        elif _is_value(value):
            yield f"{prefix}.{f.name}", value


def rebuild(template: Rule, prefix: str, new: dict[str, Any]) -> Rule:
    """``template`` with each numeric field taken from ``new`` by its path name."""
    changes = {}
    for f in dataclasses.fields(template):  # type: ignore[arg-type]
        value = getattr(template, f.name)
        if isinstance(value, Rule):
            changes[f.name] = rebuild(value, f"{prefix}.{f.name}", new)
        elif _is_value(value):
            changes[f.name] = new[f"{prefix}.{f.name}"]
    return dataclasses.replace(template, **changes)  # type: ignore[type-var]


def hyperparameters(rules: Rules) -> dict[str, Any]:
    """Every rule's numeric fields by path name (``{"first.beta": 0.9, …}``)."""
    return {name: v for part in PARTS for name, v in values(getattr(rules, part), part)}


def compilable(rules: Rules) -> bool:
    """Elementwise rules made of dataclasses (so their hyperparameters can become kernel
    inputs): :attr:`Rules.compilable`, worked out once per ``Rules`` value. Segmented rules
    (whole-parameter norms) run eagerly."""
    return rules.compilable


#: the per-step scalars a kernel reads, by name (fields of :class:`Scalars`)
STEP_SCALARS = tuple(f.name for f in dataclasses.fields(Scalars) if f.name != "values")
_step_scalars = operator.attrgetter(*STEP_SCALARS)  # a Scalars' numbers, in that order


# -- the kernel body ------------------------------------------------------------------------


def _body(
    template: Rules,
    names: tuple[str, ...],
    value_names: tuple[str, ...],
    maximize: bool,
    decays: bool,
    kept: Storage | None,
    p: Tensor,
    g: Tensor,
    buffers: dict[str, Tensor],
    packed: Tensor,
    ints: Tensor | None,
) -> None:
    x = dict(zip(names, packed.unbind(0)))
    parts = {part: rebuild(getattr(template, part), part, x) for part in PARTS}
    rules = dataclasses.replace(template, **parts)  # type: ignore[arg-type]
    s = Scalars(**{f: x[f] for f in STEP_SCALARS}, values=tuple((n, x[n]) for n in value_names))
    if kept is not None:  # low-precision state: decode, update, encode (one loop)
        assert ints is not None
        storage.step(kept, rules, s, maximize, decays, p, g, buffers, ints)
        return
    updates = update(p, g, buffers, rules, s, maximize=maximize, decays=decays)
    for name, value in updates.items():
        buffers[name].copy_(value)




@dataclass
class _Structure:
    """One rule structure's kernel: compiled on first use, ``None`` once it failed."""

    key: tuple[Any, ...]
    names: tuple[str, ...]  # of the packed scalars, in order
    label: str  # for messages: the optimizer's name, or the rules'
    fn: _Dispatch | None = None
    ran: bool = False  # has run (and so compiled) in this process
    failed: bool = False
    #: the graphs that have run, by the kind of bucket (dtype, device, buffer names): a
    #: later step's kernel calls its graph straight away
    ready: dict[tuple[Any, ...], Callable[..., None]] = dataclasses.field(default_factory=dict)


_structures: dict[tuple[Any, ...], _Structure] = {}  # by key
_by_rules: dict[tuple[Any, ...], tuple[Rules, _Structure, list[Any]]] = {}  # by id(rules) …
_counter = itertools.count()
_lock = threading.Lock()
_warned: set[Any] = set()


def _warn(key: Any, reason: str) -> None:
    """One warning per rule structure (and one for compilation switched off)."""
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(
        f"momenta: {reason}; the fast path runs this optimizer's flat buffers eagerly "
        "(same formula, more memory passes, not bit-identical to the compiled kernel).",
        RuntimeWarning,
        stacklevel=5,
    )


class Kernel:
    """The compiled kernel of one rule structure with one step's numbers: call it on a
    parameter range, ``kernel(p, g, buffers)``; ``False`` if it could not run (compiling
    failed: one warning, and the structure runs eagerly from then on)."""

    def __init__(self, structure: _Structure, packed: Tensor, kind: tuple[Any, ...]) -> None:
        self.structure, self.packed, self.kind = structure, packed, kind
        #: the compiled graph, once it has run (compiled and resolved at the first call)
        self.graph: Callable[..., None] | None = structure.ready.get(kind)

    def __call__(self, p: Tensor, g: Tensor, buffers: dict[str, Tensor], ints: Tensor | None = None) -> bool:
        graph = self.graph
        inputs = (self.packed,) if ints is None else (self.packed, ints)
        if graph is not None:
            graph(p, g, *inputs, *buffers.values())
            return True
        st = self.structure
        if st.fn is None:
            return False
        start = time.perf_counter()
        try:
            graph = st.fn.graph(p, g, buffers, inputs)  # compiles on first use
            graph(p, g, *inputs, *buffers.values())
        except Exception as error:  # no C++ compiler, an op of a user's rule Inductor lacks …
            st.fn, st.failed = None, True
            text = str(error).splitlines()[0][:200] if str(error) else ""
            _warn(st.key, f"compiling the kernel of {st.label} failed ({type(error).__name__}: {text})")
            return False
        self.graph = st.ready[self.kind] = graph
        if not st.ran:
            st.ran = True
            elapsed = time.perf_counter() - start
            if elapsed > config.slow_compile_s:
                log.warning(
                    "momenta: a step of %s waited %.1f s for its kernel to compile (once per "
                    "process and rule structure; the on-disk cache makes later runs faster). "
                    "MOMENTA_COMPILE=0 turns compilation off.",
                    st.label,
                    elapsed,
                )
        return True


def kernel(
    rules: Rules,
    buffers: tuple[str, ...],
    s: Scalars,
    maximize: bool,
    decays: bool,
    dtype: torch.dtype,
    device: torch.device,
    label: str = "",
    kept: Storage | None = None,
) -> Kernel | None:
    """This step's kernel for ``rules`` over ``buffers``, compiled on its first call;
    ``None`` if compilation is off or failed for this structure (the caller runs
    :func:`reference.update` eagerly). ``label`` names the optimizer in messages; ``kept``
    is the buckets' storage (:mod:`.storage`), if any: the kernel then decodes, updates and
    encodes, and takes the int64 input of :func:`.storage.step` after ``packed``."""
    if not config.compile:
        _warn("off", "compiled kernels are off (MOMENTA_COMPILE=0 or momenta.engine.kernels.config.compile = False)")
        return None
    value_names = tuple(name for name, _ in s.values)
    structure_, hyper = _structure(rules, buffers, value_names, maximize, decays, label, kept)
    if structure_.failed:
        return None
    numbers = [*_step_scalars(s), *[v for _, v in s.values], *hyper]
    wide = dtype in (torch.float64, torch.complex128)
    packed = numbers_on(numbers, torch.float64 if wide else torch.float32, device)
    return Kernel(structure_, packed, (dtype, device, buffers))


def numbers_on(numbers: Iterable[Any], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``numbers`` (Python numbers or 0-dim CPU tensors) as a 1-D float32 or float64 tensor on
    ``device``, the way a kernel takes its hyperparameters. On the CPU, a tensor over an array
    of them (a third of ``torch.tensor``'s cost). On a GPU, copied from pinned host memory
    without waiting: ``torch.tensor(..., device=...)`` copies from pageable memory, which
    synchronises the stream (``memcpy_and_sync``), so every step would wait for the backward
    pass to finish on the device before it could queue its kernels."""
    host = torch.frombuffer(array.array("d" if dtype == torch.float64 else "f", map(float, numbers)), dtype=dtype)
    if device.type == "cpu":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def _structure(
    rules: Rules,
    buffers: tuple[str, ...],
    value_names: tuple[str, ...],
    maximize: bool,
    decays: bool,
    label: str,
    kept: Storage | None = None,
) -> tuple[_Structure, list[Any]]:
    """The structure of ``rules`` and their hyperparameter values, worked out once per
    ``Rules`` value (the engine reuses one until a hyperparameter changes)."""
    by_rules = (id(rules), buffers, value_names, maximize, decays, kept, kept is not None and config.blocks)
    cached = _by_rules.get(by_rules)
    if cached is not None and cached[0] is rules:
        return cached[1], cached[2]
    hyper = hyperparameters(rules)
    names = STEP_SCALARS + value_names + tuple(hyper)
    key = (
        *(structure(part) for part in rules.parts()), rules.precondition, rules.weight_decay,
        rules.eps, rules.zero_over_zero, buffers, names, maximize, decays, kept,
        kept is not None and config.blocks,
    )  # fmt: skip
    with _lock:
        found = _structures.get(key)
        if found is None:
            found = _structures[key] = _Structure(key, names, label or _describe(rules))
            found.fn = _Dispatch(dataclasses.replace(rules), names, value_names, maximize, decays, kept)
    if len(_by_rules) > 1024:
        _by_rules.clear()
    _by_rules[by_rules] = (rules, found, list(hyper.values()))
    return found, list(hyper.values())


def _describe(rules: Rules) -> str:
    return " + ".join(type(part).__name__ for part in rules.parts())


class _Dispatch:
    """Compiled :func:`_body` for one rule structure, one graph per kind of input.

    Each kind is traced once with symbolic sizes and compiled by Inductor
    (:func:`compat.compile_graph`): a call runs the generated code directly, without
    dynamo's guards. Where that is not available, ``torch.compile`` (dynamic shapes, one
    fresh code object per structure, so that structures never evict each other)."""

    def __init__(
        self, template: Rules, names: tuple[str, ...], value_names: tuple[str, ...], maximize: bool, decays: bool, kept: Storage | None = None
    ) -> None:
        self.template, self.names, self.value_names = template, names, value_names
        self.maximize, self.decays, self.kept = maximize, decays, kept
        self.graphs: dict[Any, Callable[..., None]] = {}

    def body(self, buffer_names: tuple[str, ...]) -> Callable[..., None]:
        """:func:`_body` over flat positional tensors: ``(p, g, packed, *buffers)``, or with
        a storage ``(p, g, packed, ints, *buffers)``."""
        stored = self.kept is not None

        def kernel(p: Tensor, g: Tensor, packed: Tensor, *rest: Tensor) -> None:
            ints, buffers = (rest[0], rest[1:]) if stored else (None, rest)
            named = dict(zip(buffer_names, buffers))
            _body(self.template, self.names, self.value_names, self.maximize, self.decays, self.kept, p, g, named, packed, ints)

        return kernel

    def graph(self, p: Tensor, g: Tensor, buffers: dict[str, Tensor], inputs: tuple[Tensor, ...]) -> Callable[..., None]:
        """The compiled graph for inputs like these, called as ``graph(p, g, *inputs,
        *buffers.values())`` (``inputs``: ``packed``, and with a storage ``ints``);
        compiled on first use."""
        kind = (p.dtype, p.device, p.dim(), inputs[0].dtype, tuple(buffers), tuple(t.dtype for t in buffers.values()))
        graph = self.graphs.get(kind)
        if graph is None:
            graph = self.graphs[kind] = self._build(p, g, buffers, inputs)
        return graph

    def _build(self, p: Tensor, g: Tensor, buffers: dict[str, Tensor], inputs: tuple[Tensor, ...]) -> Callable[..., None]:
        log.info("momenta: compiling the kernel of %s for %s on %s", _describe(self.template), p.dtype, p.device)
        if self.kept is not None and config.blocks:  # coded or bf16 state: C++ of its own (.blocks)
            block = blocks.kernel(
                self.template, self.names, self.value_names, self.maximize, self.decays, self.kept, p, g, buffers, inputs[0]
            )
            if block is not None:
                return block
        body = self.body(tuple(buffers))
        # examples of a typical size: Inductor's choices (threads, vector width) follow
        # the sizes it is shown; every call then passes its own (a coded buffer's size in
        # proportion: a byte an element, a scale a block)
        n = 2**20
        shape = (n, *p.shape[1:])

        def like(t: Tensor) -> Tensor:
            if t.dim() == 2 and p.dim() == 2:  # rows of a coded state's block
                return torch.empty((n // p.shape[1], t.shape[1]), dtype=t.dtype, device=t.device)
            if t.dim() == p.dim() and t.shape[1:] == p.shape[1:] and t.numel() == p.numel():
                return torch.empty(shape, dtype=t.dtype, device=t.device)
            return torch.empty(n * t.numel() // p.numel(), dtype=t.dtype, device=t.device)

        examples = [like(p), like(g), *(t.clone() for t in inputs), *map(like, buffers.values())]
        # a coded state's options: see momenta.precision.COMPILE_OPTIONS
        options = COMPILE_OPTIONS if self.kept is not None and self.kept.block > 1 else None
        compiled = compat.compile_graph(body, examples, options)
        if compiled is not None:
            return compiled
        n = next(_counter)  # a fresh code object per structure (dynamo caches per code object)
        namespace: dict[str, Any] = {"body": body}
        exec(compile(f"def momenta_kernel_{n}(*args):\n    body(*args)\n", f"<momenta kernel {n}>", "exec"), namespace)
        return torch.compile(namespace[f"momenta_kernel_{n}"], dynamic=True, fullgraph=True, options=options)  # type: ignore[no-any-return]
