"""Each torch drop-in's fast path gives its reference path's numbers: the flat buffers, run
eagerly and through the compiled kernel, equal the for-loop (``foreach=False``) to float64
rounding, with its own rules (scalar state such as NAdam's ``mu_product`` or ASGD's ``eta``
included).

One list of cases, one generic test: :func:`case` adds an optimizer's configuration.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import assert_states_close, only_path

import momenta

#: enough steps for RAdam's rectification to switch on (ρₜ > 5 from step 6 with β₂ = 0.999)
STEPS = 8
TOLERANCE = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.complex128: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-6, atol=1e-7),
}


def case(name: str, compiled: bool = False, **kwargs: Any) -> Any:
    """``momenta.<name>(params, **kwargs)`` in the family's list. ``compiled``: also run
    this configuration through the compiled kernel (a compilation, some seconds: one
    configuration an optimizer is enough)."""
    label = ",".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"
    return pytest.param(name, kwargs, compiled, id=f"{name}-{label}")


CASES = [
    case("Adamax"),
    case("Adamax", compiled=True, weight_decay=0.1, maximize=True),
    case("NAdam", compiled=True, weight_decay=0.1, momentum_decay=6e-3),
    case("NAdam", weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
    case("RAdam", compiled=True, weight_decay=0.1, decoupled_weight_decay=True),
    case("RAdam", weight_decay=0.1, maximize=True, eps=1e-6),
    case("Adadelta", compiled=True, weight_decay=0.1),
    case("Adadelta", lr=0.5, rho=0.95, maximize=True),
    case("ASGD", compiled=True, lambd=0.01, t0=2, weight_decay=0.1),
    case("ASGD", maximize=True),
    case("Rprop", compiled=True),
    case("Rprop", etas=(0.3, 1.5), step_sizes=(1e-3, 1.0), maximize=True),
]


def make_params(dtype: torch.dtype) -> list[torch.nn.Parameter]:
    """A weight, a bias, a scalar, a channels_last 4-D tensor and an empty one."""
    g = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (5,), (), (2, 3, 4, 4), (0, 3)]
    ps = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    ps[3] = ps[3].contiguous(memory_format=torch.channels_last)
    if dtype.is_complex:
        ps = [torch.complex(p, p.flip(0) if p.dim() else -p) for p in ps]
    return [torch.nn.Parameter(p.to(dtype)) for p in ps]


def train(name: str, kwargs: dict[str, Any], dtype: torch.dtype, foreach: bool | None, path: str) -> tuple[list[torch.Tensor], Any]:
    """``STEPS`` steps of ``momenta.<name>``, each of them on ``path`` (else AssertionError)."""
    params = make_params(dtype)
    opt = getattr(momenta, name)(params, foreach=foreach, **kwargs)
    with only_path(path):
        for step in range(STEPS):
            g = torch.Generator().manual_seed(100 + step)
            for p in params:  # new gradient tensors every step (set_to_none=True's case)
                noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
                p.grad = p.detach().sin() + noise
            opt.step()
    return [p.detach().clone() for p in params], opt


def assert_same(name: str, kwargs: dict[str, Any], dtype: torch.dtype, fast_path: str = "flat") -> None:
    """The for-loop (the reference path) and the default constructor (``fast_path``, flat
    buffers unless said otherwise) give the same parameters and state."""
    ref, ref_opt = train(name, kwargs, dtype, foreach=False, path="reference")
    fast, fast_opt = train(name, kwargs, dtype, foreach=None, path=fast_path)
    for i, (a, e) in enumerate(zip(fast, ref)):
        torch.testing.assert_close(a, e, **TOLERANCE[dtype], msg=lambda m: f"param {i}: {m}")
    assert_states_close(fast_opt.state_dict()["state"], ref_opt.state_dict()["state"], **TOLERANCE[dtype])


@pytest.mark.parametrize("name,kwargs,compiled", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.complex128], ids=str)
def test_flat_equals_reference(name, kwargs, compiled, dtype):
    assert_same(name, kwargs, dtype)


@pytest.mark.parametrize("name,kwargs,compiled", [c for c in CASES if c.values[2]])
def test_compiled_equals_reference(name, kwargs, compiled, compiled_kernels):
    assert_same(name, kwargs, torch.float64)
    assert compiled_kernels.runs and all(compiled_kernels.runs)  # the kernel ran, and never fell back


#: rules whose only whole-parameter quantities are norms (``segmented``): flat buffers with
#: per-parameter segments, eagerly (never compiled)
SEGMENTED = [
    case("LAMB", weight_decay=0.01),
    case("LAMB", lr=0.01, betas=(0.8, 0.99), maximize=True),
    case("LARS", weight_decay=1e-3),
    case("LARS", momentum=0.0, trust_coefficient=0.01, eps=1e-8),
]


@pytest.mark.parametrize("name,kwargs,compiled", SEGMENTED)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_segmented_flat_equals_reference(name, kwargs, compiled, dtype):
    assert_same(name, kwargs, dtype)


@pytest.mark.parametrize("name,kwargs,compiled", SEGMENTED[:1] + SEGMENTED[2:3])
def test_segmented_rules_leave_complex_buckets_to_the_reference_path(name, kwargs, compiled):
    """A complex bucket's real view interleaves real and imaginary parts: norms per
    parameter are the reference path's business there (same numbers)."""
    assert_same(name, kwargs, torch.complex128, fast_path="reference")


def test_segmented_norms_ignore_the_alignment_gaps():
    """ε = 0 makes 0/0 = NaN in the gaps between regions; no parameter's norm sees it."""
    params = [torch.nn.Parameter(torch.randn(3, 3, dtype=torch.float64)), torch.nn.Parameter(torch.randn(5, dtype=torch.float64))]
    opt = momenta.LAMB(params, eps=0.0)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    assert all(torch.isfinite(p).all() for p in params)
