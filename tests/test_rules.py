"""Rules are small immutable values doing pure tensor math; Rules joins them as documented."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import momenta
from momenta import Rules
from momenta.rules import EMA, AMSGrad, EMASq, FirstMoment, Gradient, Momentum, One, SumSq

FIRST = [Gradient(), EMA(0.9), EMA(0.8, bias_correction=True), Momentum(0.9), Momentum(0.9, 0.1), Momentum(0.9, nesterov=True)]
SECOND = [One(), SumSq(), SumSq(0.1, 0.5), EMASq(0.99), EMASq(0.9, bias_correction=True), EMASq(0.9, centered=True), AMSGrad(EMASq(0.99, True))]


def _state(rule, p):
    state = rule.init(p)
    return {k: v + torch.rand_like(v) for k, v in state.items()}


@pytest.mark.parametrize("rule", FIRST + SECOND, ids=repr)
def test_rules_are_frozen_values(rule):
    assert dataclasses.is_dataclass(rule)
    field = dataclasses.fields(rule)[0].name if dataclasses.fields(rule) else None
    if field:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(rule, field, 0.5)
    assert rule == dataclasses.replace(rule)
    assert rule.formula


@pytest.mark.parametrize("rule", FIRST + SECOND, ids=repr)
def test_update_is_pure(rule):
    p, g, m = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    state = _state(rule, p)
    before = {k: v.clone() for k, v in state.items()}
    g0 = g.clone()
    if isinstance(rule, FirstMoment):
        out, updates = rule.update(state, g, 3.0)
    else:
        out, updates = rule.update(state, g, m, 3.0)
    assert torch.equal(g, g0)
    assert all(torch.equal(state[k], before[k]) for k in state)
    assert set(updates) <= set(state) | {"momentum_buffer"}
    assert out is None or out.shape == p.shape


def test_first_moment_formulas():
    g = torch.tensor([2.0])
    m, up = EMA(0.9).update({"exp_avg": torch.tensor([1.0])}, g, 1.0)
    torch.testing.assert_close(m, torch.tensor([0.9 * 1 + 0.1 * 2]))
    assert EMA(0.9, bias_correction=True).correction(2.0) == pytest.approx(1 - 0.81)
    m, up = Momentum(0.9, 0.5).update({}, g, 1.0)  # first step: buf = g, no dampening
    assert torch.equal(m, g) and torch.equal(up["momentum_buffer"], g)
    m, up = Momentum(0.9, 0.5).update({"momentum_buffer": torch.tensor([1.0])}, g, 2.0)
    torch.testing.assert_close(m, torch.tensor([0.9 + 0.5 * 2]))
    m, _ = Momentum(0.9, nesterov=True).update({"momentum_buffer": torch.tensor([1.0])}, g, 2.0)
    torch.testing.assert_close(m, torch.tensor([2 + 0.9 * (0.9 + 2)]))


def test_second_moment_formulas():
    g = torch.tensor([2.0])
    v, _ = SumSq().update({"sum": torch.tensor([1.0])}, g, None, 1.0)
    assert torch.equal(v, torch.tensor([5.0]))
    assert SumSq(lr_decay=0.5).decay(3.0) == 2.0
    v, up = EMASq(0.5, centered=True).update(
        {"exp_avg_sq": torch.tensor([1.0]), "grad_avg": torch.tensor([1.0])}, g, None, 1.0
    )
    torch.testing.assert_close(v, torch.tensor([0.5 + 0.5 * 4 - 1.5**2]))
    v, up = AMSGrad(EMASq(0.5)).update(
        {"exp_avg_sq": torch.tensor([10.0]), "max_exp_avg_sq": torch.tensor([3.0])}, g, None, 1.0
    )
    assert torch.equal(v, torch.tensor([7.0])) and torch.equal(up["max_exp_avg_sq"], v)
    with pytest.raises(ValueError, match="AMSGrad needs a second moment"):
        AMSGrad(One()).update({"max_exp_avg_sq": g}, g, None, 1.0)


def test_the_step_root_of_c2_is_taken_once_on_the_host():
    """√c₂ is a number of the step (Scalars.root_c2, taken in float64 as torch takes its bias
    corrections' roots), handed to the denominator in its state: a compiled kernel reads it
    instead of taking the root in every vector iteration; without it the rule takes it."""
    from momenta.engine.reference import Hyper, Scalars
    from momenta.rules.base import ROOT_C2

    rules = Rules(EMA(0.9, True), EMASq(0.999, True), weight_decay="decoupled")
    group = {"lr": 1e-3, "eps": 1e-8, "weight_decay": 0.0, "maximize": False}
    s = Scalars.of(rules, Hyper.of(group), 3.0)
    assert s.root_c2 == (1 - 0.999**3) ** 0.5 and s.c2 == 1 - 0.999**3
    v = torch.tensor([4.0, 9.0])
    assert torch.equal(rules.second.denominator(v, s.c2, 0.0, "outside", 3.0, {}), v.sqrt() / s.c2**0.5)
    assert torch.equal(rules.second.denominator(v, s.c2, 0.0, "outside", 3.0, {ROOT_C2: 2.0}), v.sqrt() / 2.0)
    assert torch.equal(rules.second.denominator(v, s.c2, 0.0, "uncorrected", 3.0, {ROOT_C2: 2.0}), v.sqrt() / 2.0)


def test_rules_validate_themselves():
    with pytest.raises(TypeError, match="Rules.first must be a FirstMoment"):
        Rules(EMASq(0.9))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Rules.second must be a SecondMoment"):
        Rules(EMA(0.9), EMA(0.9))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Invalid Rules.precondition: 'after'"):
        Rules(precondition="after")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs the step count"):
        Rules(EMA(0.9, bias_correction=True), count_steps=False)


def _one_step(rules, p0, g, **defaults):
    p = p0.clone().requires_grad_()
    p.grad = g.clone()
    momenta.Composed([p], rules, **defaults).step()
    return p.detach()


def test_eps_placement_and_zero_over_zero():
    p0, g = torch.tensor([1.0, 1.0], dtype=torch.float64), torch.tensor([2.0, 0.0], dtype=torch.float64)
    out = _one_step(Rules(Gradient(), SumSq()), p0, g, lr=0.1, eps=0.5)
    assert out[0].item() == pytest.approx(1 - 0.1 * 2 / (2 + 0.5), rel=1e-15)
    out = _one_step(Rules(Gradient(), SumSq(), eps="inside"), p0, g, lr=0.1, eps=0.5)
    assert out[0].item() == pytest.approx(1 - 0.1 * 2 / (4 + 0.5) ** 0.5, rel=1e-15)
    assert torch.isnan(_one_step(Rules(Gradient(), SumSq()), p0, g, lr=0.1, eps=0.0)[1])
    out = _one_step(Rules(Gradient(), SumSq(), zero_over_zero=True), p0, g, lr=0.1, eps=0.0)
    assert torch.equal(out, torch.tensor([0.9, 1.0], dtype=torch.float64))


def test_precondition_gradient_puts_momentum_after_division():
    p0, g = torch.tensor([1.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    rules = Rules(Momentum(0.9), SumSq(), precondition="gradient")
    p = p0.clone().requires_grad_()
    opt = momenta.Composed([p], rules, lr=0.1, eps=0.0)
    for _ in range(2):
        p.grad = g.clone()
        opt.step()
    d1, d2 = 2 / 2, 2 / 8**0.5  # g/√V at steps 1 and 2
    torch.testing.assert_close(p.detach(), p0 - 0.1 * d1 - 0.1 * (0.9 * d1 + d2))


def test_decoupled_weight_decay_and_maximize():
    p0, g = torch.tensor([2.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    out = _one_step(Rules(weight_decay="decoupled"), p0, g, lr=0.1, weight_decay=0.5, maximize=True)
    torch.testing.assert_close(out, p0 * (1 - 0.05) + 0.1 * g)
    out = _one_step(Rules(), p0, g, lr=0.1, weight_decay=0.5)
    torch.testing.assert_close(out, p0 - 0.1 * (g + 0.5 * p0))


def test_complex_parameters_use_their_real_view():
    z = torch.tensor([1 + 2j], dtype=torch.complex128)
    gz = torch.tensor([0.5 - 1j], dtype=torch.complex128)
    out = _one_step(Rules(Gradient(), SumSq()), z, gz, lr=0.1, eps=0.0)
    expected = torch.view_as_real(z) - 0.1 * torch.sign(torch.view_as_real(gz))
    torch.testing.assert_close(torch.view_as_real(out), expected)


def test_subclass_must_define_rules():
    class Incomplete(momenta.Optimizer):
        def __init__(self, params):
            super().__init__(params, dict(lr=0.1))

    class NoLearningRate(momenta.Optimizer):
        def __init__(self, params):
            super().__init__(params, dict(eps=1e-8))

        def rules(self, group):
            return Rules()

    with pytest.raises(TypeError, match="abstract"):
        Incomplete([torch.zeros(1, requires_grad=True)])
    with pytest.raises(TypeError, match="needs an 'lr'"):
        NoLearningRate([torch.zeros(1, requires_grad=True)])


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop"])
def test_every_optimizer_states_its_formulas(name):
    opt = getattr(momenta, name)([torch.zeros(1, requires_grad=True)])
    f = opt.formulas()
    assert set(f) == {"m", "V", "update"} and all(f.values())


def test_centered_variance_never_goes_below_zero():
    """Found by tests/test_fuzz.py: with β≈0, E[g²] − E[g]² rounds below 0 and √ gives NaN."""
    rule = EMASq(1.192092896e-07, centered=True)
    g = torch.tensor([0.3, -1.7, 2.9, 1e-3])
    state = rule.init(g)
    for _ in range(3):
        v, updates = rule.update(state, g, None, 1.0)
        state = updates
        assert (v >= 0).all()


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: EMA(1.0), r"EMA: invalid beta: 1.0 \(expected 0.0 <= beta < 1.0\)"),
        (lambda: EMA(-0.1), "EMA: invalid beta: -0.1"),
        (lambda: EMA(float("nan")), "EMA: invalid beta: nan"),
        (lambda: Momentum(-0.9), r"Momentum: invalid momentum: -0.9 \(expected momentum >= 0.0\)"),
        (lambda: SumSq(-1.0), "SumSq: invalid initial: -1.0"),
        (lambda: SumSq(0.0, -0.5), "SumSq: invalid lr_decay: -0.5"),
        (lambda: EMASq(-0.5), "EMASq: invalid beta: -0.5"),
    ],
)
def test_rules_check_their_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()
    with pytest.raises(TypeError, match="expected a number"):
        EMA("0.9")  # type: ignore[arg-type]
