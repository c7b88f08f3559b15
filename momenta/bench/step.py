"""Step-time benchmarks: momenta against torch.optim's for-loop, foreach and fused kernels.

An optimizer step is memory-bound: each parameter's p, g and state are read and written
once. The floor is ``ideal bytes / memory bandwidth``; the bandwidth is measured by an
in-place ``a += s·c`` probe (12 bytes an element) timed in the same rounds as the
optimizers, because on a shared VM it drifts between runs. Every variant is timed
round-robin in one process; each number is a median over rounds.

Variants:

* ``torch for-loop`` / ``torch foreach`` / ``torch fused``: torch.optim with that flag;
* ``momenta``: the default constructor, gradients accumulated in place (``zero_grad
  (set_to_none=False)``, or no zero_grad between accumulations);
* ``momenta, new grads``: a fresh gradient tensor every step (``zero_grad()`` with its
  default ``set_to_none=True``), so each step first copies gradients into the flat buffer.

The ``overhead`` set is a second table: µs per AdamW step on 10, 100 and 1000 tensors of
16 elements each (gradients in place), where the step is all per-tensor and per-call cost
and no bandwidth. ``momenta bench --loop`` (:mod:`momenta.bench.loop`) times whole
training iterations instead.
"""

from __future__ import annotations

import argparse
import functools
import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

import momenta
from momenta.bench import common
from momenta.bench.timing import Variant, round_robin, timed
from momenta.engine import compat
from momenta.rules import EMA, SecondMoment

# -- parameter sets -----------------------------------------------------------------------


def gpt2_small_shapes() -> list[tuple[int, ...]]:
    """The parameter shapes of GPT-2 small (124M parameters, 148 tensors)."""
    d, vocab, ctx, layers = 768, 50257, 1024, 12
    shapes: list[tuple[int, ...]] = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


SETS: dict[str, Callable[[], list[tuple[int, ...]]]] = {
    "16x1M": lambda: [(2**20,)] * 16,
    "2000x4096": lambda: [(4096,)] * 2000,
    "gpt2-small": gpt2_small_shapes,
}
#: the ``overhead`` set: this many tensors of 16 elements each
OVERHEAD_TENSORS = (10, 100, 1000)
KNOWN_SETS = (*SETS, "overhead")

# -- optimizers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class YogiSq(SecondMoment):
    """A rule written outside momenta's rules, as a user would: Yogi's additive V,
    V = V − (1−β)·sign(V − g²)·g² (Zaheer et al., "Adaptive Methods for Nonconvex
    Optimization", NeurIPS 2018)."""

    beta: float = 0.999
    formula = "V = V − (1−β)·sign(V − g²)·g²"

    def init(self, p):  # type: ignore[no-untyped-def]
        return {"exp_avg_sq": torch.zeros_like(p)}

    def update(self, state, g, m, t):  # type: ignore[no-untyped-def]
        v, g2 = state["exp_avg_sq"], g * g
        v = v - (1 - self.beta) * torch.sign(v - g2) * g2
        return v, {"exp_avg_sq": v}


#: a user's optimizer, m = EMA(g) and V = Yogi's additive rule, trained as it is
yogi = functools.partial(momenta.Composed, rules=momenta.Rules(EMA(0.9), YogiSq(0.999)), eps=1e-3)


@dataclass(frozen=True)
class Case:
    """An optimizer to time: momenta's class, torch's counterpart and the ideal bytes."""

    name: str
    momenta_factory: Callable[..., torch.optim.Optimizer]
    torch_cls: type[torch.optim.Optimizer] | None
    kwargs: dict = field(default_factory=dict)
    torch_kwargs: dict = field(default_factory=dict)
    bytes_per_param: int = 28  # fp32 reads + writes of p, g and state (performance-facts.md)


CASES = [
    Case("SGD momentum", momenta.SGD, torch.optim.SGD, dict(lr=1e-6, momentum=0.9), bytes_per_param=20),
    Case("Adagrad", momenta.Adagrad, torch.optim.Adagrad, dict(lr=1e-6), bytes_per_param=20),
    Case("RMSprop", momenta.RMSprop, torch.optim.RMSprop, dict(lr=1e-6), bytes_per_param=20),
    Case("Adam", momenta.Adam, torch.optim.Adam, dict(lr=1e-6)),
    Case("AdamW", momenta.AdamW, torch.optim.AdamW, dict(lr=1e-6)),
    Case("seed Adam", momenta.seed.Adam, torch.optim.Adam, dict(lr=1e-6), dict(lr=1e-6)),
    Case("Yogi (user rule)", yogi, torch.optim.Adam, dict(lr=1e-6), dict(lr=1e-6)),
    # the rest of torch.optim (elementwise: the fast path); torch has no fused kernel for these
    Case("Adamax", momenta.Adamax, torch.optim.Adamax, dict(lr=1e-6)),
    Case("NAdam", momenta.NAdam, torch.optim.NAdam, dict(lr=1e-6)),
    Case("RAdam", momenta.RAdam, torch.optim.RAdam, dict(lr=1e-6)),
    Case("Adadelta", momenta.Adadelta, torch.optim.Adadelta, dict(lr=1e-6)),
    Case("ASGD", momenta.ASGD, torch.optim.ASGD, dict(lr=1e-6), bytes_per_param=20),
    Case("Rprop", momenta.Rprop, torch.optim.Rprop, dict(lr=1e-6)),
    # the modern ones have no torch.optim class: the roofline says how close they come
    Case("Lion", momenta.Lion, None, dict(lr=1e-6), bytes_per_param=20),
    Case("AdaBelief", momenta.AdaBelief, None, dict(lr=1e-6)),
    Case("AdEMAMix", momenta.AdEMAMix, None, dict(lr=1e-6), bytes_per_param=36),
    Case("ScheduleFreeAdamW", momenta.ScheduleFreeAdamW, None, dict(lr=1e-6)),
]

# -- timing -----------------------------------------------------------------------------------


def _params(shapes: Sequence[tuple[int, ...]], seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    return params


def _variants(
    case: Case, shapes: Sequence[tuple[int, ...]], new_grads: bool = True, repeat: int = 1
) -> list[Variant]:
    """torch's implementations, momenta, and (``new_grads``) momenta fed fresh gradients;
    each timed sample is ``repeat`` steps."""
    variants = []
    if case.torch_cls is not None:
        kwargs = case.torch_kwargs or case.kwargs
        flags: list[tuple[str, dict[str, Any]]] = [
            ("torch for-loop", {"foreach": False}), ("torch foreach", {"foreach": True}), ("torch fused", {"fused": True}),
        ]  # fmt: skip
        for label, flag in flags:
            params = _params(shapes)
            try:
                opt = case.torch_cls(params, **kwargs, **flag)
                opt.step()
            except (RuntimeError, TypeError, ValueError):
                continue  # no such implementation (RMSprop has no fused kernel)
            variants.append(Variant(label, timed(opt.step, repeat=repeat)))
    params = _params(shapes)
    opt = case.momenta_factory(params, **case.kwargs)
    variants.append(Variant("momenta", timed(opt.step, repeat=repeat)))
    if not new_grads:
        return variants

    params2 = _params(shapes)
    opt2 = case.momenta_factory(params2, **case.kwargs)
    fresh = [[torch.randn_like(p) * 1e-3 for p in params2] for _ in range(2)]
    turn = [0]

    def new_grads_step() -> None:  # what zero_grad() + backward leave: new tensors
        turn[0] ^= 1
        for p, g in zip(params2, fresh[turn[0]]):
            p.grad = g
        opt2.step()

    variants.append(Variant("momenta, new grads", timed(new_grads_step)))
    return variants


def _probe(numel: int) -> Variant:
    a, c = torch.randn(numel), torch.randn(numel)

    def axpy() -> None:  # a += s·c: read a, read c, write a
        a.add_(c, alpha=1e-9)

    return Variant("bandwidth probe", timed(axpy))


def measure(case: Case, set_name: str, rounds: int = 7, warmup: int = 3) -> dict[str, float]:
    """Median step time (ms) of every variant and the probe, timed round-robin."""
    compat.native(wait=True)  # the engine's C++ checks, built before the clock starts
    shapes = SETS[set_name]()
    numel = sum(int(torch.Size(s).numel()) for s in shapes)
    variants = _variants(case, shapes) + [_probe(numel)]
    round_robin(variants, rounds, warmup)  # warm-up includes any compilation
    result = {v.label: v.median_ms() for v in variants}
    result["numel"] = numel
    del variants
    gc.collect()
    return result


@dataclass
class Row:
    set_name: str
    case: Case
    ms: dict[str, float]

    @property
    def bandwidth(self) -> float:
        """Probe bandwidth in GB/s (12 bytes an element: read a, read c, write a)."""
        return 12 * self.ms["numel"] / (self.ms["bandwidth probe"] * 1e-3) / 1e9

    @property
    def roofline_ms(self) -> float:
        return self.case.bytes_per_param * self.ms["numel"] / (self.bandwidth * 1e9) * 1e3

    def best_torch(self) -> tuple[str, float] | None:
        torch_ms = {k: v for k, v in self.ms.items() if k.startswith("torch")}
        return min(torch_ms.items(), key=lambda kv: kv[1]) if torch_ms else None


def table(rows: list[Row]) -> str:
    """A markdown table: times, ratio to torch's best, fractions of the roofline."""
    columns = [
        "set", "optimizer", "torch for-loop", "torch foreach", "torch fused", "momenta", "momenta, new grads",
        "× torch best", "roofline: momenta", "roofline: torch best", "bandwidth",
    ]  # fmt: skip
    cells = []
    for r in rows:
        best = r.best_torch()
        cells.append([
            r.set_name, r.case.name,
            *(f"{r.ms[k]:.2f}" if k in r.ms else "—" for k in columns[2:7]),
            f"{best[1] / r.ms['momenta']:.2f}×" if best else "—",
            f"{r.roofline_ms / r.ms['momenta']:.2f}",
            f"{r.roofline_ms / best[1]:.2f}" if best else "—",
            f"{r.bandwidth:.0f} GB/s",
        ])  # fmt: skip
    return common.markdown_table(columns, cells)


def run(
    sets: Sequence[str] = tuple(SETS),
    optimizers: Sequence[str] | None = None,
    rounds: int = 7,
    progress: Callable[[str], None] = print,
) -> list[Row]:
    """Benchmark every (set, optimizer); ``optimizers`` filters :data:`CASES` by name."""
    torch.manual_seed(0)
    rows = []
    for set_name in sets:
        if set_name not in SETS:
            raise ValueError(f"Unknown benchmark set {set_name!r}; known: {', '.join(SETS)}")
        for case in CASES:
            if optimizers and case.name not in optimizers:
                continue
            progress(f"{set_name}: {case.name}")
            rows.append(Row(set_name, case, measure(case, set_name, rounds=rounds)))
    return rows


# -- per-step overhead -------------------------------------------------------------------------


def measure_overhead(tensors: int, rounds: int = 7, repeat: int = 20) -> dict[str, float]:
    """µs per AdamW step on ``tensors`` tensors of 16 elements, gradients in place: what a
    step costs beyond its bytes (per-tensor dispatch, Python, checks). Each of the
    ``rounds`` samples is the mean of ``repeat`` steps; the median over samples is kept."""
    compat.native(wait=True)
    case = next(c for c in CASES if c.name == "AdamW")
    variants = _variants(case, [(16,)] * tensors, new_grads=False, repeat=repeat)
    round_robin(variants, rounds, warmup=3)
    result = {v.label: v.median_ms() * 1e3 for v in variants}
    del variants
    gc.collect()
    return result


def overhead_table(us: dict[int, dict[str, float]]) -> str:
    """A markdown table: µs per AdamW step and per tensor, momenta against torch."""
    columns = [
        "tensors × 16 elements", "torch for-loop", "torch foreach", "torch fused", "momenta", "× torch fused",
        "per tensor: torch fused", "per tensor: momenta",
    ]  # fmt: skip
    cells = []
    for n, t in us.items():
        fused = t.get("torch fused")
        cells.append([
            str(n), *(f"{t[k]:.0f} µs" if k in t else "—" for k in columns[1:5]),
            f"{fused / t['momenta']:.2f}×" if fused else "—",
            f"{fused / n:.2f} µs" if fused else "—",
            f"{t['momenta'] / n:.2f} µs",
        ])  # fmt: skip
    return common.markdown_table(columns, cells)


# -- command line -------------------------------------------------------------------------------


OPTIONS = ("--sets", "--rounds")


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of the step benchmark alone (:data:`OPTIONS`)."""
    parser.add_argument(
        "--sets",
        default=None,
        help=f"comma-separated, from: {', '.join(KNOWN_SETS)} (default: {','.join(SETS)}); overhead: "
        f"µs per AdamW step on {', '.join(map(str, OVERHEAD_TENSORS))} tensors of 16 elements",
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per variant (default 7)")


def add_arguments(parser: argparse.ArgumentParser, default_out: str | None = None) -> None:
    """The options of benchmarks/bench_step.py (``momenta bench`` adds ``--loop``'s too)."""
    common.add_shared(parser, [c.name for c in CASES], default_out)
    add_options(parser)


def run_cli(args: argparse.Namespace) -> int:
    """Run the benchmarks for parsed ``args``: print the tables, write them with ``--out``."""
    rounds = 7 if args.rounds is None else args.rounds
    common.at_least(rounds, 1, "--rounds")
    sets = common.pick(args.sets, KNOWN_SETS, "--sets") or list(SETS)
    names = common.pick(args.optimizers, [c.name for c in CASES], "--optimizers")
    common.prepare()
    text = ""
    steps = [s for s in sets if s in SETS]
    if steps:
        rows = run(steps, names, rounds=rounds, progress=common.progress)
        text += (
            f"Step times in ms (median of {rounds} round-robin rounds), {common.environment()}.\n"
            "`× torch best`: torch's fastest implementation's time / momenta's. `roofline`: ideal time "
            "(bytes per parameter / probe bandwidth) / measured time.\n\n" + table(rows)
        )
    if "overhead" in sets:
        us = {}
        for n in OVERHEAD_TENSORS:
            common.progress(f"overhead: AdamW, {n} × 16")
            us[n] = measure_overhead(n, rounds=rounds)
        text += (
            ("\n" if text else "")
            + f"Per-step overhead: µs per AdamW step (median of {rounds} round-robin rounds of 20 steps), "
            f"gradients in place, {common.environment()}. `× torch fused`: torch fused's time / momenta's.\n\n"
            + overhead_table(us)
        )
    common.report(text, args.out, "Benchmark results")
    return 0


def main(argv: Sequence[str] | None = None, default_out: str | None = None) -> int:
    """benchmarks/bench_step.py: the same as ``momenta bench``."""
    return common.main(argv, "bench_step.py", __doc__.splitlines()[0], add_arguments, run_cli, default_out)
