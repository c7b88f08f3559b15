"""The drop-ins keep torch.optim's contract: signatures, defaults, group and state keys,
errors, closures, schedulers, hooks and state_dicts that move both ways."""

from __future__ import annotations

import copy
import importlib
import inspect
import io
import math
import warnings
from typing import Any

import pytest
import torch
from harness import harness
from torch_db import NAMES, OptimizerErrorEnum, cpu_configs, error_inputs, pair

import momenta


def _signature(cls: type) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()]


@pytest.mark.parametrize("name", NAMES)
def test_same_constructor_signature(name):
    """torch's parameters, in torch's order, with torch's defaults; then momenta's
    additions, keyword-only and off by default, so that every call written for torch works."""
    torch_cls, momenta_cls = pair(name)
    ours, theirs = _signature(momenta_cls), _signature(torch_cls)
    assert ours[: len(theirs)] == theirs
    assert ours[len(theirs) :] == [
        (extra, inspect.Parameter.KEYWORD_ONLY, None) for extra in ("nonfinite", "state_precision", "param_rounding")
    ]


@pytest.mark.parametrize("name", NAMES)
def test_is_a_torch_optimizer_built_by_momenta(name):
    torch_cls, momenta_cls = pair(name)
    assert issubclass(momenta_cls, torch.optim.Optimizer)
    assert issubclass(momenta_cls, momenta.Optimizer)
    assert not issubclass(momenta_cls, torch_cls)
    assert momenta_cls.__doc__ and "Source:" in momenta_cls.__doc__


def test_adamw_is_an_adam_as_in_torch():
    assert issubclass(momenta.AdamW, momenta.Adam)


def _param(name: str, *shape: int) -> torch.Tensor:
    """A parameter of about ``shape`` that optimizer ``name`` takes (its harness)."""
    return torch.randn(harness(name).shape(shape), requires_grad=True)


def _params(name: str = "") -> list[torch.Tensor]:
    return [_param(name, 3, 2), _param(name, 2)]


def _backward(name: str, loss: torch.Tensor, params: list[torch.Tensor]) -> None:
    """``loss.backward()``, with the gradients optimizer ``name`` takes (its harness)."""
    loss.backward()
    for p in params:
        p.grad = harness(name).gradient(p, p.grad, 0)


def _config_cases():
    for name in NAMES:
        for desc, kwargs in cpu_configs(name):
            yield pytest.param(name, kwargs, id=f"{name}-{desc}")


CONFIGS = list(_config_cases())


@pytest.mark.parametrize("name,kwargs", CONFIGS)
def test_same_defaults_and_group_keys(name, kwargs):
    torch_cls, momenta_cls = pair(name)
    t, m = torch_cls(_params(name), **kwargs), momenta_cls(_params(name), **kwargs)
    assert m.defaults == t.defaults
    assert list(m.defaults) == list(t.defaults)
    assert [list(g) for g in m.param_groups] == [list(g) for g in t.param_groups]
    assert m.state_dict()["param_groups"] == t.state_dict()["param_groups"]


# -- errors -----------------------------------------------------------------------------


def _error_cases():
    for name in NAMES:
        for i, e in enumerate(error_inputs(name)):
            yield pytest.param(name, e, id=f"{name}-{i}-{e.optimizer_error_input.desc}")


@pytest.mark.parametrize("name,error", list(_error_cases()))
def test_torch_error_inputs(name, error):
    """Every bad input of torch's own database raises torch's exception and message."""
    _, cls = pair(name)
    inp = error.optimizer_error_input
    params = inp.params if inp.params is not None else _params(name)
    if error.error_on == OptimizerErrorEnum.CONSTRUCTION_ERROR:
        if issubclass(error.error_type, Warning):
            with pytest.warns(error.error_type, match=error.error_regex):
                cls(params, **inp.kwargs)
        else:
            with pytest.raises(error.error_type, match=error.error_regex):
                cls(params, **inp.kwargs)
    else:
        opt = cls(params, **inp.kwargs)
        with pytest.raises(error.error_type, match=error.error_regex):
            opt.step()


BAD_INPUTS: list[tuple[str, dict[str, Any]]] = [
    ("SGD", dict(lr=-0.1)),
    ("SGD", dict(momentum=-0.5)),
    ("SGD", dict(weight_decay=-1.0)),
    ("SGD", dict(nesterov=True)),
    ("SGD", dict(momentum=0.9, dampening=0.1, nesterov=True)),
    ("SGD", dict(fused=True, foreach=True)),
    ("SGD", dict(fused=True, differentiable=True)),
    ("Adam", dict(lr=-1e-3)),
    ("Adam", dict(eps=-1e-8)),
    ("Adam", dict(betas=(0.9, 1.0))),
    ("Adam", dict(betas=(-0.1, 0.9))),
    ("Adam", dict(weight_decay=-0.1)),
    ("Adam", dict(lr=torch.tensor([1e-3, 1e-3]))),
    ("Adam", dict(betas=(torch.tensor([0.9, 0.9]), torch.tensor(0.99)))),
    ("AdamW", dict(eps=-1.0)),
    ("AdamW", dict(betas=(1.5, 0.9))),
    ("Adagrad", dict(lr=-1.0)),
    ("Adagrad", dict(lr_decay=-0.1)),
    ("Adagrad", dict(initial_accumulator_value=-1.0)),
    ("Adagrad", dict(eps=-1.0)),
    ("Adagrad", dict(weight_decay=-1.0)),
    ("RMSprop", dict(lr=-1.0)),
    ("RMSprop", dict(alpha=-0.5)),
    ("RMSprop", dict(eps=-1.0)),
    ("RMSprop", dict(momentum=-1.0)),
    ("RMSprop", dict(weight_decay=-1.0)),
    ("Adamax", dict(lr=-1.0)),
    ("Adamax", dict(eps=-1.0)),
    ("Adamax", dict(betas=(0.9, 1.0))),
    ("Adamax", dict(weight_decay=-0.1)),
    ("NAdam", dict(betas=(1.0, 0.9))),
    ("NAdam", dict(eps=-1.0)),
    ("NAdam", dict(weight_decay=-0.1)),
    ("NAdam", dict(momentum_decay=-0.1)),
    ("NAdam", dict(lr=torch.tensor([1e-3, 1e-3]))),
    ("RAdam", dict(lr=-1.0)),
    ("RAdam", dict(betas=(0.9, -0.5))),
    ("RAdam", dict(eps=-1.0)),
    ("RAdam", dict(weight_decay=-0.1)),
    ("Adadelta", dict(lr=-1.0)),
    ("Adadelta", dict(rho=1.1)),
    ("Adadelta", dict(rho=-0.1)),
    ("Adadelta", dict(eps=-1.0)),
    ("Adadelta", dict(weight_decay=-0.1)),
    ("ASGD", dict(lr=-1.0)),
    ("ASGD", dict(weight_decay=-0.1)),
    ("Rprop", dict(lr=-1.0)),
    ("Rprop", dict(etas=(1.0, 1.2))),
    ("Rprop", dict(etas=(0.5, 1.0))),
    ("Rprop", dict(etas=(0.0, 1.2))),
    ("Adafactor", dict(lr=-1.0)),
    ("Adafactor", dict(beta2_decay=0.5)),
    ("Adafactor", dict(eps=(-1.0, 1e-3))),
    ("Adafactor", dict(eps=(None, -1.0))),
    ("Adafactor", dict(d=0.5)),
    ("Adafactor", dict(weight_decay=-0.1)),
    ("Muon", dict(lr=-1.0)),
    ("Muon", dict(momentum=-0.1)),
    ("Muon", dict(weight_decay=-0.1)),
    ("Muon", dict(adjust_lr_fn="none")),
    ("SparseAdam", dict(lr=0.0)),
    ("SparseAdam", dict(eps=0.0)),
    ("SparseAdam", dict(betas=(0.9, 1.0))),
]


def _raised(fn) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


@pytest.mark.parametrize("name,kwargs", BAD_INPUTS, ids=[f"{n}-{k}" for n, k in BAD_INPUTS])
def test_bad_hyperparameters_raise_as_torch(name, kwargs):
    torch_cls, momenta_cls = pair(name)
    expected = _raised(lambda: torch_cls(_params(name), **kwargs))
    actual = _raised(lambda: momenta_cls(_params(name), **kwargs))
    assert type(actual) is type(expected)
    assert str(actual) == str(expected)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "params",
    [
        pytest.param([], id="empty"),
        pytest.param([1.0], id="not-a-tensor"),
        pytest.param(lambda: [torch.randn(2, requires_grad=True) * 2], id="non-leaf"),
        pytest.param(lambda: torch.randn(2, requires_grad=True), id="bare-tensor"),
        pytest.param(lambda: [{"params": [torch.randn(2)], "lr": 0.1}, {"lr": 0.1}], id="group-without-params"),
    ],
)
def test_bad_params_raise_as_torch(name, params):
    torch_cls, momenta_cls = pair(name)
    make = params if callable(params) else (lambda: params)
    expected = _raised(lambda: torch_cls(make()))
    actual = _raised(lambda: momenta_cls(make()))
    assert (type(actual), str(actual)) == (type(expected), str(expected))


def test_parameter_given_twice_warns_as_torch():
    p = torch.randn(2, requires_grad=True)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        momenta.Adam([p, p])
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        momenta.Adam([{"params": [p]}, {"params": [p]}])


@pytest.mark.parametrize("name", NAMES)
def test_wrong_types_name_the_argument(name):
    _, cls = pair(name)
    with pytest.raises(TypeError, match="learning rate: 'fast'"):
        cls(_params(name), lr="fast")


@pytest.mark.parametrize(
    "name", ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adamax", "NAdam", "RAdam", "Adadelta", "ASGD", "Rprop"]
)
def test_nan_learning_rate_is_rejected(name):
    # torch.optim.SGD accepts lr=nan (its check is `lr < 0`); momenta rejects it everywhere
    _, cls = pair(name)
    with pytest.raises(ValueError, match="Invalid learning rate: nan"):
        cls(_params(), lr=math.nan)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop", "Adamax", "NAdam", "RAdam", "Adadelta", "ASGD", "Rprop", "Adafactor", "Muon"])
def test_sparse_gradients_rejected_with_torch_message(name):
    torch_cls, momenta_cls = pair(name)
    messages = []
    for cls in (torch_cls, momenta_cls):
        p = torch.zeros(4, 2, requires_grad=True)
        p.grad = torch.sparse_coo_tensor([[0, 2]], torch.ones(2, 2), (4, 2))
        messages.append(str(_raised(cls([p]).step)))
    assert messages[0] == messages[1]


# -- behaviour ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_step_returns_the_closure_loss_computed_with_grad(name):
    _, cls = pair(name)
    w = _param(name, 3)
    opt = cls([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        assert torch.is_grad_enabled()
        _backward(name, loss, [w])
        return loss

    before = w.detach().clone()
    loss = opt.step(closure)
    assert torch.equal(loss, (before**2).sum())
    assert not torch.equal(w, before)
    assert opt.step() is None


@pytest.mark.parametrize("name", NAMES)
def test_no_gradient_no_step_no_state(name):
    torch_cls, momenta_cls = pair(name)
    for cls in (torch_cls, momenta_cls):
        w = _param(name, 3)
        before = w.detach().clone()
        opt = cls([w], lr=0.1)
        state_before = copy.deepcopy(opt.state_dict())
        opt.step()
        assert torch.equal(w, before)
        assert opt.state_dict()["state"].keys() == state_before["state"].keys()


@pytest.mark.parametrize("name", NAMES)
def test_zero_grad_and_hooks(name):
    _, cls = pair(name)
    w = _param(name, 3)
    opt = cls([w], lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    _backward(name, (w**2).sum(), [w])
    opt.step()
    assert calls == ["pre", "post"]
    opt.zero_grad()
    assert w.grad is None
    (w**2).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert torch.equal(w.grad, torch.zeros_like(w))


def _hook_log(opt: torch.optim.Optimizer) -> list[Any]:
    """Every kind of step hook on ``opt`` (global ones too), logging their order; the
    instance pre-hook replaces the step's arguments, as a hook may."""
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    log: list[Any] = []
    closure = lambda: log.append("closure") or 1.0  # noqa: E731
    handles = [
        register_optimizer_step_pre_hook(lambda o, a, k: log.append(("global pre", a == (o,), tuple(k)))),
        opt.register_step_pre_hook(lambda o, a, k: (log.append(("pre", a == (o,), tuple(k))), ((o,), {"closure": closure}))[1]),
        opt.register_step_post_hook(lambda o, a, k: log.append(("post", a == (o,), tuple(k)))),
        register_optimizer_step_post_hook(lambda o, a, k: log.append(("global post", a == (o,), tuple(k)))),
    ]
    opt.step()
    for handle in handles:
        handle.remove()
    return log


def test_step_hooks_and_profiler_ranges_as_torchs():
    """The step's hooks run as torch's wrapper runs them (order, replaced arguments, a bad
    return's error), and a profiler sees the step and zero_grad under torch's range names;
    momenta opens those ranges only while a profiler records (engine/compat.py)."""
    logs = []
    for cls in (torch.optim.SGD, momenta.SGD):
        w = torch.nn.Parameter(torch.ones(3))
        w.grad = torch.ones(3)
        logs.append(_hook_log(cls([w], lr=0.1)))
    assert logs[0] == logs[1] == [
        ("global pre", True, ()), ("pre", True, ()), "closure", ("post", True, ("closure",)), ("global post", True, ("closure",))
    ]
    errors = []
    for cls in (torch.optim.SGD, momenta.SGD):
        opt = cls([torch.nn.Parameter(torch.ones(3))], lr=0.1)
        opt.register_step_pre_hook(lambda o, a, k: "neither")
        with pytest.raises(RuntimeError, match="must return None or a tuple of") as error:
            opt.step()
        errors.append(str(error.value).split(" must ")[1])
    assert errors[0] == errors[1]
    w = torch.nn.Parameter(torch.ones(3))
    opt = momenta.AdamW([w])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        w.grad = torch.ones(3)
        opt.step()
        opt.zero_grad()
    names = {event.name for event in prof.events()}
    assert {"Optimizer.step#AdamW.step", "Optimizer.zero_grad#AdamW.zero_grad"} <= names


@pytest.mark.parametrize("foreach", [None, True, False])
def test_zero_grad_leaves_what_torchs_leaves(foreach):
    """``zero_grad`` (momenta's, without a profiler range when no profiler records) gives
    torch's results: ``None``, or zeros in place, detached, sparse ones too."""
    out = []
    for cls in (torch.optim.SGD, momenta.SGD):
        a, b, c = (torch.nn.Parameter(torch.ones(2, 2)) for _ in range(3))
        opt = cls([{"params": [a, b]}, {"params": [c]}], lr=0.1, foreach=foreach)
        seen = []
        for set_to_none in (False, True):
            x = torch.ones(2, 2, requires_grad=True)
            a.grad = (x * 2).detach().requires_grad_()  # a grad that requires grad
            b.grad = x * 3  # a grad with a grad_fn
            c.grad = torch.eye(2).to_sparse()
            grads = [a.grad, b.grad, c.grad]
            opt.zero_grad(set_to_none=set_to_none)
            seen.append([
                None if p.grad is None else (p.grad is g, p.grad.to_dense().tolist(), p.grad.requires_grad, p.grad.grad_fn is None)
                for p, g in zip((a, b, c), grads)
            ])
        out.append(seen)
    assert out[0] == out[1]
    assert out[1][1] == [None, None, None] and out[1][0][0] == (True, [[0.0, 0.0], [0.0, 0.0]], False, True)


def _train(opt, params, steps, start=0):
    h = harness(type(opt).__name__)
    for step in range(start, start + steps):
        g = torch.Generator().manual_seed(step)
        for p in params:
            p.grad = h.gradient(p, torch.sin(p.detach()) + torch.randn(p.shape, generator=g, dtype=p.dtype), step)
        opt.step()


def _roundtrip(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name,kwargs", CONFIGS)
@pytest.mark.parametrize("direction", ["torch->momenta", "momenta->torch"])
def test_state_dicts_move_both_ways(name, kwargs, direction):
    """Train 3 steps with one library, save (weights_only load), continue 3 steps with the
    other: identical to 6 steps of torch alone."""
    torch_cls, momenta_cls = pair(name)
    first, second = (torch_cls, momenta_cls) if direction == "torch->momenta" else (momenta_cls, torch_cls)
    shape = harness(name).shape
    init = [torch.randn(shape((4, 3)), dtype=torch.float64), torch.randn(shape((3,)), dtype=torch.float64)]

    # the reference resumes too: torch's load_state_dict casts scalar state other than
    # `step` (NAdam's mu_product, ASGD's eta and mu) to the parameters' dtype, so that even
    # torch's own resume rounds later steps unlike an uninterrupted run
    reference = [p.clone().requires_grad_() for p in init]
    opt = torch_cls(reference, **copy.deepcopy(kwargs))
    _train(opt, reference, 3)
    saved = _roundtrip(opt.state_dict())
    opt = torch_cls(reference, **copy.deepcopy(kwargs))
    opt.load_state_dict(saved)
    _train(opt, reference, 3, start=3)

    params = [p.clone().requires_grad_() for p in init]
    opt = first(params, **copy.deepcopy(kwargs))
    _train(opt, params, 3)
    saved = _roundtrip(opt.state_dict())
    resumed = [p.detach().clone().requires_grad_() for p in params]
    opt2 = second(resumed, **copy.deepcopy(kwargs))
    opt2.load_state_dict(saved)
    _train(opt2, resumed, 3, start=3)
    # torch rounds some optimizers' step sizes to a tensor lr's float32 (see harness)
    float32_step = isinstance(kwargs.get("lr"), torch.Tensor) and harness(name).float32_scalars
    # momenta's load_state_dict keeps scalar state as saved (README: a float32 mu_product
    # continued in float64 would not resume bit for bit), where the reference, torch's own
    # resume, continued it in float64: they agree to the float32 rounding of that state
    momenta_opt = opt2 if direction == "torch->momenta" else opt
    kept = set(momenta_opt.rules(momenta_opt.param_groups[0]).scalar_names()) - {"step"}
    float32_state = direction == "torch->momenta" and bool(kept)
    rtol = 1e-6 if float32_state else 1e-9
    for a, e in zip(resumed, reference):
        torch.testing.assert_close(a, e, rtol=rtol, atol=1e-8 if float32_step or float32_state else 1e-12)


SCHEDULERS = {
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=12),
    "CyclicLR": lambda o: torch.optim.lr_scheduler.CyclicLR(o, 0.001, 0.05, step_size_up=3),
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5),
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + e)),
}
MOMENTUM_KWARGS = {"SGD": dict(momentum=0.9), "RMSprop": dict(momentum=0.5)}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_schedulers_drive_momenta_as_torch(name, scheduler):
    torch_cls, momenta_cls = pair(name)
    kwargs = MOMENTUM_KWARGS.get(name, {})
    results = []
    for cls in (torch_cls, momenta_cls):
        params = [torch.ones(harness(name).shape((3,)), dtype=torch.float64, requires_grad=True)]
        opt = cls(params, lr=0.01, **kwargs)
        try:
            sched = SCHEDULERS[scheduler](opt)
        except ValueError as e:  # e.g. cycling momentum on an optimizer without one
            results.append(str(e))
            continue
        trace = []
        for step in range(12):
            _train(opt, params, 1, start=step)
            sched.step()
            group = opt.param_groups[0]
            trace.append((group["lr"], group.get("momentum"), group.get("betas")))
        results.append((params[0].detach().clone(), trace))
    if isinstance(results[0], str):
        assert results[1] == results[0]
        return
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-9, atol=1e-12)
    assert results[1][1] == results[0][1]


def test_reduce_lr_on_plateau():
    params = [torch.ones(2, requires_grad=True)]
    opt = momenta.Adam(params, lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    for loss in [1.0, 1.0, 1.0]:
        sched.step(loss)
    assert opt.param_groups[0]["lr"] < 0.1


def test_independent_of_torch_optim_functions(monkeypatch):
    """momenta's step never calls torch.optim's per-optimizer implementations."""
    def forbidden(*args, **kwargs):
        raise AssertionError("called into torch.optim's functional implementation")

    modules = [importlib.import_module(f"torch.optim.{m}") for m in ("sgd", "adam", "adamw", "adagrad", "rmsprop")]
    modules += [importlib.import_module(f"torch.optim.{m}") for m in ("_adafactor", "_muon", "_functional")]
    modules += [importlib.import_module(f"torch.optim.{m}") for m in ("adamax", "nadam", "radam", "adadelta", "asgd", "rprop")]
    patched = 0
    for module in modules:
        for attr in dir(module):
            if attr.startswith(("_single_tensor", "_multi_tensor", "_fused")) or attr in (
                "sgd", "adam", "adamw", "adagrad", "rmsprop", "adafactor", "muon", "sparse_adam",
                "adamax", "nadam", "radam", "adadelta", "asgd", "rprop",
            ):  # fmt: skip
                monkeypatch.setattr(module, attr, forbidden)
                patched += 1
    assert patched >= 15
    for name in NAMES:
        for desc, kwargs in cpu_configs(name):
            params = [_param(name, 3)]
            opt = getattr(momenta, name)(params, **kwargs)
            _train(opt, params, 2)


@pytest.mark.parametrize("name", NAMES)
def test_deepcopy_and_pickle(name):
    _, cls = pair(name)
    params = [_param(name, 3)]
    opt = cls(params, lr=0.1)
    _train(opt, params, 2)
    clone = copy.deepcopy(opt)
    assert clone.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buffer = io.BytesIO()
        torch.save(opt, buffer)


def test_adagrad_creates_state_at_construction_as_torch():
    p = torch.randn(3, requires_grad=True)
    t = torch.optim.Adagrad([p], initial_accumulator_value=0.5)
    m = momenta.Adagrad([p], initial_accumulator_value=0.5)
    st, sm = t.state_dict()["state"], m.state_dict()["state"]
    assert st.keys() == sm.keys() == {0}
    assert torch.equal(st[0]["sum"], sm[0]["sum"]) and torch.equal(st[0]["step"], sm[0]["step"])


def test_adagrad_sparse_gradients_match_torch():
    results = []
    for cls in (torch.optim.Adagrad, momenta.Adagrad):
        p = torch.ones(5, 2, dtype=torch.float64, requires_grad=True)
        opt = cls([p], lr=0.1)
        for step in range(3):
            idx = torch.tensor([[step, 4]])
            p.grad = torch.sparse_coo_tensor(idx, torch.full((2, 2), 0.5 + step, dtype=torch.float64), (5, 2))
            opt.step()
        results.append(p.detach().clone())
    torch.testing.assert_close(results[1], results[0], rtol=1e-12, atol=0)
    p = torch.ones(2, requires_grad=True)
    p.grad = torch.sparse_coo_tensor([[0]], torch.ones(1), (2,))
    with pytest.raises(RuntimeError, match="weight_decay option is not compatible with sparse gradients"):
        momenta.Adagrad([p], weight_decay=0.1).step()


def test_sgd_sparse_gradients_match_torch():
    results = []
    for cls in (torch.optim.SGD, momenta.SGD):
        p = torch.ones(4, dtype=torch.float64, requires_grad=True)
        opt = cls([p], lr=0.1, momentum=0.9)
        for step in range(3):
            p.grad = torch.sparse_coo_tensor([[step]], torch.tensor([1.0 + step], dtype=torch.float64), (4,))
            opt.step()
        results.append(p.detach().clone())
    torch.testing.assert_close(results[1], results[0], rtol=1e-12, atol=0)


def test_fused_rejects_what_torch_rejects():
    p = torch.randn(2, dtype=torch.complex64, requires_grad=True)
    p.grad = torch.ones_like(p)
    expected = _raised(torch.optim.Adam([p], fused=True).step)
    actual = _raised(momenta.Adam([p], fused=True).step)
    assert (type(actual), str(actual)) == (type(expected), str(expected))
