"""DistributedDataParallel: every momenta optimizer gives torch.optim's numbers.

On each rank, for every case and every DDP layout below, two DDP models from the same
initial weights train on the rank's half of each global batch, one with momenta's optimizer,
one with torch.optim's. They must agree (losses, parameters, state),
the replicas must stay identical across ranks, and the result must equal one process
training on the whole batch (DDP averages the ranks' gradients).
"""

from __future__ import annotations

import pytest
from torch.nn.parallel import DistributedDataParallel as DDP

from . import cases, launch
from .cases import CASES
from .common import Context, Report, snapshot, state_of, train

pytestmark = launch.POSIX_ONLY

#: DDP's layouts of the gradients: copied out of its buckets, or views into them (which an
#: engine keeping flat buffers must leave alone), with all gradients in one bucket or one
#: gradient a bucket (a bucket that a single gradient fills looks like that gradient's own).
LAYOUTS = {
    "one bucket": dict(gradient_as_bucket_view=False),
    "one bucket, gradient_as_bucket_view": dict(gradient_as_bucket_view=True),
    "a bucket a gradient": dict(gradient_as_bucket_view=False, bucket_cap_mb=1e-6),
    "a bucket a gradient, gradient_as_bucket_view": dict(gradient_as_bucket_view=True,
                                                         bucket_cap_mb=1e-6),
}  # fmt: skip


def scenario(ctx: Context) -> dict[str, list[str]]:
    report = Report()
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    for case in CASES:
        with report.case(case.name) as m:
            one = case.model(ctx.device)  # one process, whole batches
            train(one, case.make(one), ctx.device)
            for tag, layout in LAYOUTS.items():
                runs = {}
                for lib in case.libs:
                    model = DDP(case.model(ctx.device), device_ids=device_ids, **layout)
                    opt = case.make_with(lib, model.module)
                    losses = train(model, opt, ctx.device, ctx.rows)
                    params = list(model.module.parameters())
                    runs[lib] = losses, params, state_of(opt, params)
                losses, params, state = runs["momenta"]
                if case.torch_cls:
                    t_losses, t_params, t_state = runs["torch"]
                    m.close(f"{tag}: losses vs torch.optim", losses, t_losses)
                    m.close(f"{tag}: params vs torch.optim", snapshot(params), snapshot(t_params))
                    m.same_state(f"{tag}: vs torch.optim", state, t_state, same_keys=case.dropin)
                m.close(f"{tag}: params vs one process", snapshot(params),
                        snapshot(one.parameters()))  # fmt: skip
                m.same_on_all_ranks(f"{tag}: replicas", params)
    return report.result()


@pytest.mark.parametrize("backend", launch.BACKENDS)
@pytest.mark.parametrize("case", cases.params())
def test_ddp_matches_torch_optim(case, backend, tmp_path_factory):
    results = launch.suite_results(tmp_path_factory, "test_ddp", backend)
    launch.assert_case(results, case)
