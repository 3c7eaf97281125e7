"""One row of a task's data, as every loader gives it and every prompt reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable


@dataclass(frozen=True)
class Example:
    """One labelled input; ``text_b`` is None for single-sentence tasks.

    >>> Example("Which gas do plants take in?", None, 1, choices=("oxygen", "carbon dioxide")).choices[1]
    'carbon dioxide'

    >>> Example("the plot is thin .", None, 0).label
    0
    """

    text_a: str
    text_b: str | None
    label: Hashable
    #: A multiple-choice example's own options (``label`` indexes them); None: the task's label words.
    choices: tuple[str, ...] | None = None
