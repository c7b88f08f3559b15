"""momenta's drop-ins give torch.optim's numbers on every CPU configuration of torch's own
optimizer test database: float64 to rounding (rtol 1e-9), float32 to float32 rounding; with
and without foreach/fused; lr as a float and as a tensor; real and complex parameters.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from helpers import assert_states_close
from torch_db import INFO, NAMES, cpu_configs, pair

TOLERANCE = {
    torch.float64: dict(rtol=1e-9, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
}
STEPS = 7


def _cases() -> list[Any]:
    cases = []
    for name in NAMES:
        impls = [{}, {"foreach": False}, {"foreach": True}]
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


def make_params(dtype: torch.dtype, complex_: bool) -> list[torch.Tensor]:
    """A weight, a bias, a scalar and a parameter that gets a gradient every other step."""
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 4), (4,), (), (3, 2)]
    params = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    if complex_:
        params = [torch.complex(p, torch.randn(p.shape, generator=g, dtype=torch.float64)) for p in params]
        dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    return [p.to(dtype).requires_grad_() for p in params]


def set_grads(params: list[torch.Tensor], step: int) -> None:
    """Gradients that depend on the parameters (so errors would compound) plus noise."""
    g = torch.Generator().manual_seed(1000 + step)
    for i, p in enumerate(params):
        if i == 3 and step % 2:
            p.grad = None  # torch skips parameters without a gradient
            continue
        noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
        if p.is_complex():
            noise = torch.complex(noise, torch.randn(p.shape, generator=g, dtype=torch.float64))
        p.grad = (torch.sin(p.detach()) + noise.to(p.dtype)).to(p.dtype)


def build(cls: type, params: list[torch.Tensor], kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    """Two param groups (the second with half the lr) so per-group hyperparameters count."""
    lr = kwargs.get("lr", cls.__init__.__defaults__[0])
    second_lr = lr * 0.5 if not isinstance(lr, torch.Tensor) else torch.tensor(lr.item() * 0.5)
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": second_lr}]
    return cls(groups, **kwargs)


def run(cls: type, kwargs: dict[str, Any], dtype: torch.dtype, complex_: bool):
    params = make_params(dtype, complex_)
    opt = build(cls, params, copy.deepcopy(kwargs))
    history = []
    for step in range(STEPS):
        set_grads(params, step)
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
        with pytest.raises(type(torch_error), match=str(torch_error).split("\n")[0][:60].replace("[", r"\[").replace("(", r"\(").replace(")", r"\)").replace("`", "`")):
            run(momenta_cls, kwargs, dtype, complex_)
        return
    actual, momenta_opt = run(momenta_cls, kwargs, dtype, complex_)
    for step, (a, e) in enumerate(zip(actual, expected)):
        for i, (pa, pe) in enumerate(zip(a, e)):
            torch.testing.assert_close(pa, pe, **TOLERANCE[dtype], msg=lambda m: f"step {step}, param {i}: {m}")
    # the state is the same too: keys, dtypes, devices and values
    sa, se = momenta_opt.state_dict(), torch_opt.state_dict()
    assert sa["param_groups"] == se["param_groups"]
    # assert_close also checks dtype, device and shape (where torch keeps `step`, too)
    assert_states_close(sa["state"], se["state"], **TOLERANCE[dtype])
