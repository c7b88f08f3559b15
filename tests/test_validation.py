"""Hyperparameter checks, one table per optimizer (momenta.engine.validation), run the same
way in each place where values can change: construction, add_param_group, a step after an
edit, load_state_dict (with state or without). A step during CUDA graph capture is refused.

torch's messages for the drop-ins: tests/test_torch_contract.py (optim_db's error inputs).
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any

import pytest
import torch

import momenta
from momenta import Composed, Rules
from momenta.engine import validation
from momenta.rules import Interpolated, One, Sign

LION = Rules(Interpolated(0.9, 0.99), One(), direction=Sign(), weight_decay="decoupled", count_steps=False)

#: a bad value for every key of every table (a key without one fails the test that needs it)
BAD: dict[str, list[Any]] = {
    "lr": [-1.0, "fast"], "eps": [-1.0], "weight_decay": [-1.0, math.nan], "betas": [(0.9, 1.0), (-0.1, 0.9)],
    "momentum": [-1.0], "dampening": [math.nan], "alpha": [-1.0], "lr_decay": [-1.0],
    "initial_accumulator_value": [-1.0], "rho": [1.5], "lambd": [-1.0], "etas": [(1.0, 1.2)],
    "beta2_decay": [0.5], "d": [0.5], "adjust_lr_fn": ["x"], "ns_steps": [100, -1], "ns_coefficients": [(1.0, 2.0)],
    "momentum_decay": [-1.0], "trust_coefficient": [-1.0], "initial_accumulator": [-1.0], "warmup_steps": [-1, 2.5],
    "r": [-1.0], "weight_lr_power": [-1.0], "beta3": [1.0], "alpha_warmup": [0], "beta3_warmup": [0],
    "eps1": [-1.0], "eps2": [-1.0], "clip_threshold": [0.0], "decay_rate": [0.5], "beta1": [1.0],
    "first.beta1": [1.5],
}  # fmt: skip
#: where an optimizer's value is bad otherwise
OWN_BAD: dict[tuple[str, str], list[Any]] = {
    ("Adafactor", "eps"): [(-1.0, 1e-3), (None, -1.0)],
    ("Muon", "momentum"): [-1.0, 1.0],
    ("MuonWithAdamW", "momentum"): [-1.0, 1.0],
    ("SparseAdam", "eps"): [0.0],
}


def _make(name: str, params: list[torch.Tensor], **kwargs: Any) -> momenta.Optimizer:
    if name == "Composed":
        return Composed(params, LION, **{"lr": 0.01, **kwargs})
    return getattr(momenta, name)(params, **kwargs)


def _cases():
    for name in momenta.optimizers.__all__:
        opt = _make(name, [torch.nn.Parameter(torch.zeros(2, 3))])
        keys = [k for k in opt.checks_of(opt.param_groups[0]) if isinstance(k, str) and k in opt.param_groups[0]]
        if name == "Composed":
            keys.append("first.beta1")  # a rule's key, checked by the rule and named by Composed
        for key in keys:
            for value in OWN_BAD.get((name, key), BAD[key]):
                yield pytest.param(name, key, value, id=f"{name}-{key}={value!r}")


def _params() -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(2, 3))]


def _grads(name: str, params: list[torch.nn.Parameter]) -> None:
    for p in params:
        grad = torch.randn_like(p)
        p.grad = grad.to_sparse() if name == "SparseAdam" else grad


def _snapshot(opt: momenta.Optimizer) -> tuple[Any, ...]:
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    state = {id(p): copy.deepcopy(dict(s)) for p, s in opt.state.items()}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return params, state, copy.deepcopy(groups)


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0]))
    assert a[1].keys() == b[1].keys()
    for s, t in zip(a[1].values(), b[1].values()):
        assert s.keys() == t.keys()
        assert all(torch.equal(torch.as_tensor(s[k]), torch.as_tensor(t[k])) for k in s)
    assert repr(a[2]) == repr(b[2])


def _raised(fn) -> BaseException:
    with pytest.raises((TypeError, ValueError)) as info:
        fn()
    return info.value


@pytest.mark.parametrize("name,key,value", list(_cases()))
def test_a_bad_value_is_refused_alike_in_every_place(name, key, value):
    """The same error at construction, in add_param_group, at a step after an edit and in
    load_state_dict with no state yet; nothing changes in any of them."""
    errors = []
    constructor = inspect.signature(getattr(momenta, name)).parameters
    if key in constructor:
        errors.append(_raised(lambda: _make(name, _params(), **{key: value})))

    opt = _make(name, _params())
    errors.append(_raised(lambda: opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, 3))], key: value})))
    assert len(opt.param_groups) == 1

    params = opt.param_groups[0]["params"]
    _grads(name, params)
    opt.step()
    _grads(name, params)
    before = _snapshot(opt)
    good = opt.param_groups[0][key]
    opt.param_groups[0][key] = value  # a user, or a schedule
    errors.append(_raised(opt.step))
    opt.param_groups[0][key] = good
    _same(before, _snapshot(opt))

    fresh = _make(name, _params())
    saved = fresh.state_dict()
    saved["state"] = {}  # no state (Adagrad's is made at construction): checked all the same
    saved["param_groups"][0][key] = value
    before = _snapshot(fresh)
    loaded = _raised(lambda: fresh.load_state_dict(saved))
    _same(before, _snapshot(fresh))

    first = errors[0]
    assert all((type(e), str(e)) == (type(first), str(first)) for e in errors), errors
    assert type(loaded) is ValueError and "nothing was loaded" in str(loaded)
    assert f"param group 0: {first}" in str(loaded)


def test_every_table_key_has_a_bad_value():
    tables = [v for v in vars(validation).values() if isinstance(v, dict) and v and all(callable(c) or isinstance(c, validation.Argument) for c in v.values())]
    keys = {k for table in tables for k in table if isinstance(k, str)}
    assert keys <= BAD.keys()


def test_an_argument_check_is_the_constructors_only():
    """torch checks SparseAdam's lr > 0 and SGD's Nesterov condition of the constructor's
    arguments: a schedule may take lr to 0, or momentum to 0 under Nesterov, afterwards."""
    with pytest.raises(ValueError, match=r"^Invalid learning rate: 0.0$"):
        momenta.SparseAdam(_params(), lr=0.0)
    params = _params()
    opt = momenta.SparseAdam(params, lr=0.1)
    opt.param_groups[0]["lr"] = 0.0
    _grads("SparseAdam", params)
    opt.step()
    with pytest.raises(ValueError, match="^Nesterov momentum requires a momentum and zero dampening$"):
        momenta.SGD(_params(), lr=0.1, nesterov=True)
    params = _params()
    opt = momenta.SGD(params, lr=0.1, momentum=0.9, nesterov=True)
    opt.param_groups[0]["momentum"] = 0.0
    _grads("SGD", params)
    opt.step()


def test_muon_with_adamw_names_its_adamw_arguments():
    p = [torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(3))]
    for key, value, message in [
        ("adamw_lr", -1.0, "Invalid adamw_lr value: -1.0"),
        ("adamw_eps", -1.0, "Invalid adamw_eps value: -1.0"),
        ("adamw_weight_decay", -1.0, "Invalid adamw_weight_decay value: -1.0"),
        ("adamw_betas", (0.9,), r"Invalid betas: \(0.9,\)"),
    ]:
        with pytest.raises(ValueError, match=f"^{message}"):
            momenta.MuonWithAdamW(p[:1], **{key: value})  # checked with no AdamW group yet
    opt = momenta.MuonWithAdamW(p)
    adamw = opt.param_groups[1]
    assert adamw["muon"] is False
    adamw["eps"] = -1.0
    for q in p:
        q.grad = torch.ones_like(q)
    with pytest.raises(ValueError, match="^Invalid adamw_eps value: -1.0$"):
        opt.step()


def test_unchanged_values_are_not_checked_again(monkeypatch):
    runs: list[str] = []
    run = validation.run
    monkeypatch.setattr(validation, "run", lambda checks, group, when="group": (runs.append(when), run(checks, group, when))[1])
    params = _params()
    opt = momenta.Adam(params, lr=0.1)
    assert runs == ["arguments", "flags"]  # construction: the defaults once, in torch's two halves
    for _ in range(3):
        _grads("Adam", params)
        opt.step()
    assert runs == ["arguments", "flags", "group"]  # the first step builds the rules once
    opt.param_groups[0]["lr"] = 0.05
    opt.step()
    opt.step()
    assert runs == ["arguments", "flags", "group", "group"]  # once per change



def test_a_refused_group_reports_once_and_nothing_else():
    """A group whose values are refused is one problem: its parameters' state is neither
    checked against rules it cannot have nor reported as state of no group."""
    params = _params()
    opt = momenta.Adagrad(params, lr=0.1)  # Adagrad makes its state at construction
    saved = opt.state_dict()
    saved["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(saved)
    assert str(info.value).endswith("nothing was loaded:\n- param group 0: Invalid learning rate: -1.0")


# -- CUDA graph capture ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,instead",
    [
        (lambda p: momenta.Adam(p, lr=0.1, capturable=True), r"capture torch\.optim\.Adam\(\.\.\., capturable=True\) instead"),
        (lambda p: momenta.Lion(p, lr=0.1), "capture a torch.optim optimizer with capturable=True instead"),
    ],
    ids=["Adam", "Lion"],
)
def test_a_step_while_a_cuda_stream_captures_is_refused(monkeypatch, make, instead):
    params = _params()
    opt = make(params)
    _grads("", params)
    opt.step()
    _grads("", params)
    before = _snapshot(opt)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    closures: list[int] = []
    name = type(opt).__name__
    with pytest.raises(RuntimeError, match=rf"^{name}\.step\(\) was called while a CUDA stream is capturing") as info:
        opt.step(lambda: closures.append(1) or 0.0)
    assert "capturable=True is accepted so that the state" in str(info.value)
    assert info.match(instead)
    assert not closures  # not even the closure ran
    _same(before, _snapshot(opt))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    opt.step()  # outside capture it steps
    assert not torch.equal(params[0].detach(), before[0][0])


def test_a_subclass_declares_checks_of_its_own():
    """README, Your own optimizer: a class attribute ``checks`` gives a subclass its own
    checks, at construction and at a step after an edit."""
    from momenta.rules import EMA, EMASq

    class Mine(momenta.Optimizer):
        checks = {**validation.ENGINE, "betas": validation.betas}

        def __init__(self, params, lr=1e-3, betas=(0.9, 0.99)):
            super().__init__(params, dict(lr=lr, betas=betas))

        def rules(self, group):
            return momenta.Rules(EMA(group["betas"][0]), EMASq(group["betas"][1]))

    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=r"Invalid beta parameter at index 0: 1.5"):
        Mine([p], betas=(1.5, 0.9))
    opt = Mine([p])
    opt.param_groups[0]["betas"] = (0.9, -0.5)
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match=r"Invalid beta parameter at index 1: -0.5"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(2)) and not opt.state
