"""Would choosing a run's checkpoint on the k-shot dev split have helped? (LM-BFF's and MeZO's
protocol: the model kept is the one that does best on a dev split of the training data.)

For each saved MeZO-LoRA run of ``accuracy.py`` (its ``runs/<name>/`` folder with checkpoints),
every checkpoint's adapter is scored on that run's k-shot dev split (16 a class, drawn from the
training data, disjoint from the training examples and never the dev set reported), with the
run's own prompt and calibration. The checkpoint with the best dev-split accuracy (ties: the lower
dev-split loss, then the earlier step) is the one chosen; the report sets its whole-dev accuracy
(already in the run's record) beside the final checkpoint's. Nothing is trained, and the run
folders are only read (each is copied to a scratch folder, since resuming rewrites metrics).

    .venv/bin/python benchmarks/select_on_dev.py                # every run with checkpoints
    .venv/bin/python benchmarks/select_on_dev.py --match s1000  # runs whose name contains s1000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile

from sglang.srt.mezo.engine.runner import release_model_runner
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.checkpoints import checkpoint_dirs
from sglang.srt.mezo.training.plan import prepare, start_run

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "accuracy")
OUT = os.path.join(HERE, "results", "select_on_dev.json")
COMMAND = "python benchmarks/select_on_dev.py"


def score_checkpoints(run_dir: str) -> list[dict]:
    """(step, dev-split accuracy and loss) of every checkpoint of ``run_dir``."""
    scratch = tempfile.mkdtemp(prefix="select-on-dev-")
    try:
        copy = shutil.copytree(run_dir, os.path.join(scratch, "run"))
        config = dataclasses.replace(MeZOConfig.load(copy), output_dir=copy, resume=True, progress_bar=False)
        plan = prepare(config)  # the run's data sample, its dev split and (prompt.json) its prompt
        mezo_run = start_run(plan)
        try:
            dev = plan.prompt.encode_all(plan.examples.dev)
            scores = []
            for checkpoint in checkpoint_dirs(copy):
                mezo_run.resume(checkpoint)
                result = mezo_run.trainer.evaluate(dev)
                scores.append({"step": mezo_run.step_count, "dev_split_accuracy": result["eval_accuracy"],
                               "dev_split_loss": result["eval_loss"], "dev_split_n": len(dev)})
            return scores
        finally:
            release_model_runner(mezo_run.trainer.runner)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def choose(scores: list[dict]) -> dict:
    return min(scores, key=lambda s: (-s["dev_split_accuracy"], s["dev_split_loss"], s["step"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--match", default="", help="only runs whose name contains this")
    args = parser.parse_args()
    done = json.load(open(OUT)) if os.path.exists(OUT) else {}
    for name in sorted(os.listdir(os.path.join(RESULTS, "runs"))):
        record_path = os.path.join(RESULTS, f"{name}.json")
        run_dir = os.path.join(RESULTS, "runs", name)
        if args.match not in name or name in done or not os.path.exists(record_path) \
                or not os.path.isdir(os.path.join(run_dir, "checkpoints")):
            continue
        record = json.load(open(record_path))
        if record["run"]["method"] != "mezo-lora":
            continue
        scores = score_checkpoints(run_dir)
        whole_dev = {e["step"]: e["accuracy"] for e in record["eval_history"]}
        for s in scores:
            s["whole_dev_accuracy"] = whole_dev.get(s["step"])
        done[name] = {"checkpoints": scores, "chosen_step": choose(scores)["step"]}
        with open(OUT + ".tmp", "w") as f:
            json.dump(done, f, indent=1)
        os.replace(OUT + ".tmp", OUT)
        print(name, done[name]["chosen_step"], [(s["step"], round(100 * s["dev_split_accuracy"], 1),
                                                  round(100 * (s["whole_dev_accuracy"] or 0), 1)) for s in scores],
              file=sys.stderr)
    text = report(done)
    with open(OUT.replace(".json", ".md"), "w") as f:
        f.write(text + "\n")
    print(text)


def report(done: dict) -> str:
    rows = ["# Checkpoints chosen on the k-shot dev split", "",
            f"Command: `{COMMAND}` (scores: `select_on_dev.json`). Accuracy in %; the dev split is the run's "
            "k-shot dev split (training data, 16 a class), whole dev is the task's dev set the run reports.", "",
            "| run | checkpoints: step dev-split acc / whole-dev acc | chosen step | whole dev: chosen | final |",
            "|---|---|---|---|---|"]
    chosen_all, final_all = [], []
    for name, d in sorted(done.items()):
        by_step = {s["step"]: s for s in d["checkpoints"]}
        chosen, final = by_step[d["chosen_step"]], d["checkpoints"][-1]
        cells = "; ".join(f"{s['step']}: {100 * s['dev_split_accuracy']:.1f} / {100 * s['whole_dev_accuracy']:.1f}"
                          for s in d["checkpoints"])
        rows.append(f"| {name} | {cells} | {d['chosen_step']} | {100 * chosen['whole_dev_accuracy']:.1f} | "
                    f"{100 * final['whole_dev_accuracy']:.1f} |")
        chosen_all.append(chosen["whole_dev_accuracy"])
        final_all.append(final["whole_dev_accuracy"])
    if chosen_all:
        rows.append(f"\nMean over {len(chosen_all)} runs, whole dev: chosen on the dev split "
                    f"{100 * statistics.mean(chosen_all):.1f}, final {100 * statistics.mean(final_all):.1f}.")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
