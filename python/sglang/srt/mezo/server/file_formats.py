"""Which fine-tuning format a job's data file is in, from its first row: OpenAI's chat or
prompt/completion rows, preference pairs (OpenAI's dpo rows, TRL's prompt/chosen/rejected),
reinforcement prompts, or none of them (classification rows, which the task's loader reads).

A request is checked against the format (:mod:`.job_requests`) before its data is loaded, so a
file in the wrong format gets a message that names the job's setting to change instead of the
loader's complaint about a row. This module reads one line of the file, nothing else.
"""

from __future__ import annotations

import json
import os
from typing import Optional

#: Bytes of a data file's first row that :func:`file_format` reads at most (a longer first row is
#: not sniffed: the file goes the classification way, whose loader then names what is wrong).
SNIFF_BYTES = 4 * 1024 * 1024


def file_format(path: str) -> Optional[str]:
    """``"chat"``, ``"prompt/completion"``, ``"preference"`` (OpenAI's dpo rows, TRL's
    prompt/chosen/rejected) or ``"reinforcement"`` (chat messages ending with the user's: prompts for a
    grader) when the first row of a JSONL file is one of those fine-tuning formats; None otherwise
    (classification data, another file type, or a first row that is not a JSON object, left to the
    loader to report with its line).

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "rows.jsonl")
    >>> _ = open(path, "w").write('\\n{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}\\n')
    >>> file_format(path)
    'chat'
    >>> _ = open(path, "w").write('{"messages": [{"role": "user", "content": "Hi"}], "answer": "Hello"}\\n')
    >>> file_format(path)
    'reinforcement'
    >>> _ = open(path, "w").write('{"sentence": "a fine film", "label": 1}\\n')
    >>> file_format(path) is None
    True
    """
    if os.path.splitext(path)[1].lower() not in (".jsonl", ".json"):
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            line = ""
            while not line.strip():
                line = f.readline(SNIFF_BYTES)
                if not line:
                    return None
        row = json.loads(line)
    except (OSError, ValueError):
        return None
    if not isinstance(row, dict):
        return None
    if "preferred_output" in row or "non_preferred_output" in row or "chosen" in row or "rejected" in row:
        return "preference"
    if "messages" in row:
        messages = row["messages"]
        last = messages[-1] if isinstance(messages, list) and messages else None
        return "reinforcement" if isinstance(last, dict) and last.get("role") == "user" else "chat"
    if "prompt" in row or "completion" in row:
        return "prompt/completion"
    return None
