"""The estimators on plain tensors (no model): what each measures, and that theta comes back."""

from __future__ import annotations

import torch

from sglang.srt.mezo.training.estimators import (
    FZOO,
    HiZOO,
    MirroredPopulation,
    PairedForward,
    SplitBatch,
    TwoForwardSPSA,
)
from sglang.srt.mezo.training.objectives.base import SidedLosses, SlotLosses
from sglang.srt.mezo.zo.hizoo import HessianDiagonal
from sglang.srt.mezo.zo.noise import AddZ
from sglang.srt.mezo.zo.perturbable import PerturbableTensors, decay_mask

EPS = 0.1


def quadratic(theta: torch.Tensor):
    """Loss of a batch of targets: mean over items of ||theta - target||^2 (doubles, as a forward's loss)."""
    return lambda batch: float(sum(((theta.double() - t) ** 2).sum() for t in batch) / len(batch))


def make(seed: int = 0) -> tuple[torch.Tensor, PerturbableTensors]:
    theta = torch.randn(64, generator=torch.Generator().manual_seed(seed))
    return theta, PerturbableTensors([theta], decay_mask(["w.weight"]))


BATCH = [torch.full((64,), float(k)) for k in range(4)]


def test_two_forward_measures_both_sides_and_restores_exactly():
    theta, tensors = make()
    start = theta.clone()
    estimator = TwoForwardSPSA(EPS, tensors, quadratic(theta), exact=True)
    measured = estimator.measure(BATCH, [7, 8])
    assert torch.equal(theta, start) and measured.owed == []
    for (lp, lm), seed in zip(measured.losses, [7, 8]):
        z = tensors.z(seed, 0, theta)
        assert abs(lp - quadratic(start + EPS * z)(BATCH)) < 1e-3
        assert abs(lm - quadratic(start - EPS * z)(BATCH)) < 1e-3
    assert estimator.gradients([(3.0, 1.0)]) == [(3.0 - 1.0) / (2 * EPS)]


def test_add_subtract_restore_owes_the_last_plus_eps_to_the_update():
    theta, tensors = make()
    start = theta.clone()
    estimator = TwoForwardSPSA(EPS, tensors, quadratic(theta), exact=False)
    assert estimator.restore == "add-subtract"
    measured = estimator.measure(BATCH, [7, 8])
    assert measured.owed == [AddZ(8, EPS)]
    assert torch.allclose(theta, start - EPS * tensors.z(8, 0, theta), atol=1e-6)  # left at theta - eps z
    tensors.move(measured.owed)
    assert torch.allclose(theta, start, atol=1e-6)


def test_a_look_ahead_is_claimed_by_its_step_and_taken_off_otherwise():
    theta, tensors = make()
    start = theta.clone()
    estimator = TwoForwardSPSA(EPS, tensors, quadratic(theta), exact=False)
    tensors.move(estimator.look_ahead(5))  # an update pass put the next step's +eps z on
    measured = estimator.measure(BATCH, [5])  # that step: no second +eps pass, nothing settled
    assert measured.settled is None and estimator.ahead.seed is None
    tensors.move(measured.owed)
    tensors.move(estimator.look_ahead(6))
    measured = estimator.measure(BATCH, [9])
    assert measured.settled == 6  # a step with other seeds: taken off first
    tensors.move(measured.owed)
    tensors.move(estimator.look_ahead(6))
    assert estimator.settle() == 6 and estimator.settle() is None
    assert torch.allclose(theta, start, atol=1e-5)


class FakeSlots:
    """Slot pairs as plain tensors, and an objective's sided measure that reads them: the loss of
    part k on a slot is the quadratic loss at that slot's weights."""

    def __init__(self, n: int, like: torch.Tensor):
        self.tensors = {f"{sign}{k}": torch.zeros_like(like) for k in range(n) for sign in ("plus", "minus")}
        self.pairs = [((f"plus{k}", [self.tensors[f"plus{k}"]]), (f"minus{k}", [self.tensors[f"minus{k}"]]))
                      for k in range(n)]
        self.calls = []

    def sided(self, batch, parts, slots) -> SidedLosses:
        self.calls.append([list(p) for p in parts])
        losses = [tuple(quadratic(self.tensors[slot])([batch[r] for r in rows]) for slot in pair)
                  for rows, pair in zip(parts, slots)]
        return SidedLosses(losses, {"calls": len(self.calls)})


def test_slot_estimators_split_the_batch_as_they_say_in_one_call_and_leave_theta_alone():
    theta, tensors = make()
    start = theta.clone()
    for cls, parts in ((SplitBatch, [[0, 1], [2, 3]]), (MirroredPopulation, [[0, 1, 2, 3]] * 2)):
        slots = FakeSlots(2, theta)
        measured = cls(EPS, tensors, slots.pairs, slots.sided).measure(BATCH, [3, 4])
        assert slots.calls == [parts] and torch.equal(theta, start)
        for (lp, lm), seed, rows in zip(measured.losses, [3, 4], parts):
            z = tensors.z(seed, 0, theta)
            assert abs(lp - quadratic(start + EPS * z)([BATCH[r] for r in rows])) < 1e-3
            assert abs(lm - quadratic(start - EPS * z)([BATCH[r] for r in rows])) < 1e-3
    slots = FakeSlots(1, theta)
    measured = PairedForward(EPS, tensors, slots.pairs, slots.sided).measure(BATCH, [3, 4])
    assert slots.calls == [[[0, 1, 2, 3]]] * 2 and len(measured.losses) == 2  # one call a direction


def test_the_population_weighs_directions_by_z_scored_losses():
    _, tensors = make()
    population = MirroredPopulation(EPS, tensors, [], lambda *a: None)
    assert population.gradients([(1.0, 3.0), (2.0, 2.0)]) == [-1.414213562373095, 0.0]


def test_an_empty_share_measures_nothing():
    theta, tensors = make()
    slots = FakeSlots(2, theta)
    for estimator in (TwoForwardSPSA(EPS, tensors, quadratic(theta), exact=True),
                      SplitBatch(EPS, tensors, slots.pairs, slots.sided)):
        assert estimator.measure([], [1, 2]).losses == [(0.0, 0.0), (0.0, 0.0)]
    assert slots.calls == []


def test_each_estimator_counts_the_sequences_it_sends_through_the_model():
    """sequence_forwards (the step event's cost, what accuracy per forward is plotted against) is
    what measure() actually asked of the stand-in model: rows per call times slots per call."""
    theta, tensors = make()
    rows_seen = []

    def loss(batch):
        rows_seen.append(len(batch))
        return 0.0

    def slot_losses(batch, ids):
        rows_seen.append(len(batch) * len(ids))
        return SlotLosses([0.0] * len(ids), {})

    pairs = FakeSlots(3, theta)

    def sided(batch, parts, slots):
        rows_seen.append(sum(2 * len(part) for part in parts))
        return pairs.sided(batch, parts, slots)

    own = [("own", [theta])] + [(f"probe{k}", [torch.zeros_like(theta)]) for k in range(6)]
    hessian = HessianDiagonal([theta], smoothing=1e-8, epsilon=EPS)
    for n in (1, 2, 3):
        for estimator in (TwoForwardSPSA(EPS, tensors, loss, exact=True),
                          PairedForward(EPS, tensors, pairs.pairs[:1], sided),
                          SplitBatch(EPS, tensors, pairs.pairs, sided),
                          MirroredPopulation(EPS, tensors, pairs.pairs, sided),
                          FZOO(EPS, tensors, own, slot_losses),
                          HiZOO(EPS, tensors, own, slot_losses, hessian)):
            if isinstance(estimator, FZOO) and n < 2:
                continue  # FZOO's sigma needs two probes
            rows_seen.clear()
            estimator.measure(BATCH, list(range(1, n + 1)))
            assert sum(rows_seen) == estimator.sequence_forwards(len(BATCH), n), (type(estimator).__name__, n)
