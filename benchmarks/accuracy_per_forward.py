"""Held-out score against training cost: learning curves of runs that train on the same rows, on an
axis of sequence-forwards (a batched forward of B sequences counts B, as issue 35 counts cost), so
that estimators with different forwards a step compare at equal cost.

Each run is a library run folder (``metrics.jsonl`` and ``mezo_trajectory.json``, as
``generative_defaults.py`` and ``generative.py`` write them). A step event carries its
``sequence_forwards`` (the estimator's count, :meth:`Estimator.sequence_forwards
<sglang.srt.mezo.training.estimators.base.Estimator.sequence_forwards>`); runs recorded before step
events carried it get the same count from their recorded spec (:func:`recorded_cost`).

    .venv/bin/python benchmarks/accuracy_per_forward.py --title "SQuAD chat rows held out of train" \\
        --out results/forwards_squad_chat.png \\
        "rank 2=results/generative_defaults/runs/squad-lr0.003-rowsall-s500-linear-b8-chat" \\
        "rank 1=results/generative_defaults/runs/squad-lr0.003-rowsall-s500-linear-b8-r1-chat"

Writes the figure (score and held-out loss against sequence-forwards, one line a run) and a
markdown table of the points beside it (same name, ``.md``).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Optional

from harness import command_line, markdown_table

HERE = os.path.dirname(os.path.abspath(__file__))
SCORES = (("eval_f1", "F1 (%)", 1.0), ("eval_accuracy", "accuracy (%)", 100.0))


def recorded_cost(spec: dict) -> int:
    """Sequence-forwards a step of a run whose step events predate the field: the estimators'
    counts (training/estimators) for the spec's estimator, n_spsa, split_batch and batch_size."""
    rows, n = spec["batch_size"], spec.get("n_spsa") or 1
    estimator = spec.get("estimator") or "spsa"
    if estimator == "fzoo":
        return rows * (n + 1)
    if estimator == "hizoo":
        return rows * (2 * n + 1)
    return 2 * rows * (1 if spec.get("split_batch") else n)


def curve(run_dir: str) -> list[dict]:
    """The run's evaluations, each with the sequence-forwards and step seconds spent before it."""
    with open(os.path.join(run_dir, "mezo_trajectory.json")) as f:
        spec = json.load(f)["config"]
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        events = [json.loads(line) for line in f if line.strip()]
    forwards, seconds, points = 0, 0.0, []
    for e in events:
        if e["event"] == "step":
            forwards += e.get("sequence_forwards") or recorded_cost(spec)
            seconds += e.get("step_time_s", 0.0)
        elif e["event"] == "eval":
            points.append({**e, "sequence_forwards": forwards, "step_seconds": seconds})
    return points


def score_of(point: dict) -> Optional[tuple[str, float]]:
    for key, label, scale in SCORES:
        if key in point:
            return label, scale * point[key]
    return None


def plot(runs: dict[str, list[dict]], title: str, path: str) -> None:
    # matplotlib: loaded to draw, not by an import of this module.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    score_label = "score"
    for name, points in runs.items():
        scored = [(p["sequence_forwards"], score_of(p)) for p in points if score_of(p)]
        if scored:
            score_label = scored[0][1][0]
            left.plot([x for x, _ in scored], [s for _, (_, s) in scored], marker="o", label=name)
        right.plot([p["sequence_forwards"] for p in points], [p["eval_loss"] for p in points], marker="o", label=name)
    left.set(xlabel="sequence-forwards spent training", ylabel=f"held-out {score_label}", title="score")
    right.set(xlabel="sequence-forwards spent training", ylabel="held-out loss (mean token cross-entropy)",
              title="loss")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="LABEL=RUN_DIR (split at the last '='; RUN_DIR relative to benchmarks/ or absolute)")
    p.add_argument("--title", required=True)
    p.add_argument("--out", required=True, help="the figure's path (.png), relative to benchmarks/ or absolute")
    args = p.parse_args()
    runs = {}
    for item in args.runs:
        label, _, run_dir = item.rpartition("=")
        if not run_dir:
            p.error(f"{item!r}: give each run as LABEL=RUN_DIR")
        runs[label] = curve(os.path.join(HERE, run_dir))
    out = os.path.join(HERE, args.out)
    plot(runs, args.title, out)
    rows = [[label, p["step"], p["sequence_forwards"], f"{p['step_seconds'] / 60:.1f}",
             f"{score_of(p)[1]:.1f}" if score_of(p) else "-", f"{p['eval_loss']:.3f}"]
            for label, points in runs.items() for p in points]
    table = markdown_table(["run", "step", "sequence-forwards", "step minutes", "held-out score", "held-out loss"], rows)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(f"# {args.title}\n\nCommand: `{command_line()}`\n\nStep minutes: the steps' own wall time "
                "(evaluations excluded), on the machine of each run's record; runs that shared the machine "
                "are slower than alone.\n\n" + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
