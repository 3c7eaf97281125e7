"""Seconds a MeZO step on SQuAD with the reward objective, and how they split between prefill,
decode and grading, beside the supervised (completion objective) step on the same batches.

Model: SmolLM2-135M-Instruct (``smollm2-135m``), the library's defaults for a causal LM with LoRA
(batch 16, rank 2, q_proj/v_proj), ``dtype="auto"``. Data: the ``squad`` preset's training rows
(``../shared/data/squad``, read in place).

- reward: each step generates every prompt's answer greedily under +eps z and -eps z in one
  generation batch (SGLang prefill, then decode with the KV cache, up to ``max_new_tokens`` 50,
  stopping at a line break), and grades both with SQuAD F1 (the squad preset's default grader);
- supervised: each step's +eps and -eps teacher-forced cross-entropy over the answer tokens in one
  packed forward.

One worker process per objective and round (each loads its own SGLang runner), rounds alternating
which objective goes first; in each worker, warm-up steps, then timed steps (a step's wall time).
The split: on ``--profiled`` more batches, the reward worker times through the public API what a
step generates (every prompt twice, as the +eps and -eps sides are): a generation of one token
(the prefill), the whole generation (its decode = the difference), and the grading of every
answer. (torch.profiler was tried first: recording every op of 50 decode forwards of SGLang's
CPU path took 15 GB.) Medians over every timed step of every round.

    .venv/bin/python benchmarks/perf_reward.py                     # the real run (alone on the machine)
    .venv/bin/python benchmarks/perf_reward.py --rounds 1 --steps 1 --warmup 1 --profiled 1 --out-dir /tmp/x  # smoke

Writes ``perf_reward.md`` and ``perf_reward_<date>.json`` into ``benchmarks/results`` (or ``--out-dir``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

from harness import machine_line, markdown_table

from sglang.srt.mezo.run_spec.config import MeZOConfig

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = "smollm2-135m"
LABELS = ("prefill", "decode", "grading")


def worker(objective: str, warmup: int, steps: int, profiled: int, seed: int) -> dict:
    """Time ``steps`` steps of ``objective``, then (reward) split ``profiled`` more batches' work."""
    # torch and SGLang's model executor only in the worker processes: the parent that starts them
    # (and --render) loads neither.
    import torch  # noqa: PLC0415

    from sglang.srt.mezo.training.plan import prepare, start_run  # noqa: PLC0415
    from sglang.srt.mezo.training.run import BatchSampler  # noqa: PLC0415

    plan = prepare(MeZOConfig(model_path=MODEL, task="squad", objective=objective, seed=seed,
                              num_steps=warmup + steps + profiled, eval_steps=10**6, eval_at_start=False,
                              progress_bar=False, output_dir=os.path.join("/tmp", f"perf_reward_{objective}")))
    run = start_run(plan)
    trainer, objective_ = run.trainer, run.trainer.objective
    sampler = BatchSampler(len(plan.train), plan.config.batch_size, seed)
    batches = [[plan.train[i] for i in next(sampler)] for _ in range(warmup + steps + profiled)]
    for batch in batches[:warmup]:
        trainer.step(batch)
    times = []
    for batch in batches[warmup:warmup + steps]:
        t0 = time.perf_counter()
        trainer.step(batch)
        times.append(time.perf_counter() - t0)
    split = {label: [] for label in LABELS}
    decode_forwards, answer_tokens = [], []
    if objective == "reward":
        # What a step generates (each prompt twice: the +eps and the -eps side), timed in its parts
        # through the public API: a prefill alone is a generation of one token.
        for batch in batches[warmup + steps:]:
            both = batch * 2
            inputs = objective_.generation_inputs(both)
            t0 = time.perf_counter()
            trainer.generate(inputs._replace(max_new_tokens=1))
            t1 = time.perf_counter()
            generated = trainer.generate(inputs)
            t2 = time.perf_counter()
            objective_.grade(generated, both)
            t3 = time.perf_counter()
            split["prefill"].append(t1 - t0)
            split["decode"].append((t2 - t1) - (t1 - t0))
            split["grading"].append(t3 - t2)
            decode_forwards.append(max(len(g) for g in generated) - 1)
            answer_tokens.append(sum(len(g) for g in generated) / len(generated))
    trainer.close()
    return {"objective": objective, "step_times_s": times, "split_s": split, "decode_forwards": decode_forwards,
            "answer_tokens": answer_tokens, "batch_size": plan.config.batch_size,
            "dtype": str(trainer.config.dtype), "torch_threads": torch.get_num_threads()}


def render(data: dict) -> str:
    rows = {o: [r for r in data["rounds"] if r["objective"] == o] for o in ("completion", "reward")}
    med = {o: statistics.median(t for r in rs for t in r["step_times_s"]) for o, rs in rows.items()}
    lines = [
        "# A reward step against a supervised step (SQuAD, SmolLM2-135M-Instruct)", "",
        f"Machine: {data['machine']}; dtype {rows['reward'][0]['dtype']}, {rows['reward'][0]['torch_threads']} torch "
        f"threads; batch {rows['reward'][0]['batch_size']}; {data['started']}.", "",
        f"Command: `{data['command']}`", "",
    ]
    names = {"completion": "supervised (completion)", "reward": "reward (SQuAD F1 grader)"}
    lines += markdown_table(["objective", "seconds a step (median)", "steps timed", "ratio to supervised"],
                            [[names[o], f"{med[o]:.2f}", sum(len(r["step_times_s"]) for r in rows[o]),
                              f"{med[o] / med['completion']:.2f}x"] for o in ("completion", "reward")])
    split = {label: [t for r in rows["reward"] for t in r["split_s"][label]] for label in LABELS}
    step = med["reward"]
    forwards = [f for r in rows["reward"] for f in r["decode_forwards"]]
    lengths = [n for r in rows["reward"] for n in r["answer_tokens"]]
    parts = {label: statistics.median(split[label]) for label in LABELS}
    total = sum(parts.values())
    lines += ["", f"Where a reward step's time goes: what a step generates (each prompt twice, as the +eps and -eps "
              f"sides) timed in parts on {len(forwards)} more batches, at the trained adapter; medians. The parts "
              f"add up to {total:.2f} s against the {step:.2f} s median step: they are measured on other batches "
              "(an answer's length decides the decode) and the prefill alone once more, so the shares are of their "
              f"sum. The answers had {statistics.mean(lengths):.1f} tokens on average, and a batch decoded for "
              f"{statistics.median(forwards):.0f} forwards (median): until its longest answer ended.", ""]
    phases = {"prefill": "prefill (the prompts of both sides, one extend forward)",
              "decode": "decode (one token a request a forward, KV cache)",
              "grading": "grading (SQuAD F1 of every answer)"}
    lines += markdown_table(["phase", "seconds a step", "share"],
                            [[phases[label], f"{parts[label]:.3f}", f"{100 * parts[label] / total:.1f}%"]
                             for label in LABELS])
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--profiled", type=int, default=3, help="batches whose generation is timed in parts")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--worker", choices=("completion", "reward"), help=argparse.SUPPRESS)
    p.add_argument("--render", metavar="JSON", help="only write perf_reward.md again from a run's record")
    args = p.parse_args()
    if args.render:
        text = render(json.load(open(args.render)))
        with open(os.path.join(args.out_dir, "perf_reward.md"), "w") as f:
            f.write(text)
        print(text)
        return
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.warmup, args.steps, args.profiled, args.seed)))
        return
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    rounds = []
    for k in range(args.rounds):
        order = ("reward", "completion") if k % 2 else ("completion", "reward")
        for objective in order:
            cmd = [sys.executable, __file__, "--worker", objective, "--warmup", str(args.warmup), "--steps",
                   str(args.steps), "--profiled", str(args.profiled), "--seed", str(args.seed + k)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rounds.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
            print(f"round {k} {objective}: median {statistics.median(rounds[-1]['step_times_s']):.2f} s", flush=True)
    data = {"machine": machine_line(), "started": started, "rounds": rounds,
            "command": " ".join(["python", os.path.relpath(__file__, os.path.dirname(HERE)), *sys.argv[1:]])}
    os.makedirs(args.out_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(args.out_dir, f"perf_reward_{stamp}.json"), "w") as f:
        json.dump(data, f, indent=1)
    text = render(data)
    with open(os.path.join(args.out_dir, "perf_reward.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
