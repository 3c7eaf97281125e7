"""ZO-Adam: Adam's moments on MeZO's gradient estimate g z (``update_rule="adam"``).

A MeZO step estimates the gradient as g z (g the projected gradient, z the step's perturbation).
ZO-Adam (ZO-Bench, arXiv 2402.11592) feeds that estimate to Adam: m and v are running means of
g z and (g z)^2, elementwise, and theta moves by -lr * m_hat / (sqrt(v_hat) + eps), with decoupled
weight decay. The moments are two fp32 tensors the size of the trainable ones, so the rule is for
LoRA, where that is two copies of a small adapter; for every weight it would triple the memory.

The moments depend on the trajectory's (seeds, g) alone, not on the weights: resume rebuilds them
by redrawing z for the steps so far (:meth:`ZOAdam.rebuild`) and replay recomputes them as it goes,
so a checkpoint saves nothing new and a run still replays bit for bit.

>>> import torch
>>> theta = [torch.zeros(4)]
>>> z = lambda seed, i, t: torch.tensor([1.0, -1.0, 1.0, -1.0]) * seed
>>> adam = ZOAdam(theta)
>>> adam.step(theta, [1], [2.0], lr=0.1, weight_decay=0.0, decay=[False], z=z)
>>> [round(x, 4) for x in theta[0].tolist()]  # Adam's first step: lr * sign(g z)
[-0.1, 0.1, -0.1, 0.1]
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

#: (seed, tensor index, tensor) -> z for that tensor, as the step's perturbation drew it.
DrawZ = Callable[[int, int, torch.Tensor], torch.Tensor]


class ZOAdam:
    """Adam's state for MeZO's trainable tensors (see the module docstring)."""

    BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # Adam's defaults, as ZO-Bench runs them

    def __init__(self, tensors: Sequence[torch.Tensor]):
        self.m = [torch.zeros(t.shape, dtype=torch.float32, device=t.device) for t in tensors]
        self.v = [torch.zeros_like(m) for m in self.m]
        self.t = 0

    @torch.no_grad()
    def absorb(self, tensors: Sequence[torch.Tensor], seeds: Sequence[int], grads: Sequence[float], z: DrawZ) -> None:
        """Fold one step's estimate, the mean over its seeds of g z, into m and v."""
        self.t += 1
        for i, (t, m, v) in enumerate(zip(tensors, self.m, self.v)):
            estimate = torch.zeros_like(m)
            for seed, g in zip(seeds, grads):
                estimate.add_(z(seed, i, t).float(), alpha=g / len(seeds))
            m.mul_(self.BETA1).add_(estimate, alpha=1 - self.BETA1)
            v.mul_(self.BETA2).addcmul_(estimate, estimate, value=1 - self.BETA2)

    @torch.no_grad()
    def step(self, tensors: Sequence[torch.Tensor], seeds: Sequence[int], grads: Sequence[float], *, lr: float,
             weight_decay: float, decay: Sequence[bool], z: DrawZ) -> None:
        """Absorb a step's estimate and move ``tensors`` in place (weight decay first, as the
        other rules' :class:`~sglang.srt.mezo.zo.noise.Decay`)."""
        self.absorb(tensors, seeds, grads, z)
        c1, c2 = 1 - self.BETA1 ** self.t, 1 - self.BETA2 ** self.t
        for t, m, v, decays in zip(tensors, self.m, self.v, decay):
            if weight_decay and decays:
                t.mul_(1 - lr * weight_decay)
            t.add_((m / c1).div_((v / c2).sqrt_().add_(self.EPS)), alpha=-lr)

    def rebuild(self, steps: Sequence[tuple[Sequence[int], Sequence[float]]], tensors: Sequence[torch.Tensor],
                z: DrawZ) -> None:
        """The state after ``steps`` (a trajectory's), from zero; ``tensors`` give z's shapes only."""
        for m, v in zip(self.m, self.v):
            m.zero_()
            v.zero_()
        self.t = 0
        for seeds, grads in steps:
            self.absorb(tensors, seeds, grads, z)
