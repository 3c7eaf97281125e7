"""``/v1/fine_tuning/jobs``: create (a body checked by :mod:`..job_requests`, planned with the
trainer's ``prepare``, stored for the scheduler to start), list, get, events, checkpoints, and the
cancel / pause / resume wishes that the scheduler process applies between two batches."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from sglang.srt.mezo.data.graders.external import is_external
from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.server.job_keys import key_hash, new_job_key
from sglang.srt.mezo.server.job_requests import parse_job_request, plan_job
from sglang.srt.mezo.server.openai_objects import (
    checkpoint_objects,
    job_object,
    job_status,
    openai_hyperparameters,
    page,
)
from sglang.srt.mezo.server.routes.base import Resource, Route, ok, read_json
from sglang.srt.mezo.server.settings import ServerSettings
from sglang.srt.mezo.server.store import FINAL, PAUSED, RUNNING, JobStore, new_id, now


def find_job(store: JobStore, job_id: str) -> tuple[dict, dict]:
    """The job's (request, state), or a 404 naming it."""
    request = store.request(job_id)
    if request is None:
        raise RequestError(f"no such fine-tuning job: {job_id!r}", "fine_tuning_job_id", 404)
    return request, store.state(job_id)


class JobRoutes(Resource):
    ACK_TIMEOUT_S = 15.0

    def __init__(self, settings: ServerSettings, store: JobStore, files_lock: asyncio.Lock):
        self.settings = settings
        self.store = store
        self.files_lock = files_lock  # shared with the files' routes: see FileRoutes.delete_file

    def routes(self) -> list[Route]:
        return [
            Route("/v1/fine_tuning/jobs", self.create_job, ["POST"]),
            Route("/v1/fine_tuning/jobs", self.list_jobs, ["GET"]),
            Route("/v1/fine_tuning/jobs/{job_id}", self.get_job, ["GET"]),
            Route("/v1/fine_tuning/jobs/{job_id}/events", self.list_events, ["GET"]),
            Route("/v1/fine_tuning/jobs/{job_id}/checkpoints", self.list_checkpoints, ["GET"]),
            Route("/v1/fine_tuning/jobs/{job_id}/cancel", self.cancel_job, ["POST"]),
            Route("/v1/fine_tuning/jobs/{job_id}/pause", self.pause_job, ["POST"]),
            Route("/v1/fine_tuning/jobs/{job_id}/resume", self.resume_job, ["POST"]),
        ]

    async def create_job(self, request: Request) -> JSONResponse:
        body = await read_json(request)
        async with self.files_lock:
            return await self._create_job(body)

    async def _create_job(self, body: Any) -> JSONResponse:
        # In a thread: the checks read the data files and every row against a grader, and SGLang's
        # requests share this event loop.
        req = await asyncio.to_thread(parse_job_request, body, self.settings, self.store)
        # The trainer and SGLang's model executor under it: imported with the first job, not in
        # every process that loads the plugin.
        from sglang.srt.mezo.training.plan import prepare  # noqa: PLC0415

        plan, config = await asyncio.to_thread(plan_job, req, prepare)
        job_id = new_id("ftjob")
        label = req.suffix or "mezo"
        record = {
            "id": job_id, "created_at": now(), "seq": time.time_ns(), "model": req.model,
            "training_file": req.training_file, "validation_file": req.validation_file,
            "train_path": req.train_path, "eval_path": req.eval_path, "seed": req.seed, "suffix": req.suffix,
            "metadata": req.metadata, "config": config, "num_steps": plan.config.num_steps,
            "hyperparameters": openai_hyperparameters(plan),
            "fine_tuned_model": f"ft-{label}-{job_id[6:14]}",
            "num_train_examples": len(plan.train), "num_eval_examples": len(plan.eval),
        }
        key = None
        if is_external(config.get("grader")):
            # The job's own key to its rollouts and their adapters: shown once, here; stored as a hash.
            key = new_job_key()
            record["job_key_sha256"] = key_hash(key)
        await asyncio.to_thread(self.store.create_job, record)
        return ok({**self._job_object(record, {}), **({"job_key": key} if key else {})})

    def _job_object(self, request: dict, state: dict) -> dict:
        return job_object(request, state, self.store.deletions(request["id"]))

    async def list_jobs(self, request: Request) -> JSONResponse:
        q = request.query_params
        jobs = await asyncio.to_thread(lambda: [self._job_object(r, s) for r, s in self.store.jobs()])
        return ok(page(jobs, q.get("after"), q.get("limit")))

    async def get_job(self, request: Request) -> JSONResponse:
        job_id = request.path_params["job_id"]
        return ok(self._job_object(*find_job(self.store, job_id)))

    async def list_events(self, request: Request) -> JSONResponse:
        job_id = request.path_params["job_id"]
        find_job(self.store, job_id)
        q = request.query_params
        return ok(page(self.store.events(job_id), q.get("after"), q.get("limit")))

    async def list_checkpoints(self, request: Request) -> JSONResponse:
        job_id = request.path_params["job_id"]
        req, state = find_job(self.store, job_id)
        q = request.query_params
        checkpoints = checkpoint_objects(req, state, self.store.deletions(job_id))
        return ok(page(checkpoints, q.get("after"), q.get("limit"), default=10))

    async def cancel_job(self, request: Request) -> JSONResponse:
        return await self._control(request, "cancel")

    async def pause_job(self, request: Request) -> JSONResponse:
        return await self._control(request, "pause")

    async def resume_job(self, request: Request) -> JSONResponse:
        return await self._control(request, "resume")

    async def _control(self, request: Request, action: str) -> JSONResponse:
        job_id = request.path_params["job_id"]
        req, state = find_job(self.store, job_id)
        status = job_status(req, state)
        control = self.store.control(job_id)
        if action == "cancel":
            if status in FINAL:
                raise RequestError(f"job {job_id} is already {status}; there is nothing to cancel",
                                   "fine_tuning_job_id")
            control["cancel"] = True
            wanted = ("cancelled",)
        elif action == "pause":
            if status != RUNNING:
                raise RequestError(f"job {job_id} is {status}; only a running job can be paused",
                                   "fine_tuning_job_id")
            control["pause"] = True
            wanted = (PAUSED,) + FINAL
        else:
            if status != PAUSED:
                raise RequestError(f"job {job_id} is {status}; only a paused job can be resumed",
                                   "fine_tuning_job_id")
            control["pause"] = False
            control["resumed_at"] = time.time()  # also ends a pause the job took itself (rewards overdue)
            wanted = (RUNNING,) + FINAL
        await asyncio.to_thread(self.store.write_control, job_id, control)
        # The scheduler applies it between two batches (it reads the store every 0.25 s): the answer
        # waits for that, so that it shows the job as it now is.
        deadline = time.monotonic() + self.ACK_TIMEOUT_S
        while time.monotonic() < deadline:
            req, state = find_job(self.store, job_id)
            if job_status(req, state) in wanted:
                break
            await asyncio.sleep(0.05)
        return ok(self._job_object(req, state))
