"""``momenta.compare.compare``: the Python API, result objects, divergence, interrupts, errors."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")

from momenta import registry  # noqa: E402
from momenta.compare import CompareConfig, UsageError, compare, experiment  # noqa: E402
from momenta.compare.options import parse_assignment, resolve_name  # noqa: E402


def test_result_objects():
    r = compare(["sgd", "adam"], epochs=4)
    assert list(r.results) == ["sgd", "adam"]
    assert r.complete and not r.interrupted and r.out is None
    run = r.results["adam"].runs[0]
    assert run.optimizer == "adam" and run.seed == 1 and run.status == "ok"
    assert run.epochs_done == 4 and run.steps == 16
    assert len(run.train_loss) == len(run.test_acc) == len(run.elapsed_s) == 4
    assert run.elapsed_s == sorted(run.elapsed_s) and run.total_time_s > 0
    assert run.time_per_step_s == pytest.approx(run.total_time_s / 16)
    assert run.best_test_acc == max(run.test_acc)
    assert run.test_acc[run.best_epoch - 1] == run.best_test_acc
    assert run.test_acc.index(run.best_test_acc) == run.best_epoch - 1  # the first one
    assert run.hyperparameters == {"lr": 0.1, "beta1": 0.9, "beta2": 0.999, "eps": 0.0}
    assert set(run.formulas) >= {"m", "V"} and "β" in run.formulas["m"]


def test_same_seed_same_numbers_other_seed_other_numbers():
    a = compare(["sgdm", "rmsprop"], epochs=5)
    b = compare(["sgdm", "rmsprop"], epochs=5)
    c = compare(["sgdm", "rmsprop"], epochs=5, seed=2)
    for name in ["sgdm", "rmsprop"]:
        assert a.results[name].runs[0].train_loss == b.results[name].runs[0].train_loss
        assert a.results[name].runs[0].test_acc == b.results[name].runs[0].test_acc
        assert a.results[name].runs[0].train_loss != c.results[name].runs[0].train_loss


def _by_inverse_cdf(sizes: list[int], seed: int) -> list[torch.Tensor]:
    """N(0, 0.1²) truncated at ±0.2 from uniform draws: u uniform on (2Φ(−2)−1, 2Φ(2)−1),
    x = 0.1·Φ⁻¹((u+1)/2), the inverse CDF by Python's statistics.NormalDist in float64."""
    generator = torch.Generator().manual_seed(seed)
    low, high = math.erf(-2 / math.sqrt(2)), math.erf(2 / math.sqrt(2))
    normal = statistics.NormalDist(0.0, 0.1)
    out = []
    for n in sizes:
        u = low + (high - low) * torch.rand(n, generator=generator).double()
        out.append(torch.tensor([normal.inv_cdf((v + 1) / 2) for v in u.tolist()], dtype=torch.float64))
    return out


def _by_rejection(sizes: list[int], seed: int) -> list[torch.Tensor]:
    """N(0, 0.1²) truncated at ±0.2 by rejection: 0.1·z from standard normal draws (float64),
    a whole tensor's worth drawn again while any value lies outside ±0.2, kept where it did."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        x = 0.1 * torch.randn(n, generator=generator, dtype=torch.float64)
        while (outside := x.abs() > 0.2).any():
            x = torch.where(outside, 0.1 * torch.randn(n, generator=generator, dtype=torch.float64), x)
        out.append(x)
    return out


def test_init_is_truncated_normal_weights_then_biases():
    """W (4×3) then b (3) of the classic model: N(0, 0.1²) truncated at ±0.2, drawn from
    ``torch.Generator().manual_seed(1)``. The expectation is computed from that generator's
    raw draws without torch.nn.init. torch's ``trunc_normal_`` has drawn these two ways, so
    the initial weights depend on the torch version: 2.9.1 maps uniform draws through the
    inverse CDF, 2.13.0 redraws normal draws outside the bounds. ``init_params`` must give
    one of the two, to float32 rounding."""
    w, b = experiment.init_params([4, 3], seed=1, dtype=torch.float32)
    actual = torch.cat([w.detach().flatten(), b.detach()]).double()
    found = {
        method.__name__: (torch.cat(method([12, 3], seed=1)) - actual).abs().max().item()
        for method in (_by_inverse_cdf, _by_rejection)
    }
    assert min(found.values()) < 1e-7, f"largest difference from each method: {found}"
    params = experiment.init_params([4, 64, 64, 3], seed=1, dtype=torch.float64)
    assert [tuple(p.shape) for p in params] == [(4, 64), (64,), (64, 64), (64,), (64, 3), (3,)]
    assert all(p.abs().max() <= 0.2 and p.dtype == torch.float64 for p in params)


def test_torch_optimizer_side_by_side():
    """torch:SGD next to the seed's SGD: same rule, same numbers; torch has no formulas()."""
    r = compare(["sgd", "torch:SGD"], epochs=3)
    assert r.results["sgd"].runs[0].train_loss == r.results["torch:SGD"].runs[0].train_loss
    assert r.results["torch:SGD"].runs[0].formulas == {}
    assert r.summary()["optimizers"]["torch:SGD"]["hyperparameters"]["lr"] == 0.1


def test_registered_names_case_insensitively_and_overrides():
    r = compare(["Adam", "momenta.Adam", "torch:adam"], hyper={"ADAM": {"lr": 0.01}}, epochs=2)
    assert list(r.results) == ["adam", "momenta.Adam", "torch:Adam"]
    s = r.summary()["optimizers"]
    assert s["adam"]["hyperparameters"]["lr"] == 0.01
    assert s["momenta.Adam"]["hyperparameters"]["lr"] == 0.1
    assert r.config.hyper == {"adam": {"lr": 0.01}}
    assert "--set adam.lr=0.01" in r.config.command()


def test_repeats_give_mean_and_per_seed_results():
    r = compare(["sgd", "adam"], epochs=3, repeats=3)
    runs = r.results["adam"].runs
    assert [run.seed for run in runs] == [1, 2, 3]
    assert len({tuple(run.train_loss) for run in runs}) == 3
    s = r.summary()["optimizers"]["adam"]
    assert s["final_train_loss"] == pytest.approx(sum(run.train_loss[-1] for run in runs) / 3)
    assert [x["seed"] for x in s["repeats"]] == [1, 2, 3]
    assert r.results["adam"].curve("train_loss", 3).shape == (3, 3)


def test_a_diverging_run_is_recorded_and_the_others_still_run():
    r = compare(["sgd", "adam"], hyper={"sgd": {"lr": 1e36}}, loss="ce", epochs=4)
    sgd, adam = r.results["sgd"].runs[0], r.results["adam"].runs[0]
    assert sgd.status == f"diverged at epoch {sgd.diverged_at}" and sgd.diverged_at >= 1
    assert sgd.epochs_done == sgd.diverged_at
    assert not torch.isfinite(torch.tensor(sgd.train_loss[-1]))
    assert adam.status == "ok" and adam.epochs_done == 4
    assert r.summary()["optimizers"]["sgd"]["diverged_at_epoch"] == sgd.diverged_at


def test_an_optimizer_that_raises_is_recorded_and_the_others_still_run(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "failing", registry.Entry("failing", "helpers:FailingSGD", ""))
    r = compare(["failing", "sgd"], epochs=2)
    assert r.results["failing"].status.startswith("failed at epoch 1: RuntimeError: this step always fails")
    assert r.results["sgd"].runs[0].epochs_done == 2


def test_sparse_adam_gets_sparse_gradients_and_matches_torch():
    """SparseAdam refuses dense gradients: compare hands it every gradient in sparse form."""
    r = compare(["torch:SparseAdam", "momenta.SparseAdam"], hyper={"torch:SparseAdam": {"lr": 0.01}, "momenta.SparseAdam": {"lr": 0.01}}, epochs=3)
    torch_run, momenta_run = r.results["torch:SparseAdam"].runs[0], r.results["momenta.SparseAdam"].runs[0]
    assert torch_run.status == momenta_run.status == "ok"
    assert momenta_run.train_loss == pytest.approx(torch_run.train_loss, rel=1e-6)


def test_closure_optimizers_work():
    r = compare(["torch:LBFGS"], epochs=2)
    assert r.results["torch:LBFGS"].runs[0].status == "ok"


def test_models_losses_and_dtypes():
    r = compare(
        ["adam"],
        epochs=2,
        model="mlp:8,5",
        loss="ce",
        dtype="float64",
        data="wine",
        scale="standard",
    )
    run = r.results["adam"].runs[0]
    assert run.status == "ok" and run.steps == 2 * 5  # 143 training rows, batches of 32
    assert r.dataset["features"] == 13 and r.dataset["test_rows"] == 35


def test_ctrl_c_keeps_what_finished(monkeypatch, tmp_path):
    calls = {"n": 0}
    real_forward = experiment.forward

    def forward(params, x):  # each epoch: 4 batches + 1 test; call 38 = adam, epoch 3, batch 3
        calls["n"] += 1
        if calls["n"] == 38:
            raise KeyboardInterrupt
        return real_forward(params, x)

    monkeypatch.setattr(experiment, "forward", forward)
    r = compare(["sgd", "adam", "rmsprop"], epochs=5, out=tmp_path)
    assert r.interrupted and not r.complete
    assert list(r.results) == ["sgd", "adam"]
    assert r.results["sgd"].runs[0].epochs_done == 5
    adam = r.results["adam"].runs[0]
    assert adam.epochs_done == 2 and adam.status == "interrupted at epoch 3"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] is True
    with open(tmp_path / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 5 + 2
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        compare(["sgd", "adam"], epochs=5, on_interrupt="raise")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0}, r"lr must be a number > 0, got 0"),
        ({"lr": -0.1}, r"lr must be a number > 0, got -0.1"),
        ({"lr": float("nan")}, r"lr must be a number > 0, got nan"),
        ({"epochs": 0}, r"epochs must be an integer ≥ 1, got 0"),
        ({"batch_size": 0}, r"batch_size must be an integer ≥ 1, got 0"),
        ({"repeats": 0}, r"repeats must be an integer ≥ 1, got 0"),
        ({"seed": -1}, r"seed must be an integer ≥ 0, got -1"),
        ({"loss": "hinge"}, r"loss must be one of mse, ce; got 'hinge'"),
        ({"model": "mlp:0"}, r"model must be 'linear' or 'mlp:H1,H2,…'"),
        ({"model": "cnn"}, r"got 'cnn'"),
        ({"data": "mnist"}, r"unknown data set 'mnist'"),
        ({"format": "jpg"}, r"format must be one of png, svg; got 'jpg'"),
        ({"optimizers": []}, r"give at least one optimizer"),
        ({"optimizers": ["sgd", "SGD"]}, r"sgd listed twice"),
        ({"hyper": {"adam": {"lr": 0.1}}}, r"'adam' is not among the optimizers run \(sgd\)"),
        ({"hyper": {"sgd": {"lr": -1}}}, r"set sgd.lr must be a number > 0, got -1"),
        ({"hyper": {"sgd": {"momentum": 0.9}}}, r"optimizer 'sgd' rejects hyperparameters"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    kwargs = {"optimizers": ["sgd"], "epochs": 1, **kwargs}
    with pytest.raises(UsageError, match=message):
        compare(**kwargs)


def test_unknown_optimizer_suggests_the_closest_name():
    with pytest.raises(registry.UnknownOptimizerError) as e:
        compare(["adma"], epochs=1)
    assert "Did you mean 'adam'?" in str(e.value)
    assert "sgd, sgdm, adagrad, rmsprop, adam" in str(e.value)
    with pytest.raises(registry.UnknownOptimizerError, match="torch:Adam"):
        resolve_name("torch:Adamm")


def test_parse_assignment():
    assert parse_assignment("adam.lr=0.01") == ("adam", "lr", 0.01)
    assert parse_assignment("momenta.Adam.betas=(0.8, 0.9)") == (
        "momenta.Adam",
        "betas",
        (0.8, 0.9),
    )
    assert parse_assignment("torch:SGD.nesterov=True") == ("torch:SGD", "nesterov", True)
    assert parse_assignment("x.foreach=auto") == ("x", "foreach", "auto")
    for bad in ["adam", "adam=1", ".lr=1", "adam.=1", "adam.l r=1"]:
        with pytest.raises(UsageError, match="expected OPTIMIZER.PARAM=VALUE"):
            parse_assignment(bad)


def test_config_argv_names_every_option():
    c = CompareConfig(
        optimizers=("sgd", "adam"),
        lr=0.1,
        hyper={"adam": {"lr": 0.01}},
        repeats=2,
        data="csv:my data.csv",
        target="y",
    )
    command = c.command()
    for option in [
        "--optimizers sgd,adam",
        "--lr 0.1",
        "--epochs 500",
        "--batch-size 32",
        "--seed 1",
        "--split-seed 116",
        "--repeats 2",
        "--target y",
        "--model linear",
        "--loss mse",
        "--scale none",
        "--dtype float32",
        "--set adam.lr=0.01",
    ]:
        assert option in command
    assert "'csv:my data.csv'" in command  # shell-quoted


def test_each_optimizer_gets_its_own_lr_unless_told():
    """Without --lr, an optimizer whose lr means something else (Lion's sign steps, LARS's
    trust coefficient) gets its registry lr; the seed's five keep the classic 0.1."""
    c = CompareConfig(optimizers=("sgd", "lion", "lars", "torch:Adam"))
    assert [c.hyperparameters(n)["lr"] for n in c.optimizers] == [0.1, 0.01, 1.0, 0.1]
    assert "--lr" not in c.command()
    assert CompareConfig(optimizers=("lion",), lr=0.5).hyperparameters("lion")["lr"] == 0.5
    assert CompareConfig(optimizers=("lion",), hyper={"lion": {"lr": 0.2}}).hyperparameters("lion")["lr"] == 0.2


def test_all_runs_every_optimizer_once():
    from momenta.compare.options import resolve_optimizers

    names, _ = resolve_optimizers(["all"], {})
    assert names == tuple(registry.every()) and len(set(names)) == len(names)
    assert {"sgd", "adam", "lion", "adabelief", "lamb", "lars", "yogi", "schedulefree", "ademamix",
            "adafactor", "nadam", "radam", "adamax", "adadelta", "asgd", "rprop", "sparseadam", "muon"} <= set(names)


def test_compare_runs_every_optimizer_on_the_default_task():
    """``momenta compare --optimizers all``: every optimizer momenta has trains the classic
    model (SparseAdam on sparse gradients, Muon on the matrix with AdamW on the bias)."""
    r = compare(["all"], epochs=3)
    assert list(r.results) == registry.every()
    for name, result in r.results.items():
        run = result.runs[0]
        assert run.status == "ok" and run.epochs_done == 3, (name, run.status)
        assert run.train_loss[-1] < run.train_loss[0], (name, run.train_loss)
