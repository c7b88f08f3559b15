"""PyTorch Lightning (pytorch-lightning==2.6.6) with momenta's optimizers, each run against
the same Trainer with torch.optim.AdamW: ``configure_optimizers`` with a OneCycleLR
scheduler dict (``interval="step"``), manual optimization, ``trainer.save_checkpoint`` +
``fit(ckpt_path=…)`` in both directions, and LightningCLI's ``--optimizer momenta.AdamW``
(with an unknown option refused by name). The tiny GPT of ``common``, float64, on CPU."""

from __future__ import annotations

import torch

import pytest

import momenta

from .common import CLOSE, assert_same_params, batch, tiny_gpt

pl = pytest.importorskip("pytorch_lightning")

STEPS, BATCHES = 4, 2  # two batches an epoch: a checkpoint at step 2 ends an epoch


def loader() -> torch.utils.data.DataLoader:
    xs, ys = zip(*(batch(i) for i in range(BATCHES)))
    data = torch.utils.data.TensorDataset(torch.cat(xs), torch.cat(ys))
    return torch.utils.data.DataLoader(data, batch_size=2, shuffle=False)


class GPTModule(pl.LightningModule):
    """The tiny GPT; ``optimizer`` builds the optimizer, with a step-wise OneCycleLR."""

    def __init__(self, optimizer: type = torch.optim.AdamW, manual: bool = False) -> None:
        super().__init__()
        self.model = tiny_gpt(dtype=torch.float64)
        self.optimizer_cls = optimizer
        self.automatic_optimization = not manual

    def training_step(self, xy, index):
        loss = self.model(*xy)
        if self.automatic_optimization:
            return loss
        opt, scheduler = self.optimizers(), self.lr_schedulers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        scheduler.step()
        return None

    def configure_optimizers(self):
        opt = self.optimizer_cls(self.model.parameters(), lr=1e-2, weight_decay=0.1)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-2, total_steps=STEPS)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def train_dataloader(self):
        return loader()


def trainer(root, **options) -> pl.Trainer:
    defaults = dict(
        max_steps=STEPS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
    )  # fmt: skip
    return pl.Trainer(**{**defaults, **options})


@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual"])
def test_configure_optimizers_with_a_step_scheduler(tmp_path, manual):
    modules = {}
    for label, cls in (("torch", torch.optim.AdamW), ("momenta", momenta.AdamW)):
        module = modules[label] = GPTModule(cls, manual=manual)
        run = trainer(tmp_path / label)
        run.fit(module)
        assert run.global_step == STEPS
    ours, theirs = modules["momenta"].optimizers(), modules["torch"].optimizers()
    assert isinstance(ours.optimizer, momenta.AdamW)
    assert ours.param_groups[0]["lr"] == theirs.param_groups[0]["lr"] != 1e-2  # the schedule moved it
    assert float(ours.optimizer.state_dict()["state"][0]["step"]) == STEPS
    assert_same_params(modules["momenta"].model, modules["torch"].model, **CLOSE)


def fit_from_half(root, first: type, then: type) -> GPTModule:
    """Two steps with ``first``, ``trainer.save_checkpoint``, then ``fit(ckpt_path=…)`` to
    step 4 with a new module whose optimizer is ``then``."""
    module = GPTModule(first)
    run = trainer(root / "first", max_steps=2)
    run.fit(module)
    path = root / "half.ckpt"
    run.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    assert sorted(saved["optimizer_states"][0]["state"][0]) == ["exp_avg", "exp_avg_sq", "step"]
    resumed = GPTModule(then)
    run = trainer(root / "then")
    run.fit(resumed, ckpt_path=path)
    assert run.global_step == STEPS and isinstance(resumed.optimizers().optimizer, then)
    assert float(resumed.optimizers().optimizer.state_dict()["state"][0]["step"]) == STEPS
    return resumed


@pytest.mark.parametrize("first, then", [("momenta", "momenta"), ("torch", "momenta"), ("momenta", "torch")])
def test_save_checkpoint_and_fit_from_it(tmp_path, first, then):
    """Compared with the same resume done with torch.optim alone (Lightning's resumed run
    differs from its uninterrupted one by ~1e-7 here, torch.optim's as much as momenta's:
    the comparison is with torch.optim under the same resume)."""
    classes = {"torch": torch.optim.AdamW, "momenta": momenta.AdamW}
    theirs = fit_from_half(tmp_path / "torch", torch.optim.AdamW, torch.optim.AdamW)
    ours = fit_from_half(tmp_path / "ours", classes[first], classes[then])
    assert_same_params(ours.model, theirs.model, **CLOSE)


class CLIModule(pl.LightningModule):
    """The tiny GPT without configure_optimizers: LightningCLI's --optimizer builds it."""

    def __init__(self) -> None:
        super().__init__()
        self.model = tiny_gpt(dtype=torch.float64)

    def training_step(self, xy, index):
        return self.model(*xy)

    def train_dataloader(self):
        return loader()


def cli(tmp_path, optimizer: str, *options: str):
    from pytorch_lightning.cli import LightningCLI

    args = [
        "fit", "--optimizer", optimizer, "--optimizer.lr", "0.01", "--optimizer.weight_decay", "0.1", *options,
        "--trainer.max_steps", str(STEPS), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    return LightningCLI(CLIModule, args=args, save_config_callback=None)


def test_lightning_cli_optimizer_class_path(tmp_path):
    ours = cli(tmp_path / "momenta", "momenta.AdamW", "--optimizer.betas", "[0.9, 0.95]")
    theirs = cli(tmp_path / "torch", "torch.optim.AdamW", "--optimizer.betas", "[0.9, 0.95]")
    opt = ours.model.optimizers().optimizer
    assert isinstance(opt, momenta.AdamW) and opt.defaults["betas"] == (0.9, 0.95)
    assert ours.trainer.global_step == STEPS
    assert_same_params(ours.model.model, theirs.model.model, **CLOSE)


def test_lightning_cli_unknown_option_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli(tmp_path, "momenta.AdamW", "--optimizer.betaz", "[0.9, 0.95]")
    assert "betaz" in capsys.readouterr().err
