"""Hyperparameter checks. Messages are torch.optim's word for word where torch has one, so
that code written against torch's errors keeps working; each names the argument and the value.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) or isinstance(x, Tensor)


def non_negative(value: Any, what: str) -> None:
    """``0 ≤ value`` (NaN fails), else ``ValueError("Invalid {what}: {value}")``."""
    if not _is_number(value):
        raise TypeError(f"Invalid {what}: {value!r} (expected a number)")
    if not 0.0 <= value:
        raise ValueError(f"Invalid {what}: {value}")


def at_least(value: Any, low: float, what: str, message: str | None = None, *, strict: bool = False) -> None:
    """``low ≤ value`` (``low < value`` if ``strict``; NaN fails), else ``ValueError`` with
    the optimizer's own torch message (``{}`` is the value; default ``"Invalid {what}: {}"``).
    A value that is not a number is a ``TypeError`` naming ``what``."""
    if not _is_number(value):
        raise TypeError(f"Invalid {what}: {value!r} (expected a number)")
    if not (low < value if strict else low <= value):
        raise ValueError((message or f"Invalid {what}: {{}}").format(value))


def at_most(value: Any, high: float, what: str, message: str) -> None:
    """``value ≤ high`` (NaN fails), else ``ValueError(message)`` (``{}`` is the value)."""
    if not _is_number(value):
        raise TypeError(f"Invalid {what}: {value!r} (expected a number)")
    if not value <= high:
        raise ValueError(message.format(value))


def lr(value: Any, message: str | None = None, *, strict: bool = False) -> None:
    """A learning rate: a number ≥ 0 (> 0 if ``strict``) or a 1-element tensor; ``message``
    is torch's where an optimizer words it otherwise (see :func:`at_least`)."""
    if isinstance(value, Tensor) and value.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    at_least(value, 0.0, "learning rate", message, strict=strict)


def beta(value: Any, index: int) -> None:
    """``0 ≤ β < 1``, the ``index``-th entry of ``betas``."""
    if not _is_number(value):
        raise TypeError(f"Invalid beta parameter at index {index}: {value!r} (expected a number)")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"Invalid beta parameter at index {index}: {value}")


def betas(values: Any, *, foreach: bool | None, capturable: bool) -> tuple[Any, Any]:
    """Adam's ``betas``: two floats or two 1-element tensors; returns them squeezed."""
    if not isinstance(values, (tuple, list)) or len(values) != 2:
        raise ValueError(f"Invalid betas: {values!r} (expected a pair (beta1, beta2))")
    for i, b in enumerate(values):
        beta(b, i)
    floats = all(isinstance(b, float) for b in values)
    tensors = all(isinstance(b, Tensor) for b in values)
    if not (floats or tensors):
        raise ValueError("betas must be either both floats or both Tensors")
    if tensors:
        for i, b in enumerate(values):
            if not capturable and foreach:
                raise ValueError(
                    f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True"
                )
            if b.numel() != 1:
                raise ValueError(f"Tensor betas[{i}] must be 1-element")
        return tuple(b.squeeze() if b.dim() != 0 else b for b in values)  # type: ignore[return-value]
    return tuple(values)  # type: ignore[return-value]


def tensor_lr_with_foreach(value: Any, *, foreach: bool | None, capturable: bool) -> None:
    """torch's Adam family: a tensor lr needs capturable when foreach is asked for."""
    if isinstance(value, Tensor) and foreach and not capturable:
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")


def implementation(*, foreach: bool | None, fused: bool | None, differentiable: bool) -> None:
    """The implementation flags torch accepts together."""
    if fused and differentiable:
        raise RuntimeError("`fused` does not support `differentiable`")
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def unit_interval(value: Any, what: str) -> None:
    """``0 ≤ value < 1`` (a decay rate β), named ``what`` in the message."""
    if not isinstance(value, (int, float, Tensor)) or isinstance(value, bool):
        raise TypeError(f"Invalid {what} value: {value!r} (expected a number)")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"Invalid {what} value: {value} (expected 0 <= {what} < 1)")


def group(g: Any) -> None:
    """The hyperparameters of a param group that the engine and the built-in rules read,
    checked by name (torch's messages): for ``add_param_group``, each step (schedulers may
    change values) and ``load_state_dict``."""
    if isinstance(g.get("eps"), (tuple, list)):  # Adafactor's (ε₁, ε₂)
        epsilons(g["eps"])
        g = {key: value for key, value in g.items() if key != "eps"}
    if "lr" in g:
        lr(g["lr"])
    for key, what in [
        ("eps", "epsilon value"), ("weight_decay", "weight_decay value"),
        ("momentum", "momentum value"), ("alpha", "alpha value"),
        ("lr_decay", "lr_decay value"), ("initial_accumulator_value", "initial_accumulator_value value"),
    ]:  # fmt: skip
        if key in g:
            non_negative(g[key], what)
    if "betas" in g:
        values = g["betas"]
        if not isinstance(values, (tuple, list)) or len(values) != 2:
            raise ValueError(f"Invalid betas: {values!r} (expected a pair (beta1, beta2))")
        for i, b in enumerate(values):
            beta(b, i)
    for key in ("beta", "beta1", "beta2"):
        if key in g:
            unit_interval(g[key], key)


def epsilons(values: Any) -> None:
    """Adafactor's ``eps = (ε₁, ε₂)``: ε₁ ≥ 0 or ``None`` (the dtype's machine epsilon), ε₂ ≥ 0."""
    if not isinstance(values, (tuple, list)) or len(values) != 2:
        raise ValueError(f"Invalid eps: {values!r} (expected a pair (eps1, eps2))")
    if values[0] is not None:
        at_least(values[0], 0.0, "epsilon1", "epsilon1 should be >= 0 but is: {}")
    at_least(values[1], 0.0, "epsilon2", "epsilon2 should be >= 0 but is: {}")


def adam(lr_: Any, betas: Any, eps: Any, weight_decay: Any) -> None:
    """The Adam family's checks, in torch's order (Adam, Adamax, NAdam, RAdam): lr, ε,
    β₁, β₂, weight decay."""
    lr(lr_)
    non_negative(eps, "epsilon value")
    beta(betas[0], 0)
    beta(betas[1], 1)
    non_negative(weight_decay, "weight_decay value")
