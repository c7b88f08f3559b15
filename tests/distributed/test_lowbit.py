"""Low-precision optimizer state (``state_precision``) across processes, on gloo.

* DDP: every rank steps its replica with the same averaged gradients, so the replicas, and
  every rank's codes and scales, stay identical to the bit; and a distributed checkpoint
  (``get_optimizer_state_dict`` + ``dcp.save``/``dcp.load`` + ``set_optimizer_state_dict``)
  resumes exactly: a fresh model and optimizer continue as the uninterrupted run, bit for bit.
* Sharded parameters (FSDP2's DTensors, ``Shard(0)``): each rank codes its own rows. With the
  same gradients, parameters sharded over both ranks step exactly as the same parameters on a
  one-rank mesh (blocks are a row's, the random bits a row's place: the sharding does not show),
  codes and scales are DTensors placed like their parameter; FSDP2 trains, and a DCP checkpoint
  resumes bit for bit and loads into an optimizer of another precision. Tensor parallelism's
  ``Shard(1)`` is refused with a clear message.
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
    _sharded_cases(report, ctx)
    return report.result()


def _sharded_cases(report: Report, ctx: Context) -> None:
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard, distribute_tensor

    both = init_device_mesh("cpu", (ctx.world_size,))
    alone_groups = [dist.new_group([r]) for r in range(ctx.world_size)]  # every rank makes every group
    alone = DeviceMesh.from_group(alone_groups[ctx.rank], "cpu")
    # uneven rows; rows shorter than an int8 block; fewer rows than ranks (an empty shard)
    shapes = [(30, 300), (17, 260), (64, 64), (1, 4608)]
    for precision in PRECISIONS:
        with report.case(f"sharded {precision} as on one rank") as m:
            runs = []
            for mesh in (both, alone):
                gen = torch.Generator().manual_seed(0)
                params = [
                    torch.nn.Parameter(distribute_tensor(torch.randn(shape, generator=gen), mesh, [Shard(0)]))
                    for shape in shapes
                ]
                opt = momenta.AdamW(params, lr=1e-2, state_precision=precision)
                for step in range(STEPS):
                    g = torch.Generator().manual_seed(100 + step)
                    for p, shape in zip(params, shapes):
                        p.grad = distribute_tensor(torch.randn(shape, generator=g), mesh, [Shard(0)])
                    opt.step()
                runs.append((params, opt))
            (params, opt), (alone_params, alone_opt) = runs
            for i, (a, b) in enumerate(zip(params, alone_params)):
                m.check(f"parameter {i}", torch.equal(a.full_tensor(), b.full_tensor()), "differs from one rank's")
            for i, p in enumerate(params):
                state, other = opt.state[p], alone_opt.state[alone_params[i]]
                m.check(f"keys {i}", state.keys() == other.keys(), f"{sorted(state)} vs {sorted(other)}")
                for k, v in state.items():
                    if not torch.is_tensor(v) or v.dim() == 0:
                        continue
                    m.check(f"{k} {i} placed like its parameter", tuple(v.placements) == tuple(p.placements), str(v.placements))
                    m.check(f"{k} {i}", torch.equal(v.full_tensor(), other[k].full_tensor()), "differs from one rank's")
            coded = {k for k in opt.state[params[0]] if k.endswith("_codes")}
            m.check("the wide parameter is coded", bool(coded) == (precision != "bf16"), str(coded))
            narrow = {k for k in opt.state[params[2]] if k.endswith("_codes")}
            m.check("rows shorter than a block stay uncoded", not narrow, str(narrow))
    for precision in ("int8", "int4"):
        with report.case(f"FSDP2 {precision} resumes from DCP") as m:
            def model(seed: int) -> torch.nn.Module:
                torch.manual_seed(seed)
                net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))
                fully_shard(net, mesh=both)
                return net

            net = model(0)
            opt = momenta.AdamW(net.parameters(), lr=1e-2, state_precision=precision)
            _train(net, opt, ctx, range(STEPS))
            codes = [v for s in opt.state.values() for k, v in s.items() if k.endswith("_codes")]
            m.check("codes are DTensors", bool(codes) and all(type(c).__name__ == "DTensor" for c in codes), str(len(codes)))
            checkpoint = ctx.tmp / f"lowbit-fsdp-{precision}"
            dcp.save({"model": get_model_state_dict(net), "optim": get_optimizer_state_dict(net, opt)}, checkpoint_id=checkpoint)
            _train(net, opt, ctx, range(STEPS, STEPS + MORE))
            for into in (precision, "fp32"):
                # DCP loads into the keys the optimizer has: the saved precision's; another
                # precision is then a group edit, converted before the next step
                resumed = model(1)
                r_opt = momenta.AdamW(resumed.parameters(), lr=1e-2, state_precision=precision)
                sd = {"model": get_model_state_dict(resumed), "optim": get_optimizer_state_dict(resumed, r_opt)}
                dcp.load(sd, checkpoint_id=checkpoint)
                set_model_state_dict(resumed, sd["model"])
                set_optimizer_state_dict(resumed, r_opt, sd["optim"])
                for group in r_opt.param_groups:
                    group["state_precision"] = into
                if into == "fp32":  # converted at the next step (none has a gradient: nothing steps)
                    coded = {id(p): dict(s) for p, s in r_opt.state.items()}
                    r_opt.zero_grad()
                    r_opt.step()
                    for i, p in enumerate(resumed.parameters()):
                        for name in ("exp_avg", "exp_avg_sq"):
                            was, now = coded[id(p)], r_opt.state[p]
                            if f"{name}_codes" not in was:
                                continue
                            c = momenta.precision.codec(precision, name == "exp_avg")
                            whole = c.decode_rows(was[f"{name}_codes"].full_tensor(), was[f"{name}_scales"].full_tensor())
                            expected = whole[:, : p.shape[1]].reshape(p.shape)  # the whole tensor's rows, decoded at once
                            m.check(f"{name} {i} decoded", torch.equal(now[name].full_tensor(), expected), "differs")
                _train(resumed, r_opt, ctx, range(STEPS, STEPS + MORE))
                for i, (a, b) in enumerate(zip(resumed.parameters(), net.parameters())):
                    a, b = a.full_tensor(), b.full_tensor()
                    if into == precision:
                        m.check(f"resumed parameter {i}", torch.equal(a, b), f"differs by {(a - b).abs().max().item():.3g}")
                    else:  # decoded into float32 state, then steps at full precision: Adam's steps
                        # are at most about lr each
                        m.check(f"into fp32, parameter {i}", torch.allclose(a, b, atol=2 * MORE * 1e-2), f"differs by {(a - b).abs().max().item():.3g}")
                if into == precision:
                    for i, (a, b) in enumerate(zip(_state(r_opt), _state(opt))):
                        m.check(f"resumed state {i}", torch.equal(a.full_tensor(), b.full_tensor()) if a.dim() else torch.equal(a, b), str(a.dtype))
                else:
                    kinds = {k for s in r_opt.state.values() for k in s}
                    m.check("into fp32: decoded", "exp_avg" in kinds and not any(k.endswith("_codes") for k in kinds), str(kinds))
    with report.case("tensor parallel refused") as m:
        from torch.distributed.tensor import Shard

        p = torch.nn.Parameter(distribute_tensor(torch.randn(64, 128), both, [Shard(1)]))
        try:
            momenta.AdamW([p], state_precision="int8")
            m.fail("Shard(1)", "no error")
        except ValueError as error:
            m.check("message", "DTensor" in str(error) and "dim 0" in str(error), str(error))
        p = torch.nn.Parameter(distribute_tensor(torch.randn(64, 128), both, [Shard(0)]))
        try:  # Muon's step gathers each whole parameter: its state is not a shard's
            momenta.Muon([p], state_precision="int8")
            m.fail("Muon", "no error")
        except ValueError as error:
            m.check("Muon message", "DTensor" in str(error) and "not elementwise" in str(error), str(error))


CASES = [
    *(f"DDP {p}" for p in PRECISIONS),
    *(f"sharded {p} as on one rank" for p in PRECISIONS),
    "FSDP2 int8 resumes from DCP",
    "FSDP2 int4 resumes from DCP",
    "tensor parallel refused",
]


@pytest.mark.parametrize("case", CASES)
def test_low_precision_state_across_processes(case: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    results = launch.shared_run(tmp_path_factory, "lowbit-gloo", [f"{launch.PACKAGE}.test_lowbit:scenario"], timeout=240)
    launch.assert_case(results[f"{launch.PACKAGE}.test_lowbit:scenario"], case)
