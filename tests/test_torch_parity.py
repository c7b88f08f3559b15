"""momenta's drop-ins give torch.optim's numbers on every CPU configuration of torch's own
optimizer test database: float64 to rounding (rtol 1e-9), float32 to float32 rounding; with
and without foreach/fused; lr as a float and as a tensor; real and complex parameters.
Muon's float32 configurations also run longer, on larger matrices (its bfloat16
Newton–Schulz magnifies any difference in rounding).
"""

from __future__ import annotations

import copy
import inspect
import re
from typing import Any

import pytest
import torch
from harness import Harness, harness
from helpers import assert_states_close
from torch_db import INFO, NAMES, cpu_configs, pair

import momenta

TOLERANCE = {
    torch.float64: dict(rtol=1e-9, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
}
#: float64 with a tensor lr, for the optimizers whose step size torch rounds to float32
#: then (``Harness.float32_scalars``): 7 steps of ≤ 0.01 off by ≤ 2⁻²⁴ of themselves
FLOAT32_STEP_SIZE = dict(rtol=1e-9, atol=1e-8)
STEPS = 7
#: With a float32 tensor lr, torch's for-loop and foreach implementations of these round the
#: step size differently from each other (lr·coefficient kept in float32 by one, taken in
#: double by the other: up to ~1e-7 of a step apart). momenta rounds one way for every flag,
#: and is compared, to float64 rounding, with the implementation that rounds as it does
#: (the value: torch's ``foreach`` flag of that implementation).
TENSOR_LR_ROUNDING = {"Adamax": False, "NAdam": True, "RAdam": True}


def _cases() -> list[Any]:
    cases = []
    for name in NAMES:
        impls: list[dict[str, Any]] = [{}]
        if "foreach" in inspect.signature(pair(name)[0]).parameters:
            impls += [{"foreach": False}, {"foreach": True}]
        if "fused" in INFO[name].supported_impls:
            impls.append({"fused": True})
        for desc, kwargs in cpu_configs(name):
            for impl in impls:
                for dtype in (torch.float64, torch.float32):
                    for complex_ in (False, True) if INFO[name].supports_complex else (False,):
                        if complex_ and "fused" in impl:
                            continue  # torch's fused kernels take no complex parameters
                        label = f"{name}-{desc}-{impl or 'default'}-{dtype}-{'complex' if complex_ else 'real'}"
                        cases.append(pytest.param(name, kwargs, impl, dtype, complex_, id=label))
    return cases


def make_params(dtype: torch.dtype, complex_: bool, shapes: tuple[tuple[int, ...], ...]) -> list[torch.Tensor]:
    """A weight, a bias, a scalar and a parameter that gets a gradient every other step
    (or the optimizer's own shapes: its harness)."""
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    if complex_:
        params = [torch.complex(p, torch.randn(p.shape, generator=g, dtype=torch.float64)) for p in params]
        dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    return [p.to(dtype).requires_grad_() for p in params]


def set_grads(params: list[torch.Tensor], step: int, h: Harness) -> None:
    """Gradients that depend on the parameters (so errors would compound) plus noise; the
    last parameter gets one every other step."""
    g = torch.Generator().manual_seed(1000 + step)
    for i, p in enumerate(params):
        if i == len(params) - 1 and step % 2:
            p.grad = None  # torch skips parameters without a gradient
            continue
        noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
        if p.is_complex():
            noise = torch.complex(noise, torch.randn(p.shape, generator=g, dtype=torch.float64))
        p.grad = h.gradient(p, (torch.sin(p.detach()) + noise.to(p.dtype)).to(p.dtype), step)


def build(cls: type, params: list[torch.Tensor], kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    """Two param groups (the second with half the lr) so per-group hyperparameters count."""
    lr = kwargs.get("lr", cls.__init__.__defaults__[0])
    second_lr = lr * 0.5 if not isinstance(lr, torch.Tensor) else torch.tensor(lr.item() * 0.5)
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": second_lr}]
    return cls(groups, **kwargs)


def run(cls: type, kwargs: dict[str, Any], dtype: torch.dtype, complex_: bool, *,
        shapes: tuple[tuple[int, ...], ...] | None = None, steps: int = STEPS):  # fmt: skip
    """``steps`` steps of ``cls`` on parameters of ``shapes`` (default: its harness's):
    the parameters after each step, and the optimizer."""
    h = harness(cls.__name__)
    params = make_params(dtype, complex_, shapes or h.shapes)
    opt = build(cls, params, copy.deepcopy(kwargs))
    history = []
    for step in range(steps):
        set_grads(params, step, h)
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history, opt


@pytest.mark.parametrize("name,kwargs,impl,dtype,complex_", _cases())
@pytest.mark.parametrize("lr_kind", ["float", "tensor"])
def test_matches_torch(name, kwargs, impl, dtype, complex_, lr_kind):
    torch_cls, momenta_cls = pair(name)
    kwargs = {**kwargs, **impl}
    if lr_kind == "tensor" and not isinstance(kwargs.get("lr"), torch.Tensor):
        kwargs["lr"] = torch.tensor(kwargs.get("lr", torch_cls.__init__.__defaults__[0]))
    try:
        expected, torch_opt = run(torch_cls, kwargs, dtype, complex_)
    except (ValueError, RuntimeError) as torch_error:
        # torch refuses this combination (e.g. a tensor lr with foreach): so must momenta
        with pytest.raises(type(torch_error), match=re.escape(str(torch_error).split("\n")[0][:60])):
            run(momenta_cls, kwargs, dtype, complex_)
        return
    numbers = torch_opt  # the run whose parameters and state momenta's must equal
    if lr_kind == "tensor" and name in TENSOR_LR_ROUNDING:
        expected, numbers = run(torch_cls, {**kwargs, "foreach": TENSOR_LR_ROUNDING[name]}, dtype, complex_)
    actual, momenta_opt = run(momenta_cls, kwargs, dtype, complex_)
    tolerance = TOLERANCE[dtype]
    if dtype == torch.float64 and isinstance(kwargs.get("lr"), torch.Tensor) and harness(name).float32_scalars:
        tolerance = FLOAT32_STEP_SIZE
    for step, (a, e) in enumerate(zip(actual, expected)):
        for i, (pa, pe) in enumerate(zip(a, e)):
            torch.testing.assert_close(pa, pe, **tolerance, msg=lambda m: f"step {step}, param {i}: {m}")
    # the state is the same too: keys, dtypes, devices and values
    sa, se = momenta_opt.state_dict(), torch_opt.state_dict()
    assert sa["param_groups"] == se["param_groups"]
    # assert_close also checks dtype, device and shape (where torch keeps `step`, too)
    assert_states_close(sa["state"], numbers.state_dict()["state"], **tolerance)


#: Muon in float32 on larger matrices (tall, wide, a column) and for longer: Newton–Schulz
#: runs in bfloat16, where a difference in the last bit of its input can flip a rounding
#: that the iteration then spreads over the matrix, so only torch's own op sequence (the
#: momentum as lerp, lr·s(shape) as one number) stays within float32's tolerance here.
MUON_SHAPES = ((16, 8), (8, 12), (12, 1), (6, 4))
MUON_STEPS = 50
#: torch's options that optim_db leaves at their defaults
MUON_MORE = [("nesterov=False", dict(nesterov=False, lr=0.02)),
             ("match_rms_adamw", dict(adjust_lr_fn="match_rms_adamw", lr=0.01, weight_decay=0.05))]  # fmt: skip


@pytest.mark.parametrize("kwargs", [pytest.param(k, id=d) for d, k in cpu_configs("Muon") + MUON_MORE])
@pytest.mark.parametrize("lr_kind", ["float", "tensor"])
def test_muon_float32_matches_torch(kwargs, lr_kind):
    if lr_kind == "tensor" and not isinstance(kwargs.get("lr"), torch.Tensor):
        kwargs = {**kwargs, "lr": torch.tensor(kwargs.get("lr", 1e-3))}
    longer = dict(shapes=MUON_SHAPES, steps=MUON_STEPS)
    expected, torch_opt = run(torch.optim.Muon, kwargs, torch.float32, False, **longer)
    actual, momenta_opt = run(momenta.Muon, kwargs, torch.float32, False, **longer)
    tolerance = TOLERANCE[torch.float32]
    for step, (a, e) in enumerate(zip(actual, expected)):
        for i, (pa, pe) in enumerate(zip(a, e)):
            torch.testing.assert_close(pa, pe, **tolerance, msg=lambda m: f"step {step}, param {i}: {m}")
    assert_states_close(momenta_opt.state_dict()["state"], torch_opt.state_dict()["state"], **tolerance)
