"""``momenta compare --sweep``: the values, the validation split, the choice, the files, bad
input, divergence and Ctrl-C."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from momenta import cli  # noqa: E402
from momenta.compare import UsageError, compare, experiment, sweep, sweep_report  # noqa: E402
from momenta.compare import data as datasets  # noqa: E402


def test_values_log_when_the_range_spans_ten_times_else_linear():
    assert sweep.parse("lr=1e-3:1:4").values() == pytest.approx([1e-3, 1e-2, 1e-1, 1.0])
    assert sweep.parse("lr=1e-3:1:4").scale == "log"
    s = sweep.parse("betas.0=0.8:0.99:3")
    assert (s.param, s.scale) == ("betas.0", "lin") and s.values() == pytest.approx([0.8, 0.895, 0.99])
    assert sweep.parse("lr=lin:0.001:1:2").values() == pytest.approx([0.001, 1.0])
    assert sweep.parse("momentum=log:0.5:0.9:2").values() == pytest.approx([0.5, 0.9])
    assert sweep.parse("lr=-1:1:3").scale == "lin"


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr=1:0:3", "LOW must be < HIGH, got LOW=1, HIGH=0"),
        ("lr=0.1:0.1:3", "LOW must be < HIGH"),
        ("lr=1e-3:1:1", "N must be ≥ 2, got 1"),
        ("lr=log:0:1:3", "a log scale needs LOW > 0, got 0"),
        ("lr=a:1:3", "expected lr=[log:|lin:]LOW:HIGH:N"),
        ("lr", "expected PARAM=LOW:HIGH:N"),
        ("lr=1:2:3.5", "expected lr=[log:|lin:]LOW:HIGH:N"),
    ],
)
def test_bad_sweeps_name_the_value(text, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("|", r"\|")) as e:
        sweep.parse(text)
    assert text in str(e.value)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sweep", "lr=1:0:3"], "sweep 'lr=1:0:3': LOW must be < HIGH"),
        (["--sweep", "lr=1e-3:1:1"], "N must be ≥ 2, got 1"),
        (["--optimizers", "sgdm,momenta.SGD", "--sweep", "momentum=0.8:0.99:2"],
         "sweep momentum: optimizer 'sgdm' has no hyperparameter 'momentum'"),
        (["--optimizers", "adamw", "--sweep", "betas.2=0.8:0.9:2"], "'betas' of optimizer 'adamw' is"),
        (["--optimizers", "adam", "--sweep", "beta1=0.9:1.5:2"], "sweep beta1=1.5: optimizer 'adam' rejects it"),
        (["--sweep", "lr=1e-3:1:2", "--val-fraction", "0.7"], "val_fraction must be a number in (0, 0.5], got 0.7"),
        (["--sweep", "lr=1e-3:1:2", "--val-fraction", "0"], "val_fraction must be a number in (0, 0.5], got 0.0"),
    ],
)  # fmt: skip
def test_bad_sweep_on_the_command_line_exits_2_and_trains_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    code = cli.main(["compare", *args, "--epochs", "1", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not out.exists()


def test_the_validation_split_is_disjoint_stratified_and_drawn_once():
    data = datasets.load("iris")
    s = datasets.split(data, 116)
    held = datasets.holdout(s, 0.2, 116)
    assert held.x_val is not None and held.y_val is not None
    assert len(held.y_train) + len(held.y_val) == len(s.y_train)
    rows = {tuple(r) for r in s.x_train.tolist()}
    train, val = {tuple(r) for r in held.x_train.tolist()}, {tuple(r) for r in held.x_val.tolist()}
    assert train | val == rows and not train & val  # iris' 120 training rows are distinct here
    for c in range(3):  # each class's share: round(count · 0.2)
        assert (held.y_val == c).sum() == round((s.y_train == c).sum() * 0.2)
    assert np.array_equal(held.x_test, s.x_test)  # the test rows are untouched
    again = datasets.holdout(s, 0.2, 116)
    assert np.array_equal(again.x_val, held.x_val)
    assert not np.array_equal(datasets.holdout(s, 0.2, 7).x_val, held.x_val)
    scaled = datasets.standardize(held)  # statistics of the training rows only
    assert np.allclose(scaled.x_train.mean(axis=0), 0) and not np.allclose(scaled.x_val.mean(axis=0), 0)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_best_value_is_the_argmin_of_the_mean_validation_loss(tmp_path):
    out = tmp_path / "run"
    r = compare(["sgd", "adam"], sweep="lr=0.01:1:2", repeats=2, epochs=2, out=out)
    rows = _rows(out / "sweep.csv")
    assert list(rows[0]) == sweep.CSV_HEADER
    assert len(rows) == 2 * 2 * 2
    assert r.sweep is not None
    summary = json.loads((out / "summary.json").read_text())
    for name in ["sgd", "adam"]:
        mine = [row for row in rows if row["optimizer"] == name]
        means = {}
        for value in {float(row["value"]) for row in mine}:
            losses = [float(row["final_val_loss"]) for row in mine if float(row["value"]) == value]
            assert len(losses) == 2
            means[value] = sum(losses) / 2
        best = min(means, key=means.get)
        assert r.sweep.best(name) == pytest.approx(best)
        chosen = summary["sweep"]["optimizers"][name]["best"]
        assert chosen["value"] == pytest.approx(best)
        assert chosen["at_edge"] == ("low" if best == min(means) else "high")  # two values: both edges
        assert chosen["val_loss_mean"] == pytest.approx(means[best])
        accs = [float(row["test_acc"]) for row in mine if float(row["value"]) == best]
        assert chosen["test_acc_mean"] == pytest.approx(np.mean(accs))
        assert chosen["test_acc_std"] == pytest.approx(np.std(accs, ddof=1))
        assert len(summary["sweep"]["optimizers"][name]["points"]) == 4
        # the runs reported are the chosen value's, every seed
        runs = r.results[name].runs
        assert [run.seed for run in runs] == [1, 2]
        assert all(run.hyperparameters["lr"] == pytest.approx(best) for run in runs)
        assert all(len(run.val_loss) == 2 for run in runs)
    assert summary["sweep"]["ranking"] == sorted(
        ["sgd", "adam"], key=lambda n: summary["sweep"]["optimizers"][n]["best"]["val_loss_mean"]
    )
    assert summary["dataset"]["val_rows"] == 24 and summary["dataset"]["train_rows"] == 96
    assert {"sensitivity.png", "val_loss.png", "sweep.csv"} <= {p.name for p in out.iterdir()}
    report = (out / "report.html").read_text()
    assert "Same budget for every optimizer" in report and "2 values of lr" in report
    assert "2 seed(s) × 2 epochs = 4 runs" in report


def test_a_best_value_inside_the_grid_is_not_at_its_edge():
    config = experiment.CompareConfig(optimizers=["sgd"], sweep="lr=0.01:1:3", repeats=1)
    result = sweep.SweepResult(sweep.parse("lr=0.01:1:3"), config)

    def point(value: float, loss: float) -> sweep.Point:
        run = experiment.Run("sgd", 1, {"lr": value}, {}, train_loss=[loss], val_loss=[loss], test_acc=[1.0])
        return sweep.Point("sgd", value, 1, run)

    for losses, edge in (([3.0, 1.0, 2.0], None), ([1.0, 2.0, 3.0], "low"), ([3.0, 2.0, 1.0], "high")):
        result.points = [point(v, loss) for v, loss in zip(result.spec.values(), losses)]
        assert result.best_summary("sgd")["at_edge"] == edge
        cell = sweep_report.ranking_rows(result)[0][2]
        assert ("edge" in cell) == (edge is not None), cell


def test_an_element_of_betas(tmp_path):
    out = tmp_path / "run"
    r = compare(["adamw"], sweep="betas.0=0.5:0.9:2", loss="ce", epochs=2, out=out)
    assert r.sweep is not None
    rows = _rows(out / "sweep.csv")
    adamw = [row for row in rows if row["optimizer"] == "adamw"]
    assert [float(row["value"]) for row in adamw] == pytest.approx([0.5, 0.9])
    betas = [run.hyperparameters["betas"] for run in r.results["adamw"].runs]
    assert betas[0][0] == pytest.approx(r.sweep.best("adamw")) and betas[0][1] == 0.999
    # sgd has no betas: the check happens before anything trains
    with pytest.raises(UsageError, match="optimizer 'sgd' has no hyperparameter 'betas'"):
        compare(["sgd"], sweep="betas.0=0.5:0.9:2", epochs=1)


def test_diverged_points_are_recorded_and_an_optimizer_whose_every_point_diverged_is_reported(tmp_path):
    r = compare(["adam"], sweep="lr=lin:0.1:1e36:2", loss="ce", epochs=3)
    assert r.sweep is not None
    assert r.sweep.status("adam") == "1 of 2 points diverged" and r.sweep.best("adam") == 0.1
    assert [p.diverged for p in r.sweep.points] == [False, True]
    out = tmp_path / "run"
    r = compare(["sgd", "adam"], sweep="lr=1e36:1e38:2", loss="ce", epochs=3, out=out)
    assert r.sweep is not None
    assert r.sweep.best("sgd") is None and r.sweep.status("sgd") == "every point diverged"
    rows = [row for row in _rows(out / "sweep.csv") if row["optimizer"] == "sgd"]
    assert len(rows) == 2 and all(row["diverged"] == "1" for row in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sweep"]["optimizers"]["sgd"]["best"] is None
    assert summary["sweep"]["optimizers"]["sgd"]["status"] == "every point diverged"
    assert "every point diverged" in (out / "report.html").read_text()


def test_ctrl_c_keeps_every_finished_point(tmp_path, monkeypatch):
    calls = []
    real = experiment.train

    def train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "train", train)
    out = tmp_path / "run"
    r = compare(["sgd"], sweep="lr=0.01:1:3", epochs=2, out=out)
    assert r.interrupted
    rows = _rows(out / "sweep.csv")
    assert [float(row["value"]) for row in rows] == pytest.approx([0.01, 0.1])
    assert r.sweep is not None and len(r.sweep.points) == 2
    assert r.results["sgd"].runs[0].hyperparameters["lr"] == pytest.approx(r.sweep.best("sgd"))


def test_time_to_target_is_the_first_epoch_at_or_below_it():
    run = experiment.Run("x", 1, {}, {}, train_loss=[0.3, 0.1, 0.04, 0.02], elapsed_s=[1.0, 2.0, 3.0, 4.0])
    from momenta.compare import timing

    result = experiment.OptimizerResult("x", [run])
    assert timing.time_to_target(result, 0.05) == {"epoch": 3, "seconds": 3.0, "metric": "train_loss"}
    assert timing.time_to_target(result, 0.01)["epoch"] is None
    run.val_loss = [0.5, 0.4, 0.3, math.inf]
    assert timing.time_to_target(result, 0.35) == {"epoch": 3, "seconds": 3.0, "metric": "val_loss"}
