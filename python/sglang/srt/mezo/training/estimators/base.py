"""The estimator interface: how a MeZO step measures the loss difference along its directions.

A step draws n direction seeds; an :class:`Estimator` measures (L+, L-), the loss at theta + eps z_k
and at theta - eps z_k, for each, and turns them into projected gradients. The update rule
(:mod:`sglang.srt.mezo.zo.update`) then moves theta. Estimators differ in how many forwards that
takes and where the perturbed weights live: two forwards over theta itself (:mod:`.two_forward`),
one forward over two LoRA slots (:mod:`.paired`), one forward that gives every direction its own
part of the batch (:mod:`.split_batch`), one that runs the whole batch on every direction and
ranks the results (:mod:`.population`), one-sided probes measured beside theta itself, whose
(L+, L-) are (L_k, L_0) (:mod:`.fzoo`), or two-sided probes preconditioned by a Hessian estimate and
measured beside theta, whose last pair is (L0, L0) (:mod:`.hizoo`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple, Optional, Sequence

from sglang.srt.mezo.zo.noise import Op

Batch = Sequence[Any]


class Measured(NamedTuple):
    """What an estimator measured for a step."""

    #: (L+, L-) per direction.
    losses: list[tuple[float, float]]
    #: The objective's other training metrics of the step (e.g. train_mean_token_accuracy).
    metrics: dict
    #: Operations on theta the step still owes, for its update pass to apply (the add/subtract
    #: restore's last +eps z); if the step is abandoned, they are applied on their own.
    owed: list[Op]
    #: The seed of a look-ahead perturbation measuring took off first (see :meth:`Estimator.settle`).
    settled: Optional[int] = None

    @classmethod
    def nothing(cls, directions: int, settled: Optional[int] = None) -> "Measured":
        """An empty batch (a data-parallel worker's empty share): no loss, no forward."""
        return cls([(0.0, 0.0)] * directions, {}, [], settled)


class Estimator(ABC):
    """One way of estimating a step's projected gradients (see the module docstring)."""

    #: How theta comes back after a -eps pass, as the trajectory records it: "exact" (a copy, or
    #: slots of their own) or "add-subtract" (+eps z, -2 eps z, +eps z, which replay repeats).
    restore: str = "exact"

    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    @abstractmethod
    def measure(self, batch: Batch, seeds: Sequence[int]) -> Measured:
        """(L+, L-) of each direction ``seeds[k]`` on ``batch``; theta is as before afterwards, but
        for :attr:`Measured.owed`."""

    def gradients(self, losses: Sequence[tuple[float, float]]) -> list[float]:
        """The projected gradient of each direction: (L+ - L-) / (2 eps)."""
        return [(lp - lm) / (2 * self.epsilon) for lp, lm in losses]

    def curvatures(self, losses: Sequence[tuple[float, float]]) -> Optional[list[float]]:
        """What the trajectory records per direction beside (seed, g) for the update to repeat: base,
        nothing (None); HiZOO, the curvature terms its Hessian estimate learns from."""
        return None

    def sequence_forwards(self, rows: int, directions: int) -> int:
        """How many sequences a step of ``rows`` examples and ``directions`` seeds runs through the
        model (a batched forward of B sequences counts B): the cost that accuracy per forward is
        measured against. Base: every direction on the whole batch, at +eps and at -eps."""
        return 2 * rows * directions

    def step_loss(self, losses: Sequence[tuple[float, float]]) -> float:
        """The training loss a step reports from its directions' (L+, L-): their mean."""
        return sum(lp + lm for lp, lm in losses) / (2 * len(losses))

    def look_ahead(self, seed: int) -> list[Op]:
        """Operations that put the next step's first perturbation (``seed``) on now, for the update
        pass to apply with its own; base: none (the next step perturbs for itself)."""
        return []

    def settle(self) -> Optional[int]:
        """Take a perturbation put on ahead back off, so that theta is the trained weights; returns
        its seed (None: there was none) for the trajectory to record."""
        return None
