"""Rules that see whole matrices (Factored, ClipRMS, RelativeStep, Orthogonalize,
ShapeScaled, TrustRatio) and the optimizers made of them (Adafactor, Muon)."""

from __future__ import annotations

import math

import pytest
import torch

import momenta
from momenta import Rules
from momenta.engine import flat, reference
from momenta.rules import EMA, ClipRMS, Factored, Gradient, Orthogonalize, RelativeStep, ShapeScaled, TrustRatio

NOT_ELEMENTWISE = {
    "Factored": Rules(Gradient(), Factored()),
    "ClipRMS": Rules(direction=ClipRMS()),
    "RelativeStep": Rules(iterate=RelativeStep()),
    "Orthogonalize": Rules(EMA(0.9), direction=Orthogonalize()),
    "ShapeScaled": Rules(iterate=ShapeScaled()),
}


@pytest.mark.parametrize("name", list(NOT_ELEMENTWISE))
def test_rules_that_see_whole_parameters_take_the_reference_path(name, monkeypatch):
    """Even with ``foreach=True``: one parameter at a time, never a flat buffer."""
    rules = NOT_ELEMENTWISE[name]
    assert not rules.elementwise and not rules.flat
    stepped = []
    step = reference.step
    monkeypatch.setattr(reference, "step", lambda p, *args: (stepped.append(p), step(p, *args)))

    def forbidden(*args, **kwargs):
        raise AssertionError("a rule that is not elementwise reached the fast path")

    monkeypatch.setattr(flat.FlatGroup, "gather", forbidden)
    params = [torch.randn(4, 3, requires_grad=True), torch.randn(3, 5, requires_grad=True)]
    opt = momenta.Composed(params, rules, lr=0.01, foreach=True)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    assert [id(p) for p in stepped] == [id(p) for p in params] * 2


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.1, "maximize": True, "d": 1.2}])
def test_adafactor_foreach_gives_torchs_numbers(kwargs):
    """foreach=True (torch's multi-tensor Adafactor) and the for-loop agree with momenta,
    whose rules run on the reference path either way; a batch of matrices included."""
    shapes = [(5, 4), (2, 3, 4), (4,), ()]
    results = []
    for cls, foreach in [(torch.optim.Adafactor, True), (torch.optim.Adafactor, False), (momenta.Adafactor, True)]:
        g = torch.Generator().manual_seed(0)
        params = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]
        opt = cls(params, foreach=foreach, **kwargs)
        for _ in range(4):
            for p in params:
                p.grad = torch.sin(p.detach()) + torch.randn(p.shape, generator=g, dtype=torch.float64)
            opt.step()
        results.append(params)
    for theirs in results[:2]:
        for a, e in zip(results[2], theirs):
            torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["Adafactor", "Muon"])
def test_complex_parameters_refused_before_anything_changes(name):
    real = torch.randn(3, 2, requires_grad=True)
    complex_ = torch.randn(3, 2, dtype=torch.complex64, requires_grad=True)
    real.grad, complex_.grad = torch.ones_like(real), torch.ones_like(complex_)
    before = real.detach().clone()
    opt = getattr(momenta, name)([{"params": [real]}, {"params": [complex_]}])
    with pytest.raises(RuntimeError, match=f"{name} does not support complex parameters"):
        opt.step()
    assert torch.equal(real, before) and not opt.state


# -- Orthogonalize ------------------------------------------------------------------------


def _matrix(shape, singular_values):
    """U·diag(s)·Vᵀ with random orthonormal U, V: (matrix, U, V)."""
    g = torch.Generator().manual_seed(0)
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], k, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(shape[1], k, generator=g, dtype=torch.float64))
    return u @ torch.diag(singular_values) @ v.T, u, v


@pytest.mark.parametrize("shape", [(8, 5), (5, 8)], ids=["tall", "wide"])
def test_orthogonalize_makes_a_semi_orthogonal_matrix(shape):
    d, u, v = _matrix(shape, torch.logspace(1, -1, min(shape), dtype=torch.float64))  # s from 10 to 0.1
    # Keller Jordan's quintic: d's singular vectors, its singular values taken to about 1
    o = Orthogonalize().orthogonalize(d).double()
    assert o.shape == d.shape
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.5 and s.max() < 1.5
    core = u.T @ o @ v  # diagonal: the singular vectors are d's
    assert (core - torch.diag(torch.diagonal(core))).abs().max() < 0.05
    # the cubic Newton–Schulz iteration converges to the polar factor U·Vᵀ (bfloat16's precision)
    polar = Orthogonalize((1.5, -0.5, 0.0), steps=40).orthogonalize(d).double()
    torch.testing.assert_close(polar, u @ v.T, rtol=0, atol=0.05)
    gram = polar.T @ polar if shape[0] > shape[1] else polar @ polar.T
    torch.testing.assert_close(gram, torch.eye(min(shape), dtype=torch.float64), rtol=0, atol=0.05)


def test_orthogonalize_needs_matrices():
    with pytest.raises(ValueError, match="2-D"):
        Orthogonalize().orthogonalize(torch.randn(4))


def test_shape_scaled_steps_by_lr_times_the_shapes_scale():
    assert ShapeScaled().scale(torch.Size([8, 5])) == math.sqrt(8 / 5)
    assert ShapeScaled().scale(torch.Size([5, 8])) == 1.0
    assert ShapeScaled("match_rms_adamw").scale(torch.Size([5, 8])) == 0.2 * math.sqrt(8)
    assert ShapeScaled("none").scale(torch.Size([8, 5])) == 1.0
    with pytest.raises(ValueError, match="adjust_lr"):
        ShapeScaled("rms")  # type: ignore[arg-type]
    w, d = torch.randn(8, 5), torch.randn(8, 5)
    (base, alpha, direction), _ = ShapeScaled().apply({}, w, d, 0.01, 0.01, 0.999, math.nan)
    # lr·s is the add's alpha, one number (torch's adjusted lr); the decay takes lr alone
    assert alpha == -(0.01 * math.sqrt(8 / 5)) and direction is d
    assert torch.equal(base, w * 0.999)
    # a float32 tensor lr: lr·s taken in float32, as torch.optim.Muon does
    lr = torch.tensor(0.01)
    (_, alpha, _), _ = ShapeScaled().apply({}, w, d, lr.item(), lr, None, math.nan)
    assert alpha == -(lr * math.sqrt(8 / 5)).item() != -(lr.item() * math.sqrt(8 / 5))


@pytest.mark.parametrize(
    "kwargs",
    [{}, dict(nesterov=False, weight_decay=0.1, adjust_lr_fn="match_rms_adamw", ns_steps=3, momentum=0.8)],
    ids=["defaults", "others"],
)
def test_muon_with_adamw_steps_its_matrices_as_muon(kwargs):
    """One definition of Muon's rules: MuonWithAdamW's Muon groups have Muon's rules and
    numbers (bit for bit, tall and wide matrices), its other parameters AdamW's."""
    g = torch.Generator().manual_seed(0)
    shapes = [(6, 3), (3, 5), (5,)]
    start = [torch.randn(s, generator=g, dtype=torch.float32) for s in shapes]
    grads = [[torch.randn(s, generator=g, dtype=torch.float32) for s in shapes] for _ in range(4)]
    adamw = dict(adamw_lr=0.01, adamw_betas=(0.9, 0.99), adamw_eps=1e-8, adamw_weight_decay=0.05)
    both = [p.clone().requires_grad_() for p in start]
    muon = [p.clone().requires_grad_() for p in start[:2]]
    torch_adamw = [start[2].clone().requires_grad_()]
    opts = [
        momenta.MuonWithAdamW(both, lr=0.02, **kwargs, **adamw),
        momenta.Muon(muon, lr=0.02, **{"weight_decay": 0.0, **kwargs}),
        torch.optim.AdamW(torch_adamw, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05),
    ]
    assert opts[0].rules(opts[0].param_groups[0]) == opts[1].rules(opts[1].param_groups[0])
    for step in grads:
        for params in (both, muon + torch_adamw):
            for p, grad in zip(params, step):
                p.grad = grad.clone()
        for opt in opts:
            opt.step()
    for a, e in zip(both[:2], muon):
        assert torch.equal(a, e)
    torch.testing.assert_close(both[2], torch_adamw[0], rtol=1e-6, atol=1e-7)


# -- Factored -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,buffers",
    [
        ((), {"variance": ()}),
        ((4,), {"variance": (4,)}),
        ((5, 4), {"row_var": (5, 1), "col_var": (1, 4)}),
        ((2, 5, 4), {"row_var": (2, 5, 1), "col_var": (2, 1, 4)}),
    ],
    ids=["0-D", "1-D", "2-D", "3-D"],
)
def test_factored_keeps_a_row_and_a_column_per_matrix(shape, buffers):
    rule, p = Factored(), torch.randn(shape, dtype=torch.float64)
    assert {k: tuple(v.shape) for k, v in rule.init(p).items()} == buffers
    assert Rules(second=rule).initial_buffers(p) == {k: torch.Size(v) for k, v in buffers.items()}
    assert set(buffers) <= set(rule.buffers())
    g = torch.randn(shape, dtype=torch.float64)
    v, updates = rule.update(rule.init(p), g, None, 1.0)
    assert v.shape == shape and {k: tuple(b.shape) for k, b in updates.items()} == buffers


def test_factored_is_exact_for_rank_one_squares():
    """At the first step (weight 1), R·C/mean(R) is g² itself when g² has rank one, for
    each matrix of a batch."""
    a, b = torch.randn(2, 5, 1, dtype=torch.float64), torch.randn(2, 1, 4, dtype=torch.float64)
    g = a * b
    rule = Factored()
    v, _ = rule.update(rule.init(g), g, None, 1.0)
    torch.testing.assert_close(v, g * g, rtol=1e-12, atol=0)


def test_trust_ratios_are_segmented_not_reference_only():
    """TrustRatio takes whole-parameter norms only: flat buffers with per-parameter
    segments can run it (tests/test_fast_path_family.py checks the numbers)."""
    rules = Rules(direction=TrustRatio(0.01))
    assert not rules.elementwise and rules.flat
