"""n-SPSA in one forward (``split_batch``): n directions get a slot pair each and direction k is
measured on part k of the batch, so one forward of the batch gives n projected gradients instead
of one, each from fewer examples."""

from __future__ import annotations

from typing import Sequence

from sglang.srt.mezo.training.estimators.base import Batch, Measured
from sglang.srt.mezo.training.estimators.slots import SlotEstimator
from sglang.srt.mezo.zo.update import split_evenly


class SplitBatch(SlotEstimator):
    def measure_on_slots(self, batch: Batch, seeds: Sequence[int]) -> Measured:
        if len(batch) < len(seeds):  # a data-parallel worker's share of the batch, say
            raise ValueError(f"split_batch: a batch of {len(batch)} examples cannot give each of n_spsa={len(seeds)} "
                             "directions its own; raise batch_size or lower n_spsa")
        return self.on_slots(batch, seeds, split_evenly(len(batch), len(seeds)))

    def sequence_forwards(self, rows: int, directions: int) -> int:
        """Each example once at +eps and once at -eps, whatever the number of directions."""
        return 2 * rows
