"""The client's loop of a job whose grader is external, on the official ``openai`` client.

A job created with ``{"type": "external"}`` as its reinforcement grader answers its creation with
``job_key``; :class:`ExternalRewards` uses it to read each step's rollouts, answer them with the
step's perturbed adapters through ``/v1/chat/completions`` and post their rewards::

    from openai import OpenAI
    from sglang.srt.mezo.server.rollout_client import ExternalRewards

    client = OpenAI(base_url="http://127.0.0.1:30000/v1", api_key="none")
    job = client.fine_tuning.jobs.create(model=..., training_file=..., method={"type": "reinforcement",
                                         "reinforcement": {"grader": {"type": "external"}}})
    rewards = ExternalRewards.for_job(client, job)
    for rollouts in rewards.rollouts():  # one step after the other, until the job ends
        answers = {r.id: rewards.answer(rollouts, r).choices[0].message.content for r in rollouts.data}
        rewards.post(rollouts, {rid: my_reward(text) for rid, text in answers.items()})

:meth:`ExternalRewards.answer` is one turn; an environment of several turns calls
``rewards.openai.chat.completions.create(model=rollout.model, seed=rollout.seed, ...)`` as often as
it likes (``rewards.openai`` carries the job's key, which the perturbed adapters need).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

from sglang.srt.mezo.server.job_keys import HEADER

#: Job statuses after which no rollouts come.
ENDED = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Rollout:
    """One answer a step wants: to item ``item`` of the batch, from ``model`` (a perturbed adapter,
    as ``<base>:<adapter>``), sampled with ``seed``."""

    id: str
    item: int
    model: str
    seed: int


@dataclass(frozen=True)
class Rollouts:
    """A step waiting for its rewards: ``items`` (each prompt of the batch: ``row``, the training row,
    and ``prompt_token_ids``), ``data`` (the rollouts), ``sampling`` (``max_tokens``, ``temperature``,
    ``stop_token_ids``: what the built-in generation would use), ``expires_at`` (when the job pauses
    without the rewards)."""

    step: int
    items: list[dict]
    data: list[Rollout]
    sampling: dict
    expires_at: Optional[int] = None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> "Rollouts":
        return cls(obj["step"], list(obj["items"]), [Rollout(r["id"], r["item"], r["model"], r["seed"])
                                                     for r in obj["data"]], dict(obj["sampling"]), obj.get("expires_at"))

    def row(self, rollout: Rollout) -> dict:
        """The training row (``messages`` and the other fields) ``rollout`` answers."""
        return self.items[rollout.item]["row"]


class ExternalRewards:
    """One job's rollouts and rewards through ``client`` (an ``openai.OpenAI`` for the server's
    ``/v1``); ``job_key``: the job's own key from its creation answer."""

    def __init__(self, client: Any, job_id: str, job_key: str, poll_s: float = 0.2):
        self.openai = client.with_options(default_headers={HEADER: job_key})
        self.job_id, self.poll_s = job_id, poll_s

    @classmethod
    def for_job(cls, client: Any, job: Any, **kwargs: Any) -> "ExternalRewards":
        """For ``job``, the object ``client.fine_tuning.jobs.create`` answered (it holds the job's key)."""
        key = (job.model_extra or {}).get("job_key")
        if not key:
            raise ValueError(f"job {job.id} has no job_key: only the answer to its creation carries it, and only "
                             'for a job whose grader is {"type": "external"}')
        return cls(client, job.id, key, **kwargs)

    def rollouts(self) -> Iterator[Rollouts]:
        """Each step's rollouts as they are published; ends when the job does. A step given and not
        posted comes again (the server waits for its rewards)."""
        while True:
            view = self.openai.get(f"/fine_tuning/jobs/{self.job_id}/rollouts", cast_to=object)
            if view["step"] is not None:
                yield Rollouts.from_object(view)
            elif view["status"] in ENDED:
                return
            else:
                time.sleep(self.poll_s)

    def answer(self, rollouts: Rollouts, rollout: Rollout, messages: Optional[list] = None, **kwargs: Any) -> Any:
        """``rollout``'s answer through ``/v1/chat/completions``: its model and seed, the step's
        sampling settings, and its row's messages (or ``messages``: a later turn's); ``kwargs``
        override any of them."""
        sampling = rollouts.sampling
        params = {"model": rollout.model, "messages": messages or rollouts.row(rollout)["messages"],
                  "seed": rollout.seed, "max_tokens": sampling["max_tokens"], "temperature": sampling["temperature"],
                  "extra_body": {"stop_token_ids": sampling["stop_token_ids"]}, **kwargs}
        return self.openai.chat.completions.create(**params)

    def post(self, rollouts: Rollouts, rewards: Mapping[str, float]) -> dict:
        """Post one reward per rollout of ``rollouts`` (rollout id -> reward); the step is then taken."""
        body = {"step": rollouts.step, "rewards": [{"rollout_id": rid, "reward": r} for rid, r in rewards.items()]}
        return self.openai.post(f"/fine_tuning/jobs/{self.job_id}/rollouts/rewards", body=body, cast_to=object)
