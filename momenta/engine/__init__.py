"""The engine: turns the rules of an optimizer into a ``torch.optim.Optimizer``.

* :mod:`.composition` — :class:`Rules`, the rules of a param group and how they are joined;
* :mod:`.reference` — the formula (:func:`~.reference.update`) and the reference path, one
  parameter at a time, as written;
* :mod:`.optimizer` — :class:`Optimizer`, the ``torch.optim.Optimizer`` subclass, and the
  two phases of its step;
* the fast path: :mod:`.flat` (the life of a step over flat buffers), :mod:`.layout`
  (where parameters live in them), :mod:`.flatstate` (who owns the state),
  :mod:`.kernels` (kernels compiled from the rules);
* :mod:`.checkpoint` — what a state_dict must be to load;
* :mod:`.validation` — hyperparameter checks with torch's messages;
* :mod:`.compat` — every private torch API the engine uses, each with a safe fallback.
"""

from .composition import Rules
from .optimizer import Optimizer

__all__ = ["Optimizer", "Rules"]
