"""Prompts for a reward run (OpenAI's ``reinforcement`` method): what the model answers, and the row's
fields a grader reads.

A reinforcement file is JSON lines of ``{"messages": [...], <any other fields>}`` whose last message
is the user's; the grader sees the whole row as ``{{item.<field>}}`` and the generated answer as
``{{sample.output_text}}``. SQuAD rows become prompts whose ``answers`` field holds every accepted
answer (and ``answer`` the first), for the default SQuAD-F1 grader.

>>> from sglang.srt.mezo.data.chat import CompletionExample
>>> ex = from_completions([CompletionExample("Q: 1+1?\\nA:", " 2\\n", "f, line 1", ("2", "two"))])[0]
>>> ex.item["answers"], ex.where
(['2', 'two'], 'f, line 1')
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from sglang.srt.mezo.data.chat import ChatExample, CompletionExample, chat_row, short_repr
from sglang.srt.mezo.data.loaders import jsonl_objects
from sglang.srt.mezo.errors import DataFormatError


@dataclass(frozen=True)
class RewardExample:
    """One prompt to answer and grade: ``prompt`` (chat messages ending with the user's, or a plain
    prompt), ``item`` (the row's fields, for the grader), ``where`` ("path, line N")."""

    prompt: Union[ChatExample, CompletionExample]
    item: Mapping[str, Any] = field(default_factory=dict, hash=False)
    where: str = ""

    @property
    def references(self) -> tuple[str, ...]:
        """The accepted answers, for SQuAD's F1 beside the reward (none for a reinforcement file)."""
        return self.prompt.references


def read_reinforcement_file(path: Union[str, os.PathLike]) -> list[RewardExample]:
    """Read and check a reinforcement JSONL file; every bad row raises :class:`DataFormatError` naming
    the file, the line and the fix, before any model loads."""
    out = []
    for where, obj in jsonl_objects(Path(path), ': {"messages": [{"role": "user", "content": ...}], ...}'):
        if "messages" not in obj:
            keys = ", ".join(sorted(obj)) or "none"
            hint = (" (that is a supervised or dpo row: a reinforcement job needs prompts only)"
                    if {"prompt", "completion", "input", "preferred_output"} & set(obj) else "")
            raise DataFormatError(f"{where}: no 'messages' (keys: {keys}){hint}. A reinforcement row is "
                                  '{"messages": [..., {"role": "user", "content": ...}], <fields the grader reads>}')
        if not isinstance(obj["messages"], list):
            raise DataFormatError(f"{where}: 'messages' is {short_repr(obj['messages'])}, expected a list of messages")
        out.append(RewardExample(chat_row(obj, where, trained=False), obj, where))
    if not out:
        raise DataFormatError(f"{path}: no rows. Add one JSON object per line")
    return out


def from_completions(examples: Iterable[CompletionExample]) -> list[RewardExample]:
    """Prompt/completion rows (SQuAD's) as prompts whose item carries ``answers`` (every reference,
    else the completion) and ``answer`` (the completion, stripped)."""
    out = []
    for e in examples:
        answers = list(e.references) or [e.completion.strip()]
        out.append(RewardExample(CompletionExample(e.prompt, "", e.where, e.references),
                                 {"answers": answers, "answer": e.completion.strip()}, e.where))
    return out


def as_reward_examples(rows: Sequence[Any]) -> list[RewardExample]:
    """Rows of a reward run as :class:`RewardExample`: as they are, or prompt/completion rows
    converted by :func:`from_completions`."""
    out = []
    for row in rows:
        if isinstance(row, RewardExample):
            out.append(row)
        elif isinstance(row, CompletionExample):
            out += from_completions([row])
        else:
            raise TypeError(f"a reward run's rows are RewardExample or CompletionExample, found {type(row).__name__}")
    return out
