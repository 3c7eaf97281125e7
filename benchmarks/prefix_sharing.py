"""Shared prefixes computed once per forward: the MeZO-LoRA completion step on SQuAD with and
without ``ExtendForward(share_prefixes=True)``, SmolLM2-135M fp32, in one run.

SQuAD rows that ask about the same passage share ``Title: ...\\nContext: <passage>\\nQuestion:``,
about 150-250 tokens, against ~20 for the question and answer. Two batch kinds:

- ``grouped``: batches made of whole passages that have two or more questions (every question of
  a passage in the same batch), in file order: what a passage-grouped sampler would feed;
- ``random``: a seeded random sample of rows: passages rarely repeat, so little or nothing is
  shared; this measures what sharing costs when it does not pay (the planning, a second extend).

Both settings step the same trainer (a paired forward: the +eps and -eps copies of the batch in one
extend, on two adapter slots). Every round times one step per (batch kind, setting) on that round's
batch, round-robin with the start rotated each round, after one warm-up round; medians over the
rounds. The projected gradient of one seed is also computed both ways on the first grouped batch
(they must agree within float rounding).

    .venv/bin/python benchmarks/prefix_sharing.py                 # the real run (7 timed rounds)
    .venv/bin/python benchmarks/prefix_sharing.py --repeats 1 --results-dir /tmp/ps   # smoke test

Writes ``<results-dir>/prefix_sharing.md`` and ``prefix_sharing_<date>.json`` (machine, command,
raw times, tokens extended per step).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import OrderedDict
from typing import Any, Sequence

import torch
from harness import machine_line, markdown_table
from transformers import AutoTokenizer

from sglang.srt.mezo.data.generative import squad_examples
from sglang.srt.mezo.engine.models import resolve_model_path
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.objectives.completion import CompletionObjective
from sglang.srt.mezo.training.trainer import MeZOTrainer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODEL = "smollm2-135m"
SQUAD = os.path.join(ROOT, "..", "shared", "data", "squad", "train.jsonl")
LR, EPS = 1e-3, 1e-2  # MeZO-LoRA's calibrated setting on this model
KINDS = ("grouped", "random")


def grouped_batches(rows: Sequence[dict], examples: Sequence[Any], batch_size: int) -> list[list[Any]]:
    """Full batches of passages with >= 2 questions, in file order, a passage's questions side by
    side; a passage that does not fit fills the batch and its other questions (two or more) start
    the next one."""
    by_context: "OrderedDict[str, list[int]]" = OrderedDict()
    for i, row in enumerate(rows):
        by_context.setdefault(row["context"], []).append(i)
    batches, batch = [], []
    for idx in by_context.values():
        while len(idx) >= 2:
            room = batch_size - len(batch)
            take = idx if len(idx) <= room else idx[:room] if room >= 2 else []
            batch += [examples[i] for i in take]
            idx = idx[len(take):]
            if len(batch) >= batch_size - 1:  # one slot left cannot hold a shared passage
                batches.append(batch)
                batch = []
    return batches


def _extend_tokens(trainer, batch) -> int:
    """Tokens the step's forwards extend (computed KV), read off the ForwardBatches."""
    runner, count = trainer.runner, []
    original = runner.forward

    def spy(forward_batch, *args, **kwargs):
        count.append(sum(forward_batch.extend_seq_lens_cpu))
        return original(forward_batch, *args, **kwargs)

    runner.forward = spy
    try:
        trainer.step(batch)
    finally:
        del runner.forward
    return sum(count)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    path = resolve_model_path(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    objective = CompletionObjective(tokenizer)
    with open(args.data) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    examples = objective.encode(squad_examples(args.data))
    grouped = grouped_batches(rows, examples, args.batch_size)[: args.batches]
    rng = random.Random(args.seed)
    batches = {"grouped": grouped,
               "random": [rng.sample(examples, args.batch_size) for _ in range(len(grouped))]}
    scratch = tempfile.mkdtemp(prefix="prefix-sharing-")
    cfg = MeZOConfig(progress_bar=False, seed=args.seed, output_dir=scratch, dtype="float32", trainable="lora",
                     lora_rank=8, learning_rate=LR, epsilon=EPS, batch_size=args.batch_size, update_rule="sgd",
                     paired_forward=True, max_total_tokens=args.max_total_tokens)
    try:
        return _timed(args, MeZOTrainer(path, cfg, tokenizer=tokenizer, objective=objective), batches, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _timed(args, trainer, batches: dict, path: str) -> dict:
    grouped = batches["grouped"]
    forward = trainer.forward
    cases = [(k, s) for k in KINDS for s in (False, True)]
    times: dict[str, list[float]] = {f"{k}:{'on' if s else 'off'}": [] for k, s in cases}
    tokens: dict[str, list[int]] = {key: [] for key in times}

    # The same seed both ways on the first grouped batch: sharing must not change the step.
    check = {}
    for share in (False, True):
        forward.share_prefixes = share
        check["on" if share else "off"] = trainer.projected_gradient(grouped[0], 12345)
    (g0, lp0, lm0), (g1, lp1, lm1) = check["off"], check["on"]
    agreement = {"g_off": g0, "g_on": g1, "abs_diff_g": abs(g1 - g0), "abs_diff_loss_plus": abs(lp1 - lp0),
                 "abs_diff_loss_minus": abs(lm1 - lm0)}
    print(f"projected gradient, off / on: {g0:.6f} / {g1:.6f} (L+ diff {agreement['abs_diff_loss_plus']:.2e}, "
          f"L- diff {agreement['abs_diff_loss_minus']:.2e})", flush=True)

    for r in range(1 + args.repeats):
        t_round = time.perf_counter()
        k0 = r % len(cases)
        for kind, share in cases[k0:] + cases[:k0]:
            forward.share_prefixes = share
            batch = batches[kind][r % len(batches[kind])]
            key = f"{kind}:{'on' if share else 'off'}"
            if r == 0:  # warm-up: count the tokens instead of timing
                tokens[key] = [_extend_tokens(trainer, b) for b in batches[kind]]
                continue
            t0 = time.perf_counter()
            trainer.step(batch)
            times[key].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{1 + args.repeats} ({'warm-up' if r == 0 else 'timed'}): "
              f"{time.perf_counter() - t_round:.1f} s", flush=True)
    return {
        "batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats,
        "model": MODEL, "model_path": path, "lr": LR, "eps": EPS,
        "batches": {k: [{"rows": len(b), "tokens": sum(len(e.input_ids) for e in b),
                         "passages": len({tuple(e.input_ids[:64]) for e in b})} for b in v]
                    for k, v in batches.items()},
        "tokens_extended_per_step": tokens, "times": times, "agreement": agreement,
    }


def render(result: dict) -> str:
    med = statistics.median
    T, N = result["times"], result["tokens_extended_per_step"]
    a = result["agreement"]
    lines = [
        "# Shared prefixes computed once per forward: MeZO-LoRA completion step on SQuAD", "",
        "```", result["command"], "```", "",
        f"- date: {result['date']}; machine: {result['machine']}; {result['threads']} torch thread(s)",
        f"- {result['model']} fp32, LoRA r=8 on q_proj/v_proj, paired forward (+eps and -eps in one extend), "
        f"CompletionObjective, batch {result['batch_size']}; median of {result['repeats']} round(s) after "
        "1 warm-up, the (batch kind, setting) order rotated each round",
        "- grouped: whole passages with >= 2 questions per batch; random: a seeded sample of rows",
        f"- the same seed both ways (first grouped batch): g off {a['g_off']:.6f}, on {a['g_on']:.6f}; "
        f"|dL+| {a['abs_diff_loss_plus']:.1e}, |dL-| {a['abs_diff_loss_minus']:.1e}", "",
    ]
    rows = []
    for kind in KINDS:
        off, on = T[f"{kind}:off"], T[f"{kind}:on"]
        b = result["batches"][kind]
        ratios = [y / x for x, y in zip(off, on)]
        span = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
        rows.append([f"{kind} ({len(b)})", f"{med([x['passages'] for x in b]):.0f}",
                     f"{med([x['tokens'] for x in b]):.0f}",
                     f"{med(N[f'{kind}:off']):.0f} / {med(N[f'{kind}:on']):.0f}", f"{med(off):.3f}", f"{med(on):.3f}",
                     f"{med(ratios):.2f}{span}"])
    lines += markdown_table(["batches", "passages per batch", "tokens per batch", "tokens extended per step, off / on",
                             "step off (s)", "step on (s)", "on / off"], rows)
    lines += ["", "Tokens extended count both sides of the step (the batch twice) and, with sharing, each shared "
              "prefix once per side.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7, help="timed rounds after the warm-up (default 7)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=4, help="distinct batches per kind, cycled over the rounds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-total-tokens", type=int, default=16384,
                   help="KV pool: a step extends the batch twice in one forward, which may use half of it")
    p.add_argument("--data", default=SQUAD)
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    started = time.time()
    result = run(args)
    result.update(date=time.strftime("%Y-%m-%d %H:%M:%S"), machine=machine_line(), wall_time_s=time.time() - started,
                  command=" ".join([".venv/bin/python", os.path.relpath(os.path.abspath(sys.argv[0]), ROOT),
                                    *sys.argv[1:]]))
    os.makedirs(args.results_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(args.results_dir, f"prefix_sharing_{stamp}.json"), "w") as f:
        json.dump(result, f, indent=1)
    text = render(result)
    with open(os.path.join(args.results_dir, "prefix_sharing.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
