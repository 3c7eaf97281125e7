"""Teacher-forced completions: the loss is the mean cross-entropy of a completion's tokens given
everything before them (the MeZO paper's SQuAD objective, and OpenAI's ``supervised`` method on
chat files).

A batch item is a :class:`~sglang.srt.mezo.data.chat.TokenizedCompletion` (token ids and which of
them are targets: an assistant message's tokens, or a completion's). The forward is one packed
extend over prompt + completion with vocabulary logits only at the positions just before a target
token; the prompt's other positions never reach the LM head. The loss is the mean over every
target token of the batch (as a PEFT model's loss with ``-100`` labels is), reduced in float64.

Evaluation reports ``eval_loss`` (the same token mean over the whole eval set) and
``eval_mean_token_accuracy`` (greedy next-token accuracy on the target tokens); examples with
reference answers (SQuAD) are also answered by greedy generation through SGLang and scored by
SQuAD's exact match and F1.

>>> from sglang.srt.mezo.data.chat import ChatExample, CompletionExample, TokenizedCompletion, encode_all
>>> item = TokenizedCompletion((1, 5, 6, 7), (False, False, True, True), prompt_len=2)
>>> target_positions(item)
[1, 2]
"""

from __future__ import annotations

from functools import cached_property
from typing import Optional, Sequence, Union

import torch

from sglang.srt.mezo.data.chat import ChatExample, CompletionExample, TokenizedCompletion, encode_all
from sglang.srt.mezo.data.metrics import squad_scores
from sglang.srt.mezo.training.objectives import register
from sglang.srt.mezo.training.objectives.base import ForwardInputs, GenerationInputs, GenerativeObjective

#: Greedy answers stop at the end of a line (the MeZO paper's eos for SQuAD) or of a turn.
STOP_TEXT = "\n"


def target_positions(item: TokenizedCompletion) -> list[int]:
    """The positions whose next-token logits predict ``item``'s target tokens."""
    return [i - 1 for i, target in enumerate(item.targets) if target]


def row_limit(plan) -> int:
    """The most tokens a row of ``plan``'s run may have: the model's context (a tokenizer without one
    reports a huge sentinel), within what one forward of a runner with the run's KV cache can hold
    (half of it: the +/- eps sides)."""
    context = getattr(plan.tokenizer, "model_max_length", None)
    context = context if context and context < 10**6 else plan.preset.max_length
    return min(context, plan.config.max_total_tokens // 2)


def stop_token_ids(tokenizer, at_line_break: bool) -> frozenset[int]:
    """The end-of-sequence and end-of-turn tokens, and with ``at_line_break`` every token whose text
    holds a line break (a SQuAD answer is one line)."""
    stops = set()
    if at_line_break:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        stops = {i for i, text in enumerate(texts) if STOP_TEXT in text}
    stops |= {i for i in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"))
              if isinstance(i, int) and i != tokenizer.unk_token_id}
    return frozenset(stops)


def _targets(item: TokenizedCompletion) -> list[int]:
    return [t for t, target in zip(item.input_ids, item.targets) if target]


@register("completion")
class CompletionObjective(GenerativeObjective):
    """Mean cross-entropy of the target tokens; evaluation adds token accuracy and, for examples
    with references, greedy answers scored by exact match and F1.

    ``tokenizer`` decodes answers and names the stop tokens; ``max_new_tokens`` bounds an answer.
    """

    #: SQuAD's F1 of the generated answers; an eval set without references falls back to eval_loss.
    primary_metric = "eval_f1"

    def __init__(self, tokenizer, max_new_tokens: int = 50, max_length: Optional[int] = None):
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.max_length = max_length

    @classmethod
    def from_plan(cls, plan, name: str) -> "CompletionObjective":
        """The objective of a :class:`~sglang.srt.mezo.training.plan.RunPlan` whose spec names it."""
        return cls(plan.tokenizer, plan.config.max_new_tokens, row_limit(plan))

    def encode(self, examples: Sequence[Union[ChatExample, CompletionExample, TokenizedCompletion]]
               ) -> list[TokenizedCompletion]:
        """Rows as token ids with their target mask (chat rows through the model's chat template)."""
        return [e if isinstance(e, TokenizedCompletion) else encode_all(self.tokenizer, [e], self.max_length)[0]
                for e in examples]

    # ---- teacher forcing

    def forward_inputs(self, batch: Sequence[TokenizedCompletion]) -> ForwardInputs:
        return ForwardInputs([list(e.input_ids) for e in batch], [target_positions(e) for e in batch], None)

    def _token_nll(self, logits: torch.Tensor, batch: Sequence[TokenizedCompletion]) -> tuple[torch.Tensor, torch.Tensor]:
        """(negative log-likelihood, greedy hit) of every target token of ``batch``, in order."""
        targets = torch.tensor([t for e in batch for t in _targets(e)], device=logits.device)
        logits = logits.double()
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        return nll, logits.argmax(-1) == targets

    def loss(self, logits: torch.Tensor, batch: Sequence[TokenizedCompletion]) -> float:
        nll, _ = self._token_nll(logits, batch)
        return nll.mean().item()

    def loss_weight(self, batch: Sequence[TokenizedCompletion]) -> float:
        """The batch's target tokens: the loss is their mean, so shards combine by them."""
        return float(sum(sum(e.targets) for e in batch))

    def train_metrics(self, logits: torch.Tensor, batch: Sequence[TokenizedCompletion]) -> dict:
        """OpenAI's ``train_mean_token_accuracy``: greedy next-token hits on the target tokens."""
        _, hits = self._token_nll(logits, batch)
        return {"train_mean_token_accuracy": hits.double().mean().item()}

    def predict(self, logits: torch.Tensor, batch: Sequence[TokenizedCompletion]) -> tuple[list, list]:
        """Per example: (summed NLL, greedy hits) as the prediction and its target count as the reference."""
        nll, hits = self._token_nll(logits, batch)
        predictions, start = [], 0
        for e in batch:
            n = sum(e.targets)
            predictions.append((nll[start:start + n].sum().item(), int(hits[start:start + n].sum())))
            start += n
        return predictions, [sum(e.targets) for e in batch]

    def metrics(self, predictions: list, references: list) -> dict:
        tokens = max(sum(references), 1)
        return {"eval_loss": sum(p[0] for p in predictions) / tokens,
                "eval_mean_token_accuracy": sum(p[1] for p in predictions) / tokens}

    # ---- generation

    def generates(self, batch: Sequence[TokenizedCompletion]) -> bool:
        return any(e.references for e in batch)

    @cached_property
    def stop_token_ids(self) -> frozenset[int]:
        """Every token whose text holds a line break, and the end-of-sequence/turn tokens."""
        return stop_token_ids(self.tokenizer, at_line_break=True)

    def generation_inputs(self, batch: Sequence[TokenizedCompletion]) -> GenerationInputs:
        return GenerationInputs([list(e.input_ids[: e.prompt_len]) for e in batch], self.max_new_tokens,
                                self.stop_token_ids)

    def answer_text(self, generated: Sequence[int]) -> str:
        """A generated answer as text, up to its first line break."""
        return self.tokenizer.decode(list(generated), skip_special_tokens=True).split(STOP_TEXT)[0].strip()

    def answers(self, generated: list[list[int]], batch: Sequence[TokenizedCompletion]) -> tuple[list[str], list]:
        return [self.answer_text(g) for g in generated], [tuple(e.references) for e in batch]

    def generation_metrics(self, answers: list[str], references: list) -> dict:
        scored = [(a, r) for a, r in zip(answers, references) if r]
        if not scored:
            return {}
        return squad_scores([a for a, _ in scored], [r for _, r in scored])

