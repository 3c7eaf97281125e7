"""Generative tasks as prompt/completion rows: SQuAD with the MeZO paper's prompt.

The prompt is ``SQuADv2Template`` of the MeZO paper (Malladi et al. 2023; ``large_models/templates.py``
of princeton-nlp/MeZO). Files are read in place, one JSON object a line (``../shared/data/squad``);
a bad row raises
:class:`~sglang.srt.mezo.errors.DataFormatError` with its file and line.

>>> squad_prompt("Paris", "Paris is the capital of France.", "What is the capital of France? ")
'Title: Paris\\nContext: Paris is the capital of France.\\nQuestion: What is the capital of France?\\nAnswer:'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sglang.srt.mezo.data.chat import CompletionExample
from sglang.srt.mezo.data.loaders import jsonl_objects
from sglang.srt.mezo.errors import DataFormatError


def squad_prompt(title: str, context: str, question: str) -> str:
    """MeZO's SQuAD prompt (``SQuADv2Template.encode``); the question is stripped, as there.

    >>> squad_prompt("T", "C.", "Q?")
    'Title: T\\nContext: C.\\nQuestion: Q?\\nAnswer:'
    """
    return f"Title: {title}\nContext: {context}\nQuestion: {question.strip()}\nAnswer:"


def _rows(path: Path, max_examples: int | None, fields: tuple[str, ...]):
    if max_examples is not None and max_examples < 0:
        raise ValueError(f"max_examples must be >= 0 or None, got {max_examples}")
    seen = False
    for k, (where, obj) in enumerate(jsonl_objects(path)):
        seen = True
        if max_examples is not None and k >= max_examples:
            break
        missing = [f for f in fields if f not in obj]
        if missing:
            raise DataFormatError(f"{where}: field {missing[0]!r} is missing (row has {sorted(obj)}); "
                                  f"each row needs {', '.join(fields)}")
        yield where, obj
    if not seen:
        raise DataFormatError(f"{path}, line 1: empty file; expected one JSON object a line")


def _strings(value: Any, key: str, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) and a.strip() for a in value):
        raise DataFormatError(f"{where}: {key!r} must be a non-empty list of non-empty strings, found {value!r}")
    return value


def squad_examples(path: str | os.PathLike, max_examples: int | None = None) -> list[CompletionExample]:
    """SQuAD rows (``title``, ``context``, ``question``, ``answers``) as MeZO's prompt and the completion
    ``" {first answer}\\n"``, with every accepted answer as ``references``; the first ``max_examples``
    rows of the file, in file order.

    >>> import json, tempfile
    >>> path = Path(tempfile.mkdtemp()) / "squad.jsonl"
    >>> _ = path.write_text(json.dumps({"id": "1", "title": "Paris", "context": "Paris is in France.",
    ...                                 "question": "Where is Paris?", "answers": ["France", "in France"]}) + "\\n")
    >>> ex = squad_examples(path)[0]
    >>> ex.completion, ex.references, ex.where.endswith("squad.jsonl, line 1")
    (' France\\n', ('France', 'in France'), True)
    """
    path = Path(path)
    out = []
    for where, row in _rows(path, max_examples, ("title", "context", "question", "answers")):
        for key in ("title", "context", "question"):
            if not isinstance(row[key], str):
                raise DataFormatError(f"{where}: {key!r} must be a string, found {row[key]!r}")
        answers = _strings(row["answers"], "answers", where)
        out.append(CompletionExample(squad_prompt(row["title"], row["context"], row["question"]),
                                     f" {answers[0]}\n", where, tuple(answers)))
    return out

