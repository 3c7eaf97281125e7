"""Next-token cross-entropy: the trainer's objective when it is given none.

A batch item is ``(prompt_token_ids, target_token_id)``; the loss is the cross-entropy of the
target at the prompt's last position, over the whole vocabulary.

>>> import torch
>>> objective = NextTokenObjective()
>>> objective.forward_inputs([([4, 5, 6], 7)]).positions
[2]
>>> logits = torch.zeros(1, 8); logits[0, 7] = 10.0
>>> round(objective.loss(logits, [([4, 5, 6], 7)]), 4)
0.0003
"""

from __future__ import annotations

from typing import Sequence

import torch

from sglang.srt.mezo.training.objectives.base import ForwardInputs, LogitsObjective


class NextTokenObjective(LogitsObjective):
    """Cross-entropy of one target token after each prompt."""

    def forward_inputs(self, batch: Sequence[tuple[Sequence[int], int]]) -> ForwardInputs:
        sequences = [list(ids) for ids, _ in batch]
        return ForwardInputs(sequences, [len(s) - 1 for s in sequences], None)

    def loss(self, logits: torch.Tensor, batch: Sequence[tuple[Sequence[int], int]]) -> float:
        targets = torch.tensor([t for _, t in batch], device=logits.device)
        return torch.nn.functional.cross_entropy(logits.double(), targets).item()

    def predict(self, logits: torch.Tensor, batch: Sequence[tuple[Sequence[int], int]]) -> tuple[list, list]:
        return logits.argmax(-1).tolist(), [t for _, t in batch]
