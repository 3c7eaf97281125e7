"""Two forwards per direction over theta itself (MeZO's own step, and the only way for full
weights): theta + eps z, a forward, theta - eps z, a forward, theta back.

theta comes back either from a copy ("exact", bit for bit) or by adding +eps z once more
("add-subtract", no copy of the weights; the last bits round, and replay repeats the arithmetic).
With add/subtract, the last direction's restore is owed to the update pass, and that pass can also
put on the next step's +eps z (:class:`LookAhead`): z is drawn three times a step instead of four.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from sglang.srt.mezo.training.estimators.base import Batch, Estimator, Measured
from sglang.srt.mezo.zo.noise import AddZ, Op
from sglang.srt.mezo.zo.perturbable import PerturbableTensors


class LookAhead:
    """The next step's +eps z, put on by this step's update pass. Until that step claims it, the
    weights are perturbed: anything else that reads them takes it off first (:meth:`take_off`)."""

    def __init__(self, tensors: PerturbableTensors, epsilon: float):
        self.tensors, self.epsilon = tensors, epsilon
        self.seed: Optional[int] = None

    def put_on(self, seed: int) -> list[Op]:
        self.seed = seed
        return [AddZ(seed, self.epsilon)]

    def claim(self, seed: int) -> bool:
        """Whether ``seed``'s +eps z is on already (it is then the measuring step's)."""
        if self.seed != seed:
            return False
        self.seed = None
        return True

    def take_off(self) -> Optional[int]:
        if self.seed is None:
            return None
        seed, self.seed = self.seed, None
        self.tensors.perturb(seed, -self.epsilon)
        return seed


class TwoForwardSPSA(Estimator):
    """``loss(batch)``: the objective's loss at the current theta (one forward); ``exact``: restore
    theta from a copy (else add/subtract)."""

    def __init__(self, epsilon: float, tensors: PerturbableTensors, loss: Callable[[Batch], float], *, exact: bool):
        super().__init__(epsilon)
        self.tensors, self.loss, self.exact = tensors, loss, exact
        self.ahead = LookAhead(tensors, epsilon)

    @property
    def restore(self) -> str:
        return "exact" if self.exact else "add-subtract"

    def measure(self, batch: Batch, seeds: Sequence[int]) -> Measured:
        settled = None
        if self.ahead.seed is not None and (self.ahead.seed != seeds[0] or not batch):
            settled = self.ahead.take_off()  # the steps did not go as announced (a seed state set by hand, say)
        if not batch:
            return Measured.nothing(len(seeds), settled)
        owed = [] if self.exact else [AddZ(seeds[-1], self.epsilon)]
        losses = [self.losses(batch, s, restore=not owed or k < len(seeds) - 1) for k, s in enumerate(seeds)]
        return Measured(losses, {}, owed, settled)

    def losses(self, batch: Batch, seed: int, restore: bool = True) -> tuple[float, float]:
        """(L+, L-) along ``seed``. ``restore=False`` (add/subtract only): theta is left at
        theta - eps z, for the update pass to undo in the same pass over the weights."""
        eps = self.epsilon
        snapshot = self.tensors.snapshot() if self.exact else None
        if not self.ahead.claim(seed):
            self.tensors.perturb(seed, eps)
        loss_plus = self.loss(batch)
        if snapshot is None:
            self.tensors.perturb(seed, -2 * eps)
        else:
            self.tensors.copy_back(snapshot)
            self.tensors.perturb(seed, -eps)
        loss_minus = self.loss(batch)
        if snapshot is not None:
            self.tensors.copy_back(snapshot)
        elif restore:
            self.tensors.perturb(seed, eps)
        return loss_plus, loss_minus

    def look_ahead(self, seed: int) -> list[Op]:
        return self.ahead.put_on(seed)

    def settle(self) -> Optional[int]:
        return self.ahead.take_off()
