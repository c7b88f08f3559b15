"""torch's own optimizer test database, as the reference set of configurations.

``torch.testing._internal.common_optimizers`` parses ``sys.argv`` when imported (it is
written for torch's own test runner), so it is imported with a neutral ``argv``.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

import momenta

_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    from torch.testing._internal.common_optimizers import OptimizerErrorEnum, optim_db
finally:
    sys.argv = _argv

#: torch.optim's optimizers that momenta stands in for: every one in optim_db that momenta
#: exports (LBFGS, a line search rather than a moment rule, is not one of them)
NAMES = [info.optim_cls.__name__ for info in optim_db if hasattr(momenta, info.optim_cls.__name__)]
INFO = {info.optim_cls.__name__: info for info in optim_db if info.optim_cls.__name__ in NAMES}


def pair(name: str) -> tuple[type[torch.optim.Optimizer], type[torch.optim.Optimizer]]:
    """(torch's class, momenta's class) of the same name."""
    return getattr(torch.optim, name), getattr(momenta, name)


def cpu_configs(name: str) -> list[tuple[str, dict[str, Any]]]:
    """(description, kwargs) of every CPU configuration torch tests ``name`` with."""
    return [(oi.desc, dict(oi.kwargs)) for oi in INFO[name].optim_inputs_func(device="cpu")]


def error_inputs(name: str) -> list[Any]:
    """torch's list of bad inputs for ``name`` and the errors they must raise."""
    return list(INFO[name].optim_error_inputs_func(device="cpu", dtype=torch.float32))


__all__ = ["INFO", "NAMES", "OptimizerErrorEnum", "cpu_configs", "error_inputs", "pair"]
