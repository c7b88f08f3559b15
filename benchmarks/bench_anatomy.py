"""Where a step's time goes: momenta's AdamW step in the real loop, taken apart, beside
torch's fused AdamW and the floors under each.

    python benchmarks/bench_anatomy.py [--models gpt-2x64,resmlp-150] [--iters 40] [--out F]

The loop is the training-loop benchmark's (momenta/bench/loop.py: forward, backward with
fresh gradients, clip_grad_norm_, step, zero_grad(); nanoGPT's two param groups), one model
at a time. Three variants train in lockstep (round robin, medians of the rounds):

* momenta's AdamW, with its step cut into phases by wrapping the engine's own functions:
  ``kernels`` (the compiled update, every call), ``copy`` (the C++ call that checks every
  gradient and copies the small fresh ones into the flat buffer) and ``host`` (everything
  else: the checks that notice ``model.to``, ``p.data = …``, edited state and schedulers;
  the step count; the kernels' numbers; the hooks);
* torch's fused AdamW (``fused=True``);
* a torch optimizer whose ``step`` does nothing: what torch's ``Optimizer.step`` wrapper
  (its profiler range, hooks) costs. torch's optimizers pay it at every step; momenta's
  step runs the same hooks but opens the profiler range only while a profiler records
  (momenta/engine/compat.py, ``hooked_step``), so it does not pay it.

The roofline is the update's memory traffic (28 bytes a parameter: p, m, v read and
written, g read) at the bandwidth of a stream copy over as many bytes, timed in the same
rounds. torch's step can be no faster than wrapper + roofline, momenta's no faster than the
roofline; momenta's ``host`` is the part a Python engine adds on top.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

import momenta
from momenta.bench import common
from momenta.bench.models import PRESETS, count, param_groups
from momenta.engine import compat, flat

ADAMW = dict(lr=1e-3, betas=(0.9, 0.95))


class Empty(torch.optim.Optimizer):
    """An optimizer whose step does nothing: torch's step wrapper alone."""

    def __init__(self, params: Any) -> None:
        super().__init__(params, {"lr": 0.0})

    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        return None


class Phases:
    """Seconds spent in wrapped functions during the current step, by phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()


def measure(name: str, iters: int, warmup: int) -> dict[str, float]:
    """Median milliseconds of every phase for model ``name``."""
    preset = PRESETS[name]
    torch.manual_seed(0)
    base = preset.build()
    generator = torch.Generator().manual_seed(0)
    batches = [preset.batch(base, generator) for _ in range(iters + warmup)]
    phases = Phases()
    phases.wrap(flat, "execute", "kernels")
    compat.native(wait=True)  # the C++ checks and copies: built before the clock starts
    phases.wrap(compat.Native, "gather", "copy")
    phases.wrap(compat, "copy_all", "copy")
    models = {k: copy.deepcopy(base) for k in ("momenta", "torch fused", "wrapper")}
    opts: dict[str, torch.optim.Optimizer] = {
        "momenta": momenta.AdamW(param_groups(models["momenta"]), **ADAMW),
        "torch fused": torch.optim.AdamW(param_groups(models["torch fused"]), **ADAMW, fused=True),
        "wrapper": Empty(models["wrapper"].parameters()),
    }
    n = sum(p.numel() for p in base.parameters())
    # 28 bytes a parameter in all (p, m, v read and written, g read): a copy of 3.5 floats a
    # parameter reads 14 bytes and writes 14
    source, target = torch.empty(7 * n // 2), torch.empty(7 * n // 2)
    times: dict[str, list[float]] = {}

    def record(key: str, seconds: float) -> None:
        times.setdefault(key, []).append(seconds * 1e3)

    try:
        for i in range(warmup + iters):
            for label, opt in opts.items():
                model, (x, y) = models[label], batches[i]
                model(x, y).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                phases.seconds = {}
                start = time.perf_counter()
                opt.step()
                step = time.perf_counter() - start
                opt.zero_grad()
                if i >= warmup:
                    record(label, step)
                    if label == "momenta":
                        for phase in ("kernels", "copy"):
                            record(phase, phases.seconds.get(phase, 0.0))
            start = time.perf_counter()
            target.copy_(source)  # the stream probe
            if i >= warmup:
                record("roofline", time.perf_counter() - start)
    finally:
        phases.restore()
    medians = {k: statistics.median(v) for k, v in times.items()}
    medians["host"] = medians["momenta"] - medians["kernels"] - medians["copy"]
    return medians


def table(rows: dict[str, dict[str, float]]) -> str:
    columns = [
        "model", "tensors", "torch fused", "momenta", "vs fused", "torch's wrapper", "kernels", "copy", "host",
        "roofline", "torch's floor (wrapper + roofline)",
    ]  # fmt: skip
    cells = []
    for name, m in rows.items():
        tensors, params = count(PRESETS[name].build())
        cells.append([
            f"{name} ({params / 1e6:.2f}M)", str(tensors), f"{m['torch fused']:.3f}", f"{m['momenta']:.3f}",
            f"{m['torch fused'] / m['momenta']:.2f}×", f"{m['wrapper']:.3f}", f"{m['kernels']:.3f}",
            f"{m['copy']:.3f}", f"{m['host']:.3f}", f"{m['roofline']:.3f}", f"{m['wrapper'] + m['roofline']:.3f}",
        ])  # fmt: skip
    return common.markdown_table(columns, cells)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt-2x64,gpt-6x384,resmlp-150")
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    models = common.pick(args.models, list(PRESETS), "--models") or []
    common.at_least(args.iters, 3, "--iters")
    common.prepare()
    busy = common.others_cpu()
    rows = {}
    for name in models:
        common.progress(f"{name} …")
        rows[name] = measure(name, args.iters, args.warmup)
    share = busy()
    text = (
        f"{common.environment()}; AdamW step, milliseconds (medians of {args.iters} rounds, in lockstep)\n\n"
        + table(rows)
        + (f"\nother processes took {share:.0%} of the cores during the run\n" if share is not None else "")
    )
    common.report(text, args.out, "Anatomy of a step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
