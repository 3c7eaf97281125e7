"""What the estimators that measure on LoRA slots share: theta +/- eps z_k written into direction
k's two slots of SGLang's LoRA pool, every direction measured by one batched call of the objective
(a forward, or a generation), the adapter's own slot put back from a copy (bit for bit)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Callable, Sequence

import torch

from sglang.srt.mezo.training.estimators.base import Batch, Estimator, Measured
from sglang.srt.mezo.training.objectives.base import SidedLosses, Slots
from sglang.srt.mezo.zo.perturbable import PerturbableTensors

#: (batch, parts, slots) -> (L+, L-) per direction: part k of the batch on slot pair k
#: (:meth:`~sglang.srt.mezo.training.objectives.base.Objective.sided_losses`).
SidedMeasure = Callable[[Batch, Sequence[range], Slots], SidedLosses]

#: A direction's two slots: (+eps adapter id, its tensors), (-eps adapter id, its tensors).
SlotPair = tuple[tuple[str, Sequence[torch.Tensor]], tuple[str, Sequence[torch.Tensor]]]


class SlotEstimator(Estimator):
    """``slot_pairs``: the LoRA slots, one pair per direction a call can hold; the first pair's
    plus slot is the adapter's own."""

    def __init__(self, epsilon: float, tensors: PerturbableTensors, slot_pairs: Sequence[SlotPair],
                 sided: SidedMeasure):
        super().__init__(epsilon)
        self.tensors, self.slot_pairs, self.sided = tensors, list(slot_pairs), sided

    def measure(self, batch: Batch, seeds: Sequence[int]) -> Measured:
        if not batch:
            return Measured.nothing(len(seeds))
        return self.measure_on_slots(batch, seeds)

    @abstractmethod
    def measure_on_slots(self, batch: Batch, seeds: Sequence[int]) -> Measured:
        """:meth:`measure` of a batch that is not empty, by :meth:`on_slots` calls."""

    def on_slots(self, batch: Batch, seeds: Sequence[int], parts: Sequence[range]) -> Measured:
        """(L+, L-) of direction ``seeds[k]`` on part ``parts[k]`` of ``batch``, from one call."""
        eps = self.epsilon
        theta = self.tensors.snapshot()
        try:
            slots = []
            for seed, ((plus_id, plus), (minus_id, minus)) in zip(seeds, self.slot_pairs):
                for i, (t, p, m) in enumerate(zip(theta, plus, minus)):
                    z = self.tensors.z(seed, i, t)
                    m.copy_(t).add_(z, alpha=-eps)
                    p.copy_(t).add_(z, alpha=eps)
                slots.append((plus_id, minus_id))
            losses, metrics = self.sided(batch, parts, slots)
            return Measured(losses, metrics, [])
        finally:
            self.tensors.copy_back(theta)
