"""ZeroRedundancyOptimizer(optimizer_class=momenta.X): sharded optimizer state, same numbers.

For every case and both ``parameters_as_bucket_view`` settings (with ``True``, ZeRO re-points
each ``p.data`` into its buckets *after* building the local optimizer, which an engine that
caches parameter storage must notice), a DDP model trains with ZeRO over momenta's class and
must equal ZeRO over torch.optim's class and plain DDP with momenta's optimizer.
Then ``consolidate_state_dict(to=0)``: rank 0's consolidated state_dict must be the plain
optimizer's state_dict (and, for the drop-ins, torch's ZeRO's), and a fresh ZeRO that loads
it must continue exactly as the uninterrupted one.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import pytest
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from . import cases, launch
from .cases import CASES, Case
from .common import (
    STEPS,
    Context,
    Mismatches,
    Report,
    snapshot,
    state_of,
    train,
)

if TYPE_CHECKING:  # imported by the ranks only: importing it warns (torch.jit.script) 66 times
    from torch.distributed.optim import ZeroRedundancyOptimizer

pytestmark = launch.POSIX_ONLY

MORE = range(STEPS, STEPS + 2)  # the steps after the checkpoint


def ddp(ctx: Context, case: Case, seed: int = 0) -> DDP:
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DDP(case.model(ctx.device, seed), device_ids=device_ids)


def zero(case: Case, model: DDP, lib: str, bucket_view: bool) -> ZeroRedundancyOptimizer:
    from torch.distributed.optim import ZeroRedundancyOptimizer

    if lib == "momenta":
        cls, kwargs = case.cls, case.kwargs
    else:
        cls, kwargs = case.torch_cls, case.torch_kwargs
    return ZeroRedundancyOptimizer(
        case.params(model.module), optimizer_class=cls,
        parameters_as_bucket_view=bucket_view, **kwargs,
    )  # fmt: skip


def same_state_dict(m: Mismatches, what: str, actual: dict, expected: dict, *,
                    whole: bool) -> None:  # fmt: skip
    """Two optimizer state_dicts hold the same state; ``whole``: also the same entries and
    keys, and the same param groups (not so for a seed optimizer and its torch equivalent)."""
    if whole:
        m.check(f"{what}: state indices", sorted(actual["state"]) == sorted(expected["state"]),
                f"{sorted(actual['state'])} != {sorted(expected['state'])}")  # fmt: skip
        m.check(f"{what}: param_groups", actual["param_groups"] == expected["param_groups"],
                f"{actual['param_groups']} != {expected['param_groups']}")  # fmt: skip
    both = sorted(set(actual["state"]) & set(expected["state"]))
    m.same_state(what, [actual["state"][i] for i in both], [expected["state"][i] for i in both],
                 same_keys=whole)  # fmt: skip


def key(name: str, bucket_view: bool) -> str:
    return f"{name} [parameters_as_bucket_view={bucket_view}]"


def scenario(ctx: Context) -> dict[str, list[str]]:
    report = Report()
    for case in CASES:
        if case.not_with_zero:
            continue
        plain_model = ddp(ctx, case)
        plain = case.make(plain_model.module)
        train(plain_model, plain, ctx.device, ctx.rows)
        plain_sd = plain.state_dict()
        for bucket_view in (False, True):
            with report.case(key(case.name, bucket_view)) as m:
                runs = {}
                for lib in case.libs:
                    model = ddp(ctx, case)
                    opt = zero(case, model, lib, bucket_view)
                    losses = train(model, opt, ctx.device, ctx.rows)
                    opt.consolidate_state_dict(to=0)
                    # rank 0's own shard of the consolidated state is its live state: copy
                    sd = copy.deepcopy(opt.state_dict()) if ctx.rank == 0 else None
                    runs[lib] = model, opt, losses, sd
                model, opt, losses, sd = runs["momenta"]
                params = list(model.module.parameters())
                m.close("params vs plain DDP", snapshot(params),
                        snapshot(plain_model.module.parameters()))  # fmt: skip
                if case.torch_cls:
                    t_model, t_opt, t_losses, t_sd = runs["torch"]
                    t_params = list(t_model.module.parameters())
                    m.close("losses vs torch.optim", losses, t_losses)
                    m.close("params vs torch.optim", snapshot(params), snapshot(t_params))
                    m.same_state("local state vs torch.optim", state_of(opt.optim, params),
                                 state_of(t_opt.optim, t_params),
                                 same_keys=case.dropin)  # fmt: skip
                if ctx.rank == 0:
                    same_state_dict(m, "consolidated vs plain state_dict", sd, plain_sd,
                                    whole=True)  # fmt: skip
                    if case.torch_cls:
                        same_state_dict(m, "consolidated vs torch.optim's", sd, t_sd,
                                        whole=case.dropin)  # fmt: skip
                resume(ctx, m, case, bucket_view, model, opt, sd)
    return report.result()


def resume(ctx: Context, m: Mismatches, case: Case, bucket_view: bool,
           model: DDP, opt: ZeroRedundancyOptimizer, sd: dict | None) -> None:  # fmt: skip
    """A fresh model and ZeRO optimizer loaded from the consolidated state_dict continue as
    the uninterrupted ones; for the drop-ins, so does ZeRO over torch.optim's class."""
    shared = [sd]
    dist.broadcast_object_list(shared, src=0)
    weights = copy.deepcopy(model.module.state_dict())
    train(model, opt, ctx.device, ctx.rows, MORE)
    params = list(model.module.parameters())
    for lib in ("momenta", "torch") if case.dropin else ("momenta",):
        resumed = ddp(ctx, case, seed=1)
        resumed.module.load_state_dict(weights)
        resumed_opt = zero(case, resumed, lib, bucket_view)
        resumed_opt.load_state_dict(copy.deepcopy(shared[0]))
        train(resumed, resumed_opt, ctx.device, ctx.rows, MORE)
        r_params = list(resumed.module.parameters())
        if lib == "momenta":
            m.close("resumed params vs uninterrupted", snapshot(r_params),
                    snapshot(params), exact=True)  # fmt: skip
            m.same_state("resumed state vs uninterrupted",
                         state_of(resumed_opt.optim, r_params), state_of(opt.optim, params),
                         same_keys=True, exact=True)  # fmt: skip
        else:
            m.close("resumed with torch.optim's class vs uninterrupted",
                    snapshot(r_params), snapshot(params))  # fmt: skip


#: ZeroRedundancyOptimizer(parameters_as_bucket_view=True) re-points each ``p.data`` into
#: its per-rank bucket after building the local optimizer. Here rank 0's partition is the
#: single 5x6 weight, so its bucket holds that one parameter: the fast path must see that
#: another tensor (the bucket) shares the storage and leave the parameter where it is.
def zero_params() -> list:
    out = []
    for case in cases.params():
        reason = cases.BY_NAME[case.values[0]].not_with_zero
        for bucket_view in (False, True):
            marks: list = [pytest.mark.skip(reason=reason)] if reason else []
            out.append(pytest.param(case.values[0], bucket_view, marks=[*case.marks, *marks],
                                    id=f"{case.id}-{'bucket_view' if bucket_view else 'copies'}"))
    return out


@pytest.mark.parametrize("backend", launch.BACKENDS)
@pytest.mark.parametrize(("case", "bucket_view"), zero_params())
def test_zero_redundancy_optimizer(case, bucket_view, backend, tmp_path_factory):
    results = launch.suite_results(tmp_path_factory, "test_zero", backend)
    launch.assert_case(results, key(case, bucket_view))
