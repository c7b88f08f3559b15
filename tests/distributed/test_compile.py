"""torch.compile: a compiled DDP training step (forward, backward, ``step``, ``zero_grad``)
that calls a momenta optimizer works and matches the same step run eagerly, and torch.optim.

Compiling a step costs ~5-15 s per optimizer here (dynamo traces the engine's Python), so two
cases cover the two kinds of step: a buffer born at the first step with a constant learning
rate (SGD with momentum), and a learning rate that depends on the step (Adam's bias
corrections). Each compiles twice (``torch._dynamo.reset()`` in between), as a second run of
a script would: the second compile finds Inductor's caches warm.

Tolerance: compiled and eager momenta agree to RTOL. The reference is eager torch.optim, not
compiled torch.optim, whose bias corrections come from the float32 ``step`` tensor when
compiled (it differs from its own eager step by ~1e-7).
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from . import cases, launch
from .cases import BY_NAME
from .common import STEPS, Context, Report, loss_of, make_model, snapshot, state_of, train

pytestmark = launch.POSIX_ONLY

PLAIN = ["SGD(momentum, nesterov, weight_decay)"]
BIAS_CORRECTED = ["Adam"]
DIMS = (6, 3, 1)  # few parameters: a step compiles to a few graphs per parameter shape


def compiled_train(model, opt, ctx: Context) -> list[float]:
    def step(n: int) -> torch.Tensor:
        loss = loss_of(model, n, ctx.rows, ctx.device)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    compiled = torch.compile(step)
    return [compiled(n).item() for n in range(STEPS)]


def scenario(ctx: Context, names: list[str]) -> dict[str, list[str]]:
    report = Report()
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    for name in names:
        case = BY_NAME[name]
        with report.case(name) as m:
            runs = {}
            for kind in ["compiled", "compiled again", "eager", *case.libs[1:]]:
                model = DDP(make_model(ctx.device, dims=DIMS), device_ids=device_ids)
                opt = case.make_with("torch" if kind == "torch" else "momenta", model.module)
                if kind.startswith("compiled"):
                    torch._dynamo.reset()  # compiles anew: what a second run of a script does
                    losses = compiled_train(model, opt, ctx)
                else:
                    losses = train(model, opt, ctx.device, ctx.rows)
                params = list(model.module.parameters())
                runs[kind] = losses, snapshot(params), state_of(opt, params)
            for compiled in ("compiled", "compiled again"):
                losses, params, state = runs[compiled]
                for kind in ("eager", "torch") if case.torch_cls else ("eager",):
                    k_losses, k_params, k_state = runs[kind]
                    m.close(f"{compiled} vs {kind}: losses", losses, k_losses)
                    m.close(f"{compiled} vs {kind}: params", params, k_params)
                    m.same_state(f"{compiled} vs {kind}", state, k_state,
                                 same_keys=kind == "eager" or case.dropin)  # fmt: skip
    return report.result()


#: Bias-corrected optimizers make the step size a function of the step count. Under
#: torch.compile, ``t = float(state["step"])`` is a graph break and ``t`` a symbolic float;
#: torch 2.13's FX graph / AOTAutograd caches can serve a graph with a stale ``alpha=`` baked
#: in (``p.add_(d * t, alpha=1 / t)`` shows it without momenta), so ``reference.update``
#: moves the parameter by tensor arithmetic while compiling. These cases guard that.
CASES = PLAIN + BIAS_CORRECTED


@pytest.mark.parametrize("backend", launch.BACKENDS)
@pytest.mark.parametrize(
    "case", cases.params(CASES)
)
def test_compiled_training_step(case, backend, tmp_path_factory):
    scenario = f"{launch.PACKAGE}.test_compile:scenario"
    results = launch.shared_run(tmp_path_factory, f"compile-{backend}", [scenario],
                                timeout=150, backend=backend, names=CASES)[scenario]  # fmt: skip
    launch.assert_case(results, case)
