"""Hugging Face transformers' Trainer with momenta's optimizers, each run against the same
Trainer with torch.optim.AdamW: ``optimizers=(…, None)`` with Trainer's own scheduler,
``optimizer_cls_and_kwargs`` (Trainer's decay groups), gradient accumulation and clipping
through TrainingArguments, and ``resume_from_checkpoint`` in both directions (Trainer's
``optimizer.pt`` loads with ``weights_only=True``). A tiny GPT-2 built from a config (no
downloads), float64 on CPU (see ``common.tiny_gpt`` on why float64)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import momenta

from .common import CLOSE, assert_same_params

# nothing is downloaded: the model is built from a config, and the hub is off before
# transformers (and huggingface_hub, which reads it at import) is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

LR, DECAY, STEPS = 1e-3, 0.1, 4


def gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).double()


class Tokens(torch.utils.data.Dataset):
    """16 sequences of 16 random tokens (the labels: the tokens, shifted by the model)."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        t = torch.randint(64, (16,), generator=torch.Generator().manual_seed(i))
        return {"input_ids": t, "labels": t}


def arguments(output: Path, **overrides) -> transformers.TrainingArguments:
    options = dict(
        output_dir=str(output), max_steps=STEPS, per_device_train_batch_size=2, learning_rate=LR,
        weight_decay=DECAY, warmup_steps=1, lr_scheduler_type="linear", report_to="none", use_cpu=True,
        save_strategy="no", disable_tqdm=True, seed=0, logging_steps=1000, dataloader_num_workers=0,
    )  # fmt: skip
    return transformers.TrainingArguments(**{**options, **overrides})


def train(tmp_path: Path, name: str, resume: str | None = None, model=None, **trainer) -> transformers.Trainer:
    args = trainer.pop("args", None) or arguments(tmp_path / name)
    run = transformers.Trainer(model=model or gpt2(), args=args, train_dataset=Tokens(), **trainer)
    run.train(resume_from_checkpoint=resume)
    return run


def test_optimizers_tuple_with_trainers_scheduler(tmp_path):
    runs = {}
    for label, cls in (("torch", torch.optim.AdamW), ("momenta", momenta.AdamW)):
        model = gpt2()
        opt = cls(model.parameters(), lr=LR, weight_decay=DECAY)
        runs[label] = train(tmp_path, label, model=model, optimizers=(opt, None))
    assert_same_params(runs["momenta"].model, runs["torch"].model, **CLOSE)
    assert runs["momenta"].lr_scheduler.get_last_lr() == runs["torch"].lr_scheduler.get_last_lr()
    assert runs["momenta"].state.global_step == STEPS
    assert not torch.equal(runs["momenta"].model.transformer.h[0].mlp.c_fc.weight, gpt2().transformer.h[0].mlp.c_fc.weight)


def test_optimizer_cls_and_kwargs_with_trainers_groups(tmp_path):
    runs = {}
    for label, cls in (("torch", torch.optim.AdamW), ("momenta", momenta.AdamW)):
        runs[label] = train(tmp_path, label, optimizer_cls_and_kwargs=(cls, {"betas": (0.9, 0.95), "eps": 1e-7}))
    ours, theirs = runs["momenta"].optimizer, runs["torch"].optimizer
    assert isinstance(getattr(ours, "optimizer", ours), momenta.AdamW)
    assert [g["weight_decay"] for g in ours.param_groups] == [DECAY, 0.0]  # Trainer's decay split
    assert ours.param_groups[0]["betas"] == (0.9, 0.95)
    assert_same_params(runs["momenta"].model, runs["torch"].model, **CLOSE)
    assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]


def test_gradient_accumulation_and_clipping(tmp_path):
    runs = {}
    for label, cls in (("torch", torch.optim.AdamW), ("momenta", momenta.AdamW)):
        args = arguments(tmp_path / label, gradient_accumulation_steps=2, max_grad_norm=0.05, logging_steps=1)
        runs[label] = train(tmp_path, label, args=args, optimizer_cls_and_kwargs=(cls, {}))
    assert runs["momenta"].state.global_step == STEPS  # 8 micro-batches
    assert_same_params(runs["momenta"].model, runs["torch"].model, **CLOSE)
    # clipping acted: the gradient norms Trainer logged (before clipping) exceed max_grad_norm
    norms = [float(entry["grad_norm"]) for entry in runs["momenta"].state.log_history if "grad_norm" in entry]
    assert len(norms) == STEPS and min(norms) > 0.05


@pytest.mark.parametrize("first, then", [("torch", "momenta"), ("momenta", "torch"), ("momenta", "momenta")])
def test_resume_from_checkpoint_both_directions(tmp_path, first, then):
    classes = {"torch": torch.optim.AdamW, "momenta": momenta.AdamW}
    uninterrupted = train(tmp_path, "whole", optimizer_cls_and_kwargs=(torch.optim.AdamW, {}))

    saving = arguments(tmp_path / "first", save_strategy="steps", save_steps=2)  # checkpoint-2 of 4 steps
    train(tmp_path, "first", args=saving, optimizer_cls_and_kwargs=(classes[first], {}))
    checkpoint = tmp_path / "first" / "checkpoint-2"
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)  # as Trainer loads it
    assert sorted(saved["state"][0]) == ["exp_avg", "exp_avg_sq", "step"] and saved["state"][0]["step"] == 2

    resumed = train(
        tmp_path, "then", resume=str(checkpoint), model=gpt2(), optimizer_cls_and_kwargs=(classes[then], {}),
        args=arguments(tmp_path / "then", save_strategy="steps", save_steps=2),
    )  # fmt: skip
    assert resumed.state.global_step == STEPS
    assert float(resumed.optimizer.state_dict()["state"][0]["step"]) == STEPS
    assert_same_params(resumed.model, uninterrupted.model, **CLOSE)


def test_optimizer_by_name_and_unknown_options(tmp_path):
    lion = momenta.registry.resolve("lion")
    run = train(tmp_path, "lion", optimizer_cls_and_kwargs=(lion, {"betas": (0.9, 0.99)}))
    inner = getattr(run.optimizer, "optimizer", run.optimizer)  # accelerate's wrapper, where Trainer adds one
    assert isinstance(inner, momenta.Lion) and run.state.global_step == STEPS
    assert sorted(run.optimizer.state_dict()["state"][0]) == ["exp_avg"]
    with pytest.raises(TypeError, match="betaz"):
        train(tmp_path, "bad", optimizer_cls_and_kwargs=(momenta.AdamW, {"betaz": (0.9, 0.99)}))
