"""The HTTP side of ``--enable-mezo``: OpenAI's files, fine-tuning-jobs and model-deletion routes,
added to SGLang's own FastAPI app before uvicorn starts, with the middleware that serves jobs'
models on demand (:mod:`.serving_middleware`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any, Optional

from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.server.adapter_cache import AdapterCache
from sglang.srt.mezo.server.catalog import Catalog, JobModel
from sglang.srt.mezo.server.grader_requests import run_grader, validate_grader
from sglang.srt.mezo.server.job_requests import parse_job_request, plan_job
from sglang.srt.mezo.server.openai_objects import (
    checkpoint_objects,
    job_object,
    job_status,
    openai_hyperparameters,
    page,
)
from sglang.srt.mezo.server.serving_middleware import OPENAI_PATHS, JobModelsMiddleware, requested_names
from sglang.srt.mezo.server.settings import ServerSettings
from sglang.srt.mezo.server.store import FINAL, PAUSED, RUNNING, JobStore, new_id, now, remove_tree
from sglang.srt.mezo.server.uploads import read_upload_form

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
    """The OpenAI-shaped routes, and the jobs' models served by name within a bound."""

    ACK_TIMEOUT_S = 15.0

    UPKEEP_S = 1.0

    def __init__(self, settings: ServerSettings, tokenizer_manager):
        self.settings = settings
        self.tm = tokenizer_manager
        self.store = JobStore(settings.output_dir)
        removed = self.store.sweep()
        if removed:
            logger.info("MeZO: removed %d leftover(s) of an earlier crash from the store", len(removed))
        self.catalog = Catalog(self.store)
        self.adapters = AdapterCache(tokenizer_manager, settings.max_loaded_adapters)
        self.files_lock = asyncio.Lock()  # a file is not deleted while a job that names it is being created

    def install(self, app) -> None:
        routes = [
            ("/v1/files", self.upload_file, ["POST"]),
            ("/v1/files", self.list_files, ["GET"]),
            ("/v1/files/{file_id}", self.get_file, ["GET"]),
            ("/v1/files/{file_id}", self.delete_file, ["DELETE"]),
            ("/v1/files/{file_id}/content", self.file_content, ["GET"]),
            ("/v1/models/{model:path}", self.delete_model, ["DELETE"]),
            ("/v1/fine_tuning/jobs", self.create_job, ["POST"]),
            ("/v1/fine_tuning/jobs", self.list_jobs, ["GET"]),
            ("/v1/fine_tuning/jobs/{job_id}", self.get_job, ["GET"]),
            ("/v1/fine_tuning/jobs/{job_id}/events", self.list_events, ["GET"]),
            ("/v1/fine_tuning/jobs/{job_id}/checkpoints", self.list_checkpoints, ["GET"]),
            ("/v1/fine_tuning/jobs/{job_id}/cancel", self.cancel_job, ["POST"]),
            ("/v1/fine_tuning/jobs/{job_id}/pause", self.pause_job, ["POST"]),
            ("/v1/fine_tuning/jobs/{job_id}/resume", self.resume_job, ["POST"]),
            ("/v1/fine_tuning/alpha/graders/run", self.run_grader, ["POST"]),
            ("/v1/fine_tuning/alpha/graders/validate", self.validate_grader, ["POST"]),
        ]
        for path, endpoint, methods in routes:
            app.add_api_route(path, self._guard(endpoint), methods=methods, include_in_schema=True)
        app.add_middleware(JobModelsMiddleware, api=self)
        original = app.router.lifespan_context
        api = self

        @contextlib.asynccontextmanager
        async def lifespan(a):
            async with original(a) as state:
                task = asyncio.create_task(api.upkeep())
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
        form = await read_upload_form(request, self.settings.max_upload_bytes)
        try:
            upload = form.get("file")
            if upload is None or not hasattr(upload, "read"):
                raise RequestError("the form has no 'file' part", "file")
            filename, purpose = upload.filename or "", str(form.get("purpose") or "")
            meta = await asyncio.to_thread(self.store.save_upload, filename, upload.file, purpose)
        finally:
            await form.close()
        return _ok(_public_file(meta))

    async def delete_file(self, request):
        file_id = request.path_params["file_id"]
        if self._results_file(file_id):
            raise RequestError(f"{file_id} is the results file of a fine-tuning job and part of its record; it "
                               "cannot be deleted", "file_id", 409, "file_in_use")
        async with self.files_lock:
            meta = self.store.get_file(file_id)
            if meta is None:
                raise RequestError(f"no such file: {file_id!r}", "file_id", 404)
            users = await asyncio.to_thread(self._jobs_using, file_id)
            if users:
                raise RequestError(f"file {file_id} cannot be deleted: it is the {users[0][1]} of job {users[0][0]}, "
                                   f"which is {users[0][2]}; cancel the job or wait for it to end, then delete the "
                                   "file", "file_id", 409, "file_in_use")
            await asyncio.to_thread(self.store.delete_file, meta)
        logger.info("MeZO: deleted file %s (%s)", file_id, meta["filename"])
        return _ok({"id": file_id, "object": "file", "deleted": True})

    def _jobs_using(self, file_id: str) -> list[tuple[str, str, str]]:
        """(job id, which file, status) of every job not ended that names the file."""
        out = []
        for request, state in self._job_records():
            status = job_status(request, state)
            if status in FINAL:
                continue
            for key, what in (("training_file", "training_file"), ("validation_file", "validation_file")):
                if request.get(key) == file_id:
                    out.append((request["id"], what, status))
        return out

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

    # -- graders: try one before training with it

    @staticmethod
    async def _json(request) -> Any:
        try:
            return await request.json()
        except Exception:
            raise RequestError("the request body is not valid JSON") from None

    async def run_grader(self, request):
        body = await self._json(request)
        return _ok(await asyncio.to_thread(run_grader, body))  # a metric library may take a while

    async def validate_grader(self, request):
        return _ok(validate_grader(await self._json(request)))

    def _job(self, job_id: str) -> tuple[dict, dict]:
        request = self.store.request(job_id)
        if request is None:
            raise RequestError(f"no such fine-tuning job: {job_id!r}", "fine_tuning_job_id", 404)
        return request, self.store.state(job_id)

    async def create_job(self, request):
        body = await self._json(request)
        async with self.files_lock:
            return await self._create_job(body)

    async def _create_job(self, body: Any):
        req = parse_job_request(body, self.settings, self.store)
        from sglang.srt.mezo.training.plan import prepare

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
        await asyncio.to_thread(self.store.create_job, record)
        return _ok(self._job_object(record, {}))

    def _job_records(self) -> list[tuple[dict, dict]]:
        out = []
        for job_id in self.store.job_ids():
            request = self.store.request(job_id)
            if request:
                out.append((request, self.store.state(job_id)))
        out.sort(key=lambda rs: (rs[0]["created_at"], rs[0].get("seq", 0)), reverse=True)
        return out

    def _job_object(self, request: dict, state: dict) -> dict:
        return job_object(request, state, self.store.deletions(request["id"]))

    async def list_jobs(self, request):
        q = request.query_params
        jobs = await asyncio.to_thread(lambda: [self._job_object(r, s) for r, s in self._job_records()])
        return _ok(page(jobs, q.get("after"), q.get("limit")))

    async def get_job(self, request):
        job_id = request.path_params["job_id"]
        return _ok(self._job_object(*self._job(job_id)))

    async def list_events(self, request):
        job_id = request.path_params["job_id"]
        self._job(job_id)
        q = request.query_params
        return _ok(page(self.store.events(job_id), q.get("after"), q.get("limit")))

    async def list_checkpoints(self, request):
        job_id = request.path_params["job_id"]
        req, state = self._job(job_id)
        q = request.query_params
        checkpoints = checkpoint_objects(req, state, self.store.deletions(job_id))
        return _ok(page(checkpoints, q.get("after"), q.get("limit"), default=10))

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
        return _ok(self._job_object(req, state))

    async def cancel_job(self, request):
        return await self._control(request, "cancel")

    async def pause_job(self, request):
        return await self._control(request, "pause")

    async def resume_job(self, request):
        return await self._control(request, "resume")

    # -- jobs' models: deletion, listing, serving on demand

    async def delete_model(self, request):
        name = request.path_params["model"]
        await asyncio.to_thread(self.catalog.refresh)
        model = self._deletable(name)
        # Marked first: from now on requests naming it get a 404, not a half-removed adapter.
        await asyncio.to_thread(self.store.mark_deleted, model.job_id, name)
        await asyncio.to_thread(self.catalog.forget, model.job_id)
        await self.adapters.unload(name)
        await asyncio.to_thread(self._remove_files, model)
        logger.info("MeZO: deleted model %s of job %s", name, model.job_id)
        return _ok({"id": name, "object": "model", "deleted": True})

    def _deletable(self, name: str) -> JobModel:
        """The job model ``name``, or the RequestError that says why it cannot be deleted."""
        if name == self.tm.served_model_name:
            raise RequestError(f"{name!r} is the base model this server serves; it cannot be deleted", "model")
        job_id = self.catalog.owner(name)
        if job_id is None:
            if name in self.tm.lora_registry.get_all_adapters():
                raise RequestError(f"{name!r} is not a fine-tuning job's model (it was loaded into SGLang "
                                   "directly); unload it with POST /unload_lora_adapter", "model")
            raise RequestError(f"no such model: {name!r}; GET /v1/models lists the models served", "model", 404,
                               "model_not_found")
        request, state = self._job(job_id)
        status = job_status(request, state)
        if status not in FINAL:
            raise RequestError(f"model {name!r} belongs to fine-tuning job {job_id}, which is {status}: a job that has "
                               "not ended is still writing its adapter and checkpoints (and resumes from them); "
                               "cancel the job or wait for it to end, then delete", "model", 409, "model_in_use")
        if name in self.catalog.gone:
            raise RequestError(f"{self.catalog.gone[name]}; it is no longer served", "model", 404, "model_not_found")
        model = self.catalog.models.get(name)
        if model is None:
            raise RequestError(f"job {job_id} ended {status} without the model {name!r}", "model", 404,
                               "model_not_found")
        return model

    def _remove_files(self, model: JobModel) -> None:
        folder = os.path.realpath(model.folder)
        job_dir = os.path.realpath(self.store.job_dir(model.job_id))
        if os.path.commonpath([folder, job_dir]) != job_dir:  # never outside the job's own folder
            logger.error("MeZO: not removing %s: it is outside %s", folder, job_dir)
            return
        remove_tree(folder)

    def _card(self, model: JobModel) -> dict:
        return {"id": model.name, "object": "model", "created": model.created_at, "owned_by": "sglang-mezo",
                "root": model.name, "parent": self.tm.served_model_name, "max_model_len": None,
                "fine_tuning_job_id": model.job_id, "step_number": model.step,
                "loaded": model.name in self.adapters.loaded()}

    async def model_list(self) -> dict:
        """``GET /v1/models``: the base model, SGLang's own adapters, every job model (loaded or not)."""
        await asyncio.to_thread(self.catalog.refresh)
        served = self.tm.served_model_name
        cards = [{"id": served, "object": "model", "created": now(), "owned_by": "sglang", "root": served,
                  "parent": None, "max_model_len": self.tm.model_config.context_len}]
        ours = self.adapters.ours | set(self.catalog.models) | set(self.catalog.gone)
        for name, ref in self.tm.lora_registry.get_all_adapters().items():
            if name not in ours:
                cards.append({"id": name, "object": "model", "created": cards[0]["created"], "owned_by": "sglang",
                              "root": ref.lora_path, "parent": served, "max_model_len": None, "loaded": True})
        jobs = sorted(self.catalog.models.values(), key=lambda m: (m.created_at, m.name), reverse=True)
        return {"object": "list", "data": cards + [self._card(m) for m in jobs]}

    async def model_card(self, name: str) -> Optional[tuple[int, dict]]:
        """``GET /v1/models/<name>`` for a job model (None: not one, SGLang answers)."""
        from urllib.parse import unquote

        name = unquote(name)
        if name not in self.catalog.models and name not in self.catalog.gone:
            await asyncio.to_thread(self.catalog.refresh)
        if name in self.catalog.models:
            return 200, self._card(self.catalog.models[name])
        if name in self.catalog.gone:
            return 404, RequestError(self.catalog.gone[name], "model", 404, "model_not_found").body()
        return None

    async def models_for_request(self, path: str, payload: dict) -> tuple[list[JobModel], Optional[dict]]:
        """The job models a generation request names, and the payload rewritten when it named one as
        ``model="<name>"`` (None: unchanged). Raises a 404 RequestError for a deleted or pruned one."""
        served = self.tm.served_model_name
        registry = set(self.tm.lora_registry.get_all_adapters())
        rewritten = None
        model = payload.get("model")
        if path in OPENAI_PATHS and isinstance(model, str) and model != served and ":" not in model:
            if await self._is_job_name(model, registry):
                rewritten = payload = {**payload, "model": f"{served}:{model}"}
        names = requested_names(path, payload, served)
        if not names:
            return [], rewritten
        for name in names:
            await self._is_job_name(name, registry)  # refreshes the catalog once for a name it does not know
        gone = [n for n in names if n in self.catalog.gone]
        if gone:
            raise RequestError(f"{self.catalog.gone[gone[0]]}; it is no longer served (GET /v1/models lists the "
                               "models served)", "model", 404, "model_not_found")
        return [self.catalog.models[n] for n in names if n in self.catalog.models], rewritten

    async def _is_job_name(self, name: str, registry: set[str]) -> bool:
        """Whether ``name`` is (or was) a job's model; a name neither the catalog nor SGLang knows may
        be one that has just appeared, so the catalog is read again first."""
        if not self.catalog.knows(name) and name not in registry:
            await asyncio.to_thread(self.catalog.refresh)
        return self.catalog.knows(name)

    async def upkeep(self) -> None:
        """Every second: the catalog up to date, and what is loaded within the bound (models pruned
        or deleted since unloaded)."""
        while True:
            try:
                await asyncio.to_thread(self.catalog.refresh)
                await self.adapters.trim(set(self.catalog.models))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("MeZO: adapter upkeep error")
            await asyncio.sleep(self.UPKEEP_S)
