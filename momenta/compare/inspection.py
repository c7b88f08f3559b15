"""``--inspect``'s files: what m, V and the step did, epoch by epoch, per optimizer.

    inspect.csv       optimizer,seed,epoch,numel,m_norm,m_rms,sqrt_v_mean,ratio_min,
                      ratio_median,ratio_max,update_rms   (momenta.introspect's quantities,
                      read after each epoch's last step; empty cells: not defined;
                      nan: the state held a NaN, as a diverged run's does)
    inspect.<fmt>     one panel per quantity, one line per optimizer (mean over seeds), log y

The report shows each optimizer's m and V rules beside the panels (:func:`rules_html`), and,
when RMSProp and Adam both ran, the measured reason one oscillates and the other does not.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from momenta.compare.experiment import CompareResult
from momenta.introspect import QUANTITIES

HEADER = ["optimizer", "seed", "epoch", "numel", *QUANTITIES]
#: the panels: (quantity, title)
PANELS = [
    ("m_rms", "rms(m)"),
    ("sqrt_v_mean", "mean √V̂"),
    ("update_rms", "rms of the last update Δw"),
    ("ratio_median", "median |lr·D(m̂/(√V̂+ε))| / |w|"),
    ("ratio_max", "max |lr·D(m̂/(√V̂+ε))| / |w|"),
    ("ratio_min", "min |lr·D(m̂/(√V̂+ε))| / |w|"),
]


def rows(result: CompareResult) -> list[list[Any]]:
    out = []
    for r in result.results.values():
        for run in r.runs:
            for epoch, stats in enumerate(run.inspection, start=1):
                values = [getattr(stats, q) for q in QUANTITIES]
                out.append([r.name, run.seed, epoch, stats.numel, *("" if v is None else v for v in values)])
    return out


def inspected(result: CompareResult) -> list[str]:
    """The optimizers with readings (momenta's; torch.optim's have no rules to read)."""
    return [n for n, r in result.results.items() if any(run.inspection for run in r.runs)]


def curve(result: CompareResult, name: str, quantity: str) -> np.ndarray:
    """Mean over seeds, per epoch (NaN where undefined)."""
    runs = [run for run in result.results[name].runs if run.inspection]
    n = max(len(run.inspection) for run in runs)
    table = np.full((len(runs), n), np.nan)
    for i, run in enumerate(runs):
        for e, stats in enumerate(run.inspection):
            value = getattr(stats, quantity)
            table[i, e] = value if value is not None and math.isfinite(value) else np.nan
    with np.errstate(all="ignore"):
        return np.array([np.nan if np.isnan(c).all() else np.nanmean(c) for c in table.T])


def plot(result: CompareResult, path: Path) -> Path:
    """One panel per quantity (:data:`PANELS`), one line per optimizer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from momenta.compare.report import DPI, save_figure

    names = inspected(result)
    fig = Figure(figsize=(13.0, 7.5), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    colours = _colours(len(names))
    for ax, (quantity, title) in zip(axes.flat, PANELS):
        drawn = False
        for k, name in enumerate(names):
            y = curve(result, name, quantity)
            x = np.arange(1, len(y) + 1)
            positive = np.where(y > 0, y, np.nan)
            if np.isfinite(positive).any():
                ax.plot(x, positive, label=name, color=colours[k], linewidth=1.3, linestyle=_dash(k))
                drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.set_yscale("log")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[1:]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8)
    fig.suptitle(f"what m and V did — {result.dataset['name']}, read after each epoch's last step")
    fig.tight_layout(rect=(0, 0.07 if labels else 0, 1, 0.96))
    save_figure(fig, path)
    return path


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    table = colormaps["tab10" if n <= 10 else "tab20"].colors  # type: ignore[attr-defined]
    return [table[i % len(table)] for i in range(n)]


def _dash(k: int) -> str:
    return ["-", "--", "-.", ":"][(k // 10) % 4]


def rules_html(result: CompareResult) -> str:
    """Each inspected optimizer's m and V rules, and its last reading."""
    from momenta.compare.report import fmt, html_table

    body = []
    for name in inspected(result):
        run = next(run for run in result.results[name].runs if run.inspection)
        last = run.inspection[-1]
        f = run.formulas
        body.append(
            [name, f.get("m", "—"), f.get("V", "—"), fmt(last.m_rms, 3), fmt(last.sqrt_v_mean, 3),
             fmt(last.ratio_median, 3), fmt(last.update_rms, 3)]  # fmt: skip
        )
    return html_table(["optimizer", "m rule", "V rule", "rms(m)", "mean √V̂", "median ratio", "rms Δw"], body)


def jitter(y: np.ndarray) -> float:
    """Mean relative change between consecutive epochs, mean |y[e+1] − y[e]| / |y[e]|."""
    y = y[np.isfinite(y)]
    if len(y) < 2:
        return math.nan
    with np.errstate(all="ignore"):
        change = np.abs(np.diff(y)) / np.abs(y[:-1])
    change = change[np.isfinite(change)]
    return float(np.mean(change)) if len(change) else math.nan


def oscillation_html(result: CompareResult) -> str:
    """Why the seed's RMSProp oscillates and Adam does not, in this run's own numbers
    (empty unless both ran with readings)."""
    names = inspected(result)
    if not {"rmsprop", "adam"} <= set(names):
        return ""
    epochs = result.config.epochs

    def loss(name: str) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.asarray(np.nanmean(result.results[name].curve("train_loss", epochs), axis=0))

    numbers = {
        name: (
            jitter(curve(result, name, "update_rms")),
            jitter(loss(name)),
            float(np.nanmedian(curve(result, name, "ratio_median"))),
        )
        for name in ("rmsprop", "adam")
    }
    if not all(math.isfinite(x) for values in numbers.values() for x in values):
        return ""
    (r_upd, r_loss, r_ratio), (a_upd, a_loss, a_ratio) = numbers["rmsprop"], numbers["adam"]
    return (
        "<p><strong>Why RMSProp oscillates here and Adam does not.</strong> Both divide by √V, "
        "an average of g², so both step about lr·m/√V per coordinate. RMSProp's m is the "
        "gradient itself (m = g): near the minimum the batch gradients keep their size but "
        "change sign, so |m|/√V stays near 1 and the steps stay near lr, jumping back and forth "
        "across the minimum (the rms of its last update and its update-to-weight ratio jump "
        "from epoch to epoch above). Adam's m is an average of the gradients: signs that "
        "alternate cancel in it, |m̂|/√V̂ falls, and its steps shrink smoothly. In this run, "
        f"the mean change from one epoch to the next of the last update's rms: RMSProp "
        f"{r_upd:.1%}, Adam {a_upd:.1%}; of the training loss: {r_loss:.2%} vs {a_loss:.2%}; "
        f"median update-to-weight ratio (median over epochs) {r_ratio:.3g} vs {a_ratio:.3g}.</p>"
    )
