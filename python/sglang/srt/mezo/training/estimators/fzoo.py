"""FZOO (``estimator="fzoo"``; Dang et al., "FZOO: Fast Zeroth-Order Optimizer for Fine-Tuning
Large Language Models towards Adam-Scale Speed", arXiv 2506.09034): N one-sided probes and theta
itself, every one on the whole batch, in one batched forward over N + 1 LoRA slots, and a step
scaled by the spread of the probes' losses.

A step with seeds s_1..s_N writes theta + eps z_k into probe slot k (z_k drawn as every estimator
draws it, from the run's ``noise``: Gaussian by default for LoRA, random signs as in the paper with
``noise="rademacher"``), keeps theta in the adapter's own slot, and measures L_k = L(theta + eps z_k)
and L_0 = L(theta) in one call. The update is

    theta <- theta - lr / (N * sigma) * sum_k (L_k - L_0) z_k,
    sigma = the standard deviation of L_1..L_N (the sample's: divided by N - 1),

and no step at all when sigma is 0 (every probe measured the same loss).

Which form, and why. The paper's estimate is g = 1/(eps N) sum_k (L_k - L_0) u_k and its step
theta <- theta - lr g / sigma (as public summaries of the paper write it; the paper's own text was
not at hand here): the same direction with the learning rate divided by eps. Here eps is left out:
L_k - L_0 and sigma both grow like eps, so (L_k - L_0) / sigma does not depend on eps, and the step
moves theta by about lr along a unit-scale direction whatever eps is: the "normalized SGD" the paper
shows its update to be, with lr meaning what it means for ``update_rule="normalized"``. A learning
rate of the paper's form is ``eps`` times this one.

How it fits the estimator interface. Each direction's (L+, L-) is (L_k, L_0): data-parallel
workers combine those pairs as any other (the weighted mean over shards, so sigma is the global
batch's), and :meth:`FZOO.gradients` turns them into g_k = (L_k - L_0) / sigma. The update's mean
over seeds supplies the 1/N, so ``update_rule="sgd"`` moves theta by exactly the formula above, the
trajectory records (seeds, g) as for n-SPSA, and replay and resume repeat the step bit for bit. Any
other update rule would normalise a second time; the run spec refuses it
(:meth:`~sglang.srt.mezo.run_spec.config.MeZOConfig`, ``estimator``).

Three probes and theta, the loss of a "slot" its weights' sum (a stand-in for a forward):

>>> import torch
>>> from sglang.srt.mezo.training.objectives.base import SlotLosses
>>> from sglang.srt.mezo.zo.perturbable import PerturbableTensors
>>> theta = torch.zeros(4)
>>> slots = [("own", [theta])] + [(f"probe{k}", [torch.zeros(4)]) for k in range(3)]
>>> weights = {name: tensors[0] for name, tensors in slots}
>>> fzoo = FZOO(0.1, PerturbableTensors([theta], [True]), slots,
...             lambda batch, ids: SlotLosses([float(weights[i].sum()) for i in ids], {}))
>>> measured = fzoo.measure(["an item"], [1, 2, 3])
>>> [l0 for _, l0 in measured.losses]  # L_0 = L(theta) beside every probe
[0.0, 0.0, 0.0]
>>> fzoo.gradients([(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)])  # (L_k - L_0) / std(1, 2, 3)
[1.0, 2.0, 3.0]
>>> fzoo.gradients([(0.5, 0.5), (0.5, 0.5)])  # all probes alike: no step
[0.0, 0.0]
"""

from __future__ import annotations

import statistics
from typing import Callable, Optional, Sequence

import torch

from sglang.srt.mezo.training.estimators.base import Batch, Estimator, Measured
from sglang.srt.mezo.training.objectives.base import SlotLosses
from sglang.srt.mezo.zo.perturbable import PerturbableTensors

#: (batch, slot ids) -> the loss of the whole batch on each slot, from one call
#: (:meth:`~sglang.srt.mezo.training.objectives.base.Objective.slot_losses`).
SlotMeasure = Callable[[Batch, Sequence[Optional[str]]], SlotLosses]

#: A LoRA slot: its adapter id and its tensors (those the run trains, in the trainable set's order).
Slot = tuple[str, Sequence[torch.Tensor]]


class FZOO(Estimator):
    """``slots``: the adapter's own slot (theta) first, then at least one slot per probe the run
    draws (``n_spsa``); ``measure``: the objective's loss of a batch on each of several slots."""

    def __init__(self, epsilon: float, tensors: PerturbableTensors, slots: Sequence[Slot], measure: SlotMeasure):
        super().__init__(epsilon)
        self.tensors, self.slots, self.slot_measure = tensors, list(slots), measure

    def measure(self, batch: Batch, seeds: Sequence[int]) -> Measured:
        """(L_k, L_0) for each probe ``seeds[k]``: theta's own slot is read, never written."""
        if not batch:
            return Measured.nothing(len(seeds))
        if len(seeds) + 1 > len(self.slots):
            raise ValueError(f"estimator='fzoo' with n_spsa={len(seeds)} needs {len(seeds) + 1} LoRA slots (theta and "
                             f"a slot per probe); this trainable set has {len(self.slots)}")
        (own_id, _), probes = self.slots[0], self.slots[1:len(seeds) + 1]
        for seed, (_, slot) in zip(seeds, probes):
            for i, (t, p) in enumerate(zip(self.tensors.tensors, slot)):
                p.copy_(t).add_(self.tensors.z(seed, i, t), alpha=self.epsilon)
        losses, metrics = self.slot_measure(batch, [own_id] + [probe_id for probe_id, _ in probes])
        return Measured([(lk, losses[0]) for lk in losses[1:]], metrics, [])

    def gradients(self, losses: Sequence[tuple[float, float]]) -> list[float]:
        """g_k = (L_k - L_0) / sigma, sigma the standard deviation (N - 1) of the probes' losses;
        all 0 when sigma is 0. The update's mean over the N seeds makes it lr / (N sigma) * sum."""
        if len(losses) < 2:
            raise ValueError(f"estimator='fzoo' needs the losses of n_spsa >= 2 probes, got {len(losses)}")
        sigma = statistics.stdev([lk for lk, _ in losses])
        if sigma == 0:
            return [0.0] * len(losses)
        return [(lk - l0) / sigma for lk, l0 in losses]

    def sequence_forwards(self, rows: int, directions: int) -> int:
        """The whole batch on theta and on each of the N probes."""
        return rows * (directions + 1)

    def step_loss(self, losses: Sequence[tuple[float, float]]) -> float:
        """L_0: the batch's loss at theta, measured exactly (no probe's perturbation in it)."""
        return losses[0][1]
