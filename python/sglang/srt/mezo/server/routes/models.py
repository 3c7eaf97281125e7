"""The jobs' models: each succeeded job's adapter and each kept checkpoint, servable by name.

``DELETE /v1/models/{model}`` is a route here; listing them (``GET /v1/models``, ``GET
/v1/models/<name>``) and loading them for the generation requests that name them go through
:class:`~..serving_middleware.JobModelsMiddleware`, which :class:`JobModels` serves
(:class:`~..serving_middleware.ServedJobModels`). :meth:`JobModels.upkeep` runs beside the
server: the catalog kept up to date, the loaded adapters within ``--mezo-max-loaded-adapters``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable, Optional, Sequence
from urllib.parse import unquote

from fastapi import Request
from fastapi.responses import JSONResponse

from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.server.adapter_cache import AdapterCache
from sglang.srt.mezo.server.catalog import Catalog, JobModel
from sglang.srt.mezo.server.openai_objects import job_status
from sglang.srt.mezo.server.routes.base import Resource, Route, ok
from sglang.srt.mezo.server.routes.jobs import find_job
from sglang.srt.mezo.server.serving_middleware import OPENAI_PATHS, requested_names
from sglang.srt.mezo.server.store import FINAL, JobStore, now, remove_tree

logger = logging.getLogger(__name__)


class JobModels(Resource):
    """The jobs' models of a store, served through SGLang's tokenizer manager (``tokenizer_manager``)
    with at most ``max_loaded`` loaded at once."""

    UPKEEP_S = 1.0

    def __init__(self, store: JobStore, tokenizer_manager: Any, max_loaded: int,
                 hidden: Callable[[], set[str]] = set):
        self.store = store
        # Adapters SGLang has loaded that are nobody's model to list (jobs' perturbed adapters).
        self.hidden = hidden
        self.tm = tokenizer_manager
        self.catalog = Catalog(store)
        self.adapters = AdapterCache(tokenizer_manager, max_loaded)
        # One deletion at a time: between the check that a model can be deleted and its mark, the
        # awaits let a second DELETE of the same model pass the same check (both answered 200, and
        # the second's rename of a folder the first had removed could fail).
        self._deleting = asyncio.Lock()

    def routes(self) -> list[Route]:
        return [Route("/v1/models/{model:path}", self.delete_model, ["DELETE"])]

    # -- deletion

    async def delete_model(self, request: Request) -> JSONResponse:
        name = request.path_params["model"]
        async with self._deleting:
            await asyncio.to_thread(self.catalog.refresh)
            model = self._deletable(name)
            # Marked first: from now on requests naming it get a 404, not a half-removed adapter.
            await asyncio.to_thread(self.store.mark_deleted, model.job_id, name)
            await asyncio.to_thread(self.catalog.forget, model.job_id)
            await self.adapters.unload(name)
            await asyncio.to_thread(self._remove_files, model)
        logger.info("MeZO: deleted model %s of job %s", name, model.job_id)
        return ok({"id": name, "object": "model", "deleted": True})

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
        request, state = find_job(self.store, job_id)
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

    # -- listing (ServedJobModels)

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
        ours = self.adapters.ours | set(self.catalog.models) | set(self.catalog.gone) | self.hidden()
        for name, ref in self.tm.lora_registry.get_all_adapters().items():
            if name not in ours:
                cards.append({"id": name, "object": "model", "created": cards[0]["created"], "owned_by": "sglang",
                              "root": ref.lora_path, "parent": served, "max_model_len": None, "loaded": True})
        jobs = sorted(self.catalog.models.values(), key=lambda m: (m.created_at, m.name), reverse=True)
        return {"object": "list", "data": cards + [self._card(m) for m in jobs]}

    async def model_card(self, name: str) -> Optional[tuple[int, dict]]:
        """``GET /v1/models/<name>`` for a job model (None: not one, SGLang answers)."""
        name = unquote(name)
        if name not in self.catalog.models and name not in self.catalog.gone:
            await asyncio.to_thread(self.catalog.refresh)
        if name in self.catalog.models:
            return 200, self._card(self.catalog.models[name])
        if name in self.catalog.gone:
            return 404, RequestError(self.catalog.gone[name], "model", 404, "model_not_found").body()
        return None

    # -- serving (ServedJobModels)

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

    async def acquire(self, models: Sequence[JobModel]) -> list[str]:
        return await self.adapters.acquire(models)

    async def release(self, held: list[str]) -> None:
        await self.adapters.release(held)

    # -- beside the server

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
