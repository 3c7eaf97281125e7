"""A SQuAD chat job as a user runs it (issue 33's check): a server started with SGLang's launch
command and ``--enable-mezo`` (SmolLM2-135M-Instruct, CPU), SQuAD's training rows uploaded as OpenAI
chat files with the official ``openai`` client (user: passage, question and "Answer with a short
phrase from the text."; assistant: the first reference answer), the first ``--validation-rows`` dev
rows as the validation file, a ``supervised`` job at the defaults but for batch size, steps and seed;
then the base model and the job's fine-tuned model answer the remaining dev rows greedily through
``/v1/chat/completions``, scored with SQuAD's F1 and exact match. Those rows are in no file the job
saw; the dev file played no part in choosing any default.

    .venv/bin/python benchmarks/squad_chat_job.py --steps 500 --batch 8 --seed 42
    .venv/bin/python benchmarks/squad_chat_job.py --steps 4 --eval-rows 8 --tag smoke   # a check that it runs

Record: benchmarks/results/squad_chat_job/<tag>.json (the job's events, its returned checkpoint,
both models' scores, the machine); the server's folders go to /tmp.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from harness import HERE, SHARED_DATA, MeZOServer, logger, machine_line
from openai import OpenAI

from sglang.srt.mezo.data.metrics import squad_scores

DATA = os.path.join(SHARED_DATA, "squad")
RESULTS = os.path.join(HERE, "results", "squad_chat_job")
INSTRUCTION = "Answer with a short phrase from the text."
log = logger("squad_chat_job")


def read_rows(name: str) -> list[dict]:
    with open(os.path.join(DATA, name)) as f:
        return [json.loads(line) for line in f if line.strip()]


def user_message(row: dict) -> str:
    return f"{row['context']}\n\nQuestion: {row['question']}\n{INSTRUCTION}"


def chat_file(rows: list[dict], path: str) -> str:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps({"messages": [{"role": "user", "content": user_message(r)},
                                             {"role": "assistant", "content": r["answers"][0]}]}) + "\n")
    return path


def answers(client, model: str, rows: list[dict], max_tokens: int) -> list[str]:
    out = []
    for r in rows:
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": user_message(r)}],
                                               temperature=0, max_tokens=max_tokens)
        out.append(reply.choices[0].message.content or "")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--validation-rows", type=int, default=40)
    p.add_argument("--eval-rows", type=int, default=None, help="dev rows after the validation ones (default: all)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--hyperparameters", default="{}", help="more job hyperparameters, as JSON")
    p.add_argument("--tag", default=None)
    args = p.parse_args()

    train, dev = read_rows("train.jsonl"), read_rows("dev.jsonl")
    validation, held = dev[:args.validation_rows], dev[args.validation_rows:]
    held = held[:args.eval_rows] if args.eval_rows else held
    work = tempfile.mkdtemp(prefix="squad_chat_job-")
    server = MeZOServer(args.model, work)
    started = time.time()
    try:
        client = OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=600)
        files = {name: client.files.create(file=open(chat_file(rows, os.path.join(work, name)), "rb"),
                                           purpose="fine-tune").id
                 for name, rows in (("train.jsonl", train), ("valid.jsonl", validation))}
        job = client.fine_tuning.jobs.create(
            model=args.model, training_file=files["train.jsonl"], validation_file=files["valid.jsonl"],
            seed=args.seed, method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": args.batch}}},
            extra_body={"num_steps": args.steps, **json.loads(args.hyperparameters)})
        while job.status not in ("succeeded", "failed", "cancelled"):
            time.sleep(30)
            job = client.fine_tuning.jobs.retrieve(job.id)
            log(f"job {job.status}: step {job.model_extra.get('steps_completed')}/{job.model_extra.get('total_steps')}")
        events = [e.model_dump() for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
        scores = {"base": squad_scores(answers(client, args.model, held, args.max_tokens), [r["answers"] for r in held])}
        if job.status == "succeeded":
            tuned = answers(client, f"{args.model}:{job.fine_tuned_model}", held, args.max_tokens)
            scores["fine_tuned"] = squad_scores(tuned, [r["answers"] for r in held])
    finally:
        server.stop()
    record = {"command": " ".join(["python", *sys.argv]), "machine": machine_line(), "steps": args.steps,
              "batch_size": args.batch, "seed": args.seed, "train_rows": len(train),
              "validation_rows": len(validation), "eval_rows": len(held), "status": job.status,
              "returned_checkpoint": job.model_extra.get("returned_checkpoint"),
              "divergences": job.model_extra.get("divergences"), "stop_reason": job.model_extra.get("stop_reason"),
              "hyperparameters": job.model_extra.get("mezo"), "scores": scores,
              "wall_time_s": time.time() - started, "last_events": events}
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{args.tag or f'steps{args.steps}-b{args.batch}-s{args.seed}'}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(json.dumps({"status": job.status, "returned_checkpoint": record["returned_checkpoint"], "scores": scores}))


if __name__ == "__main__":
    main()
