"""Optimizers by name, for ``momenta compare`` and anything else that takes names.

Names:

* the seed's five, lower case: ``sgd``, ``sgdm``, ``adagrad``, ``rmsprop``, ``adam``
  (``momenta.seed``: the textbook rules, no epsilon);
* momenta's torch-compatible drop-ins by class name: ``momenta.SGD``, ``momenta.Adam``,
  ``momenta.AdamW``, ``momenta.Adagrad``, ``momenta.RMSprop``;
* ``torch:NAME`` for any class of ``torch.optim`` (``torch:Adam``), to run torch's own
  implementation side by side.

Later optimizers register themselves with :func:`register`.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

OptimizerFactory = Callable[..., torch.optim.Optimizer]


@dataclass(frozen=True)
class Entry:
    """A named optimizer: ``factory(params, **hyperparameters)`` builds it."""

    name: str
    target: str  # "module:attribute", imported on first use
    summary: str

    @property
    def factory(self) -> OptimizerFactory:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


_REGISTRY: dict[str, Entry] = {}


def register(name: str, target: str, summary: str = "") -> None:
    """Register ``target`` ("package.module:Class") under ``name``."""
    if not name or name.startswith("torch:"):
        raise ValueError(f"Invalid optimizer name: {name!r}")
    _REGISTRY[name] = Entry(name, target, summary)


def names() -> list[str]:
    """Every registered name, in registration order (``torch:NAME`` is implicit)."""
    return list(_REGISTRY)


def torch_names() -> list[str]:
    """``torch:NAME`` for every optimizer class in ``torch.optim``."""
    return sorted(
        f"torch:{n}"
        for n, obj in vars(torch.optim).items()
        if isinstance(obj, type)
        and issubclass(obj, torch.optim.Optimizer)
        and obj is not torch.optim.Optimizer
    )


class UnknownOptimizerError(KeyError):
    """An optimizer name that is not registered; the message lists the known names."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known = list(known)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        self.name, self.known, self.suggestion = name, known, close[0] if close else None
        super().__init__(
            f"Unknown optimizer {name!r}.{hint} Known: {', '.join(known)}"
            " (and torch:NAME for any torch.optim class)"
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def get(name: str) -> Entry:
    """The entry for ``name``; ``torch:NAME`` resolves to ``torch.optim.NAME``."""
    if name.startswith("torch:"):
        attribute = name.removeprefix("torch:")
        if f"torch:{attribute}" in torch_names():
            return Entry(name, f"torch.optim:{attribute}", f"torch.optim.{attribute}")
        raise UnknownOptimizerError(name, torch_names())
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownOptimizerError(name, names()) from None


_SEED = {
    "sgd": ("SGD", "m = g, V = 1"),
    "sgdm": ("SGDM", "m = β·m + (1−β)·g, V = 1"),
    "adagrad": ("Adagrad", "m = g, V = Σ g²"),
    "rmsprop": ("RMSProp", "m = g, V = β·V + (1−β)·g²"),
    "adam": ("Adam", "m = EMA(g), V = EMA(g²), both bias-corrected"),
}
for _name, (_cls, _formula) in _SEED.items():
    register(_name, f"momenta.seed:{_cls}", f"seed {_cls}: {_formula}")
for _cls in ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop"]:
    register(f"momenta.{_cls}", f"momenta.optimizers:{_cls}", f"torch-compatible {_cls}")
