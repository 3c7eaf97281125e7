"""A MeZO run as data: its starting point and each step's (seeds, projected gradients).

Weights after step *t* are a function of the weights at the start and the steps before *t*:
each step draws z for tensor *i* from (step seed, *i*) and moves the tensor by ``-lr * g * z``
(:func:`sglang.srt.mezo.zo.update.replay_steps`, through :func:`sglang.srt.mezo.zo.noise.move`). So a record of a few numbers per step rebuilds the
weights exactly (:mod:`sglang.srt.mezo.training.replay_weights`), resumes a killed run, and is all that data-parallel
workers need to exchange.

The record is one JSON file: a readable header (the base model's path and a hash of its weights,
the resolved run spec, the trainable tensors' names, shapes and dtype, the device type that drew
z) and the steps packed as little-endian binary (uint64 seeds, float64 gradients; 16 bytes a step
with one direction, base64 in the file: a 20,000-step run's record is about 430 KB). The learning
rate of each step is not stored: it follows from the spec's schedule. A HiZOO run
(``estimator="hizoo"``) also records each direction's curvature term L+ + L- - 2 L0 (float64,
``curvatures_f64le``), from which its Hessian estimate follows (:mod:`sglang.srt.mezo.zo.hizoo`);
records without it (every other run, and every record older than it) load as before.

>>> t = Trajectory(tensor_names=["a"], tensor_shapes=[[2]], dtype="float32", device_type="cpu", n_spsa=1)
>>> t.append([7], [0.5]); t.append([9], [-0.25])
>>> Trajectory.from_dict(t.to_dict()).steps == [([7], [0.5]), ([9], [-0.25])]
True
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

FORMAT = "mezo-trajectory/1"


FILE = "mezo_trajectory.json"


@dataclass
class Trajectory:
    """The record of one run (see the module docstring)."""

    tensor_names: list[str]
    tensor_shapes: list[list[int]]
    dtype: str
    device_type: str
    n_spsa: int
    model: dict = field(default_factory=dict)  # {"path": ..., "sha256": ... or None}
    config: dict = field(default_factory=dict)  # the resolved run spec
    start: dict = field(default_factory=dict)  # where the starting weights are: {"adapter": path} or {}
    # How theta came back after each -eps pass ("exact" copy or "add-subtract", whose rounding
    # replay repeats) and how z was drawn ("gaussian" or "rademacher"); absent in older records.
    restore: str = "exact"
    noise: str = "gaussian"
    # (steps done, seed): a step's update pass also put on the next step's +eps z (full weights,
    # ``MeZOTrainer.step(next_batch=...)``) and it was taken off again before that step (a save or
    # an evaluation came first). Both rounded, so replay repeats them; a run that was not
    # interrupted so has none.
    settled: list[tuple[int, int]] = field(default_factory=list)
    # (steps done, factor): from that step on the learning rate was multiplied by factor (a
    # divergence reaction, training/divergence.py). The schedule of the spec times these is each
    # step's lr; a run that never reacted has none (and older records none).
    lr_scales: list[tuple[int, float]] = field(default_factory=list)
    steps: list[tuple[list[int], list[float]]] = field(default_factory=list)
    # Per step, each direction's L+ + L- - 2 L0 (HiZOO's runs only; empty otherwise). A list of its
    # own beside ``steps``, so that every reader of (seeds, grads) steps stays as it was.
    curvatures: list[list[float]] = field(default_factory=list)

    def append(self, seeds: list[int], grads: list[float], curvatures: Optional[list[float]] = None) -> None:
        if len(seeds) != self.n_spsa or len(grads) != self.n_spsa:
            raise ValueError(f"a step of this run has {self.n_spsa} seeds and gradients")
        if curvatures is not None:
            if len(curvatures) != self.n_spsa or len(self.curvatures) != len(self.steps):
                raise ValueError(f"curvature terms go with every step of a run, {self.n_spsa} a step: this record "
                                 f"has {len(self.curvatures)} rows for {len(self.steps)} steps")
            self.curvatures.append([float(c) for c in curvatures])
        self.steps.append((list(seeds), [float(g) for g in grads]))

    def truncate(self, num_steps: int) -> None:
        del self.steps[num_steps:]
        del self.curvatures[num_steps:]
        self.settled = [(done, seed) for done, seed in self.settled if done <= num_steps]
        self.lr_scales = [(done, f) for done, f in self.lr_scales if done <= num_steps]

    def to_dict(self) -> dict[str, Any]:
        seeds = np.array([s for s, _ in self.steps], dtype="<u8").reshape(-1)
        grads = np.array([g for _, g in self.steps], dtype="<f8").reshape(-1)
        return {
            "format": FORMAT, "model": self.model, "config": self.config, "start": self.start,
            "dtype": self.dtype, "device_type": self.device_type, "n_spsa": self.n_spsa,
            "tensor_names": self.tensor_names, "tensor_shapes": self.tensor_shapes,
            "restore": self.restore, "noise": self.noise, "num_steps": len(self.steps),
            **({"settled": [[done, seed] for done, seed in self.settled]} if self.settled else {}),
            **({"lr_scales": [[done, f] for done, f in self.lr_scales]} if self.lr_scales else {}),
            "seeds_u64le": base64.b64encode(seeds.tobytes()).decode(),
            "grads_f64le": base64.b64encode(grads.tobytes()).decode(),
            **({"curvatures_f64le": base64.b64encode(np.array(self.curvatures, dtype="<f8").reshape(-1).tobytes())
                .decode()} if self.curvatures else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trajectory":
        if d.get("format") != FORMAT:
            raise ValueError(f"not a MeZO trajectory of format {FORMAT!r} (format: {d.get('format')!r}); it was "
                             "written by another version of sglang-mezo")
        n, k = d["num_steps"], d["n_spsa"]
        seeds = np.frombuffer(base64.b64decode(d["seeds_u64le"]), dtype="<u8").reshape(n, k)
        grads = np.frombuffer(base64.b64decode(d["grads_f64le"]), dtype="<f8").reshape(n, k)
        steps = [([int(s) for s in seeds[i]], [float(g) for g in grads[i]]) for i in range(n)]
        curvatures = np.frombuffer(base64.b64decode(d.get("curvatures_f64le", "")), dtype="<f8")
        return cls(d["tensor_names"], d["tensor_shapes"], d["dtype"], d["device_type"], k, d.get("model", {}),
                   d.get("config", {}), d.get("start", {}), d.get("restore", "exact"), d.get("noise", "gaussian"),
                   [(int(done), int(seed)) for done, seed in d.get("settled", [])],
                   [(int(done), float(f)) for done, f in d.get("lr_scales", [])], steps,
                   [[float(c) for c in row] for row in curvatures.reshape(-1, k)] if curvatures.size else [])

    @classmethod
    def load(cls, path: str) -> "Trajectory":
        """From a trajectory file, or a run or checkpoint folder holding one."""
        if os.path.isdir(path):
            path = os.path.join(path, FILE)
        with open(path) as f:
            return cls.from_dict(json.load(f))


@functools.lru_cache(maxsize=8)
def weights_hash(model_path: str) -> Optional[str]:
    """sha256 over a local checkpoint's weight files (``*.safetensors``, else ``*.bin``), in name
    order; None for a path that is not a local folder (a hub id)."""
    if not os.path.isdir(model_path):
        return None
    names = sorted(n for n in os.listdir(model_path) if n.endswith(".safetensors")) or \
        sorted(n for n in os.listdir(model_path) if n.endswith(".bin"))
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
        with open(os.path.join(model_path, name), "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()
