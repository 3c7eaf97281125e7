"""What a run does with its events: ``metrics.jsonl``, its learning curves as a PNG, TensorBoard
(``report_to``) and a progress bar."""

from __future__ import annotations

import json
import os
from typing import Callable

from tqdm.auto import tqdm

from sglang.srt.mezo.training.curves import plot_learning_curves

Callback = Callable[[dict], None]


METRICS_FILE = "metrics.jsonl"


class JsonLinesLogger:
    """Appends step, evaluation, divergence and returned events to ``metrics.jsonl``, one JSON object
    a line."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def __call__(self, event: dict) -> None:
        if event["event"] in ("step", "eval", "divergence", "returned"):
            with open(self.path, "a") as f:
                f.write(json.dumps(event) + "\n")


class LearningCurves:
    """Redraws ``learning_curves.png`` from ``metrics.jsonl`` after every evaluation and at the end."""

    def __init__(self, metrics_path: str, title: str):
        self.metrics_path, self.title = metrics_path, title

    def __call__(self, event: dict) -> None:
        if event["event"] in ("eval", "end") and os.path.exists(self.metrics_path):
            plot_learning_curves(self.metrics_path, title=self.title)


class TensorBoardLogger:
    """Writes step and evaluation scalars for TensorBoard (HF Trainer's ``report_to="tensorboard"``),
    through the ``tensorboard`` package's event writer as PyTorch wraps it."""

    def __init__(self, log_dir: str):
        try:
            # An optional dependency (pip install tensorboard), needed only with report_to=tensorboard.
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
        except ImportError as e:  # torch's wrapper needs the tensorboard package
            raise ImportError("report_to=tensorboard needs the tensorboard package: pip install tensorboard") from e
        self.writer = SummaryWriter(log_dir=log_dir)

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "step":
            for key in ("loss", "lr", "projected_grad", "step_time_s"):
                if isinstance(event.get(key), (int, float)):
                    self.writer.add_scalar(f"train/{key}", event[key], event["step"])
        elif kind == "eval":
            for key, value in event.items():
                if key.startswith("eval_") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"eval/{key.removeprefix('eval_')}", value, event["step"])
            self.writer.flush()
        elif kind == "end":
            self.writer.close()


class ProgressBar:
    """A tqdm bar over the run's steps, with the latest loss, learning rate and evaluation."""

    def __init__(self, total: int, initial: int = 0):
        self.bar = tqdm(total=total, initial=initial, desc="MeZO", dynamic_ncols=True)

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "step":
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{event['loss']:.4f}", lr=f"{event['lr']:.2e}")
        elif kind == "eval_progress":
            self.bar.set_postfix_str(f"eval {event['done']}/{event['total']}")
        elif kind == "eval" and "eval_accuracy" in event:
            self.bar.set_postfix(acc=f"{100 * event['eval_accuracy']:.1f}%", eval_loss=f"{event['eval_loss']:.4f}")
        elif kind == "resume":
            self.bar.update(event["step"] - self.bar.n)
        elif kind == "end":
            self.close()

    def close(self) -> None:
        self.bar.close()


TENSORBOARD_DIR = "tensorboard"


def default_callbacks(config) -> list[Callback]:
    """``metrics.jsonl`` and ``learning_curves.png`` in the output folder (if any), TensorBoard
    events in ``<output_dir>/tensorboard`` (with ``report_to=("tensorboard",)``), and a progress
    bar (if wanted)."""
    callbacks: list[Callback] = []
    if config.output_dir:
        metrics = os.path.join(config.output_dir, METRICS_FILE)
        callbacks.append(JsonLinesLogger(metrics))
        callbacks.append(LearningCurves(metrics, title=f"{config.task}, {os.path.basename(config.model_path)}"))
        if "tensorboard" in config.report_to:
            callbacks.append(TensorBoardLogger(os.path.join(config.output_dir, TENSORBOARD_DIR)))
    if config.progress_bar and config.num_steps > 0:
        callbacks.append(ProgressBar(config.num_steps))
    return callbacks
