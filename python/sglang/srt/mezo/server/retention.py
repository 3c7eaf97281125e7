"""Which of a job's checkpoints ``--mezo-keep-checkpoints N`` keeps: the last N (the very last is
what a resume continues from, so N >= 1 always keeps it) and the best by the run's primary metric
(the first of equals, as a run's result names its best step): the highest validation accuracy of a
classification job, the highest F1 of answers with references, else the lowest validation loss
(a chat job's). 0 keeps all.

>>> ckpts = [{"step": s, "metrics": {"eval_accuracy": a}} for s, a in ((2, .5), (4, .9), (6, .7), (8, .6))]
>>> sorted(checkpoints_to_keep(ckpts, 2)), sorted(checkpoints_to_keep(ckpts, 1)), len(checkpoints_to_keep(ckpts, 0))
([4, 6, 8], [4, 8], 4)
>>> chats = [{"step": s, "metrics": {"eval_loss": x}} for s, x in ((2, 2.0), (4, 1.5), (6, 1.7), (8, 1.8))]
>>> sorted(checkpoints_to_keep(chats, 1, "eval_loss")), sorted(checkpoints_to_keep(chats, 1, "eval_f1"))
([4, 8], [4, 8])
"""

from __future__ import annotations

from typing import Sequence

#: Metrics where lower is better; every other one (accuracy, F1, exact match) is higher-is-better.
LOWER_IS_BETTER = ("eval_loss",)


def checkpoints_to_keep(checkpoints: Sequence[dict], keep_last: int, metric: str = "eval_accuracy") -> set[int]:
    """The steps kept of ``checkpoints`` (dicts with ``step`` and ``metrics``); ``metric``: the run's
    primary metric (its objective's ``primary_metric``). Checkpoints without it are ranked by
    ``eval_loss`` instead, as a run's result does when its evaluations lack the primary metric."""
    steps = sorted(c["step"] for c in checkpoints)
    if keep_last <= 0:
        return set(steps)
    kept = set(steps[-keep_last:])
    for name in dict.fromkeys((metric, "eval_loss")):
        scored = sorted((c for c in checkpoints if (c.get("metrics") or {}).get(name) is not None),
                        key=lambda c: c["step"])
        if scored:
            sign = -1.0 if name in LOWER_IS_BETTER else 1.0
            kept.add(max(scored, key=lambda c: sign * c["metrics"][name])["step"])
            break
    return kept
