"""The HTTP side of ``--enable-mezo``: OpenAI's files and fine-tuning-jobs routes, added to SGLang's
own FastAPI app before uvicorn starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any, Optional

from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.server.job_requests import parse_job_request, plan_job
from sglang.srt.mezo.server.openai_objects import (
    checkpoint_objects,
    job_object,
    job_status,
    openai_hyperparameters,
    page,
)
from sglang.srt.mezo.server.settings import ServerSettings
from sglang.srt.mezo.server.store import FINAL, PAUSED, RUNNING, SUCCEEDED, JobStore, new_id, now

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- the HTTP side
def _before_setup_http_server(*args, **kwargs):
    server_args = kwargs.get("server_args", args[0] if args else None)
    tokenizer_manager = kwargs.get("tokenizer_manager", args[1] if len(args) > 1 else None)
    settings = getattr(server_args, "_mezo", None)
    if settings and tokenizer_manager is not None:
        from sglang.srt.entrypoints import http_server

        JobAPI(ServerSettings.from_dict(settings), tokenizer_manager).install(http_server.app)
    return None


def _error(e: RequestError):
    from fastapi.responses import JSONResponse

    return JSONResponse(e.body(), status_code=e.status)


def _ok(payload: Any, status: int = 200):
    from fastapi.responses import JSONResponse

    return JSONResponse(payload, status_code=status)


def _public_file(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "suffix"}


class JobAPI:
    """The OpenAI-shaped routes and the loader that serves finished adapters by name."""

    ACK_TIMEOUT_S = 15.0

    def __init__(self, settings: ServerSettings, tokenizer_manager):
        self.settings = settings
        self.tm = tokenizer_manager
        self.store = JobStore(settings.output_dir)
        self.load_lock = asyncio.Lock()
        self.load_failures: dict[str, str] = {}

    def install(self, app) -> None:
        routes = [
            ("/v1/files", self.upload_file, ["POST"]),
            ("/v1/files", self.list_files, ["GET"]),
            ("/v1/files/{file_id}", self.get_file, ["GET"]),
            ("/v1/files/{file_id}/content", self.file_content, ["GET"]),
            ("/v1/fine_tuning/jobs", self.create_job, ["POST"]),
            ("/v1/fine_tuning/jobs", self.list_jobs, ["GET"]),
            ("/v1/fine_tuning/jobs/{job_id}", self.get_job, ["GET"]),
            ("/v1/fine_tuning/jobs/{job_id}/events", self.list_events, ["GET"]),
            ("/v1/fine_tuning/jobs/{job_id}/checkpoints", self.list_checkpoints, ["GET"]),
            ("/v1/fine_tuning/jobs/{job_id}/cancel", self.cancel_job, ["POST"]),
            ("/v1/fine_tuning/jobs/{job_id}/pause", self.pause_job, ["POST"]),
            ("/v1/fine_tuning/jobs/{job_id}/resume", self.resume_job, ["POST"]),
        ]
        for path, endpoint, methods in routes:
            app.add_api_route(path, self._guard(endpoint), methods=methods, include_in_schema=True)
        original = app.router.lifespan_context
        api = self

        @contextlib.asynccontextmanager
        async def lifespan(a):
            async with original(a) as state:
                task = asyncio.create_task(api.adapter_loader())
                try:
                    yield state
                finally:
                    task.cancel()

        app.router.lifespan_context = lifespan

    @staticmethod
    def _guard(endpoint):
        from fastapi import Request

        async def handler(request: Request):
            try:
                return await endpoint(request)
            except RequestError as e:
                return _error(e)

        handler.__name__ = f"mezo_{endpoint.__name__}"
        handler.__annotations__ = {"request": Request}  # a class, not this module's postponed string
        return handler

    # -- files

    async def upload_file(self, request):
        try:
            form = await request.form()
        except Exception as e:
            raise RequestError(f"expected a multipart form with 'file' and 'purpose' ({e})") from None
        upload = form.get("file")
        if upload is None or not hasattr(upload, "read"):
            raise RequestError("the form has no 'file' part", "file")
        data = await upload.read()
        meta = await asyncio.to_thread(self.store.save_upload, upload.filename or "", data,
                                       str(form.get("purpose") or ""))
        return _ok(_public_file(meta))

    async def list_files(self, request):
        q = request.query_params
        files = [_public_file(m) for m in self.store.list_files()]
        if q.get("purpose"):
            files = [m for m in files if m["purpose"] == q["purpose"]]
        return _ok(page(files, q.get("after"), q.get("limit"), default=100))

    def _results_file(self, file_id: str) -> Optional[tuple[dict, str]]:
        from sglang.srt.mezo.server.openai_objects import results_csv

        if not file_id.startswith("file-results-"):
            return None
        job_id = "ftjob-" + file_id[len("file-results-"):]
        request = self.store.request(job_id)
        content = results_csv(self.store, job_id) if request else None
        if content is None:
            return None
        meta = {"id": file_id, "object": "file", "bytes": len(content.encode()), "created_at":
                self.store.state(job_id).get("finished_at") or request["created_at"],
                "filename": "step_metrics.csv", "purpose": "fine-tune-results", "status": "processed",
                "status_details": None}
        return meta, content

    async def get_file(self, request):
        file_id = request.path_params["file_id"]
        results = self._results_file(file_id)
        if results:
            return _ok(results[0])
        meta = self.store.get_file(file_id)
        if meta is None:
            raise RequestError(f"no such file: {file_id!r}", "file_id", 404)
        return _ok(_public_file(meta))

    async def file_content(self, request):
        from fastapi.responses import Response

        file_id = request.path_params["file_id"]
        results = self._results_file(file_id)
        if results:
            return Response(results[1], media_type="text/csv")
        meta = self.store.get_file(file_id)
        if meta is None:
            raise RequestError(f"no such file: {file_id!r}", "file_id", 404)
        with open(self.store.file_path(meta), "rb") as f:
            return Response(f.read(), media_type="application/octet-stream")

    # -- jobs

    def _job(self, job_id: str) -> tuple[dict, dict]:
        request = self.store.request(job_id)
        if request is None:
            raise RequestError(f"no such fine-tuning job: {job_id!r}", "fine_tuning_job_id", 404)
        return request, self.store.state(job_id)

    async def create_job(self, request):
        try:
            body = await request.json()
        except Exception:
            raise RequestError("the request body is not valid JSON") from None
        req = parse_job_request(body, self.settings, self.store)
        from sglang.srt.mezo.spec.defaults import DEFAULTS
        from sglang.srt.mezo.training.plan import prepare

        plan, config = await asyncio.to_thread(plan_job, req, prepare, DEFAULTS)
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
        await asyncio.to_thread(self.store.create_job, record)
        return _ok(job_object(record, {}))

    async def _jobs(self) -> list[tuple[dict, dict]]:
        out = []
        for job_id in self.store.job_ids():
            request = self.store.request(job_id)
            if request:
                out.append((request, self.store.state(job_id)))
        out.sort(key=lambda rs: (rs[0]["created_at"], rs[0].get("seq", 0)), reverse=True)
        return out

    async def list_jobs(self, request):
        q = request.query_params
        await self.load_adapters()
        jobs = [job_object(r, s) for r, s in await self._jobs()]
        return _ok(page(jobs, q.get("after"), q.get("limit")))

    async def get_job(self, request):
        job_id = request.path_params["job_id"]
        self._job(job_id)
        await self.load_adapters()
        return _ok(job_object(*self._job(job_id)))

    async def list_events(self, request):
        job_id = request.path_params["job_id"]
        self._job(job_id)
        q = request.query_params
        return _ok(page(self.store.events(job_id), q.get("after"), q.get("limit")))

    async def list_checkpoints(self, request):
        job_id = request.path_params["job_id"]
        req, state = self._job(job_id)
        await self.load_adapters()
        q = request.query_params
        return _ok(page(checkpoint_objects(req, state), q.get("after"), q.get("limit"), default=10))

    async def _control(self, request, action: str):
        job_id = request.path_params["job_id"]
        req, state = self._job(job_id)
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
            wanted = (RUNNING,) + FINAL
        await asyncio.to_thread(self.store.write_control, job_id, control)
        # The scheduler applies it between two batches (it reads the store every 0.25 s).
        deadline = time.monotonic() + self.ACK_TIMEOUT_S
        while time.monotonic() < deadline:
            req, state = self._job(job_id)
            if job_status(req, state) in wanted:
                break
            await asyncio.sleep(0.05)
        return _ok(job_object(req, state))

    async def cancel_job(self, request):
        return await self._control(request, "cancel")

    async def pause_job(self, request):
        return await self._control(request, "pause")

    async def resume_job(self, request):
        return await self._control(request, "resume")

    # -- finished adapters, served by name

    def _adapters_to_serve(self) -> list[tuple[str, str]]:
        out = []
        for job_id in self.store.job_ids():
            request = self.store.request(job_id)
            state = self.store.state(job_id)
            if not request or not state:
                continue
            if state.get("status") == SUCCEEDED and state.get("adapter_path"):
                out.append((request["fine_tuned_model"], state["adapter_path"]))
            for ckpt in state.get("checkpoints", []):
                out.append((ckpt["name"], ckpt["path"]))
        return out

    async def load_adapters(self) -> None:
        """Load every finished adapter and checkpoint not yet known to the tokenizer manager."""
        from sglang.srt.managers.io_struct import LoadLoRAAdapterReqInput

        async with self.load_lock:
            wanted = await asyncio.to_thread(self._adapters_to_serve)
            known = set(self.tm.lora_registry.get_all_adapters())
            for name, path in wanted:
                if name in known or name in self.load_failures:
                    continue
                if not os.path.isfile(os.path.join(path, "adapter_config.json")):
                    self.load_failures[name] = f"{path} has no adapter_config.json"
                    logger.warning("MeZO: cannot serve %s: %s", name, self.load_failures[name])
                    continue
                result = await self.tm.load_lora_adapter(LoadLoRAAdapterReqInput(lora_name=name, lora_path=path))
                if not result.success:
                    self.load_failures[name] = result.error_message
                    logger.warning("MeZO: loading adapter %s from %s failed: %s", name, path, result.error_message)
                else:
                    logger.info("MeZO: serving adapter %s from %s", name, path)

    async def adapter_loader(self) -> None:
        while True:
            try:
                await self.load_adapters()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("MeZO: adapter loader error")
            await asyncio.sleep(1.0)
