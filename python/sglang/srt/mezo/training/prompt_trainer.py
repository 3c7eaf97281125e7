"""``MeZOMLMTrainer``: a :class:`~sglang.srt.mezo.training.trainer.MeZOTrainer` with the label-word
prompt objective (:class:`~sglang.srt.mezo.training.objectives.label_words.LabelWordObjective`),
built from a task and a prompt. The seed's name: it drives causal LMs as well as masked ones.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from transformers import AutoTokenizer

from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.presets import TaskPreset, get_task
from sglang.srt.mezo.data.prompt import EncodedExample, MLMConfig, PromptEncoder
from sglang.srt.mezo.engine.models import (
    check_model_path,
    check_trainable,
    model_architectures,
    model_kind,
    resolve_model_path,
)
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.run_spec.defaults import resolve_hyperparameters
from sglang.srt.mezo.training.objectives.label_words import LabelWordObjective
from sglang.srt.mezo.training.trainer import MeZOTrainer

#: The spec's objective names that the label-word objective implements.
#: The label-word objectives this trainer runs (the spec has more: see training/objectives).
OBJECTIVES = ("ce", "accuracy")


class MeZOMLMTrainer(MeZOTrainer):
    """MeZO with the prompt objective: cross-entropy over the label words' logits at the mask
    position (masked LM) or after the prompt (causal LM); ``objective="accuracy"`` trains on minus
    accuracy instead (the paper's non-differentiable objective).

    Task, prompt and objective come from ``config`` unless given here; ``prompt=`` takes a
    :class:`PromptEncoder` already built (by :func:`~sglang.srt.mezo.training.plan.prepare`). The
    prompt and its label words are checked before the model is built. ``train`` and ``evaluate``
    take :class:`Example` rows (encoded once) or :class:`EncodedExample` rows.

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
        loss = objective or config.objective
        if loss not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {loss!r}")
        preset = task if isinstance(task, TaskPreset) else get_task(task or config.task)
        if runner is not None:
            path = runner.server_args.model_path
        else:
            path = resolve_model_path(model_path or config.model_path)
            check_model_path(path)
        if tokenizer is None:
            tokenizer = prompt.tokenizer if prompt is not None else AutoTokenizer.from_pretrained(path)
        if prompt is None:
            # Everything that can be wrong with the prompt fails here, before a model is loaded.
            kind = model_kind(tokenizer, model_architectures(path))
            mlm_config = mlm_config or MLMConfig(config.template, config.label_words, config.use_space_prefix)
            prompt = PromptEncoder.for_task(tokenizer, kind, preset, mlm_config)
        check_trainable(prompt.kind, config.trainable or resolve_hyperparameters(prompt.kind)["trainable"])
        super().__init__(path if runner is None else None, config, runner=runner, tokenizer=tokenizer,
                         objective=LabelWordObjective(prompt, preset, loss), kind=prompt.kind)

    # The prompt objective's parts, as the seed's trainer had them.

    @property
    def prompt(self) -> PromptEncoder:
        return self.objective.prompt

    @property
    def preset(self) -> TaskPreset:
        return self.objective.preset

    @property
    def kind(self) -> str:
        return self.objective.prompt.kind

    @property
    def label_ids(self) -> torch.Tensor:
        return self.objective.label_ids

    @property
    def label_bias(self) -> Optional[torch.Tensor]:
        return self.objective.label_bias

    def set_prompt(self, prompt: PromptEncoder, calibration: Optional[Sequence[float]] = None) -> None:
        """Use ``prompt`` from now on; ``calibration`` (one value per label word, log p on
        content-free inputs) is subtracted from the label words' logits in every loss and prediction."""
        self.objective.set_prompt(prompt, calibration)

    def encode(self, examples: Sequence[Union[Example, EncodedExample]]) -> list[EncodedExample]:
        return self.objective.encode(examples)

    def label_logits(self, batch: Sequence[EncodedExample]) -> torch.Tensor:
        """``[len(batch), n_labels]`` logits of the label words at each prompt's position."""
        return self.logits_for(self.objective.forward_inputs(batch)).float()
