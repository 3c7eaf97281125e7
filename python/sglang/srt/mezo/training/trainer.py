"""MeZO (zeroth-order SPSA) fine-tuning on SGLang's own forward path.

One step, for trainable tensors theta (a LoRA adapter in SGLang's memory pool, or every weight):
a seed per direction; L+ = loss(theta + eps z), L- = loss(theta - eps z), z regenerated from the
seed and theta restored bit for bit; g = (L+ - L-) / (2 eps); theta -= lr * (g z + wd theta).
Forwards only, no optimizer state, z never stored: training costs what inference costs.
:meth:`MeZOTrainer.step` reads in that order: the seeds, the estimator's losses (``estimators/``),
the update rule (``zo/update.py``), the trajectory (``zo/trajectory.py``).

Example (a tiny next-token task; any Llama/Qwen2 checkpoint path works):
    >>> from sglang.srt.mezo_trainer import MeZOConfig, MeZOTrainer  # doctest: +SKIP
    >>> trainer = MeZOTrainer("smollm2-135m", MeZOConfig(num_steps=100, learning_rate=1e-3, epsilon=1e-2))  # doctest: +SKIP
    >>> ids = trainer.tokenizer.encode("The sky is")  # doctest: +SKIP
    >>> trainer.train([(ids, trainer.tokenizer.encode(" green")[0])])  # doctest: +SKIP
    {'steps': 100, 'train_loss': [...], 'adapter_path': None, ...}
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence

import torch
from transformers import AutoTokenizer

from sglang.srt.mezo.engine.run_setup import checked_model, runner_for, with_dtype
from sglang.srt.mezo.engine.runner import release_model_runner
from sglang.srt.mezo.errors import MeZODivergedError
from sglang.srt.mezo.io import atomic_json
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training import estimators
from sglang.srt.mezo.training.evaluation import Evaluation
from sglang.srt.mezo.training.objectives.base import ForwardInputs, GenerationInputs, Objective, SidedLosses, Slots
from sglang.srt.mezo.training.objectives.next_token import NextTokenObjective
from sglang.srt.mezo.training.run import MeZORun
from sglang.srt.mezo.training.sglang_model import SGLangModel
from sglang.srt.mezo.training.trainable import TrainableSet, trainable_set
from sglang.srt.mezo.zo.perturbable import PerturbableTensors, decay_mask
from sglang.srt.mezo.zo.seeds import SeedStream
from sglang.srt.mezo.zo.trajectory import FILE as TRAJECTORY_FILE
from sglang.srt.mezo.zo.trajectory import Trajectory, weights_hash
from sglang.srt.mezo.zo.update import StepUpdate, learning_rate_at, replay_steps

__all__ = ["DataParallel", "Evaluation", "MeZOTrainer", "StepResult"]


@dataclass
class StepResult:
    loss: float  # (L+ + L-) / 2, the loss at theta up to O(eps^2)
    projected_grads: list[float]
    seeds: list[int]
    lr: float
    #: The objective's other training metrics (e.g. train_mean_token_accuracy), averaged over the
    #: +eps and -eps forwards of the step (paired forward only).
    metrics: dict = field(default_factory=dict)


class DataParallel(Protocol):
    """The workers that share each step's batch (:class:`~sglang.srt.mezo.parallel.data_parallel.DataParallelGroup`)."""

    def shard(self, batch: Sequence[Any], step: int) -> list:
        """This worker's part of step ``step``'s global batch."""

    def combine_losses(self, losses: list[tuple[float, float]], weight: float) -> list[tuple[float, float]]:
        """(L+, L-) per seed on this worker's part (``weight``: the loss terms it averages) -> those of
        the global batch, the same on every worker."""


class MeZOTrainer:
    """MeZO on SGLang's ModelRunner, for any :class:`~sglang.srt.mezo.training.objectives.base.Objective`
    (default: next-token cross-entropy, a batch being ``(prompt_token_ids, target_token_id)`` pairs).

    Pass ``runner=`` to train on a ModelRunner that already exists (a live server's), else one is
    built from ``model_path``. ``kind`` ("masked" or "causal"): the model's kind, when the caller has
    resolved the model already (a run's plan); else it is read from the model's config.
    ``data_parallel``: the worker group that shares every step (None: this process alone).
    A subclass may override :meth:`compute_loss` as a whole; its +/- eps passes then run as two forwards.
    """

    def __init__(self, model_path: Optional[str] = None, config: Optional[MeZOConfig] = None, *, runner=None,
                 tokenizer=None, objective: Optional[Objective] = None, kind: Optional[str] = None,
                 data_parallel: Optional[DataParallel] = None):
        config = config or MeZOConfig()
        self.model_path, kind = checked_model(model_path, config, runner, kind)
        self.data_parallel = data_parallel
        # Hyperparameters left to their defaults depend on the kind of model: resolved once, here.
        self.config = config = with_dtype(config.resolve(kind), runner)
        owned = runner is None
        runner = runner_for(config, self.model_path, masked=kind == "masked") if owned else runner
        try:
            self._set_up(runner, tokenizer, objective or NextTokenObjective())
        except BaseException:
            if owned:  # one runner per process: a trainer that failed must not keep it
                release_model_runner(runner)
            raise

    def _set_up(self, runner, tokenizer, objective: Objective) -> None:
        config = self.config
        self.runner, self._tokenizer, self.step_count = runner, tokenizer, 0
        self.model = SGLangModel(runner, seed=config.seed, temperature=config.temperature,
                                 step=lambda: self.step_count)
        self.forward = self.model.forward
        self.objective = objective
        self.trainable = self._make_trainable()
        self.tensors = PerturbableTensors(self.trainable.tensors, decay_mask(self.trainable.names),
                                          self.trainable.layouts, config.noise)
        self.update = StepUpdate(config, self.tensors)  # first: HiZOO's probes read its Hessian estimate
        self.estimator = estimators.choose(config, self.tensors, self.trainable.probe_slots, self.compute_loss,
                                           self.sided_losses, hessian=self.update.hessian,
                                           slot_losses=lambda b, ids: self.objective.slot_losses(self.model, b, ids))
        self.seeds = SeedStream(config.seed, config.n_spsa)
        self.trajectory = Trajectory(  # (seeds, g) per step: with the start, the whole run
            tensor_names=list(self.trainable.names), tensor_shapes=[list(t.shape) for t in self.trainable.tensors],
            dtype=config.dtype, device_type=torch.device(runner.device).type, n_spsa=config.n_spsa,
            model={"path": self.model_path}, config=config.to_dict(), start=self.trainable.start(),
            restore=self.restore, noise=config.noise)

    # ---- set-up -------------------------------------------------------------------------------

    @property
    def objective(self) -> Objective:
        return self._objective

    @objective.setter
    def objective(self, objective: Objective) -> None:
        self._objective = objective
        # An objective whose sequences share prefixes turns sharing on; otherwise the forward's own setting.
        self.model.share_prefixes = True if objective.shares_prefixes else None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        return self._tokenizer

    @property
    def restore(self) -> str:
        """How theta comes back after a -eps pass ("exact" or "add-subtract"; replay repeats it)."""
        return self.estimator.restore

    def _make_trainable(self) -> TrainableSet:
        folder = self.config.output_dir
        if folder is None and self.config.trainable == "lora":
            # SGLang loads an adapter from a folder; without an output folder, a temporary one that
            # goes away with the trainer (the adapter lives on in the pool and its host copy).
            self._scratch = tempfile.TemporaryDirectory(prefix="sglang-mezo-")
            folder = self._scratch.name
        # A subclass's own compute_loss cannot have its two passes merged into one forward.
        one_forward = type(self).compute_loss is MeZOTrainer.compute_loss
        return trainable_set(self.runner, self.config, self.model_path, f"mezo-{os.getpid()}-{id(self)}", folder,
                             lambda free: estimators.slot_pairs_needed(self.config, free, one_forward))

    # ---- the model at the trained weights (an objective's Model) ------------------------------

    def logits(self, sequences: Sequence[Sequence[int]], positions: Sequence[int], vocab_ids=None,
               lora_ids: Optional[Sequence[Optional[str]]] = None) -> torch.Tensor:
        """Logits at ``positions`` of ``sequences`` at the trained weights (default: the adapter's)."""
        self.settle()
        return self.model.logits(sequences, positions, vocab_ids, lora_ids or [self.trainable.lora_id] * len(sequences))

    def logits_for(self, inputs: ForwardInputs) -> torch.Tensor:
        """The logits an objective's :class:`ForwardInputs` ask for, at the trained weights."""
        return self.logits(inputs.sequences, inputs.positions, inputs.vocab_ids)

    def generate(self, inputs: GenerationInputs, lora_ids: Optional[Sequence[Optional[str]]] = None,
                 sampled: bool = False) -> list[list[int]]:
        """Answers through SGLang (prefill, then decode with the KV cache) at the trained weights:
        greedy, or ``sampled`` with this step's seeds."""
        self.settle()
        return self.model.generate(inputs, lora_ids or [self.trainable.lora_id] * len(inputs.prompts), sampled)

    def compute_loss(self, batch: Sequence[Any]) -> float:
        """The objective's loss on ``batch`` (encoded items) at the current weights (a reward
        objective: minus the mean reward of answers sampled now)."""
        self.settle()
        return self.objective.batch_loss(self.model, batch, self.trainable.lora_id)

    def sided_losses(self, batch: Sequence[Any], parts: Sequence[range], slots: Slots) -> SidedLosses:
        """The objective's (L+, L-) of each direction's part of ``batch`` on its slot pair."""
        return self.objective.sided_losses(self.model, batch, parts, slots)

    # ---- the MeZO step --------------------------------------------------------------------------

    def lr_at(self, step: int) -> float:
        return learning_rate_at(self.config, step, self.trajectory.lr_scales)

    def scale_learning_rate(self, factor: float) -> None:
        """Multiply the learning rate of every step from now on by ``factor`` (a divergence
        reaction); the trajectory records it, so resume and replay follow it."""
        self.trajectory.lr_scales.append((self.step_count, factor))

    @torch.no_grad()
    def projected_gradient(self, batch: Sequence[Any], step_seed: int) -> tuple[float, float, float]:
        """(g, L+, L-) for one seed; theta is bitwise unchanged afterwards (with an exact restore)."""
        loss_plus, loss_minus = self.perturbed_losses(batch, step_seed)
        return (loss_plus - loss_minus) / (2 * self.config.epsilon), loss_plus, loss_minus

    @torch.no_grad()
    def perturbed_losses(self, batch: Sequence[Any], step_seed: int) -> tuple[float, float]:
        """(L+, L-): the loss on ``batch`` at theta + eps z and at theta - eps z, by this run's
        estimator; theta is bitwise unchanged afterwards (with an exact restore)."""
        measured = self._measure(batch, [step_seed])
        self.tensors.move(measured.owed)
        return measured.losses[0]

    def _measure(self, batch: Sequence[Any], seeds: Sequence[int]) -> estimators.Measured:
        measured = self.estimator.measure(batch, seeds)
        if measured.settled is not None:
            self._record_settled(measured.settled)
        return measured

    @torch.no_grad()
    def step(self, batch: Sequence[Any], next_batch: Optional[Sequence[Any]] = None) -> StepResult:
        """One MeZO step (n-SPSA over ``config.n_spsa`` seeds) on ``batch``.

        ``next_batch``: the batch of the step that comes right after this one, with no evaluation or
        save in between (:class:`~sglang.srt.mezo.training.run.MeZORun` knows). With the add/subtract restore
        (full weights), the update pass then also puts on the next step's theta + eps z, so a step
        makes two passes over the weights instead of three; the per-element arithmetic, and so the
        trajectory and replay, are the same. Until that step runs, the weights stay perturbed: any
        other forward, :meth:`save` or :meth:`settle` takes the perturbation off first."""
        lr = self.lr_at(self.step_count)
        seeds = self.seeds.draw()
        if self.data_parallel is not None:  # this worker's part of the global batch
            batch = self.data_parallel.shard(batch, self.step_count)
            next_batch = self.data_parallel.shard(next_batch, self.step_count + 1) if next_batch is not None else None
        measured = self._measure(batch, seeds)
        losses = measured.losses
        try:
            if self.data_parallel is not None:  # the whole step's losses, weighted by the terms each shard averages
                losses = self.data_parallel.combine_losses(losses, self.objective.loss_weight(batch) if batch else 0.0)
            _check_finite(losses, self.step_count)
        except BaseException:
            self.tensors.move(measured.owed)  # the weights are those before this step
            raise
        grads, curvatures = self.estimator.gradients(losses), self.estimator.curvatures(losses)
        # The next step's first +eps pass, done in this one's update pass (only when this step owes
        # the weights a pass anyway: the add/subtract restore).
        ahead = self.estimator.look_ahead(self.seeds.peek()[0]) \
            if measured.owed and next_batch and self.update.looks_ahead else []
        self.update.apply(self.trajectory.steps, seeds, grads, lr, before=measured.owed, after=ahead,
                          curvatures=curvatures)
        self.trainable.after_update()
        self.step_count += 1
        self.trajectory.append(seeds, grads, curvatures)
        return StepResult(loss=self.estimator.step_loss(losses), projected_grads=grads,
                          seeds=seeds, lr=lr, metrics=measured.metrics)

    def state_dict(self) -> dict:
        """Where the trainer is besides its weights: the step count and the step-seed RNG."""
        return {"step": self.step_count, "seed_rng": self.seeds.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Go on from ``state`` (a :meth:`state_dict`; the weights must be those of that step): the
        trajectory is cut back to it."""
        self.step_count = state["step"]
        self.seeds.load_state_dict(state["seed_rng"])
        self.trajectory.truncate(state["step"])

    @torch.no_grad()
    def settle(self) -> None:
        """Take off the next step's +eps perturbation that :meth:`step` put on ahead, if any: the
        weights become the trained ones. Putting z on and taking it off rounds, so the trajectory
        records it (:attr:`Trajectory.settled`) and replay repeats it."""
        seed = self.estimator.settle()
        if seed is not None:
            self._record_settled(seed)

    def _record_settled(self, seed: int) -> None:
        self.trainable.after_update()
        self.trajectory.settled.append((len(self.trajectory.steps), seed))

    # ---- evaluation, saving, the loop ---------------------------------------------------------

    @property
    def eval_batch_size(self) -> int:
        """Examples per forward of an evaluation (and of any unperturbed pass over a data set)."""
        return max(self.config.batch_size, 16)

    def evaluation(self, examples: Sequence[Any], batch_size: Optional[int] = None) -> Evaluation:
        """An evaluation of ``examples`` (encoded) at the trained weights, run a chunk at a time."""
        return Evaluation(self, self.objective, examples, batch_size or self.eval_batch_size, self.trainable.lora_id)

    @torch.no_grad()
    def evaluate(self, examples: Sequence[Any], batch_size: Optional[int] = None) -> dict:
        """Loss and metrics over ``examples`` (rows the objective encodes) at the current weights."""
        return self.evaluation(self.objective.encode(examples), batch_size).run()

    def save(self, directory: Optional[str] = None, trajectory: Optional[Trajectory] = None) -> Optional[str]:
        """Save the adapter (PEFT format; loads in PEFT and SGLang ``--lora-paths``) and the run's
        trajectory (``trajectory``: another record that replays to these weights, an earlier
        checkpoint's put back). Full-weight runs save the trajectory only."""
        directory = directory or self.config.output_dir
        if directory is None:
            return None
        self.settle()
        if "sha256" not in self.trajectory.model:
            self.trajectory.model["sha256"] = weights_hash(self.model_path)
        atomic_json(os.path.join(directory, TRAJECTORY_FILE), (trajectory or self.trajectory).to_dict())
        return self.trainable.save(directory)

    @torch.no_grad()
    def restore_weights(self, checkpoint: str, trajectory: Trajectory) -> None:
        """Put the weights of ``checkpoint`` (a folder :meth:`save` wrote) in place: a LoRA adapter is
        copied in; full weights, which a checkpoint does not hold, are rebuilt from the base model
        by replaying ``trajectory`` (this trainer must not have stepped yet)."""
        self.settle()
        if trajectory.tensor_names != self.trainable.names:
            raise ValueError(f"the checkpoint in {checkpoint} trains other tensors than this trainer "
                             f"({len(trajectory.tensor_names)} vs {len(self.trainable.names)})")
        if self.trainable.holds_weights():
            self.trainable.load(checkpoint)
        else:
            if self.step_count:
                raise RuntimeError("replaying a trajectory needs the starting weights: a fresh trainer")
            replay_steps(trajectory.steps, self.config, self.tensors.tensors, self.tensors.decay,
                         self.tensors.generators, self.tensors.layouts, restore=trajectory.restore,
                         noise=trajectory.noise, settled=trajectory.settled, lr_scales=trajectory.lr_scales)
        self.update.rebuild(trajectory.steps, trajectory.curvatures)  # Adam's moments, HiZOO's H: from the record
        self.trainable.after_update()

    def start_run(self, train_data: Sequence[Any], eval_data: Optional[Sequence[Any]] = None, *,
                  callbacks=None) -> MeZORun:
        """A :class:`~sglang.srt.mezo.training.run.MeZORun` of this trainer, to advance a unit at a time
        (the rows are encoded by the objective first)."""
        return MeZORun(self, self.objective.encode(train_data), self.objective.encode(eval_data or []),
                       callbacks=callbacks)

    def train(self, train_data: Sequence[Any], eval_data: Optional[Sequence[Any]] = None) -> dict:
        """Run ``config.num_steps`` MeZO steps on batches drawn from ``train_data``; evaluate on
        ``eval_data`` before the first step (``config.eval_at_start``), every ``config.eval_steps``
        and at the end, saving at each evaluation after the start."""
        return self.start_run(train_data, eval_data).run_to_end()

    def close(self) -> None:
        """Unload this trainer's adapters from the runner's LoRA pool (a runner it was handed keeps
        running; one it built is released with :func:`~sglang.srt.mezo.engine.runner.release_model_runner`)."""
        self.settle()  # full weights: the runner's model goes back with the trained weights
        self.trainable.close()


def _check_finite(losses: Sequence[tuple[float, float]], step: int) -> None:
    for lp, lm in losses:
        if not (math.isfinite(lp) and math.isfinite(lm)):
            raise MeZODivergedError(f"loss is not finite at step {step} (L+={lp}, L-={lm}); the weights "
                                    "are those before this step. Lower learning_rate or epsilon.")
