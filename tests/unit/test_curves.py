"""A run's learning-curves PNG and its TensorBoard events, from the events a run emits."""

from __future__ import annotations

import json

import matplotlib.image
import pytest

from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.callbacks import JsonLinesLogger, LearningCurves, TensorBoardLogger, default_callbacks
from sglang.srt.mezo.training.curves import eval_metric, read_metrics

EVENTS = [{"event": "step", "step": s, "loss": 1.0 / s, "lr": 1e-3, "projected_grad": 0.1} for s in range(1, 41)]
EVENTS.insert(20, {"event": "eval", "step": 20, "eval_accuracy": 0.6, "eval_loss": 0.7})
EVENTS += [{"event": "eval", "step": 40, "eval_accuracy": 0.8, "eval_loss": 0.5}, {"event": "end", "step": 40}]


def test_the_curves_are_redrawn_after_each_evaluation_from_metrics_jsonl(tmp_path):
    metrics = str(tmp_path / "metrics.jsonl")
    callbacks = [JsonLinesLogger(metrics), LearningCurves(metrics, title="sst-2")]
    png = tmp_path / "learning_curves.png"
    for event in EVENTS[:21]:
        for cb in callbacks:
            cb(event)
        assert png.exists() == (event["event"] == "eval" or event["step"] > 20)
    first = png.read_bytes()
    for event in EVENTS[21:]:
        for cb in callbacks:
            cb(event)
    assert png.read_bytes() != first  # redrawn with the second evaluation
    height, width, _ = matplotlib.image.imread(str(png)).shape
    assert width > height > 200
    steps, evals = read_metrics(metrics)
    assert len(steps) == 40 and [e["step"] for e in evals] == [20, 40]
    assert eval_metric(evals) == "eval_accuracy"
    assert not list(tmp_path.glob("*.tmp.png"))


def test_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(EVENTS[0]) + "\n" + '{"event": "st')
    assert len(read_metrics(str(path))[0]) == 1


def test_tensorboard_gets_the_train_and_eval_scalars(tmp_path):
    # The tensorboard package is an optional dependency (the tensorboard extra), as in callbacks.py.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    logger = TensorBoardLogger(str(tmp_path / "tb"))
    for event in EVENTS:
        logger(event)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert {"train/loss", "train/lr", "eval/accuracy", "eval/loss"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("eval/accuracy")] == [20, 40]
    assert acc.Scalars("eval/accuracy")[-1].value == pytest.approx(0.8)
    assert len(acc.Scalars("train/loss")) == 40


def test_report_to_is_checked_and_chooses_the_callbacks(tmp_path):
    with pytest.raises(ValueError, match="choose among \\['tensorboard'\\]"):
        MeZOConfig(report_to=("wandb",), output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="give an output_dir"):
        MeZOConfig(report_to="tensorboard")
    assert MeZOConfig(report_to="none").report_to == ()
    kinds = [type(c).__name__ for c in default_callbacks(MeZOConfig(output_dir=str(tmp_path), report_to="tensorboard",
                                                                    progress_bar=False))]
    assert kinds == ["JsonLinesLogger", "LearningCurves", "TensorBoardLogger"]
    assert [type(c).__name__ for c in default_callbacks(MeZOConfig(progress_bar=False))] == []
