"""Preference files (OpenAI's dpo rows, TRL's prompt/chosen/rejected): what they become, and every bad
row refused with the file, the line and the fix."""

from __future__ import annotations

import json

import pytest

from sglang.srt.mezo.data.chat import ChatExample, CompletionExample
from sglang.srt.mezo.data.preference import PreferenceExample, encode_pairs, read_preference_file
from sglang.srt.mezo.errors import DataFormatError


def _file(tmp_path, rows, name="pairs.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _openai(good="Paris", bad="Rome", messages=None):
    return {"input": {"messages": messages or [{"role": "user", "content": "Capital of France?"}]},
            "preferred_output": [{"role": "assistant", "content": good}],
            "non_preferred_output": [{"role": "assistant", "content": bad}]}


def test_the_three_formats_become_one_example_a_side(tmp_path):
    ctx = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
           {"role": "assistant", "content": "hello"}, {"role": "user", "content": "capital?"}]
    (pair,) = read_preference_file(_file(tmp_path, [_openai(messages=ctx)]))
    assert isinstance(pair.chosen, ChatExample) and pair.where.endswith("pairs.jsonl, line 1")
    assert [m.role for m in pair.chosen.messages] == ["system", "user", "assistant", "user", "assistant"]
    # Only the answer is a target: the prompt's own assistant turn is context (weight 0).
    assert [m.weight for m in pair.chosen.messages if m.role == "assistant"] == [0, 1]
    assert pair.chosen.messages[-1].content == "Paris" and pair.rejected.messages[-1].content == "Rome"
    assert pair.chosen.messages[:-1] == pair.rejected.messages[:-1]

    conv = {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}],
            "rejected": [{"role": "assistant", "content": "5"}]}
    (pair,) = read_preference_file(_file(tmp_path, [conv], "conv.jsonl"))
    assert isinstance(pair.chosen, ChatExample) and pair.rejected.messages[-1].content == "5"

    (pair,) = read_preference_file(_file(tmp_path, [{"prompt": "2+2=", "chosen": " 4", "rejected": " 5"}], "t.jsonl"))
    assert pair.chosen == CompletionExample("2+2=", " 4", pair.where)


@pytest.mark.parametrize("row, message", [
    ({"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [
        {"role": "assistant", "content": "a"}]}, "without 'non_preferred_output'"),
    (_openai(good="same", bad="same"), "are the same answer"),
    (_openai(bad="  "), "'non_preferred_output' is empty"),
    ({**_openai(), "preferred_output": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]},
     "'preferred_output' is 2 messages; a side of a preference pair is one assistant message"),
    ({**_openai(), "preferred_output": [{"role": "user", "content": "a"}]}, "role 'user'"),
    ({**_openai(), "preferred_output": [{"role": "assistant", "content": 3}]}, "expected a string"),
    (_openai(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]),
     "the prompt ends with an assistant message"),
    ({"input": "just text", "preferred_output": "a", "non_preferred_output": "b"}, "'input' is 'just text'"),
    (_openai(messages=[{"role": "robot", "content": "q"}]), "role 'robot'"),
    ({**_openai(), "input": {"messages": [{"role": "user", "content": "q"}], "tools": []}}, "tool definitions"),
    ({"prompt": "q", "chosen": [{"role": "assistant", "content": "a"}], "rejected": " b"}, "a text prompt with message"),
    ({"messages": [{"role": "user", "content": "q"}]}, "a supervised chat row"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "preferred_output": "c"}, "keys of both formats"),
])
def test_bad_rows_name_the_file_the_line_and_the_fix(tmp_path, row, message):
    first = {"prompt": "q", "chosen": "a", "rejected": "b"} if "prompt" in row and "preferred_output" not in row \
        else _openai()
    path = _file(tmp_path, [first, row])
    with pytest.raises(DataFormatError, match=r"pairs\.jsonl, line 2") as err:
        read_preference_file(path)
    assert message in str(err.value)


def test_files_that_are_not_pairs_are_refused(tmp_path):
    with pytest.raises(DataFormatError, match="line 2: a TRL row, but the file started with OpenAI dpo rows"):
        read_preference_file(_file(tmp_path, [_openai(), {"prompt": "q", "chosen": "a", "rejected": "b"}]))
    with pytest.raises(DataFormatError, match="line 1: invalid JSON"):
        read_preference_file(_file(tmp_path, ["{nope"]))
    with pytest.raises(DataFormatError, match="empty file"):
        read_preference_file(_file(tmp_path, []))


def test_answers_that_tokenize_alike_are_refused():
    tok = type("Tok", (), {"bos_token_id": None, "__call__": lambda self, text, add_special_tokens=True:
                           {"input_ids": [ord(c) for c in text.strip()]}})()
    pair = PreferenceExample(
        CompletionExample("q", " a", "f, line 3"), CompletionExample("q", "a ", "f, line 3"), "f, line 3")
    with pytest.raises(DataFormatError, match="f, line 3: both answers tokenize to the same ids"):
        encode_pairs(tok, [pair])
