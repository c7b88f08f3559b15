"""How the generic suites (test_torch_parity, test_torch_contract) exercise each optimizer:
which parameters it takes and which gradients it gets. Most take any dense parameter; the
table lists the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Shape = tuple[int, ...]


def _same(shape: Shape) -> Shape:
    return shape


def _matrix(shape: Shape) -> Shape:
    """A 2-D shape for any shape a test asks for: (n,) → (n, 2), () → (2, 2)."""
    return (tuple(shape) + (2, 2))[:2]


@dataclass(frozen=True)
class Harness:
    """One optimizer's parameters and gradients in the generic suites."""

    #: the parity suite's parameters: a weight, a bias, a scalar, and one (the last) that
    #: gets a gradient every other step
    shapes: tuple[Shape, ...] = ((5, 4), (4,), (), (3, 2))
    #: the shape to use where a test asks for some shape
    shape: Callable[[Shape], Shape] = _same
    #: gradients are sparse COO: a few rows of an embedding-like (rows, dim) table, some
    #: hit twice in a step (summed), some at every step, the last one never
    sparse: bool = False
    #: with a tensor lr, torch computes this optimizer's per-step scalars (lr·√c₂/c₁,
    #: lr·s(shape), the relative step) in the tensor's dtype, float32, a rounding of the
    #: step size that momenta does not repeat: float64 results then agree to that rounding
    float32_scalars: bool = False

    def gradient(self, p: torch.Tensor, dense: torch.Tensor, step: int) -> torch.Tensor:
        """The gradient ``p`` gets at ``step``, made from ``dense`` (the test's own)."""
        if not self.sparse:
            return dense
        rows = p.shape[0]
        g = torch.Generator().manual_seed(500 + step)
        hit = torch.randint(0, max(rows - 1, 1), (3,), generator=g)
        hit = torch.cat([hit, hit[:1], torch.tensor([0])])  # a row twice, row 0 at every step
        return torch.sparse_coo_tensor(hit[None], dense[hit], p.shape)


HARNESS: dict[str, Harness] = {
    # Muon takes 2-D parameters only: tall, wide, a column
    "Muon": Harness(shapes=((5, 4), (4, 6), (6, 1), (3, 2)), shape=_matrix, float32_scalars=True),
    # SparseAdam takes sparse gradients only: tables and a vector, no scalar
    "SparseAdam": Harness(shapes=((10, 4), (6,), (8, 3), (7, 2)), sparse=True, float32_scalars=True),
    "Adafactor": Harness(float32_scalars=True),
}


def harness(name: str) -> Harness:
    """The harness of optimizer ``name`` (the default one for most)."""
    return HARNESS.get(name, Harness())


__all__ = ["HARNESS", "Harness", "harness"]
