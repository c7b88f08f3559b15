"""Optimizers by name, for ``momenta compare`` and anything else that takes names.

Names:

* the seed's five, lower case: ``sgd``, ``sgdm``, ``adagrad``, ``rmsprop``, ``adam``
  (``momenta.seed``: the textbook rules, no epsilon);
* momenta's torch-compatible drop-ins by class name: ``momenta.SGD``, ``momenta.Adam``,
  … ``momenta.Muon`` (every class of :data:`TORCH_DROPINS`), and the modern optimizers by
  class name (``momenta.Lion``);
* lower case, the optimizers the seed does not have (:data:`SHORT`): torch's as momenta's
  drop-ins (``nadam``, ``radam``, ``muon`` …) and the modern ones as their papers give them
  (``lion``, ``adabelief``, ``lamb``, ``lars``, ``yogi``, ``schedulefree``, ``ademamix``,
  ``adafactor``);
* ``torch:NAME`` for any class of ``torch.optim`` (``torch:Adam``), to run torch's own
  implementation side by side.

Later optimizers register themselves with :func:`register`.

For configuration files and CLIs, :func:`resolve` turns any of these names, a momenta class
name (``"AdamW"``) or an import path (``"momenta.optimizers.Lion"``) into the class, and
:func:`create` builds it with keyword options, refusing an unknown option by name.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

OptimizerFactory = Callable[..., torch.optim.Optimizer]


@dataclass(frozen=True)
class Entry:
    """A named optimizer: ``factory(params, **hyperparameters)`` builds it."""

    name: str
    target: str  # "module:attribute", imported on first use
    summary: str
    #: the learning rate ``momenta compare`` gives it when ``--lr`` does not say
    lr: float = 0.1

    @property
    def factory(self) -> OptimizerFactory:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


_REGISTRY: dict[str, Entry] = {}


def register(name: str, target: str, summary: str = "", lr: float = 0.1) -> None:
    """Register ``target`` ("package.module:Class") under ``name``; ``lr`` is the learning
    rate ``momenta compare`` uses for it unless told otherwise."""
    if not name or name.startswith("torch:"):
        raise ValueError(f"Invalid optimizer name: {name!r}")
    _REGISTRY[name] = Entry(name, target, summary, lr)


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


def _edits(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and swaps of neighbours that turn ``a`` into
    ``b`` (optimal string alignment distance): ``adma`` is one swap from ``adam``."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def closest(name: str, known: Iterable[str]) -> list[str]:
    """The known name a typo most likely meant (fewest edits, case ignored; then difflib's
    similarity), or none if nothing is close."""
    candidates = difflib.get_close_matches(name, list(known), n=10, cutoff=0.5)
    if not candidates:
        return []
    lowered = name.lower()
    return [min(candidates, key=lambda k: (_edits(lowered, k.lower()), -difflib.SequenceMatcher(None, name, k).ratio()))]


class UnknownOptimizerError(KeyError):
    """An optimizer name that is not registered; the message lists the known names."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known = list(known)
        close = closest(name, known)
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

#: torch.optim's optimizers that momenta stands in for (``momenta.NAME``)
TORCH_DROPINS = (
    "SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adamax", "NAdam", "RAdam", "Adadelta",
    "ASGD", "Rprop", "SparseAdam", "Adafactor", "Muon",
)  # fmt: skip
for _cls in TORCH_DROPINS:
    register(f"momenta.{_cls}", f"momenta.optimizers:{_cls}", f"torch-compatible {_cls}")

#: lower-case names of the optimizers the seed does not have: torch's (as momenta's
#: drop-ins) and the modern ones (as their papers give them)
SHORT: dict[str, tuple[str, str]] = {
    "adamw": ("AdamW", "Adam with decoupled weight decay (torch-compatible)"),
    "adamax": ("Adamax", "m = EMA(g), √V = max(β·u, |g| + ε) (torch-compatible)"),
    "nadam": ("NAdam", "Nesterov momentum with a schedule, V = EMA(g²) (torch-compatible)"),
    "radam": ("RAdam", "Adam with V rectified while its variance is intractable (torch-compatible)"),
    "adadelta": ("Adadelta", "m = √(Δ + ε)·g/√(V + ε), lr = 1 (torch-compatible)"),
    "asgd": ("ASGD", "SGD with a decaying step and an average of iterates (torch-compatible)"),
    "rprop": ("Rprop", "per-coordinate step sizes from gradient signs (torch-compatible)"),
    "sparseadam": ("SparseAdam", "Adam on the rows a sparse gradient touches (torch-compatible)"),
    "muon": ("MuonWithAdamW", "Muon (momentum orthogonalised by Newton–Schulz) on matrices, AdamW on the rest"),
    "adabelief": ("AdaBelief", "V = EMA((g − m)²) + ε: belief in the gradient"),
    "lion": ("Lion", "sign(β₁·m + (1−β₁)·g), m = EMA_β₂(g)"),
    "lamb": ("LAMB", "Adam's direction with a layer-wise trust ratio ‖w‖/‖d‖"),
    "lars": ("LARS", "momentum over the gradient scaled by a layer-wise trust ratio"),
    "yogi": ("Yogi", "V = V − (1−β₂)·sign(V − g²)·g²: additive V"),
    "schedulefree": ("ScheduleFreeAdamW", "schedule-free AdamW: interpolation of z and its average"),
    "ademamix": ("AdEMAMix", "a fast and a slow EMA of g mixed, V = EMA(g²)"),
    "adafactor": ("AdafactorPaper", "factored V, relative step size, update clipping (the paper's)"),
}
#: where the classic comparison's lr (0.1) means something else, or is far from what the
#: method is tuned for: the lr each gets in ``momenta compare`` (``--lr`` overrides)
COMPARE_LR = {
    "adadelta": 1.0,  # a multiplier of the unit-correct step (the paper has none: 1)
    "rprop": 0.01,  # the first step size (torch's default)
    "muon": 0.02,  # Muon's own default (Keller Jordan's)
    "lion": 0.01,  # sign steps: 3–10× smaller than Adam's (the paper)
    "lamb": 0.01,  # a step of lr·‖w‖ per layer
    "lars": 1.0,  # scaled by the trust coefficient 0.001
}
for _name, (_cls, _summary) in SHORT.items():
    register(_name, f"momenta.optimizers:{_cls}", _summary, COMPARE_LR.get(_name, 0.1))
for _cls in ("AdaBelief", "Lion", "LAMB", "LARS", "Yogi", "ScheduleFreeAdamW", "AdEMAMix", "AdafactorPaper", "MuonWithAdamW"):
    register(f"momenta.{_cls}", f"momenta.optimizers:{_cls}", f"momenta.{_cls}")


def every() -> list[str]:
    """Every optimizer once (``momenta compare --optimizers all``): the seed's five and the
    lower-case names; the ``momenta.NAME`` spellings are left out (the same classes, or
    torch's variant of a seed rule)."""
    return [*_SEED, *SHORT]


# -- names a framework can type ------------------------------------------------------------------


def resolve(name: str) -> OptimizerFactory:
    """The optimizer class ``name`` stands for, as a configuration file or a CLI writes it.

    In this order: a registered name (``"lion"``, ``"momenta.AdamW"``, ``"torch:AdamW"``);
    a momenta class by its bare name (``"AdamW"`` is ``"momenta.AdamW"``); a registered name
    in any case (``"Lion"``, ``"LAMB"``); ``"torch.optim.NAME"``; an import path to a
    ``torch.optim.Optimizer`` subclass (``"momenta.optimizers.Lion"``, ``"pkg.mod:Class"``,
    the ``class_path`` LightningCLI and Hydra's ``_target_`` write).

    Raises:
        UnknownOptimizerError: (a ``KeyError``) nothing by that name; the message suggests
            the closest known name and lists them all.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"an optimizer name must be a non-empty str, got {name!r}")
    if name in _REGISTRY or name.startswith("torch:"):
        return get(name).factory
    if f"momenta.{name}" in _REGISTRY:
        return _REGISTRY[f"momenta.{name}"].factory
    folded = [n for n in _REGISTRY if n.lower() == name.lower()]
    if len(folded) == 1:
        return _REGISTRY[folded[0]].factory
    if name.startswith("torch.optim.") and "." not in name.removeprefix("torch.optim."):
        return get("torch:" + name.removeprefix("torch.optim.")).factory
    found = _imported(name)
    if found is not None:
        return found
    raise UnknownOptimizerError(name, names())


def _imported(path: str) -> OptimizerFactory | None:
    """The ``torch.optim.Optimizer`` subclass at import path ``path`` (``a.b.C`` or
    ``a.b:C``), or ``None`` if there is none."""
    module, sep, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    if not (sep and module and attribute):
        return None
    try:
        found = getattr(importlib.import_module(module), attribute, None)
    except ImportError:
        return None
    if isinstance(found, type) and issubclass(found, torch.optim.Optimizer):
        return found
    return None


def create(name: str, params: Any, **options: Any) -> torch.optim.Optimizer:
    """``resolve(name)(params, **options)``: the optimizer ``name`` over ``params``.

    ``momenta.registry.create("lion", model.parameters(), lr=1e-4, weight_decay=0.1)``.
    An option the optimizer does not take is refused before anything is built, by name,
    with the closest option it does take and the list of them (a ``TypeError``)."""
    factory = resolve(name)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature to check against: let the call say
        return factory(params, **options)
    taken = [p.name for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        unknown = [k for k in options if k not in taken]
        if unknown:
            label = getattr(factory, "__qualname__", name)
            close = difflib.get_close_matches(unknown[0], taken, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"{label} ({name!r}) has no option {unknown[0]!r}.{hint} Its options: "
                + ", ".join(t for t in taken if t != "params")
            )
    return factory(params, **options)
