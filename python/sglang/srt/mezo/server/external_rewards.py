"""Rewards from the job's client (an ``external`` grader), on the scheduler's side.

A job whose grader is external takes each step in two turns of the scheduler loop:

1. :meth:`ExternalSteps.ready` finds the next step's rewards missing, so it publishes the step
   (:func:`~sglang.srt.mezo.training.rollout_step.publish_next_step`): the estimator writes the
   step's perturbed adapters into their LoRA slots, and :class:`ClientRewards` saves each as a
   PEFT folder and writes the rollouts (:class:`~.rollout_book.RolloutBook`): every prompt of the
   batch, answered once on each adapter, with the sampling seed the built-in generation would use
   (the +eps and -eps answers to a prompt draw alike). The job then waits; it takes no turn of
   the scheduler's time meanwhile, and serving goes on (the client samples through it).
2. Once the HTTP process has stored the posted rewards, ``ready`` says so and the run's next
   unit is the step itself, taken as any step: the same batch, seeds and slots, its losses minus
   the mean posted rewards of each side (:meth:`ClientRewards.rewards`).

A step that waits longer than the grader's ``timeout_s`` pauses the job (:meth:`ExternalSteps.overdue`);
nothing is lost: a resume waits again for the same rollouts, a restart publishes them again.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any, Callable, Optional, Sequence

from sglang.srt.mezo.server.rollout_book import RolloutBook, rollout_id
from sglang.srt.mezo.server.store import JobStore, now
from sglang.srt.mezo.training.objectives.base import GenerationInputs, RewardObjective, Rollout
from sglang.srt.mezo.training.objectives.reward import PromptItem
from sglang.srt.mezo.training.rollout_step import RewardsPending, publish_next_step
from sglang.srt.mezo.training.run import MeZORun


class ClientRewards:
    """The :class:`~sglang.srt.mezo.training.objectives.base.RewardSource` of a job with an external
    grader: the posted rewards of the step being taken, or, before they are there, its rollouts
    published (then :class:`RewardsPending`)."""

    def __init__(self, run: MeZORun, book: RolloutBook, base_model: str, model_prefix: str, timeout_s: float,
                 sample_seeds: Callable[[list[list[int]]], list[int]], temperature: float):
        self.run, self.book, self.base, self.prefix, self.timeout_s = run, book, base_model, model_prefix, timeout_s
        self.sample_seeds, self.temperature = sample_seeds, temperature
        self.answered: Optional[int] = None  # the step whose posted rewards were handed out

    def rewards(self, batch: Sequence[Any], rollouts: Sequence[Rollout], inputs: GenerationInputs) -> list[float]:
        step = self.run.step_count + 1
        posted = self.book.posted(step)
        if posted is None:
            self.publish(step, batch, rollouts, inputs)
            raise RewardsPending(step)
        if self.answered == step:  # an estimator asking once per direction: only its first call was published
            raise ValueError(f"step {step} asked for its rewards twice: a job whose rewards come from its client "
                             "measures each step in one call (n_spsa=1, or an estimator that measures every "
                             "direction at once)")
        self.answered = step
        by_id = posted["rewards"]
        if len(by_id) != len(rollouts):
            raise ValueError(f"step {step} has {len(rollouts)} rollouts but {len(by_id)} rewards were stored for it")
        return [float(by_id[rollout_id(step, i)]) for i in range(len(rollouts))]

    def publish(self, step: int, batch: Sequence[Any], rollouts: Sequence[Rollout], inputs: GenerationInputs) -> None:
        """Save each adapter the rollouts name as it is in its slot now, and write the rollouts."""
        token = secrets.token_hex(4)  # a name nobody can guess, new at each publication
        names: dict[str, str] = {}
        for r in rollouts:
            if r.adapter is None:
                raise ValueError("a rollout on the base model cannot be published: it needs a LoRA slot")
            names.setdefault(r.adapter, f"{self.prefix}-s{step}-a{len(names)}-{token}")
        folder = self.book.step_dir(step)
        trainable = self.run.trainer.trainable
        adapters = {name: trainable.save_slot(lora_id, os.path.join(folder, name)) for lora_id, name in names.items()}
        seeds = self.sample_seeds([inputs.prompts[r.item] for r in rollouts])
        items = [{"index": i, "row": dict(e.item) if isinstance(e, PromptItem) else None,
                  "prompt_token_ids": list(inputs.prompts[i])} for i, e in enumerate(batch)]
        created = now()
        self.book.publish({
            "step": step, "created_at": created, "expires_at": created + int(self.timeout_s),
            "sampling": {"max_tokens": inputs.max_new_tokens, "temperature": self.temperature,
                         "stop_token_ids": sorted(inputs.stop_token_ids)},
            "items": items,
            "data": [{"object": "fine_tuning.job.rollout", "id": rollout_id(step, i), "item": r.item,
                      "model": f"{self.base}:{names[r.adapter]}", "seed": seed}
                     for i, (r, seed) in enumerate(zip(rollouts, seeds))],
            "adapters": adapters,
        })


class ExternalSteps:
    """When a job with an external grader may take its next unit (see the module docstring)."""

    def __init__(self, run: MeZORun, book: RolloutBook, source: ClientRewards):
        self.run, self.book, self.source = run, book, source
        self.published: Optional[int] = None  # the step whose rollouts are out, waiting
        self.waiting_since = 0.0

    @property
    def waiting(self) -> bool:
        """Whether the job waits for its client (its next unit is a step whose rewards are missing)."""
        return self.published is not None and self.published == self.run.step_count + 1 and \
            self.book.posted(self.published) is None

    def ready(self) -> bool:
        """Whether the run's next unit can be done now; publishes the next step's rollouts first when
        its rewards are missing (then False)."""
        if self.run.upcoming_batch() is None:
            return True
        step = self.run.step_count + 1
        if self.book.posted(step) is not None:
            self.published = None
            self.book.remove_adapters(keep=None)
            return True
        if self.published != step:
            self.published = publish_next_step(self.run)
            self.waiting_since = time.monotonic()
        return False

    def overdue(self) -> bool:
        """Whether the waiting step has waited longer than the grader's ``timeout_s``."""
        return self.waiting and time.monotonic() - self.waiting_since > self.source.timeout_s

    def restart_clock(self) -> None:
        """Wait afresh (the job was resumed): the rollouts stay out, their deadline moves."""
        self.waiting_since = time.monotonic()
        current = self.book.current()
        if current is not None and self.waiting:
            self.book.publish({**current, "expires_at": now() + int(self.source.timeout_s)})

    def close(self) -> None:
        """The job ended: its perturbed adapters' folders go (the rewards stay, as its record)."""
        self.book.remove_adapters(keep=None)


def external_steps(run: MeZORun, store: JobStore, job_id: str, base_model: str, model_prefix: str,
                   timeout_s: float) -> ExternalSteps:
    """The external steps of job ``job_id``'s ``run``: its objective takes its rewards from the client,
    who samples the perturbed adapters as ``<base_model>:<model_prefix>-s<step>-a<k>-<token>``."""
    objective = run.trainer.objective
    if not isinstance(objective, RewardObjective):
        raise ValueError(f"an external grader gives rewards to a reinforcement job's answers; objective "
                         f"{type(objective).__name__} has none")
    book = RolloutBook(store, job_id)
    trainer = run.trainer
    source = ClientRewards(run, book, base_model, model_prefix, timeout_s, trainer.model.sample_seeds,
                           trainer.config.temperature)
    objective.take_rewards_from(source)
    return ExternalSteps(run, book, source)
