"""Optimizer trajectories on classic 2-D test functions, drawn over their contour plot.

    rosenbrock   f = (1 − x)² + 100·(y − x²)²                              min f(1, 1) = 0
    beale        f = (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²  min f(3, ½) = 0
    himmelblau   f = (x² + y − 11)² + (x + y² − 7)²                        four minima, f = 0
    quadratic    f = ½·x² + 10·y²          (condition number 20)           min f(0, 0) = 0
    saddle       f = x² − y²               (saddle at 0; no minimum)

    p₀ = start;  for k < steps:  g = ∇f(p_k),  p_{k+1} = optimizer step   (float64, one
    2-element parameter p = (x, y); every optimizer gets the same start and lr)

A trajectory whose f or p becomes NaN or ±inf stops there: "diverged at step k".
Files (``out``): ``landscape.<fmt>`` (contour plus trajectories), ``loss.<fmt>`` (f − f* per
step), optional ``landscape.gif``, ``trajectory.csv``, ``summary.json``, ``report.html``.
"""

from __future__ import annotations

import html
import math
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from momenta import registry
from momenta.compare import report
from momenta.compare.errors import UsageError
from momenta.compare.options import (
    FORMATS,
    SEED_OPTIMIZERS,
    choice,
    environment,
    json_safe,
    one_thread,
    positive,
    resolve_optimizers,
    takes_sparse_gradients,
)

Point = tuple[float, float]


@dataclass(frozen=True)
class TestFunction:
    """f(x, y) written with + − · ** only, so it evaluates tensors and NumPy arrays alike."""

    __test__ = False  # an optimization test function, not a pytest class

    name: str
    formula: str
    f: Callable[[Any, Any], Any]
    start: Point
    minima: tuple[Point, ...]  # global minima, all with value f_min; () if unbounded below
    bounds: tuple[float, float, float, float]  # x_min, x_max, y_min, y_max of the plot
    lr: float  # default learning rate
    steps: int  # default number of steps
    f_min: float | None = 0.0


FUNCTIONS: dict[str, TestFunction] = {
    f.name: f
    for f in [
        TestFunction(
            "rosenbrock",
            "f = (1 − x)² + 100·(y − x²)²",
            lambda x, y: (1 - x) ** 2 + 100 * (y - x**2) ** 2,
            start=(-1.5, 2.0),
            minima=((1.0, 1.0),),
            bounds=(-2.0, 2.0, -1.0, 3.0),
            lr=2e-2,
            steps=1000,
        ),
        TestFunction(
            "beale",
            "f = (1.5 − x + x·y)² + (2.25 − x + x·y²)² + (2.625 − x + x·y³)²",
            lambda x, y: (
                (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2
            ),
            start=(1.0, 1.5),
            minima=((3.0, 0.5),),
            bounds=(-4.5, 4.5, -4.5, 4.5),
            lr=2e-2,
            steps=1000,
        ),
        TestFunction(
            "himmelblau",
            "f = (x² + y − 11)² + (x + y² − 7)²",
            lambda x, y: (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2,
            start=(-0.3, -0.9),
            minima=(
                (3.0, 2.0),
                (-2.805118, 3.131312),
                (-3.779310, -3.283186),
                (3.584428, -1.848126),
            ),
            bounds=(-5.0, 5.0, -5.0, 5.0),
            lr=1e-2,
            steps=500,
        ),
        TestFunction(
            "quadratic",
            "f = ½·x² + 10·y²",
            lambda x, y: 0.5 * x**2 + 10 * y**2,
            start=(-4.5, 1.5),
            minima=((0.0, 0.0),),
            bounds=(-5.0, 5.0, -2.5, 2.5),
            lr=0.09,
            steps=100,
        ),
        TestFunction(
            "saddle",
            "f = x² − y²",
            lambda x, y: x**2 - y**2,
            start=(1.8, 1e-3),
            minima=(),
            bounds=(-2.0, 2.0, -2.0, 2.0),
            lr=0.05,
            steps=100,
            f_min=None,
        ),
    ]
}
CONVERGED_DISTANCE = 1e-3


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class LandscapeConfig:
    """A landscape run; ``None`` means the test function's default (see :data:`FUNCTIONS`)."""

    function: str = "rosenbrock"
    optimizers: tuple[str, ...] = SEED_OPTIMIZERS
    lr: float | None = None
    hyper: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    steps: int | None = None
    start: Point | None = None

    @property
    def test_function(self) -> TestFunction:
        return FUNCTIONS[self.function]

    def validated(self) -> LandscapeConfig:
        """Defaults filled in, names resolved; raises :class:`UsageError` if invalid."""
        if self.function not in FUNCTIONS:
            raise UsageError(
                f"function: unknown test function {self.function!r}; known: {', '.join(FUNCTIONS)}"
            )
        fn = FUNCTIONS[self.function]
        lr = fn.lr if self.lr is None else self.lr
        positive("lr", lr)
        steps = fn.steps if self.steps is None else self.steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise UsageError(f"steps must be an integer ≥ 1, got {steps!r}")
        start = fn.start if self.start is None else self.start
        if len(start) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in start
        ):
            raise UsageError(f"start must be two finite numbers x,y; got {start!r}")
        optimizers, hyper = resolve_optimizers(self.optimizers, self.hyper)
        return replace(
            self,
            optimizers=optimizers,
            lr=float(lr),
            hyper=hyper,
            steps=steps,
            start=(float(start[0]), float(start[1])),
        )

    def hyperparameters(self, optimizer: str) -> dict[str, Any]:
        return {"lr": self.lr, **self.hyper.get(optimizer, {})}

    def argv(self, gif: bool = False) -> list[str]:
        """``momenta landscape …`` arguments that reproduce this (validated) config."""
        argv = [
            "momenta",
            "landscape",
            "--function",
            self.function,
            "--optimizers",
            ",".join(self.optimizers),
        ]
        if self.lr is not None:
            argv += ["--lr", repr(self.lr)]
        if self.steps is not None:
            argv += ["--steps", str(self.steps)]
        if self.start is not None:
            argv += ["--start", f"{self.start[0]!r},{self.start[1]!r}"]
        for name, overrides in self.hyper.items():
            for key, value in overrides.items():
                argv += ["--set", f"{name}.{key}={value!r}"]
        return argv + (["--gif"] if gif else [])


# ---------------------------------------------------------------- trajectories


@dataclass
class Trajectory:
    """Points p₀ … p_k (``(k+1, 2)``) of one optimizer and their values f(p)."""

    optimizer: str
    hyperparameters: dict[str, Any]
    formulas: dict[str, str]
    points: np.ndarray
    values: np.ndarray
    time_s: float
    status: str = "ok"
    diverged_at: int | None = None

    @property
    def steps(self) -> int:
        return len(self.values) - 1

    def distance_to_minimum(self, fn: TestFunction) -> np.ndarray | None:
        """Per point, the distance to the nearest global minimum (None if f has none)."""
        if not fn.minima:
            return None
        dx = self.points[:, None, 0] - np.array([m[0] for m in fn.minima])[None]
        dy = self.points[:, None, 1] - np.array([m[1] for m in fn.minima])[None]
        return np.min(np.hypot(dx, dy), axis=1)  # hypot: no overflow for a diverged point

    def summary(self, fn: TestFunction) -> dict[str, Any]:
        distance = self.distance_to_minimum(fn)
        within = [] if distance is None else np.flatnonzero(distance < CONVERGED_DISTANCE).tolist()
        return {
            "status": self.status,
            "steps": self.steps,
            "diverged_at_step": self.diverged_at,
            "start": self.points[0].tolist(),
            "final_point": self.points[-1].tolist(),
            "final_f": float(self.values[-1]),
            "best_f": float(np.nanmin(self.values)),
            "final_distance_to_minimum": float(distance[-1]) if distance is not None else None,
            "first_step_within_1e-3": int(within[0]) if len(within) else None,
            "total_time_s": self.time_s,
            "time_per_step_s": self.time_s / self.steps if self.steps else None,
            "hyperparameters": self.hyperparameters,
            "formulas": self.formulas,
        }


def trajectory(
    fn: TestFunction, optimizer: str, hyper: Mapping[str, Any], start: Point, steps: int
) -> Trajectory:
    """Run ``optimizer`` on ``fn`` from ``start`` for ``steps`` steps (float64)."""
    p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = registry.get(optimizer).factory([p], **hyper)
    formulas = getattr(opt, "formulas", None)
    points, values = [list(start)], []
    status, diverged_at = "ok", None
    elapsed = 0.0
    sparse = takes_sparse_gradients(opt)
    for k in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        f = fn.f(p[0], p[1])
        if k < steps:
            f.backward()
            if sparse:  # SparseAdam: the same gradient, as a sparse tensor
                assert p.grad is not None
                p.grad = p.grad.to_sparse()
            try:
                opt.step()
            except Exception as e:  # an optimizer that fails at a step: record it, go on
                values.append(f.item())
                status = f"failed at step {k}: {type(e).__name__}: {e}"
                break
        elapsed += time.perf_counter() - t0
        values.append(f.item())
        point = p.detach().tolist()
        if not (math.isfinite(values[-1]) and all(map(math.isfinite, point))):
            status, diverged_at = f"diverged at step {k}", k
            break
        if k < steps:
            points.append(point)
    return Trajectory(
        optimizer,
        json_safe(dict(opt.defaults)),
        dict(formulas()) if callable(formulas) else {},
        np.array(points[: len(values)], dtype=np.float64),
        np.array(values),
        elapsed,
        status,
        diverged_at,
    )


@dataclass
class LandscapeResult:
    """What :func:`landscape` returns: the validated config and one trajectory per optimizer."""

    config: LandscapeConfig
    trajectories: dict[str, Trajectory]
    gif: bool = False
    interrupted: bool = False
    out: Path | None = None

    def command(self) -> str:
        return shlex.join(self.config.argv(self.gif))

    def summary(self) -> dict[str, Any]:
        fn = self.config.test_function
        c = self.config
        return {
            "experiment": "landscape",
            "command": self.command(),
            "function": {
                "name": fn.name,
                "formula": fn.formula,
                "minima": [list(m) for m in fn.minima],
                "f_min": fn.f_min,
            },
            "config": {
                "function": c.function,
                "optimizers": list(c.optimizers),
                "lr": c.lr,
                "hyper": {k: dict(v) for k, v in c.hyper.items()},
                "steps": c.steps,
                "start": list(c.start) if c.start else None,
            },
            "interrupted": self.interrupted,
            "environment": environment(),
            "optimizers": {n: t.summary(fn) for n, t in self.trajectories.items()},
        }


def landscape(
    function: str = "rosenbrock",
    optimizers: Sequence[str] = SEED_OPTIMIZERS,
    *,
    lr: float | None = None,
    hyper: Mapping[str, Mapping[str, Any]] | None = None,
    steps: int | None = None,
    start: Point | None = None,
    out: str | Path | None = None,
    format: str = "png",
    gif: bool = False,
    log: Callable[[str], None] | None = None,
) -> LandscapeResult:
    """Trajectories of ``optimizers`` on test function ``function`` (and, given ``out``, files).

    ``lr``, ``steps``, ``start`` default to the function's own (:data:`FUNCTIONS`); ``hyper``
    maps an optimizer name to keyword overrides (``{"sgd": {"lr": 1e-3}}``).
    """
    choice("format", format, FORMATS)
    config = LandscapeConfig(
        function,
        tuple([optimizers] if isinstance(optimizers, str) else optimizers),
        lr,
        hyper or {},
        steps,
        start,
    ).validated()
    out_dir = report.prepare_out(out) if out is not None else None
    if log and out_dir:
        log(f"writing to {out_dir}")
    result = LandscapeResult(config, {}, gif, out=out_dir)
    assert config.start is not None and config.steps is not None
    try:
        with one_thread():
            for name in config.optimizers:
                result.trajectories[name] = trajectory(
                    config.test_function,
                    name,
                    config.hyperparameters(name),
                    config.start,
                    config.steps,
                )
    except KeyboardInterrupt:
        result.interrupted = True
    if out_dir is not None:
        write_landscape(result, out_dir, format)
    return result


# ---------------------------------------------------------------- files


def write_landscape(result: LandscapeResult, out: Path, format: str = "png") -> list[Path]:
    """Every file of a landscape run, in ``out``; returns their paths."""
    plots = [
        plot_landscape(result, out / f"landscape.{format}"),
        plot_values(result, out / f"loss.{format}"),
    ]
    files = list(plots)
    if result.gif and result.trajectories:
        files.append(animate(result, out / "landscape.gif"))
    files.append(write_trajectories(result, out / "trajectory.csv"))
    report.write_json(out / "summary.json", result.summary())
    files.append(out / "summary.json")
    (out / "report.html").write_text(landscape_html(result, plots), encoding="utf-8")
    files.append(out / "report.html")
    return files


def write_trajectories(result: LandscapeResult, path: Path) -> Path:
    rows = [
        [name, k, float(t.points[k, 0]), float(t.points[k, 1]), float(t.values[k])]
        for name, t in result.trajectories.items()
        for k in range(len(t.values))
    ]
    report.write_csv(path, ["optimizer", "step", "x", "y", "f"], rows)
    return path


def _label(t: Trajectory) -> str:
    return t.optimizer if t.status == "ok" else f"{t.optimizer} ({t.status})"


def _contour(ax: Any, fn: TestFunction) -> None:
    x0, x1, y0, y1 = fn.bounds
    x, y = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    z = fn.f(x, y)
    if fn.f_min is not None:  # log-spaced levels show the valley floors
        z = z - fn.f_min
        low = max(float(np.min(z[z > 0])), 1e-3)
        levels = np.logspace(math.log10(low), math.log10(float(z.max())), 30)
        norm = _log_norm(levels[0], levels[-1])
    else:
        levels, norm = np.linspace(float(z.min()), float(z.max()), 30), None
    ax.contourf(x, y, z, levels=levels, norm=norm, cmap="Blues_r", alpha=0.45, extend="both")
    ax.contour(x, y, z, levels=levels, norm=norm, colors="#556", linewidths=0.4, alpha=0.6)
    for m in fn.minima:
        ax.plot(*m, marker="*", color="gold", markeredgecolor="black", ms=14, zorder=5)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def _log_norm(low: float, high: float) -> Any:
    from matplotlib.colors import LogNorm

    return LogNorm(vmin=low, vmax=high)


def _title(result: LandscapeResult) -> str:
    fn, c = result.config.test_function, result.config
    return f"{fn.name}: {fn.formula}   (lr {c.lr:g}, {c.steps} steps)"


def plot_landscape(result: LandscapeResult, path: Path) -> Path:
    fig, ax = report.new_figure(len(result.trajectories) + 1)
    fn = result.config.test_function
    _contour(ax, fn)
    assert result.config.start is not None
    ax.plot(*result.config.start, "o", color="black", ms=7, zorder=6, label="start")
    for t in result.trajectories.values():
        ax.plot(t.points[:, 0], t.points[:, 1], "-", marker=".", ms=3, lw=1.5, label=_label(t))
    ax.set_title(_title(result), fontsize=10)
    report.legend(ax, len(result.trajectories) + 1, loc="best", fontsize=9)
    fig.tight_layout()
    report.save_figure(fig, path)
    return path


def plot_values(result: LandscapeResult, path: Path) -> Path:
    fig, ax = report.new_figure(len(result.trajectories))
    fn = result.config.test_function
    for t in result.trajectories.values():
        steps = np.arange(len(t.values))
        if fn.f_min is not None:
            ax.semilogy(steps, np.maximum(t.values - fn.f_min, 1e-300), label=_label(t))
        else:
            ax.plot(steps, t.values, label=_label(t))
    ax.set_xlabel("step")
    ax.set_ylabel("f − f*" if fn.f_min is not None else "f")
    ax.set_title(_title(result), fontsize=10)
    ax.grid(True, alpha=0.3)
    if result.trajectories:  # none when Ctrl-C came during the first trajectory
        report.legend(ax, len(result.trajectories), fontsize=9)
    fig.tight_layout()
    report.save_figure(fig, path)
    return path


def animate(result: LandscapeResult, path: Path, frames: int = 60, fps: int = 15) -> Path:
    """An animated GIF: the trajectories grow step by step over the contour plot.

    The contour plot is drawn once; each frame restores it and draws only the lines (blitting).
    """
    from PIL import Image  # a dependency of matplotlib

    trajectories = list(result.trajectories.values())
    fig, ax = report.new_figure(len(trajectories))
    _contour(ax, result.config.test_function)
    ax.set_title(_title(result), fontsize=10)
    lines = [
        ax.plot([], [], "-", lw=1.5, label=t.optimizer, animated=True)[0] for t in trajectories
    ]
    heads = [ax.plot([], [], "o", color=line.get_color(), ms=5, animated=True)[0] for line in lines]
    report.legend(ax, len(trajectories), loc="best", fontsize=9)
    fig.tight_layout()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = cast(FigureCanvasAgg, fig.canvas)  # report.new_figure attaches an Agg canvas
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)
    longest = max(len(t.values) for t in trajectories)
    images = []
    for n in np.unique(np.linspace(1, longest, min(frames, longest)).astype(int)):
        canvas.restore_region(background)
        for t, line, head in zip(trajectories, lines, heads):
            k = min(int(n), len(t.values))
            line.set_data(t.points[:k, 0], t.points[:k, 1])
            head.set_data(t.points[k - 1 : k, 0], t.points[k - 1 : k, 1])
            ax.draw_artist(line)
            ax.draw_artist(head)
        rgba = np.asarray(canvas.buffer_rgba())
        images.append(Image.fromarray(rgba[..., :3].copy()))
    images[0].save(path, save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
    return path


def landscape_html(result: LandscapeResult, plots: Sequence[Path]) -> str:
    summary = result.summary()
    rows = [
        [
            name,
            report.fmt(s["final_f"]),
            report.fmt(s["best_f"]),
            report.fmt(s["final_distance_to_minimum"]),
            report.fmt(s["first_step_within_1e-3"]),
            report.fmt(s["total_time_s"], 3),
            s["status"],
        ]
        for name, s in summary["optimizers"].items()
    ]
    table = report.html_table(
        ["optimizer", "final f", "best f", "distance to min", "first step within 1e-3", "time s"],
        [r[:-1] for r in rows],
    )
    outcome = report.statuses_html({r[0]: r[-1] for r in rows}, result.interrupted)
    gif = [result.out / "landscape.gif"] if result.out else []
    images = report.images_html([*plots, *(p for p in gif if p.exists())])
    fn = summary["function"]
    c = summary["config"]
    setup = report.html_table(
        ["setting", "value"],
        [
            ["function", f"{fn['name']}: {fn['formula']}"],
            ["global minima", ", ".join(f"({x:g}, {y:g})" for x, y in fn["minima"]) or "none"],
            ["start", f"({c['start'][0]:g}, {c['start'][1]:g})"],
            ["lr", repr(c["lr"])],
            ["steps", c["steps"]],
            ["environment", ", ".join(f"{k} {v}" for k, v in summary["environment"].items())],
        ],
    )
    hyper = report.html_table(
        ["optimizer", "hyperparameters"],
        [[n, report.json_text(s["hyperparameters"])] for n, s in summary["optimizers"].items()],
    )
    return report.html_page(
        f"momenta landscape: {fn['name']}",
        [
            ("Summary", table + outcome),
            ("Plots", images),
            (
                "Formulas",
                report.formulas_html({n: s["formulas"] for n, s in summary["optimizers"].items()}),
            ),
            ("Hyperparameters", hyper),
            ("Setup", setup),
            ("Reproduce", f"<pre><code>{html.escape(summary['command'])}</code></pre>"),
        ],
    )
