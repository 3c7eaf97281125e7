"""What a run does with its events: ``metrics.jsonl`` and a progress bar."""

from __future__ import annotations

import json
import os
from typing import Callable

Callback = Callable[[dict], None]


METRICS_FILE = "metrics.jsonl"


class JsonLinesLogger:
    """Appends step and evaluation events to ``metrics.jsonl``, one JSON object a line."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def __call__(self, event: dict) -> None:
        if event["event"] in ("step", "eval"):
            with open(self.path, "a") as f:
                f.write(json.dumps(event) + "\n")


class ProgressBar:
    """A tqdm bar over the run's steps, with the latest loss, learning rate and evaluation."""

    def __init__(self, total: int, initial: int = 0):
        from tqdm.auto import tqdm

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


def default_callbacks(config) -> list[Callback]:
    """``metrics.jsonl`` in the output folder (if any) and a progress bar (if wanted)."""
    callbacks: list[Callback] = []
    if config.output_dir:
        callbacks.append(JsonLinesLogger(os.path.join(config.output_dir, METRICS_FILE)))
    if config.progress_bar and config.num_steps > 0:
        callbacks.append(ProgressBar(config.num_steps))
    return callbacks
