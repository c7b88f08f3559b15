"""Optimizers for sparse gradients: a step moves only the entries a gradient holds.

Drop-in replacements: same constructor (names, order, defaults), same ``defaults`` and
param-group keys, same state keys, same errors, same numbers (to float64 rounding).

| optimizer | m | V | direction, iterate |
|---|---|---|---|
| :class:`SparseAdam` | ``EMA(g)``, bias-corrected | ``EMA(g²)``, ε before the bias correction | only where the sparse gradient has entries |
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..engine import Optimizer, Rules, validation
from ..engine.optimizer import Nonfinite, ParamsT
from ..engine.storage import ParamRounding, StatePrecision
from ..rules import EMA, EMASq


class SparseAdam(Optimizer):
    """SparseAdam: Adam, lazily: only the entries present in a sparse gradient step.

        at the entries i of the sparse gradient g (duplicates summed):
        m_i = β₁·m_i + (1−β₁)·g_i
        V_i = β₂·V_i + (1−β₂)·g_i²
        w_i ← w_i − lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m_i/(√V_i + ε)
        every other entry keeps its weight, m and V

    ``t`` counts the steps of the parameter (a Python int, as in torch), whichever entries
    they touched. Gradients must be sparse (``nn.Embedding(sparse=True)``'s); a dense one
    raises. The step is the engine's lazy sparse path (``sparse = "lazy"``).

    Args:
        params: dense, real parameters or param groups.
        lr: learning rate, > 0 (default 1e-3); a float or a 1-element tensor.
        betas: (β₁, β₂) (default (0.9, 0.999)).
        eps: ε > 0, added to √V before the bias correction (default 1e-8).
        maximize: ascend instead of descend (default False).
        nonfinite: ``None``, ``"skip"`` or ``"raise"`` (see :class:`momenta.Optimizer`).
        state_precision, param_rounding: low-precision state, rounding of bfloat16
            weights (see :class:`momenta.Optimizer`).

    Source: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, masked
    to the gradient's entries as torch does. Matches ``torch.optim.SparseAdam``.
    """

    sparse = "lazy"
    sparse_error = None
    dense_error = "SparseAdam does not support dense gradients, please consider Adam instead"
    tensor_step = False
    checks = validation.SPARSE_ADAM

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
        *,
        nonfinite: Nonfinite = None,
        state_precision: StatePrecision = None,
        param_rounding: ParamRounding = None,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, maximize=maximize)
        super().__init__(params, defaults, nonfinite=nonfinite, state_precision=state_precision, param_rounding=param_rounding)
        sparse, complex_ = [], []
        for index, group in enumerate(self.param_groups):
            for p_index, p in enumerate(group["params"]):
                if p.is_sparse:
                    sparse.append([index, p_index])
                if p.is_complex():
                    complex_.append([index, p_index])
        if sparse:
            raise ValueError(f"Sparse params at indices {sparse}: SparseAdam requires dense parameter tensors")
        if complex_:
            raise ValueError(
                f"Complex params at indices {complex_}: SparseAdam does not support complex parameters"
            )

    def rules(self, group: dict[str, Any]) -> Rules:
        beta1, beta2 = group["betas"]
        return Rules(
            EMA(beta1, bias_correction=True),
            EMASq(beta2, bias_correction=True),
            # ε joins √V before the bias correction: torch's √(1−β₂ᵗ)·m/(√V + ε)
            eps="uncorrected",
        )


__all__ = ["SparseAdam"]
