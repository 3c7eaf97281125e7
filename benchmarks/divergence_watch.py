"""Where the divergence watch would have fired on the runs already recorded: its train-loss signal
(training/divergence.py) replayed over the per-step train losses of every committed MeZO record
(results/accuracy/*.json, results/generative/*.json, results/generative_defaults/*.json), at a few
tolerances, with the run's default window (a tenth of the run, 10-100 steps). No model runs: this
is the calibration of ``divergence_tolerance`` against runs whose outcome is known (the dev metric at
their evaluations), not a new training run.

    .venv/bin/python benchmarks/divergence_watch.py    # results/divergence_watch.md

A row per record that has train losses; "fires at" lists the steps (value / best, the best's step)
where the smoothed train loss rose past the tolerance (the watch restarts after each, as after a
reaction); the dev metric by step is the record's own.
"""

from __future__ import annotations

import glob
import json
import os

from sglang.srt.mezo.training.divergence import DivergenceWatch, default_window

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCES = (0.1, 0.2, 0.3)


def fires(losses: list[float], tolerance: float) -> list[str]:
    watch = DivergenceWatch(default_window(len(losses)), tolerance)
    out = []
    for step, loss in enumerate(losses, 1):
        found = watch.on_train_loss(step, loss)
        if found is not None:
            out.append(f"{step} ({found.value:.2f} / {found.best:.2f} @{found.best_step})")
            watch.restart_train()
    return out


def metric_by_step(record: dict) -> str:
    history = record.get("eval_history") or []
    # results/generative records name metrics as the library does; results/accuracy's as "accuracy"
    name = next((n for n in ("eval_f1", "eval_accuracy", "accuracy") if any(n in h for h in history)), "accuracy")
    scale = 1 if name == "eval_f1" else 100
    return "; ".join(f"{h['step']}: {scale * h[name]:.1f}" for h in history if h.get(name) is not None)


def fell_back(record: dict) -> bool | None:
    """Whether the record's last evaluation is more than 1 point under its best (None: < 2 evaluations)."""
    history = record.get("eval_history") or []
    name = next((n for n in ("eval_f1", "eval_accuracy", "accuracy") if any(n in h for h in history)), None)
    values = [h[name] for h in history if name and h.get(name) is not None]
    if len(values) < 2:
        return None
    return (max(values) - values[-1]) * (1 if name == "eval_f1" else 100) > 1


def main() -> None:
    rows, outcomes = [], {t: [] for t in TOLERANCES}
    for path in sorted(glob.glob(os.path.join(HERE, "results", "*", "*.json"))):
        with open(path) as f:
            record = json.load(f)
        losses = [x for x in record.get("train_loss") or [] if x is not None]
        if len(losses) < 20 or "adam" in os.path.basename(path):  # backprop baselines have no watch to test
            continue
        name = os.path.relpath(path, os.path.join(HERE, "results"))
        cells = ["; ".join(fires(losses, t)) or "-" for t in TOLERANCES]
        for t, cell in zip(TOLERANCES, cells):
            outcomes[t].append((cell != "-", fell_back(record)))
        rows.append(f"| `{name}` | {len(losses)} | {default_window(len(losses))} | " + " | ".join(cells)
                    + f" | {metric_by_step(record) or '-'} |")
    summary = []
    for t, pairs in outcomes.items():
        fired = [f for hit, f in pairs if hit and f is not None]
        quiet = [f for hit, f in pairs if not hit and f is not None]
        summary.append(f"| {t:g} | {sum(hit for hit, _ in pairs)} of {len(pairs)} | {sum(fired)} of {len(fired)} "
                       f"| {sum(quiet)} of {len(quiet)} |")
    header = " | ".join(f"fires at, tolerance {t:g}" for t in TOLERANCES)
    text = ("# The divergence watch on the recorded runs\n\n"
            "Replayed offline over each record's per-step train losses "
            "(`.venv/bin/python benchmarks/divergence_watch.py`); a run that fires would have halved its "
            "learning rate there under `on_divergence=\"shrink\"`. Dev metric: accuracy in %, or SQuAD F1, at "
            "the record's evaluations.\n\n"
            "| tolerance | records it fires on | of those with 2+ evaluations, ending > 1 point under their best "
            "| of the quiet ones with 2+ evaluations, ending > 1 point under their best |\n|---|---|---|---|\n"
            + "\n".join(summary) + "\n\n"
            f"| record | steps | window | {header} | dev metric by step |\n"
            "|---|---|---|" + "---|" * len(TOLERANCES) + "---|\n" + "\n".join(rows) + "\n")
    with open(os.path.join(HERE, "results", "divergence_watch.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
