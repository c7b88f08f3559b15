"""Low-precision optimizer state on a small real task: final losses against float32 state.

    train loss  mean training loss (cross-entropy, nats a character) over the last
                ``last · eval_every`` steps
    val loss    mean validation loss of the last ``last`` evaluations (one every
                ``eval_every`` steps, over the 64 fixed windows of the validation text)
    Δ           that minus the same optimizer's run with float32 state (the default) from
                the same initialisation; over several ``--seeds``, the mean of these paired
                differences and their [min, max] (the losses are means over the seeds)
    state       bytes of optimizer state a parameter (every tensor in ``optimizer.state``,
                codes and scales included), measured after the run

For a seed, every run trains the same model from the same initialisation on the same batches;
only the optimizer and its ``state_precision`` change. The task is ``momenta compare --data
text``'s (:mod:`momenta.compare.text`): a character-level GPT
(:class:`momenta.bench.models.GPT`, ``--model gpt:LAYERS,WIDTH``) on the shipped Shakespeare,
context 64, batch 32, batches drawn by :meth:`~momenta.compare.text.TextTask.batches` (split
seed 116, epoch ``1 + step // 100``, as the lab draws them), initialisation from
``torch.manual_seed(seed)``. The optimizers are momenta's, at the lab's learning rates
(:data:`momenta.compare.text.LR`), other arguments at their defaults: ``AdamW(lr=3e-3)``,
``Lion(lr=3e-4)``, ``SGD(lr=0.03, momentum=0.9)``, ``Adagrad(lr=0.03)``; each with
``state_precision`` unset (float32), ``"bf16"``, ``"int8"`` and ``"int4"``. Parameters under
4096 elements (LayerNorm gains, biases, and at width 64 the tied embedding) keep float32
state whatever ``state_precision`` says, so the ``state`` column is above 2 (int8) and 1
(int4) bytes a parameter for AdamW.

Yardstick: each optimizer's float32 run from seed + 1, against seed's (``--no-yardstick``
skips it). Over a few hundred steps training is chaotic: any perturbation (another
initialisation, or rounding the state) moves the final loss, so a precision's Δ means
something only against the yardstick's Δ, not against zero.

    .venv/bin/python benchmarks/bench_lowbit_quality.py [--steps 500] [--model gpt:2,64]
        [--seeds 1] [--eval-every 25] [--last 4] [--optimizers AdamW,Lion,SGD,Adagrad]
        [--no-yardstick] [--threads 1]

One intra-op thread unless ``--threads`` says otherwise (the default, 500 steps and one seed:
about 7 minutes on one thread here). The fast path's kernels compile once per optimizer and
precision (seconds each, the first time; then from the on-disk cache).

Sources: issue 14 (deliverable 4); the task of ``momenta compare --data text``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

import momenta
from momenta.compare import text
from momenta.compare.errors import UsageError

PRECISIONS: tuple[str | None, ...] = (None, "bf16", "int8", "int4")
"""``state_precision`` of each run (None: unset, float32 state)."""

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "AdamW": lambda ps, **kw: momenta.AdamW(ps, lr=text.default_lr("momenta.AdamW"), **kw),
    "Lion": lambda ps, **kw: momenta.Lion(ps, lr=text.default_lr("lion"), **kw),
    "SGD": lambda ps, **kw: momenta.SGD(ps, lr=text.default_lr("momenta.SGD"), momentum=0.9, **kw),
    "Adagrad": lambda ps, **kw: momenta.Adagrad(ps, lr=text.default_lr("adagrad"), **kw),
}
"""Each optimizer at the text task's learning rate; ``**kw`` takes ``state_precision``."""

LABELS = {"AdamW": "AdamW", "Lion": "Lion", "SGD": "SGD momentum 0.9", "Adagrad": "Adagrad"}
SPLIT_SEED = 116  # the lab's default (momenta.compare.experiment.CompareConfig)
SEED = 1  # the lab's default initialisation seed


@dataclass
class Run:
    """One training run: its losses, evaluations and state size."""

    optimizer: str
    precision: str
    seed: int
    train: list[float] = field(default_factory=list)
    """training loss of each step"""
    val: list[tuple[int, float]] = field(default_factory=list)
    """(step, validation loss) of each evaluation"""
    state_bytes: float = math.nan
    """bytes of optimizer state a parameter"""
    diverged_at: int | None = None

    def train_loss(self, steps: int) -> float:
        """Mean training loss of the last ``steps`` steps (inf once diverged)."""
        if self.diverged_at is not None:
            return math.inf
        return sum(self.train[-steps:]) / len(self.train[-steps:])

    def val_loss(self, last: int) -> float:
        """Mean validation loss of the last ``last`` evaluations (inf once diverged)."""
        if self.diverged_at is not None or not self.val:
            return math.inf
        tail = [v for _, v in self.val[-last:]]
        return sum(tail) / len(tail)


def make_task(model: str) -> text.TextTask:
    """The lab's text task on the shipped Shakespeare, batch 32."""
    config = SimpleNamespace(data="text", model=model, batch_size=32, dtype="float32", split_seed=SPLIT_SEED)
    return text.TextTask(config)


def batches(task: text.TextTask, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``steps`` batches, as the lab draws them (epochs of 100 steps from 1)."""
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    epoch = 1
    while len(out) < steps:
        out += task.batches(epoch)
        epoch += 1
    return out[:steps]


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in ``optimizer.state`` (codes, scales, step counts)."""
    return sum(
        t.numel() * t.element_size()
        for s in optimizer.state.values()
        for t in s.values()
        if isinstance(t, torch.Tensor)
    )


def train(
    task: text.TextTask,
    data: Sequence[tuple[torch.Tensor, torch.Tensor]],
    optimizer: str,
    precision: str | None,
    seed: int,
    eval_every: int,
) -> Run:
    """One run of ``optimizer`` with ``state_precision=precision`` on ``data`` from ``seed``."""
    model = task.build(seed)
    kw = {} if precision is None else {"state_precision": precision}
    opt = OPTIMIZERS[optimizer](model.params, **kw)
    run = Run(optimizer, precision or "fp32", seed)
    for step, (x, y) in enumerate(data, start=1):
        opt.zero_grad()
        loss = model.loss(x, y)
        loss.backward()
        opt.step()
        run.train.append(loss.item())
        if not math.isfinite(run.train[-1]):
            run.diverged_at = step
            break
        if step % eval_every == 0 or step == len(data):
            val, _ = model.evaluate()
            run.val.append((step, val if val is not None else math.nan))
    n = sum(p.numel() for p in model.params)
    run.state_bytes = state_bytes(opt) / n
    return run


YARDSTICK = "fp32, init seed + 1 (yardstick)"


def _cell(values: Sequence[float]) -> str:
    """A Δ: the value, or over several seeds their mean and [min, max]."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:+.4f}"
    return f"{mean:+.4f} [{min(values):+.4f}, {max(values):+.4f}]"


def table(
    runs: dict[tuple[str, str, int], Run], seeds: Sequence[int], window: int, last: int, yardstick: bool = True
) -> str:
    """The markdown table: a row an optimizer and precision, losses averaged over ``seeds``, Δ
    the mean (and range) over seeds of the difference from the float32 run of the same seed;
    the yardstick row is the float32 run from seed + 1 against seed's."""
    lines = [
        "| optimizer | state_precision | state bytes / parameter | train loss | Δ train | val loss | Δ val |",
        "|---|---|---|---|---|---|---|",
    ]
    names = list(dict.fromkeys(k[0] for k in runs))
    precisions = list(dict.fromkeys(k[1] for k in runs))
    for name in names:
        rows = [(p, p + " (default)" if p == "fp32" else p, 0) for p in precisions]
        if yardstick:
            rows.append(("fp32", YARDSTICK, 1))
        for precision, label, shift in rows:
            these = [runs[name, precision, s + shift] for s in seeds]
            bases = [runs[name, "fp32", s] for s in seeds]
            diverged = [r.diverged_at for r in these if r.diverged_at is not None]
            if diverged:
                label += f", diverged at step {min(diverged)}"
            tr = [r.train_loss(window) for r in these]
            va = [r.val_loss(last) for r in these]
            if precision == "fp32" and shift == 0:
                d_tr = d_va = "—"
            else:
                d_tr = _cell([t - b.train_loss(window) for t, b in zip(tr, bases)])
                d_va = _cell([v - b.val_loss(last) for v, b in zip(va, bases)])
            lines.append(
                f"| {LABELS[name]} | {label} | {these[0].state_bytes:.2f} | {sum(tr) / len(tr):.4f} | {d_tr} "
                f"| {sum(va) / len(va):.4f} | {d_va} |"
            )
    return "\n".join(lines)


def measure(
    steps: int,
    model: str = text.DEFAULT_MODEL,
    optimizers: Sequence[str] = tuple(OPTIMIZERS),
    precisions: Sequence[str | None] = PRECISIONS,
    eval_every: int = 25,
    seeds: Sequence[int] = (SEED,),
    yardstick: bool = True,
) -> dict[tuple[str, str, int], Run]:
    """Every optimizer at every precision from every seed (and float32 from seed + 1 for the
    yardstick), by (optimizer, precision, seed); each run once."""
    task = make_task(model)
    data = batches(task, steps)
    runs: dict[tuple[str, str, int], Run] = {}
    for name in optimizers:
        plan = [(p, s) for s in seeds for p in precisions]
        plan += [(None, s + 1) for s in seeds] if yardstick else []
        for precision, s in plan:
            if (name, precision or "fp32", s) in runs:
                continue
            t0 = time.perf_counter()
            r = train(task, data, name, precision, s, eval_every)
            runs[name, r.precision, s] = r
            last_val = r.val[-1][1] if r.val else math.nan
            print(
                f"  {name} {r.precision} seed {s}: last train {r.train[-1]:.4f}, last val {last_val:.4f}, "
                f"{r.state_bytes:.2f} B/param ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    return runs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--model", default=text.DEFAULT_MODEL, help="gpt:LAYERS,WIDTH (default %(default)s)")
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--last", type=int, default=4, help="evaluations averaged (default %(default)s)")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="comma-separated, of %(default)s")
    parser.add_argument(
        "--seeds", default=str(SEED), help="initialisation seeds, comma-separated (default %(default)s)"
    )
    parser.add_argument("--no-yardstick", action="store_true", help="skip the float32 run from seed + 1")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    args = parser.parse_args(argv)
    names = [n for n in args.optimizers.split(",") if n]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown or not names:
        parser.error(f"--optimizers: unknown {unknown or args.optimizers!r}; choose from {', '.join(OPTIMIZERS)}")
    for flag, value in (("--steps", args.steps), ("--eval-every", args.eval_every), ("--last", args.last)):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    torch.set_num_threads(args.threads)
    try:
        layers, width = text.model_shape(args.model)
    except UsageError as e:
        parser.error(f"--model: {e}")
    runs = measure(args.steps, args.model, names, PRECISIONS, args.eval_every, seeds, not args.no_yardstick)
    window = min(args.steps, args.last * args.eval_every)
    n = sum(p.numel() for p in make_task(args.model).build(seeds[0]).params)
    print(
        f"\nGPT {layers} × {width} ({n:,} parameters), Shakespeare, context {text.CONTEXT}, batch 32, "
        f"{args.steps} steps, init seeds {args.seeds}, {torch.get_num_threads()} thread(s); train loss: mean of the last "
        f"{window} steps; val loss: mean of the last {args.last} evaluations (every {args.eval_every} steps)\n"
    )
    print(table(runs, seeds, window, args.last, not args.no_yardstick))


if __name__ == "__main__":
    main()
