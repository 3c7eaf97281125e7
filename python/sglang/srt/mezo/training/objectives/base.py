"""The objective interface: what the trainer, the run and evaluation know of an objective."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch  # noqa: E402


class ForwardInputs(NamedTuple):
    sequences: list[list[int]]
    positions: list[int]
    vocab_ids: Optional[torch.Tensor]  # None: every vocabulary row
