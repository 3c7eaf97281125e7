"""Preference data (DPO): a prompt with a preferred and a non-preferred answer, as OpenAI and TRL write it.

Three row formats, one JSON object a line (one format per file):

* OpenAI's ``dpo`` method: ``{"input": {"messages": [...]}, "preferred_output": [{"role": "assistant",
  "content": ...}], "non_preferred_output": [{"role": "assistant", "content": ...}]}``;
* TRL's standard format: ``{"prompt": "...", "chosen": "...", "rejected": "..."}`` (plain text);
* TRL's conversational format: ``{"prompt": [messages], "chosen": [{"role": "assistant", ...}],
  "rejected": [{"role": "assistant", ...}]}``.

Each side of a row becomes one example of the completion objective's kind (:mod:`.chat`): the
prompt's messages plus that side's assistant message, rendered with the model's chat template, or
the prompt text plus that side's text. So the answer's tokens (the DPO log-likelihood's terms) are
exactly what the completion objective trains on, and what a served adapter generates.

:func:`read_preference_file` checks every row before a model loads: a missing side, a side that
is not one assistant message, two identical answers, a prompt that ends with the assistant's turn;
each error names the file, the line and the fix.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "pairs.jsonl"
>>> _ = path.write_text('{"prompt": "2+2=", "chosen": " 4", "rejected": " 5"}\\n')
>>> pair = read_preference_file(path)[0]
>>> pair.chosen.prompt + pair.chosen.completion, pair.rejected.completion
('2+2= 4', ' 5')
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from sglang.srt.mezo.data.chat import (
    AnyExample,
    ChatExample,
    CompletionExample,
    Message,
    TokenizedCompletion,
    chat_row,
    encode_all,
    short_repr,
)
from sglang.srt.mezo.data.loaders import jsonl_objects
from sglang.srt.mezo.errors import DataFormatError

#: (format name, prompt key, preferred key, non-preferred key)
FORMATS = (("OpenAI dpo", "input", "preferred_output", "non_preferred_output"),
           ("TRL", "prompt", "chosen", "rejected"))

_HINT = (', {"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]} '
         'or {"prompt": ..., "chosen": ..., "rejected": ...}')


@dataclass(frozen=True)
class PreferenceExample:
    """One preference pair: the same prompt answered the preferred way and the other way."""

    chosen: AnyExample
    rejected: AnyExample
    where: str = ""


@dataclass(frozen=True)
class TokenizedPair:
    """A pair's two sides as token ids with their answer tokens marked, and the sides' summed
    log-likelihoods under the reference model once the run has computed them."""

    chosen: TokenizedCompletion
    rejected: TokenizedCompletion
    where: str = ""
    reference: Optional[tuple[float, float]] = None  # (log p_ref(chosen), log p_ref(rejected))


def _side(obj: dict, key: str, where: str) -> Union[str, Message]:
    """One side of a row: text (TRL standard) or one assistant message (OpenAI, TRL conversational)."""
    value = obj[key]
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or len(value) != 1:
        n = len(value) if isinstance(value, list) else None
        what = f"{n} messages" if n is not None else short_repr(value)
        raise DataFormatError(f"{where}: {key!r} is {what}; a side of a preference pair is one assistant message "
                              f'([{{"role": "assistant", "content": "..."}}]). Keep one reply per side; put earlier '
                              "turns in the prompt")
    role = value[0].get("role") if isinstance(value[0], dict) else None
    if role != "assistant":
        raise DataFormatError(f"{where}: {key!r} is a message with role {short_repr(role)}; a side of a pair is "
                              "the assistant's reply. Set its role to 'assistant'")
    if value[0].get("weight", 1) != 1:
        raise DataFormatError(f"{where}: {key!r} has weight {short_repr(value[0]['weight'])}; both sides of a pair "
                              "are scored. Remove the weight")
    return chat_row({"messages": value}, f"{where}: {key!r}").messages[0]


def _prompt_messages(value: Any, key: str, where: str) -> tuple[Message, ...]:
    if key == "input" and (not isinstance(value, dict) or "messages" not in value):
        raise DataFormatError(f"{where}: 'input' is {short_repr(value)}, expected "
                              '{"messages": [{"role": "user", "content": "..."}, ...]}')
    row = dict(value) if key == "input" else {"messages": value}  # OpenAI's input is a chat row
    if not isinstance(row["messages"], list) or not row["messages"]:
        raise DataFormatError(f"{where}: the prompt must be a non-empty list of messages, found "
                              f"{short_repr(row['messages'])}")
    # The prompt's own assistant turns are context: checked as a chat row with a reply appended.
    row["messages"] = row["messages"] + [{"role": "assistant", "content": ""}]
    messages = chat_row(row, f"{where}: {key!r}").messages[:-1]
    if messages[-1].role == "assistant":
        raise DataFormatError(f"{where}: the prompt ends with an assistant message, so the answers would be a "
                              "second reply in the same turn. End the prompt with the user's message")
    return tuple(Message(m.role, m.content, 0) for m in messages)


def _pair(obj: dict, keys: tuple[str, str, str, str], where: str) -> PreferenceExample:
    fmt, prompt_key, good, bad = keys
    for key in (prompt_key, good, bad):
        if key not in obj:
            raise DataFormatError(f"{where}: a {fmt} row without {key!r}; every row needs {prompt_key!r}, "
                                  f"{good!r} and {bad!r}. Add it (or drop the row)")
    # OpenAI's rows are messages throughout: the prompt is checked first, then each side.
    messages = _prompt_messages(obj[prompt_key], prompt_key, where) if prompt_key == "input" else None
    sides = [_side(obj, good, where), _side(obj, bad, where)]
    if messages is not None:
        text = next((key for key, s in zip((good, bad), sides) if isinstance(s, str)), None)
        if text is not None:
            raise DataFormatError(f"{where}: {text!r} is text; OpenAI's dpo rows give each side as "
                                  '[{"role": "assistant", "content": "..."}]')
    texts = [s if isinstance(s, str) else s.content for s in sides]
    if not all(t.strip() for t in texts):
        key = good if not texts[0].strip() else bad
        raise DataFormatError(f"{where}: {key!r} is empty, so there is nothing to prefer. Fill it in or drop the row")
    if texts[0] == texts[1]:
        raise DataFormatError(f"{where}: {good!r} and {bad!r} are the same answer ({short_repr(texts[0])}), so the "
                              "pair prefers nothing. Drop the row or fix one side")
    prompt = obj[prompt_key]
    if isinstance(prompt, str) and prompt_key == "prompt":
        if not all(isinstance(s, str) for s in sides):
            raise DataFormatError(f"{where}: a text prompt with message answers; write all three as text, or "
                                  "the prompt as a list of messages")
        chosen, rejected = (CompletionExample(prompt, t, where) for t in texts)
    else:
        if any(isinstance(s, str) for s in sides):
            raise DataFormatError(f"{where}: a message prompt with text answers; write each answer as "
                                  '[{"role": "assistant", "content": "..."}]')
        messages = messages if messages is not None else _prompt_messages(prompt, prompt_key, where)
        chosen, rejected = (ChatExample(messages + (s,), where) for s in sides)
    return PreferenceExample(chosen, rejected, where)


def read_preference_file(path: Union[str, os.PathLike]) -> list[PreferenceExample]:
    """Read and check a JSONL file of preference pairs (see the module docstring for the formats).

    Every problem raises :class:`DataFormatError` naming the file, the line and the fix.
    """
    path = Path(path)
    out: list[PreferenceExample] = []
    first: Optional[tuple[str, str]] = None
    for where, obj in jsonl_objects(path, _HINT):
        matches = [f for f in FORMATS if any(k in obj for k in f[1:])]
        if len(matches) != 1:
            what = "keys of both formats" if matches else f"keys {sorted(obj)}"
            if "messages" in obj:
                what += " (a supervised chat row: a DPO file needs a preferred and a non-preferred answer)"
            raise DataFormatError(f"{where}: the row has {what}; a preference row is OpenAI's "
                                  '{"input": {"messages": [...]}, "preferred_output": [...], '
                                  '"non_preferred_output": [...]} or TRL\'s {"prompt", "chosen", "rejected"}')
        fmt = matches[0]
        if first is None:
            first = (fmt[0], where)
        elif fmt[0] != first[0]:
            raise DataFormatError(f"{where}: a {fmt[0]} row, but the file started with {first[0]} rows ({first[1]}). "
                                  "Use one format per file")
        out.append(_pair(obj, fmt, where))
    if not out:
        raise DataFormatError(f"{path}, line 1: empty file; expected one preference pair a line{_HINT}")
    return out


def encode_pairs(tokenizer, pairs: Iterable[Union[PreferenceExample, TokenizedPair]],
                 max_length: Optional[int] = None) -> list[TokenizedPair]:
    """Both sides of each pair encoded as the completion objective encodes a row (chat template or
    prompt + completion); the first bad row raises :class:`DataFormatError`."""
    out = []
    for p in pairs:
        if isinstance(p, TokenizedPair):
            out.append(p)
            continue
        chosen, rejected = encode_all(tokenizer, [p.chosen, p.rejected], max_length)
        if chosen.input_ids == rejected.input_ids:
            raise DataFormatError(f"{p.where or 'preference pair'}: both answers tokenize to the same ids, so the pair "
                                  "prefers nothing. Drop the row or fix one side")
        out.append(TokenizedPair(chosen, rejected, p.where))
    return out


def with_reference(pairs: Sequence[TokenizedPair], reference: Sequence[Sequence[float]]) -> list[TokenizedPair]:
    """``pairs`` with their reference log-likelihoods (one (chosen, rejected) per pair)."""
    if len(pairs) != len(reference):
        raise ValueError(f"{len(reference)} reference values for {len(pairs)} pairs")
    return [TokenizedPair(p.chosen, p.rejected, p.where, (float(r[0]), float(r[1]))) for p, r in zip(pairs, reference)]
