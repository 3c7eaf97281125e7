"""HiZOO's diagonal Hessian (``estimator="hizoo"``): the state that preconditions both the
perturbation and the step, one number per trainable parameter.

Zhao et al., "Second-Order Fine-Tuning without Pain for LLMs: A Hessian Informed Zeroth-Order
Optimizer" (arXiv 2402.15173, ICLR 2025). The form implemented is the authors' reference code,
``github.com/Yanjun-Zhao/HiZOO`` (commit 4f99055), ``trainer.py``: ``zo_Hessian_step_update`` and
``efficient_Hessian_perturb_parameters``. The paper's own algorithm text was not at hand here, only
its abstract; where the two might differ, this follows the code. With H the Hessian diagonal
estimate (Sigma = H^-1 in the paper's notation, so Sigma^(1/2) z = z / sqrt(H)), H_0 = 1, and a step
with seed s (z ~ N(0, I)), learning rate lr, smoothing alpha and scale eps:

    L0 = L(theta), L+ = L(theta + eps z / sqrt(H_{t-1})), L- = L(theta - eps z / sqrt(H_{t-1}))
    H_t = (1 - alpha) H_{t-1} + alpha * |L+ + L- - 2 L0| / (2 eps^2) * H_{t-1} z^2      (elementwise)
    theta <- theta - lr * ((L+ - L-) / (2 eps) * z / sqrt(H_t) + wd * theta)

The moving average tracks H (the Hessian diagonal, Sigma^-1), not Sigma; the perturbation uses the
H before the step and the step the H after it, as the reference code does.

Departures, and why:

- H is kept in float64, not in the weights' dtype (the reference keeps it in the parameters'
  dtype, fp16 in its scripts). The smoothing constants the reference runs are tiny (its README's
  example is 1e-8): 1 - 1e-8 rounds to 1 in fp32 and fp16, so the average would not move. Float64
  costs 8 bytes a LoRA parameter (under 4 MB for a rank-2 SmolLM2 adapter).
- The average is written H * ((1 - alpha) + alpha * e), e = |L+ + L- - 2 L0| / (2 eps^2) * z^2:
  the same value as the reference's sum, with one rounding fewer.
- n_spsa > 1 directions (the reference has one): e is the mean of the directions' estimates and
  the step the mean of their g_k z_k / sqrt(H_t).
- g goes through the run's ``update_rule`` first (sgd is the reference's; normalized, the
  causal-LM LoRA default, divides g by its running RMS); Adam is refused by the run spec (it would
  precondition a second time). Weight decay spares biases and norms (MeZO's mask; the reference
  decays everything; a LoRA adapter has neither).
- The reference measures the loss once more after the update, for its log; the step here reports
  L0 and runs no extra forward.

Resume and replay: H is a function of the trajectory alone (each step's seeds and the curvature
terms L+_k + L-_k - 2 L0 that :class:`~sglang.srt.mezo.zo.trajectory.Trajectory` records), so
resume rebuilds it (:meth:`HessianDiagonal.rebuild`) and replay recomputes it as it goes; a
checkpoint saves nothing new, and both land on the run's weights bit for bit.

>>> import torch
>>> theta = [torch.zeros(2)]
>>> z = lambda seed, i, t: torch.tensor([1.0, 2.0])
>>> hessian = HessianDiagonal(theta, smoothing=0.5, epsilon=0.5)
>>> hessian.perturbation(0, z(1, 0, theta[0])).tolist()  # H = 1: the perturbation is z itself
[1.0, 2.0]
>>> hessian.step(theta, [1], [3.0], [-1.0], lr=0.1, weight_decay=0.0, decay=[True], z=z)
>>> hessian.h[0].tolist()  # 0.5 * 1 + 0.5 * |-1| / (2 * 0.25) * 1 * z^2
[1.5, 4.5]
>>> [round(x, 6) for x in theta[0].tolist()]  # -lr * 3 * z / sqrt(H)
[-0.244949, -0.282843]
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

#: (seed, tensor index, tensor) -> z for that tensor, as the step's perturbation drew it.
DrawZ = Callable[[int, int, torch.Tensor], torch.Tensor]


class HessianDiagonal:
    """H, the diagonal Hessian estimate of ``tensors`` (float64, starting at 1); ``smoothing``:
    alpha of the moving average; ``epsilon``: the run's perturbation scale (see the module docstring)."""

    def __init__(self, tensors: Sequence[torch.Tensor], smoothing: float, epsilon: float):
        self.h = [torch.ones(t.shape, dtype=torch.float64, device=t.device) for t in tensors]
        self.smoothing, self.epsilon = smoothing, epsilon

    def perturbation(self, index: int, z: torch.Tensor) -> torch.Tensor:
        """Sigma^(1/2) z = z / sqrt(H) for tensor ``index`` (float64; the slot rounds it)."""
        return z.double().div_(self.h[index].sqrt())

    @torch.no_grad()
    def step(self, tensors: Sequence[torch.Tensor], seeds: Sequence[int], coefficients: Sequence[float],
             curvatures: Sequence[float], *, lr: float, weight_decay: float, decay: Sequence[bool],
             z: DrawZ) -> None:
        """Absorb a step (``curvatures``: L+_k + L-_k - 2 L0 per seed) into H, then move
        ``tensors`` in place by -lr * (mean_k c_k z_k / sqrt(H) + wd * theta), c_k the update
        rule's ``coefficients`` (g_k itself for sgd)."""
        n = len(seeds)
        for i, (t, h, decays) in enumerate(zip(tensors, self.h, decay)):
            zs = [z(seed, i, t).double() for seed in seeds]
            self._absorb(h, zs, curvatures)
            if weight_decay and decays:
                t.mul_(1 - lr * weight_decay)
            direction = torch.zeros_like(h)
            for zk, c in zip(zs, coefficients):
                direction.add_(zk, alpha=c / n)
            t.add_(direction.div_(h.sqrt()), alpha=-lr)

    def _absorb(self, h: torch.Tensor, zs: Sequence[torch.Tensor], curvatures: Sequence[float]) -> None:
        if len(curvatures) != len(zs):
            raise ValueError(f"a HiZOO step needs a curvature term per direction: {len(zs)} seeds, "
                             f"{len(curvatures)} curvature terms")
        estimate = torch.zeros_like(h)
        for zk, d in zip(zs, curvatures):
            estimate.addcmul_(zk, zk, value=abs(d) / (2 * self.epsilon ** 2 * len(zs)))
        h.mul_(estimate.mul_(self.smoothing).add_(1 - self.smoothing))

    @torch.no_grad()
    def rebuild(self, steps: Sequence[tuple[Sequence[int], Sequence[float]]], curvatures: Sequence[Sequence[float]],
                tensors: Sequence[torch.Tensor], z: DrawZ) -> None:
        """H after ``steps`` (a trajectory's (seeds, g)) and their ``curvatures``, from 1;
        ``tensors`` give z's shapes only."""
        if len(curvatures) != len(steps):
            raise ValueError(f"HiZOO's Hessian follows from each step's curvature term: the record has "
                             f"{len(steps)} steps and {len(curvatures)} curvature rows (a trajectory of a run "
                             "that was not estimator='hizoo' cannot rebuild it)")
        for h in self.h:
            h.fill_(1.0)
        for (seeds, _), step_curvatures in zip(steps, curvatures):
            for i, (t, h) in enumerate(zip(tensors, self.h)):
                self._absorb(h, [z(seed, i, t).double() for seed in seeds], step_curvatures)
