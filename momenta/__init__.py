"""momenta: every optimizer is ``w ← w − lr · m / √V``, a first-moment rule plus a
second-moment rule, run by one engine.

* :mod:`momenta.rules` — the moment rules;
* :mod:`momenta.engine` — :class:`Optimizer` (the torch.optim base) and :class:`Rules`;
* :mod:`momenta.optimizers` — torch-compatible SGD, Adam, AdamW, Adagrad, RMSprop;
* :mod:`momenta.seed` — the seed's five textbook optimizers;
* :mod:`momenta.registry` — optimizers by name;
* :func:`momenta.compare` — the comparison experiment (``momenta compare``).
"""

from . import registry, rules, seed
from .compare import compare
from .engine import Optimizer, Rules
from .optimizers import SGD, Adagrad, Adam, AdamW, RMSprop

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "Rules",
    "compare",
    "registry",
    "rules",
    "seed",
]
