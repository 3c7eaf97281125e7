"""The prompt objective with label words (LM-BFF, as the MeZO paper trains classification): which
label word fills the template's ``[MASK]`` slot (masked LM) or comes after the prompt (causal LM).

A batch item is an :class:`~sglang.srt.mezo.data.prompt.EncodedExample` (the prompt's token ids,
the position to read, the label's index), made once per run by :meth:`LabelWordObjective.encode`;
the forward computes the label words' logits at that one position only, never a full-vocabulary
row. The loss is cross-entropy over the label words (``"ce"``), or minus accuracy (``"accuracy"``,
the paper's non-differentiable objective); evaluations report cross-entropy either way, with
accuracy and the task's own metric. ``calibration`` (log p of each label word on content-free
inputs) is subtracted from the label words' scores everywhere (contextual calibration).

Losses are reduced in float64: L+ - L- is a small difference of two means, and data-parallel
workers' weighted means then agree with one process's to ~1e-12.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.metrics import compute_metric
from sglang.srt.mezo.data.presets import TaskPreset
from sglang.srt.mezo.data.prompt import EncodedExample, PromptEncoder
from sglang.srt.mezo.training.objectives import register
from sglang.srt.mezo.training.objectives.base import ForwardInputs, LogitsObjective


@register("ce", "accuracy")
class LabelWordObjective(LogitsObjective):
    """Label words' scores at one position of each prompt; ``loss`` is ``"ce"`` or ``"accuracy"``."""

    def __init__(self, prompt: PromptEncoder, preset: TaskPreset, loss: str = "ce",
                 calibration: Optional[Sequence[float]] = None):
        if loss not in ("ce", "accuracy"):
            raise ValueError(f"the label-word objective's loss is 'ce' or 'accuracy', got {loss!r}")
        self.preset, self.loss_name = preset, loss
        self.prompt = prompt
        self.set_prompt(prompt, calibration)

    @classmethod
    def from_plan(cls, plan, name: str) -> "LabelWordObjective":
        """The objective of a :class:`~sglang.srt.mezo.training.plan.RunPlan` whose spec names it."""
        calibration = plan.prompt_choice.calibration if plan.prompt_choice is not None else None
        return cls(plan.prompt, plan.preset, name, calibration)

    def set_prompt(self, prompt: PromptEncoder, calibration: Optional[Sequence[float]] = None) -> None:
        """Use ``prompt`` from now on, with ``calibration`` (one value per label word) or none."""
        if prompt.labels != self.prompt.labels:
            raise ValueError(f"a prompt for labels {prompt.labels} cannot replace one for {self.prompt.labels}")
        self.prompt = prompt
        self.label_ids = torch.tensor(prompt.label_token_ids)
        self.label_bias = None if calibration is None else torch.tensor(calibration, dtype=torch.float64)

    def encode(self, examples: Sequence[Union[Example, EncodedExample]]) -> list[EncodedExample]:
        return [e if isinstance(e, EncodedExample) else self.prompt.encode(e) for e in examples]

    def forward_inputs(self, batch: Sequence[EncodedExample]) -> ForwardInputs:
        return ForwardInputs([list(e.input_ids) for e in batch], [e.position for e in batch], self.label_ids)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """The label words' logits in float64, calibrated if the objective is."""
        logits = logits.double()
        return logits if self.label_bias is None else logits - self.label_bias.to(logits.device)

    def loss(self, logits: torch.Tensor, batch: Sequence[EncodedExample]) -> float:
        targets = torch.tensor([e.label_index for e in batch], device=logits.device)
        scores = self.scores(logits)
        if self.loss_name == "accuracy":
            return -(scores.argmax(-1) == targets).float().mean().item()
        return torch.nn.functional.cross_entropy(scores, targets).item()

    def predict(self, logits: torch.Tensor, batch: Sequence[EncodedExample]) -> tuple[list, list]:
        return self.scores(logits).argmax(-1).tolist(), [e.label_index for e in batch]

    def eval_loss(self, logits: torch.Tensor, batch: Sequence[EncodedExample]) -> float:
        targets = torch.tensor([e.label_index for e in batch], device=logits.device)
        return torch.nn.functional.cross_entropy(self.scores(logits), targets).item()

    def metrics(self, predictions: list, references: list) -> dict:
        result = {"eval_accuracy": compute_metric("accuracy", predictions, references)}
        if self.preset.metric not in ("accuracy", "acc"):
            result[f"eval_{self.preset.metric}"] = compute_metric(self.preset.metric, predictions, references)
        return result
