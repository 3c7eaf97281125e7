"""The HTTP side of ``--enable-mezo``: the job API's resources (:mod:`.routes`) added to SGLang's own
FastAPI app before uvicorn starts (so that ``--api-key`` protects them), the middleware that serves
the jobs' models on demand (:mod:`.serving_middleware`), and the models' upkeep beside the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator

from fastapi import FastAPI

from sglang.srt.mezo.server.rollout_access import RolloutAccessMiddleware
from sglang.srt.mezo.server.rollout_adapters import RolloutAdapters
from sglang.srt.mezo.server.routes.base import Fallback, Resource, guarded
from sglang.srt.mezo.server.routes.files import FileRoutes
from sglang.srt.mezo.server.routes.graders import GraderRoutes
from sglang.srt.mezo.server.routes.jobs import JobRoutes
from sglang.srt.mezo.server.routes.models import JobModels
from sglang.srt.mezo.server.routes.rollouts import RolloutRoutes
from sglang.srt.mezo.server.serving_middleware import JobModelsMiddleware
from sglang.srt.mezo.server.settings import ServerSettings
from sglang.srt.mezo.server.store import JobStore

logger = logging.getLogger(__name__)


def install_job_api(app: FastAPI, settings: ServerSettings, tokenizer_manager: Any) -> JobModels:
    """Add the job API to ``app``: the routes of every resource, the models' middleware, and their
    upkeep as a task of the app's lifespan. Returns the jobs' models."""
    store = JobStore(settings.output_dir)
    removed = store.sweep()
    if removed:
        logger.info("MeZO: removed %d leftover(s) of an earlier crash from the store", len(removed))
    files_lock = asyncio.Lock()
    rollouts = RolloutAdapters(store, tokenizer_manager)
    models = JobModels(store, tokenizer_manager, settings.max_loaded_adapters, hidden=rollouts.names)
    resources: list[Resource] = [FileRoutes(settings, store, files_lock), models,
                                 JobRoutes(settings, store, files_lock), RolloutRoutes(store, rollouts),
                                 GraderRoutes()]
    resources.append(Fallback(resources))  # last: it takes what no route before it does
    for resource in resources:
        for route in resource.routes():
            app.add_api_route(route.path, guarded(route.endpoint), methods=route.methods, include_in_schema=True)
    app.add_middleware(JobModelsMiddleware, models=models)
    app.add_middleware(RolloutAccessMiddleware, adapters=rollouts, served=tokenizer_manager.served_model_name)
    original = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with original(a) as state:
            tasks = [asyncio.create_task(models.upkeep()), asyncio.create_task(upkeep_rollouts(rollouts))]
            try:
                yield state
            finally:
                for task in tasks:
                    task.cancel()

    app.router.lifespan_context = lifespan
    return models


async def upkeep_rollouts(rollouts: RolloutAdapters, every_s: float = 1.0) -> None:
    """Beside the server: perturbed adapters whose step ended without a post leave the pool."""
    while True:
        try:
            await rollouts.trim()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("MeZO: rollout adapter upkeep error")
        await asyncio.sleep(every_s)


def before_setup_http_server(*args: Any, **kwargs: Any) -> None:
    """BEFORE ``http_server._setup_and_run_http_server(server_args, tokenizer_manager, ...)``: the job
    API on SGLang's app, when the launch has MeZO settings."""
    server_args = kwargs.get("server_args", args[0] if args else None)
    tokenizer_manager = kwargs.get("tokenizer_manager", args[1] if len(args) > 1 else None)
    settings = getattr(server_args, "_mezo", None)
    if settings and tokenizer_manager is not None:
        # The module this hook runs inside, so imported already; at the top it would build SGLang's
        # app in every process that loads the plugin.
        from sglang.srt.entrypoints import http_server  # noqa: PLC0415

        settings = ServerSettings.from_dict(settings)
        # The process that checks jobs' graders: the launcher imported the extensions already when
        # it is this process (once each, so this costs nothing then).
        settings.load_extensions()
        install_job_api(http_server.app, settings, tokenizer_manager)
    return None
