"""HiZOO (``estimator="hizoo"``; Zhao et al., "Second-Order Fine-Tuning without Pain for LLMs: A
Hessian Informed Zeroth-Order Optimizer", arXiv 2402.15173): MeZO's two-sided probes preconditioned
by a diagonal Hessian estimate H, and the loss at theta itself (the one extra forward), every one
on the whole batch, in one batched forward over 2N + 1 LoRA slots.

A step with seeds s_1..s_N writes theta + eps z_k / sqrt(H) and theta - eps z_k / sqrt(H) into
direction k's two slots (z_k as every estimator draws it; H from the run's
:class:`~sglang.srt.mezo.zo.hizoo.HessianDiagonal`, the one the update moves), keeps theta in the
adapter's own slot, and measures L+_k, L-_k and L0 in one call. The update
(:class:`~sglang.srt.mezo.zo.update.StepUpdate`) then folds the curvature terms
L+_k + L-_k - 2 L0 into H and moves theta by -lr * mean_k g_k z_k / sqrt(H), g_k = (L+_k - L-_k) / (2 eps).
The formulas, their source (the authors' reference code) and where this departs from it:
:mod:`sglang.srt.mezo.zo.hizoo`.

How it fits the estimator interface. :attr:`Measured.losses` holds each direction's (L+_k, L-_k)
and, last, (L0, L0): data-parallel workers combine those pairs as any other (the weighted mean
over shards), so g_k, the curvature terms and the reported loss are the global batch's.
:meth:`HiZOO.gradients` reads the directions' pairs, :meth:`HiZOO.curvatures` the curvature terms
the trajectory records beside (seeds, g), :meth:`HiZOO.step_loss` L0.

One direction and theta, the loss of a slot its weights' sum (a stand-in for a forward):

>>> import torch
>>> from sglang.srt.mezo.training.objectives.base import SlotLosses
>>> from sglang.srt.mezo.zo.hizoo import HessianDiagonal
>>> from sglang.srt.mezo.zo.perturbable import PerturbableTensors
>>> theta = torch.zeros(4)
>>> slots = [(name, [theta if name == "own" else torch.zeros(4)]) for name in ("own", "plus", "minus")]
>>> weights = {name: tensors[0] for name, tensors in slots}
>>> hizoo = HiZOO(0.1, PerturbableTensors([theta], [True]), slots,
...               lambda batch, ids: SlotLosses([float(weights[i].sum()) for i in ids], {}),
...               HessianDiagonal([theta], smoothing=1e-8, epsilon=0.1))
>>> losses = hizoo.measure(["an item"], [1]).losses
>>> len(losses), losses[-1]  # one direction's (L+, L-), then (L0, L0)
(2, (0.0, 0.0))
>>> hizoo.gradients([(1.0, 0.5), (0.25, 0.25)]), hizoo.curvatures([(1.0, 0.5), (0.25, 0.25)])
([2.5], [1.0])
>>> hizoo.step_loss([(1.0, 0.5), (0.25, 0.25)])
0.25
"""

from __future__ import annotations

from typing import Sequence

from sglang.srt.mezo.training.estimators.base import Batch, Estimator, Measured
from sglang.srt.mezo.training.estimators.fzoo import Slot, SlotMeasure
from sglang.srt.mezo.zo.hizoo import HessianDiagonal
from sglang.srt.mezo.zo.perturbable import PerturbableTensors


class HiZOO(Estimator):
    """``slots``: the adapter's own slot (theta) first, then two slots (+, -) per direction the run
    draws; ``measure``: the objective's loss of a batch on each of several slots; ``hessian``: the
    update's H (read here, moved by the update)."""

    def __init__(self, epsilon: float, tensors: PerturbableTensors, slots: Sequence[Slot], measure: SlotMeasure,
                 hessian: HessianDiagonal):
        super().__init__(epsilon)
        self.tensors, self.slots, self.slot_measure, self.hessian = tensors, list(slots), measure, hessian

    def measure(self, batch: Batch, seeds: Sequence[int]) -> Measured:
        """(L+_k, L-_k) for each direction ``seeds[k]``, then (L0, L0): theta's own slot is read, never written."""
        if not batch:
            return Measured.nothing(len(seeds) + 1)
        if 2 * len(seeds) + 1 > len(self.slots):
            raise ValueError(f"estimator='hizoo' with n_spsa={len(seeds)} needs {2 * len(seeds) + 1} LoRA slots "
                             f"(theta and two a direction); this trainable set has {len(self.slots)}")
        own_id = self.slots[0][0]
        ids = [own_id]
        for k, seed in enumerate(seeds):
            (plus_id, plus), (minus_id, minus) = self.slots[1 + 2 * k], self.slots[2 + 2 * k]
            for i, (t, p, m) in enumerate(zip(self.tensors.tensors, plus, minus)):
                step = self.hessian.perturbation(i, self.tensors.z(seed, i, t))
                p.copy_(t).add_(step, alpha=self.epsilon)
                m.copy_(t).add_(step, alpha=-self.epsilon)
            ids += [plus_id, minus_id]
        losses, metrics = self.slot_measure(batch, ids)
        pairs = [(losses[1 + 2 * k], losses[2 + 2 * k]) for k in range(len(seeds))]
        return Measured([*pairs, (losses[0], losses[0])], metrics, [])

    def gradients(self, losses: Sequence[tuple[float, float]]) -> list[float]:
        """g_k = (L+_k - L-_k) / (2 eps) of each direction (the last pair, (L0, L0), is not one)."""
        return super().gradients(losses[:-1])

    def curvatures(self, losses: Sequence[tuple[float, float]]) -> list[float]:
        """L+_k + L-_k - 2 L0 of each direction: what H learns from, and what the trajectory records."""
        l0 = losses[-1][0]
        return [lp + lm - 2 * l0 for lp, lm in losses[:-1]]

    def sequence_forwards(self, rows: int, directions: int) -> int:
        """The whole batch on theta and at +eps and -eps of each direction."""
        return rows * (2 * directions + 1)

    def step_loss(self, losses: Sequence[tuple[float, float]]) -> float:
        """L0: the batch's loss at theta, measured exactly (no perturbation in it)."""
        return losses[-1][0]
