"""``momenta landscape`` end to end: files, terminal table, bad input."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

os.environ.setdefault("MPLBACKEND", "Agg")

from momenta import cli  # noqa: E402


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_landscape_command(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(
        capsys,
        "landscape",
        "--function",
        "quadratic",
        "--optimizers",
        "sgd,rmsprop",
        "--steps",
        "12",
        "--start=-4,1",
        "--set",
        "rmsprop.beta=0.5",
        "--format",
        "svg",
        "--quiet",
        "--out",
        str(out),
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "landscape.svg",
        "loss.svg",
        "report.html",
        "summary.json",
        "trajectory.csv",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["start"] == [-4.0, 1.0] and summary["config"]["steps"] == 12
    assert summary["optimizers"]["rmsprop"]["hyperparameters"]["beta"] == 0.5
    assert "--set rmsprop.beta=0.5" in summary["command"]
    assert f"writing to {out}" in stdout and "distance to min" in stdout
    assert any(line.startswith("rmsprop ") for line in stdout.splitlines())


def test_default_landscape_png(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, _ = run(capsys, "landscape", "--optimizers", "adam", "--steps", "5", "--quiet")
    assert code == 0
    (directory,) = (tmp_path / "momenta-runs").iterdir()
    assert directory.name.startswith("landscape-rosenbrock-")
    with Image.open(directory / "landscape.png") as image:
        assert image.size == (800, 500)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--function", "sphere"], "unknown test function 'sphere'; known: rosenbrock"),
        (["--optimizers", "adamz"], "Unknown optimizer 'adamz'."),
        (["--lr", "-1"], "lr must be a number > 0, got -1.0"),
        (["--steps", "0"], "steps must be an integer ≥ 1, got 0"),
        (["--start", "1"], "expected X,Y (two numbers), got '1'"),
    ],
)
def test_bad_input(tmp_path, capsys, args, message):
    code, _, err = run(capsys, "landscape", *args, "--out", str(tmp_path / "run"))
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
