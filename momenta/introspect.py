"""What an optimizer is doing: its m, its V and the step they make, read from its state.

For each param group (and, on request, each parameter), after a step ``t``:

    m         the buffer the first-moment rule declares as m (:meth:`FirstMoment.moment`:
              EMA's ``exp_avg``, Momentum's ``momentum_buffer`` …), or ``g`` itself when
              m = g (the gradient in ``p.grad``: the last step's, unless zeroed since)
    m̂ = m / c₁(t)                      c₁ the bias correction of the rule that keeps m
    √V̂ + ε   the V rule's own denominator of the buffer it declares as V
              (:meth:`SecondMoment.moment`: ε inside or outside, Adamax's u, RAdam's r_t);
              √V̂ is the same with ε = 0, and 1 where V = 1
    s = lr/d(t) · D(m̂ / (√V̂ + ε))     the step the rules make, per coordinate (d(t): the
              rules' lr decay; with ``precondition="gradient"`` m is made from D(g/√V̂)
              already, s = lr/d(t)·m̂). D is the rules' direction part where it is
              elementwise and keeps no state (Lion's sign: |s| = lr wherever m ≠ 0; a user's
              elementwise rule, its hyperparameters read from the param group); s is read
              before a direction over whole parameters (LAMB's trust ratio, Muon's
              orthogonalisation; their Δw below is the step as made), and before the
              iterate part (decoupled weight decay)
    r = |s| / |w|                      the update-to-weight ratio, where w ≠ 0
    Δw = w − w_before                  the last update as it moved the weights (all parts
              included): kept by an :class:`Inspector`, which copies the weights before each step

and reports ‖m‖, rms(m) = ‖m‖/√n, mean √V̂, min / median / max of r, and rms(Δw). A NaN
in the state (a NaN gradient, unguarded) reads as NaN; ``None`` is for what the optimizer
does not define (no buffer is m) or nothing stepped yet.

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

Cost. ‖m‖, mean √V̂, min and max of r and rms(Δw) are exact, over every coordinate: on the
fast path one pass over each flat bucket's m, V, w and (under an :class:`Inspector`) its copy
of w before the step, each term computed at the parameters' precision (at least float32) and
summed in float64 (a kernel compiled by Inductor when the optimizer's own kernels are, the
same formula eagerly otherwise). The median of r is that of a strided sample of at most
:data:`SAMPLE` coordinates, exact up to that many: each group's, every k-th of the group's
coordinates laid end to end (its buckets' buffers, then its other parameters), and the
whole optimizer's, every k-th of all the groups', so that every coordinate counts alike,
whatever the part or group it is in; the same pass gathers m, V and w at those coordinates.
Nothing leaves the device until one host read at the end (every sum, extreme and median of
every group). An :class:`Inspector`'s hook adds one
copy of the weights to every step (one copy of each flat bucket). ``benchmarks/bench_inspect.py``
(AdamW over nanoGPT's param groups, one thread, median of interleaved rounds, this
project's 2-core CPU machine): see README's "What m and V do".

Sharded parameters (FSDP2's DTensors): each rank reads its own shard, and the shards' sums,
minima and maxima are all-reduced over the mesh dimensions that shard the parameter (a few
collectives a read for all of them), so that every rank gets the same reading, one
process's over the whole tensors to float rounding. The median's sample is each rank's
strided sample of its shard, on the stride of the whole read, gathered: where FSDP2 splits
the rows (``Shard(0)``, once) it is the sample one process takes, so the median is that
process's; under other placements each shard's sample starts on the stride from its own
first coordinate, an approximation of it. Reading is then a collective: every rank reads,
as every rank steps.

This is a module of its own (not part of ``momenta.compare``): it reads any momenta
optimizer in any training loop; ``momenta compare --inspect`` is one user of it.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from operator import is_
from typing import Any, Final, cast

import torch
from torch import Tensor

from momenta.engine import Optimizer, Rules, compat, kernels, shards
from momenta.engine.layout import Layout
from momenta.engine.storage import Storage
from momenta.engine.reference import real
from momenta.rules import Gradient, Identity, One, Rule
from momenta.rules.base import ROOT_C2, Direction, SecondMoment, Wrapping

__all__ = ["GRADIENT", "Inspector", "Moments", "Reading", "Stats", "inspect", "moments"]

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
    optimizer, or nothing stepped yet; NaN: the state holds a NaN there."""

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

#: the median's sample: every k-th coordinate of all the parameters read, laid end to end
#: (the optimizer's order: group by group, each flat bucket's buffer, then each other
#: parameter), k = ⌈n / SAMPLE⌉ for n coordinates in all, so that at most this many are
#: sampled and every coordinate of every group counts alike. The median of 2¹⁴ new values
#: takes 30 µs by :meth:`~momenta.engine.compat.Native.median` on this project's CPU (one
#: thread), 170 µs by torch's ``nanmedian``; of 2¹⁶, 110 and 670 µs.
SAMPLE = 2**14


def _median(r: Tensor) -> Tensor | float:
    """The lower median of the entries of 1-D ``r`` that are not NaN, as ``torch.median``
    defines it (the ⌊(k−1)/2⌋-th smallest of k); NaN where none is. NaN marks the
    coordinates where r is not defined (w = 0, outside the parameters, a shard's padding);
    a NaN r is not counted either: it shows in the minimum and maximum, which are over every
    coordinate, and the read then reports a NaN median.

    On the CPU, a number, by the C++ radix select of :meth:`~momenta.engine.compat.Native.median`
    where it is built (its time does not depend on the values: torch's quickselect takes
    ~6× longer on values it has not seen); elsewhere (a GPU), a 0-dim tensor on ``r``'s
    device (torch's ``nanmedian``: no host read until the read's one)."""
    if r.numel() == 0:
        return math.nan
    native = compat.native() if r.device.type == "cpu" else None
    found = native.median(r.contiguous()) if native is not None else None
    return r.nanmedian() if found is None else found


# ---------------------------------------------------------------- one pass over m, V and w

#: a part's sums, in this order (a float64 tensor): Σ m², Σ √V̂, min r, max r, Σ Δw²
SUMS = ("m_sq", "sqrt_v", "ratio_min", "ratio_max", "update_sq")


@dataclass(frozen=True)
class _Spec:
    """A group's rules and numbers, as the pass needs them."""

    rules: Rules
    moments: Moments
    lr: float
    eps: float


@dataclass(frozen=True)
class _Shards:
    """Where the rest of a DTensor is: the process groups of the mesh dimensions that shard
    it, and the length of each of its samples on every rank (padded with NaN, 'r not defined')."""

    groups: tuple[Any, ...]
    lengths: tuple[int, ...]


@dataclass(frozen=True)
class _Part:
    """One bucket's or parameter's reading, on the device: :data:`SUMS` (``defined`` says
    which the part has: sums 0 where not, min +∞ and max −∞ where no r is) and its samples
    of r (NaN where r is not defined; none where the part has no r): its group's, and the
    whole read's where it has several groups (:data:`SAMPLE`), over ``numel`` coordinates.
    ``shards``: only this rank's shard of a DTensor (of ``numel`` coordinates in all) is
    read, until :func:`_across` reads the rest."""

    numel: int
    sums: Tensor
    samples: tuple[Tensor, ...]
    defined: tuple[bool, ...]
    shards: _Shards | None = None


@dataclass(frozen=True)
class _Job:
    """One part to read, before its pass runs: a flat bucket's buffers or one parameter's
    (1-D ``tensors``: ``w`` and those of ``m``, ``v``, ``w0``, ``mask`` present), over
    ``numel`` coordinates with a state; ``extent``: the coordinates the sample walks over
    (a bucket's whole buffer; a DTensor's whole tensor, of which ``param``'s shard is here)."""

    spec: _Spec
    t: float
    tensors: dict[str, Tensor]
    numel: int
    extent: int
    compiled: bool
    param: Tensor | None = None


def _strided(n: int, k: int, start: int, device: torch.device) -> Tensor:
    """Every k-th index of ``n`` from ``start`` (cached: the same parts are read every step)."""
    key = (n, k, start, device)
    found = _samples.get(key)
    if found is None:
        if len(_samples) > 1024:
            _samples.clear()
        found = _samples[key] = torch.arange(min(start, n), n, k, device=device)
    return found


_samples: dict[tuple[int, int, int, torch.device], Tensor] = {}


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
    samples: int
    direction: Direction | None

    def positional(self, *tensors: Tensor) -> None:
        self(dict(zip(self.inputs, tensors)))

    def __call__(self, x: dict[str, Tensor]) -> None:
        """Writes :data:`SUMS` into ``x["sums"]`` and r at ``x["index{i}"]`` into ``x["sample{i}"]``:

            Σ m²,  Σ √V̂,  min r,  max r,  Σ (w − w0)²   over the coordinates in ``mask`` (r: and w ≠ 0;
                                                  0, +∞ and −∞ where not defined)
            √V̂ = denominator(V, c₂, 0);  r = scale·|m| / (√V̂ + ε) / |w|,  scale = lr/(d(t)·c₁(t))
            (with an elementwise direction D: r = lr/d(t) · |D(m/c₁(t) / (√V̂ + ε))| / |w|)

        Sums accumulate in float64. The mask (uint8) multiplies, as the coordinates it leaves
        out hold finite numbers (zeros, a rule's ε): Inductor's CPU kernels select under a
        loaded mask (``torch.where``) several times slower than they multiply (measured 10.6
        vs 3.2 ms for one sum over 10.7M floats). The sample is computed from the inputs
        gathered at ``index`` (not gathered from a whole r, which a compiled pass would write
        out in full)."""
        none = torch.zeros((), dtype=torch.float64, device=x["w"].device)  # not defined (the job says which)
        m, root, r, valid = self.coordinates(x, x)
        keep = x["mask"].to(x["packed"].dtype) if "mask" in x else None
        total: Callable[[Tensor], Tensor] = lambda y: (y if keep is None else y * keep).sum(dtype=torch.float64)  # noqa: E731
        m_sq = total(m * m) if m is not None else none
        sqrt_v = total(root) if root is not None else none
        update_sq = none
        if "w0" in x:
            d = x["w"].to(x["packed"].dtype) - x["w0"].to(x["packed"].dtype)
            update_sq = total(d * d)
        low, high = none + math.inf, none - math.inf
        if r is not None:
            low = torch.where(valid, r, math.inf).amin().double()
            high = torch.where(valid, r, -math.inf).amax().double()
            for i in range(self.samples):
                index = x[f"index{i}"]
                sample: dict[str, Tensor] = {k: x[k][index] for k in ("m", "v", "w", "mask") if k in x}
                _, _, r_sample, valid_sample = self.coordinates(x, sample)
                x[f"sample{i}"].copy_(torch.where(valid_sample, r_sample, math.nan))  # type: ignore[arg-type]
        x["sums"].copy_(torch.stack([m_sq, sqrt_v, low, high, update_sq]))

    def coordinates(
        self, x: dict[str, Tensor], at: dict[str, Tensor]
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor]:
        """m, √V̂, r and where r is defined, per coordinate of ``at`` (the numbers: ``x``'s)."""
        numbers = dict(zip(self.names, x["packed"].unbind(0)))
        second = cast(SecondMoment, kernels.rebuild(self.second, "second", numbers))
        # √c₂ taken on the host, as the engine's step takes it (a kernel would take it in
        # every vector iteration)
        values = {**{n: numbers[n] for n in self.value_names}, ROOT_C2: numbers["root_c2"]}
        # 0-dim tensors, as in the engine's kernels (a rule's t is a number or a tensor)
        t: Any = numbers["t"]
        c2, eps, scale = numbers["c2"], numbers["eps"], numbers["scale"]
        work = x["packed"].dtype  # half precision: read in float32
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
        valid = w != 0 if "mask" not in at else w * at["mask"].to(work) != 0
        if not self.ratio or m is None:
            return m, root, None, valid
        if self.direction is not None:  # s = lr/d(t) · D(m̂ / (√V̂ + ε))
            d = m * numbers["inv_c1"]
            if denom is not None:
                d = torch.where(denom == 0, 0.0, d / denom) if self.rules.zero_over_zero else d / denom
            direction = cast(Direction, kernels.rebuild(self.direction, "direction", numbers))
            step, _ = direction.apply(values, d, w, t)
            return m, root, step.abs() * numbers["lr_step"] / w.abs(), valid
        if denom is None or self.rules.precondition != "moment":  # no division, or m = g/√V̂ already
            return m, root, m.abs() * scale / w.abs(), valid
        r = m.abs() * scale / (denom * w.abs())  # one division a coordinate, not two
        return m, root, torch.where(denom == 0, 0.0, r) if self.rules.zero_over_zero else r, valid


#: compiled passes by structure (``None``: compiling failed, run eagerly)
_compiled: dict[tuple[Any, ...], Callable[..., None] | None] = {}


def _run(job: _Job, strides: Iterable[tuple[int, int]]) -> _Part:
    """``job``'s pass, with a sample of r for each ``(k, offset)`` of ``strides``: every
    k-th coordinate of those laid end to end, of which this part's first is the
    ``offset``-th (:data:`SAMPLE`)."""
    spec, t, tensors, numel = job.spec, job.t, job.tensors, job.numel
    rules, moments_ = spec.rules, spec.moments
    w = tensors["w"]
    strides = list(strides)
    found = _shards(job.param, job.extent) if job.param is not None else None
    shards_ = _Shards(found[0], tuple(-(-found[1] // k) for k, _ in strides)) if found is not None else None
    first = found[2] if found is not None else 0  # this shard's first coordinate in the tensor
    starts = [-(offset + first) % k for k, offset in strides]
    ratio = "m" in tensors and moments_.m_rule is not None and moments_.V is not None
    defined = ("m" in tensors, "v" in tensors or moments_.V == ONE, ratio, ratio, "w0" in tensors)
    if not any(defined):  # nothing read but w: nothing to tell
        return _Part(numel, _nothing(w.device), (), defined, shards_)
    second = rules.second
    c2 = float(second.correction(t))
    _, values = second.advance({name: torch.zeros(()) for name in second.scalars()}, t)
    decay = 1.0
    for part in rules.parts():
        decay = decay * float(part.decay(t))
    scale = spec.lr / decay / float(moments_.m_rule.correction(t)) if moments_.m_rule is not None else math.nan
    structure, hyper = _structure(second)
    direction = _direction(rules) if ratio else None
    if direction is not None:  # D's own hyperparameters, and lr/d(t) and 1/c₁(t) apart
        hyper = {**hyper, **dict(kernels.values(direction, "direction"))}
        hyper |= {"lr_step": spec.lr / decay, "inv_c1": 1.0 / float(cast(Rule, moments_.m_rule).correction(t))}
    value_names = tuple(values)
    names = ("t", "c2", "root_c2", "eps", "scale", *value_names, *hyper)
    numbers = [t, c2, math.sqrt(c2) if c2 >= 0 else math.nan, spec.eps, scale, *(float(values[n]) for n in value_names)]
    numbers += [float(h) for h in hyper.values()]
    work = torch.promote_types(w.dtype, torch.float32)
    if w.numel() == 0:  # an empty shard: nothing to add, no r
        empty = tuple(w.new_empty(0, dtype=work) for _ in strides) if ratio else ()
        return _Part(numel, _nothing(w.device), empty, defined, shards_)
    x = dict(tensors)
    if moments_.V == ONE:
        x["one"] = w.new_empty(0)
    x["packed"] = kernels.numbers_on(numbers, work, w.device)
    x["sums"] = torch.empty(len(SUMS), dtype=torch.float64, device=w.device)
    samples = len(strides) if ratio else 0
    for i, ((k, _), start) in enumerate(zip(strides[:samples], starts)):
        index = _strided(w.numel(), k, start, w.device)
        x[f"index{i}"] = index[: shards_.lengths[i]] if shards_ is not None else index
        x[f"sample{i}"] = torch.empty(x[f"index{i}"].numel(), dtype=work, device=w.device)
    inputs = tuple(x)
    run = _Pass(inputs, second, rules, names, value_names, ratio, samples, direction)
    graph: Callable[..., None] | None = None
    if job.compiled and kernels.config.compile:
        key = (
            structure, rules.eps, rules.precondition, rules.zero_over_zero, names, inputs,
            kernels.structure(direction) if direction is not None else None,
            tuple((t_.dtype, t_.device) for t_ in x.values()),
        )  # fmt: skip
        if key not in _compiled:
            _compiled[key] = _compile(run, x)
        graph = _compiled[key]
    if graph is not None:
        graph(*x.values())
    else:
        run(x)
    return _Part(numel, x["sums"], tuple(x[f"sample{i}"] for i in range(samples)), defined, shards_)


def _nothing(device: torch.device) -> Tensor:
    """The :data:`SUMS` of a part with nothing to add: 0, 0, +∞, −∞, 0 (on a GPU, copied
    without waiting for the device)."""
    return kernels.numbers_on((0.0, 0.0, math.inf, -math.inf, 0.0), torch.float64, device)


def _direction(rules: Rules) -> Direction | None:
    """The direction rule the step ``s`` goes through (module docstring): one that is
    elementwise and keeps no state (Lion's sign), applied to ``m̂ / (√V̂ + ε)``; ``None``
    for the identity, and where ``s`` is read before it (a direction over whole parameters,
    one with a state of its own, one that ``precondition="gradient"`` puts inside m or that
    weight decay ``"direction"`` joins)."""
    d = rules.direction
    if isinstance(d, Identity) or not d.elementwise or d.segmented or d.buffers() or d.scalars():
        return None
    return d if rules.precondition == "moment" and rules.weight_decay != "direction" else None


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
    sizes = {"packed": x["packed"].numel(), "sums": len(SUMS), "one": 0}
    # (not SAMPLE's: tests set it to 10⁹ for every coordinate, and examples of that size
    # took 12 GB)
    sizes |= {f"{kind}{i}": 2**12 + i for kind in ("index", "sample") for i in range(run.samples)}
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


def _shards(p: Any, numel: int) -> tuple[tuple[Any, ...], int, int] | None:
    """Where DTensor ``p``'s (``numel`` real coordinates) other shards are: ``None`` where
    every rank holds all of it; else the process groups of the mesh dimensions that shard
    it, the coordinates of its largest shard, and this shard's first coordinate where FSDP2
    splits the rows (once; then a sample on a stride is the one a process takes of the
    whole tensor), 0 otherwise (each shard's sample then starts on the stride from its own
    first coordinate)."""
    placements = list(p.placements)
    dims = [d for d, q in enumerate(placements) if q.is_shard()]
    if not dims:
        return None
    mesh = p.device_mesh
    shape = list(p.shape)
    for d in dims:  # the largest shard: torch.chunk's split, ⌈n / ranks⌉ a rank
        shape[placements[d].dim] = -(-shape[placements[d].dim] // mesh.size(d))
    bound = math.prod(shape) * (numel // max(p.numel(), 1))  # real coordinates (complex: 2 a number)
    first = 0
    if p.dim() > 0 and shards.problem(p) is None:
        first = shards.first_row(p) * (numel // p.shape[0])
    return tuple(mesh.get_group(d) for d in dims), bound, first


def _parameter(
    spec: _Spec, p: Tensor, state: Mapping[str, Any], compiled: bool, before: Tensor | None = None
) -> _Job | None:
    """One parameter's job, from ``optimizer.state[p]`` (views of flat buffers on the fast
    path; a DTensor's: this rank's shard), with Δw from ``before`` (w before the step);
    ``None`` for a parameter without state."""
    moments_ = spec.moments
    if not state and moments_.m != GRADIENT:
        return None
    flat = lambda x: real(shards.local_of(x).detach()).reshape(-1)  # noqa: E731
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
    if before is not None:
        tensors["w0"] = real(before).reshape(-1)
    numel = p.numel() * (2 if p.is_complex() else 1)
    sharded = p if shards.sharded(p) else None
    return _Job(spec, _step_of(state), tensors, numel, numel, compiled, sharded)


#: a layout's cached mask of the coordinates of its parameters with a state, and their number
_masks: weakref.WeakKeyDictionary[Layout, tuple[list[int], Tensor | None, int]] = weakref.WeakKeyDictionary()


def _mask(layout: Layout, owners: list[int]) -> tuple[Tensor | None, int]:
    """1 (uint8) at the coordinates of the parameters ``owners``, 0 elsewhere: the gaps, which
    some rules' steps fill (Adamax's and AdaBelief's ε, Rprop's step sizes), and parameters
    without a state; ``None`` where nothing is left out. And how many coordinates are 1."""
    found = _masks.get(layout)
    if found is None or found[0] != owners:
        ends = [o + s for o, s in zip(layout.offsets, layout.sizes)]
        whole = len(owners) == len(layout.params) and ends[-1] == layout.numel and ends[:-1] == layout.offsets[1:]
        mask = None
        if not whole:
            mask = torch.zeros(layout.numel, dtype=torch.uint8, device=layout.device)
            for i in owners:
                mask[layout.offsets[i] : ends[i]] = 1
        found = _masks[layout] = (list(owners), mask, sum(layout.sizes[i] for i in owners))
    return found[1], found[2]


def _bucket(spec: _Spec, optimizer: Optimizer, bucket: Any, inspector: Inspector | None) -> _Job | None:
    """A flat bucket's job over its flat buffers, or ``None`` if they are not what
    ``optimizer.state`` holds, or hold low-precision codes (then the caller reads the
    parameters one by one, decoding their states)."""
    state = bucket.state
    layout: Layout = bucket.layout
    moments_ = spec.moments
    if getattr(bucket, "storage", None) is not None:
        return None
    native = bool(optimizer.__dict__.get("_native"))  # the step's own checks: in C++ where it has them
    if layout.dtype.is_complex or not state.owners or not state.current(optimizer.state, state.owners, native):
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
    tensors = {"w": layout.data}
    mask, numel = _mask(layout, state.owners)
    if mask is not None:
        tensors["mask"] = mask
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
    before = inspector.flat_before(layout) if inspector is not None else None
    if before is not None:
        tensors["w0"] = before
    return _Job(spec, t, tensors, numel, layout.numel, bool(optimizer.__dict__.get("_compiled")))


@dataclass
class _Group:
    """One group's jobs and what the reading says of it."""

    jobs: list[_Job]
    moments: Moments
    step: float | None
    each: list[_Job | None] | None  # per parameter, on request


def _decoded(optimizer: Optimizer, group: dict[str, Any], rules: Rules, p: Tensor) -> Mapping[str, Any]:
    """``optimizer.state[p]``, with buffers kept at low precision decoded (float32; a DTensor's:
    this rank's shard)."""
    state = optimizer.state.get(p) or {}
    kept = Storage.of(group, rules, p) if state else None
    if kept is None:
        return state
    local = shards.local(state) if shards.sharded(p) else state
    return {**state, **kept.read(local, shards.local_of(p), rules.scalar_names())}


def _group(
    optimizer: Optimizer, index: int, group: dict[str, Any], per_parameter: bool, inspector: Inspector | None
) -> _Group:
    rules, hyper = optimizer._rules_of(index, group)  # the step's own (checked, reused while nothing changes)
    spec = _Spec(rules, moments(rules), float(hyper.lr), float(hyper.eps))
    params: list[Tensor] = list(group["params"])
    compiled = bool(optimizer.__dict__.get("_compiled"))
    before = inspector.before if inspector is not None else lambda p: None
    each = None
    if per_parameter:  # besides the group's own jobs, whose samples make its median
        each = [_parameter(spec, p, _decoded(optimizer, group, rules, p), compiled, before(p)) for p in params]
    jobs: list[_Job] = []
    step: float | None = None
    rest = params
    flat_group = getattr(optimizer, "_flat_groups", {}).get(index)
    if flat_group is not None and flat_group.current(params, bool(optimizer.__dict__.get("_native"))):
        rest = list(flat_group.others)
        for bucket in flat_group.buckets:
            job = _bucket(spec, optimizer, bucket, inspector)
            if job is None:
                rest += bucket.params
            else:
                jobs.append(job)
                uniform = bucket.state.uniform_step()
                step = uniform if uniform is not None else step
    for p in rest:
        state = _decoded(optimizer, group, rules, p)
        read = _parameter(spec, p, state, compiled, before(p))
        if read is not None:
            jobs.append(read)
            s = _step_of(state)
            step = s if not math.isnan(s) and (step is None or s > step) else step
    return _Group(jobs, spec.moments, step, each)


# ---------------------------------------------------------------- sharded parameters: the rest


def _across(parts: list[_Part]) -> dict[int, _Part]:
    """Each part by ``id``, those of a DTensor's shard replaced by the whole tensor's: their
    sums all-reduced (SUM; min and max by MAX) and samples all-gathered over the mesh
    dimensions that shard them, a few collectives for all of them (every rank has the same
    parts, in the same order: it steps the same parameters)."""
    found = {id(p): p for p in parts}
    by_groups: dict[tuple[Any, ...], list[_Part]] = {}
    for p in parts:
        if p.shards is not None:
            by_groups.setdefault(p.shards.groups, []).append(p)
    if not by_groups:
        return found
    import torch.distributed as dist

    for groups, local in by_groups.items():
        sums = torch.stack([p.sums for p in local])
        low, high = sums[:, 2], sums[:, 3]
        nans = low.isnan() | high.isnan()
        # Σ m², Σ √V̂, Σ Δw² (a NaN stays one), and on how many ranks an r is NaN (a MAX
        # of NaN depends on the order of its operands: counted instead)
        totals = torch.cat([sums[:, [0, 1, 4]], nans.double()[:, None]], 1)
        extremes = torch.where(nans[:, None], -math.inf, torch.stack([high, -low], 1))
        # every part's samples end to end, each padded to its length on the largest shard
        lengths = [p.shards.lengths if p.samples else () for p in local]  # type: ignore[union-attr]
        samples = torch.full((sum(map(sum, lengths)),), math.nan, dtype=_sample_dtype(local), device=sums.device)
        at = 0
        for p, ns in zip(local, lengths):
            for sample, n in zip(p.samples, ns):
                samples[at : at + sample.numel()] = sample
                at += n
        for group in groups:
            dist.all_reduce(totals, dist.ReduceOp.SUM, group=group)
            dist.all_reduce(extremes, dist.ReduceOp.MAX, group=group)
            if samples.numel():
                gathered = samples.new_empty((dist.get_world_size(group), samples.numel()))
                dist.all_gather(list(gathered.unbind(0)), samples, group=group)
                samples = gathered.reshape(-1)
        samples = samples.reshape(-1, max(sum(map(sum, lengths)), 1))  # a row a rank
        extremes = torch.where(totals[:, 3:] > 0, math.nan, extremes)
        rows = torch.stack([totals[:, 0], totals[:, 1], -extremes[:, 1], extremes[:, 0], totals[:, 2]], 1)
        at = 0
        for i, (p, ns) in enumerate(zip(local, lengths)):
            mine = []
            for n in ns:
                mine.append(samples[:, at : at + n].reshape(-1))
                at += n
            found[id(p)] = _Part(p.numel, rows[i], tuple(mine), p.defined)
    return found


def _sample_dtype(parts: list[_Part]) -> torch.dtype:
    dtypes = [p.samples[0].dtype for p in parts if p.samples]
    return dtypes[0] if dtypes else torch.float32


# ---------------------------------------------------------------- the numbers on the host


def _values(parts: list[tuple[list[float], tuple[bool, ...]]]) -> list[float | None]:
    """Σ m², Σ √V̂, min r, max r, Σ Δw² over parts (each: its :data:`SUMS` and which are
    defined): ``None`` where no part defines it (a part without a gradient adds nothing);
    min and max over the parts with an r (max −∞: no w ≠ 0 there), NaN where one is NaN.
    A NaN in a state stays NaN: it is a reading, not a quantity 'not defined'."""

    def total(j: int) -> float | None:
        known = [row[j] for row, defined in parts if defined[j]]
        return math.fsum(known) if known else None

    with_r = [row for row, defined in parts if defined[2] and row[3] != -math.inf]
    low: float | None = min((row[2] for row in with_r), default=None)
    high: float | None = max((row[3] for row in with_r), default=None)
    if any(math.isnan(row[2]) or math.isnan(row[3]) for row in with_r):
        low = high = math.nan
    return [total(0), total(1), low, high, total(4)]


def _stats(numel: int, values: list[float | None], median: float) -> Stats:
    """The :class:`Stats` of ``numel`` coordinates from :func:`_values` and the median of
    their sample (NaN where the sample has no r; the median is NaN where min or max is)."""
    m_sq, sqrt_v, low, high, update_sq = values
    n = max(numel, 1)
    if low is None or math.isnan(low):
        middle = low
    else:
        middle = None if math.isnan(median) else median
    return Stats(
        numel=numel,
        m_norm=math.sqrt(m_sq) if m_sq is not None else None,
        m_rms=math.sqrt(m_sq / n) if m_sq is not None else None,
        sqrt_v_mean=sqrt_v / n if sqrt_v is not None else None,
        ratio_min=low,
        ratio_median=middle,
        ratio_max=high,
        update_rms=math.sqrt(update_sq / n) if update_sq is not None else None,
    )


def _medians(rows: list[tuple[list[_Part], int]]) -> list[Tensor | float | None]:
    """The lower median of r over each row's parts' samples (its parts, and which of their
    samples), :func:`_median`'s (a 0-dim tensor on a GPU, read with everything else);
    ``None`` for a row without any."""
    medians: list[Tensor | float | None] = []
    for parts, which in rows:
        found = [p.samples[which] for p in parts if p.samples]
        if not found:
            medians.append(None)
            continue
        device = found[0].device
        medians.append(_median(torch.cat([s.to(device) for s in found]) if len(found) > 1 else found[0]))
    return medians


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
    With sharded (DTensor) parameters, every rank must call it (module docstring).
    """
    inspector = _watching.get(_check(optimizer))
    return _read(optimizer, per_parameter, inspector)


class Inspector:
    """Watches an optimizer: before each of its steps, copies the weights (one copy of the
    model: each flat bucket's buffer, each other parameter, a DTensor's local shard), so
    that :meth:`read` also gives the last update, Δw, summed in the same pass as the rest.

    ``close()`` (or leaving a ``with`` block) removes the hook.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = _check(optimizer)
        self._flat: dict[Layout, Tensor] = {}  # a bucket's weights before the step, by layout
        self._single: dict[Tensor, Tensor] = {}  # another parameter's, by parameter
        self._regions: dict[Tensor, Tensor] | None = None  # every parameter's, on request
        self._handle = optimizer.register_step_pre_hook(self._snapshot)
        _watching[optimizer] = self

    def _snapshot(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        flat: dict[Layout, Tensor] = {}
        single: list[Tensor] = []
        flat_groups = getattr(self.optimizer, "_flat_groups", {})
        native = bool(self.optimizer.__dict__.get("_native"))
        for index, group in enumerate(self.optimizer.param_groups):
            params = group["params"]
            flat_group = flat_groups.get(index)
            held: set[int] = set()
            if (
                flat_group is not None
                and len(flat_group.params) == len(params)
                and all(map(is_, params, flat_group.params))
            ):
                for bucket in flat_group.buckets:
                    if bucket.layout.holds(native):
                        flat[bucket.layout] = bucket.layout.data
                        held.update(map(id, bucket.params))
            single += [p for p in params if id(p) not in held]
        with torch.no_grad():
            self._flat = {layout: self._copy(self._flat.get(layout), data) for layout, data in flat.items()}
            sources = [shards.local_of(p).detach() for p in single]
            kept = [self._single.get(p) for p in single]
            if sources and all(
                k is not None and k.shape == s.shape and k.dtype == s.dtype for k, s in zip(kept, sources)
            ):
                torch._foreach_copy_(cast(list[Tensor], kept), sources)
                self._single = dict(zip(single, cast(list[Tensor], kept)))
            else:
                self._single = {p: s.clone() for p, s in zip(single, sources)}
        self._regions = None

    @staticmethod
    def _copy(kept: Tensor | None, data: Tensor) -> Tensor:
        if kept is None or kept.shape != data.shape:
            return data.clone()
        return kept.copy_(data)

    def before(self, p: Tensor) -> Tensor | None:
        """Parameter ``p``'s weights before the last step (a DTensor's: this rank's shard), or
        ``None`` (not stepped since this inspector watches, or added since)."""
        found = self._single.get(p)
        if found is not None:
            return found
        if self._regions is None:
            self._regions = {
                q: layout.region(data, i) for layout, data in self._flat.items() for i, q in enumerate(layout.params)
            }
        return self._regions.get(p)

    def flat_before(self, layout: Layout) -> Tensor | None:
        """A flat bucket's weights before the last step, in ``layout``'s flat buffer (copied
        there if the step built the layout anew), or ``None`` where some parameter has none."""
        found = self._flat.get(layout)
        if found is not None:
            return found
        befores = [self.before(p) for p in layout.params]
        if any(b is None for b in befores):
            return None
        flat = layout.zeros()
        torch._foreach_copy_(layout.regions(flat), cast(list[Tensor], befores))
        return flat

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
    """Every part's pass, the sharded ones' collectives, the medians, then one host read of
    all of it; the rest (sums over parts, min and max) is arithmetic on the host."""
    with torch.no_grad():
        groups = [_group(optimizer, i, g, per_parameter, inspector) for i, g in enumerate(optimizer.param_groups)]
        # the median's samples: each group's, every k-th of its coordinates laid end to end;
        # with several groups, also the whole read's (SAMPLE)
        several = sum(1 for g in groups if g.jobs) > 1
        every = _stride(sum(job.extent for g in groups for job in g.jobs))
        rows: list[list[_Part]] = []
        read_at = 0
        for g in groups:
            own, group_at = _stride(sum(job.extent for job in g.jobs)), 0
            row = []
            for job in g.jobs:
                row.append(_run(job, [(own, group_at)] + ([(every, read_at)] if several else [])))
                group_at += job.extent
                read_at += job.extent
            rows.append(row)
        # each parameter alone: its own sample, every k-th coordinate of its own
        each = [
            [_run(job, [(_stride(job.extent), 0)]) if job is not None else None for job in g.each]
            if g.each is not None else None
            for g in groups
        ]  # fmt: skip
        parts = [p for row in rows for p in row] + [p for g in each if g is not None for p in g if p is not None]
        whole = _across(parts)
        wanted = [([whole[id(p)] for p in row], 0) for row in rows]
        if len(wanted) > 1:  # the whole optimizer; with one group, the group's numbers are its
            wanted.insert(0, ([p for row, _ in wanted for p in row], 1 if several else 0))
        wanted += [([whole[id(p)]], 0) for g in each if g is not None for p in g if p is not None]
        medians = _medians(wanted)
        rows = [row for row, _ in wanted]
        tensors = [p.sums for p in whole.values()] + [m for m in medians if isinstance(m, Tensor)]
        host = iter(_host(tensors))
        sums = {id(part): [next(host) for _ in SUMS] for part in whole.values()}
        middle = [next(host) if isinstance(m, Tensor) else math.nan if m is None else m for m in medians]
    stats = [
        _stats(sum(p.numel for p in row), _values([(sums[id(p)], p.defined) for p in row]), mid)
        for row, mid in zip(rows, middle)
    ]
    first = 1 if len(groups) > 1 else 0
    total, by_group, by_parameter = stats[0], stats[first : first + len(groups)], iter(stats[first + len(groups) :])
    readings = []
    for gi, (g, ps) in enumerate(zip(groups, each)):
        params = tuple(next(by_parameter) if p is not None else None for p in ps) if ps is not None else None
        readings.append(GroupReading(gi, by_group[gi], g.moments, g.step, params))
    return Reading(tuple(readings), total)


def _stride(extent: int) -> int:
    """k = ⌈extent / SAMPLE⌉: every k-th of ``extent`` coordinates, at most SAMPLE of them."""
    return max(1, -(-extent // SAMPLE))


def _host(tensors: Iterable[Tensor]) -> list[float]:
    """Every number on the host (float64), in order: one read per device (on the CPU, one
    ``tolist``)."""
    tensors = list(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    out: list[list[float]] = [[]] * len(tensors)
    for indices in by_device.values():
        flat = torch.cat([tensors[i].reshape(-1).double() for i in indices]).tolist()
        at = 0
        for i in indices:
            n = tensors[i].numel()
            out[i], at = flat[at : at + n], at + n
    return [x for values in out for x in values]
