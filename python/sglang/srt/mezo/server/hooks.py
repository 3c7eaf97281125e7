"""Where the server side plugs into SGLang: the launch flags' hooks, and the scheduler's hooks that
give training jobs their turns between serving batches."""

from __future__ import annotations

import logging
import os
import traceback
from typing import Optional

from sglang.srt.mezo.server.flags import ENV, _after_add_cli_args, _after_from_cli_args, _before_from_cli_args
from sglang.srt.mezo.server.scheduler_jobs import MeZOJobs
from sglang.srt.mezo.server.settings import ServerSettings

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- registration
def register() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register("sglang.srt.server_args.ServerArgs.add_cli_args", _after_add_cli_args, HookType.AFTER)
    HookRegistry.register("sglang.srt.server_args.ServerArgs.from_cli_args", _before_from_cli_args, HookType.BEFORE)
    HookRegistry.register("sglang.srt.server_args.ServerArgs.from_cli_args", _after_from_cli_args, HookType.AFTER)
    if os.environ.get(ENV):  # a child process of a launcher started with --enable-mezo

        for target, hook, kind in SCHEDULER_HOOKS:
            HookRegistry.register(target, hook, getattr(HookType, kind))


# ---------------------------------------------------------------- hooks on SGLang's Scheduler
def _jobs_of(scheduler) -> Optional[MeZOJobs]:
    jobs = scheduler.__dict__.get("_mezo_jobs", False)
    if jobs is False:
        settings = getattr(scheduler.server_args, "_mezo", None)
        jobs = MeZOJobs(scheduler, ServerSettings.from_dict(settings)) if settings else None
        scheduler._mezo_jobs = jobs
        if jobs is not None:
            logger.info("MeZO fine-tuning jobs: store %s, up to %d concurrent", jobs.store.root,
                        jobs.settings.max_concurrent_jobs)
    return jobs


def _tick(scheduler, busy: bool) -> None:
    jobs = _jobs_of(scheduler)
    if jobs is not None:
        try:
            jobs.tick(busy)
        except Exception:  # never take the server down
            logger.error("MeZO job loop error: %s", traceback.format_exc())


def after_process_batch_result(result, scheduler, *args, **kwargs):
    _tick(scheduler, busy=True)
    return result


def after_on_idle(result, scheduler, *args, **kwargs):
    _tick(scheduler, busy=False)
    return result


def around_maybe_sleep_on_idle(original, scheduler, *args, **kwargs):
    jobs = _jobs_of(scheduler)
    if jobs is not None and jobs.has_work():
        return None  # a job is training: the loop must come back at once
    return original(scheduler, *args, **kwargs)


SCHEDULER_HOOKS = (
    ("sglang.srt.managers.scheduler.Scheduler.process_batch_result", after_process_batch_result, "AFTER"),
    ("sglang.srt.managers.scheduler.Scheduler.on_idle", after_on_idle, "AFTER"),
    ("sglang.srt.managers.scheduler.Scheduler.maybe_sleep_on_idle", around_maybe_sleep_on_idle, "AROUND"),
)
