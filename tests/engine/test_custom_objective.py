"""Objectives of the user's own (``tests/outside_package/my_mezo_extension.py``, a module outside the
package): a loss of logits (``smoothed_completion``, label-smoothed cross-entropy) checked against HF
transformers + PEFT and trained through ``mezo_mlm_finetune`` by its registered name; and a score of
generated text (``short_answers``) trained by name, and through the CLI as ``module:Class`` in a
process where nothing imported the module before (replay reads that name back)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import trainer_for
from test_completion_objective import BATCH, random_adapter
from test_trainer import peft_model, small_config
from transformers import AutoTokenizer

from sglang.srt.mezo.cli.replay import main as replay_main
from sglang.srt.mezo.cli.train import main as cli_main
from sglang.srt.mezo.data.objective_table import objective_entry
from sglang.srt.mezo.training.finetune import mezo_mlm_finetune
from sglang.srt.mezo.training.trainer import MeZOTrainer

OUTSIDE = Path(__file__).resolve().parents[1] / "outside_package"
MODULE = "my_mezo_extension"
CHATS = [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]}
         for w in ("yes", "no", "maybe", "never", "always", "soon")]
PROMPTS = [{"messages": [{"role": "user", "content": f"Name a colour, {n}."}]} for n in range(4)]


@pytest.fixture
def outside(monkeypatch):
    """The outside folder on sys.path, as PYTHONPATH puts it there; the module imported afresh."""
    monkeypatch.syspath_prepend(str(OUTSIDE))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    yield
    sys.modules.pop(MODULE, None)


def _jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _steps(out: Path) -> list[dict]:
    return [e for e in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if e.get("event") == "step"]


def hf_smoothed_loss(model, batch, smoothing: float) -> float:
    """Label-smoothed cross-entropy of every target token, from PEFT's logits (the token before predicts it)."""
    rows, targets = [], []
    with torch.no_grad():
        for item in batch:
            logits = model(torch.tensor([item.input_ids])).logits[0].double()
            for i, is_target in enumerate(item.targets):
                if is_target:
                    rows.append(logits[i - 1])
                    targets.append(item.input_ids[i])
    return torch.nn.functional.cross_entropy(torch.stack(rows), torch.tensor(targets),
                                             label_smoothing=smoothing).item()


def test_a_loss_of_logits_of_the_users_own_is_what_peft_gives(outside, tmp_path, tiny_llama, llama_tokenizer_dir):
    from my_mezo_extension import LabelSmoothedCompletion  # noqa: PLC0415 - the user's module, outside the package

    objective = LabelSmoothedCompletion(AutoTokenizer.from_pretrained(llama_tokenizer_dir))
    with trainer_for(MeZOTrainer, tiny_llama, small_config(tmp_path), objective=objective) as tr:
        random_adapter(tr)
        peft = peft_model(tiny_llama, tr.save(str(tmp_path / "saved")))
        smoothed, plain = hf_smoothed_loss(peft, BATCH, 0.1), hf_smoothed_loss(peft, BATCH, 0.0)
        assert abs(smoothed - plain) > 1e-3  # the smoothing changes the loss: the check below can tell them apart
        assert tr.compute_loss(BATCH) == pytest.approx(smoothed, abs=1e-5)


def test_mezo_mlm_finetune_trains_an_objective_registered_by_the_users_import(outside, tmp_path, tiny_chat_llama):
    import my_mezo_extension  # noqa: F401, PLC0415 - the user's own import registers smoothed_completion

    entry = objective_entry("smoothed_completion")
    assert (entry.rows, entry.openai_method, entry.default_task) == (("completions",), "supervised", "chat")
    train = _jsonl(tmp_path / "train.jsonl", CHATS)
    runs = {}
    for name in ("smoothed_completion", "completion"):
        out = tmp_path / name
        result = mezo_mlm_finetune(tiny_chat_llama, objective=name, train_dataset=train, eval_dataset=train,
                                   output_dir=str(out), num_steps=2, eval_steps=2, batch_size=2, lora_rank=2,
                                   dtype="float32", progress_bar=False, max_new_tokens=4)
        assert result["objective"] == name and result["task"] == "chat"
        assert json.loads((out / "summary.json").read_text())["config"]["objective"] == name
        runs[name] = _steps(out)
    # The same seeds, batches and first perturbation: only the loss differs, by the smoothing.
    first = [runs[n][0]["loss"] for n in ("smoothed_completion", "completion")]
    assert first[0] != pytest.approx(first[1], abs=1e-3)


def test_a_score_of_generated_text_trains_by_name(outside, tmp_path, tiny_chat_llama):
    import my_mezo_extension  # noqa: F401, PLC0415 - registers short_answers

    train = _jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "short"
    result = mezo_mlm_finetune(tiny_chat_llama, objective="short_answers", train_dataset=train, eval_dataset=train,
                               output_dir=str(out), num_steps=2, eval_steps=2, batch_size=2, lora_rank=2,
                               dtype="float32", progress_bar=False, max_new_tokens=4)
    assert result["task"] == "reinforcement"
    # Scores are 0.3, 0.4 or 0.5 (no built-in grader's): a batch of two means a multiple of 0.05 there.
    values = [e["train_reward_mean"] for e in _steps(out)] + [r["eval_reward"] for r in result["eval_history"]]
    assert values and all(0.3 - 1e-9 <= v <= 0.5 + 1e-9 and v * 40 == pytest.approx(round(v * 40), abs=1e-9)
                          for v in values)


def test_the_cli_trains_a_module_class_name_and_replay_reads_it_back(outside, tmp_path, tiny_chat_llama, capsys):
    name = f"{MODULE}:LabelSmoothedCompletion"
    assert MODULE not in sys.modules  # nothing imported it: the name alone must
    train = _jsonl(tmp_path / "train.jsonl", CHATS)
    out = tmp_path / "cli"
    code = cli_main(["--model-path", tiny_chat_llama, "--objective", name, "--train-file", train,
                     "--eval-file", train, "--num-steps", "2", "--eval-steps", "2", "--batch-size", "2",
                     "--max-new-tokens", "4", "--dtype", "float32", "--quiet", "--output-dir", str(out)])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["config"]["objective"] == name
    assert replay_main([str(out), "--out", str(tmp_path / "replayed")]) == 0
    assert (tmp_path / "replayed" / "adapter_model.safetensors").exists()


def test_a_module_class_name_that_cannot_be_imported_is_refused_saying_why(tmp_path, tiny_chat_llama, capsys):
    train = _jsonl(tmp_path / "train.jsonl", CHATS)
    code = cli_main(["--model-path", tiny_chat_llama, "--objective", "no_such_module_here:Loss", "--train-file",
                     train, "--num-steps", "1", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "module 'no_such_module_here' cannot be imported" in err and "PYTHONPATH" in err
