"""Tests for sglang.srt.mezo_mlm_trainer: prompt building, label words, data for a run, the
prompt objective on SGLang runners, ``mezo_mlm_finetune`` end to end, and the CLI.

Runners: one per process at a time, so every test that builds one goes through ``trainer_for``
or ``mezo_mlm_finetune`` (which releases its runner). Torch runs on one thread here: on a shared
2-core machine two OpenMP threads competing with another busy process made a step ~20x slower.
"""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CORPUS, SPECIALS, TOY_ROWS, make_masked_lm, trainer_for
from sglang.srt import mezo_mlm_trainer as mm
from tokenizers import SentencePieceBPETokenizer, normalizers
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, PreTrainedTokenizerFast

from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.presets import LABEL_WORD_TASKS, get_task
from sglang.srt.mezo.data.prompt import EncodedExample, MLMConfig, PromptEncoder, label_token_ids
from sglang.srt.mezo.data.sampling import prepare_data
from sglang.srt.mezo.engine.models import check_model_path, model_kind
from sglang.srt.mezo.errors import DataFormatError
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.run_spec.defaults import DEFAULTS, resolve_hyperparameters
from sglang.srt.mezo.training.finetune import mezo_mlm_finetune
from sglang.srt.mezo.training.objectives.label_words import LabelWordObjective
from sglang.srt.mezo.training.prompt_trainer import MeZOMLMTrainer

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared data folder absent")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toks(roberta_tokenizer_dir, llama_tokenizer_dir):
    return {"masked": AutoTokenizer.from_pretrained(roberta_tokenizer_dir),
            "causal": AutoTokenizer.from_pretrained(llama_tokenizer_dir)}


@pytest.fixture(scope="module")
def sp_tok():
    """A SentencePiece-style tokenizer as Llama-2's: "▁" marks word starts, a dummy "▁" is
    prepended to every text (so " great" encodes as ["▁", "▁great"])."""
    sp = SentencePieceBPETokenizer()
    sp.train_from_iterator(CORPUS + ["is it ?\nyes", "is it ?\nno"] * 10, vocab_size=300, min_frequency=2,
                           special_tokens=SPECIALS)
    sp._tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    sp._tokenizer.pre_tokenizer = None
    return PreTrainedTokenizerFast(tokenizer_object=sp._tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")


def tokens(tok, ids):
    return tok.convert_ids_to_tokens(list(ids))


def test_doctests():
    assert doctest.testmod(mm).failed == 0


# ---------------------------------------------------------------- prompt building

# Single tokens of the tiny fixture vocabulary (lower case), for presets whose own label words
# ("Yes", "Description") it splits; the templates are the presets' own.
FIXTURE_WORDS = {"masked": ["yes", "no", "maybe", "good", "bad", "great"],
                 "causal": ["yes", "a", "the", "it", "was", "an"]}
PAIR = Example("the film is great fun .", "it was good .", None)

# Tokens around the mask token (masked LM) / at the end of the prompt (causal LM), per preset.
MASKED_AROUND = {
    "sst-2": ["Ġwas", "<mask>", "Ġ.", "</s>"], "sst-5": ["Ġwas", "<mask>", "Ġ.", "</s>"],
    "trec": ["<s>", "<mask>", "Ġ:", "Ġthe"],
    **{t: ["Ġfun", "Ġ?", "<mask>", "Ġ,", "Ġit"] for t in ("mnli", "snli", "rte", "cb")},  # "fun ." lost its "."
}
CAUSAL_END = {"sst-2": " It was", "sst-5": " It was", "trec": " Answer type:", "rte": " or No?\n",
              "cb": " or Maybe?\n", "boolq": " good .?\n"}


def _example(preset, label):
    return Example(PAIR.text_a, PAIR.text_b if len(preset.text_fields) == 2 else None, label)


@pytest.mark.parametrize("task", LABEL_WORD_TASKS)
def test_masked_prompt_tokens_around_mask(toks, task):
    tok, preset = toks["masked"], get_task(task)
    if preset.mlm_template is None:  # boolq: no masked-LM preset
        with pytest.raises(ValueError, match="no masked-LM prompt preset.*mlm_config"):
            PromptEncoder.for_task(tok, "masked", preset)
        return
    words = MLMConfig(label_word_mapping=dict(zip(preset.labels, FIXTURE_WORDS["masked"])))
    enc = PromptEncoder.for_task(tok, "masked", preset, words)
    e = enc.encode(_example(preset, preset.labels[-1]))
    ids = list(e.input_ids)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert ids.count(tok.mask_token_id) == 1 and ids[e.position] == tok.mask_token_id
    want = MASKED_AROUND[task]
    at = want.index("<mask>")
    assert tokens(tok, ids[e.position - at: e.position - at + len(want)]) == want
    assert e.label_index == len(preset.labels) - 1
    # LM-BFF label words carry the space: the mask token swallows the space before it.
    assert tokens(tok, enc.label_token_ids) == ["Ġ" + w for w in FIXTURE_WORDS["masked"][: len(preset.labels)]]


@pytest.mark.parametrize("task", LABEL_WORD_TASKS)
def test_causal_prompt_ends_where_mask_stands(toks, task):
    tok, preset = toks["causal"], get_task(task)
    if preset.causal_template is None:  # mnli/snli: no causal prompt in the paper
        with pytest.raises(ValueError, match="no causal-LM prompt preset.*mlm_config"):
            PromptEncoder.for_task(tok, "causal", preset)
        return
    words = MLMConfig(label_word_mapping=dict(zip(preset.labels, FIXTURE_WORDS["causal"])))
    enc = PromptEncoder.for_task(tok, "causal", preset, words)
    ex = _example(preset, preset.labels[0])
    e = enc.encode(ex)
    ids = list(e.input_ids)
    end = tok.encode(CAUSAL_END[task], add_special_tokens=False)
    assert ids[-len(end):] == end and e.position == len(ids) - 1
    text = enc.prompt_text(ex)
    assert "[MASK]" not in text and not text.endswith(" ")
    # "It was [MASK]" -> " great" (with its space); "...?\n[MASK]" -> "yes" (a new line has none).
    space = CAUSAL_END[task][-1] != "\n"
    assert enc.space_prefix is space
    # The label token is exactly what follows the prompt in running text.
    for word, token_id in zip(enc.label_words, enc.label_token_ids):
        assert tok.encode(text + (" " if space else "") + word) == ids + [token_id]


def test_sst2_presets_with_their_own_label_words(toks):
    preset = get_task("sst-2")
    masked = PromptEncoder.for_task(toks["masked"], "masked", preset)
    e = masked.encode(Example("a gorgeous film .", None, 1))
    assert isinstance(e, EncodedExample) and e.label_index == 1
    assert masked.prompt_text(Example("a gorgeous film .", None, 1)).endswith("It was <mask> .")
    assert tokens(toks["masked"], e.input_ids[e.position - 1: e.position + 2]) == ["Ġwas", "<mask>", "Ġ."]
    assert tokens(toks["masked"], masked.label_token_ids) == ["Ġterrible", "Ġgreat"]
    causal = PromptEncoder.for_task(toks["causal"], "causal", preset)
    e = causal.encode(Example("a gorgeous film .", None, 0))
    assert causal.prompt_text(Example("a gorgeous film .", None, 0)) == "a gorgeous film . It was"
    assert list(e.input_ids[-4:]) == toks["causal"].encode(" It was") and e.label_index == 0
    assert causal.label_token_ids == [toks["causal"].encode(" terrible")[0], toks["causal"].encode(" great")[0]]
    assert all(len(toks["causal"].encode(" " + w)) == 1 for w in ("terrible", "great"))


def test_user_template_is_appended_or_whole_prompt(toks):
    preset, ex = get_task("sst-2"), Example("a dull mess .", None, 0)
    appended = PromptEncoder.for_task(toks["causal"], "causal", preset, MLMConfig(template="It was [MASK]."))
    assert appended.prompt_text(ex) == "a dull mess . It was"
    whole = PromptEncoder.for_task(toks["masked"], "masked", preset,
                                   MLMConfig(template="it was [MASK] : <S1>", label_word_mapping={0: "bad", 1: "good"}))
    assert whole.prompt_text(ex) == "it was <mask> : a dull mess ."
    assert tokens(toks["masked"], whole.label_token_ids) == ["Ġbad", "Ġgood"]


def test_truncation_cuts_the_text_never_the_template(toks):
    long = Example(" ".join(["the film is great fun ."] * 40), None, 1)
    for kind, tail in (("masked", ["Ġwas", "<mask>", "Ġ.", "</s>"]), ("causal", ["I", "t", "Ġwas"])):
        enc = PromptEncoder.for_task(toks[kind], kind, get_task("sst-2"), max_length=24)
        e = enc.encode(long)
        assert len(e.input_ids) <= 24
        assert tokens(toks[kind], e.input_ids[-len(tail):]) == tail
        start = 1 if kind == "masked" else 0  # after <s>
        assert tokens(toks[kind], e.input_ids[start:start + 3]) == ["the", "Ġfi", "lm"]  # text_a's start survives
    full = PromptEncoder.for_task(toks["masked"], "masked", get_task("sst-2"))
    assert len(full.encode(long).input_ids) == get_task("sst-2").max_length


def test_sentencepiece_label_words(sp_tok):
    # " great" is ["▁", "▁great"] on its own; in a prompt it is the single word-start piece.
    assert tokens(sp_tok, sp_tok.encode(" great", add_special_tokens=False)) == ["▁", "▁great"]
    enc = PromptEncoder.for_task(sp_tok, "causal", get_task("sst-2"))
    assert tokens(sp_tok, enc.label_token_ids) == ["▁terrible", "▁great"]
    ex = Example("the film is great fun .", None, 1)
    ids = list(enc.encode(ex).input_ids)
    assert sp_tok.encode(enc.prompt_text(ex) + " great") == ids + [enc.label_token_ids[1]]
    # After a new line a word has no word-start mark: "yes", not "▁yes".
    rte = PromptEncoder.for_task(sp_tok, "causal", get_task("rte"),
                                 MLMConfig(label_word_mapping={"entailment": "yes", "not_entailment": "no"}))
    assert tokens(sp_tok, rte.label_token_ids) == ["yes", "no"]
    ex = Example("it rains .", "it is wet .", "entailment")
    assert sp_tok.encode(rte.prompt_text(ex) + "yes") == list(rte.encode(ex).input_ids) + [rte.label_token_ids[0]]


# ---------------------------------------------------------------- validation


def test_multi_token_label_word_names_its_pieces(toks):
    with pytest.raises(ValueError) as info:
        PromptEncoder.for_task(toks["masked"], "masked", get_task("trec"))
    msg = str(info.value)
    assert "'Description'" in msg and "5 tokens" in msg and "[' ', 'D', 'es', 'cript', 'ion']" in msg
    assert "exactly one token" in msg
    with pytest.raises(ValueError) as info:  # the causal RTE prompt ends with "\n": "Yes" gets no space
        PromptEncoder.for_task(toks["causal"], "causal", get_task("rte"))
    assert "'Yes' (without a leading space) is 2 tokens" in str(info.value) and "['Y', 'es']" in str(info.value)
    assert "One-token alternatives: 'yes'" in str(info.value)


def test_space_prefix_toggle_is_suggested(toks):
    with pytest.raises(ValueError, match=r"'terrible' \(without a leading space\) is 4 tokens.*\['t', 'er', 'ribl', "
                                         r"'e'\].*'terrible' with use_space_prefix=True"):
        PromptEncoder.for_task(toks["causal"], "causal", get_task("sst-2"), MLMConfig(use_space_prefix=False))
    assert label_token_ids(toks["causal"], ["yes"], space_prefix=False) == toks["causal"].encode("yes")


def test_template_without_mask_raises_with_a_fix():
    with pytest.raises(ValueError, match=r"has no \[MASK\] slot.*add one, e.g."):
        MLMConfig(template="<S1> It was great.")
    with pytest.raises(ValueError, match="exactly one"):
        MLMConfig(template="[MASK] or [MASK]")


def test_label_keys_must_match_the_task(toks):
    bad = MLMConfig(label_word_mapping={"pos": "great", "neg": "terrible"})
    with pytest.raises(ValueError) as info:
        PromptEncoder.for_task(toks["masked"], "masked", get_task("sst-2"), bad)
    msg = str(info.value)
    assert "[0, 1]" in msg and "'pos'" in msg and "'neg'" in msg and "missing: [0, 1]" in msg
    with pytest.raises(ValueError, match="missing: \\[1\\]"):
        PromptEncoder.for_task(toks["masked"], "masked", get_task("sst-2"), MLMConfig(label_word_mapping={0: "bad"}))
    with pytest.raises(ValueError, match="repeat"):
        PromptEncoder.for_task(toks["masked"], "masked", get_task("sst-2"),
                               MLMConfig(label_word_mapping={"0": "good", "1": "good"}))
    # The CLI's string keys, and any spelling of boolean labels, find the task's labels.
    ok = PromptEncoder.for_task(toks["causal"], "causal", get_task("boolq"),
                                MLMConfig(label_word_mapping={"TRUE": "yes", "false": "a"}))
    assert ok.label_words == ["yes", "a"]  # the preset's label order: (True, False)


def test_causal_template_with_text_after_mask_raises(toks):
    with pytest.raises(ValueError, match="input text after \\[MASK\\]"):
        PromptEncoder.for_task(toks["causal"], "causal", get_task("trec"),
                               MLMConfig(template="[MASK] : <S1>", label_word_mapping=dict(enumerate("abcdef"))))


def test_unknown_example_label_raises(toks):
    enc = PromptEncoder.for_task(toks["masked"], "masked", get_task("sst-2"))
    with pytest.raises(ValueError, match="not a label of task 'sst-2'"):
        enc.encode(Example("fine .", None, 7))


def test_model_kind(toks):
    assert model_kind(toks["masked"], ["RobertaForMaskedLM"]) == "masked"
    assert model_kind(toks["masked"], ["LlamaForCausalLM"]) == "causal"
    assert model_kind(toks["causal"], []) == "causal"
    with pytest.raises(ValueError, match="no mask token"):
        model_kind(toks["causal"], ["RobertaForMaskedLM"])


def test_defaults_table():
    h = resolve_hyperparameters("causal")
    assert h == {"trainable": "lora", **DEFAULTS[("causal", "lora")]}
    assert (h["learning_rate"], h["epsilon"], h["batch_size"], h["num_steps"], h["eval_steps"]) == \
        (1e-3, 1e-2, 16, 1000, 250)
    m = resolve_hyperparameters("masked")
    assert (m["trainable"], m["learning_rate"], m["epsilon"], m["batch_size"], m["num_steps"]) == \
        ("full", 1e-6, 1e-3, 64, 100000)
    assert resolve_hyperparameters("masked", "lora")["weight_decay"] == 0.1
    # Random-sign z where drawing z is a step's main overhead (all weights); MeZO's Gaussian for LoRA.
    assert {key: resolve_hyperparameters(*key)["noise"] for key in DEFAULTS} == {
        ("causal", "lora"): "gaussian", ("masked", "lora"): "gaussian",
        ("causal", "full"): "rademacher", ("masked", "full"): "rademacher"}
    assert resolve_hyperparameters("causal", "full", noise="gaussian")["noise"] == "gaussian"
    assert resolve_hyperparameters("masked", num_steps=5000)["eval_steps"] == 500
    assert resolve_hyperparameters("causal", learning_rate=0.5)["learning_rate"] == 0.5
    with pytest.raises(ValueError, match="trainable"):
        resolve_hyperparameters("causal", "prefix")


# ---------------------------------------------------------------- data for a run


@needs_data
def test_default_data_is_16_shot_train_and_the_full_dev_set():
    train, evals = prepare_data(get_task("sst-2"))
    assert len(train) == 32 and sorted(e.label for e in train) == [0] * 16 + [1] * 16
    assert len(evals) == 872
    capped = prepare_data(get_task("sst-2"), max_eval_examples=50)[1]
    assert len(capped) == 50 and capped == [e for e in evals if e in set(capped)]  # a sample, in file order


@needs_data
def test_task_without_dev_set_evaluates_on_held_out_examples():
    train, evals = prepare_data(get_task("trec"))
    assert len(train) == 96 and len(evals) == 96 and not set(train) & set(evals)
    mine = [Example("what is a film ?", None, 0), Example("who is he ?", None, 3)]
    train, evals = prepare_data(get_task("trec"), mine)
    assert train == mine and evals and not set(mine) & set(evals)


def test_given_data_is_used_whole_unless_k_shot(toy_file):
    train, evals = prepare_data(get_task("sst-2"), toy_file, toy_file)
    assert len(train) == 16 and len(evals) == 16
    train, _ = prepare_data(get_task("sst-2"), toy_file, toy_file, k_shot=2, seed=1)
    assert len(train) == 4 and sorted(e.label for e in train) == [0, 0, 1, 1]


def test_bad_input_fails_before_any_model_is_built(tiny_llama, tmp_path, toy_file):
    with pytest.raises(ValueError, match="unknown task 'sst2x'; known tasks: sst-2"):
        mezo_mlm_finetune(tiny_llama, "sst2x", toy_file)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sentence": "fine .", "label": 1}\n{"sentence": "oops"\n')
    with pytest.raises(DataFormatError, match="line 2"):
        mezo_mlm_finetune(tiny_llama, "sst-2", str(bad), toy_file)
    with pytest.raises(ValueError, match="training set .* is empty"):
        mezo_mlm_finetune(tiny_llama, "sst-2", [], toy_file, num_steps=5)
    mm.check_trainable("masked", "lora")  # masked-LM LoRA runs in SGLang's LoRA manager now: no refusal
    with pytest.raises(TypeError, match="takes task as task_name=..., got task='sst-5'"):
        mezo_mlm_finetune(tiny_llama, task="sst-5")  # the run spec's name for it
    with pytest.raises(TypeError, match="takes train_file as train_dataset="):
        mezo_mlm_finetune(tiny_llama, train_file=toy_file)


# ---------------------------------------------------------------- on SGLang runners


def _hf_label_logits(model_dir, enc: PromptEncoder, examples, masked: bool) -> torch.Tensor:
    cls = AutoModelForMaskedLM if masked else AutoModelForCausalLM
    model = cls.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = []
    with torch.no_grad():
        for ex in examples:
            e = enc.encode(ex)
            rows.append(model(torch.tensor([e.input_ids])).logits[0, e.position, enc.label_token_ids])
    return torch.stack(rows)


def test_causal_objective_reads_label_logits_after_the_prompt(tiny_llama):
    examples = [Example(s, None, y) for y, s in TOY_ROWS[:4] + TOY_ROWS[-4:]]
    with trainer_for(MeZOMLMTrainer, tiny_llama, MeZOConfig(trainable="full", device="cpu"), task="sst-2") as tr:
        assert tr.kind == "causal"
        enc = tr.encode(examples)
        ours = tr.label_logits(enc)
        assert ours.shape == (8, 2)
        want = _hf_label_logits(tiny_llama, tr.prompt, examples, masked=False)
        assert torch.allclose(ours, want, atol=1e-4), (ours - want).abs().max()
        targets = torch.tensor([e.label_index for e in enc])
        assert tr.compute_loss(enc) == pytest.approx(torch.nn.functional.cross_entropy(want, targets).item(), abs=1e-4)
        tr.objective = LabelWordObjective(tr.prompt, tr.preset, "accuracy")
        acc = (want.argmax(-1) == targets).float().mean().item()
        assert tr.compute_loss(enc) == pytest.approx(-acc)
        assert tr.evaluate(examples)["eval_accuracy"] == pytest.approx(acc)


@pytest.fixture(scope="module")
def llama_runs(tiny_llama, toy_file, tmp_path_factory):
    """Zero-shot, then 200 MeZO-LoRA steps on the toy task (evaluated on its training set)."""
    out = tmp_path_factory.mktemp("llama_run")
    common = dict(model_path=tiny_llama, task_name="sst-2", train_dataset=toy_file, eval_dataset=toy_file,
                  device="cpu", progress_bar=False)
    zero = mezo_mlm_finetune(num_steps=0, output_dir=str(out / "zero"), **common)
    trained = mezo_mlm_finetune(num_steps=200, learning_rate=5e-2, epsilon=1e-2, lora_rank=8, batch_size=16,
                                eval_steps=50, output_dir=str(out / "trained"), **common)
    return zero, trained, out


def test_zero_shot_run_trains_nothing(llama_runs):
    zero, _, out = llama_runs
    assert zero["steps"] == 0 and zero["train_loss"] == [] and zero["adapter_path"] is None
    assert zero["zero_shot_accuracy"] == zero["eval_accuracy"] == zero["best_eval_accuracy"]
    assert zero["num_train_examples"] == zero["num_eval_examples"] == 16
    assert zero["hyperparameters"]["trainable"] == "lora"
    assert sorted(os.listdir(out / "zero")) == ["summary.json"]


def test_fine_tuning_learns_the_toy_task(llama_runs):
    zero, trained, _ = llama_runs
    assert trained["steps"] == 200 and len(trained["train_loss"]) == 200
    assert [h["step"] for h in trained["eval_history"]] == [0, 50, 100, 150, 200]
    # Step 0 of the training run is the zero-shot model: the same numbers as the num_steps=0 run.
    assert trained["zero_shot_accuracy"] == zero["eval_accuracy"]
    assert trained["eval_history"][0]["eval_loss"] == pytest.approx(zero["eval_loss"], abs=1e-6)
    assert trained["eval_accuracy"] >= 0.9 > zero["eval_accuracy"]
    assert trained["best_eval_accuracy"] >= trained["eval_accuracy"]
    assert trained["eval_loss"] < zero["eval_loss"] - 0.2
    assert trained["wall_time_s"] > 0 and trained["prompt"]["label_tokens"] == [" terrible", " great"]


def test_eval_at_start_false_skips_the_step_0_evaluation(tiny_llama, toy_file, llama_runs):
    _, trained, _ = llama_runs
    r = mezo_mlm_finetune(tiny_llama, "sst-2", toy_file, toy_file, num_steps=50, learning_rate=5e-2, epsilon=1e-2,
                          lora_rank=8, batch_size=16, eval_steps=50, eval_at_start=False, device="cpu",
                          progress_bar=False)
    assert [h["step"] for h in r["eval_history"]] == [50] and r["zero_shot_accuracy"] is None
    # Skipping the evaluation changes nothing in training: step 50 matches the run that evaluated at 0.
    assert r["eval_history"][0]["eval_loss"] == pytest.approx(trained["eval_history"][1]["eval_loss"], abs=1e-6)


def test_fine_tuning_writes_adapter_metrics_and_summary(llama_runs):
    _, trained, out = llama_runs
    adapter = Path(trained["adapter_path"])
    assert adapter == out / "trained" / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(adapter))
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    summary = json.loads((out / "trained" / "summary.json").read_text())
    assert summary["eval_accuracy"] == trained["eval_accuracy"] and summary["steps"] == 200
    events = [json.loads(line) for line in (out / "trained" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "eval"] == [0, 50, 100, 150, 200]


def test_cli_run_prints_a_summary(tiny_llama, toy_file, tmp_path, capsys):
    out = tmp_path / "run"
    code = mm.main(["--model-path", tiny_llama, "--train-file", toy_file, "--eval-file", toy_file,
                    "--num-steps", "4", "--eval-steps", "2", "--learning-rate", "1e-2", "--label-words",
                    "0:bad,1:good", "--output-dir", str(out), "--device", "cpu", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    for row in ("zero-shot eval accuracy (step 0)", "final eval accuracy", "best eval accuracy", "wall time",
                str(out / "adapter"), str(out / "summary.json")):
        assert row in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["prompt"]["label_words"] == {"0": "bad", "1": "good"}
    assert [h["step"] for h in summary["eval_history"]] == [0, 2, 4]


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory, roberta_tokenizer_dir):
    return make_masked_lm(str(tmp_path_factory.mktemp("roberta_mlm")), roberta_tokenizer_dir)


def test_masked_objective_reads_label_logits_at_the_mask(tiny_roberta):
    examples = [Example(s, None, y) for y, s in TOY_ROWS[:3] + TOY_ROWS[-3:]]
    with trainer_for(MeZOMLMTrainer, tiny_roberta, MeZOConfig(trainable="full", device="cpu"), task="sst-2") as tr:
        assert tr.kind == "masked"
        ours = tr.label_logits(tr.encode(examples))
        want = _hf_label_logits(tiny_roberta, tr.prompt, examples, masked=True)
        assert torch.allclose(ours, want, atol=1e-4), (ours - want).abs().max()


def test_masked_lm_end_to_end(tiny_roberta, toy_file, tmp_path):
    r = mezo_mlm_finetune(tiny_roberta, "sst-2", toy_file, toy_file, num_steps=10, learning_rate=1e-3,
                          epsilon=1e-3, eval_steps=5, device="cpu", progress_bar=False, output_dir=str(tmp_path))
    assert r["hyperparameters"]["trainable"] == "full" and r["prompt"]["model_kind"] == "masked"
    assert r["prompt"]["label_tokens"] == [" terrible", " great"]
    assert [h["step"] for h in r["eval_history"]] == [0, 5, 10] and len(r["train_loss"]) == 10
    assert all(0 < loss < 5 for loss in r["train_loss"])
    assert r["adapter_path"] is None  # full-parameter runs save the replayable trajectory
    assert (tmp_path / "mezo_trajectory.json").is_file() and (tmp_path / "summary.json").is_file()
    # Masked-LM LoRA (SGLang's LoRA manager, query/value) trains now; tests/engine/test_roberta_lora.py checks it
    # against PEFT.
    lora = mezo_mlm_finetune(tiny_roberta, "sst-2", toy_file, toy_file, trainable="lora", num_steps=1,
                             device="cpu", progress_bar=False)
    assert lora["hyperparameters"]["trainable"] == "lora" and lora["steps"] == 1 and len(lora["train_loss"]) == 1


# ---------------------------------------------------------------- the CLI as a program


def test_cli_help_and_bad_task_exit_codes():
    cmd = [sys.executable, "-m", "sglang.srt.mezo_mlm_trainer"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    # Both start at once: each pays SGLang's import time.
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    helps = subprocess.Popen(cmd + ["--help"], **pipes)
    bad = subprocess.Popen(cmd + ["--task", "sst-7"], **pipes)
    out, err = helps.communicate(timeout=300)
    assert helps.returncode == 0, err
    for option in ("--model-path", "--task", "--train-file", "--eval-file", "--k-shot", "--seed", "--num-steps",
                   "--batch-size", "--learning-rate", "--epsilon", "--weight-decay", "--trainable", "--lora-rank",
                   "--eval-steps", "--output-dir", "--template", "--label-words", "--no-space-prefix", "--objective",
                   "--device", "--max-eval-examples", "--quiet"):
        assert option in out, option
    assert "smollm2-135m" in out and "sst-2" in out and "runs/<task>-<timestamp>" in out
    out, err = bad.communicate(timeout=300)
    assert bad.returncode == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: unknown task 'sst-7'; known tasks: sst-2, sst-5, trec") and "Traceback" not in err


def test_missing_local_model_path_fails_before_anything_loads(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mezo_mlm_finetune(model_path=str(tmp_path / "no-such-model"), task_name="sst-2", num_steps=0)
    check_model_path("roberta-base")  # a hub id, as in the example: not rejected here
    check_model_path("HuggingFaceTB/SmolLM2-135M")


def test_cli_screen_shows_only_the_runs_own_lines(tiny_llama, toy_file, tmp_path):
    """A normal run's stderr holds our log lines and the progress bar; SGLang's start-up output
    (GPU-only kernel warnings, models it cannot import here, weight-loading bars) is in the run's
    sglang.log, and on screen only with --verbose."""
    cmd = [sys.executable, "-m", "sglang.srt.mezo_mlm_trainer", "--model-path", tiny_llama, "--train-file", toy_file,
           "--eval-file", toy_file, "--num-steps", "2", "--label-words", "0:bad,1:good", "--device", "cpu"]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    normal = subprocess.Popen(cmd + ["--output-dir", str(tmp_path / "normal")], **pipes)
    verbose = subprocess.Popen(cmd + ["--output-dir", str(tmp_path / "verbose"), "--verbose"], **pipes)
    out, err = normal.communicate(timeout=300)
    assert normal.returncode == 0, err
    lines = [part for line in err.splitlines() for part in line.split("\r") if part.strip()]
    assert lines and all(part.startswith(("[mezo] ", "MeZO")) for part in lines), err
    assert "[mezo] " in err and "MeZO summary" in out
    engine_log = (tmp_path / "normal" / "sglang.log").read_text()
    assert "Ignore import error" in engine_log and "UserWarning" in engine_log
    out, err = verbose.communicate(timeout=300)
    assert verbose.returncode == 0, err
    assert "Ignore import error" in err and not (tmp_path / "verbose" / "sglang.log").exists()


def test_the_first_screen_says_which_dtype_the_run_chose_and_why(tiny_llama, toy_file, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("SGLANG_MEZO_ASSUME_BF16", "0")  # a CPU without bf16 instructions
    out = tmp_path / "run"
    code = mm.main(["--model-path", tiny_llama, "--train-file", toy_file, "--eval-file", toy_file,
                    "--num-steps", "1", "--eval-steps", "1", "--label-words", "0:bad,1:good", "--output-dir", str(out),
                    "--device", "cpu"])
    stdout, stderr = capfd.readouterr()
    assert code == 0, stdout + stderr
    log = next(stream for stream in (stdout, stderr) if "[mezo] dtype " in stream).splitlines()  # the run's log lines
    dtype_line = next(i for i, line in enumerate(log) if line.startswith("[mezo] dtype "))
    assert log[dtype_line].startswith("[mezo] dtype float32: this CPU (") and "no bf16 instructions" in log[dtype_line]
    # It comes first among the run's lines, before the one that names the task and its hyperparameters.
    assert dtype_line < next(i for i, line in enumerate(log) if line.startswith("[mezo] ") and "task sst-2:" in line)
    assert "final eval accuracy" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["dtype"] == "float32" and summary["dtype_choice"]["dtype"] == "float32"
    assert (out / "learning_curves.png").is_file()
