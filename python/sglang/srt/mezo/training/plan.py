"""A run from its spec to its result, top to bottom: the data path from a file row to a loss.

1. a :class:`~sglang.srt.mezo.run_spec.config.MeZOConfig` (the run spec) says what to do;
2. :func:`prepare` resolves it once, without building a model: the model's path and kind and the
   defaults for it, the prompt (checked against the tokenizer), the data (rows read and sampled by
   :mod:`sglang.srt.mezo.data`), each example encoded into token ids and the position to read
   (:mod:`sglang.srt.mezo.data.prompt`);
3. :func:`start_run` builds the spec's objective (:func:`~sglang.srt.mezo.training.objectives.objective_for`)
   and a :class:`~sglang.srt.mezo.training.trainer.MeZOTrainer` on an SGLang ModelRunner (a new one,
   or one it is handed, e.g. a live server's), and returns a
   :class:`~sglang.srt.mezo.training.run.MeZORun` that advances a unit at a time;
4. each MeZO step asks SGLang for what the objective needs: for the label-word objective the label
   words' logits at one position per prompt, never a full-vocabulary row
   (:meth:`~sglang.srt.mezo.training.objectives.label_words.LabelWordObjective.forward_inputs`);
5. the objective's loss from those logits: cross-entropy over the label words, or minus accuracy,
   the paper's non-differentiable option
   (:meth:`~sglang.srt.mezo.training.objectives.label_words.LabelWordObjective.loss`).

:func:`run` does 3 to the end; :func:`~sglang.srt.mezo.training.finetune.mezo_mlm_finetune` is 1 to
the end in one call; the CLI is ``python -m sglang.srt.mezo_mlm_trainer --help``, its flags made
from the run spec's fields.

Example (SmolLM2-135M, 16-shot SST-2, the calibrated LoRA defaults)::

    >>> from sglang.srt.mezo_mlm_trainer import MLMConfig, mezo_mlm_finetune
    >>> result = mezo_mlm_finetune(model_path="smollm2-135m", task_name="sst-2",
    ...                            num_steps=1000, output_dir="runs/sst2")  # doctest: +SKIP
    >>> result["zero_shot_accuracy"], result["eval_accuracy"]  # doctest: +SKIP
    (0.52, 0.76)  # about what the calibration in the project notes reached on the full dev set
    >>> MLMConfig(template="It was [MASK].", label_word_mapping={0: "terrible", 1: "great"})
    MLMConfig(template='It was [MASK].', label_word_mapping={0: 'terrible', 1: 'great'}, use_space_prefix=True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Optional

from transformers import AutoTokenizer

from sglang.srt.mezo.data.objective_table import objective_entry
from sglang.srt.mezo.data.presets import TaskPreset, get_task
from sglang.srt.mezo.data.prompt import MLMConfig, PromptEncoder
from sglang.srt.mezo.data.sampling import (
    DataSource,
    DataSplits,
    completion_splits,
    hold_out,
    holdout_share,
    prepare_splits,
)
from sglang.srt.mezo.engine.hardware import AUTO_DTYPE, DtypeChoice, choose_dtype
from sglang.srt.mezo.engine.models import (
    check_model_path,
    check_trainable,
    model_architectures,
    model_kind,
    resolve_model_path,
)
from sglang.srt.mezo.engine.runner import release_model_runner, resolve_device, runner_dtype
from sglang.srt.mezo.io import atomic_json
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.run_spec.defaults import AUTO, DEFAULTS
from sglang.srt.mezo.training.checkpoints import check_resumable, latest_checkpoint, recorded_config
from sglang.srt.mezo.training.objectives import objective_for
from sglang.srt.mezo.training.objectives.base import ReferenceObjective
from sglang.srt.mezo.training.prompt_search import PromptChoice, search_prompt
from sglang.srt.mezo.training.trainer import DataParallel, MeZOTrainer

logger = logging.getLogger(__name__)


#: Where a run records the prompt it chose (template="auto", label_words="auto", calibrate).
PROMPT_FILE = "prompt.json"
#: Where a run records its objective's reference scores (DPO's log p_ref of every pair).
REFERENCE_FILE = "reference.json"


# ---------------------------------------------------------------- a run: plan, then run
@dataclass
class RunPlan:
    """A run resolved once and checked, ready for a model: what :func:`prepare` returns.

    ``config`` has every default filled in for the model's kind; ``train``/``eval`` are encoded.
    """

    config: MeZOConfig
    model_path: str  # the local folder an alias resolved to, or the path/hub id as given
    kind: str
    preset: TaskPreset
    prompt: Optional[PromptEncoder]  # the label-word prompt; None for the options and completion objectives
    train: list  # batch items of the run's objective (EncodedExample for label words)
    eval: list
    examples: Optional[DataSplits] = None  # the rows behind train/eval, and the k-shot dev split
    tokenizer: Any = None
    prompt_choice: Optional[PromptChoice] = None  # set by start_run when the spec asks for a search
    data_given_in_memory: bool = False
    prepare_time_s: float = 0.0
    resume_from: Optional[str] = None  # the checkpoint a resumed run continues from
    dtype_choice: Optional[DtypeChoice] = None  # the dtype the run uses, and why
    held_out: int = 0  # training rows held out as the validation set (validation_holdout)

    def trainer_config(self) -> MeZOConfig:
        # A zero-shot run writes only its summary: no adapter, metrics or trajectory.
        return self.config if self.config.num_steps > 0 else dataclasses.replace(self.config, output_dir=None)

    @property
    def searches_prompt(self) -> bool:
        c = self.config
        return self.prompt is not None and (c.template == AUTO or c.label_words == AUTO or c.calibrate)

    def use_prompt(self, choice: PromptChoice) -> None:
        """Take ``choice`` as the run's prompt: re-encode the examples with it."""
        self.prompt_choice = choice
        self.prompt = choice.encoder(self.prompt)
        self.train = self.prompt.encode_all(self.examples.train)
        self.eval = self.prompt.encode_all(self.examples.eval) if self.eval else []  # a DP worker evaluates none

    def describe(self) -> dict:
        """What the run used, for its summary."""
        c = self.config
        return {
            "task": self.preset.name, "model_path": c.model_path, "model_kind": self.kind, "objective": c.objective,
            "seed": c.seed,
            "num_train_examples": len(self.train), "num_eval_examples": len(self.eval),
            "held_out_for_validation": self.held_out,
            "hyperparameters": {"trainable": c.trainable, **{k: getattr(c, k) for k in DEFAULTS[("causal", "lora")]}},
            "dtype_choice": None if self.dtype_choice is None else dataclasses.asdict(self.dtype_choice),
            "prompt": self.prompt.describe() if self.prompt is not None else None,
            "prompt_search": self.prompt_choice.to_dict() if self.prompt_choice else None,
            "config": c.to_dict(),
            "data_given_in_memory": self.data_given_in_memory,
        }


def prepare(config: MeZOConfig, train_dataset: DataSource = None, eval_dataset: DataSource = None, *,
            runner=None) -> RunPlan:
    """Resolve ``config`` into a :class:`RunPlan`; builds no model.

    Reads the tokenizer and the model's config, fills in the defaults for its kind, checks the
    prompt (template, one-token label words) and loads, samples and encodes the data. Every
    problem with the input raises here with a message that says what to fix (``ValueError``,
    :class:`DataFormatError`, ``FileNotFoundError``). ``train_dataset``/``eval_dataset``
    (paths or lists of :class:`Example`) take the place of ``config.train_file``/``eval_file``.
    ``runner``: the one :func:`start_run` will be given, if the run does not build its own; the run
    takes that runner's dtype (a resumed run is checked against it, too).

    >>> plan = prepare(MeZOConfig(task="sst-2", num_steps=400))  # doctest: +SKIP
    >>> plan.kind, plan.config.learning_rate, len(plan.train)  # doctest: +SKIP
    ('causal', 0.001, 32)
    """
    started = time.perf_counter()
    preset = get_task(config.task)
    path = resolve_model_path(config.model_path)
    check_model_path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    kind = model_kind(tokenizer, model_architectures(path))
    config = config.resolve(kind)
    dtype_choice = _dtype_choice(config, runner)
    config = dataclasses.replace(config, dtype=dtype_choice.dtype)
    check_trainable(kind, config.trainable)
    entry = objective_entry(config.objective)
    if kind not in entry.model_kinds:
        raise ValueError(f"objective {config.objective!r} scores text a causal LM writes; {config.model_path} is a "
                         f"{kind} LM: use objective 'ce' with one-token label words, or a causal LM" if kind == "masked"
                         else f"objective {config.objective!r} trains {' and '.join(entry.model_kinds)} LMs; "
                         f"{config.model_path} is a {kind} LM")
    # The label-word prompt is checked against the tokenizer before any data is read or model
    # loaded. "auto" parts start as the preset's; start_run searches once a model is there.
    prompt = None
    if entry.label_prompt:
        mlm = MLMConfig(None if config.template == AUTO else config.template,
                        None if config.label_words == AUTO else config.label_words, config.use_space_prefix)
        prompt = PromptEncoder.for_task(tokenizer, kind, preset, mlm)
    in_memory = not isinstance(train_dataset, (str, os.PathLike, type(None))) or \
        not isinstance(eval_dataset, (str, os.PathLike, type(None)))
    sources = (preset, config.train_file if train_dataset is None else train_dataset,
               config.eval_file if eval_dataset is None else eval_dataset)
    sampling = dict(k_shot=config.k_shot, seed=config.seed, max_eval_examples=config.max_eval_examples)
    splits = (prepare_splits(*sources, **sampling) if entry.k_shot == "per_class"
              else completion_splits(*sources, **sampling, read_rows=entry.read_rows))
    train, evals = splits.train, splits.eval
    # Something to watch for divergence and to choose the returned checkpoint by: a run without
    # validation data holds out a slice of its training rows (validation_holdout).
    share = holdout_share(_recorded_holdout(config), train_rows=len(train), has_eval=bool(evals))
    config = dataclasses.replace(config, validation_holdout=share)
    held_out = 0
    if share and not evals and config.num_steps > 0:
        train, evals = hold_out(train, share, config.seed)
        held_out = len(evals)
        splits = splits._replace(train=train, eval=evals)
    if config.num_steps > 0 and not train:
        raise ValueError(f"the training set for task {preset.name!r} is empty: give train_dataset with examples")
    if not evals and config.num_steps == 0:
        raise ValueError("nothing to do: num_steps=0 (zero-shot) needs an eval set with examples")
    if train and config.batch_size > len(train):
        logger.info("batch size %d > %d training examples: every step uses all of them", config.batch_size, len(train))
        config = dataclasses.replace(config, batch_size=len(train))
    plan = RunPlan(config, path, kind, preset, prompt, [], [], examples=splits, tokenizer=tokenizer,
                   data_given_in_memory=in_memory, resume_from=check_resumable(config), dtype_choice=dtype_choice,
                   held_out=held_out)
    # Rows become the objective's batch items here, once: every bad row fails before a model loads.
    encode = prompt.encode_all if prompt is not None else objective_for(plan).encode
    plan.train, plan.eval = encode(train), encode(evals)
    plan.prepare_time_s = time.perf_counter() - started
    logger.info("dtype %s", dtype_choice.reason)
    logger.info("%s (%s LM), task %s: %d train / %d eval examples, %s", config.model_path, kind, preset.name,
                len(plan.train), len(plan.eval), plan.describe()["hyperparameters"])
    return plan


def _resumed_setting(config: MeZOConfig, name: str) -> Any:
    """What a run being resumed recorded for setting ``name`` (older records: what they ran with);
    None when the spec does not resume a run that has a checkpoint."""
    checkpoint = latest_checkpoint(config.output_dir) if config.resume and config.output_dir else None
    return recorded_config(checkpoint)[name] if checkpoint is not None else None


def _recorded_holdout(config: MeZOConfig) -> Optional[float]:
    """The spec's validation_holdout; when it is left to the default and the run resumes, the share
    the run started with (older records held out nothing), so that it trains on the same rows."""
    if config.validation_holdout is None:
        return _resumed_setting(config, "validation_holdout")
    return config.validation_holdout


def _dtype_choice(config: MeZOConfig, runner) -> DtypeChoice:
    """The run's dtype: a given runner's; for "auto", a resumed run's recorded one, else the
    device's native choice (engine/hardware.py); otherwise the dtype given."""
    if runner is not None:
        dtype = runner_dtype(runner)
        return DtypeChoice(dtype, f"{dtype}: the dtype of the runner the run was given (a server's: its --dtype)")
    recorded = _resumed_setting(config, "dtype") if config.dtype == AUTO_DTYPE else None
    if recorded is not None:
        return DtypeChoice(recorded, f"{recorded}: the dtype the resumed run was started in")
    return choose_dtype(config.dtype, resolve_device(config.device))


def start_run(plan: RunPlan, runner=None, callbacks=None, data_parallel: Optional[DataParallel] = None):
    """The plan's :class:`~sglang.srt.mezo.training.run.MeZORun`, on ``runner`` if given (a live server's:
    the run loads its adapter into that runner's LoRA pool and never releases the runner), else
    on a ModelRunner built for it (release it with
    :func:`~sglang.srt.mezo.engine.runner.release_model_runner`). ``data_parallel``: the worker
    group that shares every step (:mod:`sglang.srt.mezo.parallel`)."""
    started = time.perf_counter()
    trainer = MeZOTrainer(plan.model_path if runner is None else None, plan.trainer_config(), runner=runner,
                          tokenizer=plan.tokenizer, objective=objective_for(plan), kind=plan.kind,
                          data_parallel=data_parallel)
    try:
        if trainer.config.dtype != plan.config.dtype:  # a runner that prepare() was not given: its dtype rules
            plan.dtype_choice = _dtype_choice(plan.config, runner)
            plan.config = dataclasses.replace(plan.config, dtype=plan.dtype_choice.dtype)
        if plan.searches_prompt and plan.prompt_choice is None:
            plan.use_prompt(_recorded_or_searched_prompt(plan, trainer))
        if plan.prompt_choice is not None:
            trainer.objective = objective_for(plan)  # the chosen prompt, calibrated
        if isinstance(trainer.objective, ReferenceObjective):
            plan.train, plan.eval = _recorded_or_computed_reference(plan, trainer)
        mezo_run = trainer.start_run(plan.train, plan.eval, callbacks=callbacks)
        if plan.config.resume:
            mezo_run.resume(plan.resume_from)
    except BaseException:
        # A run that cannot start lets go of what it took: the runner it built, or its adapters on a given one.
        if runner is None:
            release_model_runner(trainer.runner)
        else:
            trainer.close()
        raise
    mezo_run.setup_time_s = time.perf_counter() - started
    return mezo_run


def _recorded_or_searched_prompt(plan: RunPlan, trainer: MeZOTrainer) -> PromptChoice:
    """A resumed run's recorded choice; else a search on the base model (the run has not trained
    yet), recorded in ``<output_dir>/prompt.json`` before the first step."""
    path = os.path.join(plan.config.output_dir, PROMPT_FILE) if plan.config.output_dir else None
    if plan.resume_from and path and os.path.exists(path):
        with open(path) as f:
            return PromptChoice.from_dict(json.load(f))
    c = plan.config
    choice = search_prompt(trainer, plan.prompt, plan.preset, template=c.template, label_words=c.label_words,
                           calibrate=c.calibrate, train=plan.examples.train, dev=plan.examples.dev)
    if path and c.num_steps > 0:
        atomic_json(path, choice.to_dict(), indent=1)
    return choice


def _recorded_or_computed_reference(plan: RunPlan, trainer: MeZOTrainer) -> tuple[list, list]:
    """The train and eval items with their reference scores (DPO's log p_ref): a resumed run's
    recorded ones, else computed at the initial weights (before the first step) and recorded in
    ``<output_dir>/reference.json``, keyed by a digest of the items so that other data is refused."""
    objective = trainer.objective
    # A zero-step run only evaluates: its training items need no reference.
    items = {"train": plan.train if plan.config.num_steps > 0 else [], "eval": plan.eval}
    digest = hashlib.sha256(repr([objective.forward_inputs(v).sequences for v in items.values()]).encode()).hexdigest()
    path = os.path.join(plan.config.output_dir, REFERENCE_FILE) if plan.config.output_dir else None
    if plan.resume_from and path and os.path.exists(path):
        with open(path) as f:
            record = json.load(f)
        if record["digest"] != digest:
            raise ValueError(f"{path}: the run's reference log-likelihoods were computed for other data; resume "
                             "with the files the run started with, or start a new run (another output_dir)")
        values = record["values"]
    elif plan.resume_from:
        raise ValueError(f"{plan.resume_from}: the run has no {REFERENCE_FILE} in {plan.config.output_dir}, and its "
                         "reference (the initial weights) cannot be recomputed from trained ones; start a new run")
    else:
        size = trainer.eval_batch_size  # chunked as an evaluation is: at step 0 it gives these numbers again
        values = {split: [v for i in range(0, len(rows), size) for v in objective.reference_values(
            trainer.logits_for(objective.forward_inputs(rows[i:i + size])), rows[i:i + size])]
            for split, rows in items.items()}
        if path and plan.config.num_steps > 0:
            atomic_json(path, {"digest": digest, "values": values})
    train = objective.with_reference(plan.train, values["train"]) if items["train"] else plan.train
    return train, objective.with_reference(plan.eval, values["eval"])


def run(plan: RunPlan, runner=None, callbacks=None) -> dict:
    """Train ``plan`` to the end and return its result (see :func:`mezo_mlm_finetune`).

    On a runner it was handed, the run unloads its own adapters when it ends and leaves the
    runner running; a runner it built, it releases."""
    return complete(plan, start_run(plan, runner, callbacks), owns_runner=runner is None)


def complete(plan: RunPlan, mezo_run, *, owns_runner: bool) -> dict:
    """Advance ``mezo_run`` (from :func:`start_run`) to its end, let go of the runner (release it
    if the run owns it, else unload the run's adapters from it), write ``summary.json``."""
    try:
        result = mezo_run.run_to_end()
    finally:
        if owns_runner:
            release_model_runner(mezo_run.trainer.runner)
        else:
            mezo_run.trainer.close()
    result.update(plan.describe(),
                  wall_time_s=plan.prepare_time_s + getattr(mezo_run, "setup_time_s", 0.0) + result["wall_time_s"])
    output_dir = plan.config.output_dir
    if output_dir:
        result["summary_path"] = atomic_json(os.path.join(output_dir, "summary.json"), result, indent=1)
    return result
