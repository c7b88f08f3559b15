"""What an optimizer is doing: its m, its V and the step they make, read from its state.

For each param group (and, on request, each parameter), after a step ``t``:

    m         the first-moment buffer its rule keeps (EMA's ``exp_avg``, Momentum's
              ``momentum_buffer`` …), or ``g`` itself when m = g (the gradient in ``p.grad``:
              the last step's, unless zeroed since)
    m̂ = m / c₁(t)                      c₁ the bias correction of the rule that keeps m
    √V̂ + ε   the V rule's own denominator of its buffer (ε inside or outside, Adamax's u,
              RAdam's r_t); √V̂ is the same with ε = 0, and 1 where V = 1
    s = lr/d(t) · m̂ / (√V̂ + ε)        the step the moments make, per coordinate (d(t): the
              rules' lr decay; with ``precondition="gradient"`` m is made from g/√V̂ already,
              s = lr/d(t)·m̂); before the direction and iterate parts (Lion's sign, LAMB's
              trust ratio, Muon's orthogonalisation, decoupled weight decay)
    r = |s| / |w|                      the update-to-weight ratio, where w ≠ 0
    Δw = w − w_before                  the last update as it moved the weights (all parts
              included): kept by an :class:`Inspector`, which copies the weights before each step

and reports ‖m‖, rms(m) = ‖m‖/√n, mean √V̂, min / median / max of r, and rms(Δw).

    inspector = momenta.Inspector(optimizer)     # any loop: a step pre-hook, no other change
    for x, y in batches:
        loss = model(x, y); loss.backward(); optimizer.step(); optimizer.zero_grad()
        reading = inspector.read()               # or momenta.inspect(optimizer), without Δw
        reading.total.ratio_median, reading.groups[0].m_norm, reading.as_dict()

Which buffer is m and which is V is the rules' to say (:func:`moments`): a rule names its
buffer in its ``name`` field (``EMA(name="exp_avg")``, ``SumSq(name="sum")``, ``AMSGrad``'s
running maximum); wrappers pass on their inner rule's; m = g for :class:`~momenta.rules.Gradient`,
V = 1 for :class:`~momenta.rules.One`. Three rules keep something other than m, and say so in
:data:`FIRST_MOMENT_BUFFER` below (Adadelta's Δ, Rprop's step sizes, AdEMAMix's two EMAs).

Cost: on the fast path, a dot product over each flat m buffer, a few elementwise passes over
a fixed strided sample of at most :data:`SAMPLE` coordinates per buffer (mean √V̂, the
ratios: exact below that size), one host read per device for everything; elsewhere (the
reference path, per-parameter readings) the same arithmetic per parameter. An
:class:`Inspector`'s hook adds one copy of the weights to every step.
``benchmarks/bench_inspect.py`` (AdamW, one thread, median of interleaved rounds, on this
project's 2-core CPU machine): a read costs 3.3 ms on a 120K-parameter GPT (28 tensors;
5.7 steps), 29 ms on a 10.7M GPT (3.3 steps), 8 ms on a 604-tensor MLP (6.5 steps); the
hook makes a step 0–5 ms slower (the copy). Every step on small models, every few steps on
large ones.

This is a module of its own (not part of ``momenta.compare``): it reads any momenta
optimizer in any training loop; ``momenta compare --inspect`` is one user of it.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import torch
from torch import Tensor

from momenta.engine import Optimizer, Rules
from momenta.engine.layout import Layout
from momenta.engine.reference import Hyper, real
from momenta.rules import EMAMix, Gradient, One, Resilient, Rule
from momenta.rules.base import Wrapping
from momenta.rules.first import Delta

__all__ = ["FIRST_MOMENT_BUFFER", "GRADIENT", "Inspector", "Moments", "Reading", "Stats", "inspect", "moments"]

#: m is the gradient itself (no buffer): read from ``p.grad``
GRADIENT: Final = "g"
#: V = 1 (no division)
ONE: Final = "1"

#: First-moment rules whose named state is not m: what stands for m, as a field of the rule
#: naming the buffer, or ``None`` (no buffer is m). Adadelta's ``acc_delta`` averages squared
#: steps; Rprop keeps the last gradient's sign and a step size per coordinate; AdEMAMix's m
#: is its fast EMA (bias-corrected) plus α times its slow one: its fast EMA stands for m.
FIRST_MOMENT_BUFFER: dict[type[Rule], str | None] = {Delta: None, Resilient: None, EMAMix: "fast"}


@dataclass(frozen=True)
class Moments:
    """Where a param group's m and V are: buffer names, :data:`GRADIENT` (m = g),
    ``"1"`` (V = 1) or ``None`` (not kept as a buffer of the parameter's shape), and the rule
    that keeps m (its bias correction divides it)."""

    m: str | None
    V: str | None
    m_rule: Rule | None


def _innermost(rule: Rule) -> Rule:
    while isinstance(rule, Wrapping):
        rule = rule.inner
    return rule


def _named(rule: Rule) -> str | None:
    """The buffer the rule names in its ``name`` field, if it keeps it."""
    name = getattr(rule, "name", None)
    return name if isinstance(name, str) and name in rule.buffers() else None


def moments(rules: Rules) -> Moments:
    """Which of the rules' buffers hold m and V (see the module docstring)."""
    first = _innermost(rules.first)
    if isinstance(first, Gradient):
        m: str | None = GRADIENT
    elif type(first) in FIRST_MOMENT_BUFFER:
        attribute = FIRST_MOMENT_BUFFER[type(first)]
        m = getattr(first, attribute) if attribute else None
    else:
        m = _named(first)
    v: str | None = None
    rule: Rule = rules.second
    while True:  # the outermost rule that names a buffer (AMSGrad's maximum, not its inner V)
        if isinstance(rule, One):
            v = ONE
            break
        v = _named(rule)
        if v is not None or not isinstance(rule, Wrapping):
            break
        rule = rule.inner
    if v not in (None, ONE) and not rules.second.elementwise:
        v = None  # factored: row and column statistics, not a V per coordinate
    return Moments(m, v, first if m is not None else None)


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Stats:
    """The quantities of the module docstring over ``numel`` coordinates: those of the
    parameters with a state (m = g: with a gradient). ``None``: not defined for this
    optimizer, or nothing stepped yet."""

    numel: int
    m_norm: float | None
    m_rms: float | None
    sqrt_v_mean: float | None
    ratio_min: float | None
    ratio_median: float | None
    ratio_max: float | None
    update_rms: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: the quantities, in the order of :class:`Stats` (the columns of ``inspect.csv``)
QUANTITIES = ("m_norm", "m_rms", "sqrt_v_mean", "ratio_min", "ratio_median", "ratio_max", "update_rms")


@dataclass(frozen=True)
class GroupReading:
    """One param group: its :class:`Stats`, where its m and V are, and (on request) each
    parameter's, in the group's order (``None`` for a parameter without state)."""

    index: int
    stats: Stats
    moments: Moments
    step: float | None
    params: tuple[Stats | None, ...] | None = None

    def __getattr__(self, name: str) -> Any:  # reading.groups[0].m_norm
        if name in QUANTITIES or name == "numel":
            return getattr(self.stats, name)
        raise AttributeError(name)


@dataclass(frozen=True)
class Reading:
    """What :func:`inspect` returns: every group's reading and the whole optimizer's."""

    groups: tuple[GroupReading, ...]
    total: Stats

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total.as_dict(),
            "groups": [
                {
                    "index": g.index,
                    "step": g.step,
                    "m": g.moments.m,
                    "V": g.moments.V,
                    **g.stats.as_dict(),
                    **({"params": [p.as_dict() if p else None for p in g.params]} if g.params is not None else {}),
                }
                for g in self.groups
            ],
        }


# ---------------------------------------------------------------- arithmetic


@dataclass
class _Partial:
    """Sums over some coordinates, as tensors (read on the host once, at the end)."""

    numel: int = 0
    m_sq: list[Tensor] = field(default_factory=list)
    sqrt_v: list[Tensor] = field(default_factory=list)
    ratios: list[Tensor] = field(default_factory=list)
    update_sq: list[Tensor] = field(default_factory=list)
    has_m: bool = False
    has_v: bool = False

    def add(self, other: _Partial) -> None:
        self.numel += other.numel
        self.m_sq += other.m_sq
        self.sqrt_v += other.sqrt_v
        self.ratios += other.ratios
        self.update_sq += other.update_sq
        self.has_m |= other.has_m
        self.has_v |= other.has_v


@dataclass(frozen=True)
class _Spec:
    """A group's rules and numbers, as the arithmetic needs them."""

    rules: Rules
    moments: Moments
    lr: float
    eps: float


#: above this many coordinates, a buffer's per-coordinate quantities (mean √V̂, the ratios)
#: are read on a fixed strided sample of about this many (every k-th coordinate)
SAMPLE = 2**16


def _strided(n: int, device: torch.device) -> Tensor | None:
    """Every k-th index of ``n``, k = ⌈n / SAMPLE⌉ (``None`` when n ≤ SAMPLE: all of them)."""
    if n <= SAMPLE:
        return None
    key = (n, device)
    found = _samples.get(key)
    if found is None:
        found = _samples[key] = torch.arange(0, n, -(-n // SAMPLE), device=device)
    return found


_samples: dict[tuple[int, torch.device], Tensor] = {}


def _sums(
    spec: _Spec, m: Tensor | None, v: Tensor | None, w: Tensor, t: float, mask: Tensor | None, numel: int
) -> _Partial:
    """The module docstring's quantities over 1-D ``m``, ``v``, ``w`` (``mask``: the
    coordinates that count; the others hold zeros in ``m`` and ``v``). ‖m‖ is over every
    coordinate; mean √V̂ and the ratios over :data:`SAMPLE` of them when there are more."""
    out = _Partial(numel=numel)
    rules = spec.rules
    if m is not None:
        out.has_m = True
        out.m_sq.append(torch.dot(m, m) if m.dtype.is_floating_point else (m * m).sum())
    index = _strided(w.numel(), w.device)
    if index is not None:
        m = m[index] if m is not None else None
        v = v[index] if v is not None else None
        w = w[index]
        mask = mask[index] if mask is not None else None
        # the sample's sum of √V̂, scaled to every coordinate (a tensor: no host read here)
        weight: float | Tensor = numel / (mask.sum().clamp_min(1) if mask is not None else index.numel())
    else:
        weight = 1.0
    sqrt_v: Tensor | None = None
    denom: Tensor | None = None
    if spec.moments.V == ONE:
        out.has_v = True
        out.sqrt_v.append(torch.tensor(float(numel), dtype=torch.float64, device=w.device))
    elif v is not None:
        out.has_v = True
        second = rules.second
        c2 = second.correction(t)
        _, values = second.advance({name: torch.zeros(()) for name in second.scalars()}, t)
        sqrt_v = second.denominator(v, c2, 0.0, rules.eps, t, values)
        denom = sqrt_v + spec.eps if rules.eps == "outside" else second.denominator(v, c2, spec.eps, rules.eps, t, values)
        kept = sqrt_v if mask is None else torch.where(mask, sqrt_v, 0.0)
        out.sqrt_v.append(kept.sum(dtype=torch.float64) * weight)
    if m is None or spec.moments.m_rule is None or spec.moments.V is None:
        return out  # no m, or a V that is not per coordinate (factored): no per-coordinate step
    decay = 1.0
    for part in rules.parts():
        decay = decay * float(part.decay(t))
    scale = spec.lr / decay / float(spec.moments.m_rule.correction(t))
    step = m.abs() * scale
    if denom is not None and rules.precondition == "moment":
        step = step / denom
        if rules.zero_over_zero:
            step = torch.where(denom == 0, 0.0, step)
    valid = w != 0
    if mask is not None:
        valid &= mask
    out.ratios.append((step / w.abs())[valid])
    return out


def _total(p: _Partial, update_sq: Tensor | None) -> list[Tensor]:
    """The 0-dim tensors a :class:`Stats` is made of (NaN for 'none'), in one device's dtype."""
    device = p.m_sq[0].device if p.m_sq else (p.ratios[0].device if p.ratios else torch.device("cpu"))
    nan = torch.tensor(math.nan, dtype=torch.float64, device=device)

    def sum_of(xs: list[Tensor]) -> Tensor:
        return torch.stack([x.to(device, torch.float64) for x in xs]).sum() if xs else nan

    ratios = torch.cat([r.to(device) for r in p.ratios]) if p.ratios else None
    if ratios is not None and ratios.numel():
        low, mid, high = ratios.amin().double(), ratios.median().double(), ratios.amax().double()
    else:
        low = mid = high = nan
    updates = update_sq.to(device, torch.float64) if update_sq is not None else nan
    return [sum_of(p.m_sq) if p.has_m else nan, sum_of(p.sqrt_v) if p.has_v else nan, low, mid, high, updates]


def _stats(numel: int, values: list[float]) -> Stats:
    m_sq, sqrt_v, low, mid, high, update_sq = (None if math.isnan(x) else x for x in values)
    n = max(numel, 1)
    return Stats(
        numel=numel,
        m_norm=math.sqrt(m_sq) if m_sq is not None else None,
        m_rms=math.sqrt(m_sq / n) if m_sq is not None else None,
        sqrt_v_mean=sqrt_v / n if sqrt_v is not None else None,
        ratio_min=low,
        ratio_median=mid,
        ratio_max=high,
        update_rms=math.sqrt(update_sq / n) if update_sq is not None else None,
    )


# ---------------------------------------------------------------- where the buffers are


def _step_of(state: Mapping[str, Any]) -> float:
    step = state.get("step")
    return float(step) if step is not None else math.nan


def _parameter(spec: _Spec, p: Tensor, state: Mapping[str, Any]) -> _Partial | None:
    """The sums of one parameter, from ``optimizer.state[p]`` (views of flat buffers on the
    fast path); ``None`` for a parameter without state."""
    moments = spec.moments
    if not state and moments.m != GRADIENT:
        return None
    flat = lambda x: real(x.detach()).reshape(-1)  # noqa: E731
    m: Tensor | None = None
    if moments.m == GRADIENT:
        m = flat(p.grad) if p.grad is not None and not p.grad.is_sparse else None
    elif moments.m is not None and isinstance(state.get(moments.m), Tensor):
        m = flat(state[moments.m])
    v = flat(state[moments.V]) if moments.V not in (None, ONE) and isinstance(state.get(moments.V), Tensor) else None
    return _sums(spec, m, v, flat(p), _step_of(state), None, p.numel() * (2 if p.is_complex() else 1))


#: a cached mask of the coordinates of a layout's parameters with a state (gaps excluded)
_masks: weakref.WeakKeyDictionary[Layout, tuple[tuple[int, ...], Tensor]] = weakref.WeakKeyDictionary()


def _mask(layout: Layout, owners: list[int]) -> Tensor:
    found = _masks.get(layout)
    if found is None or found[0] != tuple(owners):
        mask = torch.zeros(layout.numel, dtype=torch.bool, device=layout.device)
        for i in owners:
            mask[layout.offsets[i] : layout.offsets[i] + layout.sizes[i]] = True
        found = _masks[layout] = (tuple(owners), mask)
    return found[1]


def _bucket(spec: _Spec, optimizer: Optimizer, bucket: Any) -> _Partial | None:
    """The sums of a flat bucket over its flat buffers, or ``None`` if they are not what
    ``optimizer.state`` holds (then the caller reads the parameters one by one)."""
    state = bucket.state
    layout: Layout = bucket.layout
    moments = spec.moments
    if layout.dtype.is_complex or not state.owners or not state.current(optimizer.state, state.owners):
        return None
    t = state.uniform_step()
    if t is None:
        steps = state.scalars.get("step")
        if steps is not None:
            values = set(steps[state.owners].tolist())
            if len(values) != 1:
                return None  # parameters at different steps: each has its own corrections
            t = values.pop()
        else:
            t = math.nan
    m: Tensor | None = None
    if moments.m == GRADIENT:
        grads = [p.grad for p in bucket.params]
        if all(view is not None and g is view for g, view in zip(grads, bucket.grad_views)):  # no large ones
            m = bucket.grad
        elif all(g is None or (not g.is_sparse and g.dtype == layout.dtype) for g in grads):
            m = layout.zeros()
            for region, g in zip(layout.regions(m), grads):
                if g is not None:
                    region.copy_(g)
        else:
            return None
    elif moments.m is not None:
        m = state.buffers.get(moments.m)
        if m is None:
            return None
    v = None
    if moments.V not in (None, ONE):
        v = state.buffers.get(moments.V)
        if v is None:
            return None
    mask = _mask(layout, state.owners)
    numel = sum(layout.sizes[i] for i in state.owners)
    return _sums(spec, m, v, layout.data, t, mask, numel)


def _group(optimizer: Optimizer, index: int, group: dict[str, Any], per_parameter: bool) -> tuple[_Partial, Moments, float | None, list[_Partial | None] | None]:
    rules = optimizer.rules(group)
    hyper = Hyper.of(group)
    spec = _Spec(rules, moments(rules), float(hyper.lr), float(hyper.eps))
    params: list[Tensor] = list(group["params"])
    total = _Partial()
    step: float | None = None
    if per_parameter:
        each = [_parameter(spec, p, optimizer.state.get(p) or {}) for p in params]
        for part in each:
            if part is not None:
                total.add(part)
        steps = [_step_of(optimizer.state.get(p) or {}) for p in params]
        finite = [s for s in steps if not math.isnan(s)]
        return total, spec.moments, max(finite) if finite else None, each
    rest = params
    flat_group = getattr(optimizer, "_flat_groups", {}).get(index)
    if flat_group is not None and flat_group.current(params):
        rest = list(flat_group.others)
        for bucket in flat_group.buckets:
            part = _bucket(spec, optimizer, bucket)
            if part is None:
                rest += bucket.params
            else:
                total.add(part)
                uniform = bucket.state.uniform_step()
                step = uniform if uniform is not None else step
    for p in rest:
        state = optimizer.state.get(p) or {}
        part = _parameter(spec, p, state)
        if part is not None:
            total.add(part)
            s = _step_of(state)
            step = s if not math.isnan(s) and (step is None or s > step) else step
    return total, spec.moments, step, None


# ---------------------------------------------------------------- the API


def _check(optimizer: Any) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"inspect: {type(optimizer).__name__} is not a momenta optimizer (its m and V are "
            "known from momenta's rules; torch.optim's classes have none)"
        )
    return optimizer


def inspect(optimizer: Optimizer, *, per_parameter: bool = False) -> Reading:
    """Read m, V and the step they make from ``optimizer``'s state (module docstring).

    ``update_rms`` is ``None`` unless an :class:`Inspector` watches the optimizer (which
    knows the weights before the last step). With ``per_parameter``, each group's reading
    also holds each parameter's (read one by one: slower, for a look, not every step).
    """
    inspector = _watching.get(_check(optimizer))
    return _read(optimizer, per_parameter, inspector)


class Inspector:
    """Watches an optimizer: before each of its steps, copies the weights (one copy of the
    model, the cost of ``Δw``), so that :meth:`read` also gives the last update.

    ``close()`` (or leaving a ``with`` block) removes the hook.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = _check(optimizer)
        self._before: list[list[Tensor]] | None = None
        self._params: list[list[Tensor]] = []
        self._handle = optimizer.register_step_pre_hook(self._snapshot)
        _watching[optimizer] = self

    def _snapshot(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        params = [list(g["params"]) for g in self.optimizer.param_groups]
        same = len(params) == len(self._params) and all(
            len(a) == len(b) and all(x is y for x, y in zip(a, b)) for a, b in zip(params, self._params)
        )
        with torch.no_grad():
            if not same or self._before is None:
                self._params = params
                self._before = [[p.detach().clone() for p in ps] for ps in params]
            else:
                for before, ps in zip(self._before, params):
                    if ps:
                        torch._foreach_copy_(before, [p.detach() for p in ps])

    def update_sq(self, index: int) -> Tensor | None:
        """Σ (w − w_before)² over group ``index`` (``None`` before the first step)."""
        if self._before is None or index >= len(self._before):
            return None
        ps = [p.detach() for p in self._params[index]]
        if not ps:
            return None
        diffs = torch._foreach_sub(ps, self._before[index])
        norms = torch._foreach_norm([real(d) for d in diffs])
        return torch.stack([n.double() for n in norms]).square().sum()

    def read(self, *, per_parameter: bool = False) -> Reading:
        """:func:`inspect` with the last update."""
        return _read(self.optimizer, per_parameter, self)

    def close(self) -> None:
        self._handle.remove()
        if _watching.get(self.optimizer) is self:
            del _watching[self.optimizer]

    def __enter__(self) -> Inspector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_watching: weakref.WeakKeyDictionary[Optimizer, Inspector] = weakref.WeakKeyDictionary()


def _read(optimizer: Optimizer, per_parameter: bool, inspector: Inspector | None) -> Reading:
    with torch.no_grad():
        groups = [_group(optimizer, i, g, per_parameter) for i, g in enumerate(optimizer.param_groups)]
        updates = [inspector.update_sq(i) if inspector else None for i in range(len(groups))]
        whole = _Partial()
        for partial, *_ in groups:
            whole.add(partial)
        known = [u for u in updates if u is not None]
        whole_update = torch.stack([u.cpu() for u in known]).sum() if known else None
        each_group = [(partial.numel, _total(partial, u)) for (partial, *_), u in zip(groups, updates)]
        # one group (the usual): the whole optimizer's numbers are the group's, not computed again
        rows = [each_group[0] if len(groups) == 1 else (whole.numel, _total(whole, whole_update)), *each_group]
        per_param: list[list[int]] = []
        for (_, _, _, each), u in zip(groups, updates):
            indices = []
            for part in each or []:
                if part is not None:
                    indices.append(len(rows))
                    rows.append((part.numel, _total(part, None)))
                else:
                    indices.append(-1)
            per_param.append(indices)
        values = _host([t for _, ts in rows for t in ts])
    width = 6
    stats = [_stats(n, values[k * width : (k + 1) * width]) for k, (n, _) in enumerate(rows)]
    readings = []
    for gi, ((_, moments_, step, each), indices) in enumerate(zip(groups, per_param)):
        params = tuple(stats[k] if k >= 0 else None for k in indices) if each is not None else None
        readings.append(GroupReading(gi, stats[1 + gi], moments_, step, params))
    return Reading(tuple(readings), stats[0])


def _host(tensors: Iterable[Tensor]) -> list[float]:
    """Every number on the host: one read per device (on the CPU, one ``tolist``)."""
    tensors = list(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    out = [math.nan] * len(tensors)
    for indices in by_device.values():
        for i, value in zip(indices, torch.stack([tensors[i].double() for i in indices]).tolist()):
            out[i] = value
    return out
