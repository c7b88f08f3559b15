"""A new optimizer in about ten lines: AdaBelief's V rule, exactly as in README; and a
Rules value trained as it is (momenta.Composed), with its hyperparameters in the groups."""

from __future__ import annotations

import copy
import io
import math
import pickle
from dataclasses import dataclass

import pytest
import torch
from helpers import assert_states_close

import momenta
from momenta.engine import kernels
from momenta.rules import EMA, EMASq, FirstMoment, Interpolated, One, SecondMoment, Sign


# --- README: "Your own optimizer" (kept in sync by test_readme_example_is_this_code) ---
@dataclass(frozen=True)
class BeliefSq(SecondMoment):
    """s = β·s + (1−β)·(g − m)²: the spread of g around its mean m (AdaBelief)."""

    beta: float = 0.999
    formula = "s = β·s + (1−β)·(g − m)², ŝ = s/(1−βᵗ)"
    needs_step = True

    def init(self, p):
        return {"exp_avg_var": torch.zeros_like(p)}

    def update(self, state, g, m, t):
        s = self.beta * state["exp_avg_var"] + (1 - self.beta) * (g - m) ** 2
        return s, {"exp_avg_var": s}

    def correction(self, t):
        return 1 - self.beta**t


class AdaBelief(momenta.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    def rules(self, group):
        beta1, beta2 = group["betas"]
        return momenta.Rules(EMA(beta1, bias_correction=True), BeliefSq(beta2))


# --- end of README example ---


def adabelief_by_hand(p, grads, lr, beta1, beta2, eps):
    """An independent transcription of the same update, in plain tensor code."""
    m, s = torch.zeros_like(p), torch.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        s = beta2 * s + (1 - beta2) * (g - m) ** 2
        m_hat, s_hat = m / (1 - beta1**t), s / (1 - beta2**t)
        p = p - lr * m_hat / (s_hat.sqrt() + eps)
    return p, m, s


def test_custom_optimizer_follows_its_formula():
    torch.manual_seed(0)
    p0 = torch.randn(5, 3, dtype=torch.float64)
    grads = [torch.randn(5, 3, dtype=torch.float64) for _ in range(10)]
    p = p0.clone().requires_grad_()
    opt = AdaBelief([p], lr=0.01, betas=(0.8, 0.9), eps=1e-8)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    expected, m, s = adabelief_by_hand(p0, grads, 0.01, 0.8, 0.9, 1e-8)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-14)
    state = opt.state[p]
    assert set(state) == {"step", "exp_avg", "exp_avg_var"} and state["step"].item() == 10
    torch.testing.assert_close(state["exp_avg"], m)
    torch.testing.assert_close(state["exp_avg_var"], s)
    assert opt.formulas()["V"] == "s = β₂·s + (1−β₂)·(g − m)², ŝ = s/(1−β₂ᵗ)"  # m's β is β₁


def test_custom_optimizer_gets_the_engine_for_free():
    """Schedulers, closures, complex parameters and state_dicts need no extra code."""
    w = torch.randn(4, dtype=torch.complex128, requires_grad=True)
    opt = AdaBelief([w], lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)

    def closure():
        opt.zero_grad()
        loss = (w.abs() ** 2).sum()
        loss.backward()
        return loss

    losses = []
    for _ in range(5):
        losses.append(opt.step(closure).item())
        sched.step()
    assert losses[-1] < losses[0]
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    clone = AdaBelief([w.detach().clone().requires_grad_()], lr=0.1)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    assert clone.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    assert opt.param_groups[0]["betas"] != (0.9, 0.999)  # OneCycleLR cycles beta1


def test_readme_example_is_this_code():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    source = Path(__file__).read_text()
    example = (
        source.split("# --- README")[1].split("\n", 1)[1].split("# --- end of README example")[0]
    )
    assert example.strip() in readme


# --- momenta.Composed: a Rules value as an optimizer, without a subclass ---------------------

LION = momenta.Rules(Interpolated(0.9, 0.99), One(), direction=Sign(), weight_decay="decoupled")

#: built-in optimizers whose rules Composed runs (nested paths, scalar state, per-step values,
#: a segmented direction, a rule that sees whole matrices)
BUILTINS = [
    pytest.param(momenta.Lion, dict(lr=0.01, weight_decay=0.1), id="Lion"),
    pytest.param(momenta.AdamW, dict(lr=0.01, amsgrad=True), id="AdamW-amsgrad"),
    pytest.param(momenta.NAdam, dict(lr=0.01, weight_decay=0.1), id="NAdam"),
    pytest.param(momenta.RAdam, dict(lr=0.01), id="RAdam"),
    pytest.param(momenta.Yogi, dict(lr=0.01), id="Yogi"),
    pytest.param(momenta.AdEMAMix, dict(lr=0.01, alpha_warmup=3, beta3_warmup=3), id="AdEMAMix"),
    pytest.param(momenta.LAMB, dict(lr=0.01), id="LAMB"),
    pytest.param(momenta.AdafactorPaper, dict(beta1=0.9, weight_decay=0.1), id="AdafactorPaper"),
]


def _params(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (), (2, 3, 4)]
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(dtype)) for s in shapes]


def _train(opt, params, steps, start=0, schedule=None):
    for step in range(start, start + steps):
        if schedule is not None:
            schedule(opt, step)
        g = torch.Generator().manual_seed(100 + step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
        opt.step()


def _composed_twin(builtin, params, foreach):
    """``momenta.Composed`` over the rules of ``builtin``'s first group, with its lr, ε, λ."""
    group = builtin.param_groups[0]
    return momenta.Composed(
        params, builtin.rules(group), lr=group["lr"], eps=group.get("eps", 0.0),
        weight_decay=group["weight_decay"], maximize=group["maximize"], foreach=foreach,
    )  # fmt: skip


def _assert_identical(params, opt, twin_params, twin):
    for p, q in zip(params, twin_params):
        assert torch.equal(p.detach(), q.detach())
    assert_states_close(twin.state_dict()["state"], opt.state_dict()["state"])


@pytest.mark.parametrize("cls,kwargs", BUILTINS)
@pytest.mark.parametrize("foreach", [False, None], ids=["reference", "fast"])
def test_composed_trains_as_the_builtin_bit_for_bit(cls, kwargs, foreach):
    params, twin_params = _params(), _params()
    opt = cls(params, foreach=foreach, **kwargs)
    twin = _composed_twin(opt, twin_params, foreach)
    _train(opt, params, 5)
    _train(twin, twin_params, 5)
    _assert_identical(params, opt, twin_params, twin)


def test_composed_lion_from_the_readme_is_momenta_lion():
    """README's Lion of your own: the same numbers as momenta.Lion (it also counts steps)."""
    params, twin_params = _params(), _params()
    lion = momenta.Lion(params, lr=0.01, weight_decay=0.1)
    twin = momenta.Composed(twin_params, LION, lr=0.01, weight_decay=0.1)
    _train(lion, params, 5)
    _train(twin, twin_params, 5)
    for p, q in zip(params, twin_params):
        assert torch.equal(p.detach(), q.detach())
        assert torch.equal(lion.state[p]["exp_avg"], twin.state[q]["exp_avg"])
        assert twin.state[q]["step"].item() == 5


def test_composed_param_groups_hold_the_rules_hyperparameters():
    rules = momenta.Rules(EMA(0.9, bias_correction=True), momenta.rules.AMSGrad(EMASq(0.999, True)))
    opt = momenta.Composed(_params(), rules, lr=1e-3)
    engine = {"lr", "eps", "weight_decay", "maximize", "foreach", "differentiable"}
    assert set(opt.defaults) == engine | {"first.beta", "second.inner.beta"}
    assert set(kernels.hyperparameters(rules)) == {"first.beta", "second.inner.beta"}
    group = opt.param_groups[0]
    assert (group["first.beta"], group["second.inner.beta"], group["eps"]) == (0.9, 0.999, 1e-8)
    assert opt.rules(group) == rules
    # a group of its own values
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))], "first.beta": 0.5})
    assert opt.rules(opt.param_groups[1]).first == EMA(0.5, bias_correction=True)


def _cosine(low, high, steps):
    """A OneCycle-like cycle of a value from ``high`` down to ``low`` and back."""
    return lambda step: low + (high - low) * (1 + math.cos(2 * math.pi * step / steps)) / 2


@pytest.mark.parametrize("foreach", [False, None], ids=["reference", "fast"])
def test_a_schedule_of_a_rule_hyperparameter_takes_effect(foreach):
    """Editing ``group["first.beta"]`` between steps (with a LambdaLR on lr) gives what
    momenta.Adam gives when ``betas[0]`` follows the same schedule; not what it gives
    without the schedule."""
    beta = _cosine(0.8, 0.95, 8)

    def on_adam(opt, step):
        opt.param_groups[0]["betas"] = (beta(step), 0.999)

    def on_composed(opt, step):
        opt.param_groups[0]["first.beta"] = beta(step)

    runs = []
    for schedule in (on_adam, on_composed, None):
        params = _params()
        adam = momenta.Adam(params, lr=0.01, foreach=foreach)
        opt = adam if schedule is on_adam else _composed_twin(adam, params, foreach)
        lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 / (1 + step))
        for step in range(8):
            if schedule is not None:
                schedule(opt, step)
            _train(opt, params, 1, start=step)
            lr.step()
        runs.append((params, opt))
    (adam_params, adam), (params, composed), (plain_params, _) = runs
    _assert_identical(adam_params, adam, params, composed)
    assert composed.param_groups[0]["first.beta"] == beta(7)
    assert not torch.equal(params[0].detach(), plain_params[0].detach())


@pytest.fixture
def fresh_kernels(compiled_kernels, monkeypatch):
    """conftest's ``compiled_kernels``, from no compiled structures: kernels compiled by
    earlier tests in this process would not be built again."""
    monkeypatch.setattr(kernels, "_structures", {})
    monkeypatch.setattr(kernels, "_by_rules", {})
    return compiled_kernels


def test_composed_compiled_equals_the_builtin_and_its_schedule_never_recompiles(fresh_kernels):
    """On compiled kernels Composed(AdamW's rules) runs AdamW's kernel (bit for bit), and a
    schedule of ``first.beta`` and ``second.beta`` compiles nothing more."""
    runs, build_count = fresh_kernels
    beta = _cosine(0.85, 0.95, 6)
    params, twin_params = _params(), _params()
    adamw = momenta.AdamW(params, lr=0.01)
    twin = _composed_twin(adamw, twin_params, None)
    _train(adamw, params, 1)
    compiled = len(build_count)
    assert compiled > 0

    def on_adamw(opt, step):
        opt.param_groups[0]["betas"] = (beta(step), 0.99 + beta(step) / 100)

    def on_composed(opt, step):
        opt.param_groups[0]["first.beta"] = beta(step)
        opt.param_groups[0]["second.beta"] = 0.99 + beta(step) / 100

    _train(adamw, params, 6, start=1, schedule=on_adamw)
    before = len(runs)
    _train(twin, twin_params, 1)
    _train(twin, twin_params, 6, start=1, schedule=on_composed)
    assert len(runs) > before and all(runs)  # the twin's steps ran compiled kernels
    assert len(build_count) == compiled, "a schedule (or the twin) compiled another kernel"
    _assert_identical(params, adamw, twin_params, twin)


def test_composed_state_dict_round_trip(tmp_path):
    """A state_dict (an edited rule hyperparameter included) loads with weights_only into
    a new Composed, which continues exactly as the uninterrupted run."""
    params = _params()
    opt = momenta.Composed(params, LION, lr=0.01, weight_decay=0.1)
    _train(opt, params, 3)
    opt.param_groups[0]["first.beta1"] = 0.8
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = momenta.Composed(resumed_params, LION, lr=0.01, weight_decay=0.1)
    resumed.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    assert resumed.param_groups[0]["first.beta1"] == 0.8
    assert resumed.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    _train(opt, params, 3, start=3)
    _train(resumed, resumed_params, 3, start=3)
    _assert_identical(params, opt, resumed_params, resumed)


def test_composed_describes_itself_and_copies_with_its_rules():
    opt = momenta.Composed(_params(), LION, lr=0.01)
    text = repr(opt)
    assert text.startswith("Composed (") and "first.beta1: 0.9" in text and "first.beta2: 0.99" in text
    assert opt.formulas() == LION.formulas()
    assert opt.formulas()["update"] == "w ← w·(1 − lr·λ); w ← w − lr·sign(m)"
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert clone.template == LION and clone.formulas() == opt.formulas()


def test_composed_refuses_what_is_not_rules_and_torchs_bad_values():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(TypeError, match="Composed: rules must be a momenta.Rules, got AdamW"):
        momenta.Composed(p, momenta.AdamW(p), lr=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="^Invalid learning rate: -0.1$"):
        momenta.Composed(p, LION, lr=-0.1)
    with pytest.raises(TypeError, match="Invalid learning rate: 'fast'"):
        momenta.Composed(p, LION, lr="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="^Invalid epsilon value: -1.0$"):
        momenta.Composed(p, LION, lr=0.1, eps=-1.0)
    with pytest.raises(ValueError, match="^Invalid weight_decay value: -1.0$"):
        momenta.Composed(p, LION, lr=0.1, weight_decay=-1.0)
    with pytest.raises(TypeError, match="lr"):
        momenta.Composed(p, LION)  # type: ignore[call-arg]

    class Plain(FirstMoment):  # a rule that is not a dataclass
        formula = "m = g"

        def update(self, state, g, t):
            return g, {}

    with pytest.raises(TypeError, match="every rule in rules must be a dataclass"):
        momenta.Composed(p, momenta.Rules(Plain()), lr=0.1)


@pytest.mark.parametrize(
    "value,error,message",
    [
        (1.5, ValueError, r"'first.beta1': 1.5 \(Interpolated: invalid beta1: 1.5 \(expected 0.0 <= beta1 < 1.0\)\)"),
        (float("nan"), ValueError, r"'first.beta1': nan \(Interpolated: invalid beta1: nan"),
        ("0.9", TypeError, r"'first.beta1': '0.9' \(Interpolated: invalid beta1: '0.9' \(expected a number\)\)"),
    ],
)
def test_a_bad_group_value_is_refused_by_its_rule_naming_the_key(value, error, message):
    """At the step (nothing changes), in add_param_group, and in load_state_dict."""
    params = _params()
    opt = momenta.Composed(params, LION, lr=0.01)
    _train(opt, params, 1)
    before = [p.detach().clone() for p in params]
    opt.param_groups[0]["first.beta1"] = value
    with pytest.raises(error, match="^Invalid param group value " + message):
        _train(opt, params, 1, start=1)
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))
    opt.param_groups[0]["first.beta1"] = 0.9
    with pytest.raises(error, match=message):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "first.beta1": value})
    assert len(opt.param_groups) == 1
    saved = opt.state_dict()
    saved["param_groups"][0]["first.beta1"] = value
    with pytest.raises(ValueError, match="param group 0: Invalid param group value " + message):
        opt.load_state_dict(saved)
    assert opt.param_groups[0]["first.beta1"] == 0.9
