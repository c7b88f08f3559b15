"""``momenta compare`` end to end: every output file, every bad input, Ctrl-C, progress bars."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import select
import shlex
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("MPLBACKEND", "Agg")

from momenta import cli, registry  # noqa: E402
from momenta.compare import experiment  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHORT = ["--epochs", "3", "--quiet"]
SUMMARY_KEYS = {
    "status",
    "final_train_loss",
    "final_test_acc",
    "best_test_acc",
    "best_epoch",
    "total_time_s",
    "time_per_step_s",
    "hyperparameters",
    "formulas",
    "diverged_at_epoch",
}


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def metrics_without_time(path):
    return [r[:4] for r in rows(path)]


def subprocess_env():
    return {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}


# ---------------------------------------------------------------- the files


def test_compare_writes_every_file(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(
        capsys,
        "compare",
        "--optimizers",
        "sgd,sgdm",
        "adam",
        "torch:Adam",
        *SHORT,
        "--out",
        str(out),
    )
    assert code == 0
    names = ["sgd", "sgdm", "adam", "torch:Adam"]
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy.png",
        "loss.png",
        "metrics.csv",
        "report.html",
        "summary.json",
    ]

    table = rows(out / "metrics.csv")
    assert table[0] == ["optimizer", "epoch", "train_loss", "test_acc", "elapsed_s"]
    assert len(table) == 1 + 4 * 3
    assert [r[0] for r in table[1:]] == [n for n in names for _ in range(3)]
    assert [int(r[1]) for r in table[1:4]] == [1, 2, 3]
    assert all(0 <= float(r[3]) <= 1 and float(r[4]) > 0 for r in table[1:])

    for plot in ["loss.png", "accuracy.png"]:
        with Image.open(out / plot) as image:
            image.load()
            assert image.format == "PNG" and image.size == (800, 500)

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["optimizers"]) == names
    for name in names:
        assert SUMMARY_KEYS <= set(summary["optimizers"][name])
    assert set(summary["optimizers"]["adam"]["formulas"]) >= {"m", "V"}
    assert summary["optimizers"]["torch:Adam"]["formulas"] == {}
    assert summary["optimizers"]["adam"]["hyperparameters"]["lr"] == 0.1
    assert summary["config"]["epochs"] == 3 and summary["dataset"]["name"] == "iris"
    assert summary["command"].startswith("momenta compare --optimizers sgd,sgdm,adam,torch:Adam")

    report = (out / "report.html").read_text()
    assert report.startswith("<!DOCTYPE html>")
    for name in names:
        assert f"<td>{name}</td>" in report
    assert report.count('src="data:image/png;base64,') == 2
    assert 'src="http' not in report and "<link" not in report  # self-contained
    assert "m = β·m + (1−β)·g" in report  # the formulas
    assert "momenta compare --optimizers sgd,sgdm,adam,torch:Adam" in report

    assert f"writing to {out}" in stdout
    for header in ["optimizer", "final loss", "best acc", "µs/step", "status"]:
        assert header in stdout
    assert all(any(line.startswith(n + " ") for line in stdout.splitlines()) for n in names)


def test_same_seed_identical_metrics_and_the_reported_command_reproduces(tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    args = [
        "compare",
        "--optimizers",
        "rmsprop,adam",
        "--set",
        "adam.beta1=0.8",
        "--lr",
        "0.05",
        "--epochs",
        "4",
        "--seed",
        "3",
        "--quiet",
    ]
    assert run(capsys, *args, "--out", str(first))[0] == 0
    command = json.loads((first / "summary.json").read_text())["command"]
    argv = shlex.split(command)
    assert argv[:2] == ["momenta", "compare"]
    assert run(capsys, *argv[1:], "--quiet", "--out", str(second))[0] == 0
    assert metrics_without_time(first / "metrics.csv") == metrics_without_time(
        second / "metrics.csv"
    )
    assert json.loads((second / "summary.json").read_text())["command"] == command


def test_repeats_svg_and_band(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = run(
        capsys,
        "compare",
        "--optimizers",
        "sgd,adam",
        "--repeats",
        "3",
        "--format",
        "svg",
        *SHORT,
        "--out",
        str(out),
    )
    assert code == 0
    assert (out / "loss.svg").read_text().lstrip().startswith("<?xml")
    assert len(rows(out / "metrics.csv")) == 1 + 2 * 3  # mean over seeds
    by_seed = rows(out / "metrics_by_seed.csv")
    assert by_seed[0] == ["optimizer", "seed", "epoch", "train_loss", "test_acc", "elapsed_s"]
    assert len(by_seed) == 1 + 2 * 3 * 3
    assert {r[1] for r in by_seed[1:]} == {"1", "2", "3"}
    assert "min–max over 3 seeds" in (out / "loss.svg").read_text()
    assert 'src="data:image/svg+xml;base64,' in (out / "report.html").read_text()


def test_other_data_models_and_losses(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = run(
        capsys,
        "compare",
        "--optimizers",
        "adam",
        "--data",
        "digits",
        "--model",
        "mlp:16",
        "--loss",
        "ce",
        "--scale",
        "standard",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        str(out),
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"]["features"] == 64 and len(summary["dataset"]["classes"]) == 10
    assert summary["optimizers"]["adam"]["final_test_acc"] > 0.5


def test_default_output_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run(capsys, "compare", "--optimizers", "sgd", "--epochs", "1", "--quiet")
    assert code == 0
    (directory,) = (tmp_path / "momenta-runs").iterdir()
    assert directory.name.startswith("compare-iris-")
    assert (directory / "report.html").exists()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optimizers", "adma"], r"Unknown optimizer 'adma'. Did you mean 'adam'?"),
        (["--optimizers", "torch:Adamm"], r"Unknown optimizer 'torch:Adamm'. Did you mean"),
        (["--lr", "0"], r"lr must be a number > 0, got 0.0"),
        (["--lr", "-1"], r"lr must be a number > 0, got -1.0"),
        (["--epochs", "0"], r"epochs must be an integer ≥ 1, got 0"),
        (["--data", "mnist"], r"unknown data set 'mnist'; known: iris, wine, digits"),
        (["--model", "mlp:a"], r"model must be 'linear' or 'mlp:H1,H2,…'"),
        (["--set", "adam.lr=0.1"], r"'adam' is not among the optimizers run"),
        (["--set", "sgd"], r"expected OPTIMIZER.PARAM=VALUE"),
        (["--set", "sgd.beta=0.9"], r"optimizer 'sgd' rejects hyperparameters"),
        (["--target", "y"], r"target 'y' only applies to data csv:PATH"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    argv = ["compare", "--optimizers", "sgd", *SHORT, "--out", str(out), *args]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert pytest.importorskip("re").search(message, err), err
    assert err.startswith("momenta compare: error: ")
    assert "Traceback" not in err
    assert not out.exists()  # checked before anything is written


def test_unknown_optimizer_lists_the_known_names(capsys):
    code, _, err = run(capsys, "compare", "--optimizers", "sgd,rmsporp", *SHORT)
    assert code == 2
    assert "Did you mean 'rmsprop'?" in err
    assert "Known: sgd, sgdm, adagrad, rmsprop, adam, momenta.SGD" in err


def test_malformed_numbers_exit_2(capsys):
    code, _, err = run(capsys, "compare", "--lr", "fast")
    assert code == 2 and "invalid float value: 'fast'" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b,c\n1,2,0\n", "target 'label': no such column in"),
        ("a,label\n1,0\n2,1\nx,0\n", "column 'a', row 3: non-numeric cell 'x'"),
        ("a,label\n1,0\nNaN,1\n", "column 'a', row 2: 'NaN' is not a finite number"),
    ],
)
def test_bad_csv(tmp_path, capsys, text, message):
    path = tmp_path / "data.csv"
    path.write_text(text)
    code, _, err = run(
        capsys,
        "compare",
        "--data",
        f"csv:{path}",
        "--target",
        "label",
        *SHORT,
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2 and message in err and "Traceback" not in err


def test_csv_without_target(tmp_path, capsys):
    path = tmp_path / "data.csv"
    path.write_text("a,label\n1,0\n")
    code, _, err = run(capsys, "compare", "--data", f"csv:{path}", *SHORT)
    assert code == 2 and "a CSV needs a target column (--target COLUMN)" in err


def test_unwritable_output_directory_fails_before_training(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(experiment, "train", no_training)
    code, _, err = run(capsys, "compare", *SHORT, "--out", str(blocker / "run"))
    assert code == 2
    assert f"cannot write to output directory '{blocker / 'run'}'" in err
    assert "Not a directory" in err


def test_divergence_is_reported_and_the_others_run(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(
        capsys,
        "compare",
        "--optimizers",
        "sgd,adam",
        "--loss",
        "ce",
        "--set",
        "sgd.lr=1e36",
        *SHORT,
        "--out",
        str(out),
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    k = summary["optimizers"]["sgd"]["diverged_at_epoch"]
    assert summary["optimizers"]["sgd"]["status"] == f"diverged at epoch {k}"
    assert summary["optimizers"]["adam"]["status"] == "ok"
    assert f"diverged at epoch {k}" in (out / "report.html").read_text()
    assert f"diverged at epoch {k}" in stdout
    table = rows(out / "metrics.csv")
    assert sum(r[0] == "adam" for r in table) == 3
    assert sum(r[0] == "sgd" for r in table) == k


def test_an_optimizer_that_raises_exits_1_after_writing_everything(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "failing", registry.Entry("failing", "helpers:FailingSGD", ""))
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "compare", "--optimizers", "failing,sgd", *SHORT, "--out", str(out))
    assert code == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimizers"]["failing"]["status"].startswith(
        "failed at epoch 1: RuntimeError: this step always fails"
    )
    assert summary["optimizers"]["sgd"]["status"] == "ok"
    assert "failed at epoch 1" in stdout and (out / "loss.png").exists()


def test_html_escapes_every_user_string(tmp_path, capsys):
    folder = tmp_path / "<img src=x onerror=alert(1)>"
    folder.mkdir()
    path = folder / "d.csv"
    path.write_text("a,b,<b>y</b>\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    out = tmp_path / "run"
    code, _, err = run(
        capsys,
        "compare",
        "--optimizers",
        "sgd,torch:SGD",
        "--data",
        f"csv:{path}",
        "--target",
        "<b>y</b>",
        "--set",
        "torch:SGD.foreach=<i>x</i>",
        *SHORT,
        "--out",
        str(out),
    )
    assert code == 0, err
    report = (out / "report.html").read_text()
    assert "<img src=x" not in report and "<b>y</b>" not in report and "<i>x" not in report
    assert "&lt;img src=x onerror=alert(1)&gt;" in report
    assert "&lt;b&gt;y&lt;/b&gt;" in report and "&lt;i&gt;x&lt;/i&gt;" in report


# ---------------------------------------------------------------- processes


def _run_on_a_terminal(args, tmp_path):
    """Run ``momenta`` with stderr on a pseudo-terminal; return what the terminal showed."""
    try:
        master, slave = pty.openpty()
    except OSError as e:  # a sandbox without /dev/ptmx
        pytest.skip(f"no pseudo-terminal here: {e}")
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24×100
    proc = subprocess.Popen(
        [sys.executable, "-m", "momenta.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        env=subprocess_env(),
    )
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed: the process ended
                break
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    return shown.decode(errors="replace")


def test_progress_bar_on_a_terminal(tmp_path):
    shown = _run_on_a_terminal(
        ["compare", "--optimizers", "sgd,adam", "--epochs", "3", "--out", str(tmp_path / "a")],
        tmp_path,
    )
    assert "sgd (seed 1)" in shown and "adam (seed 1)" in shown and "100%" in shown


def test_quiet_turns_the_progress_bar_off_on_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    args = ["compare", "--optimizers", "sgd", "--epochs", "2"]
    assert run(capsys, *args, "--out", str(tmp_path / "a"))[2].count("sgd (seed 1)") >= 1
    assert "sgd (seed 1)" not in run(capsys, *args, "--quiet", "--out", str(tmp_path / "b"))[2]


def test_ctrl_c_saves_what_finished(tmp_path):
    """Also: the module runs as a program, and progress bars stay off when stderr is a pipe."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "momenta.cli",
            "compare",
            "--optimizers",
            "sgd,adam",
            "--epochs",
            "100000",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**subprocess_env(), "PYTHONFAULTHANDLER": "1"},
        # Ctrl-C's default disposition, as in a terminal: a suite started in the background
        # of a non-interactive shell (`.ci/floor &`) ignores SIGINT, and so would the child
        # (Python installs its KeyboardInterrupt handler only where SIGINT is not ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("writing to")  # training starts now
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # where it hangs: faulthandler's tracebacks of every thread
        proc.send_signal(signal.SIGABRT)
        stdout, stderr = proc.communicate(timeout=30)
        pytest.fail(f"no exit within 120 s of Ctrl-C; its threads:\n{stderr[-6000:]}")
    assert proc.returncode == 130, stderr
    assert stderr == ""  # no traceback, and no progress bar into a pipe
    assert f"interrupted: saved what finished to {out}" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    status = summary["optimizers"]["sgd"]["status"]
    assert status.startswith("interrupted at epoch")
    done = summary["optimizers"]["sgd"]["repeats"][0]["epochs_done"]
    assert done >= 1 and len(rows(out / "metrics.csv")) == 1 + done
    assert "Run interrupted (Ctrl-C)" in (out / "report.html").read_text()
    assert (out / "loss.png").exists()


def test_no_subcommand_prints_help(capsys):
    code, out, _ = run(capsys)
    assert code == 2 and "compare" in out and "landscape" in out
    code, out, _ = run(capsys, "compare", "--help")
    assert code == 0 and "--optimizers" in out and "--repeats" in out


def test_works_when_momenta_compare_is_the_function(tmp_path, capsys, monkeypatch):
    """``momenta.compare`` re-exported as the function shadows the package attribute; the
    command line reaches its modules through ``sys.modules`` and does not care."""
    import momenta
    from momenta.compare import compare

    monkeypatch.setattr(momenta, "compare", compare, raising=False)
    assert (
        run(capsys, "compare", "--optimizers", "sgd", *SHORT, "--out", str(tmp_path / "a"))[0] == 0
    )
    code = run(
        capsys,
        "landscape",
        "--optimizers",
        "sgd",
        "--steps",
        "3",
        "--quiet",
        "--out",
        str(tmp_path / "b"),
    )[0]
    assert code == 0
