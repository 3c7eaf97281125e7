"""``/v1/fine_tuning/jobs/{id}/rollouts``: the client's side of a job whose grader is external.

- ``GET .../rollouts`` answers the step waiting for its rewards (``fine_tuning.job.rollouts``):
  ``step``, ``expires_at`` (when the job pauses if no rewards came), ``sampling`` (``max_tokens``,
  ``temperature``, ``stop_token_ids``), ``items`` (each prompt of the batch: ``row``, the training
  row with its ``messages``, and ``prompt_token_ids``) and ``data``: one ``fine_tuning.job.rollout``
  per answer wanted (``id``, ``item``, ``model``: the perturbed adapter to answer with, ``seed``).
  With nothing waiting, ``step`` is null and ``data`` empty; ``status`` says whether to come back.
  The step's adapters are loaded for the client first (:class:`~..rollout_adapters.RolloutAdapters`).
- ``POST .../rollouts/rewards`` with ``{"step": N, "rewards": [{"rollout_id": ..., "reward": x}, ...]}``
  stores one finite reward per rollout of step N, then the step's adapters leave the pool; the
  scheduler takes the step. A post for another step than the waiting one is a 409, a second post a
  409, a missing, repeated or unknown rollout or a reward that is not a finite number a 400
  naming the field; nothing is stored then.

Both need the job's own key (``X-Job-Key``, :mod:`..job_keys`): 401 without it, 403 with another.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from sglang.srt.mezo.data.graders.external import is_external
from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.server.job_keys import HEADER, matches
from sglang.srt.mezo.server.openai_objects import job_status
from sglang.srt.mezo.server.rollout_adapters import RolloutAdapters
from sglang.srt.mezo.server.rollout_book import RolloutBook, client_view
from sglang.srt.mezo.server.routes.base import Resource, Route, ok, read_json
from sglang.srt.mezo.server.routes.jobs import find_job
from sglang.srt.mezo.server.store import FINAL, JobStore, now


def check_rewards(body: Any, pending: dict) -> dict[str, float]:
    """The rewards of ``body`` for the waiting step ``pending``, checked: rollout id -> reward.
    Raises the RequestError that names what is wrong (nothing is stored then).

    >>> pending = {"step": 2, "data": [{"id": "rollout-2-0"}, {"id": "rollout-2-1"}]}
    >>> check_rewards({"step": 2, "rewards": [{"rollout_id": "rollout-2-1", "reward": 1},
    ...                                       {"rollout_id": "rollout-2-0", "reward": 0.5}]}, pending)
    {'rollout-2-1': 1.0, 'rollout-2-0': 0.5}
    """
    if not isinstance(body, dict):
        raise RequestError('the request body must be a JSON object {"step": N, "rewards": [{"rollout_id": ..., '
                           '"reward": ...}, ...]}')
    unknown = sorted(set(body) - {"step", "rewards"})
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}; a rewards post has step and rewards", unknown[0])
    step = body.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        raise RequestError(f"step must be the number of the step whose rollouts you answered (GET .../rollouts "
                           f"gives it: {pending['step']}), got {step!r}", "step")
    if step != pending["step"]:
        raise RequestError(f"step {step} is not the step waiting for its rewards ({pending['step']}): a step "
                           "before it has been taken already, one after it has not been published; read the "
                           "rollouts again (GET .../rollouts)", "step", 409, "step_not_waiting")
    rewards = body.get("rewards")
    if not isinstance(rewards, list):
        raise RequestError('rewards must be a list of {"rollout_id": ..., "reward": <number>}, one per rollout',
                           "rewards")
    wanted = [r["id"] for r in pending["data"]]
    known, out = set(wanted), {}
    for i, entry in enumerate(rewards):
        where = f"rewards[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"rollout_id", "reward"}:
            raise RequestError(f'{where} must be {{"rollout_id": ..., "reward": <number>}}, got {entry!r:.200}', where)
        rid, reward = entry["rollout_id"], entry["reward"]
        if not isinstance(rid, str) or rid not in known:
            raise RequestError(f"{where}.rollout_id {rid!r:.100} is not a rollout of step {step} (its ids are "
                               f"{wanted[0]} .. {wanted[-1]})", f"{where}.rollout_id")
        if rid in out:
            raise RequestError(f"{where}.rollout_id {rid!r} is answered twice; give each rollout one reward",
                               f"{where}.rollout_id")
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
            raise RequestError(f"{where}.reward is {reward!r:.100}; a reward is a finite number", f"{where}.reward")
        out[rid] = float(reward)
    missing = [rid for rid in wanted if rid not in out]
    if missing:
        raise RequestError(f"{len(missing)} rollout(s) of step {step} have no reward, {missing[0]} first; post one "
                           "reward for every rollout at once", "rewards")
    return out


class RolloutRoutes(Resource):
    """The two routes above, on ``store``'s jobs; the adapters go through ``adapters``."""

    def __init__(self, store: JobStore, adapters: RolloutAdapters):
        self.store, self.adapters = store, adapters
        self.posting = asyncio.Lock()  # one post at a time: the check and the store of a post go together

    def routes(self) -> list[Route]:
        return [Route("/v1/fine_tuning/jobs/{job_id}/rollouts", self.get_rollouts, ["GET"]),
                Route("/v1/fine_tuning/jobs/{job_id}/rollouts/rewards", self.post_rewards, ["POST"])]

    def _job(self, request: Request) -> tuple[str, dict, str]:
        """(job id, its request, its status) of a request that carries the job's own key."""
        job_id = request.path_params["job_id"]
        req, state = find_job(self.store, job_id)
        if not is_external(req.get("config", {}).get("grader")):
            raise RequestError(f"job {job_id} grades its answers itself: only a job whose grader is "
                               '{"type": "external"} has rollouts for a client', "fine_tuning_job_id")
        key = request.headers.get(HEADER)
        if not key:
            raise RequestError(f"the job's rollouts need its own key in the {HEADER} header (the job_key its creation "
                               "answered)", HEADER, 401, "missing_job_key")
        if not matches(key, req):
            raise RequestError(f"the {HEADER} header is not job {job_id}'s key", HEADER, 403, "invalid_job_key")
        return job_id, req, job_status(req, state)

    async def get_rollouts(self, request: Request) -> JSONResponse:
        job_id, req, status = self._job(request)
        pending = None if status in FINAL else await asyncio.to_thread(RolloutBook(self.store, job_id).pending)
        if pending is None:
            return ok({"object": "fine_tuning.job.rollouts", "status": status, "step": None, "data": []})
        await self.adapters.load(job_id, req["job_key_sha256"], pending)
        return ok(client_view(pending, status))

    async def post_rewards(self, request: Request) -> JSONResponse:
        job_id, _, status = self._job(request)
        body = await read_json(request)
        book = RolloutBook(self.store, job_id)
        async with self.posting:
            if status in FINAL:
                raise RequestError(f"job {job_id} is {status}: it takes no more rewards", "fine_tuning_job_id", 409,
                                   "job_ended")
            pending = await asyncio.to_thread(book.pending)
            if pending is None:
                current = await asyncio.to_thread(book.current)
                said = f"step {current['step']}'s rewards are posted already" if current else "nothing is published yet"
                raise RequestError(f"no step of job {job_id} is waiting for rewards ({said}); read the rollouts "
                                   "again (GET .../rollouts)", "step", 409, "step_not_waiting")
            rewards = check_rewards(body, pending)
            record = {"step": pending["step"], "posted_at": now(), "rewards": rewards}
            if not await asyncio.to_thread(book.post, pending["step"], record):
                raise RequestError(f"step {pending['step']}'s rewards are posted already", "step", 409,
                                   "step_not_waiting")
        await self.adapters.end_step(job_id, pending["step"], f"step {pending['step']} has ended: its rewards "
                                     "were posted")
        return ok({"object": "fine_tuning.job.rollouts.rewards", "fine_tuning_job_id": job_id,
                   "step": pending["step"], "accepted": len(rewards)})
