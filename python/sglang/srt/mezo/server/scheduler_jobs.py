"""MeZO jobs inside SGLang's scheduler process: training units interleaved with serving batches.

SGLang's normal event loop (``Scheduler.event_loop_normal``; the overlap loop is switched off by
``--enable-mezo``) runs, each iteration, either a batch (``run_batch`` then
``process_batch_result``) or, with nothing to run, ``on_idle``. An AFTER hook on both calls
:meth:`MeZOJobs.tick`, which

- every ``POLL_S`` reads the job store (``mezo_jobs.JobStore``) for new jobs and for cancel /
  pause / resume wishes written by the HTTP process;
- runs at most one bounded unit of one job's work (a MeZO step, one chunk of an evaluation, a
  save), round-robin over running jobs. While the server serves, units take at most
  ``--mezo-train-share`` of the wall time (after a unit of t seconds the next waits t * (1/share - 1));
  while it is idle they run back to back.

A unit uses the scheduler's own ModelRunner (``scheduler.tp_worker.model_runner``): the adapter
being trained and its minus twin live in pinned slots of the server's LoRA pool, its forwards go
through ``mezo_runner.ExtendForward`` (a tree cache that shares no prefix; KV slots freed right
after), so the radix cache never holds KV computed under perturbed weights, and requests for the
base model or other adapters never read the training slots.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
import traceback
from typing import Optional

from sglang.srt.mezo.errors import MeZODivergedError
from sglang.srt.mezo.io import atomic_write
from sglang.srt.mezo.server.job_requests import describe_error
from sglang.srt.mezo.server.openai_objects import openai_hyperparameters
from sglang.srt.mezo.server.retention import checkpoints_to_keep
from sglang.srt.mezo.server.settings import ServerSettings
from sglang.srt.mezo.server.store import (
    ACTIVE,
    CANCELLED,
    FAILED,
    FINAL,
    PAUSED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobStore,
    now,
    remove_tree,
)

logger = logging.getLogger(__name__)


POLL_S = 0.25


#: The columns of a job's metrics CSV and the keys of its ``metrics`` events, OpenAI's names.
METRIC_COLUMNS = ("step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy")

#: A reinforcement job's mean rewards, OpenAI's names: of a step's batch (the run's own step metric)
#: and of the validation file (the evaluation's ``eval_reward``).
TRAIN_REWARD, VALID_REWARD = "train_reward_mean", "valid_reward_mean"


def metrics_data(step: int, train: Optional[dict] = None, valid: Optional[dict] = None) -> dict:
    """OpenAI's metrics of one step (a ``metrics`` event's data, a checkpoint's metrics): the training
    ones from a run's step event (``loss``, ``train_mean_token_accuracy``), the validation ones from
    its eval record (``eval_loss``, ``eval_mean_token_accuracy``); None for what was not measured
    (token accuracy for classification jobs, validation at a step without an evaluation).

    >>> metrics_data(3, train={"loss": 0.5})
    {'step': 3, 'train_loss': 0.5, 'train_mean_token_accuracy': None, 'valid_loss': None, 'valid_mean_token_accuracy': None}
    """
    train, valid = train or {}, valid or {}
    data = {"step": step, "train_loss": train.get("loss"),
            "train_mean_token_accuracy": train.get("train_mean_token_accuracy"),
            "valid_loss": valid.get("eval_loss"), "valid_mean_token_accuracy": valid.get("eval_mean_token_accuracy")}
    if valid.get("eval_reward") is not None:
        data[VALID_REWARD] = valid["eval_reward"]
    return data


#: What a run's step event holds besides the objective's own training metrics.
_STEP_FIELDS = ("event", "step", "loss", "projected_grad", "lr", "step_time_s", "tokens", "train_mean_token_accuracy")


def train_extras(step_event: dict) -> dict:
    """The objective's own training metrics of a step (a DPO job's ``rewards/*`` and ``logps/*``, as
    TRL names them), under their names.

    >>> train_extras({"event": "step", "step": 1, "loss": 0.6, "rewards/accuracies": 0.75})
    {'rewards/accuracies': 0.75}
    """
    return {k: v for k, v in step_event.items() if k not in _STEP_FIELDS}


def describe_eval(record: dict) -> str:
    """An evaluation for an event's message: its loss and whichever headline metrics it has.

    >>> describe_eval({"eval_loss": 1.25, "eval_mean_token_accuracy": 0.5})
    'loss=1.2500, token accuracy=50.0%'
    """
    parts = [f"loss={record['eval_loss']:.4f}"]
    if record.get("eval_accuracy") is not None:
        parts.append(f"accuracy={100 * record['eval_accuracy']:.1f}%")
    if record.get("eval_mean_token_accuracy") is not None:
        parts.append(f"token accuracy={100 * record['eval_mean_token_accuracy']:.1f}%")
    if record.get("eval_f1") is not None:
        parts.append(f"F1={record['eval_f1']:.1f}")
    if record.get("eval_reward") is not None:
        parts.append(f"mean reward={record['eval_reward']:.4f}")
    if record.get("eval_rewards/accuracies") is not None:
        parts.append(f"reward accuracy={100 * record['eval_rewards/accuracies']:.1f}%, "
                     f"margin={record['eval_rewards/margins']:.4f}")
    return ", ".join(parts)


def results_table(train_loss: list, evals: list, train_accuracy: Optional[dict] = None,
                  train_metrics: Optional[dict] = None) -> str:
    """A job's metrics CSV: one row per step, :data:`METRIC_COLUMNS` first, then one column for each
    other metric its steps (``train_metrics``: step -> the objective's own, a DPO job's ``rewards/*``)
    and its evaluations report (``eval_accuracy`` for a classification job; ``eval_exact_match`` and
    ``eval_f1`` when the rows have reference answers; a DPO job's ``eval_rewards/*``). An evaluation
    before the first step is the row of step 0; a cell is empty where nothing was measured.

    >>> print(results_table([0.9, 0.7], [{"step": 2, "eval_loss": 0.8, "eval_accuracy": 0.5}]), end="")
    step,train_loss,train_mean_token_accuracy,valid_loss,valid_mean_token_accuracy,eval_accuracy
    1,0.9,,,,
    2,0.7,,0.8,,0.5
    """
    train_accuracy = train_accuracy or {}
    rows = {i + 1: metrics_data(i + 1, train={"loss": loss, "train_mean_token_accuracy": train_accuracy.get(i + 1)})
            for i, loss in enumerate(train_loss)}
    train_metrics = train_metrics or {}
    for step, values in train_metrics.items():
        if step in rows:
            rows[step].update(values)
    taken = {"step", "eval_loss", "eval_mean_token_accuracy", "eval_reward"}
    eval_extra = sorted({k for e in evals for k in e if k.startswith("eval_") and k not in taken})
    rewards = [VALID_REWARD] if any(e.get("eval_reward") is not None for e in evals) else []
    extra = sorted({k for values in train_metrics.values() for k in values}) + rewards + eval_extra
    for e in evals:
        row = rows.setdefault(e["step"], metrics_data(e["step"]))
        row.update({k: v for k, v in metrics_data(e["step"], valid=e).items() if k.startswith("valid_")},
                   **{k: e.get(k) for k in eval_extra})
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(METRIC_COLUMNS + tuple(extra))
    for step in sorted(rows):
        w.writerow(["" if rows[step].get(c) is None else rows[step][c] for c in METRIC_COLUMNS + tuple(extra)])
    return out.getvalue()


class JobWorker:
    """One job: a :class:`~sglang.srt.mezo.training.run.MeZORun` on the scheduler's runner, advanced one
    bounded unit (a step, a chunk of an evaluation) per :meth:`advance`; its events become the
    job's state, events and checkpoints in the store."""

    def __init__(self, job_id: str, request: dict, store: JobStore, runner, state: Optional[dict] = None,
                 keep_checkpoints: int = 0):
        self.job_id, self.request, self.store, self.runner = job_id, request, store, runner
        self.keep_checkpoints = keep_checkpoints
        self.dir = store.job_dir(job_id)
        self.run = None  # the MeZORun, once started
        self.plan = None
        self.phase = "start"
        # A job resumed after a restart keeps what it had: its checkpoints, tokens, last metrics.
        self.state: dict = {"status": RUNNING, "step": 0, "num_steps": None, "started_at": now(),
                            "checkpoints": [], "trained_tokens": 0, "train_loss": None, **(state or {})}
        self.resuming = state is not None

    # -- capacity: a unit needs KV slots and request rows in the server's pools

    def next_unit_size(self) -> tuple[int, int]:
        """(tokens, rows) the next unit's forward needs at most."""
        if self.run is None or self.run.done:
            return 0, 0
        return self.run.next_unit_size()

    # -- the unit of work

    def advance(self) -> None:
        """Do one unit of the job's work."""
        if self.phase == "start":
            self._start()
        elif not self.run.done:
            self.run.advance()
        if self.run is not None and self.run.done and self.phase != "done":
            self._succeed()

    def _start(self) -> None:
        from sglang.srt.mezo.spec.config import MeZOConfig
        from sglang.srt.mezo.training.plan import prepare, start_run

        req = self.request
        output_dir = os.path.join(self.dir, "run")
        config = MeZOConfig.from_dict({**req["config"], "output_dir": output_dir, "progress_bar": False,
                                       "resume": self.resuming})
        # The job trains in the dtype the server serves in (dtype is server-owned).
        self.plan = plan = prepare(config, req["train_path"], req["eval_path"] if req.get("eval_path") else [],
                                   runner=self.runner)
        self.run = start_run(plan, runner=self.runner, callbacks=[self._on_event])
        cfg = plan.config
        self.state.update(num_steps=cfg.num_steps, step=self.run.step_count,
                          hyperparameters=openai_hyperparameters(plan), held_out=plan.held_out)
        self.phase = "train"
        paired = self.run.trainer.trainable.paired
        if self.resuming:
            self.event("info", f"Training resumed at step {self.run.step_count} from its last checkpoint")
        if plan.held_out:
            self.event("info", f"No validation file: {plan.held_out} of the training rows "
                       f"({100 * cfg.validation_holdout:g}%) are held out to watch the run for divergence and to choose "
                       "the checkpoint the job returns; give a validation_file, or hyperparameters "
                       "validation_holdout=0 to train on every row", {"held_out": plan.held_out})
        self.event("info", f"Training started: {len(plan.train)} training and {len(plan.eval)} validation examples, "
                   f"{cfg.num_steps} MeZO steps of batch {cfg.batch_size} (LoRA r={cfg.lora_rank}, "
                   f"lr {cfg.learning_rate:g}, eps {cfg.epsilon:g}, {'paired' if paired else 'two'} forward passes)")
        self.write_state()

    def _on_event(self, event: dict) -> None:
        kind, step, total = event["event"], event.get("step"), self.plan.config.num_steps
        if kind == "step":
            token_accuracy = event.get("train_mean_token_accuracy")
            self.state.update(step=step, train_loss=event["loss"], train_mean_token_accuracy=token_accuracy)
            self.state["trained_tokens"] += event.get("tokens", 0)
            self.event("info", f"Step {step}/{total}: training loss={event['loss']:.4f}"
                       + (f", token accuracy={100 * token_accuracy:.1f}%" if token_accuracy is not None else ""),
                       {**metrics_data(step, train=event), **train_extras(event), "total_steps": total,
                        "lr": event["lr"], "projected_grad": event["projected_grad"],
                        "step_time_s": event["step_time_s"]},
                       type="metrics")
            self.write_state()
        elif kind == "eval":
            self.state.update(eval_loss=event["eval_loss"], eval_accuracy=event.get("eval_accuracy"),
                              valid_mean_token_accuracy=event.get("eval_mean_token_accuracy"))
            metrics = {k: v for k, v in event.items() if k.startswith("eval_")}
            self.event("info", f"Step {step}: validation {describe_eval(event)}",
                       {**metrics_data(step, valid=event), **metrics, "total_steps": total}, type="metrics")
            self.write_state()
        elif kind == "divergence":
            self.state["divergences"] = self.state.get("divergences", []) + [
                {k: event.get(k) for k in ("step", "signal", "value", "best", "best_step", "reaction")}]
            self.event("warn", event["message"], {k: v for k, v in event.items() if k not in ("event", "message")})
            self.write_state()
        elif kind == "returned":
            self.state.update(returned={"step": event["returned_step"], "reason": event["reason"],
                                        "eval_loss": event.get("eval_loss")})
            self.event("info", f"The fine-tuned model is the weights of step {event['returned_step']}: "
                       f"{event['reason']}",
                       {k: v for k, v in event.items() if k != "event"})
            self.write_state()
        elif kind == "save" and event.get("path"):
            name = f"{self.request['fine_tuned_model']}-step-{step}"
            train = {"loss": self.state.get("train_loss"),
                     "train_mean_token_accuracy": self.state.get("train_mean_token_accuracy")}
            last = self.run.evals[-1] if self.run is not None and self.run.evals and \
                self.run.evals[-1]["step"] == step else None
            metrics = {**metrics_data(step, train=train, valid=last),
                       **{k: v for k, v in (last or {}).items() if k != "step"}}
            self.state["checkpoints"] = [c for c in self.state["checkpoints"] if c["step"] != step] + [
                {"step": step, "name": name, "path": os.path.join(event["path"], "adapter"), "created_at": now(),
                 "metrics": metrics}]
            self.event("info", f"Checkpoint at step {step} saved; servable as {name!r}", {"step": step, "name": name})
            self.write_state()
            self.prune_checkpoints()

    def prune_checkpoints(self) -> None:
        """Apply ``--mezo-keep-checkpoints``: the state without the pruned ones is written first (so no
        reader sees a checkpoint listed whose folder is gone), then their folders go, and any
        checkpoint folder left unlisted by a crash in between. The latest is always kept."""
        from sglang.srt.mezo.training.checkpoints import checkpoint_dirs

        if self.keep_checkpoints <= 0:
            return
        # The checkpoint a run hands back (the lowest validation loss) must outlive the pruning.
        metric = "eval_accuracy" if self.run is None else "eval_loss" if \
            self.plan.config.load_best_model_at_end else self.run.trainer.objective.primary_metric
        keep = checkpoints_to_keep(self.state["checkpoints"], self.keep_checkpoints, metric)
        pruned = [c for c in self.state["checkpoints"] if c["step"] not in keep]
        if pruned:
            self.state["checkpoints"] = [c for c in self.state["checkpoints"] if c["step"] in keep]
            self.state["pruned_checkpoints"] = self.state.get("pruned_checkpoints", []) + [c["name"] for c in pruned]
            self.write_state()
            self.event("info", f"Checkpoint(s) at step {', '.join(str(c['step']) for c in pruned)} removed: the job "
                       f"keeps its last {self.keep_checkpoints} and its best (--mezo-keep-checkpoints)",
                       {"pruned": [c["name"] for c in pruned]})
        for path in checkpoint_dirs(self.plan.config.output_dir)[:-1]:  # the latest is what a resume needs
            if int(os.path.basename(path)[5:]) not in keep:
                remove_tree(path)

    def _succeed(self) -> None:
        result = self.run.result()
        if any(d["signal"] == "non_finite_loss" for d in result["divergences"]) and \
                result["returned_step"] == result["steps"]:
            # Nothing validated to hand back: the weights at the stop are the last before a loss
            # stopped being a number, and no evaluation says they are any good.
            raise MeZODivergedError(f"{result['stop_reason']}; the job has no validated checkpoint to hand back "
                                    "(give a validation_file, or leave validation_holdout at its default)")
        self.write_results(result)
        self.release()
        self.phase = "done"
        final = self.state["checkpoints"][-1]["metrics"] if self.state["checkpoints"] else {}
        self.state.update(status=SUCCEEDED, finished_at=now(), adapter_path=result["adapter_path"],
                          result_files=[f"file-results-{self.job_id[6:]}"], final_metrics=final,
                          stop_reason=result["stop_reason"])
        self.event("info", f"The job has successfully completed; the adapter is served as "
                   f"{self.request['fine_tuned_model']!r}", {"fine_tuned_model": self.request["fine_tuned_model"]})
        self.write_state()

    # -- bookkeeping

    def event(self, level: str, message: str, data: Optional[dict] = None, type: str = "message") -> None:
        self.store.append_event(self.job_id, level, message, data, type)

    def write_state(self) -> None:
        self.store.write_state(self.job_id, self.state)

    def write_results(self, result: dict) -> None:
        """``results.csv`` (:func:`results_table`): each step's training metrics and each evaluation's."""
        # Per-step training metrics besides the loss live only in the job's metrics events (they
        # survive a restart there; steps redone after one are identical, the last one is kept).
        train_accuracy, train_metrics = {}, {}
        for e in self.store.events(self.job_id)[::-1]:
            data = e.get("data") or {}
            if e.get("type") == "metrics" and data.get("train_loss") is not None:
                train_accuracy[data["step"]] = data.get("train_mean_token_accuracy")
                # the objective's own: DPO's TRL-named rewards/*, a reinforcement job's mean reward
                extras = {k: v for k, v in data.items() if "/" in k or k == TRAIN_REWARD}
                if extras:
                    train_metrics[data["step"]] = extras
        text = results_table(result["train_loss"], result["eval_history"], train_accuracy, train_metrics)
        atomic_write(os.path.join(self.dir, "results.csv"), lambda tmp: open(tmp, "w").write(text))

    def release(self) -> None:
        """Give the job's LoRA slots back to the server (its adapters are unloaded from the pool)."""
        run, self.run = self.run, None
        if run is not None:
            run.close()
            run.trainer.close()

    def end(self, status: str, error: Optional[dict] = None, message: str = "") -> None:
        try:
            self.release()
        except Exception:  # the job ends either way; the log has the details
            logger.exception("MeZO job %s: releasing its adapters failed", self.job_id)
        self.phase = "done"
        self.state.update(status=status, finished_at=now(), error=error)
        if message:
            self.event("error" if status == FAILED else "info", message)
        self.write_state()


class MeZOJobs:
    """The scheduler's side of the job API: polls the store, starts, advances and ends jobs."""

    def __init__(self, scheduler, settings: ServerSettings):
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
    def runner(self):
        return self.scheduler.tp_worker.model_runner

    def has_work(self) -> bool:
        return any(w.state["status"] == RUNNING for w in self.workers.values())

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
                from sglang.srt.mem_cache.base_prefix_cache import EvictParams

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
        want = PAUSED if control.get("pause") else RUNNING
        if worker.state["status"] != want:
            worker.state["status"] = want
            worker.event("info", "The job was paused" if want == PAUSED else "The job was resumed")
            worker.write_state()
