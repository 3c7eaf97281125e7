"""A MeZO training run that advances one bounded unit of work at a time.

:class:`MeZORun` holds everything a run is besides the model: the step count and the step-seed
RNG (on its trainer), the batch cursor, the evaluation history and the best result. Each call
to :meth:`MeZORun.advance` does one unit of work: one MeZO step, or one chunk of an evaluation
(evaluations come on the schedule of ``config.eval_steps``, before the first step when
``config.eval_at_start``, and at the end, each followed by a save). So a run can stop cleanly
between any two units, and whoever owns the process decides when the next one happens: the
CLI's loop, a server's scheduler between serving batches, a resumed run.

Metrics go to callbacks, not to files: each is called with every event (a dict with an
``"event"`` key: ``step``, ``eval``, ``save``, ``eval_progress``, ``resume``, ``divergence``,
``returned``, ``end``). The defaults write ``metrics.jsonl`` and draw a progress bar.

Safeguards (:mod:`sglang.srt.mezo.training.divergence`): every step's loss and every evaluation's
loss go to a :class:`~sglang.srt.mezo.training.divergence.DivergenceWatch`; a divergence it notices
is a ``divergence`` event and the run reacts by ``config.on_divergence`` (a smaller learning rate,
recorded in the trajectory, or a stop). At the end, with ``config.load_best_model_at_end``, the
adapter at the top of the output folder (and the result's ``adapter_path``) is the checkpoint with
the lowest validation loss; the step before the first one is a candidate too (its checkpoint is
the starting adapter), so a run with validation data never hands back weights that scored worse on
it than the ones it started from.

Example (``trainer`` is any :class:`~sglang.srt.mezo.training.trainer.MeZOTrainer`)::

    >>> run = MeZORun(trainer, train_examples, eval_examples)  # doctest: +SKIP
    >>> while not run.done:  # doctest: +SKIP
    ...     run.advance()
    >>> run.result()["eval_accuracy"]  # doctest: +SKIP
    0.81
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from typing import Any, Iterator, Optional, Sequence

from sglang.srt.mezo.errors import MeZODivergedError
from sglang.srt.mezo.io import atomic_dir, atomic_json, atomic_write
from sglang.srt.mezo.training.callbacks import METRICS_FILE, Callback, default_callbacks
from sglang.srt.mezo.training.checkpoints import CHECKPOINTS, RUN_STATE_FILE
from sglang.srt.mezo.training.divergence import SHRINK, Divergence, DivergenceWatch, default_window, react
from sglang.srt.mezo.zo.seeds import rng_state, set_rng_state
from sglang.srt.mezo.zo.trajectory import Trajectory

logger = logging.getLogger(__name__)


class BatchSampler:
    """Endless batches of example indices: seeded shuffled epochs; a batch may span two epochs.
    Its position (RNG state and the rest of the current epoch) can be saved and restored.

    >>> b = BatchSampler(5, 2, seed=0); [next(b) for _ in range(3)]
    [[2, 1], [0, 4], [3, 0]]
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int):
        self.num_examples, self.batch_size = num_examples, batch_size
        self.rng, self.order = random.Random(seed), []

    def __iter__(self) -> Iterator[list[int]]:
        return self

    def __next__(self) -> list[int]:
        batch = self.peek()
        del self.order[: self.batch_size]
        return batch

    def peek(self) -> list[int]:
        """The next batch, without taking it (the order ahead is fixed either way)."""
        while len(self.order) < self.batch_size:
            fresh = list(range(self.num_examples))
            self.rng.shuffle(fresh)
            self.order += fresh
        return self.order[: self.batch_size]

    def state_dict(self) -> dict:
        return {"rng": rng_state(self.rng), "order": list(self.order)}

    def load_state_dict(self, state: dict) -> None:
        set_rng_state(self.rng, state["rng"])
        self.order = list(state["order"])


class MeZORun:
    """One MeZO run of ``trainer.config.num_steps`` steps on ``train_data``, evaluated on
    ``eval_data``; see the module docstring. ``callbacks=None`` takes :func:`default_callbacks`.
    """

    def __init__(self, trainer, train_data: Sequence[Any], eval_data: Optional[Sequence[Any]] = None, *,
                 callbacks: Optional[Sequence[Callback]] = None):
        cfg = trainer.config
        if not train_data and cfg.num_steps > 0:
            raise ValueError("train_data is empty")
        self.trainer = trainer
        self.train_data, self.eval_data = train_data, list(eval_data or [])
        self.num_steps = cfg.num_steps
        self.callbacks = list(default_callbacks(cfg) if callbacks is None else callbacks)
        self.sampler = BatchSampler(len(train_data), cfg.batch_size, cfg.seed)
        self.train_loss: list[float] = []
        self.evals: list[dict] = []
        self.adapter_path: Optional[str] = None
        self.wall_time_s = 0.0
        self._started = time.perf_counter()
        self._finished = False
        # What the next units of work are: an evaluation under way, a save after it, the end.
        self._evaluation = None
        self._save_after_eval = False
        self._end_after_eval = False
        self.watch = DivergenceWatch(cfg.divergence_window or default_window(cfg.num_steps), cfg.divergence_tolerance)
        self.divergences: list[dict] = []
        self.stop_reason: Optional[str] = None
        self.returned: Optional[dict] = None  # the step whose weights the run hands back, and why
        if cfg.eval_at_start and self.eval_data:
            self._evaluation = trainer.evaluation(self.eval_data)
            # The starting weights are saved as a checkpoint too: a candidate to hand back.
            self._save_after_eval = self.num_steps > 0

    # ---- progress

    @property
    def step_count(self) -> int:
        return self.trainer.step_count

    @property
    def done(self) -> bool:
        return self._finished

    def advance(self) -> Optional[dict]:
        """Do one unit of work and return the event it completed (None: part of an evaluation)."""
        if self._finished:
            raise RuntimeError("the run is finished: nothing left to advance")
        if self._evaluation is not None:
            return self._evaluate_chunk()
        if self.step_count < self.num_steps and self.stop_reason is None:
            return self._step()
        return self._checkpoint(final=True)

    def upcoming_batch(self) -> Optional[list]:
        """The batch the next :meth:`advance` steps on, without taking it (None: the next unit is not
        a step: an evaluation, a save, the end)."""
        if self._finished or self._evaluation is not None or self.step_count >= self.num_steps or \
                self.stop_reason is not None:
            return None
        return [self.train_data[i] for i in self.sampler.peek()]

    def next_unit_size(self) -> tuple[int, int]:
        """(KV tokens, request rows) the next :meth:`advance` holds at most at once, so that a runner
        shared with a server can check it has room first: a paired +/-eps step runs each sequence
        twice in one forward, and a unit that generates (a reward step, an evaluation that answers)
        holds each prompt with room for its answer."""
        objective = self.trainer.objective
        if self._evaluation is not None:
            batch, copies, training = self._evaluation.next_chunk, 1, False
        elif self.step_count < self.num_steps and self.stop_reason is None:
            batch = [self.train_data[i] for i in self.sampler.peek()]
            copies, training = (2 if self.trainer.trainable.paired else 1), True
        else:
            return 0, 0
        # An upper bound: an evaluation's logits forward and its generation run one after the other.
        room = objective.answer_room(batch, training)
        lengths = [len(s) + room for s in objective.forward_inputs(batch).sequences]
        return sum(lengths) * copies, len(lengths) * copies

    def _emit(self, event: dict) -> dict:
        for callback in self.callbacks:
            callback(event)
        return event

    def _step(self) -> dict:
        batch = [self.train_data[i] for i in next(self.sampler)]
        # When the next unit is a step too, the trainer may start it in this one (full weights: one
        # pass over the weights fewer a step); anything run in between takes that back off.
        after = self.step_count + 1
        next_batch = [self.train_data[i] for i in self.sampler.peek()] \
            if after < self.num_steps and not self._checkpoint_after(after) else None
        t0 = time.perf_counter()
        try:
            result = self.trainer.step(batch, next_batch)
        except MeZODivergedError as e:
            # The weights are the last good ones (the failed step restored them), but a step that
            # cannot be measured cannot be taken: the run stops, whatever on_divergence says.
            self.stop_reason = f"stopped at step {self.step_count}: {e}"
            record = {"step": self.step_count, "signal": "non_finite_loss", "reaction": "stop",
                      "message": f"Divergence: {' '.join(str(e).split())}; the run stops here"}
            self.divergences.append(record)
            return self._emit({"event": "divergence", **record})
        self.train_loss.append(result.loss)
        event = self._emit({
            "event": "step", "step": self.step_count, "loss": result.loss,
            "projected_grad": result.projected_grads[0], "lr": result.lr, **result.metrics,
            "step_time_s": time.perf_counter() - t0,
            "tokens": sum(len(s) for s in self.trainer.objective.forward_inputs(batch).sequences),
            "sequence_forwards": self.trainer.estimator.sequence_forwards(len(batch), len(result.projected_grads)),
        })
        divergence = self.watch.on_train_loss(self.step_count, result.loss)
        if divergence is not None:
            self._react(divergence)
        if self._checkpoint_after(self.step_count) and self.stop_reason is None:
            self._checkpoint(final=False)
        return event

    def _react(self, divergence: Divergence) -> None:
        """What the run does about a divergence (``config.on_divergence``; training/divergence.py).
        Data-parallel workers see the same train losses and react alike; only rank 0 evaluates, so
        a validation-loss divergence there is reported, not reacted to."""
        trainer = self.trainer
        rule = trainer.config.on_divergence
        if divergence.signal == "eval_loss" and trainer.data_parallel is not None:
            rule = "warn"
        action = react(rule, len(trainer.trajectory.lr_scales))
        if self.step_count >= self.num_steps:
            action = "warn"  # nothing left to change
        if action == "shrink":
            trainer.scale_learning_rate(SHRINK)
        elif action == "stop":
            self.stop_reason = f"stopped at step {self.step_count} on divergence: {divergence.describe()}"
        self.watch.restart_train()
        said = {"shrink": f"the learning rate of the steps that follow is multiplied by {SHRINK} "
                          f"(now {trainer.lr_at(self.step_count):.3g})",
                "stop": "the run stops here", "warn": "the run goes on unchanged"}[action]
        record = {"step": self.step_count, **divergence.to_dict(), "reaction": action,
                  "message": f"Divergence: {divergence.describe()}; {said}"}
        self.divergences.append(record)
        logger.warning("%s", record["message"])
        self._emit({"event": "divergence", **record})

    def _checkpoint_after(self, step: int) -> bool:
        """Whether an evaluation and save come after ``step`` steps (before the last one's end)."""
        every = self.trainer.config.eval_steps
        return bool(every) and step % every == 0 and step < self.num_steps

    def _checkpoint(self, final: bool) -> Optional[dict]:
        """Evaluate (if there is eval data and these weights were not evaluated yet), then save."""
        evaluated = self.evals and self.evals[-1]["step"] == self.step_count
        self._save_after_eval, self._end_after_eval = True, final
        if self.eval_data and not evaluated:
            self._evaluation = self.trainer.evaluation(self.eval_data)
            return None
        return self._after_eval()

    def _evaluate_chunk(self) -> Optional[dict]:
        evaluation = self._evaluation
        evaluation.advance()
        if not evaluation.done:
            self._emit({"event": "eval_progress", "step": self.step_count, "done": evaluation.cursor,
                        "total": len(evaluation.examples)})
            return None
        self._evaluation = None
        record = {"step": self.step_count, **evaluation.metrics()}
        self.evals.append(record)
        event = self._emit({"event": "eval", **record})
        divergence = self.watch.on_eval(self.step_count, record.get("eval_loss"))
        if divergence is not None:
            self._react(divergence)
            if self.stop_reason is not None:
                self._save_after_eval, self._end_after_eval = True, True
        return self._after_eval() or event

    def _after_eval(self) -> Optional[dict]:
        event = None
        if self._end_after_eval:
            self.returned = self._choose_returned()
        if self._save_after_eval:
            self._save_after_eval = False
            event = self.save()
        if self._end_after_eval:
            self._finished = True
            self._hand_back(self.returned)
            self.wall_time_s = time.perf_counter() - self._started
            event = self._emit({"event": "end", "step": self.step_count, "returned_step": self.returned["step"],
                                **({"stop_reason": self.stop_reason} if self.stop_reason else {})})
        return event

    # ---- the weights handed back

    def _choose_returned(self) -> dict:
        """Which step's weights the run hands back (``config.load_best_model_at_end``), and why: the
        evaluation with the lowest validation loss (the first of equals) whose checkpoint exists."""
        last = self.step_count
        if not self.trainer.config.load_best_model_at_end:
            return {"step": last, "reason": "the last step (load_best_model_at_end is off)"}
        scored = [r for r in self.evals if r.get("eval_loss") is not None and math.isfinite(r["eval_loss"])
                  and self._has_checkpoint(r["step"])]
        if not scored:
            return {"step": last, "reason": "the last step: the run has no validation data to choose by"
                    if not self.eval_data else "the last step: no checkpoint to choose from (no output_dir)"}
        best = min(scored, key=lambda r: r["eval_loss"])
        at_last = next((r["eval_loss"] for r in self.evals if r["step"] == last), None)
        if best["step"] == last or (at_last is not None and math.isfinite(at_last) and at_last <= best["eval_loss"]):
            return {"step": last, "eval_loss": at_last, "reason": f"the last step, {last}, has the lowest validation "
                    f"loss ({at_last:.4f})"}
        return {"step": best["step"], "eval_loss": best["eval_loss"],
                "reason": f"step {best['step']} has the lowest validation loss ({best['eval_loss']:.4f}"
                          + (f"; the last step, {last}, has {at_last:.4f})" if at_last is not None else ")")}

    def _has_checkpoint(self, step: int) -> bool:
        directory = self.trainer.config.output_dir
        return step == self.step_count or (directory is not None and os.path.isdir(self._checkpoint_dir(step)))

    def _checkpoint_dir(self, step: int) -> str:
        return os.path.join(self.trainer.config.output_dir, CHECKPOINTS, f"step-{step:06d}")

    def _hand_back(self, returned: dict) -> None:
        """Put the returned step's weights at the top of the output folder (its adapter and its
        trajectory, which replays to it) and, for a LoRA run, into the trainer; the last step's
        checkpoint keeps the whole run."""
        directory = self.trainer.config.output_dir
        if returned["step"] != self.step_count and directory is not None:
            folder = self._checkpoint_dir(returned["step"])
            trajectory = Trajectory.load(folder)
            if self.trainer.trainable.holds_weights():
                self.trainer.restore_weights(folder, trajectory)
            self.adapter_path = self.trainer.save(directory, trajectory=trajectory) or self.adapter_path
        self._emit({"event": "returned", "step": self.step_count, "returned_step": returned["step"],
                    **{k: v for k, v in returned.items() if k != "step"}})

    # ---- saving and the state of a run

    def save(self, directory: Optional[str] = None) -> Optional[dict]:
        """Save a checkpoint: ``checkpoints/step-NNNNNN/`` (weights or trajectory, and this run's
        state, written as one folder), and the latest adapter and trajectory at the top of the
        output folder. Emits a ``save`` event."""
        directory = directory or self.trainer.config.output_dir
        if directory is None:
            return None
        self.adapter_path = self.trainer.save(directory) or self.adapter_path
        state = self.state_dict()

        def fill(folder: str) -> None:
            self.trainer.save(folder)
            atomic_json(os.path.join(folder, RUN_STATE_FILE), state)

        checkpoint = atomic_dir(os.path.join(directory, CHECKPOINTS, f"step-{self.step_count:06d}"), fill)
        return self._emit({"event": "save", "step": self.step_count, "path": checkpoint,
                           "adapter_path": self.adapter_path})

    def resume(self, checkpoint: Optional[str]) -> None:
        """Go on from ``checkpoint`` (see :func:`check_resumable`; None: from the start): its weights,
        trajectory and state, with ``metrics.jsonl`` cut back to what happened up to it."""
        metrics = os.path.join(self.trainer.config.output_dir, METRICS_FILE)
        kept: list[str] = []
        if checkpoint is not None:
            with open(os.path.join(checkpoint, RUN_STATE_FILE)) as f:
                state = json.load(f)
            trajectory = Trajectory.load(checkpoint)
            self.trainer.restore_weights(checkpoint, trajectory)
            self.trainer.trajectory = trajectory  # the record goes on: the same run
            self.load_state_dict(state)
            self._emit({"event": "resume", "step": state["step"], "path": checkpoint})
            if os.path.exists(metrics):
                with open(metrics) as f:
                    kept = [line for line in f if line.strip() and json.loads(line)["step"] <= state["step"]]
        # Lines of a killed run after its last checkpoint are redone, so they go.
        if os.path.exists(metrics):
            atomic_write(metrics, lambda tmp: open(tmp, "w").writelines(kept))

    def state_dict(self) -> dict:
        """Everything besides the weights that the run needs to go on exactly where it stopped."""
        return {
            **self.trainer.state_dict(),  # "step", "seed_rng"
            "sampler": self.sampler.state_dict(),
            "train_loss": list(self.train_loss),
            "evals": list(self.evals),
            "adapter_path": self.adapter_path,
            "finished": self._finished,
            "divergence_watch": self.watch.state_dict(),
            "divergences": list(self.divergences),
            "stop_reason": self.stop_reason,
            "returned": self.returned,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (the weights must be those saved with it)."""
        self.trainer.load_state_dict({"step": state["step"], "seed_rng": state["seed_rng"]})
        self.sampler.load_state_dict(state["sampler"])
        self.train_loss, self.evals = list(state["train_loss"]), list(state["evals"])
        self.adapter_path, self._finished = state["adapter_path"], state["finished"]
        if "divergence_watch" in state:  # absent in records older than the watch: it starts afresh
            self.watch.load_state_dict(state["divergence_watch"])
        self.divergences = list(state.get("divergences", []))
        self.stop_reason, self.returned = state.get("stop_reason"), state.get("returned")
        self._evaluation, self._save_after_eval, self._end_after_eval = None, False, False

    # ---- the outcome

    def result(self) -> dict:
        """Loss history, evaluations, final and best accuracy, where the adapter is."""
        final = self.evals[-1] if self.evals else {}
        metric = self.trainer.objective.primary_metric
        if final and metric not in final:
            metric = "eval_loss"  # an eval set without the objective's headline metric (no references, say)
        sign = -1.0 if metric == "eval_loss" else 1.0
        best = max(self.evals, key=lambda r: sign * r[metric]) if self.evals else None
        zero = self.evals[0] if self.evals and self.evals[0]["step"] == 0 else None
        return {
            "steps": self.step_count,
            "train_loss": list(self.train_loss),
            "eval_history": list(self.evals),
            "eval_accuracy": final.get("eval_accuracy"),
            "eval_loss": final.get("eval_loss"),
            "final_eval": dict(final),
            "primary_metric": metric,
            "best_eval": dict(best) if best else None,
            "zero_shot_eval": dict(zero) if zero else None,
            "best_eval_accuracy": best.get("eval_accuracy") if best else None,
            "best_step": best["step"] if best else None,
            "zero_shot_accuracy": zero.get("eval_accuracy") if zero else None,
            "adapter_path": self.adapter_path,
            "returned_step": (self.returned or {}).get("step"),
            "returned_reason": (self.returned or {}).get("reason"),
            "returned_eval": next((dict(r) for r in self.evals if self.returned and r["step"] == self.returned["step"]),
                                  None),
            "divergences": list(self.divergences),
            "stop_reason": self.stop_reason,
            "wall_time_s": self.wall_time_s or time.perf_counter() - self._started,
            "trainable_parameters": self.trainer.trainable.num_parameters,
        }

    def close(self) -> None:
        """Close what the callbacks hold open (a progress bar); the run itself holds nothing."""
        for callback in self.callbacks:
            close = getattr(callback, "close", None)
            if close is not None:
                close()

    def run_to_end(self) -> dict:
        """Advance until done; returns :meth:`result`."""
        try:
            while not self.done:
                self.advance()
        finally:
            self.close()
        return self.result()
