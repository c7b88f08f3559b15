"""A new optimizer in about ten lines: AdaBelief's V rule, exactly as in README."""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch

import momenta
from momenta.rules import EMA, SecondMoment


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
    assert opt.formulas()["V"] == "s = β·s + (1−β)·(g − m)², ŝ = s/(1−βᵗ)"


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
