"""A job's rollouts and rewards in the store (external grader), torch-free, read by both processes.

Under ``jobs/<job-id>/rollouts/``, each file with one writer, as everywhere in the store:

- ``current.json``: the step waiting for its rewards, as the client reads it (the scheduler, at
  each publication);
- ``step-NNNNNN/<model>/``: that step's perturbed adapters as PEFT folders, which the HTTP
  process loads into SGLang for the client (the scheduler; removed once the step is taken);
- ``step-NNNNNN.rewards.json``: the rewards posted for step N, one per rollout id (the HTTP
  process, once: created exclusively, never rewritten). They stay as the job's record: a job
  resumed after a restart takes the steps after its last checkpoint again from them, without
  the client, and lands on the same weights.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Any, Optional

from sglang.srt.mezo.io import atomic_json
from sglang.srt.mezo.server.store import JobStore, read_json, remove_tree

ROLLOUTS_DIR = "rollouts"


def rollout_id(step: int, index: int) -> str:
    """The id of rollout ``index`` of step ``step``.

    >>> rollout_id(3, 0)
    'rollout-3-0'
    """
    return f"rollout-{step}-{index}"


class RolloutBook:
    """One job's rollouts folder (see the module docstring)."""

    def __init__(self, store: JobStore, job_id: str):
        self.dir = os.path.join(store.job_dir(job_id), ROLLOUTS_DIR)

    def current(self) -> Optional[dict]:
        """The last published step's rollouts (None: none published yet)."""
        return read_json(os.path.join(self.dir, "current.json"))

    def pending(self) -> Optional[dict]:
        """The published step still waiting for its rewards (None: none)."""
        current = self.current()
        if current is None or self.posted(current["step"]) is not None:
            return None
        return current

    def publish(self, rollouts: dict) -> None:
        atomic_json(os.path.join(self.dir, "current.json"), rollouts, indent=1)

    def step_dir(self, step: int) -> str:
        """Where step ``step``'s adapters are written."""
        return os.path.join(self.dir, f"step-{step:06d}")

    def _rewards_path(self, step: int) -> str:
        return os.path.join(self.dir, f"step-{step:06d}.rewards.json")

    def posted(self, step: int) -> Optional[dict]:
        """The rewards posted for step ``step``: ``{"step", "rewards": {rollout id: reward}, ...}``."""
        return read_json(self._rewards_path(step))

    def post(self, step: int, record: dict) -> bool:
        """Store ``record`` as step ``step``'s rewards unless some are there already (False then).
        Written whole to a temporary file and linked into place: the link fails if a post got there
        first, so two posts never both succeed, and a reader never sees half of one."""
        os.makedirs(self.dir, exist_ok=True)
        tmp = self._rewards_path(step) + f".tmp-{os.getpid()}-{id(record)}"
        with open(tmp, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, self._rewards_path(step))
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def remove_adapters(self, keep: Optional[int] = None) -> None:
        """Remove the adapter folders of every step but ``keep`` (their steps have been taken)."""
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.dir):
                match = re.fullmatch(r"step-(\d{6})", name)
                if match and int(match.group(1)) != keep:
                    remove_tree(os.path.join(self.dir, name))


def client_view(rollouts: dict, status: str) -> dict[str, Any]:
    """The rollouts object a client reads: what to answer and how, without the server's paths.

    >>> view = client_view({"step": 1, "adapters": {"m": "/x"}, "data": []}, "running")
    >>> sorted(view), view["object"]
    (['data', 'object', 'status', 'step'], 'fine_tuning.job.rollouts')
    """
    return {"object": "fine_tuning.job.rollouts", "status": status,
            **{k: v for k, v in rollouts.items() if k != "adapters"}}
