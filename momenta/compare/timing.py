"""Time that means something: optimizer steps timed interleaved, and the time to a target loss.

    step time      = median over R rounds of one ``optimizer.step()``, every optimizer stepped
                     in turn within a round (round-robin, :mod:`momenta.bench.timing`), on
                     the task's model with the gradients of its first batch kept fixed, after
                     W warm-up rounds: a slow minute of a shared machine slows every optimizer
                     alike instead of one
    time to target = the first epoch whose loss (validation loss when measured, else training
                     loss; mean over seeds) is ≤ the target, and the training wall time up to
                     its end (steps only, mean over seeds)

The training runs' own wall time (``total_time_s``) is still reported, labelled as such: one
optimizer after another, it measures the machine's mood as much as the optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from momenta.bench.timing import Variant, round_robin, timed
from momenta.compare.options import takes_sparse_gradients
from momenta.compare.tasks import Task

ROUNDS, WARMUP, STEPS_PER_ROUND = 15, 2, 5


def interleaved(
    task: Task, seed: int, optimizers: Mapping[str, Mapping[str, Any]], rounds: int = ROUNDS, warmup: int = WARMUP
) -> dict[str, float]:
    """Median seconds of one step of each optimizer (name → keyword arguments), interleaved.

    An optimizer that raises while being timed is left out (its training run says why)."""
    from momenta.compare.experiment import build_optimizer

    variants = []
    for name, kwargs in optimizers.items():
        model = task.build(seed)
        x, y = task.batches(1)[0]
        try:
            optimizer = build_optimizer(name, kwargs, model.params)
            model.loss(x, y).backward()
            if takes_sparse_gradients(optimizer):
                for p in model.params:
                    if p.grad is not None:
                        p.grad = p.grad.to_sparse()
            optimizer.step()  # lazy state, compilation: before the clock
        except Exception:
            continue
        variants.append(Variant(name, timed(optimizer.step, repeat=STEPS_PER_ROUND)))
    try:
        round_robin(variants, rounds, warmup)
    except Exception:
        return {}
    return {v.label: float(np.median(v.times["step"])) for v in variants if v.times.get("step")}


def time_to_target(result: Any, target: float | None) -> dict[str, Any]:
    """``{"epoch": k, "seconds": s}`` of :class:`~.experiment.OptimizerResult` ``result``
    (module docstring), or ``{"epoch": None, "seconds": None}`` if never reached."""
    none: dict[str, Any] = {"epoch": None, "seconds": None, "metric": None}
    if target is None or not result.runs:
        return none
    metric = "val_loss" if any(run.val_loss for run in result.runs) else "train_loss"
    epochs = max(run.epochs_done for run in result.runs)
    curves = result.curve(metric, epochs)
    curves[~np.isfinite(curves)] = np.nan
    with np.errstate(all="ignore"):
        mean = np.array([np.nan if np.isnan(c).any() else c.mean() for c in curves.T])
    hits = np.flatnonzero(mean <= target)
    if not len(hits):
        return {**none, "metric": metric}
    k = int(hits[0])
    seconds = float(np.mean([run.elapsed_s[k] for run in result.runs if len(run.elapsed_s) > k]))
    return {"epoch": k + 1, "seconds": seconds if math.isfinite(seconds) else None, "metric": metric}

