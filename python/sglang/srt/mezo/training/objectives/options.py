"""Options scored by likelihood: each option's log-likelihood after the prompt decides the class
(the MeZO paper's multiple-choice objective, and label words of several tokens).

A batch item is an :class:`OptionsItem`: the prompt's token ids, each option's token ids, and the
right option's index. The forward runs prompt + option once per option and computes vocabulary
logits only at the positions that predict the option's tokens. An option's score is the mean
log-probability of its tokens (``"mean"``, the paper's default) or their sum (``"sum"``); the loss
is the cross-entropy over the options' scores and the prediction is the best-scoring option.

The options are an example's own ``choices`` (a multiple-choice task such as ARC-Easy), else the
task's label words, which may then be any number of tokens ("very positive", "Description").

>>> item = OptionsItem((1, 5, 6), ((7,), (8, 9)), 1)
>>> option_rows(item)
[(2,), (2, 3)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.metrics import compute_metric
from sglang.srt.mezo.data.presets import TaskPreset, fill_template
from sglang.srt.mezo.data.prompt import MASK, label_word_pieces, mask_takes_space, match_label_words
from sglang.srt.mezo.errors import DataFormatError
from sglang.srt.mezo.training.objectives import register
from sglang.srt.mezo.training.objectives.base import ForwardInputs, LogitsObjective

OPTION_SCORES = ("mean", "sum")


@dataclass(frozen=True)
class OptionsItem:
    """A prompt, its options' token ids, and the index of the right option."""

    prompt_ids: tuple[int, ...]
    options: tuple[tuple[int, ...], ...]
    label_index: int


def option_rows(item: OptionsItem) -> list[tuple[int, ...]]:
    """For each option, the positions (in prompt + option) whose logits predict its tokens."""
    start = len(item.prompt_ids) - 1
    return [tuple(range(start, start + len(option))) for option in item.options]


@register("options")
class OptionsObjective(LogitsObjective):
    """Cross-entropy over the options' log-likelihood scores (``score``: "mean" or "sum")."""

    def __init__(self, tokenizer, preset: TaskPreset, template: Optional[str] = None,
                 label_words: Optional[dict] = None, score: str = "mean", max_length: Optional[int] = None):
        if score not in OPTION_SCORES:
            raise ValueError(f"option_score must be one of {OPTION_SCORES}, got {score!r}")
        self.tokenizer, self.preset, self.score = tokenizer, preset, score
        self.template = template or preset.causal_template
        if self.template is None or MASK not in self.template:
            raise ValueError(f"task {preset.name!r} has no causal prompt with {MASK} for its options: give "
                             "template='... [MASK]' (the options' text takes the [MASK]'s place)")
        self.space = mask_takes_space(self.template, "causal")
        words = label_words or preset.causal_label_words
        self.label_words = match_label_words(words, preset.labels, preset.name) if words else None
        self.max_length = max_length or preset.max_length

    @classmethod
    def from_plan(cls, plan, name: str) -> "OptionsObjective":
        """The objective of a :class:`~sglang.srt.mezo.training.plan.RunPlan` whose spec names it."""
        c = plan.config
        words = None if c.label_words in (None, "auto") else c.label_words
        return cls(plan.tokenizer, plan.preset, None if c.template == "auto" else c.template, words, c.option_score)

    # ---- rows -> items

    def _option_ids(self, text: str) -> tuple[int, ...]:
        return tuple(label_word_pieces(self.tokenizer, text, self.space))

    def encode_one(self, example: Example, where: str = "") -> OptionsItem:
        """``example`` as an :class:`OptionsItem` (its ``choices``, else the task's label words)."""
        if example.choices is not None:
            texts, index = example.choices, example.label
        elif self.label_words is not None:
            texts, index = self.label_words, list(self.preset.labels).index(example.label)
        else:
            raise DataFormatError(f"{where or example.text_a[:60]!r}: the example has no 'choices' and task "
                                  f"{self.preset.name!r} has no label words; add choices or give label_words")
        prompt = fill_template(self.template, example)
        prompt = prompt[: prompt.index(MASK)].rstrip(" \t")
        prompt_ids = tuple(self.tokenizer.encode(prompt))
        options = tuple(self._option_ids(t) for t in texts)
        longest = len(prompt_ids) + max(len(o) for o in options)
        if longest > self.max_length:  # keep the end of the prompt: the question sits there
            prompt_ids = prompt_ids[:1] + prompt_ids[1 + longest - self.max_length:]
        return OptionsItem(prompt_ids, options, index)

    def encode(self, examples: Sequence[Union[Example, OptionsItem]]) -> list[OptionsItem]:
        return [e if isinstance(e, OptionsItem) else self.encode_one(e) for e in examples]

    # ---- logits -> scores

    def forward_inputs(self, batch: Sequence[OptionsItem]) -> ForwardInputs:
        sequences, positions, owners = [], [], []
        for k, item in enumerate(batch):
            for option, rows in zip(item.options, option_rows(item)):
                sequences.append(list(item.prompt_ids) + list(option))
                positions.append(list(rows))
                owners.append(k)
        return ForwardInputs(sequences, positions, None, owners)

    def scores(self, logits: torch.Tensor, batch: Sequence[OptionsItem]) -> list[torch.Tensor]:
        """Each item's options' scores (float64), from :meth:`forward_inputs`' logits."""
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        out, start = [], 0
        for item in batch:
            item_scores = []
            for option in item.options:
                rows = logprobs[start:start + len(option)]
                token_lp = rows.gather(1, torch.tensor(option, device=rows.device).unsqueeze(1)).squeeze(1)
                item_scores.append(token_lp.mean() if self.score == "mean" else token_lp.sum())
                start += len(option)
            out.append(torch.stack(item_scores))
        return out

    def loss(self, logits: torch.Tensor, batch: Sequence[OptionsItem]) -> float:
        losses = [torch.nn.functional.cross_entropy(s.unsqueeze(0), torch.tensor([item.label_index], device=s.device))
                  for s, item in zip(self.scores(logits, batch), batch)]
        return torch.stack(losses).mean().item()

    def predict(self, logits: torch.Tensor, batch: Sequence[OptionsItem]) -> tuple[list, list]:
        return [int(s.argmax()) for s in self.scores(logits, batch)], [item.label_index for item in batch]

    def metrics(self, predictions: list, references: list) -> dict:
        result = {"eval_accuracy": compute_metric("accuracy", predictions, references)}
        if self.preset.metric not in ("accuracy", "acc"):
            result[f"eval_{self.preset.metric}"] = compute_metric(self.preset.metric, predictions, references)
        return result
