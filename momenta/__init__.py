"""momenta: every optimizer is ``w ← w − lr · m / √V``, a first-moment rule plus a
second-moment rule, run by one engine.

* :mod:`momenta.rules` — the moment rules;
* :mod:`momenta.engine` — :class:`Optimizer` (the torch.optim base) and :class:`Rules`;
* :mod:`momenta.optimizers` — torch-compatible SGD, Adam, AdamW, Adagrad, RMSprop, Adamax,
  NAdam, RAdam, Adadelta, ASGD, Rprop, Adafactor, Muon, SparseAdam, and the modern AdaBelief,
  Lion, LAMB, LARS, Yogi, ScheduleFreeAdamW, AdEMAMix, AdafactorPaper, and MuonWithAdamW;
  :class:`Composed`, any :class:`Rules` value as an optimizer;
* :mod:`momenta.seed` — the seed's five textbook optimizers;
* :mod:`momenta.registry` — optimizers by name;
* :mod:`momenta.integrations` — param groups by rules, the step inside backward;
* :func:`momenta.compare` — the comparison experiment (``momenta compare``);
* :func:`momenta.inspect`, :class:`momenta.Inspector` — m, V and the step of any momenta
  optimizer, read from its state (:mod:`momenta.introspect`).
"""

from . import registry, rules, seed
from . import integrations
from .compare import compare
from .engine import Optimizer, Rules
from .introspect import Inspector, inspect
from .optimizers import (
    ASGD,
    LAMB,
    LARS,
    SGD,
    AdaBelief,
    Adadelta,
    Adafactor,
    AdafactorPaper,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    AdEMAMix,
    Composed,
    Lion,
    Muon,
    MuonWithAdamW,
    NAdam,
    RAdam,
    RMSprop,
    Rprop,
    ScheduleFreeAdamW,
    SparseAdam,
    Yogi,
)

__version__ = "0.1.0"

__all__ = [
    "ASGD",
    "LAMB",
    "LARS",
    "SGD",
    "AdEMAMix",
    "AdaBelief",
    "Adadelta",
    "Adafactor",
    "AdafactorPaper",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Composed",
    "Inspector",
    "Lion",
    "Muon",
    "MuonWithAdamW",
    "NAdam",
    "Optimizer",
    "RAdam",
    "RMSprop",
    "Rprop",
    "Rules",
    "ScheduleFreeAdamW",
    "SparseAdam",
    "Yogi",
    "compare",
    "inspect",
    "integrations",
    "registry",
    "rules",
    "seed",
]
