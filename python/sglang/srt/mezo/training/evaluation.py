"""An evaluation: one pass over examples at the trained weights, a chunk per unit of work (so a
server can serve requests between chunks), scored by the objective."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from sglang.srt.mezo.training.objectives.base import ChunkScores, Model, Objective


class Evaluation:
    """``examples`` (encoded) in chunks of ``batch_size``, every item on adapter ``lora_id`` of ``model``."""

    def __init__(self, model: Model, objective: Objective, examples: Sequence[Any], batch_size: int,
                 lora_id: Optional[str]):
        self.model, self.objective, self.examples = model, objective, examples
        self.batch_size, self.lora_id = batch_size, lora_id
        self.cursor = 0
        self.scores = ChunkScores()

    @property
    def done(self) -> bool:
        return self.cursor >= len(self.examples)

    @property
    def next_chunk(self) -> Sequence[Any]:
        """The examples the next :meth:`advance` evaluates."""
        return self.examples[self.cursor: self.cursor + self.batch_size]

    @torch.no_grad()
    def advance(self) -> None:
        chunk = self.next_chunk
        self.scores.add(self.objective.evaluate(self.model, chunk, self.lora_id))
        self.cursor += len(chunk)

    def run(self) -> dict:
        """Every chunk that is left, then :meth:`metrics`."""
        while not self.done:
            self.advance()
        return self.metrics()

    def metrics(self) -> dict:
        scores = self.scores
        result = {"eval_loss": scores.loss_sum / max(len(self.examples), 1),
                  **self.objective.metrics(scores.predictions, scores.references)}
        if scores.answers:
            result.update(self.objective.generation_metrics(scores.answers, scores.answer_references))
        return result
