"""The objective interface: what the trainer, the run and evaluation know of an objective.

An objective says what a batch is and what its loss is, in three steps the trainer runs for it:
``encode`` turns a task's rows into batch items once, ``forward_inputs`` says what SGLang must run
for a batch (token ids, the positions whose logits are needed, the vocabulary rows), and ``loss`` /
``predict`` / ``metrics`` read the logits of that forward. The trainer never looks inside a batch
item, so the +eps and -eps passes of every objective share one forward (two LoRA slots).

A new objective is one module in this folder that subclasses :class:`Objective`, plus one
``@register("name")`` line (see :mod:`sglang.srt.mezo.training.objectives`)::

    >>> import torch
    >>> class LastTokenIsZero(Objective):
    ...     def forward_inputs(self, batch):
    ...         return ForwardInputs([list(ids) for ids in batch], [len(ids) - 1 for ids in batch], torch.tensor([0]))
    ...     def loss(self, logits, batch):
    ...         return -logits.double().mean().item()
    ...     def predict(self, logits, batch):
    ...         return [0] * len(batch), [0] * len(batch)
    >>> objective = LastTokenIsZero()
    >>> objective.forward_inputs([(5, 6, 7)]).positions
    [2]
    >>> objective.metrics([0, 0], [0, 1])
    {'eval_accuracy': 0.5}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple, Optional, Sequence

import torch

from sglang.srt.mezo.data.metrics import accuracy


class ForwardInputs(NamedTuple):
    """One forward's work: token-id sequences, the one position of each whose logits are needed,
    and the vocabulary rows to compute there."""

    sequences: list[list[int]]
    positions: list[int]
    vocab_ids: Optional[torch.Tensor]  # None: every vocabulary row


class Objective(ABC):
    """What MeZO minimises, as a function of one forward's logits (see the module docstring)."""

    def encode(self, examples: Sequence[Any]) -> list:
        """A task's rows as this objective's batch items, once per run; base: as they are."""
        return list(examples)

    @abstractmethod
    def forward_inputs(self, batch: Sequence[Any]) -> ForwardInputs:
        """What SGLang runs for ``batch``."""

    @abstractmethod
    def loss(self, logits: torch.Tensor, batch: Sequence[Any]) -> float:
        """The training loss of ``batch`` from :meth:`forward_inputs`' logits (a mean over it)."""

    @abstractmethod
    def predict(self, logits: torch.Tensor, batch: Sequence[Any]) -> tuple[list, list]:
        """(predictions, references) of ``batch``, for :meth:`metrics`."""

    def eval_loss(self, logits: torch.Tensor, batch: Sequence[Any]) -> float:
        """The loss an evaluation reports (mean over ``batch``); base: the training loss."""
        return self.loss(logits, batch)

    def metrics(self, predictions: list, references: list) -> dict:
        """An evaluation's metrics from all its predictions; base: accuracy."""
        return {"eval_accuracy": accuracy(predictions, references)}
