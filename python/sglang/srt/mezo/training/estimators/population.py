"""A mirrored population (``reward_shaping="z-score"``, evolution strategies at scale): every
direction runs the whole batch on its slot pair, all in one forward or generation, and the 2n
losses are z-scored together before they weigh the directions: the step follows how the losses
compare within the population rather than their scale, so a sparse or noisy reward does not set
the step size."""

from __future__ import annotations

from typing import Sequence

from sglang.srt.mezo.training.estimators.base import Batch, Measured
from sglang.srt.mezo.training.estimators.slots import SlotEstimator
from sglang.srt.mezo.zo.update import z_scored


class MirroredPopulation(SlotEstimator):
    def measure_on_slots(self, batch: Batch, seeds: Sequence[int]) -> Measured:
        return self.on_slots(batch, seeds, [range(len(batch))] * len(seeds))

    def gradients(self, losses: Sequence[tuple[float, float]]) -> list[float]:
        """(z+ - z-) / 2 of the z-scored pairs: no eps, the population's spread sets the scale."""
        return [(zp - zm) / 2 for zp, zm in z_scored(losses)]
