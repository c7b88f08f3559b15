"""AdamW over coded states: the accuracy yardstick of low-precision optimizer state.

One step, every buffer stored by a :class:`~momenta.precision.codecs.Codec` (or in float32)::

    m, V  = decode(m codes), decode(V codes)                 (float32)
    p     ← p · (1 − lr·λ)
    m     ← β₁·m + (1 − β₁)·g          V ← β₂·V + (1 − β₂)·g²
    p     ← p − lr/c₁ · m / (√V / √c₂ + ε)                   (c_k = 1 − β_kᵗ, torch's order)
    codes ← encode(m), encode(V)

The measure of a run (the issue's): ``drift = ‖p_T − p_T^fp32‖ / ‖p_T^fp32 − p_0‖``, the
distance of the final parameters from the float32 run's on the same gradients, relative to how
far the float32 run moved.

:func:`coded_adamw_step` is a pure function of tensors (per-step scalars in a named tuple of
0-dim tensors), the shape of the engine's future kernel: ``torch.compile`` makes one loop of
it. :func:`gradient_streams` gives seeded gradients to replay, so every optimizer compared
sees the same ones.

Args of the gradient streams: ``"mlp"`` records the gradients of a small MLP (three bias-free
linear layers, a fixed teacher-student regression) trained by float32 AdamW; ``"wide"`` is
random but seeded, with what quantisation finds hard: per-column scales spread over five
decades inside a block, heavy tails (Student t, 3 degrees of freedom), a persistent mean, and
rows that get a gradient in a third of the steps only (like embeddings).

Source: the measurement of issue 14; AdamW as ``torch.optim.AdamW`` (Loshchilov & Hutter,
"Decoupled Weight Decay Regularization", ICLR 2019).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .codecs import Codec


class AdamWScalars(NamedTuple):
    """One step's numbers (0-dim float32 tensors in a compiled step, so none recompiles)."""

    lr: Tensor | float
    beta1: Tensor | float
    beta2: Tensor | float
    eps: Tensor | float
    weight_decay: Tensor | float
    c1: Tensor | float
    """1 − β₁ᵗ"""
    sqrt_c2: Tensor | float
    """√(1 − β₂ᵗ)"""


def adamw_scalars(t: int, lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> AdamWScalars:
    """The scalars of step ``t`` (1-based), as 0-dim float32 tensors."""
    b1, b2 = betas
    values = (lr, b1, b2, eps, weight_decay, 1 - b1**t, (1 - b2**t) ** 0.5)
    return AdamWScalars(*(torch.tensor(v, dtype=torch.float32) for v in values))


def adamw_update(p: Tensor, g: Tensor, m: Tensor, v: Tensor, s: AdamWScalars) -> tuple[Tensor, Tensor, Tensor]:
    """``(p, m, V)`` after one AdamW step, float32, in torch's order of operations."""
    p = p * (1 - s.lr * s.weight_decay)
    m = m + (g - m) * (1 - s.beta1)
    v = v * s.beta2 + (1 - s.beta2) * g * g
    p = p - (s.lr / s.c1) * m / (v.sqrt() / s.sqrt_c2 + s.eps)
    return p, m, v


class CodedState(NamedTuple):
    """A buffer as stored: codes and scales, or (``scales`` None) a float32 tensor."""

    codes: Tensor
    scales: Tensor | None


def store(codec: Codec | None, x: Tensor) -> CodedState:
    """``x`` stored by ``codec`` (None: float32)."""
    if codec is None:
        return CodedState(x.to(torch.float32), None)
    return CodedState(*codec.encode(x))


def load(codec: Codec | None, state: CodedState) -> Tensor:
    """The float32 values of a stored buffer."""
    if codec is None or state.scales is None:
        return state.codes
    return codec.decode(state.codes, state.scales)


def coded_adamw_step(
    p: Tensor,
    g: Tensor,
    m: CodedState,
    v: CodedState,
    s: AdamWScalars,
    codec_m: Codec | None,
    codec_v: Codec | None,
) -> tuple[Tensor, CodedState, CodedState]:
    """decode → AdamW → encode: the new ``p`` and stored ``m``, ``V`` (pure)."""
    p, m_new, v_new = adamw_update(p, g, load(codec_m, m), load(codec_v, v), s)
    return p, store(codec_m, m_new), store(codec_v, v_new)


def run_coded_adamw(
    p0: Sequence[Tensor],
    grads: Iterable[Sequence[Tensor]],
    codec_m: Codec | None,
    codec_v: Codec | None,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
) -> list[Tensor]:
    """The final parameters of AdamW with coded states, replaying ``grads`` step by step."""
    params = [p.clone().to(torch.float32) for p in p0]
    ms = [store(codec_m, torch.zeros_like(p)) for p in params]
    vs = [store(codec_v, torch.zeros_like(p)) for p in params]
    for t, gs in enumerate(grads, start=1):
        s = adamw_scalars(t, lr, betas, eps, weight_decay)
        for i, g in enumerate(gs):
            params[i], ms[i], vs[i] = coded_adamw_step(
                params[i], g.to(torch.float32), ms[i], vs[i], s, codec_m, codec_v
            )
    return params


def run_torch_optimizer(
    p0: Sequence[Tensor],
    grads: Iterable[Sequence[Tensor]],
    make: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
) -> list[Tensor]:
    """The final parameters of any torch optimizer (torch, torchao, bitsandbytes) on ``grads``."""
    params = [torch.nn.Parameter(p.clone().to(torch.float32)) for p in p0]
    opt = make(params)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone().to(torch.float32)
        opt.step()
    return [p.detach().clone() for p in params]


def drift(final: Sequence[Tensor], reference: Sequence[Tensor], start: Sequence[Tensor]) -> float:
    """``‖p − p_ref‖ / ‖p_ref − p_0‖`` over all parameters together."""
    num = sum(float((a.double() - b.double()).pow(2).sum()) for a, b in zip(final, reference))
    den = sum(float((b.double() - c.double()).pow(2).sum()) for b, c in zip(reference, start))
    return (num / den) ** 0.5


def gradient_streams(
    kind: str, steps: int, widths: Sequence[int] = (64, 256, 256, 16), seed: int = 0
) -> tuple[list[Tensor], list[list[Tensor]]]:
    """``(p0, grads)``: starting parameters and a gradient list a step (see the module).

    ``widths`` are the MLP's layer widths; the parameters are its weight matrices, flattened
    (each a multiple of 256 elements, and at least 4096, for the libraries compared).
    """
    gen = torch.Generator().manual_seed(seed)
    shapes = [(o, i) for i, o in zip(widths[:-1], widths[1:])]
    p0 = [torch.randn(s, generator=gen) / s[1] ** 0.5 for s in shapes]
    if kind == "mlp":
        return [p.reshape(-1) for p in p0], _mlp_gradients(p0, steps, gen)
    if kind == "wide":
        return [p.reshape(-1) for p in p0], _wide_gradients(shapes, steps, gen)
    raise ValueError(f"Invalid gradient stream: {kind!r} ('mlp' or 'wide')")


def _mlp_gradients(p0: list[Tensor], steps: int, gen: torch.Generator) -> list[list[Tensor]]:
    n_in, n_out = p0[0].shape[1], p0[-1].shape[0]
    teacher = [torch.randn(32, n_in, generator=gen), torch.randn(n_out, 32, generator=gen)]
    params = [p.clone().requires_grad_() for p in p0]
    opt = torch.optim.AdamW(params, lr=1e-3)
    out: list[list[Tensor]] = []
    for _ in range(steps):
        x = torch.randn(64, n_in, generator=gen)
        with torch.no_grad():
            y = torch.tanh(x @ teacher[0].T / n_in**0.5) @ teacher[1].T
        h = x
        for i, w in enumerate(params):
            h = h @ w.T
            if i < len(params) - 1:
                h = torch.relu(h)
        loss = (h - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        out.append([p.grad.detach().reshape(-1).clone() for p in params])  # type: ignore[union-attr]
        opt.step()
    return out


def _wide_gradients(shapes: list[tuple[int, int]], steps: int, gen: torch.Generator) -> list[list[Tensor]]:
    cols = [10 ** (-5 * torch.rand(s[1], generator=gen)) for s in shapes]
    means = [torch.randn(s, generator=gen) * 0.5 for s in shapes]
    out: list[list[Tensor]] = []
    for _ in range(steps):
        gs = []
        for s, col, mean in zip(shapes, cols, means):
            chi2 = torch.randn((3, *s), generator=gen).pow(2).sum(0)
            noise = torch.randn(s, generator=gen) / (chi2 / 3).sqrt()  # Student t, 3 dof
            rows = (torch.rand(s[0], 1, generator=gen) < 1 / 3).to(torch.float32)
            gs.append(((mean + noise) * col * rows).reshape(-1))
        out.append(gs)
    return out
