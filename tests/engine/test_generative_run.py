"""Generative runs end to end on a tiny model: chat files through the run spec, SQuAD-style rows
scored by generation, multiple choice by option likelihood, and bad rows refused before a model loads."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import trainer_for
from transformers import AutoModelForCausalLM, AutoTokenizer

from sglang.srt.mezo.data.chat import CompletionExample
from sglang.srt.mezo.engine.generate import GreedyGenerator
from sglang.srt.mezo.errors import DataFormatError
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.finetune import mezo_mlm_finetune
from sglang.srt.mezo.training.objectives.completion import CompletionObjective
from sglang.srt.mezo.training.plan import prepare
from sglang.srt.mezo.training.trainer import MeZOTrainer

CHATS = [
    {"messages": [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": f"{w} {w}"}]}
    for w in ("good", "bad", "fine", "great", "thin", "dull")
] + [{"messages": [{"role": "system", "content": "be short"}, {"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "ignored", "weight": 0}, {"role": "user", "content": "again"},
                   {"role": "assistant", "content": "hi again"}]}]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _small(**kw):
    return dict(num_steps=4, eval_steps=2, batch_size=4, lora_rank=2, learning_rate=1e-3, epsilon=1e-2,
                dtype="float32", progress_bar=False, **kw)


def test_a_chat_file_trains_through_mezo_mlm_finetune(tmp_path, tiny_chat_llama):
    train = _jsonl(tmp_path / "train.jsonl", CHATS)
    valid = _jsonl(tmp_path / "valid.jsonl", CHATS[:3])
    out = tmp_path / "run"
    result = mezo_mlm_finetune(tiny_chat_llama, objective="completion", train_dataset=train, eval_dataset=valid,
                               output_dir=str(out), **_small())
    assert result["task"] == "chat" and result["objective"] == "completion"
    assert result["steps"] == 4 and result["primary_metric"] == "eval_loss"  # chat rows carry no references
    for record in result["eval_history"]:
        assert set(record) >= {"eval_loss", "eval_mean_token_accuracy"}
        assert 0.0 <= record["eval_mean_token_accuracy"] <= 1.0
    steps = [json.loads(line) for line in open(out / "metrics.jsonl") if '"step"' in line]
    steps = [e for e in steps if e.get("event") == "step"]
    assert len(steps) == 4 and all("train_mean_token_accuracy" in e for e in steps)
    assert (out / "adapter" / "adapter_config.json").exists()


def test_bad_chat_rows_fail_before_a_model_loads(tmp_path, tiny_chat_llama):
    bad = _jsonl(tmp_path / "bad.jsonl", [CHATS[0], {"messages": [{"role": "robot", "content": "x"}]}])
    with pytest.raises(DataFormatError, match=r"bad\.jsonl.*line 2"):
        prepare(MeZOConfig(model_path=tiny_chat_llama, objective="completion", train_file=bad))


def test_answers_with_references_are_generated_and_scored(tmp_path, tiny_chat_llama):
    rows = [CompletionExample(f"Question: what is {w}?\nAnswer:", f" {w}\n", references=(w,))
            for w in ("one", "two", "three", "four")]
    result = mezo_mlm_finetune(tiny_chat_llama, objective="completion", train_dataset=rows, eval_dataset=rows,
                               max_new_tokens=4, **_small())
    assert result["primary_metric"] == "eval_f1"
    for record in result["eval_history"]:
        assert 0.0 <= record["eval_f1"] <= 100.0 and 0.0 <= record["eval_exact_match"] <= 100.0


def test_the_evaluation_answer_is_hf_greedy_decoding(tmp_path, tiny_chat_llama):
    """What the evaluation generates equals HF's greedy continuation of the same prompt (the base
    model: a new adapter's B is zero), cut at the first line break."""
    tok = AutoTokenizer.from_pretrained(tiny_chat_llama)
    objective = CompletionObjective(tok, max_new_tokens=6)
    rows = objective.encode([CompletionExample("the film was", " good\n", references=("good",)),
                             CompletionExample("a dull , thin", " mess\n", references=("mess",))])
    with trainer_for(MeZOTrainer, tiny_chat_llama, MeZOConfig(**_small(output_dir=str(tmp_path / "o"))),
                     objective=objective) as tr:
        inputs = objective.generation_inputs(rows)
        ours = tr.generate(inputs)
    hf = AutoModelForCausalLM.from_pretrained(tiny_chat_llama, dtype=torch.float32).eval()
    for prompt, got in zip(inputs.prompts, ours):
        with torch.no_grad():
            full = hf.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, pad_token_id=1)[0]
        want = []
        for t in full[len(prompt):].tolist():
            if t in inputs.stop_token_ids:
                break
            want.append(t)
        assert got == want


def test_multiple_choice_options_preset_runs(tmp_path, tiny_chat_llama):
    result = mezo_mlm_finetune(tiny_chat_llama, task_name="arc-easy", k_shot=2, max_eval_examples=8, **_small())
    assert result["objective"] == "options" and result["primary_metric"] == "eval_accuracy"
    assert 0.0 <= result["eval_accuracy"] <= 1.0 and result["num_eval_examples"] == 8


def test_generation_never_runs_under_perturbed_weights(tmp_path, tiny_chat_llama):
    """A full-weight step with a next batch leaves theta + eps z on the weights for the next step;
    an evaluation's generation in between sees the trained weights."""
    objective = CompletionObjective(AutoTokenizer.from_pretrained(tiny_chat_llama), max_new_tokens=8)
    rows = objective.encode([CompletionExample(f"say {w} twice:", f" {w} {w}\n", references=(w,))
                             for w in ("good", "bad", "thin", "dull")])
    # A large eps makes the perturbation visible in greedy tokens (the test can fail).
    cfg = MeZOConfig(trainable="full", epsilon=0.5, learning_rate=1e-4, batch_size=4, dtype="float32", exact_restore=False,
                     progress_bar=False, output_dir=str(tmp_path / "o"), update_rule="sgd")
    with trainer_for(MeZOTrainer, tiny_chat_llama, cfg, objective=objective) as tr:
        inputs = objective.generation_inputs(rows)
        raw = GreedyGenerator(tr.runner)
        tr.step(rows, next_batch=rows)
        assert tr.estimator.ahead.seed is not None  # the next step's +eps z is on the weights now
        perturbed = raw(inputs.prompts, max_new_tokens=8, stop_token_ids=inputs.stop_token_ids)
        ours = tr.generate(inputs)
        trained = raw(inputs.prompts, max_new_tokens=8, stop_token_ids=inputs.stop_token_ids)
    assert ours == trained
    assert perturbed != trained  # what a generation under the perturbation would have answered
