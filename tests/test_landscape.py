"""``momenta.compare.landscape``: test functions, trajectories, files."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("MPLBACKEND", "Agg")

from momenta.compare import UsageError  # noqa: E402
from momenta.compare.landscape import FUNCTIONS, landscape, trajectory  # noqa: E402


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_minima_are_stationary_points_with_the_stated_value(name):
    fn = FUNCTIONS[name]
    points = fn.minima or ((0.0, 0.0),)  # the saddle's stationary point
    for x0, y0 in points:
        p = torch.tensor([x0, y0], dtype=torch.float64, requires_grad=True)
        f = fn.f(p[0], p[1])
        (g,) = torch.autograd.grad(f, p)
        assert g.abs().max() < 1e-4, (name, (x0, y0), g)
        if fn.f_min is not None:
            assert f.item() == pytest.approx(fn.f_min, abs=1e-9)
    x0, x1, y0, y1 = fn.bounds
    assert x0 < fn.start[0] < x1 and y0 < fn.start[1] < y1


def test_numpy_and_torch_give_the_same_values():
    for fn in FUNCTIONS.values():
        x, y = np.array([0.3, -1.2]), np.array([0.7, 2.1])
        np.testing.assert_allclose(fn.f(x, y), fn.f(torch.tensor(x), torch.tensor(y)).numpy())


def test_sgd_on_the_quadratic_is_the_closed_form():
    """f = ½x² + 10y²:  x_k = (1 − lr)ᵏ x₀,  y_k = (1 − 20·lr)ᵏ y₀."""
    fn, lr = FUNCTIONS["quadratic"], 0.09
    t = trajectory(fn, "sgd", {"lr": lr}, (-4.5, 1.5), steps=30)
    k = np.arange(31)
    np.testing.assert_allclose(t.points[:, 0], -4.5 * (1 - lr) ** k, rtol=1e-12)
    np.testing.assert_allclose(t.points[:, 1], 1.5 * (1 - 20 * lr) ** k, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(t.values, 0.5 * t.points[:, 0] ** 2 + 10 * t.points[:, 1] ** 2)
    assert t.steps == 30 and t.status == "ok"


def test_adaptive_first_step_is_lr_per_coordinate():
    """Adam and RMSProp's first step: m̂/√V̂ = g/|g| (RMSProp: g/√(0.1 g²)), whatever |g| is."""
    fn = FUNCTIONS["rosenbrock"]
    t = trajectory(fn, "adam", {"lr": 0.01}, fn.start, steps=1)
    np.testing.assert_allclose(np.abs(t.points[1] - t.points[0]), [0.01, 0.01], rtol=1e-12)


def test_divergence_stops_the_trajectory():
    fn = FUNCTIONS["rosenbrock"]
    t = trajectory(fn, "sgd", {"lr": 0.02}, fn.start, steps=100)
    assert t.status == f"diverged at step {t.diverged_at}" and t.steps < 100
    assert len(t.points) == len(t.values)
    assert np.all(np.isfinite(t.points))


def test_landscape_writes_every_file(tmp_path):
    r = landscape("beale", ["sgd", "adam", "torch:Adam"], steps=25, out=tmp_path, gif=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "landscape.gif",
        "landscape.png",
        "loss.png",
        "report.html",
        "summary.json",
        "trajectory.csv",
    ]
    for name in ["landscape.png", "loss.png"]:
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size == (800, 500)
    with Image.open(tmp_path / "landscape.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames > 10
    with open(tmp_path / "trajectory.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["optimizer", "step", "x", "y", "f"]
    assert len(table) == 1 + 3 * 26
    assert table[1][:4] == ["sgd", "0", "1.0", "1.5"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["function"]["minima"] == [[3.0, 0.5]]
    assert set(summary["optimizers"]) == {"sgd", "adam", "torch:Adam"}
    assert (
        summary["optimizers"]["adam"]["final_point"] == r.trajectories["adam"].points[-1].tolist()
    )
    assert summary["command"] == (
        "momenta landscape --function beale --optimizers sgd,adam,torch:Adam --lr 0.02 "
        "--steps 25 --start 1.0,1.5 --gif"
    )
    report = (tmp_path / "report.html").read_text()
    assert all(f"<td>{n}</td>" in report for n in ["sgd", "adam", "torch:Adam"])
    assert report.count('src="data:image/png;base64,') == 2
    assert report.count('src="data:image/gif;base64,') == 1
    assert "f = (1.5 − x + x·y)²" in report


def test_overrides_and_defaults():
    r = landscape(
        "quadratic", ["sgd", "adam"], hyper={"adam": {"lr": 0.5}}, steps=3, start=(1.0, 1.0)
    )
    assert r.config.lr == FUNCTIONS["quadratic"].lr and r.config.start == (1.0, 1.0)
    assert r.trajectories["adam"].hyperparameters["lr"] == 0.5
    np.testing.assert_allclose(r.trajectories["adam"].points[1], [0.5, 0.5])


def test_saddle_has_no_minimum_and_sgd_escapes_slowest():
    r = landscape("saddle")
    s = r.summary()["optimizers"]
    assert s["sgd"]["final_distance_to_minimum"] is None
    at_20 = {n: t.values[20] for n, t in r.trajectories.items()}
    assert at_20["sgd"] > at_20["adam"] and at_20["sgd"] > at_20["rmsprop"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"function": "sphere"}, r"unknown test function 'sphere'; known: rosenbrock, beale"),
        ({"lr": 0}, r"lr must be a number > 0, got 0"),
        ({"steps": 0}, r"steps must be an integer ≥ 1, got 0"),
        ({"start": (float("nan"), 1.0)}, r"start must be two finite numbers"),
        ({"format": "gif"}, r"format must be one of png, svg"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(UsageError, match=message):
        landscape(**kwargs)


def test_every_optimizer_walks_the_landscape():
    """``--optimizers all`` on Rosenbrock: every optimizer takes its steps (SparseAdam on
    sparse gradients) or is recorded as diverged; none fails."""
    from momenta import registry

    result = landscape("rosenbrock", ["all"], steps=5)
    assert list(result.trajectories) == registry.every()
    for name, t in result.trajectories.items():
        assert t.status == "ok" or t.status.startswith("diverged"), (name, t.status)
