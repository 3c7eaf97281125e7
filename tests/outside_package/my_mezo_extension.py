"""A user's extension module, outside the sglang package: what someone who runs sglang-mezo writes
to add code of their own. Tests put this folder on ``sys.path`` (or ``PYTHONPATH``) and name the
module: ``--extension my_mezo_extension`` (the CLI), ``--mezo-extensions my_mezo_extension`` (a
server), ``import my_mezo_extension`` (Python), or an entry point of the group ``sglang_mezo.extensions``.
Importing it registers everything below.

It imports only sglang-mezo's public names, as a user's module would.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from sglang.srt.mezo.data.graders import (
    Grader,
    GraderError,
    Sample,
    Template,
    check_keys,
    read_field,
    read_name,
    register_grader,
)
from sglang.srt.mezo.training.objectives import register_objective
from sglang.srt.mezo.training.objectives.completion import CompletionObjective
from sglang.srt.mezo.training.objectives.reward import ScoredAnswersObjective


# ---------------------------------------------------------------- a grader type: word_count
class WordCountGrader(Grader):
    """``{"type": "word_count", "input": "<template>", "max_words": N}``: the rendered ``input``'s
    number of words (split on whitespace) over ``max_words``, at most 1.0. With ``input``
    ``{{sample.output_text}}`` it rewards longer answers; with ``{{item.<field>}}`` the grade depends
    on the row alone, which is what makes it predictable in a test."""

    type = "word_count"

    def __init__(self, name: str, input: Template, max_words: int):
        super().__init__(name)
        self.input, self.max_words = input, max_words

    @classmethod
    def from_object(cls, obj: Mapping, where: str) -> "WordCountGrader":
        name = read_name(obj, where)
        check_keys(obj, where, name, {"input", "max_words"})
        template = Template(read_field(obj, "input", where, name), param=f"{where}.input", grader=name)
        max_words = read_field(obj, "max_words", where, name, int, required=False)
        max_words = 10 if max_words is None else max_words
        if max_words < 1:
            raise GraderError(f"grader {name!r}: {where}.max_words is {max_words}; give a whole number >= 1",
                              f"{where}.max_words")
        return cls(name, template, max_words)

    def score(self, item: Mapping, sample: Sample) -> float:
        return min(len(self.input.render(item, sample).split()) / self.max_words, 1.0)

    def templates(self) -> list[Template]:
        return [self.input]

    def to_dict(self) -> dict:
        return {"type": self.type, "name": self.name, "input": self.input.text, "max_words": self.max_words}


register_grader("word_count", WordCountGrader.from_object)


# ---------------------------------------------------------------- objectives of your own
class LabelSmoothedCompletion(CompletionObjective):
    """A loss of logits: the completion's cross-entropy with label smoothing (a share ``smoothing``
    of each target's probability spread over the vocabulary), as
    ``torch.nn.functional.cross_entropy(..., label_smoothing=...)`` defines it. Everything else
    (chat files, evaluation, generated answers) is the built-in ``completion``'s."""

    smoothing = 0.1

    def loss(self, logits: torch.Tensor, batch) -> float:
        targets = torch.tensor([t for e in batch for t, is_target in zip(e.input_ids, e.targets) if is_target])
        return torch.nn.functional.cross_entropy(logits.double(), targets, label_smoothing=self.smoothing).item()


register_objective(LabelSmoothedCompletion, "smoothed_completion")


class ShortAnswers(ScoredAnswersObjective):
    """A score of generated text: 0.3, plus 0.1 for each of an answer's first two words (scores no
    built-in grader gives, which is what makes them recognisable in a test)."""

    def score(self, answer: str, item: Mapping) -> float:
        return 0.3 + 0.1 * min(len(answer.split()), 2)


register_objective(ShortAnswers, "short_answers", rows=("prompts", "completions"))
