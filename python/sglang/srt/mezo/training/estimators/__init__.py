"""Estimators: how a step measures its directions (:class:`~.base.Estimator`), one module each.

=================  ===================================================  ==========================
module             forwards per step (n directions)                     chosen when
=================  ===================================================  ==========================
``two_forward``    2n, over theta itself                                full weights; LoRA without
                                                                        two free slots
``paired``         n, theta +/- eps z in two LoRA slots                 LoRA (the default)
``split_batch``    1, direction k on part k of the batch                ``split_batch=True``
``population``     1, every direction on the whole batch, z-scored      ``reward_shaping="z-score"``
``fzoo``           1, n one-sided probes and theta itself on the whole  ``estimator="fzoo"``
                   batch, the step divided by the probes' losses' std
``hizoo``          1, n pairs theta +/- eps z / sqrt(H) and theta       ``estimator="hizoo"``
                   itself on the whole batch; H a diagonal Hessian
                   estimate that preconditions the step too
=================  ===================================================  ==========================

A new estimator is a module here with a subclass of :class:`~.base.Estimator` (or of
:class:`~.slots.SlotEstimator` if it measures on LoRA slots), and a line in :func:`choose`.

Two forwards over a tensor, the loss its sum (a stand-in for a model's forward):

>>> import torch
>>> from sglang.srt.mezo.zo.perturbable import PerturbableTensors
>>> theta = torch.zeros(3)
>>> estimator = choose(MeZOConfig(epsilon=0.5), PerturbableTensors([theta], [True]), [],
...                    loss=lambda batch: float(theta.sum()), sided=None)
>>> type(estimator).__name__
'TwoForwardSPSA'
>>> (lp, lm), = estimator.measure(["an item"], [7]).losses
>>> estimator.gradients([(lp, lm)]) == [(lp - lm) / 1.0], theta.tolist()  # theta is back
(True, [0.0, 0.0, 0.0])
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.estimators.base import Batch, Estimator, Measured
from sglang.srt.mezo.training.estimators.fzoo import FZOO, SlotMeasure
from sglang.srt.mezo.training.estimators.hizoo import HiZOO
from sglang.srt.mezo.training.estimators.paired import PairedForward
from sglang.srt.mezo.training.estimators.population import MirroredPopulation
from sglang.srt.mezo.training.estimators.slots import SidedMeasure, SlotEstimator, SlotPair
from sglang.srt.mezo.training.estimators.split_batch import SplitBatch
from sglang.srt.mezo.training.estimators.two_forward import LookAhead, TwoForwardSPSA
from sglang.srt.mezo.zo.hizoo import HessianDiagonal
from sglang.srt.mezo.zo.perturbable import PerturbableTensors

__all__ = ["Estimator", "FZOO", "HiZOO", "LookAhead", "Measured", "MirroredPopulation", "PairedForward",
           "SlotEstimator", "SplitBatch", "TwoForwardSPSA", "choose", "slot_pairs_needed"]


def slot_pairs_needed(config: MeZOConfig, free_slots: int, one_forward_loss: bool) -> int:
    """How many (+eps, -eps) LoRA slot pairs a run takes: 0 (two forwards over the adapter itself),
    1 (a paired forward), one per direction (a split batch, a population) or enough for FZOO's
    n_spsa + 1 slots or HiZOO's 2 * n_spsa + 1. ``free_slots``: the runner's LoRA slots besides the base model's and those
    other adapters hold pinned; ``one_forward_loss``: whether the objective's loss comes from one
    batched call (not a trainer subclass's own ``compute_loss``). A setting that cannot be had says so."""
    pairs = config.slot_pairs_per_forward
    if pairs > 1:
        needed = 2 * pairs
        mode = (f"estimator={config.estimator!r}" if config.estimator in ("fzoo", "hizoo") else
                "split_batch" if config.split_batch else "reward_shaping='z-score'")
        if not (free_slots >= needed and one_forward_loss):
            raise ValueError(
                f"{mode} with n_spsa={config.n_spsa} needs {needed} free LoRA slots (this runner "
                f"has {free_slots}: max_loras_per_batch >= {needed + 1} with no other adapter pinned) and an "
                f"objective whose loss comes from one forward (no compute_loss override); lower n_spsa or turn {mode} off"
            )
        return pairs
    possible = free_slots >= 2 and one_forward_loss
    if config.paired_forward and not possible:
        raise ValueError(
            "paired_forward=True needs two free LoRA slots (max_loras_per_batch >= 3 with no other "
            "adapter pinned) and an objective whose loss comes from one forward (no compute_loss override)"
        )
    return 1 if possible and config.paired_forward is not False else 0


def choose(config: MeZOConfig, tensors: PerturbableTensors, slot_pairs: Sequence[SlotPair],
           loss: Callable[[Batch], float], sided: SidedMeasure, *,
           slot_losses: Optional[SlotMeasure] = None, hessian: Optional[HessianDiagonal] = None) -> Estimator:
    """The estimator of a run with ``config`` whose trainable set has ``slot_pairs`` (none: two
    forwards). ``loss``: the objective's loss at theta; ``sided``: its (L+, L-) on slot pairs;
    ``slot_losses``: its loss of a batch on each of several slots (FZOO's and HiZOO's measure);
    ``hessian``: the update's Hessian estimate (HiZOO's, :attr:`StepUpdate.hessian
    <sglang.srt.mezo.zo.update.StepUpdate.hessian>`), which HiZOO's probes are scaled by."""
    if config.estimator == "hizoo":
        if slot_losses is None or not slot_pairs or hessian is None:
            raise ValueError("estimator='hizoo' measures on LoRA slots with the update's Hessian estimate: it needs "
                             "the trainable set's slot pairs, the objective's slot_losses and the update's hessian")
        # theta stays in the adapter's own slot (the first); the others take the +/- probes.
        return HiZOO(config.epsilon, tensors, [slot for pair in slot_pairs for slot in pair], slot_losses, hessian)
    if config.estimator == "fzoo":
        if slot_losses is None or not slot_pairs:
            raise ValueError("estimator='fzoo' measures on LoRA slots: it needs the trainable set's slot pairs "
                             "and the objective's slot_losses")
        # theta stays in the adapter's own slot (the first); the other slots take the probes.
        return FZOO(config.epsilon, tensors, [slot for pair in slot_pairs for slot in pair], slot_losses)
    if not slot_pairs:
        return TwoForwardSPSA(config.epsilon, tensors, loss, exact=config.exact_restore)
    if config.reward_shaping == "z-score":
        return MirroredPopulation(config.epsilon, tensors, slot_pairs, sided)
    if config.split_batch:
        return SplitBatch(config.epsilon, tensors, slot_pairs, sided)
    return PairedForward(config.epsilon, tensors, slot_pairs, sided)
