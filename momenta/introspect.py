"""What an optimizer is doing: its m, its V and the step they make, read from its state.

For each param group (and, on request, each parameter), after a step ``t``:

    m         the buffer the first-moment rule declares as m (:meth:`FirstMoment.moment`:
              EMA's ``exp_avg``, Momentum's ``momentum_buffer`` …), or ``g`` itself when
              m = g (the gradient in ``p.grad``: the last step's, unless zeroed since)
    m̂ = m / c₁(t)                      c₁ the bias correction of the rule that keeps m
    √V̂ + ε   the V rule's own denominator of the buffer it declares as V
              (:meth:`SecondMoment.moment`: ε inside or outside, Adamax's u, RAdam's r_t);
              √V̂ is the same with ε = 0, and 1 where V = 1
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

Which buffer is m and which is V is the rules' to say: each declares it (``moment()``;
wrappers pass on their inner rule's, AMSGrad declares its running maximum); m = g for
:class:`~momenta.rules.Gradient`, V = 1 for :class:`~momenta.rules.One`. Where no buffer is
m (Adadelta's Δ, Rprop's step sizes) or V (a factored or centered V), the quantities that
need it are ``None``. AdEMAMix declares its fast EMA: m̂ is read as that EMA, uncorrected
(the rule corrects it inside its update), without α times the slow one.

Cost. ‖m‖, mean √V̂, min and max of r are exact, over every coordinate: on the fast path one
pass over each flat bucket's m, V and w (a kernel compiled by Inductor when the optimizer's
own kernels are, the same formula eagerly otherwise). The median of r is exact up to
:data:`SAMPLE` coordinates a bucket (or parameter); above, it is the median of a fixed
strided sample of at most :data:`SAMPLE` (every k-th coordinate, k = ⌈n/SAMPLE⌉), found
by a histogram of the values' bits and a selection within one bin (:func:`lower_median`).
Everything else stays on the device until one host read at the end (the median's selection
reads one count on the host before it). An :class:`Inspector`'s hook adds one copy of the
weights to every step. ``benchmarks/bench_inspect.py`` (AdamW, one thread, median of
interleaved rounds, this project's 2-core CPU machine): see README's "What m and V do".

This is a module of its own (not part of ``momenta.compare``): it reads any momenta
optimizer in any training loop; ``momenta compare --inspect`` is one user of it.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, cast

import torch
from torch import Tensor

from momenta.engine import Optimizer, Rules, compat, kernels
from momenta.engine.layout import Layout
from momenta.engine.storage import Storage
from momenta.engine.reference import Hyper, real
from momenta.rules import Gradient, One, Rule
from momenta.rules.base import SecondMoment, Wrapping

__all__ = ["GRADIENT", "Inspector", "Moments", "Reading", "Stats", "inspect", "lower_median", "moments"]

log = logging.getLogger("momenta")

#: m is the gradient itself (no buffer): read from ``p.grad``
GRADIENT: Final = "g"
#: V = 1 (no division)
ONE: Final = "1"


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


def moments(rules: Rules) -> Moments:
    """Which of the rules' buffers hold m and V, as the rules declare them (module docstring).
    Worked out once per ``Rules`` value (the engine reuses one until a hyperparameter changes)."""
    cached = _moments.get(id(rules))
    if cached is not None and cached[0] is rules:
        return cached[1]
    first = _innermost(rules.first)
    m = GRADIENT if isinstance(first, Gradient) else rules.first.moment()
    v = ONE if isinstance(_innermost(rules.second), One) else rules.second.moment()
    found = Moments(m, v, first if m is not None else None)
    if len(_moments) > 1024:
        _moments.clear()
    _moments[id(rules)] = (rules, found)
    return found


_moments: dict[int, tuple[Rules, Moments]] = {}


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


# ---------------------------------------------------------------- the median

#: above this many coordinates, a bucket's (or parameter's) median of r is that of a fixed
#: strided sample of at most this many: every k-th coordinate, k = ⌈n / SAMPLE⌉
SAMPLE = 2**16

#: up to this many values, :func:`lower_median` is torch's ``nanmedian``; above, a histogram
#: of the values' bits narrows the selection to one bin (measured: 3× faster at 2¹⁶)
SMALL = 2**12

#: the top bits of a float's pattern that name its histogram bin: the exponent and 4 bits
#: of the mantissa (bins 2⁻⁴ wide, relative)
_KEY_BITS = {torch.float32: 12, torch.float64: 15}
_INTS = {torch.float32: torch.int32, torch.float64: torch.int64}


def lower_median(r: Tensor) -> Tensor:
    """The lower median of the entries of 1-D ``r`` that are ≥ 0, as ``torch.median``
    defines it (the ⌊(k−1)/2⌋-th smallest of k), as a 0-dim tensor; NaN if an entry is NaN
    or none is ≥ 0. Negative entries are not counted (they mark coordinates where r is not
    defined).

    Above :data:`SMALL` entries (float32 or float64): a non-negative float's bit pattern,
    read as an integer, orders as the float does, so a histogram (``torch.bincount``) of
    the top bits below the sign bit finds the bin that holds the median and its rank
    there; the value is then selected among that bin's entries alone (``kthvalue``: one
    host read of the rank). A NaN entry makes Σ r NaN (r has no −∞ to make one of +∞).
    """
    nan = torch.full((), math.nan, dtype=r.dtype, device=r.device)
    if r.numel() <= SMALL or r.dtype not in _KEY_BITS:
        found = torch.where(r >= 0, r, nan).nanmedian()
        return torch.where(torch.isnan(r).any(), nan, found)
    size = 1 << _KEY_BITS[r.dtype]
    # bin 0: the negative entries (sign bit set: a negative integer); 1 … size: the others
    shift = 8 * r.element_size() - 1 - _KEY_BITS[r.dtype]
    bins = (r.view(_INTS[r.dtype]) >> shift).add_(1).clamp_min_(0)
    hist = torch.bincount(bins, minlength=size + 1)
    cum = hist[1:].cumsum(0)
    rank = (cum[-1:] - 1).div(2, rounding_mode="floor")  # of the median among all
    at = torch.searchsorted(cum, rank, right=True).clamp_max(size - 1)  # its bin, less one
    within = r[bins == at + 1]
    if within.numel():
        found = within.kthvalue(int((rank - (cum[at] - hist[at + 1])).item()) + 1).values
    else:
        found = nan  # nothing ≥ 0
    return torch.where(torch.isnan(r.sum()), nan, found)


# ---------------------------------------------------------------- one pass over m, V and w

#: a part's sums, in this order (a float64 tensor): Σ m², Σ √V̂, min r, max r
SUMS = ("m_sq", "sqrt_v", "ratio_min", "ratio_max")


@dataclass(frozen=True)
class _Spec:
    """A group's rules and numbers, as the pass needs them."""

    rules: Rules
    moments: Moments
    lr: float
    eps: float


@dataclass(frozen=True)
class _Part:
    """One bucket's or parameter's reading, on the device: :data:`SUMS` (NaN where not
    defined) and its sample of r (−1 where r is not defined), over ``numel`` coordinates."""

    numel: int
    sums: Tensor
    sample: Tensor | None


def _strided(n: int, device: torch.device) -> Tensor:
    """Every k-th index of ``n``, k = ⌈n / SAMPLE⌉ (every index when n ≤ SAMPLE)."""
    key = (n, SAMPLE, device)
    found = _samples.get(key)
    if found is None:
        found = _samples[key] = torch.arange(0, n, max(1, -(-n // SAMPLE)), device=device)
    return found


_samples: dict[tuple[int, int, torch.device], Tensor] = {}


@dataclass(frozen=True)
class _Pass:
    """The pass of one structure: which inputs it has (by name), the V rule and where ε
    goes, and the names of the numbers packed into its ``packed`` input. ``__call__``
    runs it on inputs by name; :func:`_run` compiles it where the optimizer compiles."""

    inputs: tuple[str, ...]
    second: SecondMoment
    rules: Rules
    names: tuple[str, ...]
    value_names: tuple[str, ...]
    ratio: bool

    def positional(self, *tensors: Tensor) -> None:
        self(dict(zip(self.inputs, tensors)))

    def __call__(self, x: dict[str, Tensor]) -> None:
        """Writes :data:`SUMS` into ``x["sums"]`` and r at ``x["index"]`` into ``x["sample"]``:

            Σ m²,  Σ √V̂,  min r,  max r        over the coordinates in ``mask`` (r: and w ≠ 0)
            √V̂ = denominator(V, c₂, 0);  r = scale·|m| / (√V̂ + ε) / |w|,  scale = lr/(d(t)·c₁(t))

        The sample is computed from the inputs gathered at ``index`` (not gathered from a
        whole r, which a compiled pass would write out in full)."""
        nan = torch.full((), math.nan, dtype=torch.float64, device=x["w"].device)
        mask = x.get("mask")
        kept: Callable[[Tensor], Tensor] = (lambda y: y) if mask is None else (lambda y: torch.where(mask, y, 0))
        m, root, r, valid = self.coordinates(x, x)
        m_sq = kept(m * m).sum(dtype=torch.float64) if m is not None else nan
        sqrt_v = kept(root).sum(dtype=torch.float64) if root is not None else nan
        low = high = nan
        if r is not None:
            low = torch.where(valid, r, math.inf).amin().double()
            high = torch.where(valid, r, -math.inf).amax().double()
            index = x["index"]
            sample: dict[str, Tensor] = {k: x[k][index] for k in ("m", "v", "w", "mask") if k in x}
            _, _, r_sample, valid_sample = self.coordinates(x, sample)
            x["sample"].copy_(torch.where(valid_sample, r_sample, -1.0))  # type: ignore[arg-type]
        x["sums"].copy_(torch.stack([m_sq, sqrt_v, low, high]))

    def coordinates(
        self, x: dict[str, Tensor], at: dict[str, Tensor]
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor]:
        """m, √V̂, r and where r is defined, per coordinate of ``at`` (the numbers: ``x``'s)."""
        numbers = dict(zip(self.names, x["packed"].unbind(0)))
        second = cast(SecondMoment, kernels.rebuild(self.second, "second", numbers))
        values = {n: numbers[n] for n in self.value_names}
        # 0-dim tensors, as in the engine's kernels (a rule's t is a number or a tensor)
        t: Any = numbers["t"]
        c2, eps, scale = numbers["c2"], numbers["eps"], numbers["scale"]
        work = torch.promote_types(at["w"].dtype, torch.float32)  # half precision: read in float32
        w = at["w"].to(work)
        m = at["m"].to(work) if "m" in at else None
        root: Tensor | None = None
        denom: Tensor | None = None
        if "v" in at:
            v = at["v"].to(work)
            root = second.denominator(v, c2, 0.0, self.rules.eps, t, values)
            where = self.rules.eps
            denom = root + eps if where == "outside" else second.denominator(v, c2, eps, where, t, values)
        elif "one" in x:  # V = 1: √V̂ = 1 at every coordinate
            root = torch.ones_like(w)
        valid = w != 0 if "mask" not in at else (w != 0) & at["mask"]
        if not self.ratio or m is None:
            return m, root, None, valid
        if denom is None or self.rules.precondition != "moment":  # no division, or m = g/√V̂ already
            return m, root, m.abs() * scale / w.abs(), valid
        r = m.abs() * scale / (denom * w.abs())  # one division a coordinate, not two
        return m, root, torch.where(denom == 0, 0.0, r) if self.rules.zero_over_zero else r, valid


#: compiled passes by structure (``None``: compiling failed, run eagerly)
_compiled: dict[tuple[Any, ...], Callable[..., None] | None] = {}


def _run(spec: _Spec, t: float, tensors: dict[str, Tensor], numel: int, compiled: bool) -> _Part:
    """The pass over 1-D ``m`` / ``v`` / ``w`` / ``mask`` (those present in ``tensors``)."""
    rules, moments_ = spec.rules, spec.moments
    w = tensors["w"]
    second = rules.second
    ratio = "m" in tensors and moments_.m_rule is not None and moments_.V is not None
    c2 = float(second.correction(t))
    _, values = second.advance({name: torch.zeros(()) for name in second.scalars()}, t)
    decay = 1.0
    for part in rules.parts():
        decay = decay * float(part.decay(t))
    scale = spec.lr / decay / float(moments_.m_rule.correction(t)) if moments_.m_rule is not None else math.nan
    structure, hyper = _structure(second)
    value_names = tuple(values)
    names = ("t", "c2", "eps", "scale", *value_names, *hyper)
    numbers = [t, c2, spec.eps, scale, *(float(values[n]) for n in value_names), *(float(h) for h in hyper.values())]
    work = torch.promote_types(w.dtype, torch.float32)
    x = dict(tensors)
    if moments_.V == ONE:
        x["one"] = w.new_empty(0)
    x["packed"] = torch.tensor(numbers, dtype=work, device=w.device)
    x["sums"] = torch.empty(len(SUMS), dtype=torch.float64, device=w.device)
    if ratio:
        x["index"] = _strided(w.numel(), w.device)
        x["sample"] = torch.empty(x["index"].numel(), dtype=work, device=w.device)
    inputs = tuple(x)
    run = _Pass(inputs, second, rules, names, value_names, ratio)
    if compiled and kernels.config.compile:
        key = (
            structure, rules.eps, rules.precondition, rules.zero_over_zero, names, inputs,
            tuple((t_.dtype, t_.device) for t_ in x.values()),
        )  # fmt: skip
        graph = _compiled.get(key, ...)
        if graph is ...:
            graph = _compiled[key] = _compile(run, x)
        if graph is not None:
            graph(*x.values())
            return _Part(numel, x["sums"], x.get("sample"))
    run(x)
    return _Part(numel, x["sums"], x.get("sample"))


def _structure(second: SecondMoment) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The V rule's structure (:func:`kernels.structure`) and hyperparameters by path name,
    worked out once per rule value."""
    cached = _structures.get(id(second))
    if cached is not None and cached[0] is second:
        return cached[1], cached[2]
    found = (second, kernels.structure(second), dict(kernels.values(second, "second")))
    if len(_structures) > 1024:
        _structures.clear()
    _structures[id(second)] = found
    return found[1], found[2]


_structures: dict[int, tuple[SecondMoment, tuple[Any, ...], dict[str, Any]]] = {}


def _compile(run: _Pass, x: dict[str, Tensor]) -> Callable[..., None] | None:
    """``run`` traced with symbolic sizes and compiled by Inductor (:func:`compat.compile_graph`),
    or ``None`` (then it runs eagerly; the reason is logged)."""
    # examples of typical sizes, distinct for the coordinates and the sample (a size shared
    # by two inputs would be traced as one symbol)
    sizes = {"packed": x["packed"].numel(), "sums": len(SUMS), "one": 0, "index": 2**16, "sample": 2**16}
    examples = [torch.zeros(sizes.get(name, 2**20), dtype=t.dtype, device=t.device) for name, t in x.items()]
    try:
        return compat.compile_graph(run.positional, examples)
    except Exception as error:  # an op Inductor lacks in a user's rule …
        log.info("momenta.inspect: compiling the pass failed (%s: %s); it runs eagerly", type(error).__name__, error)
        return None


# ---------------------------------------------------------------- where the buffers are


def _step_of(state: Mapping[str, Any]) -> float:
    step = state.get("step")
    return float(step) if step is not None else math.nan


def _float(name: str, value: Any, where: str) -> Tensor:
    """``value``, the state's buffer ``name``, if it is a floating-point tensor."""
    if isinstance(value, Tensor) and (value.dtype.is_floating_point or value.dtype.is_complex):
        return value
    kind = f"a {value.dtype} tensor" if isinstance(value, Tensor) else type(value).__name__
    raise TypeError(
        f"inspect: {where}'s state buffer {name!r} is {kind}, not floating point: m and V can be "
        "read from full-precision states only (not from state_precision='…' codes)"
    )


def _buffer(state: Mapping[str, Any], name: str, where: str) -> Tensor | None:
    """The state's float buffer ``name``: ``None`` when the state is empty (not stepped);
    an error naming it when the state lacks it or holds something else (codes)."""
    if not state:
        return None
    if name not in state:
        raise TypeError(
            f"inspect: {where}'s state has no buffer {name!r} (it has {sorted(state)}): m and V "
            "can be read from full-precision states only (not from state_precision='…' codes)"
        )
    return _float(name, state[name], where)


def _parameter(spec: _Spec, p: Tensor, state: Mapping[str, Any], compiled: bool) -> _Part | None:
    """One parameter's reading, from ``optimizer.state[p]`` (views of flat buffers on the
    fast path); ``None`` for a parameter without state."""
    moments_ = spec.moments
    if not state and moments_.m != GRADIENT:
        return None
    flat = lambda x: real(x.detach()).reshape(-1)  # noqa: E731
    where = f"a parameter of shape {tuple(p.shape)}"
    tensors = {"w": flat(p)}
    if moments_.m == GRADIENT:
        if p.grad is not None and not p.grad.is_sparse:
            tensors["m"] = flat(p.grad)
    elif moments_.m is not None:
        m = _buffer(state, moments_.m, where)
        if m is not None:
            tensors["m"] = flat(m)
    if moments_.V not in (None, ONE):
        v = _buffer(state, moments_.V, where)
        if v is not None:
            tensors["v"] = flat(v)
    if "m" not in tensors and "v" not in tensors and moments_.V != ONE:
        return _Part(p.numel() * (2 if p.is_complex() else 1), _nans(p.device), None)
    return _run(spec, _step_of(state), tensors, p.numel() * (2 if p.is_complex() else 1), compiled)


def _nans(device: torch.device) -> Tensor:
    return torch.full((len(SUMS),), math.nan, dtype=torch.float64, device=device)


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


def _bucket(spec: _Spec, optimizer: Optimizer, bucket: Any) -> _Part | None:
    """A flat bucket's reading over its flat buffers, or ``None`` if they are not what
    ``optimizer.state`` holds, or hold low-precision codes (then the caller reads the
    parameters one by one, decoding their states)."""
    state = bucket.state
    layout: Layout = bucket.layout
    moments_ = spec.moments
    if getattr(bucket, "storage", None) is not None:
        return None
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
    where = f"a flat bucket of {len(bucket.params)} parameters"
    tensors = {"w": layout.data, "mask": _mask(layout, state.owners)}
    if moments_.m == GRADIENT:
        grads = [p.grad for p in bucket.params]
        if all(view is not None and g is view for g, view in zip(grads, bucket.grad_views)):  # no large ones
            tensors["m"] = bucket.grad
        elif all(g is None or (not g.is_sparse and g.dtype == layout.dtype) for g in grads):
            m = layout.zeros()
            for region, g in zip(layout.regions(m), grads):
                if g is not None:
                    region.copy_(g)
            tensors["m"] = m
        else:
            return None
    elif moments_.m is not None:
        if moments_.m not in state.buffers:
            return None  # read from optimizer.state, which says what it holds instead
        tensors["m"] = _float(moments_.m, state.buffers[moments_.m], where)
    if moments_.V not in (None, ONE):
        if moments_.V not in state.buffers:
            return None
        tensors["v"] = _float(moments_.V, state.buffers[moments_.V], where)
    numel = sum(layout.sizes[i] for i in state.owners)
    return _run(spec, t, tensors, numel, bool(optimizer.__dict__.get("_compiled")))


@dataclass
class _Group:
    """One group's parts and what the reading says of it."""

    parts: list[_Part]
    moments: Moments
    step: float | None
    each: list[_Part | None] | None  # per parameter, on request


def _decoded(optimizer: Optimizer, group: dict[str, Any], rules: Rules, p: Tensor) -> Mapping[str, Any]:
    """``optimizer.state[p]``, with buffers kept at low precision decoded (float32)."""
    state = optimizer.state.get(p) or {}
    kept = Storage.of(group, rules, p) if state else None
    return {**state, **kept.read(state, p, rules.scalar_names())} if kept is not None else state


def _group(optimizer: Optimizer, index: int, group: dict[str, Any], per_parameter: bool) -> _Group:
    rules = optimizer.rules(group)
    hyper = Hyper.of(group)
    spec = _Spec(rules, moments(rules), float(hyper.lr), float(hyper.eps))
    params: list[Tensor] = list(group["params"])
    compiled = bool(optimizer.__dict__.get("_compiled"))
    if per_parameter:
        each = [_parameter(spec, p, _decoded(optimizer, group, rules, p), compiled) for p in params]
        steps = [_step_of(optimizer.state.get(p) or {}) for p in params]
        finite = [s for s in steps if not math.isnan(s)]
        return _Group([e for e in each if e is not None], spec.moments, max(finite) if finite else None, each)
    parts: list[_Part] = []
    step: float | None = None
    rest = params
    flat_group = getattr(optimizer, "_flat_groups", {}).get(index)
    if flat_group is not None and flat_group.current(params):
        rest = list(flat_group.others)
        for bucket in flat_group.buckets:
            part = _bucket(spec, optimizer, bucket)
            if part is None:
                rest += bucket.params
            else:
                parts.append(part)
                uniform = bucket.state.uniform_step()
                step = uniform if uniform is not None else step
    for p in rest:
        state = _decoded(optimizer, group, rules, p)
        read = _parameter(spec, p, state, compiled)
        if read is not None:
            parts.append(read)
            s = _step_of(state)
            step = s if not math.isnan(s) and (step is None or s > step) else step
    return _Group(parts, spec.moments, step, None)


def _combine(parts: list[_Part], update_sq: Tensor | None) -> tuple[int, list[Tensor]]:
    """The 0-dim float64 tensors a :class:`Stats` is made of (NaN for 'none'): Σ m², Σ √V̂,
    min, median and max of r, Σ Δw²; and the number of coordinates."""
    numel = sum(p.numel for p in parts)
    device = parts[0].sums.device if parts else torch.device("cpu")
    nan = torch.full((), math.nan, dtype=torch.float64, device=device)
    if parts:
        sums = torch.stack([p.sums.to(device) for p in parts])
        # a sum is 'none' only where every part has none (a part without a gradient adds nothing)
        total = torch.where(sums.isnan().all(0), nan, sums.nan_to_num(0.0).sum(0))
        m_sq, sqrt_v = total[0], total[1]
        defined = sums[:, 3] > -math.inf  # a part with an r (max −∞: no w ≠ 0 there)
        low = torch.where(defined, sums[:, 2], math.inf).amin()
        high = torch.where(defined, sums[:, 3], -math.inf).amax()
        low, high = (torch.where(defined.any(), x, nan) for x in (low, high))
    else:
        m_sq = sqrt_v = low = high = nan
    samples = [p.sample.to(device) for p in parts if p.sample is not None]
    mid = lower_median(torch.cat(samples) if len(samples) > 1 else samples[0]).double() if samples else nan
    updates = update_sq.to(device, torch.float64) if update_sq is not None else nan
    return numel, [m_sq, sqrt_v, low, mid, high, updates]


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
        self._update_sq: dict[int, Tensor] = {}  # by group, once a step
        self._handle = optimizer.register_step_pre_hook(self._snapshot)
        _watching[optimizer] = self

    def _snapshot(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        params = [list(g["params"]) for g in self.optimizer.param_groups]
        same = len(params) == len(self._params) and all(
            len(a) == len(b) and all(x is y for x, y in zip(a, b)) for a, b in zip(params, self._params)
        )
        self._update_sq = {}
        with torch.no_grad():
            if not same or self._before is None:
                self._params = params
                self._before = [[p.detach().clone() for p in ps] for ps in params]
            else:
                for before, ps in zip(self._before, params):
                    if ps:
                        torch._foreach_copy_(before, [p.detach() for p in ps])

    def update_sq(self, index: int) -> Tensor | None:
        """Σ (w − w_before)² over group ``index`` (``None`` before the first step).

        Worked out once a step, in place in the copy (which the next step's hook overwrites):
        no buffer of the model's size is allocated."""
        if self._before is None or index >= len(self._before):
            return None
        found = self._update_sq.get(index)
        if found is None:
            ps = [p.detach() for p in self._params[index]]
            if not ps:
                return None
            before = self._before[index]
            torch._foreach_sub_(before, ps)  # w_before − w, in the copy
            norms = torch._foreach_norm([real(d) for d in before])
            found = self._update_sq[index] = torch.stack(norms).double().square().sum()
        return found

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
        each_group = [_combine(g.parts, u) for g, u in zip(groups, updates)]
        if len(groups) == 1:  # the usual: the whole optimizer's numbers are the group's
            rows = [each_group[0], *each_group]
        else:
            known = [u for u in updates if u is not None]
            whole_update = torch.stack([u.cpu() for u in known]).sum() if known else None
            rows = [_combine([part for g in groups for part in g.parts], whole_update), *each_group]
        per_param: list[list[int]] = []
        for g in groups:
            indices = []
            for part in g.each or []:
                if part is not None:
                    indices.append(len(rows))
                    rows.append(_combine([part], None))
                else:
                    indices.append(-1)
            per_param.append(indices)
        values = _host([t for _, ts in rows for t in ts])
    width = 6
    stats = [_stats(n, values[k * width : (k + 1) * width]) for k, (n, _) in enumerate(rows)]
    readings = []
    for gi, (g, indices) in enumerate(zip(groups, per_param)):
        params = tuple(stats[k] if k >= 0 else None for k in indices) if g.each is not None else None
        readings.append(GroupReading(gi, stats[1 + gi], g.moments, g.step, params))
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
