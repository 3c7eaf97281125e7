"""A run's checkpoint folders, and the check before any model is built that a run may resume from
the latest one (same settings) or start fresh (an empty folder)."""

from __future__ import annotations

import os
from typing import Optional

from sglang.srt.mezo.run_spec.defaults import with_record_fallbacks
from sglang.srt.mezo.zo.trajectory import Trajectory

RUN_STATE_FILE = "run_state.json"


CHECKPOINTS = "checkpoints"


#: Settings that may differ between a run and its resumption.
# A run folder may be moved or copied; the safeguards may be changed on the way (what they did so
# far is in the trajectory and the run's state, and older records have none of them).
RESUMABLE_CHANGES = ("resume", "progress_bar", "output_dir", "report_to", "load_best_model_at_end", "on_divergence",
                     "divergence_window", "divergence_tolerance")


def checkpoint_dirs(output_dir: str) -> list[str]:
    """A run's checkpoint folders (``checkpoints/step-NNNNNN``), oldest first; each is complete."""
    root = os.path.join(output_dir, CHECKPOINTS)
    if not os.path.isdir(root):
        return []
    names = sorted(n for n in os.listdir(root) if n.startswith("step-") and n[5:].isdigit())
    return [os.path.join(root, n) for n in names]


def latest_checkpoint(output_dir: str) -> Optional[str]:
    found = checkpoint_dirs(output_dir)
    return found[-1] if found else None


def recorded_config(checkpoint: str) -> dict:
    """The run spec a checkpoint folder recorded (older records: with what they ran with)."""
    return with_record_fallbacks(Trajectory.load(checkpoint).config)


def check_resumable(config) -> Optional[str]:
    """Before any model is built: the checkpoint a run will continue from (None: a fresh start),
    or a ValueError if the output folder holds another run or a run of other settings."""
    if not config.output_dir:
        if config.resume:
            raise ValueError("resume=True needs the output_dir of the run to continue")
        return None
    checkpoint = latest_checkpoint(config.output_dir)
    if checkpoint is None:
        return None
    if not config.resume:
        raise ValueError(f"output_dir {config.output_dir!r} already holds a run (checkpoint at step "
                         f"{int(os.path.basename(checkpoint)[5:])}): pass resume=True (--resume) to continue it, "
                         "or choose another output_dir")
    recorded = recorded_config(checkpoint)
    wanted = config.to_dict()
    changed = sorted(k for k in set(recorded) | set(wanted)
                     if k not in RESUMABLE_CHANGES and recorded.get(k) != wanted.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {recorded.get(k)!r} -> {wanted.get(k)!r}" for k in changed)
        raise ValueError(f"the run in {config.output_dir!r} was started with other settings ({diffs}); resume it "
                         "with the same settings, or start a new run in another output_dir")
    return checkpoint
