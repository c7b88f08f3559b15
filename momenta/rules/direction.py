"""Direction rules: what the step direction ``d = m̂ / (√V̂ + ε)`` becomes.

| rule | D(d) | elementwise |
|---|---|---|
| :class:`Identity` | ``d`` | yes |
| :class:`Sign` | ``sign(d)`` | yes |
| :class:`TrustRatio` | ``η·‖w‖/‖d‖ · d`` (1 where a norm is 0) | no: segmented (two norms) |
| :class:`ClipRMS` | ``d / max(1, RMS(d)/c)`` | no (one norm) |
| :class:`Orthogonalize` | Newton–Schulz ``≈ U·Vᵀ`` of ``d = U·S·Vᵀ`` | no (matrix) |
| :class:`LocalLR` | ``η·‖w‖/(‖g‖ + λ‖w‖ + ε) · d`` for ``d = g + λ·w`` (LARS; 1 where a norm is 0) | no (two norms) |

A rule that is not elementwise sees whole parameters: the engine runs it on the reference
path, one parameter at a time, unless it is ``segmented``: its only whole-parameter
quantities are norms, taken with the ``norm`` argument of :meth:`apply` (default
:func:`~momenta.rules.base.norm`). Then flat buffers serve, eagerly: the engine passes a
``norm`` that gives each element its own parameter's norm. Its norms are over the whole parameter, so under FSDP2
(a DTensor shard) they are computed by DTensor over the full tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Direction, Norm, State, Updates, check, norm


@dataclass(frozen=True)
class Identity(Direction):
    """D(d) = d: the direction as the moments give it (most optimizers)."""

    @property
    def formula(self) -> str:
        return "{d}"

    def apply(self, state: State, d: Tensor, w: Tensor, t: float) -> tuple[Tensor, Updates]:
        return d, {}


@dataclass(frozen=True)
class Sign(Direction):
    """D(d) = sign(d): every coordinate moves by exactly the step size (Lion, signSGD).

    Source: Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems",
    ICML 2018; Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023.
    """

    @property
    def formula(self) -> str:
        return "sign({d})"

    def apply(self, state: State, d: Tensor, w: Tensor, t: float) -> tuple[Tensor, Updates]:
        return d.sign(), {}


@dataclass(frozen=True)
class TrustRatio(Direction):
    """D(d) = η · ‖w‖ / (‖d‖ + ε) · d, and D(d) = d where ‖w‖ = 0 or ‖d‖ = 0.

    A layer-wise step: every parameter tensor moves by a fixed fraction of its own norm,
    whatever the scale of its gradient (LARS over the gradient, LAMB over Adam's direction).

    Args:
        coefficient: η, the trust coefficient (LARS: 0.001; LAMB: 1).
        eps: ε, added to ``‖d‖``.

    Source: You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks",
    2017 (LARS); You et al., "Large Batch Optimization for Deep Learning: Training BERT in
    76 minutes", ICLR 2020 (LAMB).
    """

    coefficient: float = 1.0
    eps: float = 0.0
    elementwise = False
    segmented = True

    def __post_init__(self) -> None:
        check(self, "coefficient", 0.0)
        check(self, "eps", 0.0)

    @property
    def formula(self) -> str:
        return "η·‖w‖/‖{d}‖·{d}" if self.coefficient != 1 else "‖w‖/‖{d}‖·{d}"

    def apply(self, state: State, d: Tensor, w: Tensor, t: float, norm: Norm = norm) -> tuple[Tensor, Updates]:
        w_norm, d_norm = norm(w), norm(d)
        ratio = self.coefficient * w_norm / (d_norm + self.eps)
        ratio = torch.where((w_norm > 0) & (d_norm > 0), ratio, torch.ones_like(ratio))
        return ratio * d, {}


@dataclass(frozen=True)
class ClipRMS(Direction):
    """D(d) = d / max(1, RMS(d) / c): the update's root mean square is clipped at ``c``.

    Args:
        threshold: c (Adafactor's ``d``, default 1).

    Source: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", ICML 2018, section 6 ("update clipping").
    """

    threshold: float = 1.0
    elementwise = False

    def __post_init__(self) -> None:
        check(self, "threshold", 0.0)

    @property
    def formula(self) -> str:
        return "{d}/max(1, RMS({d})/c)"

    def apply(self, state: State, d: Tensor, w: Tensor, t: float) -> tuple[Tensor, Updates]:
        rms = norm(d) / (max(d.numel(), 1) ** 0.5 * self.threshold)
        return d / rms.clamp_min(1.0), {}


#: Keller Jordan's quintic Newton–Schulz coefficients (torch.optim.Muon's defaults).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


@dataclass(frozen=True)
class Orthogonalize(Direction):
    """D(d) = NSₖ(d): d's nearest semi-orthogonal matrix, by Newton–Schulz.

    ``X ← d / max(‖d‖_F, ε)`` (transposed when tall), then ``k`` times
    ``X ← a·X + (b·A + c·A²)·X`` with ``A = X·Xᵀ``, in bfloat16 as torch does: the
    singular values of ``d`` go to roughly 1 (``U·S'·Vᵀ`` with ``S' ≈ 1``). The result is
    the bfloat16 one, exactly (in the parameter's dtype). Only for 2-D parameters; Muon
    scales the step by the matrix's shape (:class:`~momenta.rules.iterate.ShapeScaled`).

    Args:
        coefficients: (a, b, c) of the quintic iteration.
        steps: k, the number of iterations (< 100).
        eps: ε, the floor of the norm that first normalises ``d``.

    Source: Jordan et al., "Muon: An optimizer for hidden layers in neural networks",
    2024 (kellerjordan.github.io/posts/muon). Matches ``torch.optim.Muon``'s
    ``_zeropower_via_newtonschulz``, op for op.
    """

    coefficients: tuple[float, float, float] = NS_COEFFICIENTS
    steps: int = 5
    eps: float = 1e-7
    elementwise = False

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or not 0 <= self.steps < 100:
            raise ValueError(f"Orthogonalize: invalid steps: {self.steps!r} (expected 0 <= steps < 100)")
        if len(tuple(self.coefficients)) != 3:
            raise ValueError(f"Orthogonalize: invalid coefficients: {self.coefficients!r} (expected (a, b, c))")

    @property
    def formula(self) -> str:
        return "NS({d})"

    def orthogonalize(self, d: Tensor) -> Tensor:
        """NSₖ(d), in bfloat16 (the iteration is robust to its rounding, and this is what
        torch.optim.Muon computes)."""
        if d.dim() != 2:
            raise ValueError(f"Orthogonalize needs 2-D parameters, got one of shape {tuple(d.shape)}")
        a, b, c = self.coefficients
        x = d.bfloat16()
        tall = d.size(0) > d.size(1)
        if tall:
            x = x.T
        x = x / x.norm().clamp(min=self.eps)
        for _ in range(self.steps):
            gram = x @ x.T
            poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
            x = torch.addmm(x, poly, x, beta=a)
        return x.T if tall else x

    def apply(self, state: State, d: Tensor, w: Tensor, t: float) -> tuple[Tensor, Updates]:
        # bfloat16 → w's dtype is exact: the step adds torch's numbers, times lr·s as one alpha
        return self.orthogonalize(d).to(w.dtype), {}


@dataclass(frozen=True)
class LocalLR(Direction):
    """LARS's local learning rate: D(d) = η·‖w‖ / (‖g‖ + λ·‖w‖ + ε) · d, for d = g + λ·w.

    The weight decay enters the denominator as ``λ·‖w‖``, not inside the norm
    (:class:`TrustRatio` over ``d`` would divide by ``‖g + λ·w‖``, optax's LARS). The rule
    is given ``d = g + λ·w`` (``Rules(weight_decay="direction")``, the same λ) and takes
    ``g = d − λ·w`` back from it. Where ``‖w‖ = 0`` or ``‖g‖ = 0`` the ratio is 1, as in
    the reference implementations.

    Args:
        coefficient: η, the trust coefficient (the paper's 0.001).
        weight_decay: λ, the group's weight decay (β in the paper).
        eps: ε, added to the denominator.

    Source: You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks",
    2017 (arXiv:1708.03888), Algorithm 1.
    """

    coefficient: float = 1e-3
    weight_decay: float = 0.0
    eps: float = 0.0
    elementwise = False
    segmented = True

    def __post_init__(self) -> None:
        check(self, "coefficient", 0.0)
        check(self, "weight_decay", 0.0)
        check(self, "eps", 0.0)

    @property
    def formula(self) -> str:
        return "η·‖w‖/(‖g‖ + λ‖w‖)·{d}"

    def apply(self, state: State, d: Tensor, w: Tensor, t: float, norm: Norm = norm) -> tuple[Tensor, Updates]:
        w_norm = norm(w)
        g_norm = norm(d - self.weight_decay * w) if self.weight_decay != 0 else norm(d)
        ratio = self.coefficient * w_norm / (g_norm + self.weight_decay * w_norm + self.eps)
        ratio = torch.where((w_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
        return ratio * d, {}
