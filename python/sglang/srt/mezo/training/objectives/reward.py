"""Graded answers (OpenAI's ``reinforcement`` method, the MeZO paper's non-differentiable SQuAD F1):
the loss of a batch is minus the mean grade of the answers the model generates to its prompts.

Each step generates every prompt's answer under theta + eps z and under theta - eps z in one batch
(two LoRA slots, :meth:`~sglang.srt.mezo.training.objectives.base.RewardObjective.sided_losses`), grades each
with the run's grader (:mod:`sglang.srt.mezo.data.graders`), and MeZO's projected gradient
(L+ - L-) / (2 eps) = -(mean reward+ - mean reward-) / (2 eps) moves the weights up the reward.
Generation never reuses KV across the two sides, steps or serving
(:class:`~sglang.srt.mezo.engine.generate.GreedyGenerator` computes every prompt's KV itself).
Evaluation answers greedily at the trained weights: ``eval_reward`` (the mean grade), and SQuAD's
exact match and F1 where the rows have accepted answers.

:class:`ScoredAnswersObjective` is all of that but the grade: a subclass's :meth:`~ScoredAnswersObjective.score`
of an answer's text (a score of generated text of your own); :class:`GradedAnswersObjective`
(objective ``reward``) scores with an OpenAI grader.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Optional, Sequence

from sglang.srt.mezo.data.chat import prompt_ids
from sglang.srt.mezo.data.graders import Grader, Sample, parse_grader
from sglang.srt.mezo.data.metrics import squad_scores
from sglang.srt.mezo.data.reinforcement import as_reward_examples
from sglang.srt.mezo.errors import DataFormatError
from sglang.srt.mezo.training.objectives import register
from sglang.srt.mezo.training.objectives.base import GenerationInputs, RewardObjective
from sglang.srt.mezo.training.objectives.completion import STOP_TEXT, row_limit, stop_token_ids

#: The default grader of task squad: SQuAD's token F1 of the answer against every accepted answer.
SQUAD_F1_GRADER = {"type": "text_similarity", "name": "squad_f1", "input": "{{sample.output_text}}",
                   "reference": "{{item.answers}}", "evaluation_metric": "squad_f1"}


@dataclass(frozen=True)
class PromptItem:
    """A prompt's token ids, the row's fields for the grader, and its accepted answers (if any)."""

    prompt_ids: tuple[int, ...]
    item: Mapping[str, Any] = field(hash=False)
    where: str = ""
    references: tuple[str, ...] = ()


class ScoredAnswersObjective(RewardObjective):
    """Minus the mean score of the generated answers; a subclass says how an answer scores
    (:meth:`score`: a score of generated text, the extension point for one of your own).

    ``one_line``: an answer ends at its first line break (SQuAD), else at the end of the turn.
    """

    def __init__(self, tokenizer, max_new_tokens: int = 50, *, one_line: bool = False,
                 max_length: Optional[int] = None):
        self.tokenizer = tokenizer
        self.max_new_tokens, self.one_line, self.max_length = max_new_tokens, one_line, max_length

    @classmethod
    def from_plan(cls, plan, name: str) -> "ScoredAnswersObjective":
        """The objective of a :class:`~sglang.srt.mezo.training.plan.RunPlan` whose spec names it."""
        return cls(plan.tokenizer, plan.config.max_new_tokens, one_line=plan.preset.name == "squad",
                   max_length=row_limit(plan))

    @abstractmethod
    def score(self, answer: str, item: Mapping[str, Any]) -> float:
        """The reward of ``answer`` (its text) to the row ``item`` (the row's fields)."""

    def check_item(self, item: Mapping[str, Any], where: str) -> None:
        """Refuse a row :meth:`score` cannot read (``where``: its file and line); base: every row is fine."""

    def encode(self, examples: Sequence[Any]) -> list[PromptItem]:
        """Rows as prompt ids (chat rows through the model's chat template, with its generation
        prompt); every row is checked by :meth:`check_item` first (file and line named)."""
        out = []
        for e in examples:
            if isinstance(e, PromptItem):
                out.append(e)
                continue
            (e,) = as_reward_examples([e])
            self.check_item(e.item, e.where)
            ids = tuple(prompt_ids(self.tokenizer, e.prompt))
            if self.max_length is not None and len(ids) + self.max_new_tokens > self.max_length:
                raise DataFormatError(f"{e.where}: the prompt has {len(ids)} tokens and an answer may add "
                                      f"{self.max_new_tokens}: more than the {self.max_length} this run allows. "
                                      "Shorten the prompt, lower max_new_tokens or raise max_total_tokens")
            out.append(PromptItem(ids, e.item, e.where, tuple(e.references)))
        return out

    @cached_property
    def stop_token_ids(self) -> frozenset[int]:
        return stop_token_ids(self.tokenizer, at_line_break=self.one_line)

    def generation_inputs(self, batch: Sequence[PromptItem]) -> GenerationInputs:
        return GenerationInputs([list(e.prompt_ids) for e in batch], self.max_new_tokens, self.stop_token_ids)

    def answer_text(self, generated: Sequence[int]) -> str:
        """A generated answer as the grader sees it: its text (up to a line break, for one-line answers)."""
        text = self.tokenizer.decode(list(generated), skip_special_tokens=True)
        return (text.split(STOP_TEXT)[0] if self.one_line else text).strip()

    def answers(self, generated: list[list[int]], batch: Sequence[PromptItem]) -> tuple[list[str], list]:
        return [self.answer_text(g) for g in generated], [e.references for e in batch]

    def rewards(self, answers: list[str], batch: Sequence[PromptItem]) -> list[float]:
        return [self.score(a, e.item) for a, e in zip(answers, batch)]

    def generation_metrics(self, answers: list[str], references: list) -> dict:
        scored = [(a, r) for a, r in zip(answers, references) if r]
        if not scored:
            return {}
        return squad_scores([a for a, _ in scored], [r for _, r in scored])


@register("reward")
class GradedAnswersObjective(ScoredAnswersObjective):
    """Minus the mean grade of the generated answers: ``grader`` grades an answer
    (``{{sample.output_text}}``) against its row (``{{item.<field>}}``)."""

    def __init__(self, tokenizer, grader: Grader, max_new_tokens: int = 50, *, one_line: bool = False,
                 max_length: Optional[int] = None):
        super().__init__(tokenizer, max_new_tokens, one_line=one_line, max_length=max_length)
        self.grader = grader

    @classmethod
    def from_plan(cls, plan, name: str) -> "GradedAnswersObjective":
        """The objective of a :class:`~sglang.srt.mezo.training.plan.RunPlan` whose spec names it."""
        grader = parse_grader(plan.config.grader or SQUAD_F1_GRADER)
        return cls(plan.tokenizer, grader, plan.config.max_new_tokens, one_line=plan.preset.name == "squad",
                   max_length=row_limit(plan))

    def check_item(self, item: Mapping[str, Any], where: str) -> None:
        self.grader.check_item(item, where)

    def score(self, answer: str, item: Mapping[str, Any]) -> float:
        return self.grader.score(item, Sample(answer))
