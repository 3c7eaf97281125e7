"""``MeZOMLMTrainer``: the trainer with the label-word prompt objective, built from a task and a
prompt (the seed's name; it drives causal LMs as well as masked ones)."""

from __future__ import annotations

import typing
from typing import Optional, Sequence, Union

import torch  # noqa: E402  (after mezo_trainer, which sets up SGLang's CPU runtime first)

from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.metrics import compute_metric
from sglang.srt.mezo.data.presets import TaskPreset, get_task
from sglang.srt.mezo.data.prompt import EncodedExample, MLMConfig, PromptEncoder
from sglang.srt.mezo.engine.models import check_model_path, check_trainable, model_architectures, model_kind
from sglang.srt.mezo.spec.config import MeZOConfig, Objective
from sglang.srt.mezo.spec.defaults import resolve_hyperparameters
from sglang.srt.mezo.training.objectives.base import ForwardInputs
from sglang.srt.mezo.training.trainer import MeZOTrainer

OBJECTIVES = typing.get_args(Objective)


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
            from sglang.srt.mezo.engine.models import resolve_model_path

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
                from sglang.srt.mezo.engine.runner import release_model_runner

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
