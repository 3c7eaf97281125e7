"""One fine-tuning job in the scheduler process: a :class:`~sglang.srt.mezo.training.run.MeZORun` on
the scheduler's own ModelRunner, advanced one bounded unit at a time (a step, a chunk of an
evaluation, a save) by :class:`~.scheduler_jobs.MeZOJobs`, and what the run reports written to the
job store as OpenAI shows a job: its state, its events (messages and metrics under OpenAI's names),
its checkpoints (pruned by ``--mezo-keep-checkpoints``) and, at the end, its results CSV.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

from sglang.srt.mezo.data.graders import parse_grader
from sglang.srt.mezo.data.graders.external import is_external
from sglang.srt.mezo.errors import MeZODivergedError
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.server.openai_metrics import metrics_data, results_table, step_extras, train_extras
from sglang.srt.mezo.server.openai_objects import openai_hyperparameters, results_file_id
from sglang.srt.mezo.server.retention import checkpoints_to_keep
from sglang.srt.mezo.server.store import FAILED, PAUSED, RUNNING, SUCCEEDED, JobStore, now, remove_tree
from sglang.srt.mezo.training.checkpoints import checkpoint_dirs

logger = logging.getLogger(__name__)


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


class JobWorker:
    """One job: a :class:`~sglang.srt.mezo.training.run.MeZORun` on the scheduler's runner, advanced one
    bounded unit (a step, a chunk of an evaluation) per :meth:`advance`; its events become the
    job's state, events and checkpoints in the store."""

    def __init__(self, job_id: str, request: dict, store: JobStore, runner: Any, state: Optional[dict] = None,
                 keep_checkpoints: int = 0):
        self.job_id, self.request, self.store, self.runner = job_id, request, store, runner
        self.keep_checkpoints = keep_checkpoints
        self.dir = store.job_dir(job_id)
        self.run = None  # the MeZORun, once started
        self.plan = None
        self.phase = "start"
        self.external = None  # an external grader's ExternalSteps: its steps wait for the client's rewards
        self.held_at: Optional[float] = None  # when the job paused itself (its client's rewards overdue)
        # A job resumed after a restart keeps what it had: its checkpoints, tokens, last metrics.
        self.state: dict = {"status": RUNNING, "step": 0, "num_steps": None, "started_at": now(),
                            "checkpoints": [], "trained_tokens": 0, "train_loss": None, **(state or {})}
        self.resuming = state is not None

    # -- capacity: a unit needs KV slots and request rows in the server's pools

    def next_unit_size(self) -> tuple[int, int]:
        """(tokens, rows) the next unit's forward needs at most."""
        if self.run is None or self.run.done or self.waiting:
            return 0, 0
        return self.run.next_unit_size()

    @property
    def waiting(self) -> bool:
        """Whether the job waits for its client's rewards (it takes none of the scheduler's time then)."""
        return self.external is not None and self.external.waiting

    # -- the unit of work

    def advance(self) -> None:
        """Do one unit of the job's work."""
        if self.phase == "start":
            self._start()
        elif not self.run.done:
            if self.external is not None and not self.external.ready():
                if self.external.overdue():
                    self._hold()
                return
            self.run.advance()
        if self.run is not None and self.run.done and self.phase != "done":
            self._succeed()

    def _start(self) -> None:
        # The trainer and SGLang's model executor under it: imported with the first job, in the
        # scheduler process, not wherever the plugin loads this module.
        from sglang.srt.mezo.training.plan import prepare, start_run  # noqa: PLC0415

        req = self.request
        output_dir = os.path.join(self.dir, "run")
        config = MeZOConfig.from_dict({**req["config"], "output_dir": output_dir, "progress_bar": False,
                                       "resume": self.resuming})
        # The job trains in the dtype the server serves in (dtype is server-owned).
        self.plan = plan = prepare(config, req["train_path"], req["eval_path"] if req.get("eval_path") else [],
                                   runner=self.runner)
        self.run = start_run(plan, runner=self.runner, callbacks=[self._on_event])
        cfg = plan.config
        if is_external(cfg.grader):
            # Also the trainer's side: imported with the first job that has an external grader.
            from sglang.srt.mezo.server.external_rewards import external_steps  # noqa: PLC0415

            self.external = external_steps(self.run, self.store, self.job_id, self.request["model"],
                                           self.request["fine_tuned_model"], parse_grader(cfg.grader).timeout_s)
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

    def _hold(self) -> None:
        """Pause the job: its client has not posted the waiting step's rewards in time."""
        step = self.run.step_count + 1
        self.held_at = time.time()
        self.state["status"] = PAUSED
        self.event("warn", f"No rewards for step {step} within {self.external.source.timeout_s:g} s (the grader's "
                   "timeout_s): the job is paused and keeps everything. It goes on when the rewards of the same "
                   "rollouts (GET .../rollouts) are posted, or when resumed (POST .../resume), which waits for "
                   "them again", {"step": step, "reason": "rewards_timeout"})
        self.write_state()

    def stays_held(self, control: dict) -> bool:
        """Whether a job that paused itself stays paused after ``control``: until a resume after the
        hold, or the rewards it waited for (its client came back)."""
        if self.held_at is None:
            return False
        if control.get("resumed_at", 0) > self.held_at or not self.external.waiting:
            self.held_at = None
            return False
        return True

    def on_resumed(self) -> None:
        """The job runs again after a pause: a step waiting for its client waits afresh."""
        if self.external is not None:
            self.external.restart_clock()

    def prune_checkpoints(self) -> None:
        """Apply ``--mezo-keep-checkpoints``: the state without the pruned ones is written first (so no
        reader sees a checkpoint listed whose folder is gone), then their folders go, and any
        checkpoint folder left unlisted by a crash in between. The latest is always kept."""
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
                          result_files=[results_file_id(self.job_id)], final_metrics=final,
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
                extras = step_extras(data)
                if extras:
                    train_metrics[data["step"]] = extras
        text = results_table(result["train_loss"], result["eval_history"], train_accuracy, train_metrics)
        self.store.write_results_csv(self.job_id, text)

    def release(self) -> None:
        """Give the job's LoRA slots back to the server (its adapters are unloaded from the pool)."""
        run, self.run = self.run, None
        if self.external is not None:
            self.external.close()
            run.trainer.objective.take_rewards_from(None)
            self.external = None
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
