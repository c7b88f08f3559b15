"""Low-bit AdamW states: accuracy against float32 (and torchao, bitsandbytes), and step time.

Accuracy (issue 14's measure): every optimizer replays the same seeded gradient streams
(:func:`momenta.precision.harness.gradient_streams`: ``mlp`` recorded from a small MLP,
``wide`` a stress stream with scales over five decades inside a block) and reports
``‖p − p_fp32‖ / ‖p_fp32 − p_0‖`` after the last step, ``p_fp32`` the harness's float32
AdamW on the same stream. Rows:

* ``harness``: :func:`~momenta.precision.harness.run_coded_adamw` (decode → float32 AdamW →
  encode, each step), the codecs alone;
* ``momenta.AdamW(state_precision=…)``: the integrated optimizer, the streams replayed as
  ``p.grad`` of real parameters (:func:`~momenta.precision.harness.run_torch_optimizer`), on
  the fast path (default) and on the for-loop (``foreach=False``);
* torchao's ``AdamW8bit``/``AdamW4bit`` and bitsandbytes' ``AdamW8bit`` as they are, where
  they import.

All at ``lr=1e-3`` and every other argument at its default (weight decay 1e-2 in all four
libraries). The parameters are the MLP's three weight matrices (16384, 65536 and 4096
elements: every one coded, none under momenta's 4096-element threshold). A second table
reads issue 14's bar off the first: momenta's integrated int8 against each library's
8-bit AdamW, int4 against torchao's 4-bit (``meets``: no further from float32).
``--seeds 0,1,2`` repeats everything on streams drawn from other seeds (a column each).

``--candidates`` adds the maps compared when the codecs were chosen: one buffer coded at a
time (``m`` or ``V``, the other in float32), then pairs.

Speed: ``decode → AdamW → encode`` compiled by ``torch.compile`` on one flat buffer of
16 × 2²⁰ float32 parameters, against ``torch.optim.AdamW(fused=True)`` on 16 tensors of
2²⁰, all timed round-robin in one process (medians). On a busy machine only the ratios
within one run mean anything.

    .venv/bin/python benchmarks/bench_lowbit_accuracy.py [--steps 200] [--seeds 0] [--candidates]
        [--no-integrated] [--no-libraries] [--no-speed] [--no-accuracy] [--threads N]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import time
from collections.abc import Callable, Sequence

import torch

import momenta
from momenta.precision import Codec, Format, codec
from momenta.precision.codecs import COMPILE_OPTIONS
from momenta.precision.harness import (
    CodedState,
    adamw_scalars,
    adamw_update,
    coded_adamw_step,
    drift,
    gradient_streams,
    run_coded_adamw,
    run_torch_optimizer,
)

STREAMS = ("mlp", "wide")
LR = 1e-3


def candidates() -> list[tuple[str, Codec | None, Codec | None]]:
    """(label, m codec, V codec): the maps measured when choosing (see momenta.precision.codecs).

    ``(bits, E, power)``: ``E`` exponent bits (0: linear), the table coding ``|x|^(1/power)``.
    One buffer coded at a time (the other float32), then the best pairs.
    """
    m_only = {8: [(0, 1), (0, 2), (0, 4), (2, 1), (3, 1), (3, 2), (4, 1)], 4: [(0, 1), (0, 2), (0, 4), (2, 1), (3, 1)]}
    v_only = {
        8: [(0, 1), (0, 2), (0, 4), (2, 2), (3, 2), (4, 1), (4, 2), (5, 1)],
        4: [(0, 1), (0, 2), (0, 4), (2, 1), (2, 2), (3, 2), (4, 2)],
    }
    pairs = {
        8: [((0, 4), (0, 4)), ((0, 4), (0, 2)), ((0, 4), (4, 2)), ((4, 1), (4, 2)), ((3, 1), (4, 1))],
        4: [((2, 1), (2, 1)), ((2, 1), (0, 2)), ((0, 1), (2, 1)), ((2, 1), (3, 2))],
    }
    out: list[tuple[str, Codec | None, Codec | None]] = []
    for bits, block in ((8, 256), (4, 128)):
        for e, power in m_only[bits]:
            f = Format(bits, True, e, power)
            out.append((f"m only: {f.name}", Codec(f, block), None))
        for e, power in v_only[bits]:
            f = Format(bits, False, e, power)
            out.append((f"V only: {f.name}", None, Codec(f, block)))
        for (me, mp), (ve, vp) in pairs[bits]:
            fm, fv = Format(bits, True, me, mp), Format(bits, False, ve, vp)
            out.append((f"{fm.name} + {fv.name}", Codec(fm, block), Codec(fv, block)))
    return out


def libraries() -> list[tuple[str, Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]]]:
    """(label, constructor) of torchao's and bitsandbytes' low-bit AdamW, where installed."""
    out: list[tuple[str, Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]]] = []
    if importlib.util.find_spec("torchao") is not None:
        from torchao.optim import AdamW4bit, AdamW8bit  # type: ignore[import-untyped]

        out += [
            ("torchao AdamW8bit", lambda ps: AdamW8bit(ps, lr=LR)),
            ("torchao AdamW4bit", lambda ps: AdamW4bit(ps, lr=LR)),
        ]
    if importlib.util.find_spec("bitsandbytes") is not None:
        import bitsandbytes as bnb  # type: ignore[import-untyped]

        out.append(("bitsandbytes AdamW8bit", lambda ps: bnb.optim.AdamW8bit(ps, lr=LR)))
    return out


Make = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


def integrated() -> list[tuple[str, Make]]:
    """(label, constructor) of momenta.AdamW at each state precision, fast path then for-loop."""
    out: list[tuple[str, Make]] = []
    for foreach, path in ((None, "fast path"), (False, "for-loop")):
        for precision in (None, "bf16", "int8", "int4"):
            kw: dict[str, object] = {"state_precision": precision} if precision else {}
            if foreach is False:
                if precision is None:
                    continue  # float32 on the for-loop: torch's own numbers, nothing to learn
                kw["foreach"] = False
            label = f"momenta.AdamW(state_precision={precision!r}), {path}" if precision else f"momenta.AdamW(), {path}"
            out.append((label, functools.partial(lambda ps, kw: momenta.AdamW(ps, lr=LR, **kw), kw=kw)))
    return out


INT8 = "momenta.AdamW(state_precision='int8'), fast path"
INT4 = "momenta.AdamW(state_precision='int4'), fast path"
BARS = (
    (INT8, "bitsandbytes AdamW8bit"),
    (INT8, "torchao AdamW8bit"),
    (INT4, "torchao AdamW4bit"),
)
"""Issue 14's bar: (momenta's row, the library's row it must be no further from float32 than)."""


def accuracy(
    steps: int,
    with_candidates: bool = False,
    seeds: Sequence[int] = (0,),
    with_integrated: bool = True,
    with_libraries: bool = True,
) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """(columns, rows): a column a stream and seed, a row an optimizer's drifts; prints both tables."""
    columns = [k if len(seeds) == 1 else f"{k}, seed {s}" for s in seeds for k in STREAMS]
    streams = [gradient_streams(k, steps, seed=s) for s in seeds for k in STREAMS]
    reference = [run_coded_adamw(p0, g, None, None, lr=LR) for p0, g in streams]
    rows: list[tuple[str, list[float]]] = []

    def record(label: str, d: list[float]) -> None:
        rows.append((label, d))
        print(f"  {label}: {', '.join(f'{x:.4g}' for x in d)}", flush=True)

    def ours(label: str, cm: Codec | None, cv: Codec | None) -> None:
        record(
            label, [drift(run_coded_adamw(p0, g, cm, cv, lr=LR), ref, p0) for (p0, g), ref in zip(streams, reference)]
        )

    def theirs(label: str, make: Make) -> None:
        record(label, [drift(run_torch_optimizer(p0, g, make), ref, p0) for (p0, g), ref in zip(streams, reference)])

    theirs("torch AdamW (float32)", lambda ps: torch.optim.AdamW(ps, lr=LR))
    for precision in ("int8", "int4"):
        cm, cv = codec(precision, True), codec(precision, False)
        ours(f"harness {precision} ({cm.format.name} + {cv.format.name})", cm, cv)
    if with_integrated:
        for label, make in integrated():
            theirs(label, make)
    if with_libraries:
        for label, make in libraries():
            theirs(label, make)
    if with_candidates:
        for label, m_codec, v_codec in candidates():
            ours(label, m_codec, v_codec)
    print(f"\nAdamW(lr={LR}), {steps} steps; drift = ‖p − p_fp32‖ / ‖p_fp32 − p_0‖\n")
    print(table(columns, rows))
    bars = bar_table(columns, rows)
    if bars:
        print("\nIssue 14's bar (momenta integrated, fast path, against each library's AdamW)\n")
        print(bars)
    return columns, rows


def table(columns: Sequence[str], rows: Sequence[tuple[str, list[float]]]) -> str:
    """The drift table, a row an optimizer."""
    lines = ["| states | " + " | ".join(f"drift, {k}" for k in columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {label} | " + " | ".join(f"{x:.4g}" for x in d) + " |" for label, d in rows]
    return "\n".join(lines)


def bar_table(columns: Sequence[str], rows: Sequence[tuple[str, list[float]]]) -> str:
    """Each bar of :data:`BARS` whose two rows were measured: momenta's drift ÷ the library's,
    and ``meets`` (momenta no further from float32) or ``misses``; empty if none was."""
    found = dict(rows)
    lines = []
    for ours, theirs in BARS:
        if ours not in found or theirs not in found:
            continue
        cells = []
        for a, b in zip(found[ours], found[theirs]):
            verdict = "meets" if a <= b else "misses"
            cells.append(f"{a:.4g} vs {b:.4g}: {a / b:.2f}×, {verdict}")
        short = ours.split("'")[1]
        lines.append(f"| momenta {short} vs {theirs} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    head = ["| bar | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    return "\n".join(head + lines)


def speed(rounds: int = 15) -> None:
    torch.manual_seed(0)
    tensors, size = 16, 1 << 20
    n = tensors * size
    params = [torch.nn.Parameter(torch.randn(size)) for _ in range(tensors)]
    for p in params:
        p.grad = torch.randn(size) * 1e-2
    fused = torch.optim.AdamW(params, lr=LR, fused=True)
    flat, grad = torch.randn(n), torch.randn(n) * 1e-2
    s = adamw_scalars(3, LR, (0.9, 0.999), 1e-8, 1e-2)

    def fp32_step(p, g, m, v, s):
        p2, m2, v2 = adamw_update(p, g, m, v, s)
        p.copy_(p2)
        m.copy_(m2)
        v.copy_(v2)

    m32, v32, p32 = torch.zeros(n), torch.zeros(n), flat.clone()
    compiled_fp32 = torch.compile(fp32_step, fullgraph=True, dynamic=False)
    runs: dict[str, Callable[[], object]] = {
        "torch AdamW fused, 16 × 1M": fused.step,
        "compiled float32, flat": lambda: compiled_fp32(p32, grad, m32, v32, s),
    }
    for precision in ("int8", "int4"):
        cm, cv = codec(precision, True), codec(precision, False)

        def step_(p, g, mc, ms, vc, vs, s, cm=cm, cv=cv):
            p2, m2, v2 = coded_adamw_step(p, g, CodedState(mc, ms), CodedState(vc, vs), s, cm, cv)
            p.copy_(p2)
            mc.copy_(m2.codes)
            ms.copy_(m2.scales)  # type: ignore[arg-type]
            vc.copy_(v2.codes)
            vs.copy_(v2.scales)  # type: ignore[arg-type]

        compiled = torch.compile(step_, fullgraph=True, dynamic=False, options=COMPILE_OPTIONS)
        state = [flat.clone(), *cm.empty(n), *cv.empty(n)]
        runs[f"compiled {precision}, flat"] = functools.partial(
            lambda c, st: c(st[0], grad, *st[1:], s), compiled, state
        )
    for label, run in runs.items():
        t0 = time.perf_counter()
        run()
        run()
        print(f"  warm-up {label}: {time.perf_counter() - t0:.1f} s", flush=True)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - t0)
    base = statistics.median(times["torch AdamW fused, 16 × 1M"])
    state_bytes = {
        "int8": 2 * codec("int8", True).bytes_per_element(),
        "int4": 2 * codec("int4", True).bytes_per_element(),
    }
    print(f"\nAdamW step, 16 × 2²⁰ float32 parameters, {torch.get_num_threads()} threads, median of {rounds}\n")
    print("| step | median | torch fused / this | state bytes a parameter |")
    print("|---|---|---|---|")
    for label, ts in times.items():
        med = statistics.median(ts)
        kind = next((k for k in state_bytes if k in label), None)
        b = f"{state_bytes[kind]:.3f}" if kind else "8"
        print(f"| {label} | {med * 1e3:.1f} ms | {base / med:.2f}× | {b} |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="0", help="gradient-stream seeds, comma-separated (default %(default)s)")
    parser.add_argument("--candidates", action="store_true", help="also every candidate map")
    parser.add_argument("--no-integrated", action="store_true", help="skip momenta.AdamW(state_precision=…)")
    parser.add_argument("--no-libraries", action="store_true", help="skip torchao and bitsandbytes")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_accuracy:
        accuracy(args.steps, args.candidates, seeds, not args.no_integrated, not args.no_libraries)
    if not args.no_speed:
        speed()


if __name__ == "__main__":
    main()
