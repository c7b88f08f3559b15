"""A sweep's files and tables: the sensitivity plot and the ranking.

    sensitivity.<fmt>   final validation loss vs the swept value, one line per optimizer (mean
                        over seeds, min–max band), × where a seed diverged (drawn at the top
                        edge), ○ at the chosen value; a log y axis when the losses span > 10×
    ranking             optimizers by the chosen value's mean validation loss: value (marked
                        when it is the grid's lowest or highest), validation loss and test
                        accuracy as mean ± std over seeds (std: sample, K−1)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from momenta.compare.sweep import SweepResult

RANKING_HEADER = ["rank", "optimizer", "best value", "val loss", "test acc", "train loss", "diverged"]


def _pm(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def ranking_rows(sweep: SweepResult) -> list[list[str]]:
    rows = []
    for rank, name in enumerate(sweep.ranking(), start=1):
        best = sweep.best_summary(name)
        points = sweep.of(name)
        diverged = f"{sum(p.diverged for p in points)}/{len(points)}"
        if best is None:
            rows.append(["—", name, sweep.status(name), "—", "—", "—", diverged])
            continue
        rows.append(
            [str(rank), name, f"{best['value']:.4g}" + (f" (grid's {best['at_edge']} edge)" if best["at_edge"] else ""), _pm(best["val_loss_mean"], best["val_loss_std"], 4),
             _pm(best["test_acc_mean"], best["test_acc_std"], 3),
             _pm(best["train_loss_mean"], best["train_loss_std"], 4), diverged]  # fmt: skip
        )
    return rows


def plot_sensitivity(sweep: SweepResult, title: str, path: Path) -> Path:
    from momenta.compare.report import legend, new_figure, save_figure

    names = list(dict.fromkeys(p.optimizer for p in sweep.points))
    fig, ax = new_figure(len(names))
    values = sweep.spec.values()
    finite_all = [p.val_loss for p in sweep.points if math.isfinite(p.val_loss)]
    top = max(finite_all) * 1.15 if finite_all else 1.0
    markers = "os^vD<>ph*"  # lines that coincide (sgd, sgdm at small lr) stay told apart
    for k, name in enumerate(names):
        xs, mean, low, high, bad = [], [], [], [], []
        for v in values:
            losses = [p.val_loss for p in sweep.of(name) if p.value == v]
            if not losses:
                continue
            finite = [x for x in losses if math.isfinite(x)]
            if len(finite) < len(losses):
                bad.append(v)
            if finite:
                xs.append(v)
                mean.append(float(np.mean(finite)))
                low.append(min(finite))
                high.append(max(finite))
        (line,) = ax.plot(xs, mean, marker=markers[k % len(markers)], ms=4, linewidth=1.4, label=f"{name} ({sweep.status(name)})"
                          if sweep.status(name) != "ok" else name)  # fmt: skip
        if sweep.config.repeats > 1 and xs:
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
        if bad:
            ax.plot(bad, [top] * len(bad), "x", color=line.get_color(), ms=9, mew=2, clip_on=False)
        best = sweep.best(name)
        if best is not None:
            ax.plot([best], [float(np.mean([p.val_loss for p in sweep.of(name) if p.value == best]))], "o",
                    color=line.get_color(), ms=9, mfc="none", mew=2)  # fmt: skip
    if sweep.spec.scale == "log":
        ax.set_xscale("log")
    smallest = min((x for x in finite_all if x > 0), default=0.0)
    if smallest > 0 and max(finite_all) / smallest > 10:  # one runaway point would flatten every other line
        ax.set_yscale("log")
    ax.set_ylim(top=top * 1.02)
    band = f", min–max band over {sweep.config.repeats} seeds" if sweep.config.repeats > 1 else ""
    ax.set_title(f"{title}: final validation loss vs {sweep.spec.param}{band}", fontsize=10)
    ax.set_xlabel(f"{sweep.spec.param} ({sweep.spec.scale} scale; × diverged, ○ chosen)")
    ax.set_ylabel("final validation loss")
    ax.grid(True, alpha=0.3)
    if names:
        legend(ax, len(names), fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def summary_text(sweep: SweepResult) -> dict[str, Any]:
    return {"budget": sweep.budget(), "ranking": sweep.ranking()}
