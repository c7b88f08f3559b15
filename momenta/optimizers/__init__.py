"""torch.optim's optimizers and the modern ones, each a composition of momenta's rules.

* :mod:`.classic` — SGD, Adagrad, RMSprop (torch drop-ins);
* :mod:`.adam` — Adam and its torch.optim variants (torch drop-ins).
"""

from .adam import Adam, AdamW
from .classic import SGD, Adagrad, RMSprop

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "RMSprop"]
