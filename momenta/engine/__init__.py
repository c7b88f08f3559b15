"""The engine: turns a pair of moment rules into a ``torch.optim.Optimizer``.

* :mod:`.composition` — :class:`Rules`, the rules of a param group and how they are joined;
* :mod:`.reference` — the reference path, one parameter at a time, the formula as written;
* :mod:`.optimizer` — :class:`Optimizer`, the ``torch.optim.Optimizer`` subclass;
* :mod:`.validation` — hyperparameter checks with torch's messages.
"""

from .composition import Rules
from .optimizer import Optimizer

__all__ = ["Optimizer", "Rules"]
