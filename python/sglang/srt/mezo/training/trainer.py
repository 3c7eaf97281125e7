"""MeZO (zeroth-order SPSA) fine-tuning on SGLang's own forward path.

One step, for trainable tensors theta (a LoRA adapter in SGLang's memory pool, or every weight):
draw a seed; regenerate z ~ N(0, I) from it tensor by tensor; L+ = loss(theta + eps z);
L- = loss(theta - eps z); restore theta bit for bit; g = (L+ - L-) / (2 eps);
theta -= lr * (g z + wd theta). Forwards only, no autograd, no optimizer state, and z is never
stored, so training costs what inference costs. How z is drawn and how weights move (a chunk at a
time, every pass through one function) is :mod:`sglang.srt.mezo.zo.noise`.

With LoRA, the +eps and -eps passes are one forward: SGLang's LoRA manager serves each sequence of
a batch with its own adapter, so theta + eps z and theta - eps z sit in two pool slots and every
example runs once on each. ``split_batch`` takes that further: n directions z_1..z_n (n-SPSA)
get a slot pair each and direction k is measured on part k of the batch, so one forward of the
batch gives n projected gradients instead of one.

Example (a tiny next-token task; any Llama/Qwen2 checkpoint path works):
    >>> from sglang.srt.mezo_trainer import MeZOConfig, MeZOTrainer  # doctest: +SKIP
    >>> trainer = MeZOTrainer("smollm2-135m", MeZOConfig(num_steps=100, learning_rate=1e-3, epsilon=1e-2))  # doctest: +SKIP
    >>> ids = trainer.tokenizer.encode("The sky is")  # doctest: +SKIP
    >>> trainer.train([(ids, trainer.tokenizer.encode(" green")[0])])  # doctest: +SKIP
    {'steps': 100, 'train_loss': [...], 'adapter_path': None, ...}
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import random
import tempfile
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence

import torch

from sglang.srt.mezo.engine.forward import ExtendForward
from sglang.srt.mezo.engine.generate import GreedyGenerator
from sglang.srt.mezo.engine.hardware import AUTO_DTYPE, choose_dtype
from sglang.srt.mezo.engine.lora_pool import LoRASettings, PoolLoRA, copies_expected
from sglang.srt.mezo.engine.models import check_model_path, is_masked_lm, model_architectures, resolve_model_path
from sglang.srt.mezo.engine.runner import (
    RunnerSpec,
    build_model_runner,
    release_model_runner,
    resolve_device,
    runner_dtype,
)
from sglang.srt.mezo.errors import MeZODivergedError
from sglang.srt.mezo.io import atomic_json
from sglang.srt.mezo.spec.config import MeZOConfig
from sglang.srt.mezo.training.objectives.base import (
    ForwardInputs,
    GenerationInputs,
    GenerativeObjective,
    Objective,
    RewardObjective,
)
from sglang.srt.mezo.training.objectives.next_token import NextTokenObjective
from sglang.srt.mezo.training.run import MeZORun, rng_state, set_rng_state
from sglang.srt.mezo.training.trainable import FullWeights, LoRAWeights
from sglang.srt.mezo.zo.adam import ZOAdam
from sglang.srt.mezo.zo.noise import AddZ, NoiseKind, Op, draw_z, move
from sglang.srt.mezo.zo.trajectory import FILE as TRAJECTORY_FILE
from sglang.srt.mezo.zo.trajectory import Trajectory, weights_hash
from sglang.srt.mezo.zo.update import (
    UpdateRule,
    decay_mask,
    learning_rate_at,
    replay_steps,
    split_evenly,
    step_ops,
    z_scored,
)

logger = logging.getLogger(__name__)


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

    def __init__(
        self,
        model_path: Optional[str] = None,
        config: Optional[MeZOConfig] = None,
        *,
        runner=None,
        tokenizer=None,
        objective: Optional[Objective] = None,
        kind: Optional[str] = None,
        data_parallel: Optional[DataParallel] = None,
    ):
        config = config or MeZOConfig()
        if runner is None and kind is None:  # a plan hands in the path it resolved and checked
            model_path = resolve_model_path(model_path or config.model_path)
            check_model_path(model_path)
        self.model_path = model_path if runner is None else runner.server_args.model_path
        self.objective: Objective = objective or NextTokenObjective()
        self.data_parallel = data_parallel
        kind = kind or ("masked" if is_masked_lm(model_architectures(self.model_path)) else "causal")
        masked = kind == "masked"
        # Hyperparameters left to their defaults depend on the kind of model: resolved once, here.
        self.config = config = config.resolve(kind)
        if runner is not None:  # a runner the run does not own sets the dtype (a server's, say)
            config = self.config = dataclasses.replace(config, dtype=runner_dtype(runner))
        elif config.dtype == AUTO_DTYPE:  # a plan has chosen already; a trainer built by hand chooses here
            choice = choose_dtype(config.dtype, resolve_device(config.device))
            logger.info("dtype %s", choice.reason)
            config = self.config = dataclasses.replace(config, dtype=choice.dtype)
        if runner is None:
            use_lora = config.trainable == "lora"
            runner = build_model_runner(
                RunnerSpec(
                    model_path=model_path,
                    device=config.device,
                    dtype=config.dtype,
                    max_total_tokens=config.max_total_tokens,
                    lora_rank=config.lora_rank if use_lora else None,
                    lora_target_modules=list(config.lora_target_modules) if use_lora else None,
                    # Slot 0 is the base model; each direction's +/- eps adapters take two more.
                    max_loras_per_batch=1 + 2 * config.directions_per_forward,
                    is_embedding=masked,
                    seed=config.seed,
                )
            )
            try:
                self._set_up(runner, tokenizer)
            except BaseException:
                release_model_runner(runner)  # one runner per process: a trainer that failed must not keep it
                raise
        else:
            self._set_up(runner, tokenizer)

    def _set_up(self, runner, tokenizer) -> None:
        config = self.config
        self.runner = runner
        self.forward = ExtendForward(runner)
        self._generator: Optional[GreedyGenerator] = None  # built on the first generative evaluation
        self._step_metrics: dict = {}
        self._tokenizer = tokenizer
        self.trainable = self._make_trainable()
        self.decay = decay_mask(self.trainable.names)
        self._generators: dict = {}  # mezo_noise's generators and chunk buffers, kept across steps
        self.noise: NoiseKind = config.noise
        # How theta comes back after the -eps pass; replay repeats an add/subtract restore's arithmetic.
        self.restore = "exact" if config.exact_restore or self.trainable.paired else "add-subtract"
        self.update_rule = UpdateRule(config.update_rule)
        self.adam = ZOAdam(self.trainable.tensors) if config.update_rule == "adam" else None
        self._seed_rng = random.Random(config.seed)
        # The seed whose +eps z the last step's update pass already put on the weights, for the step
        # after it (see :meth:`step`'s ``next_batch``); None: the weights are the trained ones.
        self._ahead: Optional[int] = None
        self.step_count = 0
        self.trajectory = Trajectory(  # (seeds, g) per step: with the start, the whole run
            tensor_names=list(self.trainable.names), tensor_shapes=[list(t.shape) for t in self.trainable.tensors],
            dtype=config.dtype, device_type=self.runner.device if isinstance(self.runner.device, str)
            else self.runner.device.type, n_spsa=config.n_spsa, model={"path": self.model_path},
            config=config.to_dict(), start=self.trainable.start(), restore=self.restore, noise=self.noise)

    # ---- set-up -------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        return self._tokenizer

    def _make_trainable(self):
        cfg = self.config
        if cfg.trainable == "full":
            return FullWeights(self.runner.model)
        if getattr(self.runner, "lora_manager", None) is None:
            raise ValueError(
                "trainable='lora' needs a ModelRunner started with LoRA enabled "
                "(enable_lora, max_lora_rank >= lora_rank, the target modules)"
            )
        settings = LoRASettings(cfg.lora_rank, cfg.lora_alpha, tuple(cfg.lora_target_modules), cfg.seed)
        if cfg.output_dir is None:
            # SGLang loads an adapter from a folder; without an output folder, a temporary one that
            # goes away with the trainer (the adapter lives on in the pool and its host copy).
            self._scratch = tempfile.TemporaryDirectory(prefix="sglang-mezo-")
        init_dir = os.path.join(cfg.output_dir or self._scratch.name, "adapter_init")
        name = f"mezo-{os.getpid()}-{id(self)}"
        paired = self._wants_paired_forward()
        lora = PoolLoRA.create(
            self.runner, settings, name, init_dir, self.model_path, init_from=cfg.init_adapter
        )
        minus, probes = None, []
        with copies_expected():  # slots that hold perturbed copies of the adapter, loaded from its folder
            if paired:
                minus = PoolLoRA.create(
                    self.runner, settings, f"{name}-minus", init_dir, self.model_path, init_from=lora.ref.lora_path
                )
            probes = [tuple(PoolLoRA.create(self.runner, settings, f"{name}-{sign}{k}", init_dir, self.model_path,
                                            init_from=lora.ref.lora_path) for sign in ("plus", "minus"))
                      for k in range(1, cfg.directions_per_forward)]
        return LoRAWeights(lora, minus, top_layers=cfg.lora_layers, freeze_a=cfg.freeze_lora_a, probes=probes)

    def _wants_paired_forward(self) -> bool:
        if self.config.paired_forward is False:
            return False
        # Slot 0 is the base model; the adapter and its minus twin need two more that stay theirs
        # (pinned). Adapters a server loaded without pinning can be evicted, so they do not count.
        manager = self.runner.lora_manager
        free = manager.max_loras_per_batch - 1 - manager.num_pinned_loras
        # A subclass that overrides compute_loss as a whole cannot have its two passes merged.
        split_hooks = type(self).compute_loss is MeZOTrainer.compute_loss
        if self.config.directions_per_forward > 1:
            needed = 2 * self.config.n_spsa
            mode = "split_batch" if self.config.split_batch else "reward_shaping='z-score'"
            if not (free >= needed and split_hooks):
                raise ValueError(
                    f"{mode} with n_spsa={self.config.n_spsa} needs {needed} free LoRA slots (this runner "
                    f"has {free}: max_loras_per_batch >= {needed + 1} with no other adapter pinned) and an "
                    f"objective whose loss comes from one forward (no compute_loss override); lower n_spsa or turn {mode} off"
                )
            return True
        if self.config.paired_forward and not (free >= 2 and split_hooks):
            raise ValueError(
                "paired_forward=True needs two free LoRA slots (max_loras_per_batch >= 3 with no other "
                "adapter pinned) and an objective whose loss comes from one forward (no compute_loss override)"
            )
        return free >= 2 and split_hooks

    # ---- objective (hooks for subclasses) -----------------------------------------------------

    def logits(self, sequences: Sequence[Sequence[int]], positions: Sequence[int], vocab_ids=None,
               lora_ids: Optional[Sequence[Optional[str]]] = None):
        """Logits at ``positions`` of ``sequences`` under the current (possibly perturbed) weights."""
        if self._ahead is not None:  # a forward between steps sees the trained weights
            self.settle()
        if lora_ids is None:
            lora_ids = [self.trainable.lora_id] * len(sequences)
        # An objective whose sequences share prefixes turns sharing on; otherwise the forward's own setting.
        share = True if self.objective.shares_prefixes else None
        return self.forward(sequences, positions, vocab_ids, lora_ids, share_prefixes=share)

    def logits_for(self, inputs: ForwardInputs) -> torch.Tensor:
        """The logits an objective's :class:`ForwardInputs` ask for, at the current weights."""
        return self.logits(inputs.sequences, inputs.positions, inputs.vocab_ids)

    def generate(self, inputs: GenerationInputs) -> list[list[int]]:
        """Greedy answers through SGLang (prefill, then decode with the KV cache) at the trained
        weights: a perturbation a step left in place comes off first."""
        if self._ahead is not None:
            self.settle()
        return self._answer(inputs, [self.trainable.lora_id] * len(inputs.prompts))

    def compute_loss(self, batch: Sequence[Any]) -> float:
        """The objective's loss on ``batch`` (encoded items) at the current weights (a reward
        objective: minus the mean reward of answers generated now)."""
        objective = self.objective
        if isinstance(objective, RewardObjective):
            inputs = objective.generation_inputs(batch)
            generated = self._answer(inputs, [self.trainable.lora_id] * len(batch), self.config.temperature,
                                     self._sample_seeds(inputs.prompts))
            return objective.reward_loss(objective.grade(generated, batch))
        return objective.loss(self.logits_for(objective.forward_inputs(batch)), batch)

    def predict(self, batch: Sequence[Any]) -> tuple[list, list]:
        """The objective's (predictions, references) for ``batch`` at the current weights."""
        return self.objective.predict(self.logits_for(self.objective.forward_inputs(batch)), batch)

    # ---- the MeZO step --------------------------------------------------------------------------

    def _z(self, step_seed: int, index: int, tensor: torch.Tensor) -> torch.Tensor:
        layouts = self.trainable.layouts
        return draw_z(step_seed, index, tensor, self._generators, layouts[index] if layouts else None, self.noise)

    def _move(self, ops: Sequence[Op]) -> None:
        move(self.trainable.tensors, ops, self.decay, self._generators, self.trainable.layouts, self.noise)

    def _perturb(self, step_seed: int, scale: float) -> None:
        self._move([AddZ(step_seed, scale)])

    def _copy_back(self, snapshot: list[torch.Tensor]) -> None:
        for t, s in zip(self.trainable.tensors, snapshot):
            t.copy_(s)

    def lr_at(self, step: int) -> float:
        return learning_rate_at(self.config, step, self.trajectory.lr_scales)

    def scale_learning_rate(self, factor: float) -> None:
        """Multiply the learning rate of every step from now on by ``factor`` (a divergence
        reaction); the trajectory records it, so resume and replay follow it."""
        self.trajectory.lr_scales.append((self.step_count, factor))

    @torch.no_grad()
    def projected_gradient(self, batch: Sequence[Any], step_seed: int) -> tuple[float, float, float]:
        """(g, L+, L-) for one seed; theta is bitwise unchanged afterwards (with exact_restore)."""
        loss_plus, loss_minus = self.perturbed_losses(batch, step_seed)
        return (loss_plus - loss_minus) / (2 * self.config.epsilon), loss_plus, loss_minus

    @torch.no_grad()
    def perturbed_losses(self, batch: Sequence[Any], step_seed: int) -> tuple[float, float]:
        """(L+, L-): the loss on ``batch`` at theta + eps z and at theta - eps z; theta is bitwise
        unchanged afterwards (with exact_restore)."""
        return self._perturbed_losses(batch, step_seed, restore=True)

    def _perturbed_losses(self, batch: Sequence[Any], step_seed: int, restore: bool) -> tuple[float, float]:
        # restore=False (add/subtract restore only): theta is left at theta - eps z, for the
        # caller to undo together with the update, in the same pass over the weights.
        if self.trainable.paired:
            return self._paired_losses(batch, step_seed)
        eps = self.config.epsilon
        snapshot = [t.clone() for t in self.trainable.tensors] if self.config.exact_restore else None
        if self._ahead == step_seed:  # the last step's update pass put theta + eps z on already
            self._ahead = None
        else:
            self._perturb(step_seed, eps)
        loss_plus = self.compute_loss(batch)
        if snapshot is None:
            self._perturb(step_seed, -2 * eps)
        else:
            self._copy_back(snapshot)
            self._perturb(step_seed, -eps)
        loss_minus = self.compute_loss(batch)
        if snapshot is not None:
            self._copy_back(snapshot)
        elif restore:
            self._perturb(step_seed, eps)
        return loss_plus, loss_minus

    def _paired_losses(self, batch: Sequence[Any], step_seed: int) -> tuple[float, float]:
        return self._split_losses(batch, [step_seed])[0]  # one direction: the whole batch is its part

    def _split_losses(self, batch: Sequence[Any], seeds: Sequence[int],
                      whole: bool = False) -> list[tuple[float, float]]:
        """(L+, L-) of direction k = seed k on its own part k of ``batch``, for every k, from one
        forward over the batch (a reward objective: one generation): each example runs once at
        theta + eps z_k and once at theta - eps z_k, on the slots of its direction. ``whole``: every
        direction's part is the whole batch (ES's population). The adapter's slot is restored from
        a copy (bitwise exact)."""
        if not whole and len(batch) < len(seeds):  # a data-parallel worker's share of the batch, say
            raise ValueError(f"split_batch: a batch of {len(batch)} examples cannot give each of n_spsa={len(seeds)} "
                             "directions its own; raise batch_size or lower n_spsa")
        eps = self.config.epsilon
        theta = [t.clone() for t in self.trainable.tensors]
        parts = [range(len(batch))] * len(seeds) if whole else split_evenly(len(batch), len(seeds))
        slots = []  # (plus id, minus id) per direction
        try:
            for seed, ((plus_id, plus), (minus_id, minus)) in zip(seeds, self.trainable.probe_slots):
                for i, (t, p, m) in enumerate(zip(theta, plus, minus)):
                    z = self._z(seed, i, t)
                    m.copy_(t).add_(z, alpha=-eps)
                    p.copy_(t).add_(z, alpha=eps)
                slots.append((plus_id, minus_id))
            if isinstance(self.objective, RewardObjective):
                return self._graded_sides(batch, parts, slots)
            return self._forward_sides(batch, parts, slots)
        finally:
            self._copy_back(theta)

    def _forward_sides(self, batch: Sequence[Any], parts: list, slots: list) -> list[tuple[float, float]]:
        """(L+, L-) per direction from one forward: part k's sequences on direction k's two slots."""
        inputs = self.objective.forward_inputs(batch)
        counts = inputs.row_counts()
        sequences, positions, plus_ids, minus_ids, part_rows = [], [], [], [], []
        for rows, (plus_id, minus_id) in zip(parts, slots):
            seqs = inputs.sequences_of(rows)
            sequences += [inputs.sequences[i] for i in seqs]
            positions += [inputs.positions[i] for i in seqs]
            plus_ids += [plus_id] * len(seqs)
            minus_ids += [minus_id] * len(seqs)
            part_rows.append(sum(counts[i] for i in seqs))
        n = sum(part_rows)  # logits rows of one side
        logits = self.logits(sequences * 2, positions * 2, inputs.vocab_ids, plus_ids + minus_ids)
        losses, start = [], 0
        for rows, n_rows in zip(parts, part_rows):
            part = [batch[r] for r in rows]
            end = start + n_rows
            losses.append((self.objective.loss(logits[start:end], part),
                           self.objective.loss(logits[n + start:n + end], part)))
            start = end
        if len(parts) == 1:  # one direction: both sides saw the whole batch
            sides = [self.objective.train_metrics(logits[:n], batch), self.objective.train_metrics(logits[n:], batch)]
            self._step_metrics = {k: (sides[0][k] + sides[1][k]) / 2 for k in sides[0]}
        return losses

    def _graded_sides(self, batch: Sequence[Any], parts: list, slots: list) -> list[tuple[float, float]]:
        """(L+, L-) per direction of a reward objective: every prompt of part k answered on direction
        k's two slots in one generation (a sampling seed per prompt, the same on both sides), graded."""
        objective: RewardObjective = self.objective
        inputs = objective.generation_inputs(batch)
        prompts, plus_ids, minus_ids, seeds = [], [], [], []
        for rows, (plus_id, minus_id) in zip(parts, slots):
            part_prompts = [inputs.prompts[r] for r in rows]
            prompts += part_prompts
            plus_ids += [plus_id] * len(rows)
            minus_ids += [minus_id] * len(rows)
            seeds += self._sample_seeds(part_prompts)
        n = len(prompts)
        generated = self._answer(inputs._replace(prompts=prompts * 2), plus_ids + minus_ids, self.config.temperature,
                                 seeds * 2)
        losses, start, rewards = [], 0, []
        for rows in parts:
            part = [batch[r] for r in rows]
            end = start + len(rows)
            sides = [objective.grade(generated[a:b], part) for a, b in ((start, end), (n + start, n + end))]
            rewards += sides[0] + sides[1]
            losses.append((objective.reward_loss(sides[0]), objective.reward_loss(sides[1])))
            start = end
        self._step_metrics = {"train_reward_mean": sum(rewards) / max(len(rewards), 1)}
        return losses

    def _sample_seeds(self, prompts: Sequence[Sequence[int]]) -> list[int]:
        """One sampling seed per prompt of this step: the +eps and -eps answers to a prompt draw
        alike, so their rewards differ by what the perturbation changed, not by sampling noise. The
        seed is keyed on the prompt's ids, not its row, so a data-parallel worker's shard draws what
        one process does (a prompt given twice in a batch draws alike)."""
        return [random.Random(f"{self.config.seed}:{self.step_count}:"
                              f"{hashlib.sha256(repr(list(p)).encode()).hexdigest()}").randrange(2**63)
                for p in prompts]

    def _answer(self, inputs: GenerationInputs, lora_ids: list, temperature: float = 0.0,
                seeds: Optional[list] = None) -> list[list[int]]:
        """Answers to ``inputs`` on the given adapters (greedy, or sampled with one seed per prompt)."""
        if self._generator is None:
            self._generator = GreedyGenerator(self.runner)
        return self._generator(inputs.prompts, max_new_tokens=inputs.max_new_tokens,
                               stop_token_ids=inputs.stop_token_ids, lora_ids=lora_ids, temperature=temperature,
                               sample_seeds=seeds)

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
        seeds = [self._seed_rng.randrange(2**62) for _ in range(self.config.n_spsa)]
        if self.data_parallel is not None:  # this worker's part of the global batch
            batch = self.data_parallel.shard(batch, self.step_count)
            next_batch = self.data_parallel.shard(next_batch, self.step_count + 1) if next_batch is not None else None
        if self._ahead is not None and (self._ahead != seeds[0] or not batch):
            self.settle()  # the steps did not go as announced (a seed state set by hand, say)
        # Add/subtract restore: the last seed's +eps z restore waits for the update's pass (z drawn
        # 3 times a step instead of 4); replay repeats the same arithmetic (restore_ops).
        pending = AddZ(seeds[-1], self.config.epsilon) if self.restore == "add-subtract" and batch else None
        self._step_metrics = {}
        population = self.config.reward_shaping == "z-score"
        if (self.config.split_batch or population) and batch:
            pending = None  # the adapter's slot never moves: the directions live in slots of their own
            losses = self._split_losses(batch, seeds, whole=population)
        else:
            losses = [self._perturbed_losses(batch, s, restore=pending is None or k < len(seeds) - 1)
                      if batch else (0.0, 0.0) for k, s in enumerate(seeds)]
        try:
            losses = self.combine_losses(losses, self.objective.loss_weight(batch) if batch else 0.0)
            for lp, lm in losses:
                if not (math.isfinite(lp) and math.isfinite(lm)):
                    raise MeZODivergedError(
                        f"loss is not finite at step {self.step_count} (L+={lp}, L-={lm}); the weights "
                        "are those before this step. Lower learning_rate or epsilon."
                    )
        except BaseException:
            if pending is not None:
                self._move([pending])
            raise
        if population:
            grads = [(zp - zm) / 2 for zp, zm in z_scored(losses)]
        else:
            grads = [(lp - lm) / (2 * self.config.epsilon) for lp, lm in losses]
        past = self.trajectory.steps
        coefficients = self.update_rule.coefficients(past, len(past), grads)
        # The next step's first +eps pass, done in this one (pending is set exactly when the restore
        # is add/subtract and this step's directions moved the trainable tensors themselves).
        ahead = self._next_seeds()[0] if pending is not None and next_batch and self.adam is None else None
        if self.adam is not None:
            if pending is not None:
                self._move([pending])
            self.adam.step(self.trainable.tensors, seeds, grads, lr=lr, weight_decay=self.config.weight_decay,
                           decay=self.decay, z=self._z)
        else:
            ops = step_ops(seeds, coefficients, lr, self.config.weight_decay, restore=pending)
            self._move(ops + ([AddZ(ahead, self.config.epsilon)] if ahead is not None else []))
        self._ahead = ahead
        self.trainable.after_update()
        self.step_count += 1
        self.trajectory.append(seeds, grads)
        return StepResult(loss=sum(lp + lm for lp, lm in losses) / (2 * len(losses)), projected_grads=grads,
                          seeds=seeds, lr=lr, metrics=self._step_metrics)

    def state_dict(self) -> dict:
        """Where the trainer is besides its weights: the step count and the step-seed RNG."""
        return {"step": self.step_count, "seed_rng": rng_state(self._seed_rng)}

    def load_state_dict(self, state: dict) -> None:
        """Go on from ``state`` (a :meth:`state_dict`; the weights must be those of that step): the
        trajectory is cut back to it."""
        self.step_count = state["step"]
        set_rng_state(self._seed_rng, state["seed_rng"])
        self.trajectory.truncate(state["step"])

    def _next_seeds(self) -> list[int]:
        # The seeds the next step will draw, without drawing them (the run's saved RNG state stays put).
        rng = random.Random()
        rng.setstate(self._seed_rng.getstate())
        return [rng.randrange(2**62) for _ in range(self.config.n_spsa)]

    @torch.no_grad()
    def settle(self) -> None:
        """Take off the next step's +eps perturbation that :meth:`step` put on ahead, if any: the
        weights become the trained ones. Putting z on and taking it off rounds, so the trajectory
        records it (:attr:`Trajectory.settled`) and replay repeats it."""
        if self._ahead is None:
            return
        seed, self._ahead = self._ahead, None
        self._move([AddZ(seed, -self.config.epsilon)])
        self.trainable.after_update()
        self.trajectory.settled.append((len(self.trajectory.steps), seed))

    def combine_losses(self, losses: list[tuple[float, float]], weight: float) -> list[tuple[float, float]]:
        """(L+, L-) per seed of this process's batch -> those of the whole step's batch. One
        process: as they are; data-parallel workers average theirs, weighted by how many terms each
        loss averages (:meth:`Objective.loss_weight`: examples, or a completion's target tokens;
        :meth:`~sglang.srt.mezo.parallel.data_parallel.DataParallelGroup.combine_losses`)."""
        if self.data_parallel is None:
            return losses
        return self.data_parallel.combine_losses(losses, weight)

    # ---- evaluation, saving, the loop ---------------------------------------------------------

    @property
    def eval_batch_size(self) -> int:
        """Examples per forward of an evaluation (and of any unperturbed pass over a data set)."""
        return max(self.config.batch_size, 16)

    def evaluation(self, examples: Sequence[Any], batch_size: Optional[int] = None) -> "Evaluation":
        """An evaluation of ``examples`` at the current weights, run a chunk at a time."""
        return Evaluation(self, examples, batch_size or self.eval_batch_size)

    @torch.no_grad()
    def evaluate(self, examples: Sequence[Any], batch_size: Optional[int] = None) -> dict:
        """Loss and metrics over ``examples`` (rows the objective encodes) at the current weights."""
        evaluation = self.evaluation(self.objective.encode(examples), batch_size)
        while not evaluation.done:
            evaluation.advance()
        return evaluation.metrics()

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
            replay_steps(trajectory.steps, self.config, self.trainable.tensors, self.decay, self._generators,
                         self.trainable.layouts, restore=trajectory.restore,
                         noise=trajectory.noise, settled=trajectory.settled, lr_scales=trajectory.lr_scales)
        if self.adam is not None:  # Adam's moments follow from the record alone
            self.adam.rebuild(trajectory.steps, self.trainable.tensors, self._z)
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
        running; one it built is released with ``mezo_runner.release_model_runner``)."""
        self.settle()  # full weights: the runner's model goes back with the trained weights
        self.trainable.close()


class Evaluation:
    """One pass over evaluation examples at the current weights, one chunk per :meth:`advance`."""

    def __init__(self, trainer: MeZOTrainer, examples: Sequence[Any], batch_size: int):
        self.trainer, self.examples, self.batch_size = trainer, examples, batch_size
        self.cursor, self.loss_sum, self.predictions, self.references = 0, 0.0, [], []
        self.answers: list[str] = []
        self.answer_references: list = []

    @property
    def done(self) -> bool:
        return self.cursor >= len(self.examples)

    @torch.no_grad()
    def advance(self) -> None:
        chunk = self.examples[self.cursor : self.cursor + self.batch_size]
        objective = self.trainer.objective
        if isinstance(objective, RewardObjective):  # graded answers at the trained weights, greedy
            answers, references = objective.answers(self.trainer.generate(objective.generation_inputs(chunk)), chunk)
            rewards = objective.rewards(answers, chunk)
            self.loss_sum += objective.reward_loss(rewards) * len(chunk)
            self.predictions += rewards
            self.answers += answers
            self.answer_references += references
            self.cursor += len(chunk)
            return
        logits = self.trainer.logits_for(objective.forward_inputs(chunk))
        self.loss_sum += objective.eval_loss(logits, chunk) * len(chunk)
        predictions, references = objective.predict(logits, chunk)
        self.predictions += predictions
        self.references += references
        if isinstance(objective, GenerativeObjective) and objective.generates(chunk):
            answers, references = objective.answers(self.trainer.generate(objective.generation_inputs(chunk)), chunk)
            self.answers += answers
            self.answer_references += references
        self.cursor += len(chunk)

    def metrics(self) -> dict:
        objective = self.trainer.objective
        result = {"eval_loss": self.loss_sum / max(len(self.examples), 1),
                  **objective.metrics(self.predictions, self.references)}
        if self.answers:
            result.update(objective.generation_metrics(self.answers, self.answer_references))
        return result
