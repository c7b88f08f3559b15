"""Low-precision optimizer state: step time and state bytes per parameter, against torch's fused
float32 AdamW, bitsandbytes' ``AdamW8bit`` and torchao's ``AdamW8bit``/``AdamW4bit``.

    ratio = (torch fused float32 AdamW step) / (this step)      (> 1: faster than torch fused)
    bytes = Σ bytes of the optimizer's state tensors but ``step`` / parameters

Two settings, every variant timed round-robin in one process (medians; on a shared machine
only ratios within one run mean anything):

* ``synthetic``: AdamW on 16 × 2²⁰ float32 parameters, a fresh gradient each step (issue 14's
  speed setting);
* ``loop``: the real training loop of ``momenta bench --loop`` (forward, backward,
  ``clip_grad_norm_``, ``step``, ``zero_grad()``) on its 10.7M-parameter GPT with nanoGPT's
  two param groups; step and whole-iteration times.

bitsandbytes and torchao rows appear where those libraries import (test-only dependencies).

    .venv/bin/python benchmarks/bench_lowbit.py [--settings synthetic,loop] [--rounds 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

import momenta
from momenta.bench import common
from momenta.bench.loop import PRESETS, iteration
from momenta.bench.models import param_groups
from momenta.bench.timing import Variant, round_robin
from momenta.engine import compat

LR, BETAS = 1e-3, (0.9, 0.95)
PRECISIONS = ("bf16", "int8", "int4")


def builders() -> dict[str, Callable[[Any], torch.optim.Optimizer]]:
    """Every AdamW under test, by label: torch fused (the reference), momenta at each state
    precision, bitsandbytes' and torchao's low-bit AdamW where they import."""
    found: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
        "torch fused fp32": lambda ps: torch.optim.AdamW(ps, lr=LR, betas=BETAS, fused=True),
        "momenta fp32": lambda ps: momenta.AdamW(ps, lr=LR, betas=BETAS),
    }
    for precision in PRECISIONS:
        found[f"momenta {precision}"] = lambda ps, p=precision: momenta.AdamW(ps, lr=LR, betas=BETAS, state_precision=p)
    if importlib.util.find_spec("bitsandbytes") is not None:
        try:
            import bitsandbytes as bnb

            found["bitsandbytes AdamW8bit"] = lambda ps: bnb.optim.AdamW8bit(ps, lr=LR, betas=BETAS)
        except Exception as error:  # noqa: BLE001 — a library that does not load here is skipped
            print(f"bitsandbytes skipped: {error}", file=sys.stderr)
    if importlib.util.find_spec("torchao") is not None:
        try:
            from torchao.optim import AdamW4bit, AdamW8bit

            found["torchao AdamW8bit"] = lambda ps: AdamW8bit(ps, lr=LR, betas=BETAS)
            found["torchao AdamW4bit"] = lambda ps: AdamW4bit(ps, lr=LR, betas=BETAS)
        except Exception as error:  # noqa: BLE001
            print(f"torchao skipped: {error}", file=sys.stderr)
    return found


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of every state tensor but ``step`` (a tensor subclass counts its inner tensors)."""

    def size(t: torch.Tensor) -> int:
        inner = getattr(t, "__tensor_flatten__", None)
        if inner is not None and type(t) is not torch.Tensor:
            return sum(size(getattr(t, name)) for name in inner()[0])
        return t.numel() * t.element_size()

    return sum(size(v) for s in opt.state.values() for k, v in s.items() if k != "step" and torch.is_tensor(v))


def synthetic(rounds: int, warmup: int, n: int = 16, numel: int = 2**20) -> list[tuple[str, float, float, float]]:
    """``(label, step ms, ratio to torch fused, state bytes per parameter)`` on ``n`` ×
    ``numel`` float32 parameters, fresh gradients each step."""
    made: list[tuple[Variant, torch.optim.Optimizer, list[torch.nn.Parameter]]] = []
    for label, build in builders().items():
        g = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(numel, generator=g)) for _ in range(n)]
        opt = build(params)
        grads = [torch.randn(numel, generator=g) for _ in range(n)]

        def step(params: list[torch.nn.Parameter] = params, opt: torch.optim.Optimizer = opt, grads: list[torch.Tensor] = grads) -> None:
            for p, gr in zip(params, grads):
                p.grad = gr.clone()  # a fresh gradient, as autograd gives
            start = time.perf_counter()
            opt.step()
            return time.perf_counter() - start  # type: ignore[return-value]

        def run(_: int, step: Callable[[], Any] = step) -> dict[str, float]:
            return {"step": step()}

        made.append((Variant(label, run), opt, params))
    round_robin([v for v, _, _ in made], rounds, warmup)
    reference = made[0][0].median_ms()
    return [(v.label, v.median_ms(), reference / v.median_ms(), state_bytes(o) / (n * numel)) for v, o, _ in made]


def loop(rounds: int, warmup: int, model: str = "gpt-6x384") -> tuple[str, list[tuple[str, float, float, float, float]]]:
    """``(description, [(label, step ms, ratio, iteration ms, state bytes per parameter)])``
    in the real training loop of ``momenta bench --loop`` on ``model``."""
    preset = PRESETS[model]
    torch.manual_seed(0)
    base = preset.build()
    generator = torch.Generator().manual_seed(0)
    batches = [preset.batch(base, generator) for _ in range(rounds + warmup)]
    made = []
    for label, build in builders().items():
        m = copy.deepcopy(base)
        opt = build(param_groups(m))
        made.append((Variant(label, iteration(m, opt, batches, set_to_none=True)), opt, m))
    round_robin([v for v, _, _ in made], rounds, warmup)
    reference = made[0][0].median_ms("step")
    n = sum(p.numel() for p in base.parameters())
    rows = [
        (v.label, v.median_ms("step"), reference / v.median_ms("step"), v.median_ms("iteration"), state_bytes(o) / n)
        for v, o, _ in made
    ]
    return f"{model}: {n / 1e6:.1f}M parameters, batch {tuple(batches[0][0].shape)}", rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="synthetic,loop", help="synthetic, loop or both (comma-separated)")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds (medians)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (compilation)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for s in settings:
        if s not in ("synthetic", "loop"):
            parser.error(f"--settings: unknown setting {s!r} (synthetic, loop)")
    if args.threads:
        torch.set_num_threads(args.threads)
    compat.native(wait=True)
    print(common.environment())
    if "synthetic" in settings:
        rows = synthetic(args.rounds, args.warmup)
        print("\n### AdamW, 16 × 2²⁰ float32 parameters, fresh gradients\n")
        print(common.markdown_table(
            ["AdamW", "step (ms)", "× torch fused", "state bytes / parameter"],
            [(label, f"{ms:.1f}", f"{ratio:.2f}×", f"{b:.2f}") for label, ms, ratio, b in rows],
        ))  # fmt: skip
        gc.collect()
    if "loop" in settings:
        described, rows2 = loop(args.rounds, args.warmup)
        print(f"\n### AdamW in the training loop ({described})\n")
        print(common.markdown_table(
            ["AdamW", "step (ms)", "× torch fused", "iteration (ms)", "state bytes / parameter"],
            [(label, f"{ms:.1f}", f"{ratio:.2f}×", f"{it:.0f}", f"{b:.2f}") for label, ms, ratio, it, b in rows2],
        ))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
