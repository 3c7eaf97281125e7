"""The trainable tensors as MeZO moves them: z regenerated from a seed, operations applied in one
pass (:func:`~sglang.srt.mezo.zo.noise.move`), copies taken and put back. Estimators, the update
and replay all go through one :class:`PerturbableTensors`, so they draw the same z and share its
generators and chunk buffers across steps."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from sglang.srt.mezo.zo.noise import AddZ, NoiseKind, Op, ShardLayout, draw_z, move


def decay_mask(names: Sequence[str]) -> list[bool]:
    """Weight decay applies to weight matrices only, never to biases or norms (as in MeZO).

    >>> decay_mask(["q_proj.weight", "q_proj.bias", "input_layernorm.weight"])
    [True, False, False]
    """
    return [not (n.endswith("bias") or "norm" in n.lower()) for n in names]


class PerturbableTensors:
    """``tensors`` (live, moved in place); ``decay``: which of them weight decay applies to
    (:func:`decay_mask`); ``layouts``: their tensor-parallel shard layouts (None: unsharded);
    ``noise``: how z is drawn; ``generators``: draw_z's generators and move's chunk buffers, kept
    across steps (a dict to share, or None for a new one)."""

    def __init__(self, tensors: Sequence[torch.Tensor], decay: Sequence[bool],
                 layouts: Optional[Sequence[Optional[ShardLayout]]] = None, noise: NoiseKind = "gaussian",
                 generators: Optional[dict] = None):
        self.tensors, self.decay, self.layouts, self.noise = list(tensors), list(decay), layouts, noise
        self.generators = {} if generators is None else generators

    def z(self, seed: int, index: int, like: torch.Tensor) -> torch.Tensor:
        """z of tensor ``index`` for step seed ``seed``, shaped (and placed) like ``like``."""
        return draw_z(seed, index, like, self.generators, self.layouts[index] if self.layouts else None, self.noise)

    def move(self, ops: Sequence[Op]) -> None:
        """Apply ``ops`` to every tensor, in place, in one pass."""
        if ops:
            move(self.tensors, ops, self.decay, self.generators, self.layouts, self.noise)

    def perturb(self, seed: int, scale: float) -> None:
        """theta += scale * z_seed."""
        self.move([AddZ(seed, scale)])

    def snapshot(self) -> list[torch.Tensor]:
        """A copy of the tensors, for :meth:`copy_back`."""
        return [t.clone() for t in self.tensors]

    def copy_back(self, snapshot: Sequence[torch.Tensor]) -> None:
        """The tensors of ``snapshot``, bit for bit."""
        for t, s in zip(self.tensors, snapshot):
            t.copy_(s)
