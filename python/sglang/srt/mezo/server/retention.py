"""Which of a job's checkpoints ``--mezo-keep-checkpoints N`` keeps: the last N (the very last is
what a resume continues from, so N >= 1 always keeps it) and the best, the highest validation
accuracy (the first of equals, as a run's result names its best step). 0 keeps all.

>>> ckpts = [{"step": s, "metrics": {"eval_accuracy": a}} for s, a in ((2, .5), (4, .9), (6, .7), (8, .6))]
>>> sorted(checkpoints_to_keep(ckpts, 2)), sorted(checkpoints_to_keep(ckpts, 1)), len(checkpoints_to_keep(ckpts, 0))
([4, 6, 8], [4, 8], 4)
"""

from __future__ import annotations

from typing import Sequence


def checkpoints_to_keep(checkpoints: Sequence[dict], keep_last: int) -> set[int]:
    """The steps kept of ``checkpoints`` (dicts with ``step`` and ``metrics``)."""
    steps = sorted(c["step"] for c in checkpoints)
    if keep_last <= 0:
        return set(steps)
    kept = set(steps[-keep_last:])
    scored = sorted((c for c in checkpoints if (c.get("metrics") or {}).get("eval_accuracy") is not None),
                    key=lambda c: c["step"])
    if scored:
        kept.add(max(scored, key=lambda c: c["metrics"]["eval_accuracy"])["step"])
    return kept
