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
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

import momenta
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


class Yogi(momenta.Optimizer):
    """A user-defined optimizer: m = EMA(g), V = Yogi's additive rule."""

    def __init__(self, params, lr=1e-2, betas=(0.9, 0.999), eps=1e-3):  # type: ignore[no-untyped-def]
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    def rules(self, group):  # type: ignore[no-untyped-def]
        beta1, beta2 = group["betas"]
        return momenta.Rules(EMA(beta1), YogiSq(beta2))


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
    Case("Yogi (user rule)", Yogi, torch.optim.Adam, dict(lr=1e-6), dict(lr=1e-6)),
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


@dataclass
class Variant:
    label: str
    step: Callable[[], None]
    times: list[float] = field(default_factory=list)


def _params(shapes: Sequence[tuple[int, ...]], seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    return params


def _variants(case: Case, shapes: Sequence[tuple[int, ...]]) -> list[Variant]:
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
            variants.append(Variant(label, opt.step))
    params = _params(shapes)
    opt = case.momenta_factory(params, **case.kwargs)
    variants.append(Variant("momenta", opt.step))

    params2 = _params(shapes)
    opt2 = case.momenta_factory(params2, **case.kwargs)
    fresh = [[torch.randn_like(p) * 1e-3 for p in params2] for _ in range(2)]
    turn = [0]

    def new_grads_step() -> None:  # what zero_grad() + backward leave: new tensors
        turn[0] ^= 1
        for p, g in zip(params2, fresh[turn[0]]):
            p.grad = g
        opt2.step()

    variants.append(Variant("momenta, new grads", new_grads_step))
    return variants


def _probe(numel: int) -> Variant:
    a, c = torch.randn(numel), torch.randn(numel)

    def axpy() -> None:  # a += s·c: read a, read c, write a
        a.add_(c, alpha=1e-9)

    return Variant("bandwidth probe", axpy)


def measure(case: Case, set_name: str, rounds: int = 7, warmup: int = 3) -> dict[str, float]:
    """Median step time (ms) of every variant and the probe, timed round-robin."""
    shapes = SETS[set_name]()
    numel = sum(int(torch.Size(s).numel()) for s in shapes)
    variants = _variants(case, shapes) + [_probe(numel)]
    for v in variants:
        for _ in range(warmup):  # includes any compilation
            v.step()
    for _ in range(rounds):
        for v in variants:
            start = time.perf_counter()
            v.step()
            v.times.append(time.perf_counter() - start)
    result = {v.label: statistics.median(v.times) * 1e3 for v in variants}
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
    head = (
        "| set | optimizer | torch for-loop | torch foreach | torch fused | momenta | momenta, new grads "
        "| × torch best | roofline: momenta | roofline: torch best | bandwidth |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        cell = lambda k: f"{r.ms[k]:.2f}" if k in r.ms else "—"  # noqa: E731
        best = r.best_torch()
        ratio = f"{best[1] / r.ms['momenta']:.2f}×" if best else "—"
        torch_roof = f"{r.roofline_ms / best[1]:.2f}" if best else "—"
        lines.append(
            f"| {r.set_name} | {r.case.name} | {cell('torch for-loop')} | {cell('torch foreach')} | "
            f"{cell('torch fused')} | {cell('momenta')} | {cell('momenta, new grads')} | {ratio} | "
            f"{r.roofline_ms / r.ms['momenta']:.2f} | {torch_roof} | {r.bandwidth:.0f} GB/s |"
        )
    return head + "\n".join(lines) + "\n"


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


def add_arguments(parser: Any, default_out: str | None = None) -> None:
    """The options of ``momenta bench`` (and of benchmarks/bench_step.py)."""
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, from: {', '.join(SETS)}")
    parser.add_argument(
        "--optimizers", default=None, help="comma-separated names: " + ", ".join(c.name for c in CASES)
    )
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per variant (default 7)")
    parser.add_argument("--out", default=default_out, help="write the markdown table to this file")


def run_cli(args: Any) -> int:
    """Run the benchmarks for parsed ``args``: print the table, write it with ``--out``."""
    import os
    import platform

    if args.rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {args.rounds}")
    sets = [s for s in args.sets.split(",") if s]
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise ValueError(f"unknown set(s) {', '.join(unknown)}; known: {', '.join(SETS)}")
    names = [n.strip() for n in args.optimizers.split(",")] if args.optimizers else None
    known = [c.name for c in CASES]
    if names and any(n not in known for n in names):
        bad = [n for n in names if n not in known]
        raise ValueError(f"unknown optimizer(s) {', '.join(bad)}; known: {', '.join(known)}")
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    rows = run(sets, names, rounds=args.rounds, progress=lambda m: print(m, file=sys.stderr))
    text = (
        f"Step times in ms (median of {args.rounds} round-robin rounds), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}.\n"
        "`× torch best`: torch's fastest implementation's time / momenta's. `roofline`: ideal time "
        "(bytes per parameter / probe bandwidth) / measured time.\n\n" + table(rows)
    )
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# Benchmark results\n\n" + text)
    return 0


def main(argv: Sequence[str] | None = None, default_out: str | None = None) -> int:
    """benchmarks/bench_step.py: the same as ``momenta bench``."""
    import argparse

    parser = argparse.ArgumentParser(prog="bench_step.py", description=__doc__.splitlines()[0])
    add_arguments(parser, default_out)
    args = parser.parse_args(argv)
    try:
        return run_cli(args)
    except ValueError as error:
        parser.error(str(error))
        return 2
