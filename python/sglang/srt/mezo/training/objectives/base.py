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
from typing import Any, NamedTuple, Optional, Sequence, Union

import torch

from sglang.srt.mezo.data.metrics import accuracy


class ForwardInputs(NamedTuple):
    """One forward's work: token-id sequences, the position of each whose logits are needed (or a
    list of positions: one logits row each), and the vocabulary rows to compute there. The logits
    come back as one row per position, sequence by sequence."""

    sequences: list[list[int]]
    positions: list[Union[int, list[int]]]
    vocab_ids: Optional[torch.Tensor]  # None: every vocabulary row
    #: The batch item each sequence belongs to, in order (None: sequence i is item i); an item
    #: may run as several sequences (one per option, say).
    owners: Optional[list[int]] = None

    def row_counts(self) -> list[int]:
        """How many logits rows each sequence gets."""
        return [1 if isinstance(p, int) else len(p) for p in self.positions]

    def sequences_of(self, items: Sequence[int]) -> list[int]:
        """The indices of the sequences of batch items ``items`` (in sequence order)."""
        if self.owners is None:
            return list(items)
        wanted = set(items)
        return [i for i, owner in enumerate(self.owners) if owner in wanted]


class Objective(ABC):
    """What MeZO minimises, as a function of one forward's logits (see the module docstring)."""

    #: The evaluation metric that is the run's headline and picks its best checkpoint (higher is better).
    primary_metric: str = "eval_accuracy"
    #: Whether this objective's sequences usually start with a prefix they share (a DPO pair's two
    #: answers to one prompt): its forwards then extend each shared prefix once per adapter
    #: (:mod:`sglang.srt.mezo.engine.prefix_sharing`; the same logits up to float rounding).
    shares_prefixes: bool = False

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

    def loss_weight(self, batch: Sequence[Any]) -> float:
        """How many terms :meth:`loss` averages over ``batch``; data-parallel workers weight their
        shards' losses by it. Base: one per item."""
        return float(len(batch))

    def train_metrics(self, logits: torch.Tensor, batch: Sequence[Any]) -> dict:
        """Metrics a training step reports besides its loss, from one side's logits; base: none."""
        return {}

    def eval_loss(self, logits: torch.Tensor, batch: Sequence[Any]) -> float:
        """The loss an evaluation reports (mean over ``batch``); base: the training loss."""
        return self.loss(logits, batch)

    def metrics(self, predictions: list, references: list) -> dict:
        """An evaluation's metrics from all its predictions; base: accuracy."""
        return {"eval_accuracy": accuracy(predictions, references)}


class GenerationInputs(NamedTuple):
    """What an evaluation generates for a batch: each example's prompt ids, greedy, stopping at
    any of ``stop_token_ids`` or after ``max_new_tokens``."""

    prompts: list[list[int]]
    max_new_tokens: int
    stop_token_ids: frozenset[int]


class GenerativeObjective(Objective):
    """An objective whose evaluation also generates each example's answer through SGLang (greedy,
    at the trained weights, never perturbed ones) and scores the text against its references."""

    def generates(self, batch: Sequence[Any]) -> bool:
        """Whether an evaluation generates answers for ``batch``; base: always."""
        return True

    @abstractmethod
    def generation_inputs(self, batch: Sequence[Any]) -> GenerationInputs:
        """What to generate for ``batch``."""

    @abstractmethod
    def answers(self, generated: list[list[int]], batch: Sequence[Any]) -> tuple[list[str], list]:
        """(answer texts, references) of ``batch`` from the ids :meth:`generation_inputs` produced."""

    @abstractmethod
    def generation_metrics(self, answers: list[str], references: list) -> dict:
        """An evaluation's generation metrics from all its answers."""


class ReferenceObjective(Objective):
    """An objective whose loss also needs each item's score under the model the run starts from (DPO's
    reference model). The run computes those scores once, before its first step, from the logits
    of :meth:`forward_inputs` at the initial weights, and keeps them with the run (a resumed run
    reads them back instead of recomputing them from trained weights)."""

    @abstractmethod
    def reference_values(self, logits: torch.Tensor, batch: Sequence[Any]) -> list:
        """Each item's reference scores (JSON-able) from :meth:`forward_inputs`' logits."""

    @abstractmethod
    def with_reference(self, batch: Sequence[Any], values: Sequence[Any]) -> list:
        """``batch``'s items carrying ``values`` (from :meth:`reference_values`), ready for :meth:`loss`."""


class RewardObjective(GenerativeObjective):
    """An objective measured by what the model generates, not by logits (OpenAI's ``reinforcement``
    method): the loss of a batch is minus the mean reward a grader gives each prompt's answer, so
    MeZO's update climbs the reward. The trainer generates each prompt's answer under theta + eps z
    and theta - eps z in one batch (one LoRA slot each) and asks :meth:`rewards` for their grades;
    evaluation generates at the trained weights. No logits forward is ever run for it: its
    :meth:`forward_inputs` are the prompts, for what a caller sizes (a server's room check, token counts)."""

    primary_metric = "eval_reward"

    def forward_inputs(self, batch: Sequence[Any]) -> ForwardInputs:
        """The prompts (what a step or an evaluation prefills), read only for their sizes."""
        prompts = self.generation_inputs(batch).prompts
        return ForwardInputs(prompts, [len(p) - 1 for p in prompts], None)

    def loss(self, logits: torch.Tensor, batch: Sequence[Any]) -> float:
        raise TypeError(f"{type(self).__name__} is measured by generating (reward_loss), not from logits")

    def predict(self, logits: torch.Tensor, batch: Sequence[Any]) -> tuple[list, list]:
        raise TypeError(f"{type(self).__name__} is measured by generating (rewards), not from logits")

    @abstractmethod
    def rewards(self, answers: list[str], batch: Sequence[Any]) -> list[float]:
        """Each item's reward for its answer (a grader's score, in [0, 1] for OpenAI's graders)."""

    def grade(self, generated: list[list[int]], batch: Sequence[Any]) -> list[float]:
        """Each item's reward for the answer ids generated for it (:meth:`answers`, then :meth:`rewards`)."""
        return self.rewards(self.answers(generated, batch)[0], batch)

    def reward_loss(self, rewards: Sequence[float]) -> float:
        """The loss MeZO minimises: minus the mean reward."""
        return -sum(rewards) / max(len(rewards), 1)

    def metrics(self, predictions: list, references: list) -> dict:
        """``eval_reward``: the mean reward (an evaluation's predictions are the answers' rewards)."""
        return {"eval_reward": sum(predictions) / max(len(predictions), 1)}

    def generation_metrics(self, answers: list[str], references: list) -> dict:
        """Metrics of the answers besides the reward (SQuAD F1 where there are reference answers); base: none."""
        return {}
