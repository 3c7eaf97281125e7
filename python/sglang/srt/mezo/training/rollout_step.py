"""A reward step whose rewards come from outside (an external grader): measured ahead of time to
hand its rollouts out, then taken as any step once the rewards are there.

The step a run takes next is fixed before it is taken: its batch (:meth:`MeZORun.upcoming_batch
<sglang.srt.mezo.training.run.MeZORun.upcoming_batch>`) and its direction seeds
(:meth:`SeedStream.peek <sglang.srt.mezo.zo.seeds.SeedStream.peek>`). :func:`publish_next_step`
runs the run's own estimator on them without taking the step: the estimator writes theta +/- eps z
(or its probes) into its LoRA slots exactly as the step will, and asks the objective for the
rewards; the objective asks its :class:`~sglang.srt.mezo.training.objectives.base.RewardSource`,
which publishes the rollouts (the slots' adapters saved for a client to sample) and raises
:class:`RewardsPending`. Nothing of the run moves: no seed drawn, no batch taken, theta restored
by the estimator. When the rewards have been posted, the run's next :meth:`advance` takes the step
as always (the same batch, seeds and slots; the source now answers), so the trajectory, resume and
replay are those of any run.
"""

from __future__ import annotations

from typing import Optional

from sglang.srt.mezo.training.run import MeZORun


class RewardsPending(Exception):
    """A step's rewards have not been posted yet (its rollouts are out)."""

    def __init__(self, step: int):
        super().__init__(f"the rewards of step {step} have not been posted yet")
        self.step = step


def publish_next_step(run: MeZORun) -> Optional[int]:
    """Measure the run's next step ahead so that its reward source publishes the rollouts; returns
    the step's number (1-based, as its events count it), or None when the next unit is not a step.
    Raises ValueError for a run whose estimator does not measure on LoRA slots (two forwards over
    the adapter itself leave no adapter a client could sample while the step waits)."""
    batch = run.upcoming_batch()
    if batch is None:
        return None
    trainer = run.trainer
    if not trainer.trainable.paired:
        raise ValueError("rewards from outside need the +eps and -eps adapters in LoRA slots of their own: this "
                         "server has no two free slots for the job (raise --max-loras-per-batch) or the job turned "
                         "paired_forward off")
    step = run.step_count + 1
    try:
        trainer.estimator.measure(batch, trainer.seeds.peek())
    except RewardsPending:
        return step
    raise RuntimeError(f"the reward source answered step {step} before its rollouts were published")
