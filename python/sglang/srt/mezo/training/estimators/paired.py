"""The +eps and -eps passes of a direction as one forward: theta + eps z in the adapter's own LoRA
slot, theta - eps z in a twin slot, every example of the batch run once on each (SGLang serves each
sequence of a batch with its own adapter). One forward per direction instead of two."""

from __future__ import annotations

from typing import Sequence

from sglang.srt.mezo.training.estimators.base import Batch, Measured
from sglang.srt.mezo.training.estimators.slots import SlotEstimator


class PairedForward(SlotEstimator):
    def measure_on_slots(self, batch: Batch, seeds: Sequence[int]) -> Measured:
        losses, metrics = [], {}
        for seed in seeds:  # one forward each, on the one slot pair
            measured = self.on_slots(batch, [seed], [range(len(batch))])
            losses += measured.losses
            metrics = measured.metrics
        return Measured(losses, metrics, [])
