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

Cost. ‖m‖, mean √V̂, min and max of r and rms(Δw) are exact, over every coordinate: on the
fast path one pass over each flat bucket's m, V, w and (under an :class:`Inspector`) its copy
of w before the step, each term computed at the parameters' precision (at least float32) and
summed in float64 (a kernel compiled by Inductor when the optimizer's own kernels are, the
same formula eagerly otherwise). The median of r is exact up to
:data:`SAMPLE` coordinates a bucket (or parameter); above, it is the median of a fixed
strided sample of at most :data:`SAMPLE` (every k-th coordinate, k = ⌈n/SAMPLE⌉), found
by a histogram of the values' bits and a selection within one bin (:func:`lower_median`).
Everything else stays on the device until one host read at the end; before it, one more
reads the bins every median's selection needs (all medians at once): two host reads a read,
however many param groups. An :class:`Inspector`'s hook adds one
copy of the weights to every step (one copy of each flat bucket). ``benchmarks/bench_inspect.py``
(AdamW, one thread, median of interleaved rounds, this project's 2-core CPU machine): see
README's "What m and V do".

Sharded parameters (FSDP2's DTensors): each rank reads its own shard, and the shards' sums,
minima and maxima are all-reduced over the mesh dimensions that shard the parameter (a few
collectives a read for all of them), so that every rank gets the same reading, one
process's over the whole tensors to float rounding. The median's sample is each rank's
strided sample of its shard (every k-th coordinate, k from the whole parameter), gathered:
where FSDP2 splits the rows (``Shard(0)``, once) it is the sample one process takes of the
parameter, so the median is exact up to :data:`SAMPLE` coordinates a parameter, and that
process's above; under other placements each shard's sample starts at its own first
coordinate, an approximation of it. Reading is then a collective: every rank reads, as
every rank steps.

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
from momenta.rules import Gradient, One, Rule
from momenta.rules.base import ROOT_C2, SecondMoment, Wrapping

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
    host read, of the bin, the rank and whether Σ r is NaN: r has no −∞ to make one of +∞).
    Several medians share that host read: :func:`_median_start` for each, one read of all
    their numbers, :func:`_median_finish` for each.
    """
    start = _median_start(r)
    if isinstance(start, Tensor):
        return start
    return _median_finish(r, start[0], start[1].tolist())


def _median_start(r: Tensor) -> Tensor | tuple[Tensor, Tensor]:
    """The median itself where no host read is needed (small ``r``), else the histogram's
    bins of ``r`` and the four numbers :func:`_median_finish` needs (on the device)."""
    if r.numel() <= SMALL or r.dtype not in _KEY_BITS:
        nan = torch.full((), math.nan, dtype=r.dtype, device=r.device)
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
    within_rank = rank - (cum[at] - hist[at + 1])
    return bins, torch.cat([at, within_rank, cum[-1:], r.sum().isnan().reshape(1)])


def _median_finish(r: Tensor, bins: Tensor, numbers: list[Any]) -> Tensor:
    """The median of ``r`` from :func:`_median_start`'s bins and numbers, read on the host:
    the bin, the rank within it, how many entries are ≥ 0, whether one is NaN."""
    b, k, total, nans = (int(x) for x in numbers)
    if nans or not total:  # a NaN, or nothing ≥ 0
        return torch.full((), math.nan, dtype=r.dtype, device=r.device)
    return r[bins == b + 1].kthvalue(k + 1).values


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
    it, and the length of its sample on every rank (padded with −1, 'r not defined')."""

    groups: tuple[Any, ...]
    length: int


@dataclass(frozen=True)
class _Part:
    """One bucket's or parameter's reading, on the device: :data:`SUMS` (NaN where not
    defined; min +∞ and max −∞ where no r is) and its sample of r (−1 where r is not
    defined), over ``numel`` coordinates. ``shards``: only this rank's shard of a DTensor
    (of ``numel`` coordinates in all) is read, until :func:`_across` reads the rest."""

    numel: int
    sums: Tensor
    sample: Tensor | None
    shards: _Shards | None = None


def _strided(n: int, device: torch.device, k: int | None = None, start: int = 0) -> Tensor:
    """Every k-th index of ``n`` from ``start``, k = ⌈n / SAMPLE⌉ unless given (every index
    when n ≤ SAMPLE)."""
    k = max(1, -(-n // SAMPLE)) if k is None else k
    key = (n, k, start, device)
    found = _samples.get(key)
    if found is None:
        if len(_samples) > 1024:
            _samples.clear()
        found = _samples[key] = torch.arange(start, n, k, device=device)
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

    def positional(self, *tensors: Tensor) -> None:
        self(dict(zip(self.inputs, tensors)))

    def __call__(self, x: dict[str, Tensor]) -> None:
        """Writes :data:`SUMS` into ``x["sums"]`` and r at ``x["index"]`` into ``x["sample"]``:

            Σ m²,  Σ √V̂,  min r,  max r,  Σ (w − w0)²   over the coordinates in ``mask`` (r: and w ≠ 0)
            √V̂ = denominator(V, c₂, 0);  r = scale·|m| / (√V̂ + ε) / |w|,  scale = lr/(d(t)·c₁(t))

        Sums accumulate in float64. The mask (uint8) multiplies, as the coordinates it leaves
        out hold finite numbers (zeros, a rule's ε): Inductor's CPU kernels select under a
        loaded mask (``torch.where``) several times slower than they multiply (measured 10.6
        vs 3.2 ms for one sum over 10.7M floats). The sample is computed from the inputs
        gathered at ``index`` (not gathered from a whole r, which a compiled pass would write
        out in full)."""
        nan = torch.full((), math.nan, dtype=torch.float64, device=x["w"].device)
        m, root, r, valid = self.coordinates(x, x)
        keep = x["mask"].to(x["packed"].dtype) if "mask" in x else None
        total: Callable[[Tensor], Tensor] = lambda y: (y if keep is None else y * keep).sum(dtype=torch.float64)  # noqa: E731
        m_sq = total(m * m) if m is not None else nan
        sqrt_v = total(root) if root is not None else nan
        update_sq = nan
        if "w0" in x:
            d = x["w"].to(x["packed"].dtype) - x["w0"].to(x["packed"].dtype)
            update_sq = total(d * d)
        low = high = nan
        if r is not None:
            low = torch.where(valid, r, math.inf).amin().double()
            high = torch.where(valid, r, -math.inf).amax().double()
            index = x["index"]
            sample: dict[str, Tensor] = {k: x[k][index] for k in ("m", "v", "w", "mask") if k in x}
            _, _, r_sample, valid_sample = self.coordinates(x, sample)
            x["sample"].copy_(torch.where(valid_sample, r_sample, -1.0))  # type: ignore[arg-type]
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
        if denom is None or self.rules.precondition != "moment":  # no division, or m = g/√V̂ already
            return m, root, m.abs() * scale / w.abs(), valid
        r = m.abs() * scale / (denom * w.abs())  # one division a coordinate, not two
        return m, root, torch.where(denom == 0, 0.0, r) if self.rules.zero_over_zero else r, valid


#: compiled passes by structure (``None``: compiling failed, run eagerly)
_compiled: dict[tuple[Any, ...], Callable[..., None] | None] = {}


def _run(
    spec: _Spec, t: float, tensors: dict[str, Tensor], numel: int, compiled: bool, index: Tensor | None = None,
    shards: _Shards | None = None,
) -> _Part:  # fmt: skip
    """The pass over 1-D ``m`` / ``v`` / ``w`` / ``w0`` / ``mask`` (those present in
    ``tensors``), sampling r at ``index`` (default: :func:`_strided`)."""
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
    names = ("t", "c2", "root_c2", "eps", "scale", *value_names, *hyper)
    numbers = [t, c2, math.sqrt(c2) if c2 >= 0 else math.nan, spec.eps, scale, *(float(values[n]) for n in value_names)]
    numbers += [float(h) for h in hyper.values()]
    work = torch.promote_types(w.dtype, torch.float32)
    if w.numel() == 0:  # an empty shard: nothing to add, no r
        defined = {"m_sq": "m" in tensors, "sqrt_v": "v" in tensors or moments_.V == ONE, "update_sq": "w0" in tensors}
        sums = [0.0 if defined.get(name) else math.nan for name in SUMS]
        sums[2:4] = [math.inf, -math.inf]
        empty = w.new_empty(0, dtype=work) if ratio else None
        return _Part(numel, torch.tensor(sums, dtype=torch.float64, device=w.device), empty, shards)
    x = dict(tensors)
    if moments_.V == ONE:
        x["one"] = w.new_empty(0)
    x["packed"] = torch.tensor(numbers, dtype=work, device=w.device)
    x["sums"] = torch.empty(len(SUMS), dtype=torch.float64, device=w.device)
    if ratio:
        x["index"] = _strided(w.numel(), w.device) if index is None else index
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
            return _Part(numel, x["sums"], x.get("sample"), shards)
    run(x)
    return _Part(numel, x["sums"], x.get("sample"), shards)


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


def _shards(p: Any, numel: int, k: int) -> tuple[_Shards | None, int]:
    """How DTensor ``p``'s shards are read (``None``: every rank holds all of it) and where
    this rank's sample of every k-th coordinate starts: where FSDP2 splits the rows (once),
    at the first multiple of k in the shard (one process's sample); else at its start."""
    placements = list(p.placements)
    dims = [d for d, q in enumerate(placements) if q.is_shard()]
    if not dims:
        return None, 0
    mesh = p.device_mesh
    shape = list(p.shape)
    for d in dims:  # the largest shard: torch.chunk's split, ⌈n / ranks⌉ a rank
        shape[placements[d].dim] = -(-shape[placements[d].dim] // mesh.size(d))
    bound = math.prod(shape) * (numel // max(p.numel(), 1))  # real coordinates (complex: 2 a number)
    start = 0
    if p.dim() > 0 and shards.problem(p) is None:
        offset = shards.first_row(p) * (numel // p.shape[0])
        start = -offset % k
    return _Shards(tuple(mesh.get_group(d) for d in dims), -(-bound // k)), start


def _parameter(
    spec: _Spec, p: Tensor, state: Mapping[str, Any], compiled: bool, before: Tensor | None = None
) -> _Part | None:
    """One parameter's reading, from ``optimizer.state[p]`` (views of flat buffers on the
    fast path; a DTensor's: this rank's shard), with Δw from ``before`` (w before the step);
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
    found, index = None, None
    if shards.sharded(p):
        k = max(1, -(-numel // SAMPLE))
        found, start = _shards(p, numel, k)
        if found is not None:
            index = _strided(tensors["w"].numel(), tensors["w"].device, k, start)[: found.length]
    if "m" not in tensors and "v" not in tensors and "w0" not in tensors and moments_.V != ONE:
        return _Part(numel, _nans(tensors["w"].device), None, found)
    return _run(spec, _step_of(state), tensors, numel, compiled, index, found)


def _nans(device: torch.device) -> Tensor:
    return torch.full((len(SUMS),), math.nan, dtype=torch.float64, device=device)


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


def _bucket(spec: _Spec, optimizer: Optimizer, bucket: Any, inspector: Inspector | None) -> _Part | None:
    """A flat bucket's reading over its flat buffers, or ``None`` if they are not what
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
    return _run(spec, t, tensors, numel, bool(optimizer.__dict__.get("_compiled")))


@dataclass
class _Group:
    """One group's parts and what the reading says of it."""

    parts: list[_Part]
    moments: Moments
    step: float | None
    each: list[_Part | None] | None  # per parameter, on request


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
    if per_parameter:
        each = [_parameter(spec, p, _decoded(optimizer, group, rules, p), compiled, before(p)) for p in params]
        steps = [_step_of(optimizer.state.get(p) or {}) for p in params]
        finite = [s for s in steps if not math.isnan(s)]
        return _Group([e for e in each if e is not None], spec.moments, max(finite) if finite else None, each)
    parts: list[_Part] = []
    step: float | None = None
    rest = params
    flat_group = getattr(optimizer, "_flat_groups", {}).get(index)
    if flat_group is not None and flat_group.current(params, bool(optimizer.__dict__.get("_native"))):
        rest = list(flat_group.others)
        for bucket in flat_group.buckets:
            part = _bucket(spec, optimizer, bucket, inspector)
            if part is None:
                rest += bucket.params
            else:
                parts.append(part)
                uniform = bucket.state.uniform_step()
                step = uniform if uniform is not None else step
    for p in rest:
        state = _decoded(optimizer, group, rules, p)
        read = _parameter(spec, p, state, compiled, before(p))
        if read is not None:
            parts.append(read)
            s = _step_of(state)
            step = s if not math.isnan(s) and (step is None or s > step) else step
    return _Group(parts, spec.moments, step, None)


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
        added = sums[:, [0, 1, 4]]  # Σ m², Σ √V̂, Σ Δw², and on how many ranks each is defined
        totals = torch.cat([added.nan_to_num(0.0), (~added.isnan()).double()], 1)
        defined = sums[:, 3] > -math.inf
        extremes = torch.stack(
            [torch.where(defined, sums[:, 3], -math.inf), torch.where(defined, -sums[:, 2], -math.inf)], 1
        )
        lengths = [p.shards.length if p.sample is not None else 0 for p in local]  # type: ignore[union-attr]
        samples = torch.full((sum(lengths),), -1.0, dtype=_sample_dtype(local), device=sums.device)
        at = 0
        for p, n in zip(local, lengths):
            if p.sample is not None:
                samples[at : at + p.sample.numel()] = p.sample
            at += n
        for group in groups:
            dist.all_reduce(totals, dist.ReduceOp.SUM, group=group)
            dist.all_reduce(extremes, dist.ReduceOp.MAX, group=group)
            if samples.numel():
                gathered = samples.new_empty((dist.get_world_size(group), samples.numel()))
                dist.all_gather(list(gathered.unbind(0)), samples, group=group)
                samples = gathered.reshape(-1)
        samples = samples.reshape(-1, max(sum(lengths), 1))
        nan = torch.full((), math.nan, dtype=torch.float64, device=sums.device)
        whole = torch.where(totals[:, 3:] > 0, totals[:, :3], nan)
        rows = torch.stack([whole[:, 0], whole[:, 1], -extremes[:, 1], extremes[:, 0], whole[:, 2]], 1)
        at = 0
        for i, (p, n) in enumerate(zip(local, lengths)):
            sample = samples[:, at : at + n].reshape(-1) if p.sample is not None else None
            found[id(p)] = _Part(p.numel, rows[i], sample)
            at += n
    return found


def _sample_dtype(parts: list[_Part]) -> torch.dtype:
    dtypes = [p.sample.dtype for p in parts if p.sample is not None]
    return dtypes[0] if dtypes else torch.float32


# ---------------------------------------------------------------- the numbers on the host


def _values(rows: list[list[float]]) -> tuple[float, float, float, float, float]:
    """Σ m², Σ √V̂, min r, max r, Σ Δw² over parts (:data:`SUMS` each, NaN for 'none'): a sum
    is 'none' only where every part has none (a part without a gradient adds nothing); min
    and max are over the parts with an r (max −∞: no w ≠ 0 there)."""

    def total(j: int) -> float:
        known = [row[j] for row in rows if not math.isnan(row[j])]
        return math.fsum(known) if known else math.nan

    defined = [row for row in rows if row[3] > -math.inf]
    low = min(row[2] for row in defined) if defined else math.nan
    high = max(row[3] for row in defined) if defined else math.nan
    return total(0), total(1), low, high, total(4)


def _stats(numel: int, values: tuple[float, ...], median: float) -> Stats:
    m_sq, sqrt_v, low, high, update_sq = (None if math.isnan(x) else x for x in values)
    n = max(numel, 1)
    return Stats(
        numel=numel,
        m_norm=math.sqrt(m_sq) if m_sq is not None else None,
        m_rms=math.sqrt(m_sq / n) if m_sq is not None else None,
        sqrt_v_mean=sqrt_v / n if sqrt_v is not None else None,
        ratio_min=low,
        ratio_median=None if math.isnan(median) else median,
        ratio_max=high,
        update_rms=math.sqrt(update_sq / n) if update_sq is not None else None,
    )


def _medians(rows: list[list[_Part]]) -> list[Tensor | None]:
    """The lower median of r over each row's parts' samples (0-dim tensors), ``None`` for a
    row without any: one host read for all of them (:func:`lower_median`)."""
    samples: list[Tensor | None] = []
    for parts in rows:
        found = [p.sample for p in parts if p.sample is not None]
        device = found[0].device if found else None
        samples.append(torch.cat([s.to(device) for s in found]) if len(found) > 1 else (found[0] if found else None))
    starts = [_median_start(r) if r is not None else None for r in samples]
    pending = [i for i, s in enumerate(starts) if isinstance(s, tuple)]
    numbers = iter(_host([cast(tuple[Tensor, Tensor], starts[i])[1] for i in pending]))
    medians: list[Tensor | None] = []
    for r, start in zip(samples, starts):
        if isinstance(start, tuple):
            medians.append(_median_finish(cast(Tensor, r), start[0], [next(numbers) for _ in range(4)]))
        else:
            medians.append(start)
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
        parts = list({id(p): p for g in groups for p in g.parts}.values())
        whole = _across(parts)
        rows = [[whole[id(p)] for p in g.parts] for g in groups]
        if len(rows) > 1:  # the whole optimizer; with one group, the group's numbers are its
            rows.insert(0, [p for row in rows for p in row])
        each = [
            [[whole[id(p)]] if p is not None else None for p in g.each] if g.each is not None else None for g in groups
        ]
        rows += [row for g in each if g is not None for row in g if row is not None]
        medians = _medians(rows)
        tensors = [p.sums for p in whole.values()] + [m for m in medians if m is not None]
        host = iter(_host(tensors))
        sums = {id(part): [next(host) for _ in SUMS] for part in whole.values()}
        middle = [next(host) if m is not None else math.nan for m in medians]
    stats = [
        _stats(sum(p.numel for p in row), _values([sums[id(p)] for p in row]), mid) for row, mid in zip(rows, middle)
    ]
    first = 1 if len(groups) > 1 else 0
    total, by_group, by_parameter = stats[0], stats[first : first + len(groups)], iter(stats[first + len(groups) :])
    readings = []
    for gi, (g, ps) in enumerate(zip(groups, each)):
        params = tuple(next(by_parameter) if p is not None else None for p in ps) if ps is not None else None
        readings.append(GroupReading(gi, by_group[gi], g.moments, g.step, params))
    return Reading(tuple(readings), total)


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
