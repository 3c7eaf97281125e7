"""A MeZO step's update, as operations on theta: theta -= lr * (g z + wd theta), the update rules
that scale g, the learning-rate schedule, and replaying a trajectory's steps (resume and replay both
come here, so they agree bit for bit with training)."""

from __future__ import annotations

import math
import statistics
from typing import Optional, Sequence

import torch

from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.zo.adam import ZOAdam
from sglang.srt.mezo.zo.hizoo import HessianDiagonal
from sglang.srt.mezo.zo.noise import AddZ, Decay, NoiseKind, Op, ShardLayout, move
from sglang.srt.mezo.zo.perturbable import PerturbableTensors


def step_ops(seeds: Sequence[int], grads: Sequence[float], lr: float, weight_decay: float,
             restore: Optional[AddZ] = None) -> list[Op]:
    """The operations of one step's update: theta -= lr * (mean over seeds of g * z + wd * theta).
    ``restore``: the +eps z that still has to undo the last -eps pass (add/subtract restore), done
    in the same pass as the update so that z is drawn once for both."""
    ops: list[Op] = [restore] if restore is not None else []
    if weight_decay:
        ops.append(Decay(1 - lr * weight_decay))
    n = len(seeds)
    ops += [AddZ(s, -lr * g / n) for s, g in zip(seeds, grads)]
    return ops


def restore_ops(seeds: Sequence[int], epsilon: float, restore: str) -> list[Op]:
    """What a step did to theta before its update: nothing with an exact (copy) restore; with the
    add/subtract restore, +eps z, -2 eps z, +eps z per seed, which in low precision (and in the
    last bits of fp32) does not give theta back exactly: replay repeats it to land where the run did."""
    if restore == "exact":
        return []
    if restore != "add-subtract":
        raise ValueError(f"restore must be 'exact' or 'add-subtract', got {restore!r}")
    return [AddZ(s, a) for s in seeds for a in (epsilon, -2 * epsilon, epsilon)]


@torch.no_grad()
def apply_update(tensors: Sequence[torch.Tensor], decay: Sequence[bool], seeds: Sequence[int],
                 grads: Sequence[float], lr: float, weight_decay: float, generators: dict,
                 layouts: Optional[Sequence[Optional[ShardLayout]]] = None, *,
                 noise: NoiseKind = "gaussian") -> None:
    """theta -= lr * (mean over seeds of g * z + wd * theta), in place. Training, replay and resume
    all move weights through :func:`~sglang.srt.mezo.zo.noise.move`, so they agree bit for bit.
    ``layouts``: the tensors' tensor-parallel shard layouts (None: unsharded)."""
    move(tensors, step_ops(seeds, grads, lr, weight_decay), decay, generators, layouts, noise)


@torch.no_grad()
def replay_steps(steps: Sequence[tuple[Sequence[int], Sequence[float]]], config: MeZOConfig,
                 tensors: Sequence[torch.Tensor], decay: Sequence[bool], generators: dict,
                 layouts: Optional[Sequence[Optional[ShardLayout]]] = None, *, restore: str = "exact",
                 noise: NoiseKind = "gaussian", settled: Sequence[tuple[int, int]] = (),
                 lr_scales: Sequence[tuple[int, float]] = (), curvatures: Sequence[Sequence[float]] = ()) -> None:
    """Apply a trajectory's ``(seeds, grads)`` steps, from step 0, to the weights they started from:
    the updates of the run, with its learning-rate schedule (resume and replay both come here).
    ``restore``, ``noise``, ``settled``, ``lr_scales`` and ``curvatures``: the run's
    (:attr:`Trajectory.restore`, :attr:`Trajectory.noise`, :attr:`Trajectory.settled`,
    :attr:`Trajectory.lr_scales`, :attr:`Trajectory.curvatures`, which a HiZOO run needs). One pass
    (one draw of z) per step."""
    update = StepUpdate(config, PerturbableTensors(tensors, decay, layouts, noise, generators))
    if update.hessian is not None and len(curvatures) != len(steps):
        raise ValueError(f"a HiZOO run (estimator='hizoo') replays from each step's curvature term: this trajectory "
                         f"has {len(steps)} steps and {len(curvatures)} curvature rows")
    after = {}
    for done, seed in settled:  # the +eps z put on ahead after step ``done`` and taken off again
        after.setdefault(done, []).append(seed)
    for step, (seeds, grads) in enumerate(steps):
        ahead = [AddZ(s, a) for s in after.get(step + 1, ()) for a in (config.epsilon, -config.epsilon)]
        update.apply(steps, seeds, grads, learning_rate_at(config, step, lr_scales),
                     before=restore_ops(seeds, config.epsilon, restore), after=ahead, upto=step,
                     curvatures=curvatures[step] if update.hessian is not None else None)


class StepUpdate:
    """How a step moves theta once its projected gradients are known (``config.update_rule``):
    theta -= lr * (c z + wd theta) with the rule's coefficients c, in one pass with the operations
    the step still owes (``before``: the add/subtract restore; ``after``: the next step's +eps z put
    on ahead), or ZO-Adam's move, which takes the owed operations in a pass of their own first, or
    HiZOO's (``config.estimator == "hizoo"``), which moves theta along z / sqrt(H) after folding the
    step's curvature terms into H (:attr:`hessian`, which the HiZOO estimator reads to perturb)."""

    def __init__(self, config: MeZOConfig, tensors: PerturbableTensors):
        self.tensors, self.weight_decay = tensors, config.weight_decay
        self.rule = UpdateRule(config.update_rule)
        self.adam = ZOAdam(tensors.tensors) if config.update_rule == "adam" else None
        self.hessian = HessianDiagonal(tensors.tensors, config.hessian_smoothing, config.epsilon) \
            if config.estimator == "hizoo" else None

    @property
    def looks_ahead(self) -> bool:
        """Whether the update pass can also put on the next step's +eps z (not with Adam or HiZOO)."""
        return self.adam is None and self.hessian is None

    def apply(self, history: Sequence[tuple[Sequence[int], Sequence[float]]], seeds: Sequence[int],
              grads: Sequence[float], lr: float, before: Sequence[Op] = (), after: Sequence[Op] = (), *,
              upto: Optional[int] = None, curvatures: Optional[Sequence[float]] = None) -> None:
        """The update of a step whose earlier steps are ``history[:upto]`` (a trajectory's (seeds, g);
        ``upto`` None: all of ``history``). Training and replay both move theta here. ``curvatures``:
        the step's L+_k + L-_k - 2 L0 per seed (HiZOO's; None for the others)."""
        if self.adam is not None:
            self.tensors.move(before)
            self.adam.step(self.tensors.tensors, seeds, grads, lr=lr, weight_decay=self.weight_decay,
                           decay=self.tensors.decay, z=self.tensors.z)
            return
        coefficients = self.rule.coefficients(history, len(history) if upto is None else upto, grads)
        if self.hessian is not None:
            if curvatures is None:
                raise ValueError("a HiZOO step moves theta by its Hessian estimate, which needs the step's "
                                 "curvature terms (L+ + L- - 2 L0 per direction)")
            self.tensors.move(before)  # nothing comes after: HiZOO does not look ahead
            self.hessian.step(self.tensors.tensors, seeds, coefficients, curvatures, lr=lr,
                              weight_decay=self.weight_decay, decay=self.tensors.decay, z=self.tensors.z)
            return
        self.tensors.move([*before, *step_ops(seeds, coefficients, lr, self.weight_decay), *after])

    def rebuild(self, history: Sequence[tuple[Sequence[int], Sequence[float]]],
                curvatures: Sequence[Sequence[float]] = ()) -> None:
        """The rule's state after ``history`` (Adam's moments; HiZOO's H, from ``curvatures`` too;
        the others recompute theirs)."""
        if self.adam is not None:
            self.adam.rebuild(history, self.tensors.tensors, self.tensors.z)
        if self.hessian is not None:
            self.hessian.rebuild(history, curvatures, self.tensors.tensors, self.tensors.z)


class UpdateRule:
    """What multiplies -lr z for each seed of a step (``config.update_rule``), from the step's
    projected gradients and, for "normalized", those of the steps before it: a function of the
    trajectory, so replay and resume recompute it and nothing else needs saving.

    >>> rule = UpdateRule("normalized")
    >>> rule.coefficients([([1], [2.0])], 1, [-2.0])  # |g| has been 2: the step is -1
    [-1.0000000000000004]
    >>> rule.coefficients([([1], [2.0]), ([2], [-2.0])], 2, [0.5])  # a smaller g: a smaller step
    [0.30220356546837196]
    """

    BETA = 0.99  # as Adam's beta2

    def __init__(self, name: str):
        self.name = name
        self._seen, self._v, self._t = 0, 0.0, 0

    def coefficients(self, history: Sequence[tuple[Sequence[int], Sequence[float]]], upto: int,
                     grads: Sequence[float]) -> list[float]:
        """For a step whose earlier steps are ``history[:upto]`` (``(seeds, grads)`` pairs)."""
        if self.name in ("sgd", "adam"):  # adam: the trainer's ZOAdam moves theta, from the raw g
            return list(grads)
        if self.name == "sign":
            return [math.copysign(1.0, g) if g else 0.0 for g in grads]
        if upto < self._seen:  # a history cut back (resume): start over
            self._seen, self._v, self._t = 0, 0.0, 0
        for k in range(self._seen, upto):
            self._v, self._t = self._absorb(self._v, self._t, history[k][1])
        self._seen = upto
        v, t = self._absorb(self._v, self._t, grads)
        rms = math.sqrt(v / (1 - self.BETA ** t)) if t else 0.0
        return [g / rms if rms > 0 else 0.0 for g in grads]

    def _absorb(self, v: float, t: int, grads: Sequence[float]) -> tuple[float, int]:
        for g in grads:
            v, t = self.BETA * v + (1 - self.BETA) * g * g, t + 1
        return v, t


def z_scored(pairs: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """A population's (L+, L-) pairs z-scored together: minus the mean of all 2n values, over
    their standard deviation (the population's, as ES at scale's reward shaping). All equal: all 0.

    >>> z_scored([(1.0, 3.0), (2.0, 2.0)])
    [(-1.414213562373095, 1.414213562373095), (0.0, 0.0)]
    """
    values = [v for pair in pairs for v in pair]
    mean, std = statistics.fmean(values), statistics.pstdev(values)
    if std == 0:
        return [(0.0, 0.0) for _ in pairs]
    return [((p - mean) / std, (m - mean) / std) for p, m in pairs]


def split_evenly(n: int, parts: int) -> list[range]:
    """Rows 0..n-1 in ``parts`` consecutive runs whose sizes differ by at most one (a split batch's
    parts, one per direction).

    >>> split_evenly(7, 3)
    [range(0, 3), range(3, 5), range(5, 7)]
    """
    size, extra = divmod(n, parts)
    bounds = [0]
    for k in range(parts):
        bounds.append(bounds[-1] + size + (k < extra))
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def learning_rate_at(config: MeZOConfig, step: int, scales: Sequence[tuple[int, float]] = ()) -> float:
    """The learning rate of step ``step`` (0-based) under the spec's schedule, times the scale in
    force at that step: ``scales`` are ``(steps done, factor)`` changes a run made as it went
    (a divergence reaction; :attr:`Trajectory.lr_scales <sglang.srt.mezo.zo.trajectory.Trajectory.lr_scales>`).

    >>> from sglang.srt.mezo.run_spec.config import MeZOConfig
    >>> c = MeZOConfig(learning_rate=1e-3, num_steps=10, lr_schedule="constant")
    >>> learning_rate_at(c, 3), learning_rate_at(c, 3, [(2, 0.5)]), learning_rate_at(c, 1, [(2, 0.5)])
    (0.001, 0.0005, 0.001)
    """
    lr = config.learning_rate
    if config.lr_schedule == "linear" and config.num_steps > 0:
        lr *= max(0.0, 1.0 - step / config.num_steps)
    for done, scale in scales:
        if step >= done:
            lr *= scale
    return lr
