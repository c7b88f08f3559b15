"""momenta where people train: what training scripts and frameworks need of an optimizer
library besides the optimizers.

* :mod:`.groups` — param groups from a model by rules (dimension, module type, name
  patterns; per-group lr multipliers), nanoGPT's decay split and Muon's split, with a
  summary of which parameter went where;
* :mod:`.backward` — the optimizer step inside backward (each parameter steps as soon as
  its gradient is accumulated, and its gradient is freed);
* optimizers by name for configuration files and CLIs: :func:`momenta.registry.resolve`
  and :func:`momenta.registry.create`.

Hugging Face's Trainer and Lightning take momenta's optimizers as they take torch.optim's
(``tests/integrations`` trains with both and compares with torch.optim).
"""

from ..registry import create, resolve
from .backward import BackwardStep, step_in_backward
from .groups import NORMS, Dims, ParamGroups, Rule, dims, muon_rules, param_groups, rule, weight_decay_rules

__all__ = [
    "NORMS",
    "BackwardStep",
    "Dims",
    "ParamGroups",
    "Rule",
    "create",
    "dims",
    "muon_rules",
    "param_groups",
    "resolve",
    "rule",
    "step_in_backward",
    "weight_decay_rules",
]
