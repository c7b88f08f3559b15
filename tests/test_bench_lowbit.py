"""The low-precision-state benchmarks run at a tiny size and report what they say: the accuracy
script's integrated rows (``momenta.AdamW(state_precision=…)`` on replayed gradients) and the
quality script's table (every optimizer at every precision on the text task). No timing is
asserted; the kernels run eagerly (no compilation), so each test takes seconds."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from momenta.engine import kernels

REPO = Path(__file__).resolve().parents[1]


def _bench(name: str) -> ModuleType:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def _rows(out: str, head: str) -> tuple[list[str], dict[str, list[str]]]:
    """The markdown table of ``out`` whose header starts with ``head``: (header, rows by label)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[start:]]
    header, body = cells[0], []
    for row in cells[2:]:
        if len(row) != len(header):
            break
        body.append(row)
    return header, {r[0] if head != "| optimizer |" else f"{r[0]} / {r[1]}": r for r in body}


@pytest.fixture
def eager(monkeypatch):
    """The fast path without compilation (its warning saying so is expected)."""
    monkeypatch.setattr(kernels.config, "compile", False)


pytestmark = pytest.mark.filterwarnings("ignore:momenta. compiled kernels are off:RuntimeWarning")


def test_accuracy_script_reports_the_integrated_optimizer(eager, capsys):
    bench = _bench("bench_lowbit_accuracy")
    bench.main(["--steps", "3", "--no-speed", "--no-libraries"])
    header, rows = _rows(capsys.readouterr().out, "| states |")
    assert header == ["states", "drift, mlp", "drift, wide"]
    drifts = {label: [float(x) for x in r[1:]] for label, r in rows.items()}
    fast = {p: f"momenta.AdamW(state_precision={p!r}), fast path" for p in ("bf16", "int8", "int4")}
    loop = {p: f"momenta.AdamW(state_precision={p!r}), for-loop" for p in ("bf16", "int8", "int4")}
    assert {"momenta.AdamW(), fast path", *fast.values(), *loop.values()} <= drifts.keys()
    assert all(math.isfinite(x) for d in drifts.values() for x in d)
    fp32 = drifts["momenta.AdamW(), fast path"]
    for stream in range(2):
        assert fp32[stream] < 1e-4  # float32 state: the reference's numbers up to rounding
        for p in ("bf16", "int8", "int4"):
            assert drifts[fast[p]][stream] > 10 * fp32[stream], p  # the precision took effect
        for p in ("int8",):  # the engine's codes are the harness's (int4's round stochastically)
            harness = next(v for k, v in drifts.items() if k.startswith(f"harness {p} "))
            for path in (fast, loop):
                assert drifts[path[p]][stream] == pytest.approx(harness[stream], rel=1e-2), (p, stream)


def test_accuracy_bar_reads_meets_and_misses_off_the_rows():
    bench = _bench("bench_lowbit_accuracy")
    rows = [(bench.INT8, [0.1, 0.5]), ("bitsandbytes AdamW8bit", [0.2, 0.4]), (bench.INT4, [0.3, 0.3])]
    text = bench.bar_table(["mlp", "wide"], rows)
    assert text.splitlines()[0] == "| bar | mlp | wide |"
    assert "| momenta int8 vs bitsandbytes AdamW8bit | 0.1 vs 0.2: 0.50×, meets | 0.5 vs 0.4: 1.25×, misses |" in text
    assert "torchao" not in text  # no bar without both rows
    assert bench.bar_table(["mlp"], [(bench.INT8, [0.1])]) == ""


def test_accuracy_bar_names_the_libraries_rows():
    """The bars compare against the rows ``libraries()`` makes (a renamed row would silently
    drop its bar)."""
    bench = _bench("bench_lowbit_accuracy")
    names = {label for label, _ in bench.libraries()}
    for _, theirs in bench.BARS:
        lib = "bitsandbytes" if theirs.startswith("bitsandbytes") else "torchao"
        if importlib.util.find_spec(lib) is None:
            continue
        assert theirs in names


def test_quality_script_runs_every_optimizer_at_every_precision(eager, capsys):
    bench = _bench("bench_lowbit_quality")
    bench.main(["--steps", "3", "--model", "gpt:1,64", "--eval-every", "1", "--last", "2"])
    out = capsys.readouterr().out
    assert "GPT 1 × 64 (" in out and "3 steps" in out
    header, rows = _rows(out, "| optimizer |")
    assert header == [
        "optimizer", "state_precision", "state bytes / parameter", "train loss", "Δ train", "val loss", "Δ val",
    ]  # fmt: skip
    assert len(rows) == 4 * 5
    for name in ("AdamW", "Lion", "SGD momentum 0.9", "Adagrad"):
        base = rows[f"{name} / fp32 (default)"]
        assert base[4] == base[6] == "—"
        size = {p: float(rows[f"{name} / {p}"][2]) for p in ("bf16", "int8", "int4")}
        assert float(base[2]) > size["bf16"] > size["int8"] > size["int4"] > 0, name  # state_precision took effect
        for label in ("bf16", "int8", "int4", bench.YARDSTICK):
            r = rows[f"{name} / {label}"]
            assert math.isfinite(float(r[3])) and math.isfinite(float(r[5])), (name, label)
            assert float(r[4]) == pytest.approx(float(r[3]) - float(base[3]), abs=2e-4)
            assert float(r[6]) == pytest.approx(float(r[5]) - float(base[5]), abs=2e-4)


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--optimizers", "AdamW,Adamz"], "--optimizers"),
        (["--steps", "0"], "--steps must be at least 1, got 0"),
        (["--model", "gpt:two"], "--model"),
    ],
)
def test_quality_script_refuses_bad_input(capsys, argv, named):
    bench = _bench("bench_lowbit_quality")
    with pytest.raises(SystemExit) as exit:
        bench.main(argv)
    assert exit.value.code == 2 and named in capsys.readouterr().err


def test_quality_table_pairs_each_seed_with_its_own_float32_run():
    bench = _bench("bench_lowbit_quality")

    def run(precision: str, seed: int, train: float, val: float) -> object:
        return bench.Run("AdamW", precision, seed, train=[9.0, train], val=[(1, 9.0), (2, val)], state_bytes=1.0)

    runs = {
        ("AdamW", "fp32", 1): run("fp32", 1, 2.0, 3.0),
        ("AdamW", "int8", 1): run("int8", 1, 2.1, 3.3),
        ("AdamW", "fp32", 2): run("fp32", 2, 1.0, 2.0),
        ("AdamW", "int8", 2): run("int8", 2, 0.9, 2.1),
        ("AdamW", "fp32", 3): run("fp32", 3, 1.5, 2.0),
    }
    _, rows = _rows(bench.table(runs, [1, 2], window=1, last=1), "| optimizer |")
    assert rows["AdamW / fp32 (default)"][3:] == ["1.5000", "—", "2.5000", "—"]
    assert rows["AdamW / int8"][3:] == ["1.5000", "+0.0000 [-0.1000, +0.1000]", "2.7000", "+0.2000 [+0.1000, +0.3000]"]
    # seed + 1 against seed: fp32(2) − fp32(1) and fp32(3) − fp32(2)
    assert rows[f"AdamW / {bench.YARDSTICK}"][3:] == [
        "1.2500", "-0.2500 [-1.0000, +0.5000]", "2.0000", "-0.5000 [-1.0000, +0.0000]",
    ]  # fmt: skip
