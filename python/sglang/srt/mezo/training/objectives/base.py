"""The objective interface: what the trainer, the run and evaluation know of an objective.

An objective says what a batch is and how it is measured. :class:`Objective` is the contract the
trainer holds: ``encode`` turns a task's rows into batch items once; ``forward_inputs`` says what
SGLang runs for a batch (its sizes are what a server checks room for); and three measurements, each
through a :class:`Model` (the SGLang model on the LoRA slots named):

- :meth:`~Objective.batch_loss`: the loss of a batch at one adapter;
- :meth:`~Objective.sided_losses`: (L+, L-) of each direction of a step, every direction's part
  of the batch run once at theta + eps z_k and once at theta - eps z_k in one batched call;
- :meth:`~Objective.slot_losses`: the loss of the whole batch on each of several LoRA slots, all
  in one batched call (FZOO's theta and its one-sided probes);
- :meth:`~Objective.evaluate`: an evaluation chunk's loss, predictions and answers.

Two families implement them. :class:`LogitsObjective` measures a batch from one forward's logits:
a new objective of that kind says only ``forward_inputs``, ``loss`` and ``predict``.
:class:`RewardObjective` measures it by generating answers and grading them (OpenAI's
``reinforcement`` method): no logits at all. The trainer never looks inside a batch item, nor at
which family an objective is.

A new objective is one module in this folder that subclasses one of them, plus one
``@register("name")`` line (see :mod:`sglang.srt.mezo.training.objectives`)::

    >>> import torch
    >>> class LastTokenIsZero(LogitsObjective):
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
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional, Protocol, Sequence, Union

import torch

from sglang.srt.mezo.data.metrics import accuracy

#: The LoRA slots of a step's directions: (the +eps adapter's id, the -eps adapter's id) each.
Slots = Sequence[tuple[Optional[str], Optional[str]]]


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


class GenerationInputs(NamedTuple):
    """What an evaluation generates for a batch: each example's prompt ids, greedy, stopping at
    any of ``stop_token_ids`` or after ``max_new_tokens``."""

    prompts: list[list[int]]
    max_new_tokens: int
    stop_token_ids: frozenset[int]


class Model(Protocol):
    """What an objective measures through: the model SGLang serves, each sequence (or prompt) on
    the LoRA adapter named for it (None: the base model)."""

    def logits(self, sequences: Sequence[Sequence[int]], positions: Sequence[Union[int, list[int]]],
               vocab_ids: Optional[torch.Tensor], lora_ids: Sequence[Optional[str]]) -> torch.Tensor:
        """One logits row per position, sequence by sequence (:class:`ForwardInputs`)."""

    def generate(self, inputs: GenerationInputs, lora_ids: Sequence[Optional[str]],
                 sampled: bool = False) -> list[list[int]]:
        """Each prompt's answer ids: greedy, or ``sampled`` at the run's temperature with one seed
        per prompt and step (a prompt given twice in one call draws alike on both)."""


class SidedLosses(NamedTuple):
    """(L+, L-) per direction of a step, and the step's other training metrics (a mean over both sides)."""

    losses: list[tuple[float, float]]
    metrics: dict


class SlotLosses(NamedTuple):
    """The loss of the whole batch on each slot of a call, in the slots' order, and the step's other
    training metrics (a mean over the slots)."""

    losses: list[float]
    metrics: dict


@dataclass
class ChunkScores:
    """What an evaluation chunk gave: its loss summed over items, and what the metrics read."""

    loss_sum: float = 0.0
    predictions: list = field(default_factory=list)
    references: list = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    answer_references: list = field(default_factory=list)

    def add(self, other: "ChunkScores") -> None:
        """Fold ``other`` (a later chunk) into these scores."""
        self.loss_sum += other.loss_sum
        self.predictions += other.predictions
        self.references += other.references
        self.answers += other.answers
        self.answer_references += other.answer_references


class Rollout(NamedTuple):
    """One answer a reward step needs: batch item ``item``'s prompt answered on LoRA adapter ``adapter``."""

    item: int
    adapter: Optional[str]


class RewardSource(Protocol):
    """Where a reward step's rewards come from when not from answers generated here (a server job's
    client: :class:`~sglang.srt.mezo.server.external_rewards.ClientRewards`)."""

    def rewards(self, batch: Sequence[Any], rollouts: Sequence[Rollout], inputs: GenerationInputs) -> list[float]:
        """One reward per rollout, in order; ``inputs``: what the batch's answers are generated from
        (its prompts, at most ``max_new_tokens``, the stop tokens). Raises when they are not there."""


def side_ids(parts: Sequence[range], slots: Slots, counts: Sequence[int]) -> tuple[list, list]:
    """The +eps and -eps adapter ids of every row of a sided call: part k's ``counts[k]`` rows on
    direction k's two slots.

    >>> side_ids([range(0, 2), range(2, 3)], [("p0", "m0"), ("p1", "m1")], [2, 1])
    (['p0', 'p0', 'p1'], ['m0', 'm0', 'm1'])
    """
    plus = [p for (p, _), n in zip(slots, counts) for _ in range(n)]
    minus = [m for (_, m), n in zip(slots, counts) for _ in range(n)]
    return plus, minus


class Objective(ABC):
    """What MeZO minimises, as the trainer sees it (see the module docstring)."""

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
        """What SGLang runs (or prefills) for ``batch``."""

    def loss_weight(self, batch: Sequence[Any]) -> float:
        """How many terms a loss of ``batch`` averages; data-parallel workers weight their shards'
        losses by it. Base: one per item."""
        return float(len(batch))

    def answer_room(self, batch: Sequence[Any], training: bool) -> int:
        """Tokens of answer each item of ``batch`` may add to the KV cache in a training step
        (``training``) or an evaluation chunk; base: none (nothing is generated)."""
        return 0

    def metrics(self, predictions: list, references: list) -> dict:
        """An evaluation's metrics from all its predictions; base: accuracy."""
        return {"eval_accuracy": accuracy(predictions, references)}

    def generation_metrics(self, answers: list[str], references: list) -> dict:
        """An evaluation's metrics of generated answers; base: none."""
        return {}

    @abstractmethod
    def batch_loss(self, model: Model, batch: Sequence[Any], lora_id: Optional[str]) -> float:
        """The training loss of ``batch`` (a mean over it) with every item on adapter ``lora_id``."""

    @abstractmethod
    def sided_losses(self, model: Model, batch: Sequence[Any], parts: Sequence[range], slots: Slots) -> SidedLosses:
        """(L+, L-) of each direction k on its part ``parts[k]`` of ``batch``, from one batched call:
        part k's items on slot ``slots[k][0]`` (theta + eps z_k) and ``slots[k][1]`` (theta - eps z_k)."""

    @abstractmethod
    def slot_losses(self, model: Model, batch: Sequence[Any], slots: Sequence[Optional[str]]) -> SlotLosses:
        """The loss of the whole ``batch`` on each adapter of ``slots``, from one batched call: every
        item runs once on each slot."""

    @abstractmethod
    def evaluate(self, model: Model, chunk: Sequence[Any], lora_id: Optional[str]) -> ChunkScores:
        """An evaluation chunk's scores with every item on adapter ``lora_id`` (the trained weights)."""


def mean_metrics(per_slot: Sequence[dict]) -> dict:
    """Metrics measured on several slots, averaged key by key.

    >>> mean_metrics([{"acc": 0.5}, {"acc": 1.0}])
    {'acc': 0.75}
    """
    if not per_slot:
        return {}
    return {k: sum(m[k] for m in per_slot) / len(per_slot) for k in per_slot[0]}


class LogitsObjective(Objective):
    """An objective measured from one forward's logits: say what to run (``forward_inputs``) and
    how to read the logits (``loss``, ``predict``); the measurements follow."""

    @abstractmethod
    def loss(self, logits: torch.Tensor, batch: Sequence[Any]) -> float:
        """The training loss of ``batch`` from :meth:`forward_inputs`' logits (a mean over it)."""

    @abstractmethod
    def predict(self, logits: torch.Tensor, batch: Sequence[Any]) -> tuple[list, list]:
        """(predictions, references) of ``batch``, for :meth:`metrics`."""

    def train_metrics(self, logits: torch.Tensor, batch: Sequence[Any]) -> dict:
        """Metrics a training step reports besides its loss, from one side's logits; base: none."""
        return {}

    def eval_loss(self, logits: torch.Tensor, batch: Sequence[Any]) -> float:
        """The loss an evaluation reports (mean over ``batch``); base: the training loss."""
        return self.loss(logits, batch)

    def logits_of(self, model: Model, batch: Sequence[Any], lora_id: Optional[str]) -> torch.Tensor:
        """The logits :meth:`forward_inputs` asks for, every sequence on adapter ``lora_id``."""
        inputs = self.forward_inputs(batch)
        return model.logits(inputs.sequences, inputs.positions, inputs.vocab_ids, [lora_id] * len(inputs.sequences))

    def batch_loss(self, model: Model, batch: Sequence[Any], lora_id: Optional[str]) -> float:
        return self.loss(self.logits_of(model, batch, lora_id), batch)

    def sided_losses(self, model: Model, batch: Sequence[Any], parts: Sequence[range], slots: Slots) -> SidedLosses:
        inputs = self.forward_inputs(batch)
        counts = inputs.row_counts()
        part_sequences = [inputs.sequences_of(rows) for rows in parts]
        order = [i for seqs in part_sequences for i in seqs]
        plus, minus = side_ids(parts, slots, [len(seqs) for seqs in part_sequences])
        sequences, positions = [inputs.sequences[i] for i in order], [inputs.positions[i] for i in order]
        logits = model.logits(sequences * 2, positions * 2, inputs.vocab_ids, plus + minus)
        n = sum(counts[i] for i in order)  # logits rows of one side
        losses, start = [], 0
        for rows, seqs in zip(parts, part_sequences):
            part, end = [batch[r] for r in rows], start + sum(counts[i] for i in seqs)
            losses.append((self.loss(logits[start:end], part), self.loss(logits[n + start:n + end], part)))
            start = end
        if len(parts) != 1:
            return SidedLosses(losses, {})
        # One direction: both sides saw the whole batch, so its metrics are the batch's.
        sides = [self.train_metrics(logits[:n], batch), self.train_metrics(logits[n:], batch)]
        return SidedLosses(losses, {k: (sides[0][k] + sides[1][k]) / 2 for k in sides[0]})

    def slot_losses(self, model: Model, batch: Sequence[Any], slots: Sequence[Optional[str]]) -> SlotLosses:
        inputs = self.forward_inputs(batch)
        m = len(inputs.sequences)
        lora_ids = [slot for slot in slots for _ in range(m)]
        logits = model.logits(inputs.sequences * len(slots), inputs.positions * len(slots), inputs.vocab_ids, lora_ids)
        n = sum(inputs.row_counts())  # logits rows of one slot
        per_slot = [logits[k * n:(k + 1) * n] for k in range(len(slots))]
        return SlotLosses([self.loss(rows, batch) for rows in per_slot],
                          mean_metrics([self.train_metrics(rows, batch) for rows in per_slot]))

    def evaluate(self, model: Model, chunk: Sequence[Any], lora_id: Optional[str]) -> ChunkScores:
        logits = self.logits_of(model, chunk, lora_id)
        predictions, references = self.predict(logits, chunk)
        return ChunkScores(self.eval_loss(logits, chunk) * len(chunk), predictions, references)


class Answering(ABC):
    """What an objective that generates answers says of them: what to generate and how to read it."""

    @abstractmethod
    def generation_inputs(self, batch: Sequence[Any]) -> GenerationInputs:
        """What to generate for ``batch``."""

    @abstractmethod
    def answers(self, generated: list[list[int]], batch: Sequence[Any]) -> tuple[list[str], list]:
        """(answer texts, references) of ``batch`` from the ids :meth:`generation_inputs` produced."""


class GenerativeObjective(LogitsObjective, Answering):
    """A logits objective whose evaluation also generates each example's answer through SGLang
    (greedy, at the trained weights, never perturbed ones) and scores the text against its references."""

    def generates(self, batch: Sequence[Any]) -> bool:
        """Whether an evaluation generates answers for ``batch``; base: always."""
        return True

    @abstractmethod
    def generation_metrics(self, answers: list[str], references: list) -> dict:
        """An evaluation's generation metrics from all its answers."""

    def answer_room(self, batch: Sequence[Any], training: bool) -> int:
        return 0 if training or not self.generates(batch) else self.generation_inputs(batch).max_new_tokens

    def evaluate(self, model: Model, chunk: Sequence[Any], lora_id: Optional[str]) -> ChunkScores:
        scores = super().evaluate(model, chunk, lora_id)
        if self.generates(chunk):
            inputs = self.generation_inputs(chunk)
            scores.answers, scores.answer_references = self.answers(
                model.generate(inputs, [lora_id] * len(inputs.prompts)), chunk)
        return scores


class ReferenceObjective(LogitsObjective):
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


class RewardObjective(Objective, Answering):
    """An objective measured by what the model generates, not by logits (OpenAI's ``reinforcement``
    method): the loss of a batch is minus the mean reward a grader gives each prompt's answer, so
    MeZO's update climbs the reward. A step generates each prompt's answer under theta + eps z and
    theta - eps z in one batch (one LoRA slot each, the same sampling seed on both) and grades them;
    evaluation generates greedily at the trained weights. No logits forward is ever run for it: its
    :meth:`forward_inputs` are the prompts, for what a caller sizes (a server's room check, token counts)."""

    primary_metric = "eval_reward"

    @abstractmethod
    def rewards(self, answers: list[str], batch: Sequence[Any]) -> list[float]:
        """Each item's reward for its answer (a grader's score, in [0, 1] for OpenAI's graders)."""

    def forward_inputs(self, batch: Sequence[Any]) -> ForwardInputs:
        """The prompts (what a step or an evaluation prefills), read only for their sizes."""
        prompts = self.generation_inputs(batch).prompts
        return ForwardInputs(prompts, [len(p) - 1 for p in prompts], None)

    def answer_room(self, batch: Sequence[Any], training: bool) -> int:
        return self.generation_inputs(batch).max_new_tokens

    def grade(self, generated: list[list[int]], batch: Sequence[Any]) -> list[float]:
        """Each item's reward for the answer ids generated for it (:meth:`answers`, then :meth:`rewards`)."""
        return self.rewards(self.answers(generated, batch)[0], batch)

    def reward_loss(self, rewards: Sequence[float]) -> float:
        """The loss MeZO minimises: minus the mean reward."""
        return -sum(rewards) / max(len(rewards), 1)

    def metrics(self, predictions: list, references: list) -> dict:
        """``eval_reward``: the mean reward (an evaluation's predictions are the answers' rewards)."""
        return {"eval_reward": sum(predictions) / max(len(predictions), 1)}

    def batch_loss(self, model: Model, batch: Sequence[Any], lora_id: Optional[str]) -> float:
        """Minus the mean reward of answers sampled now."""
        if self.external is not None:  # theta itself is perturbed meanwhile: no client may sample it
            raise ValueError("rewards from outside (an external grader) need a step on LoRA slots (a paired, "
                             "population, FZOO or HiZOO estimator), not two forwards over the adapter itself")
        return self.reward_loss(self.grade(model.generate(self.generation_inputs(batch), [lora_id] * len(batch),
                                                          sampled=True), batch))

    def take_rewards_from(self, source: Optional["RewardSource"]) -> None:
        """Let ``source`` give the rewards of every training step from now on instead of answers
        generated and graded here (a server job's client, :mod:`sglang.srt.mezo.server.external_rewards`);
        None: back to generating."""
        self.external = source

    #: Where a step's rewards come from besides generating and grading here (see :meth:`take_rewards_from`).
    external: Optional["RewardSource"] = None

    def _rewards_of(self, model: Model, batch: Sequence[Any], inputs: GenerationInputs, rows: Sequence[int],
                    lora_ids: Sequence[Optional[str]]):
        """(a, b, items) -> the rewards of rollouts a..b (prompt ``rows[i]`` answered on ``lora_ids[i]``),
        ``items`` being their batch items: from the external source, or generated now in one batch."""
        if self.external is not None:
            flat = self.external.rewards(batch, [Rollout(r, a) for r, a in zip(rows, lora_ids)], inputs)
            return lambda a, b, items: flat[a:b]
        generated = model.generate(inputs._replace(prompts=[inputs.prompts[r] for r in rows]), list(lora_ids),
                                   sampled=True)
        return lambda a, b, items: self.grade(generated[a:b], items)

    def sided_losses(self, model: Model, batch: Sequence[Any], parts: Sequence[range], slots: Slots) -> SidedLosses:
        """Every prompt of part k answered on direction k's two slots, in one generation."""
        inputs = self.generation_inputs(batch)
        rows = [r for part in parts for r in part]
        plus, minus = side_ids(parts, slots, [len(part) for part in parts])
        rewards_of = self._rewards_of(model, batch, inputs, rows * 2, plus + minus)
        n, losses, rewards, start = len(rows), [], [], 0
        for part_rows in parts:
            part, end = [batch[r] for r in part_rows], start + len(part_rows)
            sides = [rewards_of(a, b, part) for a, b in ((start, end), (n + start, n + end))]
            rewards += sides[0] + sides[1]
            losses.append((self.reward_loss(sides[0]), self.reward_loss(sides[1])))
            start = end
        return SidedLosses(losses, {"train_reward_mean": sum(rewards) / max(len(rewards), 1)})

    def slot_losses(self, model: Model, batch: Sequence[Any], slots: Sequence[Optional[str]]) -> SlotLosses:
        """Every prompt answered on each slot, in one generation (a prompt draws alike on every slot)."""
        inputs = self.generation_inputs(batch)
        n = len(inputs.prompts)
        rewards_of = self._rewards_of(model, batch, inputs, list(range(n)) * len(slots),
                                      [slot for slot in slots for _ in range(n)])
        rewards = [rewards_of(k * n, (k + 1) * n, batch) for k in range(len(slots))]
        every = [r for slot_rewards in rewards for r in slot_rewards]
        return SlotLosses([self.reward_loss(r) for r in rewards],
                          {"train_reward_mean": sum(every) / max(len(every), 1)})

    def evaluate(self, model: Model, chunk: Sequence[Any], lora_id: Optional[str]) -> ChunkScores:
        """Greedy answers at the trained weights; the predictions are their rewards."""
        answers, references = self.answers(model.generate(self.generation_inputs(chunk), [lora_id] * len(chunk)),
                                           chunk)
        rewards = self.rewards(answers, chunk)
        return ChunkScores(self.reward_loss(rewards) * len(chunk), rewards, [], answers, references)
