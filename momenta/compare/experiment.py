"""The comparison experiment: one small classifier per optimizer, same data, same start.

    h₀ = x,   hₗ = relu(hₗ₋₁ Wₗ + bₗ) for hidden layers,   logits = h_{L−1} W_L + b_L
    p = softmax(logits)
    mse:  L = mean_{i,c} (p_ic − onehot(y_i)_c)²          (the classic experiment)
    ce:   L = mean_i −log p_{i,y_i}
    Wₗ, bₗ ~ N(0, 0.1²) truncated at ±2σ, drawn W₁, b₁, W₂, b₂, … from
             torch.Generator().manual_seed(seed)          (W is in×out: logits = x W + b)
    epoch:  batches of ``batch_size`` training rows in order; one ``step(closure)`` per batch
    train_loss = mean of the epoch's batch losses (each taken before its step)
    test_acc   = mean(argmax logits == y) on the test rows after the epoch
    elapsed_s  = training wall time so far (steps only, not the evaluation)

The default :class:`CompareConfig` re-creates the classic experiment's setup: iris, rows
shuffled with seed 116, 120 train / 30 test, a 4→3 softmax layer, MSE, lr 0.1, 500 epochs,
batch 32, init seed 1, and the five optimizers of ``momenta.seed``. The split is the classic's
own (:mod:`.data`); the initial weights are torch's draws, not TensorFlow's, and differ between
torch versions (``trunc_normal_`` draws by the inverse CDF in 2.9.1, by rejection in 2.13.0).
Without an ``lr`` each optimizer gets its registry entry's (:data:`momenta.registry.COMPARE_LR`:
0.1 unless the method means something else by its learning rate, as Adadelta, Rprop, LARS do).
``repeats = N`` runs init seeds seed, seed+1, …, seed+N−1 on the same split.

A run whose loss becomes NaN or ±inf stops there and is recorded as "diverged at epoch k"; the
other optimizers still run. Ctrl-C (KeyboardInterrupt) keeps every finished epoch.

Beyond the classic run (each its own module): ``sweep`` tunes one hyperparameter per optimizer
on a validation split (:mod:`.sweep`); ``inspect`` records m, V and the step per epoch
(:mod:`momenta.introspect`, :mod:`.inspection`); every run times the optimizers' steps
interleaved and finds the time to a target loss (:mod:`.timing`); ``data="text"`` trains a
character-level GPT (:mod:`.text`) instead of the table's classifier.
"""

from __future__ import annotations

import functools
import math
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type stubs

from momenta import registry
from momenta.compare import data as datasets
from momenta.engine import Optimizer
from momenta.introspect import Inspector, Stats
from momenta.compare.errors import UsageError
from momenta.compare.tasks import Batch, Model, Task
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

if TYPE_CHECKING:  # .sweep imports this module; .landscape imports .report, which imports it
    from momenta.compare.landscape import LandscapeConfig, LandscapeResult
    from momenta.compare.sweep import SweepResult

LOSSES = ("mse", "ce")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
INIT_STD = 0.1


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class CompareConfig:
    """Everything that decides the numbers of a comparison (see the module docstring)."""

    optimizers: tuple[str, ...] = SEED_OPTIMIZERS
    lr: float | None = None  # None: each optimizer's registry lr (0.1 for the seed's five)
    hyper: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per optimizer
    epochs: int = 500
    batch_size: int = 32
    seed: int = 1
    split_seed: int = 116
    repeats: int = 1
    data: str = "iris"
    target: str | None = None
    model: str = "linear"
    loss: str = "mse"
    scale: str = "none"
    dtype: str = "float32"
    inspect: bool = False  # record m, V and the step every epoch (inspect.csv)
    sweep: str | None = None  # "PARAM=LOW:HIGH:N" (see .sweep)
    val_fraction: float = 0.2  # held out of the training rows for a sweep's choice
    target_loss: float | None = None  # None: the task's own (time to target)
    landscape: str | None = None  # a 2-D test function: its trajectories too (landscape/)

    @property
    def text(self) -> bool:
        """The character-level GPT task (``data="text"`` or ``"text:PATH"``)."""
        return self.data == "text" or self.data.startswith("text:")

    def validated(self) -> CompareConfig:
        """This config with optimizer names resolved; raises :class:`UsageError` if invalid."""
        if self.lr is not None:
            positive("lr", self.lr)
        for name, low in [("epochs", 1), ("batch_size", 1), ("repeats", 1)]:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"{name} must be an integer ≥ {low}, got {value!r}")
        for name in ["seed", "split_seed"]:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"{name} must be an integer ≥ 0, got {value!r}")
        choice("loss", self.loss, LOSSES)
        choice("scale", self.scale, datasets.SCALES)
        choice("dtype", self.dtype, tuple(DTYPES))
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) or not (
            0 < self.val_fraction <= 0.5
        ):
            raise UsageError(f"val_fraction must be a number in (0, 0.5], got {self.val_fraction!r}")
        if self.target_loss is not None:
            positive("target_loss", self.target_loss)
        if self.text:
            from momenta.compare import text

            text.model_shape(self.model)
        else:
            hidden_sizes(self.model)
        optimizers, hyper = resolve_optimizers(self.optimizers, self.hyper)
        config = replace(self, optimizers=optimizers, hyper=hyper)
        if config.landscape is not None:
            from momenta.compare.landscape import FUNCTIONS

            if config.landscape not in FUNCTIONS:
                raise UsageError(f"landscape: unknown test function {config.landscape!r}; known: {', '.join(FUNCTIONS)}")
            config.landscape_config().validated()
        if config.sweep is not None:
            from momenta.compare import sweep

            sweep.parse(config.sweep).check(config)
        return config

    def landscape_config(self) -> LandscapeConfig:
        """The landscape run of ``landscape``: the same optimizers and overrides, except lr
        (a task's learning rate is not a test function's: each function has its own)."""
        from momenta.compare.landscape import LandscapeConfig

        hyper = {n: {k: v for k, v in h.items() if k != "lr"} for n, h in self.hyper.items()}
        if self.landscape is None:
            raise UsageError("landscape: no test function given")
        return LandscapeConfig(self.landscape, self.optimizers, hyper={n: h for n, h in hyper.items() if h})

    def hyperparameters(self, optimizer: str) -> dict[str, Any]:
        """Keyword arguments for ``registry.get(optimizer).factory``: lr, then overrides."""
        lr = self.lr if self.lr is not None else default_lr(optimizer, self.text)
        return {"lr": lr, **self.hyper.get(optimizer, {})}

    def argv(self) -> list[str]:
        """``momenta compare …`` arguments that reproduce this config (every option explicit)."""
        argv = ["momenta", "compare", "--optimizers", ",".join(self.optimizers)]
        argv += ["--lr", repr(self.lr)] if self.lr is not None else []
        argv += ["--epochs", str(self.epochs)]
        argv += ["--batch-size", str(self.batch_size), "--seed", str(self.seed)]
        argv += ["--split-seed", str(self.split_seed), "--repeats", str(self.repeats)]
        argv += ["--data", self.data] + (["--target", self.target] if self.target else [])
        argv += ["--model", self.model, "--loss", self.loss, "--scale", self.scale]
        argv += ["--dtype", self.dtype]
        argv += ["--inspect"] if self.inspect else []
        argv += ["--sweep", self.sweep, "--val-fraction", repr(self.val_fraction)] if self.sweep else []
        argv += ["--target-loss", repr(self.target_loss)] if self.target_loss is not None else []
        argv += ["--landscape", self.landscape] if self.landscape is not None else []
        for name, overrides in self.hyper.items():
            for key, value in overrides.items():
                argv += ["--set", f"{name}.{key}={value!r}"]
        return argv

    def command(self) -> str:
        return shlex.join(self.argv())


def hidden_sizes(model: str) -> tuple[int, ...]:
    """``"linear"`` → (); ``"mlp:64,64"`` → (64, 64)."""
    if model == "linear":
        return ()
    if model.startswith("mlp:"):
        try:
            sizes = tuple(int(s) for s in model.removeprefix("mlp:").split(","))
        except ValueError:
            sizes = ()
        if sizes and all(s > 0 for s in sizes):
            return sizes
    raise UsageError(f"model must be 'linear' or 'mlp:H1,H2,…' (positive widths), got {model!r}")


# ---------------------------------------------------------------- model and loss


def init_params(sizes: Sequence[int], seed: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """[W₁, b₁, W₂, b₂, …], Wₗ ∈ ℝ^{sizes[l−1]×sizes[l]}, all ~ N(0, 0.1²) truncated at ±0.2."""
    generator = torch.Generator().manual_seed(seed)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        for shape in [(fan_in, fan_out), (fan_out,)]:
            p = torch.empty(shape, dtype=dtype)
            torch.nn.init.trunc_normal_(
                p, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD, generator=generator
            )
            params.append(p.requires_grad_())
    return params


def forward(params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """logits = (relu ∘ …)(x W₁ + b₁) … W_L + b_L."""
    h = x
    for layer in range(0, len(params), 2):
        h = h @ params[layer] + params[layer + 1]
        if layer + 2 < len(params):
            h = torch.relu(h)
    return h


def mse_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean (softmax(logits) − onehot(y))²."""
    onehot = torch.nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype)
    return torch.mean(torch.square(torch.softmax(logits, dim=1) - onehot))


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean −log softmax(logits)_y."""
    return torch.nn.functional.cross_entropy(logits, y)


LOSS_FUNCTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": mse_loss,
    "ce": ce_loss,
}


# ---------------------------------------------------------------- results


@dataclass
class Run:
    """One optimizer trained from one init seed: per-epoch curves and how it ended."""

    optimizer: str
    seed: int
    hyperparameters: dict[str, Any]
    formulas: dict[str, str]
    train_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    elapsed_s: list[float] = field(default_factory=list)  # cumulative, per epoch
    val_loss: list[float] = field(default_factory=list)  # per epoch, when the task has one
    inspection: list[Stats] = field(default_factory=list)  # per epoch, with inspect
    steps: int = 0
    status: str = "ok"  # "ok" | "diverged at epoch k" | "interrupted at epoch k" | "failed …"
    diverged_at: int | None = None

    @property
    def epochs_done(self) -> int:
        return len(self.train_loss)

    @property
    def total_time_s(self) -> float:
        return self.elapsed_s[-1] if self.elapsed_s else 0.0

    @property
    def time_per_step_s(self) -> float | None:
        return self.total_time_s / self.steps if self.steps else None

    @property
    def final_train_loss(self) -> float | None:
        return self.train_loss[-1] if self.train_loss else None

    @property
    def final_val_loss(self) -> float | None:
        return self.val_loss[-1] if self.val_loss else None

    @property
    def final_test_acc(self) -> float | None:
        return self.test_acc[-1] if self.test_acc else None

    @property
    def best_test_acc(self) -> float | None:
        return max(self.test_acc) if self.test_acc else None

    @property
    def best_epoch(self) -> int | None:
        """First epoch (from 1) reaching the best test accuracy."""
        return self.test_acc.index(max(self.test_acc)) + 1 if self.test_acc else None

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "status": self.status,
            "epochs_done": self.epochs_done,
            "diverged_at_epoch": self.diverged_at,
            "final_train_loss": self.final_train_loss,
            "final_val_loss": self.final_val_loss,
            "final_test_acc": self.final_test_acc,
            "best_test_acc": self.best_test_acc,
            "best_epoch": self.best_epoch,
            "total_time_s": self.total_time_s,
            "steps": self.steps,
            "time_per_step_s": self.time_per_step_s,
        }


@dataclass
class OptimizerResult:
    """All repeats of one optimizer; curves are ``(repeats, epochs)`` arrays, NaN after a stop."""

    name: str
    runs: list[Run]

    def curve(self, metric: str, epochs: int) -> np.ndarray:
        out = np.full((len(self.runs), epochs), np.nan)
        for i, run in enumerate(self.runs):
            values = getattr(run, metric)
            out[i, : len(values)] = values
        return out

    @property
    def status(self) -> str:
        """ "ok" when every repeat finished, else the first repeat's problem (with its seed)."""
        for run in self.runs:
            if run.status != "ok":
                return run.status if len(self.runs) == 1 else f"{run.status} (seed {run.seed})"
        return "ok"

    def summary(self) -> dict[str, Any]:
        """One run's values, or with repeats their means (over the repeats that have a finite
        value), plus every repeat's own under ``"repeats"``."""
        runs = [r.summary() for r in self.runs]
        first = self.runs[0]
        out: dict[str, Any] = {"status": self.status}
        for key in ["final_train_loss", "final_val_loss", "final_test_acc", "best_test_acc", "best_epoch",
                    "total_time_s", "time_per_step_s"]:  # fmt: skip
            values = [r[key] for r in runs if r[key] is not None and math.isfinite(r[key])]
            out[key] = float(np.mean(values)) if values else None
            if len(runs) == 1:
                out[key] = runs[0][key]
        out["diverged_at_epoch"] = next((r.diverged_at for r in self.runs if r.diverged_at), None)
        out["steps"] = sum(r.steps for r in self.runs)
        out["hyperparameters"] = first.hyperparameters
        out["formulas"] = first.formulas
        out["repeats"] = runs
        return out


@dataclass
class CompareResult:
    """What :func:`compare` returns: the config, one :class:`OptimizerResult` per optimizer
    (with a sweep: the runs of each optimizer's best value), and what the options added:
    ``sweep`` (every point, the choice), ``step_time`` (median seconds of one step,
    interleaved across optimizers), ``target_loss`` (of the times to target)."""

    config: CompareConfig
    results: dict[str, OptimizerResult]
    dataset: dict[str, Any]
    interrupted: bool = False
    out: Path | None = None
    sweep: SweepResult | None = None
    step_time: dict[str, float] = field(default_factory=dict)
    target_loss: float | None = None
    landscape: LandscapeResult | None = None  # with config.landscape

    @property
    def complete(self) -> bool:
        return not self.interrupted and all(
            len(r.runs) == self.config.repeats for r in self.results.values()
        )

    def time_to_target(self, name: str) -> dict[str, Any]:
        """The first epoch at which ``name``'s loss (validation loss when measured, else
        training loss; the mean over seeds) is ≤ :attr:`target_loss`, and the training
        seconds up to it (wall time of the steps, mean over seeds); ``None`` if never."""
        from momenta.compare import timing

        return timing.time_to_target(self.results[name], self.target_loss)

    def summary(self) -> dict[str, Any]:
        """The content of ``summary.json``."""
        config = {f.name: getattr(self.config, f.name) for f in fields(self.config)}
        config["optimizers"] = list(self.config.optimizers)
        config["hyper"] = {k: dict(v) for k, v in self.config.hyper.items()}
        optimizers = {name: r.summary() for name, r in self.results.items()}
        for name, s in optimizers.items():
            s["step_time_median_s"] = self.step_time.get(name)
            s["time_to_target"] = self.time_to_target(name)
        out = {
            "experiment": "compare",
            "command": self.config.command(),
            "config": config,
            "dataset": self.dataset,
            "interrupted": self.interrupted,
            "environment": environment(),
            "timing": {
                "step_time": "median of one optimizer.step() over rounds interleaved across "
                "optimizers (fixed gradients, after warm-up); total_time_s: wall time of training",
                "target_loss": self.target_loss,
            },
            "optimizers": optimizers,
        }
        if self.sweep is not None:
            out["sweep"] = self.sweep.summary()
        if self.landscape is not None:  # its own summary.json is in landscape/
            out["landscape"] = {k: self.landscape.summary()[k] for k in ("function", "optimizers")}
        return out


# ---------------------------------------------------------------- the tabular task


class TabularTask(Task):
    """The classifier of the module docstring on a table's split (with a validation split
    when one is held out)."""

    def __init__(self, split: datasets.Split, config: CompareConfig, info: dict[str, Any]) -> None:
        dtype = DTYPES[config.dtype]
        self.config, self._info = config, info
        self.x_train = torch.as_tensor(split.x_train, dtype=dtype)
        self.y_train = torch.as_tensor(split.y_train, dtype=torch.int64)
        self.x_test = torch.as_tensor(split.x_test, dtype=dtype)
        self.y_test = torch.as_tensor(split.y_test, dtype=torch.int64)
        self.has_val = split.x_val is not None
        self.x_val = torch.as_tensor(split.x_val, dtype=dtype) if split.x_val is not None else None
        self.y_val = torch.as_tensor(split.y_val, dtype=torch.int64) if split.y_val is not None else None
        self.sizes = [self.x_train.shape[1], *hidden_sizes(config.model), split.n_classes]
        b = config.batch_size
        self._batches = [
            (self.x_train[i : i + b], self.y_train[i : i + b]) for i in range(0, len(self.y_train), b)
        ]
        self.loss_fn = LOSS_FUNCTIONS[config.loss]

    def build(self, seed: int) -> Model:
        params = init_params(self.sizes, seed, DTYPES[self.config.dtype])

        def evaluate() -> tuple[float | None, float]:
            with torch.no_grad():
                correct = forward(params, self.x_test).argmax(dim=1) == self.y_test
                val = None
                if self.x_val is not None and self.y_val is not None:
                    val = float(self.loss_fn(forward(params, self.x_val), self.y_val))
            return val, float(correct.to(torch.float64).mean())

        return Model(params, lambda x, y: self.loss_fn(forward(params, x), y), evaluate)

    def batches(self, epoch: int) -> list[Batch]:
        return self._batches

    def info(self) -> dict[str, Any]:
        return self._info

    @property
    def default_target(self) -> float:
        """MSE 0.05 (every seed optimizer gets there on iris at lr 0.1; the start is 0.22 for
        three classes), cross-entropy 0.3."""
        return 0.05 if self.config.loss == "mse" else 0.3


def make_task(config: CompareConfig) -> Task:
    """The task ``config`` describes: the table's split (a validation split held out for a
    sweep, features scaled after), or the text."""
    if config.text:
        from momenta.compare import text

        return text.TextTask(config)
    dataset = datasets.load(config.data, config.target)
    split = datasets.split(dataset, config.split_seed)
    if config.sweep is not None:
        split = datasets.holdout(split, config.val_fraction, config.split_seed)
    if config.scale == "standard":
        split = datasets.standardize(split)
    info = {
        "name": dataset.name,
        "rows": len(dataset.labels),
        "features": dataset.n_features,
        "classes": list(dataset.class_names),
        "train_rows": len(split.y_train),
        "test_rows": len(split.y_test),
    }
    if split.y_val is not None:
        info["val_rows"] = len(split.y_val)
        info["val_fraction"] = config.val_fraction
    return TabularTask(split, config, info)


# ---------------------------------------------------------------- training


def default_lr(optimizer: str, text: bool = False) -> float:
    """The learning rate an optimizer gets without ``--lr``: its registry entry's (0.1, the
    classic comparison's, unless the method means something else by lr), 0.1 for torch's;
    on the text task, :data:`momenta.compare.text.LR`'s."""
    if text:
        from momenta.compare import text as text_task

        return text_task.default_lr(optimizer)
    return 0.1 if optimizer.startswith("torch:") else registry.get(optimizer).lr


def build_optimizer(name: str, hyper: Mapping[str, Any], params: list[torch.Tensor]) -> torch.optim.Optimizer:
    return registry.get(name).factory(params, **hyper)


def train(
    name: str,
    hyper: Mapping[str, Any],
    task: Task,
    config: CompareConfig,
    seed: int,
    run: Run | None = None,
    progress: bool = False,
) -> Run:
    """Train a fresh model of ``task`` with optimizer ``name`` for ``config.epochs`` epochs.

    Fills ``run`` (created if None) epoch by epoch, so an interrupt keeps finished epochs.
    With ``config.inspect`` (and a momenta optimizer) an :class:`~momenta.introspect.Inspector`
    reads the optimizer after each epoch's last step (outside the timed steps; its hook's
    copy of the weights before each step is inside them).
    """
    model = task.build(seed)
    params = model.params
    optimizer = build_optimizer(name, hyper, params)
    formulas = getattr(optimizer, "formulas", None)
    if run is None:
        run = Run(name, seed, {}, {})
    run.hyperparameters = json_safe(dict(optimizer.defaults))
    run.formulas = dict(formulas()) if callable(formulas) else {}
    inspector = None
    if config.inspect and isinstance(optimizer, Optimizer):
        inspector = Inspector(optimizer)

    sparse = takes_sparse_gradients(optimizer)

    def batch_loss(xb: torch.Tensor, yb: torch.Tensor) -> float:
        """The closure of ``optimizer.step``: loss and gradients at the current weights."""
        optimizer.zero_grad()
        loss = model.loss(xb, yb)
        loss.backward()
        if sparse:  # the same gradient, in the only form SparseAdam takes
            for p in params:
                if p.grad is not None:
                    p.grad = p.grad.to_sparse()
        return loss.item()

    elapsed = 0.0
    bar = tqdm(
        range(1, config.epochs + 1),
        desc=f"{name} (seed {seed})",
        unit="epoch",
        disable=not progress,
        leave=True,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    try:
        for epoch in bar:
            losses = []
            batches = task.batches(epoch)
            start = time.perf_counter()
            for xb, yb in batches:
                loss = optimizer.step(functools.partial(batch_loss, xb, yb))
                losses.append(float(loss))
            elapsed += time.perf_counter() - start
            val_loss, test_acc = model.evaluate()
            run.train_loss.append(sum(losses) / len(losses))
            run.test_acc.append(test_acc)
            if val_loss is not None:
                run.val_loss.append(val_loss if math.isfinite(val_loss) else math.inf)
            run.elapsed_s.append(elapsed)
            run.steps += len(batches)
            if inspector is not None:
                run.inspection.append(inspector.read().total)
            if not math.isfinite(run.train_loss[-1]):
                run.status, run.diverged_at = f"diverged at epoch {epoch}", epoch
                break
            if progress and (epoch % max(1, config.epochs // 50) == 0 or epoch == config.epochs):
                bar.set_postfix(loss=f"{run.train_loss[-1]:.4g}", acc=f"{run.test_acc[-1]:.3f}")
    except KeyboardInterrupt:
        run.status = f"interrupted at epoch {run.epochs_done + 1}"
        raise
    except Exception as e:  # an optimizer that fails at a step: record it, go on
        run.status = f"failed at epoch {run.epochs_done + 1}: {type(e).__name__}: {e}"
    finally:
        bar.close()
        if inspector is not None:
            inspector.close()
    return run


def compare(
    optimizers: Sequence[str] = SEED_OPTIMIZERS,
    *,
    lr: float | None = None,
    hyper: Mapping[str, Mapping[str, Any]] | None = None,
    epochs: int | None = None,
    batch_size: int = 32,
    seed: int = 1,
    split_seed: int = 116,
    repeats: int = 1,
    data: str = "iris",
    target: str | None = None,
    model: str | None = None,
    loss: str | None = None,
    scale: str = "none",
    dtype: str = "float32",
    inspect: bool = False,
    sweep: str | None = None,
    val_fraction: float = 0.2,
    target_loss: float | None = None,
    landscape: str | None = None,
    out: str | Path | None = None,
    format: str = "png",
    progress: bool = False,
    on_interrupt: str = "keep",
) -> CompareResult:
    """Train the same model with each optimizer and return (and, given ``out``, write) the results.

    Defaults re-create the classic experiment's setup (module docstring). ``hyper`` maps an optimizer
    name to keyword overrides, e.g. ``{"adam": {"lr": 0.01}}``. With ``out`` the files of
    ``momenta compare`` are written there (``loss.<format>``, ``accuracy.<format>``,
    ``metrics.csv``, ``summary.json``, ``report.html``). On Ctrl-C the finished epochs are kept
    and written; ``on_interrupt="raise"`` re-raises KeyboardInterrupt afterwards.

    ``inspect=True`` records m, V and the step of every optimizer each epoch
    (``run.inspection``, ``inspect.csv``, ``inspect.<format>``). ``sweep="lr=1e-3:1:5"``
    tunes one hyperparameter per optimizer on a validation split of ``val_fraction`` of the
    training rows (:mod:`momenta.compare.sweep`; ``result.sweep``). ``data="text"`` (or
    ``"text:PATH"``) trains a character-level GPT, ``model="gpt:LAYERS,WIDTH"``; its
    defaults (epochs, model, loss) are the text task's when not given. ``landscape="rosenbrock"``
    (any :data:`~momenta.compare.landscape.FUNCTIONS` name) also runs the same optimizers on
    that 2-D test function, each at the function's own lr (``result.landscape``; its files
    in ``out/landscape/``, which the report embeds and links).
    """
    text_task = data == "text" or data.startswith("text:")
    if text_task:
        from momenta.compare import text

        epochs = text.EPOCHS if epochs is None else epochs
        model = text.DEFAULT_MODEL if model is None else model
        loss = "ce" if loss is None else loss
    config = CompareConfig(
        tuple([optimizers] if isinstance(optimizers, str) else optimizers),
        lr,
        hyper or {},
        500 if epochs is None else epochs,
        batch_size,
        seed,
        split_seed,
        repeats,
        data,
        target,
        "linear" if model is None else model,
        "mse" if loss is None else loss,
        scale,
        dtype,
        inspect,
        sweep,
        val_fraction,
        target_loss,
        landscape,
    )
    return run_compare(config, out=out, format=format, progress=progress, on_interrupt=on_interrupt)


def run_compare(
    config: CompareConfig,
    *,
    out: str | Path | None = None,
    format: str = "png",
    progress: bool = False,
    on_interrupt: str = "keep",
    log: Callable[[str], None] | None = None,
) -> CompareResult:
    """:func:`compare` for a ready :class:`CompareConfig` (the command line's entry)."""
    from momenta.compare import report, timing

    choice("format", format, FORMATS)
    choice("on_interrupt", on_interrupt, ("keep", "raise"))
    config = config.validated()
    task = make_task(config)
    out_dir = report.prepare_out(out) if out is not None else None
    if log and out_dir:
        log(f"writing to {out_dir}")
    result = CompareResult(config, {}, task.info(), out=out_dir)
    result.target_loss = config.target_loss if config.target_loss is not None else task.default_target
    try:
        with one_thread():
            if config.sweep is not None:
                from momenta.compare import sweep

                result.sweep = sweep.start(config)
                sweep.run(result.sweep, task, result.results, out_dir, progress)
            else:
                for name in config.optimizers:
                    result.results[name] = OptimizerResult(name, [])
                    for seed in range(config.seed, config.seed + config.repeats):
                        run = Run(name, seed, {}, {})
                        result.results[name].runs.append(run)
                        train(name, config.hyperparameters(name), task, config, seed, run, progress)
    except KeyboardInterrupt:
        result.interrupted = True
        for r in result.results.values():
            r.runs = [run for run in r.runs if run.epochs_done]
        result.results = {k: r for k, r in result.results.items() if r.runs}
    if not result.interrupted:
        with one_thread():
            kwargs = {
                n: result.sweep.kwargs(n) if result.sweep is not None else config.hyperparameters(n)
                for n in result.results
            }
            result.step_time = timing.interleaved(task, config.seed, kwargs)
        if config.landscape is not None:
            from momenta.compare.landscape import landscape

            c = config.landscape_config()
            result.landscape = landscape(
                c.function, c.optimizers, hyper=c.hyper, out=out_dir / "landscape" if out_dir else None, format=format
            )
    if out_dir is not None:
        report.write_compare(result, out_dir, format)
    if result.interrupted and on_interrupt == "raise":
        raise KeyboardInterrupt
    return result

