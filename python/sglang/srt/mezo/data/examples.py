"""One row of a task's data, as every loader gives it and every prompt reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable


@dataclass(frozen=True)
class Example:
    """One labelled input; ``text_b`` is None for single-sentence tasks.

    >>> Example("the plot is thin .", None, 0).label
    0
    """

    text_a: str
    text_b: str | None
    label: Hashable
