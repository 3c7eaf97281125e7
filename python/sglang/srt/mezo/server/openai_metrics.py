"""A job's metrics under OpenAI's names: the data of a ``metrics`` event and of a checkpoint, and the
results CSV a succeeded job hands back (``GET /v1/files/file-results-<job>/content``).

A run names its metrics as the trainer does (``loss``, ``eval_loss``, ``eval_mean_token_accuracy``);
OpenAI's clients read ``train_loss``, ``valid_loss``, ``valid_mean_token_accuracy``. This module is
the one place that maps the first onto the second.
"""

from __future__ import annotations

import csv
import io
from typing import Optional

#: The columns of a job's metrics CSV and the keys of its ``metrics`` events, OpenAI's names.
METRIC_COLUMNS = ("step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy")

#: A reinforcement job's mean rewards, OpenAI's names: of a step's batch (the run's own step metric)
#: and of the validation file (the evaluation's ``eval_reward``).
TRAIN_REWARD, VALID_REWARD = "train_reward_mean", "valid_reward_mean"

#: What a run's step event holds besides the objective's own training metrics.
STEP_FIELDS = ("event", "step", "loss", "projected_grad", "lr", "step_time_s", "tokens", "train_mean_token_accuracy")


def metrics_data(step: int, train: Optional[dict] = None, valid: Optional[dict] = None) -> dict:
    """OpenAI's metrics of one step (a ``metrics`` event's data, a checkpoint's metrics): the training
    ones from a run's step event (``loss``, ``train_mean_token_accuracy``), the validation ones from
    its eval record (``eval_loss``, ``eval_mean_token_accuracy``); None for what was not measured
    (token accuracy for classification jobs, validation at a step without an evaluation).

    >>> metrics_data(3, train={"loss": 0.5})
    {'step': 3, 'train_loss': 0.5, 'train_mean_token_accuracy': None, 'valid_loss': None, 'valid_mean_token_accuracy': None}
    """
    train, valid = train or {}, valid or {}
    data = {"step": step, "train_loss": train.get("loss"),
            "train_mean_token_accuracy": train.get("train_mean_token_accuracy"),
            "valid_loss": valid.get("eval_loss"), "valid_mean_token_accuracy": valid.get("eval_mean_token_accuracy")}
    if valid.get("eval_reward") is not None:
        data[VALID_REWARD] = valid["eval_reward"]
    return data


def train_extras(step_event: dict) -> dict:
    """The objective's own training metrics of a step (a DPO job's ``rewards/*`` and ``logps/*``, as
    TRL names them), under their names.

    >>> train_extras({"event": "step", "step": 1, "loss": 0.6, "rewards/accuracies": 0.75})
    {'rewards/accuracies': 0.75}
    """
    return {k: v for k, v in step_event.items() if k not in STEP_FIELDS}


def step_extras(metrics: dict) -> dict:
    """Of a ``metrics`` event's data, the objective's own training metrics that the results CSV gets a
    column for: DPO's TRL-named ``rewards/*`` and ``logps/*``, a reinforcement job's mean reward.

    >>> step_extras({"step": 2, "train_loss": 0.5, "rewards/margins": 0.1, "lr": 1e-3})
    {'rewards/margins': 0.1}
    """
    return {k: v for k, v in metrics.items() if "/" in k or k == TRAIN_REWARD}


def results_table(train_loss: list, evals: list, train_accuracy: Optional[dict] = None,
                  train_metrics: Optional[dict] = None) -> str:
    """A job's metrics CSV: one row per step, :data:`METRIC_COLUMNS` first, then one column for each
    other metric its steps (``train_metrics``: step -> the objective's own, a DPO job's ``rewards/*``)
    and its evaluations report (``eval_accuracy`` for a classification job; ``eval_exact_match`` and
    ``eval_f1`` when the rows have reference answers; a DPO job's ``eval_rewards/*``). An evaluation
    before the first step is the row of step 0; a cell is empty where nothing was measured.

    >>> print(results_table([0.9, 0.7], [{"step": 2, "eval_loss": 0.8, "eval_accuracy": 0.5}]), end="")
    step,train_loss,train_mean_token_accuracy,valid_loss,valid_mean_token_accuracy,eval_accuracy
    1,0.9,,,,
    2,0.7,,0.8,,0.5
    """
    train_accuracy = train_accuracy or {}
    rows = {i + 1: metrics_data(i + 1, train={"loss": loss, "train_mean_token_accuracy": train_accuracy.get(i + 1)})
            for i, loss in enumerate(train_loss)}
    train_metrics = train_metrics or {}
    for step, values in train_metrics.items():
        if step in rows:
            rows[step].update(values)
    taken = {"step", "eval_loss", "eval_mean_token_accuracy", "eval_reward"}
    eval_extra = sorted({k for e in evals for k in e if k.startswith("eval_") and k not in taken})
    rewards = [VALID_REWARD] if any(e.get("eval_reward") is not None for e in evals) else []
    extra = sorted({k for values in train_metrics.values() for k in values}) + rewards + eval_extra
    for e in evals:
        row = rows.setdefault(e["step"], metrics_data(e["step"]))
        row.update({k: v for k, v in metrics_data(e["step"], valid=e).items() if k.startswith("valid_")},
                   **{k: e.get(k) for k in eval_extra})
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(METRIC_COLUMNS + tuple(extra))
    for step in sorted(rows):
        w.writerow(["" if rows[step].get(c) is None else rows[step][c] for c in METRIC_COLUMNS + tuple(extra)])
    return out.getvalue()
