"""The formula, and the reference path that applies it one parameter at a time.

    g ← −∇ if maximize else ∇;   g ← g + λ·w (coupled)
    m, V  ← rules(state, g, t);  m̂ = m / c₁(t),  V̂ = V / c₂(t)
    d ← D(m̂ / (√V̂ + ε))         (+ λ·w before D when weight decay is "direction")
    w ← iterate(w, d):  w·(1 − lr·λ) − lr / d(t) · d  by default

:func:`update` is the formula on real tensors. The reference path (:func:`step`) calls it
per parameter with Python-number scalars; the fast path (:mod:`.flat`, :mod:`.kernels`)
calls the same function over flat buffers, eagerly or compiled with 0-dim tensor scalars.
:func:`lazy_step` calls it on the entries of a sparse gradient alone (``sparse = "lazy"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..rules import Updates
from ..rules.base import ROOT_C2, Norm, sqrt, zeros
from . import shards
from .composition import Rules

if TYPE_CHECKING:
    from .storage import Bits, Storage

Scalar = Any  # a Python number on the reference path, a 0-dim tensor in compiled kernels


@dataclass(frozen=True)
class Hyper:
    """The engine's hyperparameters of one param group."""

    lr: float | Tensor
    eps: float | Tensor
    weight_decay: float | Tensor
    maximize: bool

    @classmethod
    def of(cls, group: Mapping[str, Any]) -> Hyper:
        lr = group["lr"]
        if group.get("fused") and isinstance(lr, Tensor) and not lr.requires_grad:
            # torch's fused kernels read a tensor lr as a double; its for-loop keeps the
            # tensor's dtype. Each flag gives torch's numbers for that flag.
            lr = lr.item()
        eps = group.get("eps", 0.0)
        if isinstance(eps, (tuple, list)):  # Adafactor's (ε₁, ε₂): its rules' own, not the engine's
            eps = 0.0
        return cls(
            lr=lr,
            eps=eps,
            weight_decay=group.get("weight_decay", 0.0),
            maximize=bool(group.get("maximize", False)),
        )

    @property
    def decays(self) -> bool:
        """Weight decay is on (a host-side check: λ is a number, or a tensor)."""
        return isinstance(self.weight_decay, Tensor) or self.weight_decay != 0


@dataclass(frozen=True)
class Scalars:
    """The per-step numbers of one step, computed once on the host (never per element)."""

    step_size: Scalar  # lr / (c₁·d(t)), d(t) the product of every part's decay
    lr: Scalar  # the group's learning rate
    c2: Scalar  # V̂ = V / c₂
    root_c2: Scalar  # √c₂, taken here once (in float64 for numbers, as torch does)
    eps: Scalar
    weight_decay: Scalar  # λ
    shrink: Scalar  # 1 − lr·λ (decoupled)
    t: Scalar  # the step, 1-based (NaN when not counted)
    #: this step's values of the rules' scalar state (:meth:`Rule.advance`), by name
    values: tuple[tuple[str, Scalar], ...] = ()

    @classmethod
    def of(cls, rules: Rules, h: Hyper, t: float, values: Mapping[str, Scalar] | None = None) -> Scalars:
        divisor = rules.first.correction(t)
        for part in rules.decaying:  # the others' d(t) is 1
            divisor = divisor * part.decay(t)
        # lr / (c₁·d(t)): one division of lr, in lr's own precision (a float32 tensor lr
        # stays float32 here, as in torch)
        step_size = h.lr / divisor
        if isinstance(step_size, Tensor) and not step_size.requires_grad:
            step_size = step_size.item()
        c2 = rules.second.correction(t)
        return cls(
            step_size=step_size,
            lr=h.lr,
            c2=c2,
            root_c2=sqrt(c2),
            eps=h.eps,
            weight_decay=h.weight_decay,
            shrink=1 - h.lr * h.weight_decay,
            t=t,
            values=tuple((values or {}).items()),
        )


def real(x: Tensor) -> Tensor:
    """Complex tensors are optimised as their real view (real and imaginary parts)."""
    return torch.view_as_real(x) if x.is_complex() else x


def divide(m: Tensor, v: Tensor | None, rules: Rules, s: Scalars, state: Mapping[str, Any]) -> Tensor:
    """``m / (√V̂ + ε)`` (the V rule's denominator); ``m`` when V = 1."""
    if v is None:
        return m
    denom = rules.second.denominator(v, s.c2, s.eps, rules.eps, s.t, state)
    if rules.zero_over_zero:
        return torch.where(denom == 0, torch.zeros_like(m), m / denom)
    return m / denom


def moments(
    rules: Rules, buffers: Mapping[str, Any], g: Tensor, p: Tensor, s: Scalars, decays: bool, norm: Norm | None = None
) -> tuple[Tensor, Updates]:
    """The direction ``D(m̂ / (√V̂ + ε))`` (before lr and c₁) and the rules' new buffers.
    ``norm``: each element's whole-parameter norm, for a segmented direction on flat buffers."""
    first, second = rules.first, rules.second

    def direction(x: Tensor, v: Tensor | None) -> tuple[Tensor, Updates]:
        d = divide(x, v, rules, s, buffers)
        if decays and rules.weight_decay == "direction":
            d = d + s.weight_decay * p
        if norm is not None and rules.direction.segmented:
            return rules.direction.apply(buffers, d, p, s.t, norm=norm)  # type: ignore[call-arg]
        return rules.direction.apply(buffers, d, p, s.t)

    if rules.precondition == "moment":
        m, updates = first.update(buffers, g, s.t)
        v, more = second.update(buffers, g, m, s.t)
        d, most = direction(m, v)
        return d, {**updates, **more, **most}
    v, updates = second.update(buffers, g, None, s.t)
    u, more = direction(g, v)
    m, most = first.update(buffers, u, s.t)
    return m, {**updates, **more, **most}


def update(
    p: Tensor,
    g: Tensor,
    buffers: Mapping[str, Tensor],
    rules: Rules,
    s: Scalars,
    *,
    maximize: bool,
    decays: bool,
    norm: Norm | None = None,
) -> Updates:
    """One step of the formula on real tensors: moves ``p`` in place, returns the new buffers.
    ``norm`` replaces the whole-parameter norm of a segmented direction (flat buffers hold
    many parameters; :meth:`Layout.segments`)."""
    if maximize:
        g = -g
    if decays and rules.weight_decay == "coupled":
        g = g + s.weight_decay * p
    buffers = {**buffers, **dict(s.values), ROOT_C2: s.root_c2}  # this step's values
    d, updates = moments(rules, buffers, g, p, s, decays, norm)
    shrink = s.shrink if decays and rules.weight_decay == "decoupled" else None
    (base, scale, direction), more = rules.iterate.apply(buffers, p, d, s.step_size, s.lr, shrink, s.t)
    if base is not p:
        p.copy_(base)
    if isinstance(scale, Tensor) or torch.compiler.is_compiling():
        # kernels, an lr that autograd follows, or a step traced by torch.compile: there a
        # Python-number alpha becomes a symbolic float, which torch 2.13's graph cache can
        # serve stale (a compiled training step then drifts from eager)
        p.add_(scale * direction)
    else:
        p.add_(direction, alpha=scale)
    return {**updates, **more}


def init_state(rules: Rules, p: Tensor, state: MutableMapping[str, Any], step: Tensor) -> None:
    """Fill an empty state: ``step`` (when counted), the rules' scalar state (0-dim tensors
    like ``step``), then the rules' buffers."""
    if rules.count_steps:
        state["step"] = step
    for part in rules.parts():
        for name, value in part.scalars().items():
            state[name] = torch.full_like(step, value)
    for part in rules.parts():
        for name, buffer in part.init(real(p)).items():
            state[name] = torch.view_as_complex(buffer) if p.is_complex() else buffer


def advance(rules: Rules, scalars: Mapping[str, Tensor], t: float) -> tuple[dict[str, Any], dict[str, Scalar]]:
    """The rules' scalar state one step on (:meth:`Rule.advance`): ``(new scalar state,
    this step's values)``; the caller writes the new state."""
    new: dict[str, Any] = {}
    values: dict[str, Scalar] = {}
    for part in rules.advancing:  # the others keep no scalar state and give no values
        state, now = part.advance({name: scalars[name] for name in part.scalars()}, t)
        new.update(state)
        values.update(now)
    return new, values


def assign(target: Tensor, value: Any) -> None:
    """``target`` (scalar state, in place) takes ``value``, a tensor or a number."""
    target.copy_(value) if isinstance(value, Tensor) else target.fill_(value)


def write(state: MutableMapping[str, Any], updates: Updates, complex_: bool) -> None:
    """The engine's one place of mutation: new buffer values into the state, in place."""
    for name, value in updates.items():
        if name in state:
            real(state[name]).copy_(value)
        else:  # a buffer born at its first update (torch's momentum_buffer)
            value = value.detach().clone(memory_format=torch.preserve_format)
            state[name] = torch.view_as_complex(value) if complex_ else value


def _start(state: MutableMapping[str, Any], rules: Rules) -> tuple[float, dict[str, Scalar]]:
    """Count the step (``t``, NaN when not counted) and move the rules' scalar state."""
    t = math.nan
    if rules.count_steps:
        state["step"] += 1
        t = float(state["step"])
    with torch.no_grad():
        new, values = advance(rules, state, t)
        for name, value in new.items():
            assign(state[name], value)
    return t, values


def gathered_step(p: Any, grad: Any, state: MutableMapping[str, Any], rules: Rules, h: Hyper) -> None:
    """:func:`step` for a DTensor parameter (FSDP2's shard) under rules that are not
    elementwise: norms, rows and columns, matrix products are of the whole parameter, so
    the parameter, its gradient and its sharded state are gathered whole (one parameter at
    a time), stepped as plain tensors, and each rank keeps its own shard of the result."""
    from torch.distributed.tensor import Replicate, distribute_tensor

    sharded = {k: v for k, v in state.items() if shards.sharded(v)}
    whole = {k: (v.full_tensor() if k in sharded else v) for k, v in state.items()}
    w = p.detach().full_tensor()
    step(w, grad.full_tensor(), whole, rules, h)

    def keep(target: Any, value: Tensor) -> None:  # this rank's shard of the whole result
        local = distribute_tensor(value, target.device_mesh, target.placements, src_data_rank=None)
        target.to_local().copy_(local.to_local())

    keep(p.detach(), w)
    scalars = rules.scalar_names()
    for k, v in whole.items():
        if k in sharded:
            keep(sharded[k], v)
        elif k not in scalars and (k not in state or state[k] is not v):  # born this step:
            # sharded like its parameter (a buffer shaped otherwise is replicated)
            placements = p.placements if v.shape == p.shape else [Replicate()] * p.device_mesh.ndim
            state[k] = distribute_tensor(v, p.device_mesh, placements, src_data_rank=None)


def step(
    p: Tensor,
    grad: Tensor,
    state: MutableMapping[str, Any],
    rules: Rules,
    h: Hyper,
    storage: Storage | None = None,
    bits: Bits | None = None,
) -> None:
    """One step of one parameter ``p`` with gradient ``grad``; state is updated in place.
    With a ``storage`` (:mod:`.storage`: low-precision state, rounded weights), its buffers
    are read from it and written back into it, and ``bits`` gives the random bits of its
    stochastic rounding."""
    if not rules.elementwise and shards.sharded(p):
        return gathered_step(p, grad, state, rules, h)
    t, values = _start(state, rules)
    scalar_names = rules.scalar_names()
    s = Scalars.of(rules, h, t, values)
    if storage is not None:
        return storage.step(p, grad, state, rules, s, h.maximize, h.decays, bits, scalar_names)
    buffers = {k: real(v) for k, v in state.items() if k not in scalar_names}
    if torch.is_grad_enabled():  # differentiable=True: autograd may have saved the buffers,
        buffers = {k: v.clone() for k, v in buffers.items()}  # which are written below
    updates = update(real(p), real(grad), buffers, rules, s, maximize=h.maximize, decays=h.decays)
    write(state, updates, p.is_complex())


def lazy_step(p: Tensor, grad: Tensor, state: MutableMapping[str, Any], rules: Rules, h: Hyper) -> None:
    """One step of ``p`` taken only where its sparse (COO) gradient has entries.

    The values of ``p`` and of every state buffer are gathered at the gradient's indices,
    stepped by :func:`update` as one small parameter of their own, and scattered back:
    entries without a gradient keep their values and their state (a "lazy" step, torch's
    SparseAdam). Elementwise rules only: a norm over the gathered entries would mean nothing.
    """
    if not rules.elementwise:
        raise ValueError(f"a lazy sparse step needs elementwise rules, got {rules!r}")
    grad = grad.coalesce()  # each entry once: the formula is not linear in g
    index = tuple(grad.indices())  # one index tensor per sparse dimension
    t, values = _start(state, rules)
    scalar_names = rules.scalar_names()
    buffers = {k: real(v)[index] for k, v in state.items() if k not in scalar_names}
    w = real(p)[index]
    updates = update(
        w, real(grad.values()), buffers, rules, Scalars.of(rules, h, t, values), maximize=h.maximize, decays=h.decays
    )
    real(p).index_put_(index, w)
    for name, value in updates.items():
        if name not in state:  # a buffer born at its first update: 0 where no gradient has been
            state[name] = zeros(p)
        real(state[name]).index_put_(index, value)
