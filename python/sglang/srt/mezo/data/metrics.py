"""The metrics of a classification task, accuracy and macro-F1 (CB's metric), and of a generative
one, SQuAD's exact match and token F1.

The SQuAD metrics are SQuAD v1.1's official evaluation script (``evaluate-v1.1.py``: normalise,
compare, take the best over the accepted answers) rewritten here: the libraries that ship it need
torch (``torchmetrics``), which this layer does not import, or download the metric's code from the
hub at run time (``evaluate``), which the machines here cannot.

>>> accuracy([1, 0, 1], [1, 1, 1])
0.6666666666666666
>>> compute_metric("f1", [0, 1], [0, 1])
1.0
>>> squad_scores(["the Eiffel Tower", "Paris"], [["Eiffel Tower"], ["Lyon"]])
{'eval_f1': 50.0, 'eval_exact_match': 50.0}
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence


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


# ---------------------------------------------------------------- SQuAD (v1.1's evaluate-v1.1.py)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles (a/an/the), single spaces.

    >>> normalize_answer("The  Eiffel-Tower, in Paris!")
    'eiffeltower in paris'
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    # Articles go after punctuation, as in the official script: "the-end" -> "theend" keeps its "the".
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _best(prediction: str, references: Sequence[str], score) -> float:
    if isinstance(references, str) or not references:
        raise ValueError(f"references must be a non-empty list of answers, got {references!r}")
    return max(score(prediction, ref) for ref in references)


def _exact(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def _f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:  # also when either side normalises to nothing, as the official script scores it
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals a normalised reference, else 0.0.

    >>> squad_exact_match("The Denver Broncos", ["Denver Broncos", "Broncos"])
    1.0
    """
    return _best(prediction, references, _exact)


def squad_f1(prediction: str, references: Sequence[str]) -> float:
    """Best token-bag F1 between the normalised prediction and any reference.

    >>> round(squad_f1("Denver Broncos won", ["Denver Broncos"]), 4)  # precision 2/3, recall 1
    0.8
    """
    return _best(prediction, references, _f1)


def squad_scores(predictions: Sequence[str], references_list: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean F1 and exact match over examples, in percent, as the official script reports them.

    >>> squad_scores(["Broncos"], [["Denver Broncos"]])
    {'eval_f1': 66.66666666666666, 'eval_exact_match': 0.0}
    """
    preds, refs = _pairs(predictions, references_list)
    f1 = sum(squad_f1(p, r) for p, r in zip(preds, refs)) / len(refs)
    em = sum(squad_exact_match(p, r) for p, r in zip(preds, refs)) / len(refs)
    return {"eval_f1": 100 * f1, "eval_exact_match": 100 * em}
