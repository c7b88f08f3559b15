"""Training-loop benchmark: the path users actually take, momenta against torch.optim.

One iteration, as a nanoGPT-style loop writes it, on a model of :mod:`momenta.bench.models`
with nanoGPT's two param groups (weight decay 0.1 on parameters with dim ≥ 2, 0 on the rest):

    loss = model(x, y); loss.backward()          autograd allocates fresh gradients
    clip_grad_norm_(model.parameters(), 1.0)
    opt.step()                                   timed alone, and within the iteration
    opt.zero_grad(set_to_none=…)                 True (torch's default) or False

For each (model, optimizer, zero_grad mode), identical copies of one model (one init,
deep-copied) train in lockstep on the same batches: iteration i of every variant before
iteration i+1 of any. Variants: torch's default constructor (the for-loop on CPU),
``foreach=True``, ``fused=True`` (SGD, Adam, AdamW, Adagrad have it) and momenta's default
constructor. Reported: medians after warm-up (which includes momenta's compilation on its
first step; that first step is reported too), and ratios within the run: the torch
reference (fused, or torch's fastest step where there is no fused kernel) over momenta.

The seed's five have no torch twin; each is timed against torch's closest class, without
weight decay on either side (the seed's take none):

| seed | torch | difference |
|---|---|---|
| SGD(lr) | SGD(lr) | none |
| SGDM(lr, β=0.9) | SGD(lr, momentum=0.9, dampening=0.9) | torch's first step sets buf = g |
| Adagrad(lr) | Adagrad(lr) | eps 0 vs 1e-10 |
| RMSProp(lr, β=0.9) | RMSprop(lr, alpha=0.9) | eps 0 vs 1e-8 |
| Adam(lr, β₁=0.9, β₂=0.95) | Adam(lr, betas=(0.9, 0.95)) | eps 0 vs 1e-8 |
"""

from __future__ import annotations

import argparse
import copy
import gc
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

import momenta
from momenta.bench import common
from momenta.bench.models import PRESETS, Preset, count, param_groups
from momenta.bench.timing import Run, Variant, round_robin
from momenta.engine import compat

# -- optimizers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopCase:
    """An optimizer in the loop: momenta's class, torch's closest, and their arguments."""

    name: str
    momenta_cls: Callable[..., torch.optim.Optimizer]
    torch_cls: type[torch.optim.Optimizer]
    kwargs: dict[str, Any]
    torch_kwargs: dict[str, Any] | None = None  # where torch's differ from momenta's
    weight_decay: bool = True  # nanoGPT's groups with decay 0.1; False: the groups without it

    @property
    def has_fused(self) -> bool:
        return "fused" in inspect.signature(self.torch_cls).parameters


ADAM = dict(lr=1e-3, betas=(0.9, 0.95))
CASES = [
    LoopCase("SGD momentum", momenta.SGD, torch.optim.SGD, dict(lr=1e-2, momentum=0.9)),
    LoopCase("Adam", momenta.Adam, torch.optim.Adam, ADAM),
    LoopCase("AdamW", momenta.AdamW, torch.optim.AdamW, ADAM),
    LoopCase("Adagrad", momenta.Adagrad, torch.optim.Adagrad, dict(lr=1e-2)),
    LoopCase("RMSprop", momenta.RMSprop, torch.optim.RMSprop, dict(lr=1e-3)),
    LoopCase("seed SGD", momenta.seed.SGD, torch.optim.SGD, dict(lr=1e-2), weight_decay=False),
    LoopCase(
        "seed SGDM", momenta.seed.SGDM, torch.optim.SGD, dict(lr=1e-2, beta=0.9),
        dict(lr=1e-2, momentum=0.9, dampening=0.9), weight_decay=False,
    ),  # fmt: skip
    LoopCase("seed Adagrad", momenta.seed.Adagrad, torch.optim.Adagrad, dict(lr=1e-2), weight_decay=False),
    LoopCase(
        "seed RMSProp", momenta.seed.RMSProp, torch.optim.RMSprop, dict(lr=1e-3, beta=0.9),
        dict(lr=1e-3, alpha=0.9), weight_decay=False,
    ),  # fmt: skip
    LoopCase(
        "seed Adam", momenta.seed.Adam, torch.optim.Adam, dict(lr=1e-3, beta1=0.9, beta2=0.95), ADAM,
        weight_decay=False,
    ),  # fmt: skip
]
CASE_NAMES = [c.name for c in CASES]
DEFAULT_MODELS = ("gpt-2x64", "gpt-6x384", "resmlp-150", "gpt2-small")
#: ``--zero-grad`` modes: the value of ``zero_grad(set_to_none=…)``
ZERO_GRAD = {"none": True, "zeros": False}
#: the torch implementations: label → constructor flags
TORCH_FLAGS: dict[str, dict[str, bool]] = {
    "torch default": {}, "torch foreach": {"foreach": True}, "torch fused": {"fused": True},
}  # fmt: skip
SEED = 0

# -- one iteration -------------------------------------------------------------------------------


def iteration(
    model: nn.Module, opt: torch.optim.Optimizer, batches: Sequence[tuple[Tensor, Tensor]], set_to_none: bool
) -> Run:
    """Iteration i on ``batches[i]``: forward, backward, clip, step, zero_grad; returns the
    seconds of ``step`` and of the whole ``iteration``."""
    params = list(model.parameters())

    def run(i: int) -> dict[str, float]:
        x, y = batches[i]
        start = time.perf_counter()
        model(x, y).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        before = time.perf_counter()
        opt.step()
        after = time.perf_counter()
        opt.zero_grad(set_to_none=set_to_none)
        return {"step": after - before, "iteration": time.perf_counter() - start}

    return run


def variants(
    base: nn.Module, case: LoopCase, batches: Sequence[tuple[Tensor, Tensor]], set_to_none: bool
) -> list[Variant]:
    """torch's default, foreach and (where it has one) fused implementation, and momenta,
    each on its own deep copy of ``base``."""

    def make(label: str, build: Callable[[list[dict[str, Any]]], torch.optim.Optimizer]) -> Variant:
        model = copy.deepcopy(base)
        groups = param_groups(model)
        if not case.weight_decay:
            groups = [{"params": g["params"]} for g in groups]
        return Variant(label, iteration(model, build(groups), batches, set_to_none))

    torch_kwargs = case.kwargs if case.torch_kwargs is None else case.torch_kwargs

    def torch_builder(flags: dict[str, Any]) -> Callable[[Any], torch.optim.Optimizer]:
        return lambda groups: case.torch_cls(groups, **torch_kwargs, **flags)

    result = [
        make(label, torch_builder(flags)) for label, flags in TORCH_FLAGS.items() if case.has_fused or "fused" not in flags
    ]
    return result + [make("momenta", lambda groups: case.momenta_cls(groups, **case.kwargs))]


# -- measurement -----------------------------------------------------------------------------------


@dataclass
class LoopRow:
    """The medians (ms) of one (model, optimizer, zero_grad mode), each variant's by label."""

    model: str
    case: LoopCase
    zero_grad: str
    step_ms: dict[str, float]
    iteration_ms: dict[str, float]
    first_step_ms: dict[str, float] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """torch fused where torch has it, else torch's fastest step."""
        torch_labels = [k for k in self.step_ms if k.startswith("torch")]
        return "torch fused" if "torch fused" in torch_labels else min(torch_labels, key=self.step_ms.__getitem__)


def measure(
    model_name: str, base: nn.Module, case: LoopCase, zero_grad: str,
    batches: Sequence[tuple[Tensor, Tensor]], iters: int, warmup: int,
) -> LoopRow:  # fmt: skip
    """Train every variant ``warmup + iters`` iterations in lockstep; keep the medians."""
    timed = variants(base, case, batches, ZERO_GRAD[zero_grad])
    round_robin(timed, iters, warmup)
    row = LoopRow(
        model_name, case, zero_grad,
        step_ms={v.label: v.median_ms("step") for v in timed},
        iteration_ms={v.label: v.median_ms("iteration") for v in timed},
        first_step_ms={v.label: v.first["step"] * 1e3 for v in timed},
    )  # fmt: skip
    del timed  # the models and their optimizers' state
    gc.collect()
    return row


def run(
    models: Sequence[str] = DEFAULT_MODELS,
    optimizers: Sequence[str] = tuple(CASE_NAMES),
    zero_grad: Sequence[str] = tuple(ZERO_GRAD),
    iters: int | None = None,
    warmup: int | None = None,
    progress: Callable[[str], None] = common.progress,
) -> tuple[list[LoopRow], dict[str, str]]:
    """Every (model, optimizer, zero_grad mode); ``iters``/``warmup`` default to each model's
    own. Returns the rows and a line describing each model."""
    rows: list[LoopRow] = []
    described: dict[str, str] = {}
    # the engine's C++ checks are built in the background at the first compiled step (a
    # second from the disk cache, once per process): steady state is what is timed
    compat.native(wait=True)
    for model_name in models:
        preset: Preset = PRESETS[model_name]
        n, w = preset.iters if iters is None else iters, preset.warmup if warmup is None else warmup
        torch.manual_seed(SEED)
        base = preset.build()
        generator = torch.Generator().manual_seed(SEED)
        batches = [preset.batch(base, generator) for _ in range(w + n)]
        tensors, params = count(base)
        described[model_name] = (
            f"{tensors} tensors, {params / 1e6:.2f}M parameters, batch {tuple(batches[0][0].shape)}, "
            f"median of {n} iterations after {w} warm-up"
        )
        for case in (c for c in CASES if c.name in optimizers):
            for mode in zero_grad:
                progress(f"{model_name}: {case.name}, zero_grad {mode}")
                rows.append(measure(model_name, base, case, mode, batches, n, w))
        del base, batches
        gc.collect()
    return rows, described


# -- report ---------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    """Milliseconds, two decimals below 100."""
    return "—" if value is None else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _duration(ms: float) -> str:
    """A time with its unit: ms below a second, else s (a first step that compiles)."""
    return f"{ms / 1e3:.1f} s" if ms >= 1e3 else f"{ms:.1f} ms"


COLUMNS = [
    "model", "optimizer", "zero_grad", "step: torch default", "step: torch foreach", "step: torch fused",
    "step: momenta", "step: × torch", "iteration: torch", "iteration: momenta", "iteration: × torch",
    "momenta first step",
]  # fmt: skip


def table(rows: Sequence[LoopRow]) -> str:
    """A markdown table: step and iteration medians, momenta against the torch reference."""
    cells = []
    for r in rows:
        ref, short = r.reference, r.reference.removeprefix("torch ")
        step, it = r.step_ms, r.iteration_ms
        cells.append([
            r.model, r.case.name, f"set_to_none={ZERO_GRAD[r.zero_grad]}",
            *(_ms(step.get(label)) for label in [*TORCH_FLAGS, "momenta"]),
            f"{step[ref] / step['momenta']:.2f}× {short}",
            f"{_ms(it[ref])} ({short})", _ms(it["momenta"]), f"{it[ref] / it['momenta']:.2f}×",
            _duration(r.first_step_ms["momenta"]),
        ])  # fmt: skip
    return common.markdown_table(COLUMNS, cells)


# -- command line -----------------------------------------------------------------------------------

OPTIONS = ("--models", "--iters", "--warmup", "--zero-grad")


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of the loop benchmark alone (:data:`OPTIONS`)."""
    parser.add_argument(
        "--models", default=None,
        help=f"comma-separated presets, from: {', '.join(PRESETS)} (default: {','.join(DEFAULT_MODELS)})",
    )  # fmt: skip
    parser.add_argument(
        "--iters", type=int, default=None,
        help="timed iterations (default: each model's own, "
        + ", ".join(f"{p.name} {p.iters}" for p in PRESETS.values()) + ")",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=int, default=None,
        help="untimed iterations first, compilation included (default: each model's own, "
        + ", ".join(f"{p.name} {p.warmup}" for p in PRESETS.values()) + ")",
    )  # fmt: skip
    parser.add_argument(
        "--zero-grad", default=None,
        help="comma-separated zero_grad modes: none (set_to_none=True, torch's default), "
        "zeros (set_to_none=False) (default: none,zeros)",
    )  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser, default_out: str | None = None) -> None:
    """The options of benchmarks/bench_loop.py (``momenta bench --loop`` takes the same)."""
    common.add_shared(parser, CASE_NAMES, default_out)
    add_options(parser)


def run_cli(args: argparse.Namespace) -> int:
    """Run the loop benchmark for parsed ``args``: print the table, write it with ``--out``."""
    models = common.pick(args.models, list(PRESETS), "--models") or DEFAULT_MODELS
    optimizers = common.pick(args.optimizers, CASE_NAMES, "--optimizers") or CASE_NAMES
    zero_grad = common.pick(args.zero_grad, list(ZERO_GRAD), "--zero-grad") or list(ZERO_GRAD)
    common.at_least(args.iters, 1, "--iters")
    common.at_least(args.warmup, 0, "--warmup")
    common.prepare()
    others = common.others_cpu()
    rows, described = run(models, optimizers, zero_grad, args.iters, args.warmup)
    share = others()
    text = (
        "Training-loop times in ms: forward, backward, `clip_grad_norm_(1.0)`, `step()`, `zero_grad()`; "
        "every variant on its own copy of one model, in lockstep on the same batches, with nanoGPT's "
        f"param groups; {common.environment()}.\n"
        "`step: × torch`: the torch reference's median step / momenta's (fused where torch has it, "
        "else torch's fastest); `iteration`: the same for the whole iteration; "
        "`momenta first step`: its first `step()`, compilation included."
        + ("" if share is None else f" Other processes took {share:.0%} of the cores during the run "
           "(above ~10%, they competed with it: threads contend and times swell).")
        + "\n\n"
        + "".join(f"- {name}: {line}\n" for name, line in described.items())
        + "\n" + table(rows)
    )  # fmt: skip
    common.report(text, args.out, "Training-loop benchmark")
    return 0


def main(argv: Sequence[str] | None = None, default_out: str | None = None) -> int:
    """benchmarks/bench_loop.py: the same as ``momenta bench --loop``."""
    return common.main(argv, "bench_loop.py", __doc__.splitlines()[0], add_arguments, run_cli, default_out)
