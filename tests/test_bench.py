"""``momenta bench``: options, bad input, the loop benchmark end to end, the models. No timing
is asserted: only that the benchmarks run and report what they say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from momenta import cli
from momenta.bench import common, loop, step
from momenta.bench.models import PRESETS, count, param_groups
from momenta.engine import compat, flat
from momenta.bench.timing import Variant, round_robin

REPO = Path(__file__).resolve().parents[1]
LOOP_COLUMNS = [
    "model", "optimizer", "zero_grad", "step: torch default", "step: torch foreach", "step: torch fused",
    "step: momenta", "step: × torch", "iteration: torch", "iteration: momenta", "iteration: × torch",
    "momenta first step",
]  # fmt: skip
#: preset → (tensors, parameters in millions, tolerance)
SIZES = {
    "gpt-2x64": (28, 0.1, 0.03),
    "gpt-6x384": (76, 10.7, 0.05),
    "resmlp-150": (604, 0.64, 0.01),
    "gpt2-small": (148, 124.4, 0.1),
}


def _meta(name: str) -> torch.nn.Module:
    with torch.device("meta"):  # counts without allocating (gpt2-small is 124M)
        return PRESETS[name].build()


# -- options and bad input ---------------------------------------------------------------------


def test_bench_parses_loop_options():
    args = cli.build_parser().parse_args(
        ["bench", "--loop", "--models", "gpt-2x64,resmlp-150", "--optimizers", "AdamW", "--iters", "3",
         "--warmup", "1", "--zero-grad", "zeros", "--out", "x.md"]
    )  # fmt: skip
    assert (args.loop, args.models, args.optimizers, args.iters, args.warmup, args.zero_grad, args.out) == (
        True, "gpt-2x64,resmlp-150", "AdamW", 3, 1, "zeros", "x.md",
    )  # fmt: skip


def test_bench_without_loop_keeps_the_step_defaults():
    args = cli.build_parser().parse_args(["bench"])
    assert not args.loop and args.sets is None and args.rounds is None  # resolved to all SETS and 7
    assert set(step.SETS) == {"16x1M", "2000x4096", "gpt2-small"}
    assert "overhead" in step.KNOWN_SETS


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--loop", "--models", "gpt-2x64,gpt-9"], ["--models", "'gpt-9'"]),
        (["--loop", "--optimizers", "AdamW,Adamz"], ["--optimizers", "'Adamz'"]),
        (["--loop", "--iters", "0"], ["--iters", "0"]),
        (["--loop", "--warmup", "-1"], ["--warmup", "-1"]),
        (["--loop", "--zero-grad", "nan"], ["--zero-grad", "'nan'"]),
        (["--loop", "--models", ","], ["--models", "','"]),
        (["--sets", "16x1M,nope"], ["--sets", "'nope'"]),
        (["--rounds", "0"], ["--rounds", "0"]),
        (["--optimizers", "seed SGDM"], ["--optimizers", "'seed SGDM'"]),  # a loop-only case
        (["--models", "gpt-2x64"], ["--models", "--loop"]),
        (["--loop", "--rounds", "3"], ["--rounds", "without --loop"]),
    ],
)
def test_bad_input_exits_2_naming_the_argument(capsys, argv, named):
    assert cli.main(["bench", *argv]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("momenta bench: error: ") and "Traceback" not in err
    for word in named:
        assert word in err


def test_bench_loop_script_rejects_bad_input(capsys):
    with pytest.raises(SystemExit) as exit:
        loop.main(["--iters", "0"])
    assert exit.value.code == 2 and "--iters must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, written",
    [([], "results"), (["--models", "b"], None), (["--iters", "3"], None), (["--out", "chosen"], "chosen"),
     (["--models", "b", "--out", "results"], "results")],
)  # fmt: skip
def test_the_results_file_is_written_by_the_whole_default_run_alone(argv, written, tmp_path, monkeypatch, capsys):
    """A benchmarks/ script writes the results file README cites only when run with every
    option at its default (or when told to with ``--out``): a partial run prints its table
    and says the file is left as it is."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").write_text("kept")

    def add_arguments(parser, default_out):
        common.add_shared(parser, ["x"], default_out)
        parser.add_argument("--models", default=None)
        parser.add_argument("--iters", type=int, default=30)

    def run_cli(args):
        common.report("the table", args.out, "Title")
        return 0

    assert common.main(argv, "bench_x.py", "x", add_arguments, run_cli, default_out="results") == 0
    printed = capsys.readouterr()
    assert "the table" in printed.out
    assert ("results is left as it is (--out FILE writes the table)" in printed.err) == (written is None)
    if written is None:
        assert (tmp_path / "results").read_text() == "kept"
    else:
        assert (tmp_path / written).read_text() == "# Title\n\nthe table"


# -- the loop benchmark end to end -------------------------------------------------------------


def test_bench_loop_runs_end_to_end(tmp_path):
    out = tmp_path / "loop.md"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MOMENTA_COMPILE": "0"}
    argv = ["bench", "--loop", "--models", "gpt-2x64", "--optimizers", "AdamW", "--iters", "2", "--warmup", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "momenta", *argv, "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    head = next(line for line in lines if line.startswith("| model |"))
    assert [c.strip() for c in head.strip("|").split("|")] == LOOP_COLUMNS
    rows = [line for line in lines if line.startswith("| gpt-2x64 | AdamW |")]
    assert [r.split("|")[3].strip() for r in rows] == ["set_to_none=True", "set_to_none=False"]
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert len(cells) == len(LOOP_COLUMNS) and "—" not in cells  # AdamW has every torch variant
        assert cells[7].endswith("× fused") and cells[8].endswith("(fused)")
    assert "- gpt-2x64: 28 tensors" in done.stdout
    assert out.read_text().startswith("# Training-loop benchmark\n") and head in out.read_text()


def test_reference_is_fused_else_torchs_fastest():
    rmsprop = next(c for c in loop.CASES if c.name == "RMSprop")
    assert not rmsprop.has_fused and all(c.has_fused for c in loop.CASES if "RMS" not in c.name)
    row = loop.LoopRow("m", rmsprop, "none", {"torch default": 3.0, "torch foreach": 2.0, "momenta": 1.0}, {})
    assert row.reference == "torch foreach"
    row.step_ms["torch fused"] = 9.0
    assert row.reference == "torch fused"


def test_loop_variants_start_from_one_init_and_one_batch():
    torch.manual_seed(0)
    base = PRESETS["gpt-2x64"].build()
    case = next(c for c in loop.CASES if c.name == "seed Adam")  # no weight decay on either side
    batches = [PRESETS["gpt-2x64"].batch(base, torch.Generator().manual_seed(0))]
    variants = loop.variants(base, case, batches, set_to_none=True)
    assert [v.label for v in variants] == ["torch default", "torch foreach", "torch fused", "momenta"]
    for v in variants:
        assert set(v.run(0)) == {"step", "iteration"}


def test_round_robin_runs_in_lockstep_and_keeps_the_rounds_after_warmup():
    calls: list[tuple[str, int]] = []

    def make(label: str) -> Variant:
        return Variant(label, lambda i: calls.append((label, i)) or {"step": float(i)})

    variants = [make("a"), make("b")]
    round_robin(variants, rounds=2, warmup=1)
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert variants[0].first == {"step": 0.0} and variants[0].times == {"step": [1.0, 2.0]}
    assert variants[1].median_ms() == 1500.0


# -- models ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SIZES))
def test_presets_have_the_stated_sizes(name):
    tensors, millions, tolerance = SIZES[name]
    n, params = count(_meta(name))
    print(f"{name}: {n} tensors, {params / 1e6:.3f}M parameters")
    assert n == tensors and abs(params / 1e6 - millions) <= tolerance


def test_gpt2_small_is_gpt2_small():
    assert count(_meta("gpt2-small"))[1] == 124_439_808  # GPT-2 small, head tied to wte


@pytest.mark.parametrize("name", list(SIZES))
def test_param_groups_hold_every_parameter_once(name):
    model = _meta(name)
    decay, rest = param_groups(model)
    ids = [id(p) for g in (decay, rest) for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)
    assert (decay["weight_decay"], rest["weight_decay"]) == (0.1, 0.0)
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in rest["params"])


@pytest.mark.parametrize("name", ["gpt-2x64", "resmlp-150"])
def test_small_presets_train(name):
    torch.manual_seed(0)
    model = PRESETS[name].build()
    x, y = PRESETS[name].batch(model, torch.Generator().manual_seed(0))
    loss = model(x, y)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


# -- the step benchmark's overhead set ---------------------------------------------------------


def test_overhead_measures_adamw_on_small_tensors():
    us = step.measure_overhead(10, rounds=1, repeat=1)
    assert set(us) == {"torch for-loop", "torch foreach", "torch fused", "momenta"}
    table = step.overhead_table({10: us})
    assert table.startswith("| tensors × 16 elements |") and "\n| 10 |" in table


def test_others_cpu_is_a_share_of_the_cores():
    share = common.others_cpu()()
    assert share is None or share >= 0.0


def test_bench_anatomy_takes_a_step_apart(tmp_path):
    """The phases are measured, not derived from each other: each is positive, and the
    parts momenta's step is cut into add up to no more than the step."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_anatomy
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    m = bench_anatomy.measure("gpt-2x64", iters=3, warmup=2)
    assert {"momenta", "torch fused", "wrapper", "kernels", "copy", "roofline", "host"} <= m.keys()
    for phase in ("momenta", "torch fused", "wrapper", "kernels", "copy", "roofline"):
        assert m[phase] > 0, phase
    assert m["kernels"] + m["copy"] < m["momenta"]
    text = bench_anatomy.table({"gpt-2x64": m})
    assert text.startswith("| model | tensors | torch fused | momenta | vs fused |") and "| gpt-2x64 (0.12M) | 28 |" in text
    assert flat.execute.__name__ == "execute" and compat.copy_all.__name__ == "copy_all"  # wrappers removed


def test_bench_kernel_compute_updates_as_adamw_does():
    """Both compiled variants compute the same AdamW update as torch's fused kernel (to float
    rounding: the numbers-from-the-host variant rounds √c₂ once, in float64), so the timings
    compare one computation; and each reports a positive time."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_kernel_compute as bench
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    base = [torch.randn(64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    base[3] = base[3].abs()
    k = torch.tensor(bench.NUMBERS)
    results = []
    for fn in (bench.in_kernel, bench.from_host):
        p, g, m, v = (t.clone() for t in base)
        fn(p, g, m, v, k)
        results.append((p, m, v))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
    assert bench.best_us(lambda: None, calls=3, rounds=2) >= 0
