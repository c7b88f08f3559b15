"""torch.optim's optimizers and the modern ones, each a composition of momenta's rules.

* :mod:`.classic` — SGD, Adagrad, RMSprop, Adadelta, ASGD, Rprop (torch drop-ins);
* :mod:`.adam` — Adam and its torch.optim variants: AdamW, Adamax, NAdam, RAdam (torch drop-ins);
* :mod:`.matrix` — optimizers that see whole matrices: Adafactor, Muon (torch drop-ins),
  MuonWithAdamW (Muon for matrices, AdamW for the rest);
* :mod:`.sparse` — optimizers for sparse gradients: SparseAdam (torch drop-in);
* :mod:`.modern` — from after torch.optim's set: AdaBelief, Lion, LAMB, LARS, Yogi,
  ScheduleFreeAdamW, AdEMAMix, AdafactorPaper (each matching its established implementation);
* :mod:`.composed` — Composed: any :class:`~momenta.Rules` value as an optimizer, its
  rules' hyperparameters in the param groups.
"""

from .adam import Adam, Adamax, AdamW, NAdam, RAdam
from .classic import ASGD, SGD, Adadelta, Adagrad, RMSprop, Rprop
from .composed import Composed
from .matrix import Adafactor, Muon, MuonWithAdamW
from .modern import (
           LAMB,
           LARS,
           AdaBelief,
           AdafactorPaper,
           AdEMAMix,
           Lion,
           ScheduleFreeAdamW,
           Yogi,
)
from .sparse import SparseAdam

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "RMSprop", "Adamax", "NAdam", "RAdam", "Adadelta", "ASGD", "Rprop",
           "Adafactor", "Muon", "SparseAdam", "MuonWithAdamW",
           "AdaBelief", "Lion", "LAMB", "LARS", "Yogi", "ScheduleFreeAdamW", "AdEMAMix", "AdafactorPaper",
           "Composed"]
