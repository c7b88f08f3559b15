"""The optimizers every distributed scenario runs, each with its torch.optim equivalent.

A case is a momenta optimizer with hyperparameters that exercise its state (momentum
buffers, bias corrections, ``lr_decay``, ``amsgrad``, ``centered``, weight decay) and, where
one exists, the torch.optim optimizer that must give the same numbers: the drop-ins' own
class, and for the seed's textbook optimizers the torch class with the same formula (ε = 0;
the gradients here are never exactly 0, so the seed's 0/0 rule never applies).
``seed.SGDM`` (an EMA started at 0) has no torch equivalent: the scenarios compare it with
itself run in one process on the global batch, as they do every case.

Every drop-in runs in every setup but one: Muon is given the 2-D weights alone (it takes
nothing else), SparseAdam the table of a model with a sparse embedding in front (it takes
sparse gradients alone; DDP and ZeroRedundancyOptimizer reduce them as sparse tensors).
SparseAdam does not run under FSDP2, nor therefore its checkpoints: FSDP2's backward pass
fails on a sparse gradient, before any optimizer, torch.optim's or momenta's, could run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import torch

import momenta
from momenta import seed

from .common import make_model


@dataclass(frozen=True)
class Case:
    name: str
    cls: type[torch.optim.Optimizer]
    kwargs: dict[str, Any] = field(default_factory=dict)
    torch_cls: type[torch.optim.Optimizer] | None = None
    torch_kwargs: dict[str, Any] = field(default_factory=dict)
    #: two param groups (weights with the case's weight decay, biases without)
    groups: bool = False
    #: why torch.optim's class cannot run under FSDP2 (then only momenta's is run there)
    torch_fails_under_fsdp: str | None = None
    #: why the case cannot run under ZeroRedundancyOptimizer
    not_with_zero: str | None = None
    #: why the case cannot run under FSDP2, for either library (nor its checkpoints, which
    #: are FSDP2's)
    not_with_fsdp: str | None = None
    #: the parameters the optimizer takes: all of them; only the 2-D weights ("matrices":
    #: Muon takes nothing else, and the biases keep their initial values); or only the table
    #: of a model with a sparse embedding in front ("sparse": SparseAdam takes sparse
    #: gradients only, and the MLP behind the table keeps its weights)
    takes: Literal["all", "matrices", "sparse"] = "all"

    @property
    def id(self) -> str:
        """The case in test ids: ``SGD-momentum-nesterov-weight_decay``."""
        return "-".join(self.name.replace("(", " ").replace(")", "").replace(",", " ").split())

    @property
    def dropin(self) -> bool:
        """momenta's class stands in for torch's: same name, param groups and state_dict."""
        return self.torch_cls is not None and self.cls is getattr(momenta, self.torch_cls.__name__)

    def model(self, device: torch.device, seed: int = 0) -> torch.nn.Sequential:
        """The model the case trains (:func:`.common.make_model`; with its sparse table)."""
        return make_model(device, seed, sparse=self.takes == "sparse")

    def params(self, model: torch.nn.Module) -> list[Any]:
        """What the optimizer is given: the parameters it takes, or two param groups."""
        if self.takes == "matrices":
            return [p for p in model.parameters() if p.ndim == 2]
        if self.takes == "sparse":
            return [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
        if not self.groups:
            return list(model.parameters())
        named = list(model.named_parameters())
        return [
            {"params": [p for n, p in named if n.endswith("weight")]},
            {"params": [p for n, p in named if not n.endswith("weight")], "weight_decay": 0.0},
        ]

    def make(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return self.cls(self.params(model), **self.kwargs)

    def make_torch(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        assert self.torch_cls is not None, self.name
        return self.torch_cls(self.params(model), **self.torch_kwargs)

    @property
    def libs(self) -> tuple[str, ...]:
        """The libraries to run: momenta, and torch where it has an equivalent."""
        return ("momenta", "torch") if self.torch_cls else ("momenta",)

    @property
    def fsdp_libs(self) -> tuple[str, ...]:
        """The libraries to run under FSDP2 (torch's may fail there: then momenta alone)."""
        return ("momenta",) if self.torch_fails_under_fsdp else self.libs

    def make_with(self, lib: str, model: torch.nn.Module) -> torch.optim.Optimizer:
        """The optimizer of ``lib`` (``"momenta"`` or ``"torch"``) for ``model``."""
        return self.make(model) if lib == "momenta" else self.make_torch(model)


def _dropin(name: str, label: str | None = None, *, groups: bool = False,
            torch_fails_under_fsdp: str | None = None, not_with_fsdp: str | None = None,
            takes: Any = "all", **kwargs: Any) -> Case:  # fmt: skip
    return Case(
        label or name, getattr(momenta, name), kwargs, getattr(torch.optim, name), kwargs, groups,
        torch_fails_under_fsdp, not_with_fsdp=not_with_fsdp, takes=takes,
    )  # fmt: skip


CASES: list[Case] = [
    _dropin("SGD", lr=0.1),
    _dropin("SGD", "SGD(momentum, nesterov, weight_decay)",
            lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    _dropin("SGD", "SGD(momentum, dampening)", lr=0.1, momentum=0.9, dampening=0.1),
    _dropin("Adam", lr=0.01),
    _dropin("Adam", "Adam(amsgrad, weight_decay)", lr=0.01, amsgrad=True, weight_decay=0.1),
    _dropin("AdamW", lr=0.01, weight_decay=0.1),
    _dropin("AdamW", "AdamW(2 param groups)", groups=True, lr=0.01, weight_decay=0.1),
    _dropin("Adagrad", "Adagrad(lr_decay, initial_accumulator_value, weight_decay)",
            lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.01),
    _dropin("RMSprop", lr=0.01),
    _dropin("RMSprop", "RMSprop(centered, momentum, weight_decay)",
            lr=0.01, centered=True, momentum=0.9, weight_decay=0.01),
    Case("seed.SGD", seed.SGD, dict(lr=0.1), torch.optim.SGD, dict(lr=0.1)),
    Case("seed.SGDM", seed.SGDM, dict(lr=0.1, beta=0.9)),
    Case("seed.Adagrad", seed.Adagrad, dict(lr=0.1), torch.optim.Adagrad, dict(lr=0.1, eps=0.0)),
    Case("seed.RMSProp", seed.RMSProp, dict(lr=0.01, beta=0.9),
         torch.optim.RMSprop, dict(lr=0.01, alpha=0.9, eps=0.0)),
    Case("seed.Adam", seed.Adam, dict(lr=0.01), torch.optim.Adam, dict(lr=0.01, eps=0.0)),
    # the rest of torch.optim: scalar state (NAdam's mu_product, ASGD's eta and mu), roots
    # that are not √V (Adamax, RAdam), Adadelta's update accumulator, Rprop's step sizes
    _dropin("Adamax", lr=0.01, weight_decay=0.01),
    _dropin("NAdam", "NAdam(decoupled_weight_decay)", lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    _dropin("RAdam", lr=0.01),
    _dropin("Adadelta", lr=1.0, weight_decay=0.01),
    _dropin("ASGD", "ASGD(t0)", lr=0.01, t0=2),
    _dropin("Rprop", lr=0.01, torch_fails_under_fsdp="torch.optim.Rprop assigns through a boolean "
            "mask in place (sign[sign.gt(0)] = etaplus), which DTensor refuses"),
    # rules that see whole parameters (norms, rows and columns, matrices): global quantities
    _dropin("Adafactor", "Adafactor(weight_decay)", lr=0.01, weight_decay=0.01,
            torch_fails_under_fsdp="torch.optim.Adafactor squares a column norm in place "
            "(norm(...).square_()), which DTensor refuses on a partial sum"),
    _dropin("Muon", lr=0.02, weight_decay=0.01, takes="matrices",
            torch_fails_under_fsdp="torch.optim.Muon adds its update in place "
            "(param.add_(update)) with the parameter sharded (Shard(0)) and the update "
            "replicated, a change of placement DTensor refuses in place"),
    # sparse gradients: a lazy step on the rows a batch touched
    _dropin("SparseAdam", lr=0.01, takes="sparse",
            not_with_fsdp="FSDP2 takes no sparse gradients: the backward pass fails in its "
            "reduce-scatter (fsdp::chunk_cat has no SparseCPU kernel, torch 2.13), before "
            "any optimizer runs, torch.optim's or momenta's"),
    Case("MuonWithAdamW", momenta.MuonWithAdamW, dict(lr=0.02, adamw_lr=0.01, weight_decay=0.01),
         not_with_zero="ZeroRedundancyOptimizer keeps its own list of param groups and expects "
         "the local optimizer to keep the groups it was given; MuonWithAdamW splits each in two"),
    Case("LAMB", momenta.LAMB, dict(lr=0.01, weight_decay=0.01)),
    Case("LARS", momenta.LARS, dict(lr=0.5, weight_decay=1e-4)),
    Case("AdafactorPaper", momenta.AdafactorPaper, dict(beta1=0.9, weight_decay=0.01)),
    # the modern elementwise ones
    Case("Lion", momenta.Lion, dict(lr=1e-3, weight_decay=0.1)),
    Case("AdaBelief", momenta.AdaBelief, dict(lr=0.01, weight_decay=0.01)),
    Case("Yogi", momenta.Yogi, dict(lr=0.01)),
    Case("AdEMAMix", momenta.AdEMAMix, dict(lr=0.01, alpha_warmup=4, beta3_warmup=4)),
    Case("ScheduleFreeAdamW", momenta.ScheduleFreeAdamW, dict(lr=0.01, warmup_steps=2, weight_decay=0.01)),
]  # fmt: skip

BY_NAME = {case.name: case for case in CASES}
assert len(BY_NAME) == len(CASES), "case names must be unique"


def params(names: list[str] | None = None, *, known_bugs: dict[str, str] | None = None,
           skip: Callable[[Case], str | None] = lambda case: None) -> list[Any]:  # fmt: skip
    """The cases ``names`` (default: all) as pytest params; a known bug's case is marked
    ``xfail(strict=True)`` with the reason, so that it fails once the bug is fixed; a case
    for which ``skip`` gives a reason is skipped with it."""
    known_bugs = known_bugs or {}
    unknown = set(known_bugs) - set(BY_NAME)
    assert not unknown, f"known bugs of unknown cases: {unknown}"
    out = []
    for name in names or list(BY_NAME):
        bug, reason = known_bugs.get(name), skip(BY_NAME[name])
        marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
        marks += [pytest.mark.skip(reason=reason)] if reason else []
        out.append(pytest.param(name, id=BY_NAME[name].id, marks=marks))
    return out
