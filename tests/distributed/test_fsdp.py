"""FSDP2 (``fully_shard``): every optimizer steps sharded DTensor parameters correctly.

Each Linear layer and the root are sharded over the ranks (``Shard(0)``, unevenly: the
last layer's single row leaves rank 1 an empty shard). For every case, momenta's optimizer
and torch.optim's train identically sharded models and must agree: losses (computed from
weights FSDP all-gathers from its own sharded storage, so an optimizer writing anywhere else
is caught), local shards, and state, which must be DTensors placed like their parameter
(``step`` a plain tensor), as torch.optim's are. The parameters must stay the same DTensor
objects with the same placements and shapes, and the full weights must equal one process
training on the whole batch.

For elementwise rules each rank's update of its shard is the global update; rules that are
not (factored V, trust ratios, Muon's orthogonalisation) see each parameter whole (the
engine gathers it), and every rank keeps its shard of the result. SparseAdam is not run:
FSDP2 takes no sparse gradients (:data:`.cases.CASES`).
"""

from __future__ import annotations

import pytest
import torch
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, init_device_mesh

from . import cases, launch
from .cases import CASES, Case
from .common import (
    Context,
    Mismatches,
    Report,
    evaluate,
    full,
    snapshot,
    state_of,
    train,
)

pytestmark = launch.POSIX_ONLY


def sharded_model(ctx: Context, case: Case, seed: int = 0) -> torch.nn.Module:
    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    model = case.model(ctx.device, seed)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def layout(params: list[torch.Tensor]) -> list[tuple]:
    """What must not change: the objects, their type, placements, global and local shapes."""
    return [
        (id(p), type(p), p.placements, p.shape, p.to_local().shape, p.device_mesh)
        for p in params
    ]


#: per-parameter scalar state (0-dim, on the host like torch's): step, NAdam's mu_product,
#: ASGD's eta and mu, schedule-free's lr_max and weight_sum
SCALARS = {"step", "mu_product", "eta", "mu", "lr_max", "weight_sum"}
#: buffers shaped otherwise than their parameter (Adafactor's factored second moments)
FACTORED = {"row_var", "col_var", "exp_avg_sq_row", "exp_avg_sq_col"}


def check_state_placement(m: Mismatches, what: str, params, states) -> None:
    for i, (p, state) in enumerate(zip(params, states, strict=True)):
        for key, value in state.items():
            where = f"{what}: state[{i}][{key!r}]"
            if key in SCALARS:
                m.check(where, torch.is_tensor(value) and not isinstance(value, DTensor),
                        f"expected a plain tensor, got {type(value).__name__}")  # fmt: skip
            elif key in FACTORED:
                m.check(where, isinstance(value, DTensor) and value.device_mesh == p.device_mesh,
                        f"expected a DTensor on its parameter's mesh, got {type(value).__name__}")  # fmt: skip
            elif torch.is_tensor(value):
                m.check(where, isinstance(value, DTensor) and value.placements == p.placements
                        and value.device_mesh == p.device_mesh and value.shape == p.shape,
                        f"expected a DTensor placed like its parameter {p.placements}, got "
                        f"{type(value).__name__} {getattr(value, 'placements', '')}")  # fmt: skip


def scenario(ctx: Context) -> dict[str, list[str]]:
    report = Report()
    for case in CASES:
        if case.not_with_fsdp:
            continue
        with report.case(case.name) as m:
            one = case.model(ctx.device)  # one process, whole batches
            train(one, case.make(one), ctx.device)
            runs = {}
            for lib in case.fsdp_libs:
                model = sharded_model(ctx, case)
                params = list(model.parameters())
                before = layout(params)
                opt = case.make_with(lib, model)
                losses = train(model, opt, ctx.device, ctx.rows)
                losses.append(evaluate(model, ctx.rows, ctx.device))
                m.check(f"{lib}: DTensor parameters intact",
                        layout(list(model.parameters())) == before,
                        f"{before} became {layout(list(model.parameters()))}")  # fmt: skip
                runs[lib] = losses, params, state_of(opt, params)
            losses, params, state = runs["momenta"]
            check_state_placement(m, "momenta", params, state)
            if "torch" in runs:
                t_losses, t_params, t_state = runs["torch"]
                m.close("losses vs torch.optim", losses, t_losses)
                m.close("local shards vs torch.optim", snapshot(params), snapshot(t_params))
                m.same_state("vs torch.optim", state, t_state, same_keys=case.dropin)
            m.close("full params vs one process", [full(p).detach() for p in params],
                    [p.detach() for p in one.parameters()])  # fmt: skip
            m.close("loss after training vs one process", losses[-1],
                    evaluate(one, ctx.rows, ctx.device))  # fmt: skip
    return report.result()


@pytest.mark.parametrize("backend", launch.BACKENDS)
@pytest.mark.parametrize("case", cases.params(skip=lambda case: case.not_with_fsdp))
def test_fsdp2_matches_torch_optim(case, backend, tmp_path_factory):
    results = launch.suite_results(tmp_path_factory, "test_fsdp", backend)
    launch.assert_case(results, case)
