"""A grader type of the user's own (``word_count``, registered by ``tests/outside_package/my_mezo_extension.py``,
a module outside the package) grading reward runs on a tiny chat model: through ``mezo_mlm_finetune``
after the user's own import, and through the CLI's ``--extension`` (and replay's) in a process where
nothing registered it before. The grades are the custom grader's: values no built-in grader gives."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sglang.srt.mezo import extensions
from sglang.srt.mezo.cli.replay import main as replay_main
from sglang.srt.mezo.cli.train import main as cli_main
from sglang.srt.mezo.data import graders
from sglang.srt.mezo.training.finetune import mezo_mlm_finetune

OUTSIDE = Path(__file__).resolve().parents[1] / "outside_package"
MODULE = "my_mezo_extension"
# Answers of 1 to 4 words: a word_count grader reading the row's answer over max_words 4 grades them
# 0.25, 0.5, 0.75 and 1.0 whatever the model says, so the mean over the four rows is 0.625.
ROWS = [{"messages": [{"role": "user", "content": f"Count to {n}."}], "answer": " ".join(["one", "two", "three",
                                                                                        "four"][:n])}
        for n in (1, 2, 3, 4)]


def _jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _small(**kw) -> dict:
    return dict(num_steps=3, eval_steps=3, batch_size=2, lora_rank=2, learning_rate=1e-2, epsilon=1e-1,
                dtype="float32", progress_bar=False, max_new_tokens=4, **kw)


def _steps(out: Path) -> list[dict]:
    return [e for e in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if e.get("event") == "step"]


def test_mezo_mlm_finetune_grades_with_a_type_registered_by_the_users_import(fresh, tmp_path, tiny_chat_llama):
    import my_mezo_extension  # noqa: F401, PLC0415 - the user's own import registers word_count (the fixture un-imports it)

    train = _jsonl(tmp_path / "train.jsonl", ROWS)
    grader = {"type": "word_count", "name": "words", "input": "{{item.answer}}", "max_words": 4}
    out = tmp_path / "run"
    result = mezo_mlm_finetune(tiny_chat_llama, task_name="reinforcement", objective="reward", train_dataset=train,
                               eval_dataset=train, grader=grader, output_dir=str(out), **_small())
    assert result["objective"] == "reward" and result["config"]["grader"] == grader
    assert [r["eval_reward"] for r in result["eval_history"]] == pytest.approx([0.625, 0.625])
    steps = _steps(out)
    assert len(steps) == 3
    for e in steps:  # a batch of two rows: the mean of two of 0.25, 0.5, 0.75, 1.0
        assert 0.25 <= e["train_reward_mean"] <= 1.0 and (e["train_reward_mean"] * 8) == \
            pytest.approx(round(e["train_reward_mean"] * 8), abs=1e-9)


def test_the_cli_and_replay_load_the_extension_they_are_told(fresh, tmp_path, tiny_chat_llama, capsys):
    # Nothing registered word_count in this process: --extension must, before the spec is built.
    assert "word_count" not in graders.grader_types()
    train = _jsonl(tmp_path / "train.jsonl", ROWS)
    grader = {"type": "word_count", "name": "said", "input": "{{sample.output_text}}", "max_words": 7}
    out = tmp_path / "cli"
    code = cli_main(["--extension", MODULE, "--model-path", tiny_chat_llama, "--task", "reinforcement",
                     "--train-file", train, "--eval-file", train, "--grader", json.dumps(grader),
                     "--num-steps", "2", "--eval-steps", "2", "--batch-size", "2", "--max-new-tokens", "4",
                     "--dtype", "float32", "--quiet", "--output-dir", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["grader"] == grader
    # Graded on the answers' own words: each answer scores k/7, so a batch of two means k/14 and
    # the four eval rows k/28, for whole numbers k (the random model's answers decide which).
    for value, parts in [(e["train_reward_mean"], 14) for e in _steps(out)] + \
                        [(e["eval_reward"], 28) for e in summary["eval_history"]]:
        assert 0.0 <= value <= 1.0 and value * parts == pytest.approx(round(value * parts), abs=1e-9)

    # Replay reads the recorded spec back, grader included: in a process without the type it needs
    # the extension too.
    graders._registered.clear()
    extensions._loaded.clear()
    sys.modules.pop(MODULE, None)
    capsys.readouterr()
    assert replay_main([str(out), "--out", str(tmp_path / "replayed")]) == 2
    assert "'word_count' is not a grader type" in capsys.readouterr().err
    assert replay_main([str(out), "--out", str(tmp_path / "replayed"), "--extension", MODULE]) == 0
    assert (tmp_path / "replayed" / "adapter_model.safetensors").exists()
