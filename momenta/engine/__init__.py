"""The engine: turns the rules of an optimizer into a ``torch.optim.Optimizer``.

* :mod:`.composition` — :class:`Rules`, the rules of a param group (m, V, direction,
  iterate) and how they are joined;
* :mod:`.reference` — the formula (:func:`~.reference.update`) and the reference path, one
  parameter at a time, as written (a sparse gradient's entries alone for lazy optimizers,
  a DTensor gathered whole for rules that see whole parameters);
* :mod:`.optimizer` — :class:`Optimizer`, the ``torch.optim.Optimizer`` subclass, the two
  phases of its step, and which param groups take the fast path;
* the fast path: :mod:`.flat` (the life of a step over flat buffers), :mod:`.layout`
  (where parameters live in them), :mod:`.flatstate` (who owns the state),
  :mod:`.kernels` (kernels compiled from elementwise rules, and ``kernels.config``, the
  fast path's switches, whose defaults are the ``MOMENTA_*`` environment variables).
  Elementwise rules run there compiled or eagerly, segmented ones (whole-parameter norms
  only: LAMB, LARS) eagerly; rules that see rows, columns or matrices take the reference path;
* :mod:`.checkpoint` — what a state_dict must be to load, checked before anything changes;
* :mod:`.validation` — hyperparameter checks, with torch's messages for torch's drop-ins;
* :mod:`.compat` — every private torch API the engine uses, each with a safe fallback.
"""

from .composition import Rules
from .optimizer import Optimizer

__all__ = ["Optimizer", "Rules"]
