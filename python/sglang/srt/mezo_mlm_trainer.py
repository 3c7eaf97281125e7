"""Prompt-based MeZO fine-tuning: a task's template and label words turn classification into
"which label word fills the [MASK] slot", the objective MeZO needs (Malladi et al. 2023, on top of
LM-BFF, Gao et al. 2021).

A run, top to bottom:

1. a :class:`~sglang.srt.mezo_config.MeZOConfig` (the run spec) says what to do;
2. :func:`prepare` resolves it once, without building a model: the model's kind and the
   defaults for it, the prompt (checked against the tokenizer), the data, each example encoded
   into token ids and the position to read (:mod:`sglang.srt.mezo_prompts`);
3. :func:`start_run` puts the plan on an SGLang ModelRunner (a new one, or one it is handed, e.g.
   a live server's) as a :class:`~sglang.srt.mezo_run.MeZORun` that advances a unit at a time;
4. each MeZO step asks SGLang for the label words' logits at that one position
   (:meth:`MeZOMLMTrainer.forward_inputs`), never a full-vocabulary row;
5. the loss is cross-entropy over the label words (:meth:`MeZOMLMTrainer.loss_from_logits`), or
   minus accuracy, the paper's non-differentiable option.

:func:`run` does 3 to the end; :func:`mezo_mlm_finetune` is 1 to the end in one call; the CLI is
``python -m sglang.srt.mezo_mlm_trainer --help``, its flags made from the run spec's fields.

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

if __name__ == "__main__":  # the CLI: it parses its arguments before SGLang is imported (see mezo_cli)
    import sys

    from sglang.srt.mezo_cli import main

    sys.exit(main())

import dataclasses
import json
import logging
import os
import time
import typing
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from sglang.srt.mezo_cli import build_parser, format_summary, main  # noqa: F401  (the CLI of this module)
from sglang.srt.mezo_config import (  # noqa: F401  (DEFAULTS, resolve_hyperparameters: public here too)
    AUTO,
    DEFAULTS,
    MeZOConfig,
    Objective,
    resolve_hyperparameters,
)
from sglang.srt.mezo_models import (  # noqa: F401  (re-exported: the checks a run makes)
    check_model_path,
    check_trainable,
    model_architectures,
    model_kind,
)
from sglang.srt.mezo_prompts import (  # noqa: F401  (re-exported: the prompt API users import from here)
    MASK,
    MODEL_KINDS,
    EncodedExample,
    MLMConfig,
    PromptEncoder,
    check_template,
    label_token_ids,
    match_label_words,
    parse_label_words,
)
from sglang.srt.mezo_tasks import (  # noqa: F401
    DataFormatError,
    DataSource,
    DataSplits,
    Example,
    TaskPreset,
    compute_metric,
    get_task,
    prepare_data,
    prepare_splits,
)
from sglang.srt.mezo_trainer import ForwardInputs, MeZOTrainer
from sglang.srt.mezo_runner import runner_dtype  # noqa: E402  (after mezo_trainer: the CPU runtime first)
from sglang.srt.mezo_prompt_search import PromptChoice, search_prompt  # noqa: E402

import torch  # noqa: E402  (after mezo_trainer, which sets up SGLang's CPU runtime first)

logger = logging.getLogger(__name__)

OBJECTIVES = typing.get_args(Objective)
DEFAULT_MODEL = MeZOConfig.model_path
DEFAULT_TASK = MeZOConfig.task
#: Where a run records the prompt it chose (template="auto", label_words="auto", calibrate).
PROMPT_FILE = "prompt.json"


# ---------------------------------------------------------------- the objective


class MeZOMLMTrainer(MeZOTrainer):
    """MeZO with the prompt objective: cross-entropy over the label words' logits at the mask
    position (masked LM) or after the prompt (causal LM); ``objective="accuracy"`` trains on minus
    accuracy instead (the paper's non-differentiable objective).

    Task, prompt and objective come from ``config`` unless given here; ``prompt=`` takes a
    :class:`PromptEncoder` already built (by :func:`prepare`). The prompt and its label words are
    checked before the model is built. ``train`` and ``evaluate`` take :class:`Example` rows
    (encoded once) or :class:`EncodedExample` rows.

    Example::

        >>> trainer = MeZOMLMTrainer("smollm2-135m", MeZOConfig(num_steps=200, task="sst-2"))  # doctest: +SKIP
        >>> trainer.train(load_examples("sst2/train.tsv", "sst-2")[:32])  # doctest: +SKIP
        {'steps': 200, 'train_loss': [...], 'zero_shot_accuracy': ..., ...}
    """

    def __init__(
        self,
        model_path: Optional[str] = None,
        config: Optional[MeZOConfig] = None,
        *,
        task: Union[str, TaskPreset, None] = None,
        mlm_config: Optional[MLMConfig] = None,
        objective: Optional[str] = None,
        prompt: Optional[PromptEncoder] = None,
        runner=None,
        tokenizer=None,
    ):
        config = config or MeZOConfig()
        self.objective = objective or config.objective
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        self.preset = task if isinstance(task, TaskPreset) else get_task(task or config.task)
        if runner is not None:
            path = runner.server_args.model_path
        else:
            from sglang.srt.mezo_models import resolve_model_path

            path = resolve_model_path(model_path or config.model_path)
            check_model_path(path)
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = prompt.tokenizer if prompt is not None else AutoTokenizer.from_pretrained(path)
        if prompt is None:
            # Everything that can be wrong with the prompt fails here, before a model is loaded.
            kind = model_kind(tokenizer, model_architectures(path))
            mlm_config = mlm_config or MLMConfig(config.template, config.label_words, config.use_space_prefix)
            prompt = PromptEncoder.for_task(tokenizer, kind, self.preset, mlm_config)
        self.prompt, self.kind = prompt, prompt.kind
        check_trainable(self.kind, config.trainable or resolve_hyperparameters(self.kind)["trainable"])
        try:
            super().__init__(path if runner is None else None, config, runner=runner, tokenizer=tokenizer)
        except BaseException:
            # A runner built here but not handed out would block the next one (one per process).
            if runner is None and getattr(self, "runner", None) is not None:
                from sglang.srt.mezo_runner import release_model_runner

                release_model_runner(self.runner)
            raise
        self.set_prompt(self.prompt)

    def set_prompt(self, prompt: PromptEncoder, calibration: Optional[Sequence[float]] = None) -> None:
        """Use ``prompt`` from now on; ``calibration`` (one value per label word, log p on
        content-free inputs) is subtracted from the label words' logits in every loss and prediction."""
        if prompt.labels != self.prompt.labels:
            raise ValueError(f"a prompt for labels {prompt.labels} cannot replace one for {self.prompt.labels}")
        self.prompt = prompt
        self.label_ids = torch.tensor(prompt.label_token_ids)
        self.label_bias = None if calibration is None else torch.tensor(calibration, dtype=torch.float64)

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        # float64: the loss difference L+ - L- is small (see loss_from_logits)
        logits = logits.double()
        return logits if self.label_bias is None else logits - self.label_bias.to(logits.device)

    def _detect_kind(self) -> str:
        return self.kind  # known from the prompt, which was built first

    def encode(self, examples: Sequence[Union[Example, EncodedExample]]) -> list[EncodedExample]:
        return [e if isinstance(e, EncodedExample) else self.prompt.encode(e) for e in examples]

    # -- 4. batch -> label-word logits at one position per prompt

    def forward_inputs(self, batch: Sequence[EncodedExample]) -> ForwardInputs:
        return ForwardInputs([list(e.input_ids) for e in batch], [e.position for e in batch], self.label_ids)

    def label_logits(self, batch: Sequence[EncodedExample]) -> torch.Tensor:
        """``[len(batch), n_labels]`` logits of the label words at each prompt's position."""
        return self.logits(*self.forward_inputs(batch)).float()

    # -- 5. logits -> loss (reduced in float64: L+ - L- is a small difference of two means, and
    # data-parallel workers' weighted means then agree with one process's to ~1e-12)

    def loss_from_logits(self, logits: torch.Tensor, batch: Sequence[EncodedExample]) -> float:
        targets = torch.tensor([e.label_index for e in batch], device=logits.device)
        scores = self._scores(logits)
        if self.objective == "accuracy":
            return -(scores.argmax(-1) == targets).float().mean().item()
        return torch.nn.functional.cross_entropy(scores, targets).item()

    def predict_from_logits(self, logits: torch.Tensor, batch: Sequence[EncodedExample]) -> tuple[list, list]:
        return self._scores(logits).argmax(-1).tolist(), [e.label_index for e in batch]

    # -- evaluation: cross-entropy whatever the training objective, accuracy and the task's metric

    def eval_loss(self, logits: torch.Tensor, batch: Sequence[EncodedExample]) -> float:
        targets = torch.tensor([e.label_index for e in batch], device=logits.device)
        return torch.nn.functional.cross_entropy(self._scores(logits), targets).item()

    def eval_metrics(self, predictions: list, references: list) -> dict:
        result = {"eval_accuracy": compute_metric("accuracy", predictions, references)}
        if self.preset.metric not in ("accuracy", "acc"):
            result[f"eval_{self.preset.metric}"] = compute_metric(self.preset.metric, predictions, references)
        return result

    def evaluate(self, examples: Sequence[Union[Example, EncodedExample]], batch_size: Optional[int] = None) -> dict:
        return super().evaluate(self.encode(examples), batch_size)

    def start_run(self, train_data, eval_data=None, *, callbacks=None):
        return super().start_run(self.encode(train_data), self.encode(eval_data or []), callbacks=callbacks)


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
    prompt: PromptEncoder
    train: list[EncodedExample]
    eval: list[EncodedExample]
    examples: Optional[DataSplits] = None  # the rows behind train/eval, and the k-shot dev split
    prompt_choice: Optional[PromptChoice] = None  # set by start_run when the spec asks for a search
    data_given_in_memory: bool = False
    prepare_time_s: float = 0.0
    resume_from: Optional[str] = None  # the checkpoint a resumed run continues from

    def trainer_config(self) -> MeZOConfig:
        # A zero-shot run writes only its summary: no adapter, metrics or trajectory.
        return self.config if self.config.num_steps > 0 else dataclasses.replace(self.config, output_dir=None)

    @property
    def searches_prompt(self) -> bool:
        c = self.config
        return c.template == AUTO or c.label_words == AUTO or c.calibrate

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
            "task": self.preset.name, "model_path": c.model_path, "objective": c.objective, "seed": c.seed,
            "num_train_examples": len(self.train), "num_eval_examples": len(self.eval),
            "hyperparameters": {"trainable": c.trainable, **{k: getattr(c, k) for k in DEFAULTS[("causal", "lora")]}},
            "prompt": self.prompt.describe(),
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
    from transformers import AutoTokenizer

    from sglang.srt.mezo_models import resolve_model_path

    from sglang.srt.mezo_run import check_resumable

    started = time.perf_counter()
    preset = get_task(config.task)
    path = resolve_model_path(config.model_path)
    check_model_path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    kind = model_kind(tokenizer, model_architectures(path))
    config = config.resolve(kind)
    if runner is not None:
        config = dataclasses.replace(config, dtype=runner_dtype(runner))
    check_trainable(kind, config.trainable)
    # The prompt is checked against the tokenizer before any data is read or model loaded.
    # "auto" parts start as the preset's; start_run searches once a model is there.
    mlm = MLMConfig(None if config.template == AUTO else config.template,
                    None if config.label_words == AUTO else config.label_words, config.use_space_prefix)
    prompt = PromptEncoder.for_task(tokenizer, kind, preset, mlm)
    in_memory = not isinstance(train_dataset, (str, os.PathLike, type(None))) or \
        not isinstance(eval_dataset, (str, os.PathLike, type(None)))
    splits = prepare_splits(
        preset, config.train_file if train_dataset is None else train_dataset,
        config.eval_file if eval_dataset is None else eval_dataset,
        k_shot=config.k_shot, seed=config.seed, max_eval_examples=config.max_eval_examples)
    train, evals = splits.train, splits.eval
    if config.num_steps > 0 and not train:
        raise ValueError(f"the training set for task {preset.name!r} is empty: give train_dataset with examples")
    if not evals and config.num_steps == 0:
        raise ValueError("nothing to do: num_steps=0 (zero-shot) needs an eval set with examples")
    if train and config.batch_size > len(train):
        logger.info("batch size %d > %d training examples: every step uses all of them", config.batch_size, len(train))
        config = dataclasses.replace(config, batch_size=len(train))
    plan = RunPlan(config, path, kind, preset, prompt, prompt.encode_all(train), prompt.encode_all(evals),
                   examples=splits, data_given_in_memory=in_memory, resume_from=check_resumable(config))
    plan.prepare_time_s = time.perf_counter() - started
    logger.info("%s (%s LM), task %s: %d train / %d eval examples, %s", config.model_path, kind, preset.name,
                len(plan.train), len(plan.eval), plan.describe()["hyperparameters"])
    return plan


def start_run(plan: RunPlan, runner=None, callbacks=None):
    """The plan's :class:`~sglang.srt.mezo_run.MeZORun`, on ``runner`` if given (a live server's:
    the run loads its adapter into that runner's LoRA pool and never releases the runner), else
    on a ModelRunner built for it (release it with ``mezo_runner.release_model_runner``)."""
    started = time.perf_counter()
    trainer = MeZOMLMTrainer(plan.model_path if runner is None else None, plan.trainer_config(),
                             task=plan.preset, prompt=plan.prompt, runner=runner)
    # A runner handed in sets the dtype (the trainer decides); the plan's record says what ran.
    plan.config = dataclasses.replace(plan.config, dtype=trainer.config.dtype)
    if plan.searches_prompt and plan.prompt_choice is None:
        plan.use_prompt(_recorded_or_searched_prompt(plan, trainer))
    if plan.prompt_choice is not None:
        trainer.set_prompt(plan.prompt, plan.prompt_choice.calibration)
    mezo_run = trainer.start_run(plan.train, plan.eval, callbacks=callbacks)
    if plan.config.resume:
        mezo_run.resume(plan.resume_from)
    mezo_run.setup_time_s = time.perf_counter() - started
    return mezo_run


def _recorded_or_searched_prompt(plan: RunPlan, trainer: MeZOMLMTrainer) -> PromptChoice:
    """A resumed run's recorded choice; else a search on the base model (the run has not trained
    yet), recorded in ``<output_dir>/prompt.json`` before the first step."""
    from sglang.srt.mezo_io import atomic_json

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


def run(plan: RunPlan, runner=None, callbacks=None) -> dict:
    """Train ``plan`` to the end and return its result (see :func:`mezo_mlm_finetune`).

    On a runner it was handed, the run unloads its own adapters when it ends and leaves the
    runner running; a runner it built, it releases."""
    return complete(plan, start_run(plan, runner, callbacks), owns_runner=runner is None)


def complete(plan: RunPlan, mezo_run, *, owns_runner: bool) -> dict:
    """Advance ``mezo_run`` (from :func:`start_run`) to its end, let go of the runner (release it
    if the run owns it, else unload the run's adapters from it), write ``summary.json``."""
    from sglang.srt.mezo_runner import release_model_runner

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
        from sglang.srt.mezo_io import atomic_json

        result["summary_path"] = atomic_json(os.path.join(output_dir, "summary.json"), result, indent=1)
    return result


# ---------------------------------------------------------------- one call


def mezo_mlm_finetune(
    model_path: str = DEFAULT_MODEL,
    task_name: str = DEFAULT_TASK,
    train_dataset: DataSource = None,
    eval_dataset: DataSource = None,
    *,
    num_steps: Optional[int] = None,
    batch_size: Optional[int] = None,
    learning_rate: Optional[float] = None,
    epsilon: Optional[float] = None,
    weight_decay: Optional[float] = None,
    k_shot: Optional[int] = None,
    seed: int = MeZOConfig.seed,
    output_dir: Optional[str] = None,
    trainable: Optional[str] = None,
    lora_rank: Optional[int] = None,
    device: Optional[str] = None,
    eval_steps: Optional[int] = None,
    mlm_config: Optional[MLMConfig] = None,
    objective: str = "ce",
    max_eval_examples: Optional[int] = None,
    eval_at_start: bool = True,
    progress_bar: bool = True,
    **config_overrides: Any,
) -> dict:
    """Fine-tune ``model_path`` on a task with MeZO and the prompt objective; evaluate; save.

    The arguments are a :class:`~sglang.srt.mezo_config.MeZOConfig`'s fields (other fields, e.g.
    ``lora_alpha``, ``n_spsa``, ``lr_schedule``, ``dtype``, pass through ``config_overrides``);
    ``mlm_config`` gives the template and label words (or ``template="auto"``,
    ``label_words="auto"``, ``calibrate=True``: a prompt chosen before training, see
    :mod:`sglang.srt.mezo_prompt_search`), and datasets may be lists of :class:`Example`. Arguments left as None take :data:`DEFAULTS` for the model's kind (masked or
    causal LM) and the trainable set ("lora" or "full"; default full for masked LMs, LoRA for
    causal LMs); data defaults are in :func:`~sglang.srt.mezo_tasks.prepare_data` (16-shot, seed
    42, the task's dev set). ``num_steps=0`` evaluates zero-shot with the same prompt and writes
    no adapter; ``eval_at_start=False`` skips that step-0 evaluation in a training run
    (``zero_shot_accuracy`` is then None). With ``output_dir`` the adapter
    (``<output_dir>/adapter``, PEFT format), ``metrics.jsonl``, the MeZO trajectory, the run
    state and ``summary.json`` (which records the run spec) are written there; without it
    nothing is written.

    Returns a dict with ``eval_accuracy`` (final), ``best_eval_accuracy``, ``zero_shot_accuracy``
    (step 0), ``eval_history``, ``train_loss`` (one value per step), ``adapter_path``, ``steps``,
    ``wall_time_s`` and what the run used (``hyperparameters``, ``prompt``, ``config``, example
    counts).

    Example::

        >>> r = mezo_mlm_finetune(model_path="roberta-large", task_name="sst-2", num_steps=10000,
        ...                       batch_size=64, learning_rate=1e-6, epsilon=1e-3)  # doctest: +SKIP
        >>> r["best_eval_accuracy"]  # doctest: +SKIP
        0.87
    """
    # Spec fields this function takes under the paper code's names.
    renamed = {"task": "task_name", "train_file": "train_dataset", "eval_file": "eval_dataset"}
    for field_name in set(config_overrides) & set(renamed):
        raise TypeError(f"mezo_mlm_finetune takes {field_name} as {renamed[field_name]}=..., "
                        f"got {field_name}={config_overrides[field_name]!r}")
    known = {f.name for f in dataclasses.fields(MeZOConfig)}
    unknown = set(config_overrides) - known
    if unknown:
        raise TypeError(f"unknown arguments {sorted(unknown)}")
    mlm_config = mlm_config or MLMConfig()
    # template="auto" / label_words="auto" (and given ones) may come as keywords, beside mlm_config.
    prompt = {"template": config_overrides.pop("template", mlm_config.template),
              "label_words": config_overrides.pop("label_words", mlm_config.label_word_mapping)}
    files = {name: os.fspath(data) if isinstance(data, (str, os.PathLike)) else None
             for name, data in (("train_file", train_dataset), ("eval_file", eval_dataset))}
    config = MeZOConfig(
        model_path=model_path, task=task_name, **files, k_shot=k_shot, seed=seed, num_steps=num_steps,
        batch_size=batch_size, learning_rate=learning_rate, epsilon=epsilon, weight_decay=weight_decay,
        output_dir=output_dir, trainable=trainable, lora_rank=lora_rank, device=device, eval_steps=eval_steps,
        **prompt, use_space_prefix=mlm_config.use_space_prefix, objective=objective, max_eval_examples=max_eval_examples,
        eval_at_start=eval_at_start, progress_bar=progress_bar, **config_overrides,
    )
    in_memory = {name: data for name, data in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset))
                 if data is not None and files[name.replace("dataset", "file")] is None}
    plan = prepare(config, **in_memory)
    return run(plan)
