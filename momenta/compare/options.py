"""Options shared by ``compare`` and ``landscape``: optimizer names, ``--set`` overrides, checks.

    resolve_name("Adam")            → "adam"        (exact, else the one case-insensitive match)
    parse_assignment("adam.lr=0.01") → ("adam", "lr", 0.01)
    resolve_optimizers(names, hyper) → names resolved, overrides checked by building each once

Every check raises :class:`~momenta.compare.errors.UsageError` naming the argument and value;
an unknown optimizer raises ``registry.UnknownOptimizerError`` (known names, closest match).
"""

from __future__ import annotations

import ast
import contextlib
import math
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from momenta import registry
from momenta.compare.errors import UsageError

SEED_OPTIMIZERS = ("sgd", "sgdm", "adagrad", "rmsprop", "adam")
FORMATS = ("png", "svg")


def positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UsageError(f"{name} must be a number > 0, got {value!r}")
    if not math.isfinite(value):
        raise UsageError(f"{name} must be finite, got {value!r}")


def choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise UsageError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def resolve_name(name: str) -> str:
    """The registered spelling of ``name``: exact, else the one case-insensitive match.

    Raises ``registry.UnknownOptimizerError`` (message: known names, closest match).
    """
    name = name.strip()
    if name in registry.names():
        return name
    candidates = registry.torch_names() if name.lower().startswith("torch:") else registry.names()
    matches = [c for c in candidates if c.lower() == name.lower()]
    if len(matches) == 1:
        return matches[0]
    registry.get(name)  # raises UnknownOptimizerError unless torch:NAME is valid
    return name


def resolve_optimizers(
    names: Sequence[str], hyper: Mapping[str, Mapping[str, Any]]
) -> tuple[tuple[str, ...], dict[str, dict[str, Any]]]:
    """Resolve names and per-optimizer overrides; check each optimizer builds with them."""
    if isinstance(names, str):
        names = [names]
    if not names:
        raise UsageError("optimizers: give at least one optimizer name")
    # "all": every optimizer momenta has, once (registry.every())
    names = [n for name in names for n in (registry.every() if name.strip() == "all" else [name])]
    resolved = tuple(resolve_name(n) for n in names)
    duplicates = sorted({n for n in resolved if resolved.count(n) > 1})
    if duplicates:
        raise UsageError(f"optimizers: {', '.join(duplicates)} listed twice")
    overrides: dict[str, dict[str, Any]] = {}
    for key, values in hyper.items():
        name = resolve_name(key)
        if name not in resolved:
            raise UsageError(
                f"set {key}.…: {name!r} is not among the optimizers run ({', '.join(resolved)})"
            )
        overrides[name] = dict(values)
        if "lr" in values:
            positive(f"set {name}.lr", values["lr"])
    for name in resolved:
        kwargs = {"lr": 1.0, **overrides.get(name, {})}
        probe = [torch.zeros(2, requires_grad=True)]
        try:
            registry.get(name).factory(probe, **kwargs)
        except (TypeError, ValueError, RuntimeError) as e:
            raise UsageError(f"optimizer {name!r} rejects hyperparameters {kwargs}: {e}") from None
    return resolved, overrides


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """``"adam.lr=0.01"`` → ``("adam", "lr", 0.01)``; the value is a Python literal or a string.

    The optimizer is everything before the last dot of the key (``momenta.Adam.lr`` works).
    """
    key, sep, raw = text.partition("=")
    name, dot, param = key.strip().rpartition(".")
    if not sep or not dot or not name or not param.isidentifier():
        raise UsageError(f"set {text!r}: expected OPTIMIZER.PARAM=VALUE, e.g. adam.lr=0.01")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
    return name, param, value


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread, restored after.

    These models are tiny: a second thread only spins (twice the CPU time, same wall time)
    and makes step timings collapse when another process holds the other core.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def environment() -> dict[str, str]:
    """Versions and date, for the summary and the report."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def json_safe(value: Any) -> Any:
    """Hyperparameters as JSON values: tuples → lists, tensors → floats, anything else → str."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)


def takes_sparse_gradients(optimizer: torch.optim.Optimizer) -> bool:
    """The optimizer refuses dense gradients (torch's and momenta's ``SparseAdam``): the
    comparison then hands it each gradient as a sparse tensor holding every entry, which
    makes it Adam with ε added before the bias correction."""
    return isinstance(optimizer, torch.optim.SparseAdam) or getattr(optimizer, "dense_error", None) is not None
