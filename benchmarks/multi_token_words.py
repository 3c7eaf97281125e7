"""Do label words of several tokens score better than the presets' one-token words? Zero-shot, on
training data only: each task's k-shot dev split (16 examples a class drawn from the training file,
disjoint from the k-shot training examples; never the dev file), SmolLM2-135M-Instruct, the preset's
causal template. One-token words go through the `ce` objective, words of several tokens through
`options` (each word's mean log-likelihood after the prompt, and the sum).

    .venv/bin/python benchmarks/multi_token_words.py      # writes results/multi_token_words.md

TREC is not here: LM-BFF's TREC words (Description, Entity, Expression, Human, Location, Number)
are one token each in SmolLM2's tokenizer, and they are the preset's words already.
"""

from __future__ import annotations

import json
import os
import sys

from harness import MODEL, machine_line  # the same model and machine line as the other accuracy records

from sglang.srt.mezo.data.presets import get_task
from sglang.srt.mezo.data.sampling import prepare_splits
from sglang.srt.mezo.training.finetune import mezo_mlm_finetune

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results", "multi_token_words.md")
SEED = 42

CANDIDATES = {
    "sst-5": [
        ("preset: terrible / bad / okay / good / great", "ce", None, "mean"),
        ("very negative / negative / neutral / positive / very positive", "options",
         {0: "very negative", 1: "negative", 2: "neutral", 3: "positive", 4: "very positive"}, "mean"),
        ("very negative / negative / neutral / positive / very positive (sum)", "options",
         {0: "very negative", 1: "negative", 2: "neutral", 3: "positive", 4: "very positive"}, "sum"),
        ("very bad / bad / okay / good / very good", "options",
         {0: "very bad", 1: "bad", 2: "okay", 3: "good", 4: "very good"}, "mean"),
    ],
}


def score(task: str, objective: str, words, option_score: str) -> dict:
    dev = prepare_splits(get_task(task), k_shot=16, seed=SEED).dev
    extra = {"label_words": words, "option_score": option_score} if objective == "options" else {}
    result = mezo_mlm_finetune(MODEL, task_name=task, eval_dataset=dev, num_steps=0, seed=SEED,
                               objective=objective, progress_bar=False, **extra)
    return {"n": len(dev), **{k: result["final_eval"][k] for k in ("eval_accuracy", "eval_loss")}}


def main() -> None:
    rows = []
    for task, candidates in CANDIDATES.items():
        for name, objective, words, option_score in candidates:
            s = score(task, objective, words, option_score)
            rows.append(f"| {task} | {name} | {objective} | {s['n']} | {100 * s['eval_accuracy']:.1f} | {s['eval_loss']:.3f} |")
            print(rows[-1], flush=True)
    text = ("# Label words of several tokens, zero-shot on the k-shot dev split (training data)\n\n"
            f"SmolLM2-135M-Instruct; machine: {machine_line()}. "
            f"Command: `python {' '.join(sys.argv)}`.\n\n"
            "| task | label words | objective | dev-split examples | accuracy % | loss |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")
    with open(OUT, "w") as f:
        f.write(text)
    print(json.dumps({"written": OUT}))


if __name__ == "__main__":
    main()
