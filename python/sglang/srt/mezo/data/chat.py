"""Generative fine-tuning data: OpenAI's fine-tuning file formats into token ids and a target mask.

Two row formats, one JSON object a line (what OpenAI's fine-tuning API takes):

* chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}``; an assistant
  message may carry ``"weight": 0`` (context, not trained on) or ``1`` (the default).
* prompt/completion (OpenAI's legacy format; SQuAD rows are built the same way):
  ``{"prompt": "...", "completion": "..."}``.

:func:`read_completion_file` checks every row before any model is loaded; each problem is a
:class:`~sglang.srt.mezo.errors.DataFormatError` naming the file, the line and the fix.
:func:`encode_chat` and :func:`encode_completion` give a :class:`TokenizedCompletion`: the ids and,
per token, whether the loss is taken on it.

Where the targets start and stop (decided here, so that training sees what serving will do):

* chat: a row is rendered with the tokenizer's own chat template (``apply_chat_template``, the one
  SGLang's ``/v1/chat/completions`` applies). The targets of an assistant message are the tokens
  it adds after the generation prompt (``messages[:i]`` rendered with ``add_generation_prompt``):
  its content and the end-of-turn token, but not the whitespace some templates put after the
  end-of-turn token (ChatML's ``"<|im_end|>\\n"``): generation stops at that token, so the model
  never produces what follows it. Messages after the last trained one are dropped (a causal model's
  targets cannot see them).
* prompt/completion: ``tokenizer(prompt)`` with the tokenizer's leading special tokens (BOS, as
  SGLang's ``/v1/completions`` adds them), then ``tokenizer(completion)`` without any, tokenized
  apart: the completion's tokens are exactly what the model must generate after the prompt's.
  No EOS is appended: the completion's text decides its end (SQuAD's ends in ``"\\n"``).

The tokenizer is passed in (a ``transformers`` tokenizer or anything with the same methods); this
module imports neither torch nor transformers.

>>> ex = CompletionExample("Question: 2+2?\\nAnswer:", " 4\\n")
>>> ex.prompt + ex.completion
'Question: 2+2?\\nAnswer: 4\\n'
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sglang.srt.mezo.data.loaders import jsonl_objects
from sglang.srt.mezo.errors import DataFormatError

ROLES = ("system", "user", "assistant")


# Message keys OpenAI defines for tool use; a row using them cannot be rendered the way it was meant.
_TOOL_KEYS = ("tool_calls", "function_call", "tool_call_id")


@dataclass(frozen=True)
class Message:
    """One chat message; ``weight`` 0 makes an assistant message context, not a target (OpenAI's rule).

    >>> Message("assistant", "Paris.", weight=0).weight
    0
    """

    role: str
    content: str
    weight: int = 1


@dataclass(frozen=True)
class ChatExample:
    """An OpenAI chat-format row; ``where`` ("path, line N") is for error messages, ``references``
    the accepted answers for generation metrics (empty for chat files).

    >>> ChatExample((Message("user", "Hi"), Message("assistant", "Hello!"))).messages[1].role
    'assistant'
    """

    messages: tuple[Message, ...]
    where: str = ""
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class CompletionExample:
    """A plain-text prompt and the completion to train on (OpenAI's legacy format; SQuAD rows).

    >>> CompletionExample("Q: 1+1?\\nA:", " 2\\n", references=("2",)).references
    ('2',)
    """

    prompt: str
    completion: str
    where: str = ""
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenizedCompletion:
    """Token ids with a target mask: ``targets[i]`` means token i is trained on (predicted from
    position i-1), so ``targets[0]`` is always False. ``prompt_len`` counts the tokens before the
    first target: what generation is given as the prompt.

    >>> t = TokenizedCompletion((5, 6, 7), (False, False, True), prompt_len=2)
    >>> [i for i, is_target in zip(t.input_ids, t.targets) if is_target]
    [7]
    """

    input_ids: tuple[int, ...]
    targets: tuple[bool, ...]
    prompt_len: int
    where: str = ""
    references: tuple[str, ...] = ()


AnyExample = ChatExample | CompletionExample


# ---------------------------------------------------------------- reading and checking a file
def _content(value: Any, where: str, i: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("text", "input_text") or not isinstance(part.get("text"), str):
                raise DataFormatError(
                    f"{where}: message {i} has a content part {short_repr(part)}; only text parts "
                    '({"type": "text", "text": "..."}) can be trained on. Drop the other parts or '
                    "make the content a string")
            texts.append(part["text"])
        # SGLang's chat serving joins text parts with one space for string-content templates.
        return " ".join(texts)
    raise DataFormatError(f"{where}: message {i} has content {short_repr(value)}, expected a string "
                          '(or a list of {"type": "text", "text": ...} parts). Fill in the text')


def short_repr(value: Any) -> str:
    """``value`` as a short JSON or repr for an error message (at most 60 characters)."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def chat_row(obj: dict, where: str, *, trained: bool = True) -> ChatExample:
    """Check one ``{"messages": [...]}`` object (``where``: "file, line N" for the errors) into a :class:`ChatExample`.

    ``trained``: the row's assistant messages are what is trained on, so it needs one of weight 1;
    False: the row is a prompt to answer (a reinforcement row), its last message the user's."""
    for key in ("tools", "functions"):
        if key in obj:
            raise DataFormatError(f"{where}: the row has {key!r}; tool definitions are not supported for "
                                  "fine-tuning here. Remove the key (and any tool messages)")
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise DataFormatError(f"{where}: 'messages' must be a non-empty list of messages, found {short_repr(msgs)}")
    out = []
    for i, m in enumerate(msgs, 1):
        if not isinstance(m, dict):
            raise DataFormatError(f"{where}: message {i} is {short_repr(m)}, expected an object "
                                  'such as {"role": "user", "content": "..."}')
        role = m.get("role")
        if role not in ROLES:
            hint = " (tool use is not supported)" if role in ("tool", "function") else ""
            raise DataFormatError(f"{where}: message {i} has role {short_repr(role)}{hint}; the roles are "
                                  f"{', '.join(ROLES)}. Fix the role or drop the message")
        tool_key = next((k for k in _TOOL_KEYS if k in m), None)
        if tool_key:
            raise DataFormatError(f"{where}: message {i} has {tool_key!r}; tool use is not supported for "
                                  "fine-tuning here. Remove it, or give the message text content")
        weight = m.get("weight", 1)
        if "weight" in m and role != "assistant":
            raise DataFormatError(f"{where}: message {i} ({role}) has a weight; only assistant messages may "
                                  "carry one (0: context, 1: trained on). Remove it")
        if isinstance(weight, bool) or weight not in (0, 1):
            raise DataFormatError(f"{where}: message {i} has weight {short_repr(weight)}; it must be 0 (context, "
                                  "not trained on) or 1 (trained on). Fix the value")
        out.append(Message(role, _content(m.get("content"), where, i), int(weight)))
    if not trained:
        if out[-1].role != "user":
            raise DataFormatError(f"{where}: the last message is the {out[-1].role}'s; a reinforcement row is a prompt "
                                  "the model answers, so its last message must be the user's. Drop the answer (the "
                                  "grader reads reference answers from the row's other fields)")
        return ChatExample(tuple(out), where)
    if not any(m.role == "assistant" for m in out):
        raise DataFormatError(f"{where}: no assistant message, so nothing to train on. Add the assistant's "
                              "reply as the last message")
    if not any(m.role == "assistant" and m.weight for m in out):
        raise DataFormatError(f"{where}: every assistant message has weight 0, so nothing to train on. "
                              "Set weight 1 (or drop the key) on at least one")
    return ChatExample(tuple(out), where)


def _completion_row(obj: dict, where: str) -> CompletionExample:
    for key, other in (("prompt", "completion"), ("completion", "prompt")):
        if key not in obj:
            raise DataFormatError(f"{where}: the row has {other!r} but no {key!r}. Every prompt/completion "
                                  "row needs both")
        if not isinstance(obj[key], str):
            raise DataFormatError(f"{where}: {key!r} is {short_repr(obj[key])}, expected a string. Fix the row")
    if not obj["completion"]:
        raise DataFormatError(f"{where}: 'completion' is empty, so nothing to train on. Fill it in or drop "
                              "the row")
    return CompletionExample(obj["prompt"], obj["completion"], where)


def read_completion_file(path: str | os.PathLike) -> list[AnyExample]:
    """Read and check a JSONL fine-tuning file of chat rows or of prompt/completion rows (not both).

    Every problem raises :class:`DataFormatError` naming the file, the line and the fix: a line that
    is not a JSON object, a row of neither format, an unknown role, non-text content (a list of text
    parts is joined with spaces, as SGLang's chat serving does), a weight other than 0/1 or on a
    non-assistant message, no trainable assistant message, a file mixing formats, an empty file.
    Keys that do not change the rendering (a message's ``"name"``) are ignored.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "chat.jsonl"
    >>> _ = path.write_text('{"messages": [{"role": "user", "content": "Hi"}, '
    ...                     '{"role": "assistant", "content": "Hello!"}]}\\n')
    >>> [m.content for m in read_completion_file(path)[0].messages]
    ['Hi', 'Hello!']
    """
    path = Path(path)
    out: list[AnyExample] = []
    first: tuple[str, str] | None = None  # (format, where) of the first row, for the mixed-format error
    for where, obj in jsonl_objects(path, ', {"messages": [...]} or {"prompt": ..., "completion": ...}'):
        has_chat, has_pc = "messages" in obj, "prompt" in obj or "completion" in obj
        if has_chat == has_pc:
            what = "both 'messages' and 'prompt'/'completion'" if has_chat else f"keys {sorted(obj)}"
            raise DataFormatError(f"{where}: the row has {what}; a row is either chat "
                                  '({"messages": [...]}) or {"prompt": ..., "completion": ...}. Fix the row')
        fmt = "chat" if has_chat else "prompt/completion"
        if first is None:
            first = (fmt, where)
        elif fmt != first[0]:
            raise DataFormatError(f"{where}: a {fmt} row, but the file started with {first[0]} rows "
                                  f"({first[1]}). Use one format per file")
        out.append(chat_row(obj, where) if has_chat else _completion_row(obj, where))
    if not out:
        raise DataFormatError(f"{path}, line 1: empty file; expected one JSON object a line, "
                              '{"messages": [...]} or {"prompt": ..., "completion": ...}')
    return out


# ---------------------------------------------------------------- tokenizing
def _ids(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def _check_length(n: int, max_length: int | None, where: str) -> None:
    if max_length is not None and n > max_length:
        raise DataFormatError(f"{where}: the row is {n} tokens, longer than the {max_length} a run allows "
                              "(the model's context, and half the run's max_total_tokens). Shorten the row (or "
                              "split the conversation), or raise max_total_tokens")


def _render(tokenizer, messages: Sequence[Message], generation_prompt: bool) -> list[int]:
    # Render as text, then tokenize without special tokens: what apply_chat_template(tokenize=True)
    # does, without depending on the return type that changed across transformers versions.
    text = tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in messages],
                                         tokenize=False, add_generation_prompt=generation_prompt)
    return _ids(tokenizer, text, add_special_tokens=False)


def _require_template(tokenizer, where: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise DataFormatError(f"{where}: a chat row, but the tokenizer has no chat template. Use a model "
                              "with one (an instruct/chat model), or write the rows as "
                              '{"prompt": ..., "completion": ...}')


def _template_error(where: str, what: str) -> DataFormatError:
    return DataFormatError(f"{where}: the tokenizer's chat template {what}, so the assistant's tokens cannot be "
                           "told apart from the rest (templates that rewrite earlier turns do this). Use a "
                           "template that only appends, or write the rows as prompt/completion")


def _end_of_turn(tokenizer, added: Sequence[int]) -> int:
    """How many of an assistant message's added tokens to train on: up to and including the last
    special token if only whitespace follows it (ChatML's "<|im_end|>\\n"), else all of them."""
    special = set(getattr(tokenizer, "all_special_ids", None) or ())
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special.update(i for i, t in decoder.items() if getattr(t, "special", False))
    last = max((k for k, t in enumerate(added) if t in special), default=None)
    if last is None or last == len(added) - 1:
        return len(added)
    tail = tokenizer.decode(list(added[last + 1:]))
    return last + 1 if not tail.strip() else len(added)


def encode_chat(tokenizer, example: ChatExample, max_length: int | None = None) -> TokenizedCompletion:
    """Render a chat row with the tokenizer's chat template; the targets are the tokens each assistant
    message of weight 1 adds (content and end-of-turn token, see the module docstring).

    Raises :class:`DataFormatError` if the tokenizer has no chat template, if the template does not
    render each conversation as a token prefix of the next, or if the row exceeds ``max_length``.

    >>> class CharTokenizer:  # one id a character; the template is "<role>text|\\n", "|" ends a turn
    ...     chat_template, all_special_ids = "toy", [ord("|")]
    ...     def __call__(self, text, add_special_tokens=True):
    ...         return {"input_ids": [ord(c) for c in text]}
    ...     def decode(self, ids):
    ...         return "".join(map(chr, ids))
    ...     def apply_chat_template(self, messages, tokenize, add_generation_prompt):
    ...         text = "".join(f"<{m['role']}>{m['content']}|\\n" for m in messages)
    ...         return text + ("<assistant>" if add_generation_prompt else "")
    >>> ex = ChatExample((Message("user", "hi"), Message("assistant", "yo")))
    >>> enc = encode_chat(CharTokenizer(), ex)
    >>> "".join(chr(i) for i, t in zip(enc.input_ids, enc.targets) if t), enc.prompt_len
    ('yo|', 21)
    """
    where = example.where or "chat row"
    _require_template(tokenizer, where)
    msgs = example.messages
    trained = [i for i, m in enumerate(msgs) if m.role == "assistant" and m.weight]
    if not trained:
        raise DataFormatError(f"{where}: no assistant message of weight 1, so nothing to train on")
    full = _render(tokenizer, msgs[:trained[-1] + 1], generation_prompt=False)
    _check_length(len(full), max_length, where)
    targets = [False] * len(full)
    for i in trained:
        before = _render(tokenizer, msgs[:i], generation_prompt=True)
        after = _render(tokenizer, msgs[:i + 1], generation_prompt=False)
        if after[:len(before)] != before:
            raise _template_error(where, f"renders message {i + 1} with a different beginning than the "
                                         "generation prompt before it")
        if full[:len(after)] != after:
            raise _template_error(where, f"renders the conversation up to message {i + 1} differently "
                                         "once later messages follow")
        if not before:
            raise _template_error(where, "renders an empty generation prompt")
        added = after[len(before):]
        for k in range(len(before), len(before) + _end_of_turn(tokenizer, added)):
            targets[k] = True
    if not any(targets):
        raise DataFormatError(f"{where}: the assistant messages render to no tokens, so nothing to train on")
    return TokenizedCompletion(tuple(full), tuple(targets), targets.index(True), example.where, example.references)


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt's ids with the tokenizer's leading special tokens (BOS) but no trailing ones (an EOS
    or SEP after the prompt would tell the model the text ended before the completion)."""
    full, bare = _ids(tokenizer, prompt, True), _ids(tokenizer, prompt, False)
    if not bare:
        bos = getattr(tokenizer, "bos_token_id", None)
        return full[:1] if full and full[0] == bos else []
    k = next((k for k in range(len(full) - len(bare) + 1) if full[k:k + len(bare)] == bare), None)
    return full if k is None else full[:k + len(bare)]


def encode_completion(tokenizer, example: CompletionExample, max_length: int | None = None) -> TokenizedCompletion:
    """``tokenizer(prompt)`` (leading special tokens kept) + ``tokenizer(completion)`` (none added),
    tokenized apart; the completion's tokens are the targets. No EOS is appended.

    Raises :class:`DataFormatError` if the row exceeds ``max_length`` or leaves nothing to condition on.

    >>> tok = type("Tok", (), {"bos_token_id": 1, "__call__": lambda self, text, add_special_tokens=True:
    ...     {"input_ids": [1] * add_special_tokens + [ord(c) for c in text]}})()
    >>> enc = encode_completion(tok, CompletionExample("Q:", " A"))
    >>> enc.input_ids, enc.targets, enc.prompt_len
    ((1, 81, 58, 32, 65), (False, False, False, True, True), 3)
    """
    where = example.where or "prompt/completion row"
    prompt = _prompt_ids(tokenizer, example.prompt)
    completion = _ids(tokenizer, example.completion, False)
    if not prompt:
        raise DataFormatError(f"{where}: the prompt is empty and the tokenizer adds no BOS token, so the "
                              "first completion token has nothing to be predicted from. Give the row a prompt")
    if not completion:
        raise DataFormatError(f"{where}: the completion tokenizes to no tokens, so nothing to train on")
    ids = prompt + completion
    _check_length(len(ids), max_length, where)
    targets = (False,) * len(prompt) + (True,) * len(completion)
    return TokenizedCompletion(tuple(ids), targets, len(prompt), example.where, example.references)


def encode_all(tokenizer, examples: Iterable[AnyExample], max_length: int | None = None) -> list[TokenizedCompletion]:
    """Encode chat and prompt/completion examples alike (the first bad row raises).

    >>> tok = type("Tok", (), {"__call__": lambda self, text, add_special_tokens=True:
    ...     {"input_ids": [ord(c) for c in text]}})()
    >>> [e.prompt_len for e in encode_all(tok, [CompletionExample("ab", "c"), CompletionExample("a", "bc")])]
    [2, 1]
    """
    return [encode_chat(tokenizer, e, max_length) if isinstance(e, ChatExample)
            else encode_completion(tokenizer, e, max_length) for e in examples]


def generation_prompt(tokenizer, example: AnyExample) -> list[int]:
    """The ids to generate from: for chat, the messages before the last assistant message rendered
    with the template's generation prompt; for prompt/completion, the prompt's ids.

    >>> tok = type("Tok", (), {"__call__": lambda self, text, add_special_tokens=True:
    ...     {"input_ids": [ord(c) for c in text]}})()
    >>> generation_prompt(tok, CompletionExample("Hi", " there"))
    [72, 105]
    """
    if isinstance(example, CompletionExample):
        return _prompt_ids(tokenizer, example.prompt)
    where = example.where or "chat row"
    _require_template(tokenizer, where)
    last = max((i for i, m in enumerate(example.messages) if m.role == "assistant"), default=None)
    if last is None:
        raise DataFormatError(f"{where}: no assistant message, so no place to generate at")
    return _render(tokenizer, example.messages[:last], generation_prompt=True)


def prompt_ids(tokenizer, example: AnyExample) -> list[int]:
    """The ids of a prompt to answer (a reinforcement row): every message, rendered with the
    template's generation prompt; a prompt/completion row's prompt."""
    if isinstance(example, CompletionExample):
        return _prompt_ids(tokenizer, example.prompt)
    _require_template(tokenizer, example.where or "chat row")
    return _render(tokenizer, example.messages, generation_prompt=True)
