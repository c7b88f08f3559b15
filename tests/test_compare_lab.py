"""``momenta compare`` as a lab: ``--inspect`` (m, V and the step per epoch), step times
interleaved across optimizers, time to target, the report's fixes, and the text task."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest
from PIL import Image

os.environ.setdefault("MPLBACKEND", "Agg")

from momenta import cli  # noqa: E402
from momenta.compare import compare, text  # noqa: E402
from momenta.introspect import QUANTITIES  # noqa: E402

SEED_AND_MODERN = "sgd,sgdm,adagrad,rmsprop,adam,momenta.Adam,adamw,momenta.SGD,lion,muon"


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_inspect_records_every_epoch_and_the_report_shows_the_rules(tmp_path):
    out = tmp_path / "run"
    r = compare(["sgd", "rmsprop", "adam", "torch:Adam"], inspect=True, epochs=4, out=out)
    rows = _rows(out / "inspect.csv")
    assert list(rows[0]) == ["optimizer", "seed", "epoch", "numel", *QUANTITIES]
    assert [row["optimizer"] for row in rows] == [n for n in ["sgd", "rmsprop", "adam"] for _ in range(4)]
    for name in ["sgd", "rmsprop", "adam"]:
        run = r.results[name].runs[0]
        assert len(run.inspection) == 4 and all(s.numel == 15 for s in run.inspection)
        mine = [row for row in rows if row["optimizer"] == name]
        assert [float(row["m_norm"]) for row in mine] == pytest.approx([s.m_norm for s in run.inspection])
    assert r.results["torch:Adam"].runs[0].inspection == []  # torch's optimizers have no rules to read
    sgd = r.results["sgd"].runs[0].inspection[-1]
    assert sgd.sqrt_v_mean == 1.0  # V = 1
    # SGD's last update is lr·g: its rms is lr·rms(m) (m = g, the last batch's gradient)
    assert sgd.update_rms == pytest.approx(0.1 * sgd.m_rms, rel=1e-5)
    with Image.open(out / "inspect.png") as image:
        assert image.size == (1300, 750)
    report = (out / "report.html").read_text()
    assert "Inside the optimizers: m, V and the step" in report
    assert "V = β·V + (1−β)·g²" in report  # RMSProp's V rule beside the plots
    assert "Why RMSProp oscillates here and Adam does not" in report
    assert "Not read (torch.optim's classes have no rules to read): torch:Adam." in report
    assert report.count('src="data:image/png;base64,') == 3


def test_step_times_interleaved_and_time_to_target(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["compare", "--optimizers", "sgd,adam", "--epochs", "30", "--target-loss", "0.19",
                     "--quiet", "--out", str(out)])  # fmt: skip
    assert code == 0
    stdout = capsys.readouterr().out
    assert "µs/step (median, interleaved)" in stdout and "to target" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timing"]["target_loss"] == 0.19
    for name in ["sgd", "adam"]:
        s = summary["optimizers"][name]
        assert s["step_time_median_s"] > 0
        losses = [float(row["train_loss"]) for row in _rows(out / "metrics.csv") if row["optimizer"] == name]
        first = next((i + 1 for i, x in enumerate(losses) if x <= 0.19), None)
        assert s["time_to_target"]["epoch"] == first
        assert s["time_to_target"]["metric"] == "train_loss"
    assert summary["optimizers"]["adam"]["time_to_target"]["epoch"] is not None
    report = (out / "report.html").read_text()
    assert "over rounds in which every optimizer steps in turn" in report
    assert "each optimizer&#x27;s own: sgd 0.1, adam 0.1" in report  # not "lr: None"
    assert "<td>1.000</td>" in report or "<td>0." in report  # accuracies with fixed decimals


def _text_file(tmp_path, n=4000):
    words = ["the", "optimizer", "moves", "weights", "along", "m", "over", "root", "of", "V"]
    body = " ".join(words[(i * 7 + i // 3) % len(words)] for i in range(n // 5))
    path = tmp_path / "tiny.txt"
    path.write_text(body[:n] + "\n", encoding="utf-8")
    return path


def test_the_text_task_runs_every_optimizer_it_must(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "STEPS_PER_EPOCH", 8)
    path = _text_file(tmp_path)
    out = tmp_path / "run"
    r = compare(
        SEED_AND_MODERN.split(","),
        data=f"text:{path}",
        model="gpt:1,16",
        hyper={"momenta.SGD": {"momentum": 0.9}},
        epochs=2,
        batch_size=8,
        inspect=True,
        out=out,
    )
    assert list(r.results) == SEED_AND_MODERN.split(",")
    for name, result in r.results.items():
        run = result.runs[0]
        assert run.status == "ok", (name, run.status)
        assert len(run.val_loss) == 2 and all(math.isfinite(v) for v in run.val_loss), name
        assert 0 <= run.test_acc[-1] <= 1
        assert r.step_time[name] > 0
    assert r.results["muon"].runs[0].hyperparameters["lr"] == text.LR["muon"]
    assert r.results["adamw"].runs[0].hyperparameters["lr"] == text.LR["adamw"]
    first = r.results["adam"].runs[0].val_loss[0]
    assert first < math.log(len(set(path.read_text()))) + 0.5  # it learns past uniform guessing
    muon = r.results["muon"].runs[0].inspection[-1]
    assert muon.m_norm is not None and muon.update_rms is not None  # both kinds of group read
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"]["vocabulary"] == len(set(path.read_text()))
    assert summary["config"]["model"] == "gpt:1,16" and summary["config"]["loss"] == "ce"
    assert {"val_loss.png", "inspect.png", "inspect.csv"} <= {p.name for p in out.iterdir()}
    table = _rows(out / "metrics.csv")
    assert list(table[0]) == ["optimizer", "epoch", "train_loss", "test_acc", "elapsed_s", "val_loss"]
    mine = [float(row["val_loss"]) for row in table if row["optimizer"] == "adam"]
    assert mine == pytest.approx(r.results["adam"].runs[0].val_loss)


def test_the_shipped_text():
    name, body = text.load("text")
    assert name == "shakespeare" and len(body) == 63889 and body.startswith("First Citizen:")
    assert len(set(body)) == 59 and body.endswith("And pass'd him unelected.\n")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "the file is empty"),
        (b"   \n", "the file is empty"),
        (b"abc\x00def" * 200, "a binary file"),
        (b"\xff\xfe" + b"x" * 1000, "not a UTF-8 text"),
        (b"short text", "10 characters, shorter than the 650 needed"),
    ],
)
def test_bad_text_files_exit_2_with_a_message(tmp_path, capsys, content, message):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    code = cli.main(["compare", "--data", f"text:{path}", "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and str(path) in err, err


@pytest.mark.parametrize("model", ["gpt:0,16", "gpt:2", "mlp:4", "linear"])
def test_text_needs_a_gpt(tmp_path, capsys, model):
    code = cli.main(["compare", "--data", "text", "--model", model, "--quiet", "--out", str(tmp_path / "r")])
    assert code == 2 and f"got {model!r}" in capsys.readouterr().err


def test_help_states_log_or_linear(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["compare", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "log-spaced when 0 < LOW and HIGH ≥ 10·LOW, else linear" in out
    assert "--inspect" in out and "--val-fraction" in out and "text:PATH" in out


def test_many_optimizers_get_small_multiples_best_first(tmp_path):
    names = ["sgd", "sgdm", "adagrad", "rmsprop", "adam", "adamw", "adamax", "nadam", "radam", "lion", "yogi"]
    out = tmp_path / "run"
    r = compare(names, epochs=3, out=out)
    with Image.open(out / "loss.png") as image:
        assert image.size == (1200, round(100 * (2.1 * 3 + 0.6)))  # 11 panels: 3 rows of 4
    with Image.open(out / "accuracy.png") as image:
        assert image.size[0] == 1200
    assert len(r.results) == 11
