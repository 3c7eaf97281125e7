"""The stream of direction seeds a run's steps draw, from the run's seed: each step's n seeds name
its perturbations z (regenerated from them, never stored), and the stream's state is all a
checkpoint needs to draw the same seeds on resume."""

from __future__ import annotations

import random


def rng_state(rng: random.Random) -> list:
    """A ``random.Random``'s state as JSON-able lists."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: list) -> None:
    """Put back a state :func:`rng_state` gave."""
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


class SeedStream:
    """Direction seeds, ``n`` a step.

    >>> stream = SeedStream(seed=42, n=2)
    >>> upcoming = stream.peek()
    >>> stream.draw() == upcoming, len(upcoming)
    (True, 2)
    """

    def __init__(self, seed: int, n: int):
        self.rng, self.n = random.Random(seed), n

    def draw(self) -> list[int]:
        """The next step's seeds."""
        return [self.rng.randrange(2**62) for _ in range(self.n)]

    def peek(self) -> list[int]:
        """The seeds :meth:`draw` will give next, without drawing them (the saved state stays put)."""
        rng = random.Random()
        rng.setstate(self.rng.getstate())
        return [rng.randrange(2**62) for _ in range(self.n)]

    def state_dict(self) -> list:
        return rng_state(self.rng)

    def load_state_dict(self, state: list) -> None:
        set_rng_state(self.rng, state)
