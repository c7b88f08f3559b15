"""Tuning sweeps with an honest protocol: every optimizer gets the same budget, the choice is
made on held-out rows, and only the chosen value's test numbers are reported.

    --sweep PARAM=LOW:HIGH:N     N values of PARAM from LOW to HIGH, log-spaced when
                                 0 < LOW and HIGH/LOW ≥ 10, else linear; log:LOW:HIGH:N or
                                 lin:LOW:HIGH:N says which. PARAM is any hyperparameter of
                                 every optimizer run (lr, momentum, beta1 …), or one element
                                 of a tuple one (betas.0, betas.1)
    for each optimizer, value v, seed s ∈ {seed, …, seed+K−1}  (K = repeats):
        train on the training rows less a validation split (val_fraction of them, stratified
        by class, drawn once), the same epochs, batches and initial weights for all
        record final train loss, final validation loss L(v, s), test accuracy, diverged
    best v* = argmin_v mean_s L(v, s)   (a value with a diverged seed has mean ∞; an
                                         optimizer whose every value diverged has no v*)
    reported: at v* only, test accuracy and validation loss as mean ± std over the K seeds,
              and whether v* is the grid's lowest or highest value (``at_edge``: the best
              value may lie outside the range; widen it before trusting the ranking)

``sweep.csv`` gets one row per finished (optimizer, value, seed), written as it finishes:
Ctrl-C keeps every finished point.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from momenta.compare.errors import UsageError
from momenta.compare.experiment import CompareConfig, OptimizerResult, Run, build_optimizer, train
from momenta.compare.tasks import Task

SCALES = ("log", "lin")
CSV_HEADER = [
    "optimizer", "param", "value", "seed", "final_train_loss", "final_val_loss", "test_acc", "diverged", "status",
]  # fmt: skip
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass(frozen=True)
class Spec:
    """``PARAM=LOW:HIGH:N`` parsed: the values are :meth:`values`."""

    param: str
    low: float
    high: float
    n: int
    scale: str

    @property
    def text(self) -> str:
        return f"{self.param}={self.scale}:{self.low!r}:{self.high!r}:{self.n}"

    def values(self) -> list[float]:
        if self.scale == "log":
            return [float(v) for v in np.geomspace(self.low, self.high, self.n)]
        return [float(v) for v in np.linspace(self.low, self.high, self.n)]

    def kwargs(self, base: Mapping[str, Any], defaults: Mapping[str, Any], value: float) -> dict[str, Any]:
        """``base`` (an optimizer's keyword arguments) with the swept value in place;
        ``defaults``: the optimizer's own (``betas.0`` changes one element of its betas)."""
        head, _, index = self.param.partition(".")
        if not index:
            return {**base, head: value}
        items = list(base.get(head, defaults[head]))
        items[int(index)] = value
        return {**base, head: tuple(items)}

    def check(self, config: CompareConfig) -> None:
        """Every optimizer of ``config`` takes every value (by building it once with each);
        else a :class:`UsageError` naming the optimizer, the key and the value."""
        head, _, index = self.param.partition(".")
        for name in config.optimizers:
            base = config.hyperparameters(name)
            defaults = _defaults(name, base)
            if head not in defaults:
                known = ", ".join(k for k in defaults if not isinstance(defaults[k], bool))
                raise UsageError(
                    f"sweep {self.param}: optimizer {name!r} has no hyperparameter {head!r} (it has: {known})"
                )
            if index:
                value = defaults[head]
                if not isinstance(value, (tuple, list)) or int(index) >= len(value):
                    raise UsageError(
                        f"sweep {self.param}: {head!r} of optimizer {name!r} is {value!r}, which has no element {index}"
                    )
            for v in self.values():
                try:
                    build_optimizer(name, self.kwargs(base, defaults, v), [torch.zeros(2, requires_grad=True)])
                except (TypeError, ValueError, RuntimeError) as e:
                    raise UsageError(f"sweep {self.param}={v:g}: optimizer {name!r} rejects it: {e}") from None


def _defaults(name: str, base: Mapping[str, Any]) -> dict[str, Any]:
    probe = build_optimizer(name, base, [torch.zeros(2, requires_grad=True)])
    return dict(probe.defaults)


def parse(text: str) -> Spec:
    """``"lr=1e-3:1:4"`` → Spec("lr", 0.001, 1.0, 4, "log"); errors name the value."""
    key, sep, rest = text.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.\d+)?", key):
        raise UsageError(f"sweep {text!r}: expected PARAM=LOW:HIGH:N (e.g. lr=1e-3:1:5, betas.0=0.8:0.99:4)")
    parts = [p.strip() for p in rest.split(":")]
    scale = None
    if parts and parts[0] in SCALES:
        scale = parts.pop(0)
    if len(parts) != 3 or not all(re.fullmatch(_NUMBER, p) for p in parts[:2]) or not parts[2].isdigit():
        raise UsageError(f"sweep {text!r}: expected {key}=[log:|lin:]LOW:HIGH:N with numbers LOW, HIGH and an integer N")
    low, high, n = float(parts[0]), float(parts[1]), int(parts[2])
    if n < 2:
        raise UsageError(f"sweep {text!r}: N must be ≥ 2, got {n}")
    if not low < high:
        raise UsageError(f"sweep {text!r}: LOW must be < HIGH, got LOW={low:g}, HIGH={high:g}")
    if scale is None:
        scale = "log" if low > 0 and high / low >= 10 else "lin"
    if scale == "log" and low <= 0:
        raise UsageError(f"sweep {text!r}: a log scale needs LOW > 0, got {low:g}")
    return Spec(key, low, high, n, scale)


@dataclass
class Point:
    """One finished (optimizer, value, seed) of a sweep."""

    optimizer: str
    value: float
    seed: int
    run: Run

    @property
    def diverged(self) -> bool:
        val = self.run.final_val_loss
        return self.run.status.startswith("diverged") or val is None or not math.isfinite(val)

    @property
    def val_loss(self) -> float:
        """The final validation loss; ∞ when the run diverged or failed."""
        val = self.run.final_val_loss
        return val if val is not None and math.isfinite(val) and self.run.status == "ok" else math.inf

    def row(self, param: str) -> list[Any]:
        r = self.run
        return [self.optimizer, param, self.value, self.seed, r.final_train_loss, r.final_val_loss,
                r.final_test_acc, int(self.diverged), r.status]  # fmt: skip

    def summary(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "seed": self.seed,
            "final_train_loss": self.run.final_train_loss,
            "final_val_loss": self.run.final_val_loss,
            "test_acc": self.run.final_test_acc,
            "diverged": self.diverged,
            "status": self.run.status,
        }


def _mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    finite = [x for x in xs if x is not None and math.isfinite(x)]
    if not finite or len(finite) != len(xs):
        return None, None
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else None


@dataclass
class SweepResult:
    """Every point of a sweep, and the choice per optimizer (module docstring)."""

    spec: Spec
    config: CompareConfig
    points: list[Point] = field(default_factory=list)
    base: dict[str, dict[str, Any]] = field(default_factory=dict)  # each optimizer's kwargs, unswept
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)

    def of(self, name: str) -> list[Point]:
        return [p for p in self.points if p.optimizer == name]

    def mean_val_loss(self, name: str) -> dict[float, float]:
        """value → mean validation loss over its seeds (∞ if one diverged), for the values
        whose every seed finished."""
        out: dict[float, float] = {}
        k = self.config.repeats
        for value in self.spec.values():
            losses = [p.val_loss for p in self.of(name) if p.value == value]
            if len(losses) == k:
                out[value] = float(np.mean(losses)) if all(map(math.isfinite, losses)) else math.inf
        return out

    def best(self, name: str) -> float | None:
        """argmin over values of the mean validation loss; ``None`` if every value diverged."""
        means = self.mean_val_loss(name)
        finite = {v: m for v, m in means.items() if math.isfinite(m)}
        return min(finite, key=lambda v: finite[v]) if finite else None

    def kwargs(self, name: str) -> dict[str, Any]:
        """The keyword arguments of ``name``'s best value (or its unswept ones if none)."""
        best = self.best(name)
        base = self.base.get(name, self.config.hyperparameters(name))
        return base if best is None else self.spec.kwargs(base, self.defaults.get(name, {}), best)

    def best_summary(self, name: str) -> dict[str, Any] | None:
        best = self.best(name)
        if best is None:
            return None
        points = [p for p in self.of(name) if p.value == best]
        val, val_std = _mean_std([p.val_loss for p in points])
        acc, acc_std = _mean_std([p.run.final_test_acc for p in points])  # type: ignore[misc]
        train_loss, train_std = _mean_std([p.run.final_train_loss for p in points])  # type: ignore[misc]
        values = self.spec.values()
        return {
            "value": best,
            # the lowest or highest value tried: the optimum may lie outside the range
            "at_edge": "low" if best == values[0] else "high" if best == values[-1] else None,
            "val_loss_mean": val,
            "val_loss_std": val_std,
            "test_acc_mean": acc,
            "test_acc_std": acc_std,
            "train_loss_mean": train_loss,
            "train_loss_std": train_std,
            "seeds": [p.seed for p in points],
        }

    def status(self, name: str) -> str:
        points = self.of(name)
        diverged = sum(p.diverged for p in points)
        if points and self.best(name) is None:
            return "every point diverged" if diverged == len(points) else "no point finished without diverging"
        return f"{diverged} of {len(points)} points diverged" if diverged else "ok"

    def ranking(self) -> list[str]:
        """Optimizers by the best value's mean validation loss (those without one last)."""
        names = list(dict.fromkeys(p.optimizer for p in self.points))
        key = {n: (self.best_summary(n) or {}).get("val_loss_mean") for n in names}
        return sorted(names, key=lambda n: (key[n] is None, key[n] if key[n] is not None else 0.0))

    def budget(self) -> str:
        c = self.config
        return (
            f"every optimizer: {self.spec.n} values of {self.spec.param} ({self.spec.scale} scale, "
            f"{self.spec.low:g} … {self.spec.high:g}) × {c.repeats} seed(s) × {c.epochs} epochs = "
            f"{self.spec.n * c.repeats} runs; chosen on mean validation loss"
        )

    def summary(self) -> dict[str, Any]:
        return {
            "param": self.spec.param,
            "scale": self.spec.scale,
            "values": self.spec.values(),
            "repeats": self.config.repeats,
            "epochs": self.config.epochs,
            "val_fraction": self.config.val_fraction,
            "budget": self.budget(),
            "ranking": self.ranking(),
            "optimizers": {
                name: {
                    "status": self.status(name),
                    "best": self.best_summary(name),
                    "points": [p.summary() for p in self.of(name)],
                }
                for name in dict.fromkeys(p.optimizer for p in self.points)
            },
        }


def start(config: CompareConfig) -> SweepResult:
    """The sweep of ``config``, before any point (:func:`run` fills it)."""
    return SweepResult(parse(config.sweep or ""), config)


def run(sweep: SweepResult, task: Task, results: dict[str, OptimizerResult], out: Path | None, progress: bool) -> None:
    """Run ``sweep`` on ``task``, adding each point as it finishes (Ctrl-C keeps them); fill
    ``results`` with each optimizer's runs at its best value (at its first value if every one
    diverged), as they are chosen."""
    spec, config = sweep.spec, sweep.config
    stream: TextIO | None = None
    writer = None
    if out is not None:
        stream = open(out / "sweep.csv", "w", newline="", encoding="utf-8")
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        stream.flush()
    current: str | None = None
    try:
        for name in config.optimizers:
            current = name
            base = sweep.base[name] = config.hyperparameters(name)
            defaults = sweep.defaults[name] = _defaults(name, base)
            for value in spec.values():
                for seed in range(config.seed, config.seed + config.repeats):
                    done = train(name, spec.kwargs(base, defaults, value), task, config, seed, None, progress)
                    point = Point(name, value, seed, done)
                    sweep.points.append(point)
                    if writer is not None and stream is not None:
                        writer.writerow([repr(v) if isinstance(v, float) else v for v in point.row(spec.param)])
                        stream.flush()
            _choose(sweep, name, results)
            current = None
    finally:
        if current is not None and sweep.of(current):
            _choose(sweep, current, results)
        if stream is not None:
            stream.close()


def _choose(sweep: SweepResult, name: str, results: dict[str, OptimizerResult]) -> None:
    best = sweep.best(name)
    points = sweep.of(name)
    value = best if best is not None else points[0].value
    results[name] = OptimizerResult(name, [p.run for p in points if p.value == value])
