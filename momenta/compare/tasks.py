"""What a comparison trains: a task gives a fresh model per seed and the batches of an epoch.

    model = task.build(seed)          parameters, the mean loss of a batch, an evaluation
    for x, y in task.batches(epoch):  one optimizer step per batch
        loss = model.loss(x, y)
    val_loss, test_acc = model.evaluate()

Two tasks: :class:`~momenta.compare.experiment.TabularTask` (a softmax classifier on a table)
and :class:`~momenta.compare.text.TextTask` (a character-level GPT on a text).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

Batch = tuple[Tensor, Tensor]


@dataclass
class Model:
    """A fresh model: its parameters, the mean loss of a batch (a differentiable scalar)
    and its evaluation now: ``(validation loss or None, test accuracy)``."""

    params: list[Tensor]
    loss: Callable[[Tensor, Tensor], Tensor]
    evaluate: Callable[[], tuple[float | None, float]]


class Task(ABC):
    """A training problem every optimizer of a comparison gets in the same form."""

    #: a validation loss is measured after every epoch
    has_val: bool = False

    @abstractmethod
    def build(self, seed: int) -> Model:
        """A model initialised from ``seed`` (the same for every optimizer)."""

    @abstractmethod
    def batches(self, epoch: int) -> Sequence[Batch]:
        """The batches of epoch ``epoch`` (from 1), the same for every optimizer."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """What the summary and the report say about the data."""

    @property
    @abstractmethod
    def default_target(self) -> float:
        """The loss whose first crossing is the time to target (validation loss when there
        is one, else training loss), unless the user gives one."""
