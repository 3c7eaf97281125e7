"""MeZO jobs inside SGLang's scheduler process: training units interleaved with serving batches.

SGLang's normal event loop (``Scheduler.event_loop_normal``; the overlap loop is switched off by
``--enable-mezo``) runs, each iteration, either a batch (``run_batch`` then
``process_batch_result``) or, with nothing to run, ``on_idle``. The hooks on both
(:func:`after_process_batch_result`, :func:`after_on_idle`, registered by
:mod:`sglang.srt.mezo.plugin`) call :meth:`MeZOJobs.tick`, which

- every ``POLL_S`` reads the job store (:class:`~.store.JobStore`) for new jobs and for cancel /
  pause / resume wishes written by the HTTP process;
- runs at most one bounded unit of one job's work (a MeZO step, one chunk of an evaluation, a
  save), round-robin over running jobs. While the server serves, units take at most
  ``--mezo-train-share`` of the wall time (after a unit of t seconds the next waits t * (1/share - 1));
  while it is idle they run back to back.

A unit uses the scheduler's own ModelRunner (``scheduler.tp_worker.model_runner``): the adapter
being trained and its minus twin live in pinned slots of the server's LoRA pool, its forwards go
through :class:`~sglang.srt.mezo.engine.forward.ExtendForward` (a tree cache that shares no prefix; KV slots freed right
after), so the radix cache never holds KV computed under perturbed weights, and requests for the
base model or other adapters never read the training slots. One job's unit of work and its
record in the store are :class:`~.job_worker.JobWorker`'s.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any, Optional

from sglang.srt.mezo.errors import ExtensionError, MeZODivergedError
from sglang.srt.mezo.server.job_requests import describe_error
from sglang.srt.mezo.server.job_worker import JobWorker
from sglang.srt.mezo.server.settings import ServerSettings
from sglang.srt.mezo.server.store import ACTIVE, CANCELLED, FAILED, FINAL, PAUSED, QUEUED, RUNNING, JobStore, now

logger = logging.getLogger(__name__)


POLL_S = 0.25


class MeZOJobs:
    """The scheduler's side of the job API: polls the store, starts, advances and ends jobs."""

    def __init__(self, scheduler: Any, settings: ServerSettings):
        self.scheduler = scheduler
        self.settings = settings
        self.store = JobStore(settings.output_dir)
        self.workers: dict[str, JobWorker] = {}
        self.final: set[str] = set()
        self.requests: dict[str, dict] = {}
        self.interrupted: dict[str, dict] = {}  # job id -> its state when a restart stopped it
        self.next_poll = 0.0
        self.next_unit_at = 0.0
        self.turn = 0
        self.recovered = False
        self.disabled_reason: Optional[str] = None
        if getattr(scheduler, "enable_overlap", False):
            self.disabled_reason = ("the scheduler runs the overlap event loop; MeZO jobs need "
                                    "--disable-overlap-schedule (which --enable-mezo sets)")
            logger.error("MeZO jobs are disabled: %s", self.disabled_reason)

    @property
    def runner(self) -> Any:
        return self.scheduler.tp_worker.model_runner

    def has_work(self) -> bool:
        return any(w.state["status"] == RUNNING and not w.waiting for w in self.workers.values())

    # -- the per-iteration entry point

    def tick(self, busy: bool) -> None:
        t = time.monotonic()
        if t >= self.next_poll:
            self.next_poll = t + POLL_S
            self.poll()
        if busy and t < self.next_unit_at:
            return
        running = [w for w in self.workers.values() if w.state["status"] == RUNNING]
        if not running:
            return
        worker = running[self.turn % len(running)]
        self.turn += 1
        if not self.make_room(worker):
            return
        t0 = time.monotonic()
        self.run_unit(worker)
        spent = time.monotonic() - t0
        self.next_unit_at = time.monotonic() + spent * (1.0 / self.settings.train_share - 1.0)

    def make_room(self, worker: JobWorker) -> bool:
        """Whether the pools can take the unit's forward now (evicting unused radix-cache entries,
        as the scheduler itself does under memory pressure); if not, the unit waits."""
        tokens, rows = worker.next_unit_size()
        if tokens == 0:
            return True
        runner = self.runner
        limit = worker.run.trainer.forward.max_tokens_per_forward if worker.run is not None else tokens
        tokens = min(tokens, limit)
        allocator = runner.token_to_kv_pool_allocator
        if allocator.available_size() < tokens:
            try:
                # SGLang's cache module, which the scheduler process has imported by now; at the top
                # it would pull SGLang's model layers into every process that loads the plugin.
                from sglang.srt.mem_cache.base_prefix_cache import EvictParams  # noqa: PLC0415

                self.scheduler.tree_cache.evict(EvictParams(num_tokens=tokens - allocator.available_size()))
            except Exception:  # a cache without eviction: just wait for room
                logger.debug("MeZO: tree cache eviction failed", exc_info=True)
        return allocator.available_size() >= tokens and runner.req_to_token_pool.available_size() >= min(
            rows, runner.req_to_token_pool.size)

    def run_unit(self, worker: JobWorker) -> None:
        try:
            worker.advance()
        except MeZODivergedError as e:
            self.end(worker, FAILED, {"code": "diverged", "message": " ".join(str(e).split()), "param": None})
        except (ValueError, OSError) as e:  # bad data or settings found when the job started
            names = {worker.request.get("train_path"): worker.request.get("training_file"),
                     **({worker.request["eval_path"]: worker.request.get("validation_file")}
                        if worker.request.get("eval_path") else {})}
            logger.warning("MeZO job %s failed: %s", worker.job_id, traceback.format_exc())
            self.end(worker, FAILED, {"code": "invalid_training_data" if worker.phase == "start" else "training_error",
                                      "message": describe_error(e, {k: v for k, v in names.items() if k}),
                                      "param": None})
        except Exception as e:
            logger.error("MeZO job %s failed: %s", worker.job_id, traceback.format_exc())
            self.end(worker, FAILED, {"code": "training_error", "message": f"{type(e).__name__}: {e}", "param": None})
        else:
            if worker.phase == "done":
                self.workers.pop(worker.job_id, None)
                self.final.add(worker.job_id)

    def end(self, worker: JobWorker, status: str, error: Optional[dict] = None) -> None:
        message = f"The job failed: {error['message']}" if error else "The job was cancelled"
        worker.end(status, error, message)
        self.workers.pop(worker.job_id, None)
        self.final.add(worker.job_id)

    # -- the store

    def poll(self) -> None:
        for job_id in self.store.job_ids():
            if job_id in self.final:
                continue
            request = self.requests.get(job_id) or self.store.request(job_id)
            if request is None:
                continue
            self.requests[job_id] = request
            worker = self.workers.get(job_id)
            if worker is None:
                self.consider(job_id, request)
            else:
                self.apply_control(worker)
        self.recovered = True
        self.start_queued()

    def consider(self, job_id: str, request: dict) -> None:
        state = self.store.state(job_id)
        status = state.get("status", QUEUED)
        if status in FINAL:
            self.final.add(job_id)
            return
        if status in ACTIVE:
            # Running or paused when an earlier life of this server stopped: it goes on from its
            # last checkpoint (exactly: a MeZO run continues from its step seeds and batch order).
            self.interrupted[job_id] = state
            self.store.append_event(job_id, "info", f"The server restarted while this job was {status} at step "
                                    f"{state.get('step', 0)}; it resumes from its last checkpoint")
            return
        if self.store.control(job_id).get("cancel"):
            self.store.write_state(job_id, {"status": CANCELLED, "finished_at": now(), "step": 0})
            self.store.append_event(job_id, "info", "The job was cancelled before it started")
            self.final.add(job_id)

    def start_queued(self) -> None:
        if self.disabled_reason:
            return
        active = len(self.workers)
        # Jobs a restart interrupted go first: they held slots before it.
        waiting = [(jid not in self.interrupted, r["created_at"], r.get("seq", 0), jid)
                   for jid, r in self.requests.items() if jid not in self.final and jid not in self.workers]
        for *_, job_id in sorted(waiting):
            if active >= self.settings.max_concurrent_jobs:
                break
            state = self.interrupted.pop(job_id, None)
            worker = JobWorker(job_id, self.requests[job_id], self.store, self.runner, state=state,
                               keep_checkpoints=self.settings.keep_checkpoints)
            self.workers[job_id] = worker
            worker.write_state()
            worker.event("info", "Fine-tuning job started" if state is None else "Fine-tuning job restarted")
            if state is not None:
                worker.state["status"] = RUNNING
                self.apply_control(worker)  # it may have been paused
            active += 1

    def apply_control(self, worker: JobWorker) -> None:
        control = self.store.control(worker.job_id)
        if control.get("cancel"):
            self.end(worker, CANCELLED)
            return
        want = PAUSED if control.get("pause") or worker.stays_held(control) else RUNNING
        if worker.state["status"] != want:
            worker.state["status"] = want
            worker.event("info", "The job was paused" if want == PAUSED else "The job was resumed")
            worker.write_state()
            if want == RUNNING:
                worker.on_resumed()


# ---------------------------------------------------------------- the hooks on SGLang's Scheduler
def jobs_of(scheduler: Any) -> Optional[MeZOJobs]:
    """The scheduler's :class:`MeZOJobs`, made on first use (None: the server runs without jobs)."""
    jobs = scheduler.__dict__.get("_mezo_jobs", False)
    if jobs is False:
        settings = getattr(scheduler.server_args, "_mezo", None)
        if settings:
            settings = ServerSettings.from_dict(settings)
            _load_extensions(settings)
        jobs = MeZOJobs(scheduler, settings) if settings else None
        scheduler._mezo_jobs = jobs
        if jobs is not None:
            logger.info("MeZO fine-tuning jobs: store %s, up to %d concurrent", jobs.store.root,
                        jobs.settings.max_concurrent_jobs)
    return jobs


def _load_extensions(settings: ServerSettings) -> None:
    # The process that trains: a job's grader is parsed again here. The launcher imported the same
    # modules already, so a failure here is logged once and the jobs that need them fail by name.
    try:
        loaded = settings.load_extensions()
    except ExtensionError as e:
        logger.error("MeZO: %s; jobs that need it will fail", e)
        return
    if loaded:
        logger.info("MeZO extensions in the scheduler: %s", ", ".join(loaded))


def _tick(scheduler: Any, busy: bool) -> None:
    jobs = jobs_of(scheduler)
    if jobs is not None:
        try:
            jobs.tick(busy)
        except Exception:  # never take the server down
            logger.error("MeZO job loop error: %s", traceback.format_exc())


def after_process_batch_result(result: Any, scheduler: Any, *args: Any, **kwargs: Any) -> Any:
    """AFTER ``Scheduler.process_batch_result``: a training unit's turn while the server serves."""
    _tick(scheduler, busy=True)
    return result


def after_on_idle(result: Any, scheduler: Any, *args: Any, **kwargs: Any) -> Any:
    """AFTER ``Scheduler.on_idle``: a training unit's turn while nothing is served."""
    _tick(scheduler, busy=False)
    return result


def around_maybe_sleep_on_idle(original: Any, scheduler: Any, *args: Any, **kwargs: Any) -> Any:
    """AROUND ``Scheduler.maybe_sleep_on_idle``: no sleep while a job is training, so that the loop
    comes back for its next unit at once."""
    jobs = jobs_of(scheduler)
    if jobs is not None and jobs.has_work():
        return None
    return original(scheduler, *args, **kwargs)
