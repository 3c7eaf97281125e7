"""A preference set built from SQuAD, deterministically: each question's gold answer preferred over a
wrong span of the same passage.

The shared data holds no preference set, so the DPO benchmark makes one from ``../shared/data/squad``:
for every row, the prompt is the MeZO paper's SQuAD prompt (what the supervised SQuAD runs train on),
``chosen`` is the first accepted answer and ``rejected`` a span of the passage with as many words,
picked by a RNG seeded with the row's id, among the spans that share no word with any accepted
answer (SQuAD-normalised), so that its F1 against every reference is 0. Both answers are written as
the supervised completion is (``" answer\\n"``). Rows with no such span are left out (counted).

    .venv/bin/python benchmarks/squad_preferences.py --out /tmp/squad_pairs   # train.jsonl, dev.jsonl

Rows are TRL's standard format, ``{"prompt", "chosen", "rejected"}``; the files are not committed
(they are rebuilt from the shared data in a second), only this script is.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string

from sglang.srt.mezo.data.generative import squad_prompt
from sglang.srt.mezo.data.metrics import normalize_answer

HERE = os.path.dirname(os.path.abspath(__file__))
SQUAD = os.path.join(HERE, "..", "..", "shared", "data", "squad")


def wrong_span(row: dict) -> str | None:
    """A span of the passage as long as the gold answer (in words) sharing no word with any answer."""
    gold = row["answers"][0]
    banned = {w for a in row["answers"] for w in normalize_answer(a).split()}
    words = row["context"].split()
    n = max(1, len(gold.split()))
    spans = []
    for i in range(len(words) - n + 1):
        span = " ".join(words[i:i + n]).strip(string.punctuation + " ")
        tokens = normalize_answer(span).split()
        if tokens and not banned & set(tokens):
            spans.append(span)
    return random.Random(row["id"]).choice(sorted(set(spans))) if spans else None


def pairs(path: str) -> tuple[list[dict], int]:
    """(TRL rows, rows left out) of one SQuAD file."""
    out, skipped = [], 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            rejected = wrong_span(row)
            if rejected is None:
                skipped += 1
                continue
            out.append({"prompt": squad_prompt(row["title"], row["context"], row["question"]),
                        "chosen": f" {row['answers'][0]}\n", "rejected": f" {rejected}\n"})
    return out, skipped


def build(out_dir: str, squad_dir: str = SQUAD) -> dict:
    """Write ``train.jsonl`` and ``dev.jsonl`` under ``out_dir``; returns {split: (path, pairs, left out)}."""
    os.makedirs(out_dir, exist_ok=True)
    made = {}
    for split in ("train", "dev"):
        rows, skipped = pairs(os.path.join(squad_dir, f"{split}.jsonl"))
        path = os.path.join(out_dir, f"{split}.jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        made[split] = (path, len(rows), skipped)
    return made


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for train.jsonl and dev.jsonl")
    p.add_argument("--squad", default=SQUAD, help="the SQuAD folder (train.jsonl, dev.jsonl)")
    args = p.parse_args()
    for split, (path, n, skipped) in build(args.out, args.squad).items():
        print(f"{split}: {n} pairs, {skipped} rows left out -> {path}")


if __name__ == "__main__":
    main()
