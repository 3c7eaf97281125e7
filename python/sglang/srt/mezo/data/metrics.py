"""The metrics of a classification task: accuracy and macro-F1 (CB's metric).

>>> accuracy([1, 0, 1], [1, 1, 1])
0.6666666666666666
>>> compute_metric("f1", [0, 1], [0, 1])
1.0
"""

from __future__ import annotations

from typing import Iterable


def _pairs(preds: Iterable, labels: Iterable) -> tuple[list, list]:
    preds, labels = list(preds), list(labels)
    if len(preds) != len(labels) or not labels:
        raise ValueError(f"need equally many, non-zero predictions and labels (got {len(preds)}, {len(labels)})")
    return preds, labels


def accuracy(preds: Iterable, labels: Iterable) -> float:
    """Fraction of predictions equal to the labels.

    >>> accuracy([1, 0, 1, 1], [1, 1, 1, 0])
    0.5
    """
    preds, labels = _pairs(preds, labels)
    return sum(p == y for p, y in zip(preds, labels)) / len(labels)


def macro_f1(preds: Iterable, labels: Iterable) -> float:
    """Unweighted mean of per-class F1 over every class seen in labels or predictions.

    >>> round(macro_f1([0, 1, 1, 1], [0, 0, 1, 1]), 4)  # F1 2/3 and 4/5
    0.7333
    """
    preds, labels = _pairs(preds, labels)
    scores = []
    for c in set(labels) | set(preds):
        tp = sum(p == c and y == c for p, y in zip(preds, labels))
        fp = sum(p == c and y != c for p, y in zip(preds, labels))
        fn = sum(p != c and y == c for p, y in zip(preds, labels))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def compute_metric(metric: str, preds: Iterable, labels: Iterable) -> float:
    """Dispatch on a preset's ``metric`` name ("accuracy" or "macro_f1").

    >>> compute_metric("macro_f1", ["neutral"], ["neutral"])
    1.0
    """
    funcs = {"accuracy": accuracy, "acc": accuracy, "macro_f1": macro_f1, "f1": macro_f1}
    if metric not in funcs:
        raise ValueError(f"unknown metric {metric!r}; use 'accuracy' or 'macro_f1'")
    return funcs[metric](preds, labels)
