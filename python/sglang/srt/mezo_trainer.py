"""The seed's path to MeZO's lower layer: the trainer for any objective, its spec and its update
maths. The code lives in :mod:`sglang.srt.mezo` (``training/``, ``zo/``, ``run_spec/``); this module
re-exports its public names and keeps ``python -m sglang.srt.mezo_trainer replay RUN_DIR --out DIR``.

>>> from sglang.srt.mezo_trainer import MeZOTrainer
>>> MeZOTrainer.__module__  # the trainer's own module has the example of use
'sglang.srt.mezo.training.trainer'
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from sglang.srt.mezo.cli.replay import main as replay_main
from sglang.srt.mezo.errors import MeZODivergedError
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.objectives.base import ForwardInputs
from sglang.srt.mezo.training.trainable import FullWeights, LoRAWeights
from sglang.srt.mezo.training.trainer import Evaluation, MeZOTrainer, StepResult
from sglang.srt.mezo.zo.noise import AddZ, Decay, ShardLayout, draw_z, move, tensor_seed
from sglang.srt.mezo.zo.trajectory import Trajectory
from sglang.srt.mezo.zo.update import (
    UpdateRule,
    apply_update,
    learning_rate_at,
    replay_steps,
    restore_ops,
    split_evenly,
    step_ops,
)

__all__ = [
    "AddZ", "Decay", "Evaluation", "ForwardInputs", "FullWeights", "LoRAWeights", "MeZOConfig", "MeZODivergedError",
    "MeZOTrainer", "ShardLayout", "StepResult", "Trajectory", "UpdateRule", "apply_update", "draw_z",
    "learning_rate_at", "main", "move", "replay_steps", "restore_ops", "split_evenly", "step_ops", "tensor_seed",
]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m sglang.srt.mezo_trainer replay RUN_DIR --out DIR``: see :mod:`sglang.srt.mezo.cli.replay`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "replay":
        print("usage: python -m sglang.srt.mezo_trainer replay RUN_DIR --out DIR [--base-model PATH]", file=sys.stderr)
        return 2
    return replay_main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
