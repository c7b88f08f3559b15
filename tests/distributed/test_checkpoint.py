"""Distributed checkpoints (torch.distributed.checkpoint) of momenta optimizers under FSDP2.

For every case: train a sharded model, save model and optimizer with
``get_model_state_dict``/``get_optimizer_state_dict`` and ``dcp.save``, train on
(uninterrupted). Then a fresh model (other initial weights) and a fresh optimizer load the
checkpoint with ``dcp.load`` and ``set_model_state_dict``/``set_optimizer_state_dict`` and
train the same steps: weights and state must equal the uninterrupted run's, bit for bit.
For the drop-ins, checkpoints cross over: torch.optim's optimizer resumes from momenta's
checkpoint, and momenta's from torch.optim's, each continuing as the uninterrupted run (to
RTOL: the other library from the checkpoint on).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from . import cases, launch
from .cases import CASES, Case
from .common import STEPS, Context, Report, snapshot, state_of, train
from .test_fsdp import check_state_placement, sharded_model

pytestmark = launch.POSIX_ONLY

MORE = range(STEPS, STEPS + 2)  # the steps after the checkpoint


def save_and_train_on(ctx: Context, case: Case, make, checkpoint: Path):  # type: ignore[no-untyped-def]
    """Train, checkpoint, train on; return the parameters and optimizer at the end."""
    model = sharded_model(ctx, case)
    opt = make(model)
    train(model, opt, ctx.device, ctx.rows)
    dcp.save(
        {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)},
        checkpoint_id=checkpoint,
    )
    train(model, opt, ctx.device, ctx.rows, MORE)
    return list(model.parameters()), opt


def resume(ctx: Context, case: Case, make, checkpoint: Path):  # type: ignore[no-untyped-def]
    """A fresh model (other weights) and optimizer: load the checkpoint, train on."""
    model = sharded_model(ctx, case, seed=1)
    opt = make(model)
    sd = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.load(sd, checkpoint_id=checkpoint)
    set_model_state_dict(model, sd["model"])
    set_optimizer_state_dict(model, opt, sd["optim"])
    train(model, opt, ctx.device, ctx.rows, MORE)
    return list(model.parameters()), opt


def scenario(ctx: Context) -> dict[str, list[str]]:
    report = Report()
    for number, case in enumerate(CASES):
        if case.not_with_fsdp:
            continue
        with report.case(case.name) as m:
            checkpoint = ctx.tmp / f"checkpoint-{number}"
            params, opt = save_and_train_on(ctx, case, case.make, checkpoint)
            r_params, r_opt = resume(ctx, case, case.make, checkpoint)
            check_state_placement(m, "resumed", r_params, state_of(r_opt, r_params))
            m.close("resumed params vs uninterrupted", snapshot(r_params), snapshot(params),
                    exact=True)  # fmt: skip
            m.same_state("resumed vs uninterrupted", state_of(r_opt, r_params),
                         state_of(opt, params), same_keys=True, exact=True)  # fmt: skip
            if not case.dropin or case.torch_fails_under_fsdp:
                continue
            # momenta's checkpoint resumes torch.optim's optimizer, and torch.optim's momenta's
            r_params, r_opt = resume(ctx, case, case.make_torch, checkpoint)
            m.close("torch.optim resumed from momenta's checkpoint vs uninterrupted",
                    snapshot(r_params), snapshot(params))  # fmt: skip
            m.same_state("torch.optim resumed from momenta's checkpoint vs uninterrupted",
                         state_of(r_opt, r_params), state_of(opt, params),
                         same_keys=True, scalar_dtypes=False)  # fmt: skip
            torch_checkpoint = ctx.tmp / f"checkpoint-{number}-torch"
            params, opt = save_and_train_on(ctx, case, case.make_torch, torch_checkpoint)
            r_params, r_opt = resume(ctx, case, case.make, torch_checkpoint)
            what = "momenta resumed from torch.optim's checkpoint vs uninterrupted torch.optim"
            m.close(what, snapshot(r_params), snapshot(params))
            m.same_state(what, state_of(r_opt, r_params), state_of(opt, params), same_keys=True,
                         scalar_dtypes=False)  # fmt: skip
    return report.result()


@pytest.mark.parametrize("backend", launch.BACKENDS)
@pytest.mark.parametrize("case", cases.params(skip=lambda case: case.not_with_fsdp))
def test_distributed_checkpoint_resumes_exactly(case, backend, tmp_path_factory):
    results = launch.suite_results(tmp_path_factory, "test_checkpoint", backend)
    launch.assert_case(results, case)
