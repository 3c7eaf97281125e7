"""A run's learning curves as a picture: train loss and the evaluation metric against the step,
drawn from its ``metrics.jsonl`` into ``learning_curves.png`` beside it.

>>> import json, os, tempfile
>>> folder = tempfile.mkdtemp()
>>> with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
...     for step in range(1, 5):
...         _ = f.write(json.dumps({"event": "step", "step": step, "loss": 1.0 / step}) + "\\n")
...     _ = f.write(json.dumps({"event": "eval", "step": 4, "eval_accuracy": 0.75, "eval_loss": 0.5}) + "\\n")
>>> os.path.basename(plot_learning_curves(os.path.join(folder, "metrics.jsonl")))
'learning_curves.png'
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Optional

CURVES_FILE = "learning_curves.png"

# The metric a run reports first, where it has several (its eval record's keys, in this order).
_METRIC_ORDER = ("eval_accuracy", "eval_f1", "eval_macro_f1", "eval_reward")


def read_metrics(path: str) -> tuple[list[dict], list[dict]]:
    """The step and eval records of a ``metrics.jsonl`` (a torn last line is skipped)."""
    steps, evals = [], []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            (steps if record.get("event") == "step" else evals if record.get("event") == "eval" else []).append(record)
    return steps, evals


def eval_metric(evals: list[dict]) -> Optional[str]:
    """The name of the metric to plot from a run's evaluations (``eval_accuracy``, ...)."""
    keys = {k for e in evals for k, v in e.items() if k.startswith("eval_") and isinstance(v, (int, float))}
    for name in _METRIC_ORDER:
        if name in keys:
            return name
    return "eval_loss" if "eval_loss" in keys else (sorted(keys)[0] if keys else None)


def plot_learning_curves(metrics_path: str, out_path: Optional[str] = None, title: Optional[str] = None) -> str:
    """Draw ``metrics_path``'s train loss and eval metric against the step; return the PNG's path.

    The file is replaced whole (written beside, then renamed), so a reader never sees half a PNG.
    """
    # matplotlib takes about a second to import, paid at the first drawing; and its Agg backend
    # (no display) must be chosen before pyplot is imported.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out_path = out_path or os.path.join(os.path.dirname(os.path.abspath(metrics_path)), CURVES_FILE)
    steps, evals = read_metrics(metrics_path)
    metric = eval_metric(evals)
    fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    if steps:
        x = [s["step"] for s in steps]
        y = [s["loss"] for s in steps]
        ax_loss.plot(x, y, color="tab:blue", alpha=0.3, lw=0.8, label="per step")
        window = max(1, len(y) // 20)
        if window > 1:
            # A running sum, not a sum per point: redrawn after every evaluation of a run of any length.
            totals = list(itertools.accumulate(y, initial=0.0))
            smooth = [(totals[i + 1] - totals[max(0, i - window + 1)]) / (i + 1 - max(0, i - window + 1))
                      for i in range(len(y))]
            ax_loss.plot(x, smooth, color="tab:blue", lw=1.8, label=f"mean of {window} steps")
        ax_loss.legend(loc="upper right", fontsize=8)
    ax_loss.set(xlabel="step", ylabel="train loss (batch)", title="Train loss")
    if metric is not None:
        points = [(e["step"], e[metric]) for e in evals if metric in e]
        scale = 100.0 if metric.endswith(("accuracy", "f1")) and all(v <= 1 for _, v in points) else 1.0
        ax_eval.plot([p[0] for p in points], [scale * p[1] for p in points], "o-", color="tab:orange")
        label = metric.removeprefix("eval_").replace("_", " ") + (" (%)" if scale == 100.0 else "")
        ax_eval.set(xlabel="step", ylabel=label, title=f"Evaluation: {label}")
    else:
        ax_eval.set(xlabel="step", title="Evaluation: none yet")
    if title:
        fig.suptitle(title, fontsize=10)
    tmp = out_path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out_path)
    return out_path
