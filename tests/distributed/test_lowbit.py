"""Low-precision optimizer state (``state_precision``) across processes, on gloo.

* DDP: every rank steps its replica with the same averaged gradients, so the replicas, and
  every rank's codes and scales, stay identical to the bit; and a distributed checkpoint
  (``get_optimizer_state_dict`` + ``dcp.save``/``dcp.load`` + ``set_optimizer_state_dict``)
  resumes exactly: a fresh model and optimizer continue as the uninterrupted run, bit for bit.
* FSDP2 (sharded DTensor parameters): refused at construction with a clear message, nothing
  changed (each rank's blocks would have to be its own shard's; not built yet).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel as DDP

import momenta

from . import launch
from .common import Context, Report

pytestmark = launch.POSIX_ONLY

PRECISIONS = ("int8", "int4", "bf16")
STEPS, MORE = 4, 3


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)  # weights of 8192 elements: above storage.SMALL, their state is coded
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, ctx: Context, steps: range) -> None:
    for step in steps:
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(8, 64, generator=g), torch.randn(8, 64, generator=g)
        rows = slice(ctx.rank * 4, ctx.rank * 4 + 4)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[rows]), y[rows]).backward()
        opt.step()


def _same_on_all_ranks(m: Any, what: str, tensors: list[torch.Tensor]) -> None:
    """Every rank holds the same bytes (codes compared as bytes, floats as floats)."""
    for i, t in enumerate(tensors):
        t = t.detach().reshape(-1).contiguous()
        gathered = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, t)
        m.check(f"{what} {i}", all(torch.equal(o, gathered[0]) for o in gathered), "ranks differ")


def _state(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every state tensor, in the order of the parameters and of the keys."""
    params = [p for group in opt.param_groups for p in group["params"]]
    return [v for p in params for k, v in sorted(opt.state[p].items()) if torch.is_tensor(v)]


def scenario(ctx: Context) -> dict[str, list[str]]:
    report = Report()
    for precision in PRECISIONS:
        with report.case(f"DDP {precision}") as m:
            model = DDP(_model())
            opt = momenta.AdamW(model.parameters(), lr=1e-2, state_precision=precision)
            _train(model, opt, ctx, range(STEPS))
            coded = [k for s in opt.state.values() for k in s if k.endswith("_codes")]
            m.check("the weights' state is coded", bool(coded) == (precision != "bf16"), str(coded))
            checkpoint = ctx.tmp / f"lowbit-{precision}"
            dcp.save(
                {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)},
                checkpoint_id=checkpoint,
            )
            _train(model, opt, ctx, range(STEPS, STEPS + MORE))
            _same_on_all_ranks(m, "replica", list(model.parameters()))
            _same_on_all_ranks(m, "state tensor", _state(opt))
            # a fresh model (other weights) and optimizer resume from the checkpoint
            resumed = DDP(_model(seed=1))
            r_opt = momenta.AdamW(resumed.parameters(), lr=1e-2, state_precision=precision)
            sd = {"model": get_model_state_dict(resumed), "optim": get_optimizer_state_dict(resumed, r_opt)}
            dcp.load(sd, checkpoint_id=checkpoint)
            set_model_state_dict(resumed, sd["model"])
            set_optimizer_state_dict(resumed, r_opt, sd["optim"])
            _train(resumed, r_opt, ctx, range(STEPS, STEPS + MORE))
            for i, (a, b) in enumerate(zip(resumed.parameters(), model.parameters())):
                m.check(f"resumed parameter {i}", torch.equal(a, b), f"differs by {(a - b).abs().max().item():.3g}")
            for i, (a, b) in enumerate(zip(_state(r_opt), _state(opt))):
                m.check(f"resumed state tensor {i}", a.dtype == b.dtype and torch.equal(a, b), f"{a.dtype}, {b.dtype}")
    with report.case("FSDP2 refused") as m:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        model = _model()
        fully_shard(model, mesh=init_device_mesh("cpu", (ctx.world_size,)))
        try:
            momenta.AdamW(model.parameters(), state_precision="int8")
            m.fail("FSDP2", "no error")
        except ValueError as error:
            m.check("FSDP2 message", "DTensor" in str(error) and "state_precision" in str(error), str(error))
    return report.result()


@pytest.mark.parametrize("case", [*(f"DDP {p}" for p in PRECISIONS), "FSDP2 refused"])
def test_low_precision_state_across_processes(case: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    results = launch.shared_run(tmp_path_factory, "lowbit-gloo", [f"{launch.PACKAGE}.test_lowbit:scenario"], timeout=240)
    launch.assert_case(results[f"{launch.PACKAGE}.test_lowbit:scenario"], case)
