"""Noticing a run that diverges while it happens, and the rule a run follows when it does.

A zeroth-order step moves the weights by about the learning rate whatever the signal, so once the
loss is near what the step size allows, further steps walk at random and the loss climbs back up
(SQuAD at lr 3e-3: train loss 1.65 over steps 151-200, 3.20 over 451-500). Two signals are watched:

- the **smoothed train loss**: the mean of the last ``window`` steps' losses, against the lowest
  such mean since the watch started (or since its last reaction);
- the **validation loss** at each evaluation, against the lowest one so far.

Either one more than ``tolerance`` (relative) above its best, and at least :data:`MIN_RISE` above
it in absolute terms (a loss near zero doubles on noise alone), is a divergence. What the run
does then (``on_divergence``):

- ``"shrink"`` (the default): the learning rate of every later step is halved (:data:`SHRINK`),
  up to :data:`MAX_SHRINKS` times; a divergence after that stops the run;
- ``"stop"``: the run stops at once (it evaluates and saves, then ends);
- ``"warn"``: an event and a log line, nothing else.

Whatever happened, a run with validation data returns the checkpoint with the best validation
loss (``load_best_model_at_end``, :mod:`sglang.srt.mezo.training.run`).

The watch holds only numbers (its state is saved with a checkpoint), so a resumed run notices the
same divergence at the same step; the learning-rate changes themselves are recorded in the
trajectory (:attr:`~sglang.srt.mezo.zo.trajectory.Trajectory.lr_scales`), so replay repeats them.

>>> watch = DivergenceWatch(window=2, tolerance=0.2)
>>> [watch.on_train_loss(s, x) for s, x in enumerate([2.0, 2.0, 1.0, 1.0, 1.0], 1)]
[None, None, None, None, None]
>>> watch.on_train_loss(6, 2.0).describe()
'the train loss (mean of the last 2 steps) is 1.5000 at step 6, 50% above its best, 1.0000 at step 4'
>>> watch.on_eval(6, 0.9), watch.on_eval(7, 1.2).signal
(None, 'eval_loss')
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Literal, Optional

#: What multiplies the learning rate at each "shrink" reaction.
SHRINK = 0.5

#: Reactions of the "shrink" rule before a divergence stops the run.
MAX_SHRINKS = 3

#: The smallest rise (in the loss's own units, nats for cross-entropy) that counts: a loss near
#: zero, as a label-word loss late in a run, moves by more than any relative tolerance on noise.
MIN_RISE = 0.05

Reaction = Literal["shrink", "stop", "warn"]


def default_window(num_steps: int) -> int:
    """The steps a train-loss mean covers when the run does not say: a tenth of the run, 10-100.

    >>> default_window(100), default_window(500), default_window(5000)
    (10, 50, 100)
    """
    return min(100, max(10, num_steps // 10))


@dataclass(frozen=True)
class Divergence:
    """What a watch noticed: ``signal`` ("train_loss" or "eval_loss") is ``value`` at ``step``,
    ``best`` at ``best_step`` before it."""

    signal: str
    step: int
    value: float
    best: float
    best_step: int
    window: int

    def describe(self) -> str:
        what = f"the train loss (mean of the last {self.window} steps)" if self.signal == "train_loss" \
            else "the validation loss"
        rise = (self.value - self.best) / self.best if self.best > 0 else float("inf")
        return (f"{what} is {self.value:.4f} at step {self.step}, {100 * rise:.0f}% above its best, "
                f"{self.best:.4f} at step {self.best_step}")

    def to_dict(self) -> dict:
        return asdict(self)


class DivergenceWatch:
    """The two signals of the module docstring, fed one step loss and one evaluation at a time."""

    def __init__(self, window: int, tolerance: float):
        if window < 1:
            raise ValueError(f"divergence window must be >= 1 step, got {window}")
        self.window, self.tolerance = window, tolerance
        self._recent: deque[float] = deque(maxlen=window)
        self._best: dict[str, tuple[float, int]] = {}  # signal -> (lowest value, its step)

    def _risen(self, value: float, best: float) -> bool:
        return value - best > max(self.tolerance * abs(best), MIN_RISE)

    def on_train_loss(self, step: int, loss: float) -> Optional[Divergence]:
        """Take step ``step``'s train loss; a :class:`Divergence` when the smoothed loss has risen."""
        self._recent.append(loss)
        if len(self._recent) < self.window:
            return None
        return self._judge("train_loss", step, sum(self._recent) / self.window)

    def on_eval(self, step: int, eval_loss: Optional[float]) -> Optional[Divergence]:
        """Take an evaluation's loss (None: the evaluation has none, nothing to watch)."""
        return None if eval_loss is None else self._judge("eval_loss", step, eval_loss)

    def _judge(self, signal: str, step: int, value: float) -> Optional[Divergence]:
        """``value`` of ``signal`` at ``step`` against that signal's best so far (a new best is kept)."""
        best = self._best.get(signal)
        if best is None or value < best[0]:
            self._best[signal] = (value, step)
            return None
        if self._risen(value, best[0]):
            return Divergence(signal, step, value, *best, self.window)
        return None

    def restart_train(self) -> None:
        """After a reaction: the smoothed train loss is judged afresh, from the steps that follow
        (the validation loss keeps its best: the returned checkpoint is judged against it too)."""
        self._recent.clear()
        self._best.pop("train_loss", None)

    def state_dict(self) -> dict:
        return {"recent": list(self._recent), "best": {k: list(v) for k, v in self._best.items()}}

    def load_state_dict(self, state: dict) -> None:
        self._recent = deque(state["recent"], maxlen=self.window)
        self._best = {k: (v[0], v[1]) for k, v in state["best"].items()}


def react(rule: Reaction, shrinks_so_far: int) -> Literal["shrink", "stop", "warn"]:
    """What a run does about a divergence under ``rule``, given how often it has shrunk already.

    >>> react("shrink", 0), react("shrink", MAX_SHRINKS), react("stop", 0), react("warn", 9)
    ('shrink', 'stop', 'stop', 'warn')
    """
    if rule == "shrink" and shrinks_so_far >= MAX_SHRINKS:
        return "stop"
    return rule
