"""Files of a comparison run: plots, ``metrics.csv``, ``summary.json``, ``report.html``, a table.

    loss.<fmt>, accuracy.<fmt>   one labelled line per optimizer (mean, min–max band if repeats)
    metrics.csv                  optimizer,epoch,train_loss,test_acc,elapsed_s  (long format;
                                 with repeats: the mean over seeds, and metrics_by_seed.csv
                                 adds a seed column)
    summary.json                 CompareResult.summary()
    report.html                  one self-contained page: plots inlined, every user string escaped
    with --inspect:  inspect.csv, inspect.<fmt> (:mod:`.inspection`)
    with --sweep:    sweep.csv (:mod:`.sweep`, written as points finish), sensitivity.<fmt>,
                     val_loss.<fmt> (the chosen values' validation curves; loss and accuracy
                     plots show the chosen values' runs too) (:mod:`.sweep_report`)
    text task:       val_loss.<fmt> as well

Plots use ``matplotlib.figure.Figure`` directly (no pyplot, no global backend): 800×500 px.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import json
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from momenta.compare.errors import OutputError

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn, not with momenta
    from matplotlib.figure import Figure
from momenta.compare.experiment import CompareResult, OptimizerResult

FIGSIZE = (8.0, 5.0)
DPI = 100
METRICS_HEADER = ["optimizer", "epoch", "train_loss", "test_acc", "elapsed_s"]


# ---------------------------------------------------------------- output directory


def default_out(name: str) -> Path:
    """``./momenta-runs/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, … if that exists)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.") or "run"
    base = Path("momenta-runs") / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def prepare_out(out: str | Path) -> Path:
    """Create ``out`` and prove it writable now, before any training."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".momenta-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OutputError(
            f"out: cannot write to output directory {str(path)!r}: {reason}"
        ) from None
    return path


# ---------------------------------------------------------------- shared writers


def write_json(path: Path, content: Any) -> None:
    """JSON with NaN/inf written as null (strict JSON)."""
    text = json.dumps(_finite(content), indent=2, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Floats in ``repr`` form (round-trip exact); returns the number of data rows."""
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
            n += 1
    return n


#: more lines than this get a legend beside the plot and distinct colours and dashes
MANY_LINES = 10


def new_figure(lines: int = 0) -> tuple[Figure, Any]:
    """A figure and its axes; for more than :data:`MANY_LINES` lines, a wider one whose lines
    cycle through 20 colours and 4 dash patterns (no two alike), with room for the legend."""
    from cycler import cycler
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    many = lines > MANY_LINES
    fig = Figure(figsize=(FIGSIZE[0] + 3.0, FIGSIZE[1]) if many else FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if many:
        colours = colormaps["tab20"].colors  # type: ignore[attr-defined]  # a ListedColormap
        dashes = ["-", "--", "-.", ":"]
        ax.set_prop_cycle(
            cycler(color=[colours[i % 20] for i in range(lines)])
            + cycler(linestyle=[dashes[(i // 20 + i % 2 * 2) % 4] for i in range(lines)])
        )
    return fig, ax


def legend(ax: Any, lines: int, **kwargs: Any) -> None:
    """The legend: inside the plot, or beside it when there are many lines."""
    if lines > MANY_LINES:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0.0)
    else:
        ax.legend(**kwargs)


def save_figure(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, metadata=None if path.suffix == ".svg" else {"Software": None})


def image_data_uri(path: Path) -> str:
    mime = {".svg": "image/svg+xml", ".gif": "image/gif"}.get(path.suffix, "image/png")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell: 4 significant digits, "—" for missing, "nan"/"inf" as is."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
code, pre { background: #f6f6f6; padding: .2rem .4rem; }
pre { padding: .6rem; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; }
.bad { color: #b00020; font-weight: bold; }
"""


def html_page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A self-contained page; ``sections`` are (heading, already-escaped HTML body)."""
    body = "".join(f"<h2>{html.escape(h)}</h2>\n{content}\n" for h, content in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n"
    )


def formulas_html(formulas: dict[str, dict[str, str]]) -> str:
    """Each optimizer's m rule, V rule and update, as its ``formulas()`` states them."""
    rows = [
        [name, f.get("m", "—"), f.get("V", "—"), f.get("update", "—")]
        if f
        else [name, "(this class has no formulas())", "—", "—"]
        for name, f in formulas.items()
    ]
    return (
        "<p>Every optimizer is w ← w − lr·m/√V; m and V as its rules state them:</p>"
        + html_table(["optimizer", "m", "V", "update"], rows)
    )


def json_text(value: Any) -> str:
    return json.dumps(_finite(value), ensure_ascii=False)


def status_html(status: str) -> str:
    text = html.escape(status)
    return text if status == "ok" else f'<span class="bad">{text}</span>'


def statuses_html(statuses: dict[str, str], interrupted: bool) -> str:
    """How the runs ended: the ones that did not finish, and a note if Ctrl-C stopped it all."""
    note = "<p><strong>Run interrupted (Ctrl-C)</strong>: below is what finished.</p>"
    bad = "".join(
        f"<li>{html.escape(n)}: {status_html(s)}</li>" for n, s in statuses.items() if s != "ok"
    )
    ended = f"<ul>{bad}</ul>" if bad else "<p>Every run finished.</p>"
    return (note if interrupted else "") + ended


def images_html(paths: Sequence[Path]) -> str:
    return "".join(
        f'<p><img alt="{html.escape(p.stem)}" src="{image_data_uri(p)}"></p>' for p in paths
    )


# ---------------------------------------------------------------- compare


def write_compare(result: CompareResult, out: Path, format: str = "png") -> list[Path]:
    """Every file of a comparison run, in ``out``; returns their paths."""
    from momenta.compare import inspection, sweep_report

    accuracy = "test accuracy" if not result.config.text else "test next-character accuracy"
    plots = [
        plot_metric(result, "train_loss", "mean training loss", out / f"loss.{format}"),
        plot_metric(result, "test_acc", accuracy, out / f"accuracy.{format}"),
    ]
    if any(run.val_loss for r in result.results.values() for run in r.runs):
        plots.append(plot_metric(result, "val_loss", "validation loss", out / f"val_loss.{format}"))
    files = [*plots, write_metrics(result, out / "metrics.csv")]
    if result.config.repeats > 1:
        files.append(write_metrics_by_seed(result, out / "metrics_by_seed.csv"))
    extra: dict[str, Path] = {}
    if result.sweep is not None and result.sweep.points:
        title = f"{result.dataset['name']}, {result.config.model}"
        extra["sensitivity"] = sweep_report.plot_sensitivity(result.sweep, title, out / f"sensitivity.{format}")
        files += [extra["sensitivity"], out / "sweep.csv"]
    landscape = result.landscape
    if landscape is not None and landscape.out is not None and landscape.trajectories:
        extra["landscape"] = landscape.out / f"landscape.{format}"
    if inspection.inspected(result):
        write_csv(out / "inspect.csv", inspection.HEADER, inspection.rows(result))
        extra["inspect"] = inspection.plot(result, out / f"inspect.{format}")
        files += [out / "inspect.csv", extra["inspect"]]
    write_json(out / "summary.json", result.summary())
    files.append(out / "summary.json")
    (out / "report.html").write_text(compare_html(result, plots, extra), encoding="utf-8")
    files.append(out / "report.html")
    return files


def _label(r: OptimizerResult) -> str:
    """The legend entry: the name, and how the run ended unless it finished ("failed …: why" is
    cut at the reason, which the summary keeps)."""
    return r.name if r.status == "ok" else f"{r.name} ({r.status.split(':')[0]})"


def plot_metric(result: CompareResult, metric: str, ylabel: str, path: Path) -> Path:
    """One labelled line per optimizer; more than :data:`MANY_LINES` of them: small multiples
    (:func:`plot_small_multiples`)."""
    if len(result.results) > MANY_LINES:
        return plot_small_multiples(result, metric, ylabel, path)
    fig, ax = new_figure(len(result.results))
    epochs = result.config.epochs
    x = np.arange(1, epochs + 1)
    many = len(result.results) > 1
    markers = "os^vD<>ph*"
    for k, r in enumerate(result.results.values()):
        curves = r.curve(metric, epochs)
        curves[~np.isfinite(curves)] = np.nan
        with _quiet_nan_warnings():
            mean = np.nanmean(curves, axis=0)
            # markers a few per line, at staggered epochs: lines that coincide stay visible
            every = max(1, epochs // 8)
            style = {"marker": markers[k % len(markers)], "ms": 4, "markevery": (k % every, every)} if many else {}
            (line,) = ax.plot(x, mean, label=_label(r), linewidth=1.5, **style)
            if len(r.runs) > 1:
                ax.fill_between(
                    x,
                    np.nanmin(curves, axis=0),
                    np.nanmax(curves, axis=0),
                    color=line.get_color(),
                    alpha=0.2,
                    linewidth=0,
                )
        for run in r.runs:
            if run.diverged_at:
                finite = [v for v in getattr(run, metric) if math.isfinite(v)]
                if finite:
                    ax.plot([len(finite)], [finite[-1]], "x", color=line.get_color(), ms=8)
    c = result.config
    band = f", mean and min–max over {c.repeats} seeds" if c.repeats > 1 else ""
    ax.set_title(f"{ylabel} — {result.dataset['name']}, {c.model}, {c.loss} loss{band}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if result.results:  # none when Ctrl-C came during the first epoch
        legend(ax, len(result.results))
    fig.tight_layout()
    save_figure(fig, path)
    return path


def plot_small_multiples(result: CompareResult, metric: str, ylabel: str, path: Path) -> Path:
    """A grid of small panels, one per optimizer (its mean in colour, every other in grey
    behind it, same axes), ordered by the final value (best first: lowest loss, highest
    accuracy), so that 22 optimizers stay readable."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = result.config.epochs
    x = np.arange(1, epochs + 1)
    means: dict[str, np.ndarray] = {}
    for name, r in result.results.items():
        curves = r.curve(metric, epochs)
        curves[~np.isfinite(curves)] = np.nan
        with _quiet_nan_warnings():
            means[name] = np.nanmean(curves, axis=0)

    def final(name: str) -> float:
        finite = means[name][np.isfinite(means[name])]
        if not len(finite):
            return math.inf
        return float(finite[-1]) if "loss" in metric else -float(finite[-1])

    order = sorted(means, key=final)
    cols = 4
    rows = -(-len(order) // cols)
    fig = Figure(figsize=(12.0, 2.1 * rows + 0.6), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
    for ax, name in zip(axes.flat, order):
        for other in order:
            if other != name:
                ax.plot(x, means[other], color="#cccccc", linewidth=0.8)
        ax.plot(x, means[name], color="#1f77b4", linewidth=1.6)
        ax.set_title(_label(result.results[name]), fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(order) :]:
        ax.set_visible(False)
    c = result.config
    fig.suptitle(f"{ylabel} — {result.dataset['name']}, {c.model}, {c.loss} loss; one panel per optimizer, "
                 "best final value first, the others in grey", fontsize=10)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    save_figure(fig, path)
    return path


@contextlib.contextmanager
def _quiet_nan_warnings() -> Iterator[None]:
    """nanmean of an all-NaN column (every seed stopped) warns; here it just means 'no value'."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _has_val(result: CompareResult) -> bool:
    return any(run.val_loss for r in result.results.values() for run in r.runs)


def write_metrics(result: CompareResult, path: Path) -> Path:
    """Long format, one row per optimizer and epoch; with repeats, means over the seeds; a
    ``val_loss`` column when a validation loss was measured (sweeps, the text task)."""
    metrics = ["train_loss", "test_acc", "elapsed_s", *(["val_loss"] if _has_val(result) else [])]
    rows = []
    for r in result.results.values():
        n = max(run.epochs_done for run in r.runs)
        if len(r.runs) == 1:
            columns = [np.asarray(getattr(r.runs[0], m), dtype=float) for m in metrics]
        else:
            with _quiet_nan_warnings():
                columns = [np.nanmean(r.curve(m, n), axis=0) for m in metrics]
        rows += [[r.name, e + 1, *(float(col[e]) if e < len(col) else "" for col in columns)] for e in range(n)]
    write_csv(path, METRICS_HEADER + metrics[3:], rows)
    return path


def write_metrics_by_seed(result: CompareResult, path: Path) -> Path:
    metrics = ["train_loss", "test_acc", "elapsed_s", *(["val_loss"] if _has_val(result) else [])]
    header = ["optimizer", "seed", *METRICS_HEADER[1:], *metrics[3:]]
    rows = [
        [r.name, run.seed, e + 1, *(getattr(run, m)[e] if e < len(getattr(run, m)) else "" for m in metrics)]
        for r in result.results.values()
        for run in r.runs
        for e in range(run.epochs_done)
    ]
    write_csv(path, header, rows)
    return path


SUMMARY_HEADER = [
    "optimizer",
    "final loss",
    "final acc",
    "best acc",
    "best epoch",
    "time s",
    "µs/step (median, interleaved)",
    "to target",
    "status",
]


def fixed(value: Any, decimals: int) -> str:
    """A number with ``decimals`` decimals (accuracies: ``1.000`` beside ``0.533``)."""
    if value is None:
        return "—"
    return f"{value:.{decimals}f}" if math.isfinite(value) else str(value)


def to_target(t: dict[str, Any]) -> str:
    if t.get("epoch") is None:
        return "never"
    seconds = f", {t['seconds']:.2f} s" if t.get("seconds") is not None else ""
    return f"epoch {t['epoch']}{seconds}"


def summary_rows(result: CompareResult) -> list[list[str]]:
    rows = []
    for name, s in result.summary()["optimizers"].items():
        per_step = s.get("step_time_median_s")
        rows.append(
            [
                name,
                fmt(s["final_train_loss"]),
                fixed(s["final_test_acc"], 3),
                fixed(s["best_test_acc"], 3),
                fmt(s["best_epoch"]),
                fixed(s["total_time_s"], 2),
                fixed(per_step * 1e6 if per_step is not None else None, 0 if per_step and per_step > 1e-4 else 1),
                to_target(s["time_to_target"]),
                s["status"],
            ]
        )
    return rows


def compare_table(result: CompareResult) -> str:
    """The terminal summary (and, after a sweep, its ranking)."""
    table = text_table(SUMMARY_HEADER, summary_rows(result))
    if result.sweep is not None and result.sweep.points:
        from momenta.compare import sweep_report

        ranking = text_table(sweep_report.RANKING_HEADER, sweep_report.ranking_rows(result.sweep))
        table = f"{table}\n\nsweep ranking ({result.sweep.budget()}):\n{ranking}"
    return table


def timing_note(result: CompareResult) -> str:
    target = result.target_loss
    metric = "validation" if any(run.val_loss for r in result.results.values() for run in r.runs) else "training"
    return (
        "<p><em>time s</em>: wall time of each optimizer's training steps, one optimizer after "
        "another (a shared machine's mood included). <em>µs/step (median, interleaved)</em>: "
        "the median time of one <code>optimizer.step()</code> over rounds in which every "
        "optimizer steps in turn, on this task's model with fixed gradients (the optimizer "
        f"alone, not the forward and backward passes). <em>to target</em>: the first epoch whose "
        f"mean {metric} loss is ≤ {target:g}, and the training seconds to its end.</p>"
        if target is not None
        else ""
    )


def compare_html(result: CompareResult, plots: Sequence[Path], extra: dict[str, Path] | None = None) -> str:
    from momenta.compare import inspection, sweep_report

    extra = extra or {}
    summary = result.summary()
    optimizers = summary["optimizers"]
    c = result.config
    rows = summary_rows(result)
    table = html_table(SUMMARY_HEADER[:-1], [row[:-1] for row in rows]) + timing_note(result)
    outcome = statuses_html({row[0]: row[-1] for row in rows}, result.interrupted)
    hyper = html_table(
        ["optimizer", "hyperparameters"],
        [[n, json_text(s["hyperparameters"])] for n, s in optimizers.items()],
    )
    d = result.dataset
    setup = html_table(
        ["setting", "value"],
        [
            [
                "data",
                d["description"]
                if "description" in d
                else f"{d['name']} ({d['rows']} rows, {d['features']} features, "
                f"{len(d['classes'])} classes; {d['train_rows']} train"
                + (f" / {d['val_rows']} validation" if "val_rows" in d else "")
                + f" / {d['test_rows']} test, split seed {c.split_seed}, scale {c.scale})",
            ],
            [
                "model",
                f"{c.model}: momenta.bench.models.GPT, tied weights, N(0, 0.02²) init"
                if c.text
                else f"{c.model}, softmax output, weights and biases ~ N(0, 0.1²) truncated at ±0.2",
            ],
            ["loss", c.loss],
            ["lr", repr(c.lr) if c.lr is not None else "each optimizer's own: " + ", ".join(
                f"{n} {json_text(s['hyperparameters'].get('lr'))}" for n, s in optimizers.items())],
            ["epochs", c.epochs],
            ["batch size", c.batch_size],
            ["init seeds", ", ".join(str(c.seed + i) for i in range(c.repeats))],
            ["dtype", c.dtype],
            ["environment", ", ".join(f"{k} {v}" for k, v in summary["environment"].items())],
        ],
    )
    sections = [("Summary", table + outcome)]
    if result.sweep is not None and result.sweep.points:
        sw = result.sweep
        ranking = html_table(sweep_report.RANKING_HEADER, sweep_report.ranking_rows(sw))
        sections.append(
            (
                f"Sweep of {sw.spec.param}",
                f"<p>Same budget for every optimizer: {html.escape(sw.budget())}, on "
                + (
                    f"{result.dataset['val_rows']} validation rows held out of the training rows (stratified). "
                    if "val_rows" in result.dataset
                    else f"the validation text ({result.dataset.get('val_chars', '?')} characters). "
                )
                + "Only the chosen value's test numbers are reported "
                "(mean ± std over seeds); the plots below show the chosen values' runs. "
                "A value marked as the grid's edge is the lowest or highest tried: that "
                "optimizer's best may lie outside the range.</p>"
                + ranking
                + images_html([extra["sensitivity"]])
                + "<p>Every point: <code>sweep.csv</code>.</p>",
            )
        )
    sections.append(("Plots", images_html(plots)))
    if "inspect" in extra:
        sections.append(
            (
                "Inside the optimizers: m, V and the step",
                "<p>Read after each epoch's last step by <code>momenta.inspect</code>: rms(m), the mean "
                "of √V̂, the update-to-weight ratio |lr·D(m̂/(√V̂+ε))|/|w| (per coordinate: median, max, "
                "min; D the direction part where it is elementwise, as Lion's sign), and the rms of "
                "the last update as it moved the weights. Every number: "
                "<code>inspect.csv</code>.</p>"
                + '<div style="display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start">'
                + f'<div style="flex:1 1 22rem;min-width:0;overflow-x:auto">{inspection.rules_html(result)}</div>'
                + f'<div style="flex:2 1 30rem;min-width:0">{images_html([extra["inspect"]])}</div></div>'
                + inspection.oscillation_html(result)
                + (
                    "<p>Not read (torch.optim's classes have no rules to read): "
                    + html.escape(", ".join(n for n in result.results if n not in inspection.inspected(result)))
                    + ".</p>"
                    if len(inspection.inspected(result)) < len(result.results)
                    else ""
                ),
            )
        )
    if "landscape" in extra and result.landscape is not None:
        fn = result.landscape.config.test_function
        link = extra["landscape"].parent.name + "/report.html"
        sections.append(
            (
                f"Landscape: {fn.name}",
                f"<p>The same optimizers from the same start on f = {html.escape(fn.formula)}, each at "
                f"the function's own lr ({fmt(result.landscape.config.lr)}) for {result.landscape.config.steps} "
                f'steps. Its own report, with f − f* per step and every point: <a href="{html.escape(link)}">'
                f"{html.escape(link)}</a>.</p>" + images_html([extra["landscape"]]),
            )
        )
    return html_page(
        "momenta compare",
        [
            *sections,
            ("Formulas", formulas_html({n: s["formulas"] for n, s in optimizers.items()})),
            ("Hyperparameters", hyper),
            ("Setup", setup),
            (
                "Reproduce",
                f"<pre><code>{html.escape(summary['command'])}</code></pre>"
                "<p>Same seeds give the same <code>metrics.csv</code> "
                "(up to the wall-clock column <code>elapsed_s</code>).</p>",
            ),
        ],
    )
