"""Which defaults win for the generative and multiple-choice objectives, chosen on training data only.

The task's training file is split in two, by a fixed rule that never looks at the dev file: a
held-out part (SQuAD: whole articles, about 100 questions; ARC-Easy: about 60 questions, by a hash
of the question's text) and the rest, which the candidates train on. Every candidate is scored on the
held-out part (SQuAD: F1 / EM of the answers generated greedily through SGLang; ARC-Easy:
accuracy of the best option), so the dev file plays no part in the choice. The record of each
candidate keeps its command, machine and eval history.

    .venv/bin/python benchmarks/generative_defaults.py --task squad --lr 1e-3 --steps 200
    .venv/bin/python benchmarks/generative_defaults.py --task squad --lr 3e-3 --steps 200
    .venv/bin/python benchmarks/generative_defaults.py --task arc-easy --train-rows 64 --steps 150
    .venv/bin/python benchmarks/generative_defaults.py --task arc-easy --train-rows all --steps 150
    .venv/bin/python benchmarks/generative_defaults.py --task arc-easy --steps 0   # zero-shot on the held-out rows
    .venv/bin/python benchmarks/generative_defaults.py --task squad --format chat --lr 6e-3 --steps 500 --batch 8 \
        --schedule linear --eval-steps 40   # the rows as squad_chat_job.py's chat rows
    .venv/bin/python benchmarks/generative_defaults.py --table   # results/generative_defaults.md

Records: benchmarks/results/generative_defaults/<task>-<candidate>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections import Counter

from harness import MODEL, machine_line, markdown_table  # the same model and machine line as the dev-split records

from sglang.srt.mezo.data.chat import ChatExample, Message
from sglang.srt.mezo.data.generative import squad_examples
from sglang.srt.mezo.data.loaders import load_examples, resolve_task_data
from sglang.srt.mezo.data.presets import get_task

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "generative_defaults")
SEED = 42


def squad_split(held_out_rows: int = 100) -> tuple[list, list]:
    """(train, held out) of SQuAD's training file: whole articles (their titles in a seeded order)
    are held out until ``held_out_rows`` questions are, so no passage is on both sides."""
    rows = squad_examples(resolve_task_data(get_task("squad"), "train"))
    title_of = [r.prompt.split("\n", 1)[0] for r in rows]  # the prompt's first line: "Title: ..."
    questions = Counter(title_of)
    titles = sorted(questions)
    random.Random(SEED).shuffle(titles)
    held: set[str] = set()
    for title in titles:
        if sum(questions[t] for t in held) >= held_out_rows:
            break
        held.add(title)
    return ([r for r, t in zip(rows, title_of) if t not in held], [r for r, t in zip(rows, title_of) if t in held])


CHAT_INSTRUCTION = "Answer with a short phrase from the text."  # squad_chat_job.py's user message


def as_chat(rows: list) -> list:
    """SQuAD rows as the chat rows a user uploads (squad_chat_job.py's: passage, question and the
    instruction from the user; the first answer from the assistant), every answer kept as references
    so that evaluation scores greedy chat answers by F1."""
    with open(resolve_task_data(get_task("squad"), "train")) as f:
        raw = [json.loads(line) for line in f]
    out = []
    for r in rows:
        row = raw[int(r.where.rsplit("line ", 1)[1]) - 1]
        user = f"{row['context']}\n\nQuestion: {row['question']}\n{CHAT_INSTRUCTION}"
        out.append(ChatExample((Message("user", user), Message("assistant", row["answers"][0])), r.where,
                               tuple(row["answers"])))
    return out


def arc_split(held_out_share: float = 0.2) -> tuple[list, list]:
    """(train, held out) of ARC-Easy's training file: a question is held out when the first byte of
    the SHA-256 of its text falls under ``held_out_share`` of 256."""
    preset = get_task("arc-easy")
    rows = load_examples(resolve_task_data(preset, "train"), preset, split="train")

    def held(example) -> bool:
        return hashlib.sha256(example.text_a.encode()).digest()[0] < held_out_share * 256

    return [r for r in rows if not held(r)], [r for r in rows if held(r)]


def candidate_name(args) -> str:
    candidate = f"lr{args.lr:g}-rows{args.train_rows}-s{args.steps}"
    if args.schedule != "constant" or args.batch is not None:  # older records name neither
        candidate += f"-{args.schedule}-b{args.batch or 'default'}"
    if args.n_spsa > 1:
        candidate += f"-n{args.n_spsa}{'split' if args.split_batch else ''}"
    if args.estimator != "spsa":
        candidate += f"-{args.estimator}"
    if args.lora_rank is not None:
        candidate += f"-r{args.lora_rank}"
    if args.freeze_a:
        candidate += "-frozenA"
    if args.format == "chat":
        candidate += "-chat"
    return candidate


def record_partial(args) -> dict:
    """The record of a candidate whose run has not finished (still going, or stopped): its
    evaluations and train losses so far, from its run folder's metrics.jsonl, marked partial."""
    candidate = candidate_name(args)
    metrics = os.path.join(RESULTS, "runs", f"{args.task}-{candidate}", "metrics.jsonl")
    with open(metrics) as f:
        events = [json.loads(line) for line in f if line.strip()]
    steps = [e for e in events if e["event"] == "step"]
    train, held = squad_split() if args.task == "squad" else arc_split()
    evals = [{k: v for k, v in e.items() if k != "event"} for e in events if e["event"] == "eval"]
    record = {"task": args.task, "candidate": candidate, "learning_rate": args.lr, "lr_schedule": args.schedule,
              "batch_size": args.batch, "format": args.format, "n_spsa": args.n_spsa,
              "split_batch": args.split_batch, "estimator": args.estimator, "lora_rank": args.lora_rank, "freeze_lora_a": args.freeze_a,
              "steps": args.steps, "partial": True, "steps_done": len(steps),
              "train_rows": len(train) if args.train_rows == "all" else int(args.train_rows),
              "held_out_rows": len(held),
              # The run's threads: record it in the environment the run had (OMP_NUM_THREADS).
              "machine": machine_line(), "threads": int(os.environ.get("OMP_NUM_THREADS") or 0) or None, "command": " ".join(["python", *sys.argv]).replace(
                  " --record-partial", ""),
              "eval_history": evals, "final_eval": evals[-1] if evals else None,
              "best_eval": max(evals, key=lambda e: e.get("eval_f1", 0)) if evals else None,
              "train_loss": [e["loss"] for e in steps],
              "wall_time_s": None}  # the run goes on: no wall time yet
    path = os.path.join(RESULTS, f"{args.task}-{candidate}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)
    return record


def execute(args) -> dict:
    # torch and SGLang's model executor: loaded by a run, not by --table or --record-partial.
    from sglang.srt.mezo.training.finetune import mezo_mlm_finetune  # noqa: PLC0415

    train, held = squad_split() if args.task == "squad" else arc_split()
    if args.format == "chat":
        train, held = as_chat(train), as_chat(held)
    if args.train_rows != "all":
        n = int(args.train_rows)
        train = [train[i] for i in sorted(random.Random(SEED).sample(range(len(train)), min(n, len(train))))]
    candidate = candidate_name(args)
    out_dir = os.path.join(RESULTS, "runs", f"{args.task}-{candidate}")
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    # --steps 0 is the zero-shot score of the held-out rows; a training run evaluates at its end only.
    schedule = {"eval_steps": args.eval_steps or args.steps, "eval_at_start": args.zero_shot} if args.steps else {}
    if args.n_spsa > 1:
        schedule.update(n_spsa=args.n_spsa, split_batch=args.split_batch)
    if args.estimator != "spsa":
        schedule.update(estimator=args.estimator)
    if args.lora_rank is not None:
        schedule.update(lora_rank=args.lora_rank)
    if args.freeze_a:
        schedule.update(freeze_lora_a=True)
    result = mezo_mlm_finetune(MODEL, task_name="chat" if args.format == "chat" else args.task,
                               train_dataset=train, eval_dataset=held,
                               num_steps=args.steps, learning_rate=args.lr, seed=SEED, output_dir=out_dir,
                               progress_bar=False, lr_schedule=args.schedule, batch_size=args.batch, **schedule)
    record = {"task": args.task, "candidate": candidate, "learning_rate": args.lr, "lr_schedule": args.schedule,
              "batch_size": args.batch, "format": args.format, "n_spsa": args.n_spsa,
              "split_batch": args.split_batch, "estimator": args.estimator, "lora_rank": args.lora_rank, "freeze_lora_a": args.freeze_a,
              "train_rows": len(train),
              "held_out_rows": len(held), "steps": args.steps, "machine": machine_line(), "started": started,
              "threads": int(os.environ.get("OMP_NUM_THREADS") or 0) or None,
              "command": " ".join(["python", *sys.argv]),
              **{k: result.get(k) for k in ("eval_history", "final_eval", "best_eval", "train_loss",
                                            "wall_time_s", "hyperparameters", "dtype_choice")}}
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{args.task}-{candidate}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)
    print(json.dumps({"candidate": candidate, "final_eval": result.get("final_eval")}))
    return record


def _mean(values: list, first: bool) -> float:
    part = values[:20] if first else values[-20:]
    return sum(part) / len(part) if part else float("nan")


def table() -> str:
    """results/generative_defaults.md: one row per candidate, held-out scores of every evaluation."""
    rows = []
    for file in sorted(os.listdir(RESULTS)):
        if not file.endswith(".json"):
            continue
        with open(os.path.join(RESULTS, file)) as f:
            r = json.load(f)
        metric = "eval_f1" if r["task"] == "squad" else "eval_accuracy"
        scale = 1 if r["task"] == "squad" else 100
        history = "; ".join(f"{h['step']}: {scale * h[metric]:.1f}" for h in r.get("eval_history") or [])
        final = r.get("final_eval") or {}
        em = f"{final['eval_exact_match']:.1f}" if "eval_exact_match" in final else "-"
        loss = [x for x in r.get("train_loss") or [] if x is not None]
        trained = r["steps"] > 0  # a zero-shot record trained on nothing
        lr = format(r["learning_rate"], "g") + (f", {r['lr_schedule']}" if r.get("lr_schedule") else "") + \
            (f", batch {r['batch_size']}" if r.get("batch_size") else "") + \
            (f", {r['estimator']}" if r.get("estimator", "spsa") != "spsa" else "") + \
            (f", n_spsa {r['n_spsa']}" if (r.get("n_spsa") or 1) > 1 else "") + \
            (", split batch" if r.get("split_batch") else "") + \
            (f", rank {r['lora_rank']}" if r.get("lora_rank") else "") + \
            (", A frozen" if r.get("freeze_lora_a") else "")
        steps = f"{r['steps_done']} of {r['steps']} (partial)" if r.get("partial") else r["steps"]
        minutes = f"{r['wall_time_s'] / 60:.1f}" if r.get("wall_time_s") else "-"
        task = r["task"] + (" (chat rows)" if r.get("format") == "chat" else "")
        rows.append([task, lr if trained else "-", r.get("train_rows", "-") if trained else "-",
                     r.get("held_out_rows", "-"), steps, history, em, f"{final.get('eval_loss', float('nan')):.3f}",
                     f"{_mean(loss, True):.3f} -> {_mean(loss, False):.3f}" if loss else "-", minutes,
                     f"{r['machine']}{', 1 thread' if r.get('threads') == 1 else ''}", f"`{r['command']}`"])
    head = ["task", "lr", "train rows", "held-out rows", "steps", "held-out F1 / acc. by step", "EM", "eval loss",
            "train loss, first -> last 20 steps", "minutes", "machine", "command"]
    text = ("# Defaults of the generative objectives, chosen on held-out training rows\n\n"
            "Scores are on rows held out of the task's *training* file (never its dev file): SQuAD F1 / EM in %, "
            "ARC-Easy accuracy in %. Minutes are wall time, not a speed figure (runs shared the machine). "
            "\"(chat rows)\": the same questions as squad_chat_job.py's chat rows (passage, question and "
            "\"Answer with a short phrase from the text.\" from the user), trained and answered through the "
            "model's chat template. A partial run was stopped after the steps it shows.\n\n"
            + "\n".join(markdown_table(head, rows)) + "\n")
    with open(os.path.join(HERE, "results", "generative_defaults.md"), "w") as f:
        f.write(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("squad", "arc-easy"), default="squad")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--eval-steps", type=int, default=None, help="default: only at the end")
    p.add_argument("--schedule", choices=("constant", "linear"), default="constant", help="lr_schedule")
    p.add_argument("--batch", type=int, default=None, help="batch_size (default: the library's)")
    p.add_argument("--format", choices=("task", "chat"), default="task",
                   help="chat: SQuAD rows as squad_chat_job.py's chat rows, answered through the chat template")
    p.add_argument("--n-spsa", type=int, default=1, help="n_spsa (directions a step)")
    p.add_argument("--estimator", default="spsa", help="the run spec's estimator (spsa, fzoo)")
    p.add_argument("--lora-rank", type=int, default=None, help="lora_rank (default: the library's)")
    p.add_argument("--freeze-a", action="store_true", help="freeze_lora_a: perturb and train LoRA's B only")
    p.add_argument("--split-batch", action="store_true", help="split_batch: each direction on its own part of the batch")
    p.add_argument("--train-rows", default="all", help="'all' or how many of the training part to sample")
    p.add_argument("--zero-shot", action="store_true", help="also evaluate at step 0")
    p.add_argument("--table", action="store_true")
    p.add_argument("--record-partial", action="store_true",
                   help="write the record of this candidate's unfinished run from its metrics.jsonl (marked partial)")
    args = p.parse_args()
    if args.table:
        print(table())
        return
    if args.record_partial:
        print(json.dumps({k: record_partial(args)[k] for k in ("candidate", "steps_done")}))
        return
    execute(args)


if __name__ == "__main__":
    main()
