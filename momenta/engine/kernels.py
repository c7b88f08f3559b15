"""Compiled kernels: :func:`reference.update` for one rule structure, as one fused loop.

A kernel is generated from the rules, not written by hand: :func:`reference.update` is traced
by ``torch.compile`` (Inductor: one OpenMP/SIMD loop on CPU, Triton on CUDA) with

* the rules' hyperparameters (every float field of a rule) and the per-step scalars
  (step size, bias correction, ε, λ) passed as 0-dim tensors: a scheduler that changes lr or
  betas causes no recompilation, and nothing scalar is recomputed per element;
* dynamic shapes: one kernel serves flat buffers of every length;
* one code object per rule *structure* (types, flags, buffer names), so that dynamo's cache,
  which lives on the code object, holds exactly one graph per structure and dtype, shared by
  every optimizer instance with that structure.

Compiling costs seconds, so the engine asks for a kernel only for large buckets
(:data:`config.compile_min_numel`). Without a working compiler, or with compilation off
(``MOMENTA_COMPILE=0``), the engine runs the same function eagerly and warns once.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..rules import Rule
from .composition import Rules
from .reference import Scalars, update


@dataclass
class Config:
    """Fast-path switches (environment variables give the defaults).

    Attributes:
        flat: keep parameters, gradients and state in flat buffers (``MOMENTA_FLAT``).
        compile: compile kernels with torch.compile (``MOMENTA_COMPILE``).
        compile_min_numel: compile only for buckets of at least this many elements
            (``MOMENTA_COMPILE_MIN_NUMEL``, default 2**20).
        per_tensor_min_numel: gradients that autograd allocated anew (``zero_grad()`` with
            ``set_to_none=True``) are not copied into the flat buffer when the bucket's
            tensors hold this many elements on average (``MOMENTA_PER_TENSOR_MIN_NUMEL``,
            default 2**17): the compiled kernel runs once per tensor instead, since a copy
            would cost more memory traffic than the calls cost time.
    """

    flat: bool = os.environ.get("MOMENTA_FLAT", "1") != "0"
    compile: bool = os.environ.get("MOMENTA_COMPILE", "1") != "0"
    compile_min_numel: int = int(os.environ.get("MOMENTA_COMPILE_MIN_NUMEL", str(2**20)))
    per_tensor_min_numel: int = int(os.environ.get("MOMENTA_PER_TENSOR_MIN_NUMEL", str(2**17)))


config = Config()

# -- rules as (structure, values) ---------------------------------------------------------


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


def values(rule: Rule) -> Iterator[Any]:
    """The rule's numeric fields (its hyperparameters), depth first."""
    for f in dataclasses.fields(rule):  # type: ignore[arg-type]
        value = getattr(rule, f.name)
        if isinstance(value, Rule):
            yield from values(value)
        elif _is_value(value):
            yield value


def rebuild(template: Rule, new: Iterator[Any]) -> Rule:
    """``template`` with its numeric fields taken, in order, from ``new``."""
    changes = {}
    for f in dataclasses.fields(template):  # type: ignore[arg-type]
        value = getattr(template, f.name)
        if isinstance(value, Rule):
            changes[f.name] = rebuild(value, new)
        elif _is_value(value):
            changes[f.name] = next(new)
    return dataclasses.replace(template, **changes)  # type: ignore[type-var]


def compilable(rules: Rules) -> bool:
    """Rules made of dataclasses (so their hyperparameters can become kernel inputs)."""
    return all(dataclasses.is_dataclass(r) for r in rules.parts())


# -- the kernel body ------------------------------------------------------------------------


def _body(
    template: Rules,
    names: tuple[str, ...],
    value_names: tuple[str, ...],
    maximize: bool,
    decays: bool,
    p: Tensor,
    g: Tensor,
    buffers: tuple[Tensor, ...],
    hyper: tuple[Tensor, ...],
    scalars: tuple[Tensor, ...],
    values: tuple[Tensor, ...],
) -> None:
    new = iter(hyper)
    parts = {name: rebuild(getattr(template, name), new) for name in PARTS}
    rules = dataclasses.replace(template, **parts)  # type: ignore[arg-type]
    state = dict(zip(names, buffers))
    s = Scalars(*scalars, values=tuple(zip(value_names, values)))  # type: ignore[misc,arg-type]
    updates = update(p, g, state, rules, s, maximize=maximize, decays=decays)
    for name, value in updates.items():
        state[name].copy_(value)


PARTS = ("first", "second", "direction", "iterate")

Kernel = Callable[..., None]

_kernels: dict[Any, Kernel | None] = {}  # None: this structure failed to compile
_counter = itertools.count()
_lock = threading.Lock()
_warned = False


def _warn_once(reason: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"momenta: compiled kernels are off ({reason}); the fast path runs its flat "
            "buffers eagerly (same results, more memory passes).",
            RuntimeWarning,
            stacklevel=4,
        )


def kernel(
    rules: Rules,
    names: tuple[str, ...],
    value_names: tuple[str, ...],
    maximize: bool,
    decays: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> Kernel | None:
    """The compiled kernel for this structure, compiling it on first use; ``None`` if
    compilation is off or failed (then the caller runs :func:`reference.update` eagerly)."""
    if not config.compile:
        _warn_once("MOMENTA_COMPILE=0 or momenta.engine.config.compile = False")
        return None
    template = dataclasses.replace(rules)  # Rules is frozen: hashable key parts below
    key = (
        *(structure(part) for part in rules.parts()), rules.precondition, rules.weight_decay,
        rules.eps, rules.zero_over_zero, names, value_names, maximize, decays,
    )  # fmt: skip
    with _lock:
        if key in _kernels:
            return _kernels[key]
        # A fresh code object per structure: dynamo caches graphs per code object, so
        # structures never evict each other and instances of one structure share one.
        n = next(_counter)
        namespace: dict[str, Any] = {
            "_body": _body, "TEMPLATE": template, "NAMES": names, "VALUE_NAMES": value_names,
            "MAXIMIZE": maximize, "DECAYS": decays,
        }  # fmt: skip
        source = (
            f"def momenta_kernel_{n}(p, g, buffers, hyper, scalars, values):\n"
            "    _body(TEMPLATE, NAMES, VALUE_NAMES, MAXIMIZE, DECAYS, p, g, buffers, hyper, scalars, values)\n"
        )
        exec(compile(source, f"<momenta kernel {n}>", "exec"), namespace)
        fn = torch.compile(namespace[f"momenta_kernel_{n}"], dynamic=True, fullgraph=True)
        _kernels[key] = fn
        return fn


Inputs = tuple[tuple[Tensor, ...], tuple[Tensor, ...], tuple[Tensor, ...]]


def inputs(rules: Rules, s: Scalars, dtype: torch.dtype, device: torch.device) -> Inputs:
    """The kernel's scalar inputs for one step: the rules' hyperparameters, the per-step
    scalars and the values of the rules' scalar state, as 0-dim tensors (float64 for
    float64 parameters, else float32)."""
    scalar_dtype = torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32

    def as_tensor(x: Any) -> Tensor:
        return torch.as_tensor(x, dtype=scalar_dtype, device=device)

    hyper = tuple(as_tensor(v) for v in itertools.chain.from_iterable(values(part) for part in rules.parts()))
    scalars = tuple(as_tensor(getattr(s, f.name)) for f in dataclasses.fields(s) if f.name != "values")
    return hyper, scalars, tuple(as_tensor(v) for _, v in s.values)


def run(fn: Kernel, p: Tensor, g: Tensor, buffers: tuple[Tensor, ...], scalar_inputs: Inputs) -> bool:
    """Run a compiled kernel; ``False`` (after one warning) if it cannot be compiled here:
    that structure then runs eagerly from now on, the others keep their kernels."""
    try:
        fn(p, g, buffers, *scalar_inputs)
    except Exception as error:  # no C++ compiler, an unsupported op in a user's rule, ...
        with _lock:
            for key, compiled in _kernels.items():
                if compiled is fn:
                    _kernels[key] = None
        _warn_once(f"torch.compile failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
        return False
    return True
