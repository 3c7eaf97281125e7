"""Cheaper steps, measured side by side: full-weight step variants, long prompts, bf16 vs fp32.

Part of ``perf_mezo.py`` (sections 6-9 of ``perf.md``); ``perf_mezo.py --steps-only`` runs just
this. One worker process per dtype (a process holds one SGLang ModelRunner), all driven from here
in lock step: one timed operation at a time, round-robin over every (dtype, case), the start
rotated each round, so drift hits every case alike; medians over the rounds after a warm-up.

Cases, on 16-shot-sized batches of real task rows (16 rows sampled from the task's train file)
with the library's prompt objective (``MeZOMLMTrainer``):
- forwards: base weights (SST-2), LoRA adapter (SST-2 and RTE);
- full-weight steps at batch 16, SST-2: exact restore, add/subtract restore (z drawn a chunk at a
  time, restore fused with the update: 3 draws), the same with Rademacher z, the Rademacher step as
  a run takes it (the next step's batch known: its +eps z goes on in this step's update pass, two
  passes over the weights instead of three), that step with the signs through the torch path (the
  sign kernel off), and the add/subtract step as it was before (a fresh whole-tensor ``torch.randn`` per tensor and pass, 4 draws);
- MeZO-LoRA paired steps on SST-2 and RTE (long prompts: ~80 tokens against ~10);
- MeZO-LoRA steps with the batch split over 4 and 16 directions (``split_batch``), SST-2.
"""

# torch, transformers and SGLang are imported in the worker processes only: the driver stays light
# (one ModelRunner per process), and what it measures is the workers' time.
# ruff: noqa: PLC0415

from __future__ import annotations

import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from typing import Optional, Sequence

FULL_LR, FULL_EPS = 1e-7, 1e-3
LORA_LR, LORA_EPS = 1e-3, 1e-2
TASK_FILES = {"sst-2": "sst2/train.tsv", "rte": "rte/train.jsonl"}
FULL_CASES = ["fwd_base", "full_exact", "full_addsub", "full_rademacher", "full_rademacher_ahead",
              "full_rademacher_ahead_torch", "full_addsub_legacy"]
CASES = [*FULL_CASES,
         "fwd_lora:sst-2", "lora_paired:sst-2", "fwd_lora:rte", "lora_paired:rte", "lora_split4:sst-2",
         "lora_split16:sst-2"]
SPLITS = (4, 16)
LABELS = {
    "fwd_base": "forward, base weights (SST-2)",
    "full_exact": "full step, exact restore",
    "full_addsub": "full step, add/subtract restore (chunked z, 3 draws)",
    "full_rademacher": "full step, add/subtract, Rademacher z",
    "full_rademacher_ahead": "the same, as a run steps (next step's +eps z in the update pass: 2 passes)",
    "full_rademacher_ahead_torch": "the same, signs through the torch path (sign kernel off)",
    "full_addsub_legacy": "full step, add/subtract as before (whole-tensor randn, 4 draws)",
    "fwd_lora:sst-2": "forward, LoRA (SST-2)",
    "lora_paired:sst-2": "LoRA paired step (SST-2)",
    "fwd_lora:rte": "forward, LoRA (RTE)",
    "lora_paired:rte": "LoRA paired step (RTE)",
    "lora_split4:sst-2": "LoRA step, batch split over 4 directions (SST-2)",
    "lora_split16:sst-2": "LoRA step, batch split over 16 directions (SST-2)",
}
PREFIX = "PERF_STEPS "


def _legacy_addsub_step(trainer, batch, seed: int) -> None:
    """The add/subtract full-weight step before z was drawn in chunks: +eps, -2 eps, +eps and the
    update, each a fresh ``torch.randn`` of every tensor's shape (kept here to time it beside)."""
    import torch

    from sglang.srt.mezo.zo.noise import tensor_seed

    gen = torch.Generator()

    def perturb(scale: float) -> None:
        for i, t in enumerate(trainer.trainable.tensors):
            gen.manual_seed(tensor_seed(seed, i))
            t.add_(torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t.dtype), alpha=scale)

    eps = trainer.config.epsilon
    with torch.no_grad():
        perturb(eps)
        lp = trainer.compute_loss(batch)
        perturb(-2 * eps)
        lm = trainer.compute_loss(batch)
        perturb(eps)
        perturb(-trainer.config.learning_rate * (lp - lm) / (2 * eps))


def _without_sign_kernel(trainer, batch) -> None:
    """The run's step with random-sign z through the torch path (what a machine without a compiler runs)."""
    from sglang.srt.mezo.zo.noise import sign_kernel_off

    with sign_kernel_off():
        trainer.step(batch, batch)


def worker(dtype: str, model_path: str, threads: int, batch_size: int, seed: int) -> int:
    """Serve timed operations on stdin/stdout: ``RUN case`` -> ``PERF_STEPS {"seconds": ...}``."""
    import tempfile

    import torch
    from transformers import AutoTokenizer

    from sglang.srt.mezo.data.loaders import default_data_root, load_examples
    from sglang.srt.mezo.engine.runner import RunnerSpec, build_model_runner
    from sglang.srt.mezo.run_spec.config import MeZOConfig
    from sglang.srt.mezo.training.prompt_trainer import MeZOMLMTrainer

    tok = AutoTokenizer.from_pretrained(model_path)
    runner = build_model_runner(RunnerSpec(model_path, dtype=dtype, max_total_tokens=8192, lora_rank=8,
                                           lora_target_modules=["q_proj", "v_proj"],
                                           # two paired trainers, then a slot pair per split direction
                                           max_loras_per_batch=1 + 2 * (2 + sum(SPLITS))))
    torch.set_num_threads(threads)
    scratch = tempfile.mkdtemp(prefix="perf-steps-")

    def trainer(task: str, **kw):
        cfg = MeZOConfig(progress_bar=False, seed=0, output_dir=scratch, max_total_tokens=8192, dtype=dtype,
                         lora_rank=8, update_rule="sgd", **kw)  # the runner's rank; the committed results' rule
        return MeZOMLMTrainer(config=cfg, task=task, runner=runner, tokenizer=tok)

    lora = {t: trainer(t, trainable="lora", learning_rate=LORA_LR, epsilon=LORA_EPS, paired_forward=True)
            for t in TASK_FILES}
    split = {n: trainer("sst-2", trainable="lora", learning_rate=LORA_LR, epsilon=LORA_EPS, n_spsa=n, split_batch=True)
             for n in SPLITS}
    full = {k: trainer("sst-2", trainable="full", learning_rate=FULL_LR, epsilon=FULL_EPS, exact_restore=k == "exact",
                       noise="rademacher" if k.startswith("rademacher") else "gaussian")
            for k in ("exact", "addsub", "rademacher", "rademacher_ahead", "rademacher_ahead_torch")}
    root = default_data_root()
    rows = {t: random.Random(seed).sample(load_examples(f"{root}/{f}", t), batch_size) for t, f in TASK_FILES.items()}
    batches = {t: lora[t].encode(rows[t]) for t in TASK_FILES}
    seeds = random.Random(seed)
    ops = {
        "fwd_base": lambda: full["addsub"].compute_loss(batches["sst-2"]),
        "full_exact": lambda: full["exact"].step(batches["sst-2"]),
        "full_addsub": lambda: full["addsub"].step(batches["sst-2"]),
        "full_rademacher": lambda: full["rademacher"].step(batches["sst-2"]),
        # MeZORun passes the next batch when a step follows; the same batch stands in for it here.
        "full_rademacher_ahead": lambda: full["rademacher_ahead"].step(batches["sst-2"], batches["sst-2"]),
        "full_rademacher_ahead_torch": lambda: _without_sign_kernel(full["rademacher_ahead_torch"], batches["sst-2"]),
        "full_addsub_legacy": lambda: _legacy_addsub_step(full["addsub"], batches["sst-2"], seeds.randrange(2**62)),
    }
    for t in TASK_FILES:
        ops[f"fwd_lora:{t}"] = lambda t=t: lora[t].compute_loss(batches[t])
        ops[f"lora_paired:{t}"] = lambda t=t: lora[t].step(batches[t])
    for n in SPLITS:
        ops[f"lora_split{n}:sst-2"] = lambda n=n: split[n].step(batches["sst-2"])
    info = {t: {"tokens": sum(len(e.input_ids) for e in b), "max_len": max(len(e.input_ids) for e in b)}
            for t, b in batches.items()}
    print(PREFIX + json.dumps({"ready": True, "batches": info, "threads": torch.get_num_threads()}), flush=True)
    try:
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] == "QUIT":
                break
            t0 = time.perf_counter()
            ops[cmd[1]]()
            print(PREFIX + json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


class _Worker:
    def __init__(self, cmd: list[str]):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = self._reply()

    def _reply(self) -> dict:
        for line in self.proc.stdout:  # SGLang may print other lines
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX):])
        raise RuntimeError(f"perf_steps worker exited with {self.proc.wait()}")

    def run(self, case: str) -> float:
        self.proc.stdin.write(f"RUN {case}\n")
        self.proc.stdin.flush()
        return self._reply()["seconds"]

    def close(self) -> None:
        self.proc.stdin.write("QUIT\n")
        self.proc.stdin.close()
        self.proc.wait()


def run(script: str, model_path: str, dtypes: Sequence[str], threads: int, repeats: int, batch_size: int = 16,
        seed: int = 0, log=print) -> dict:
    """Time every (dtype, case), interleaved; returns the raw times and the batches' token counts."""
    workers = {}
    try:
        for d in dtypes:
            log(f"steps: starting the {d} worker")
            workers[d] = _Worker([sys.executable, script, "--steps-worker", d, "--model-path", model_path,
                                  "--threads", str(threads), "--steps-batch-size", str(batch_size),
                                  "--seed", str(seed)])
        pairs = [(d, c) for c in CASES for d in dtypes]
        times: dict[str, list[float]] = {f"{d}:{c}": [] for d, c in pairs}
        for r in range(1 + repeats):
            k = r % len(pairs)
            t0 = time.perf_counter()
            for d, c in pairs[k:] + pairs[:k]:
                dt = workers[d].run(c)
                if r:
                    times[f"{d}:{c}"].append(dt)
            log(f"steps: round {r + 1}/{1 + repeats} ({'warm-up' if r == 0 else 'timed'}) took "
                f"{time.perf_counter() - t0:.1f} s")
        return {"dtypes": list(dtypes), "threads": threads, "repeats": repeats, "batch_size": batch_size,
                "batches": {d: w.hello["batches"] for d, w in workers.items()}, "times": times}
    finally:
        for w in workers.values():
            w.close()


def _med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def _ratio(a: Sequence[float], b: Sequence[float], f: float = 1.0) -> tuple[float, float, float]:
    rs = [x / (f * y) for x, y in zip(a, b)]
    return _med(rs), min(rs), max(rs)


def _fmt(r: Optional[tuple], target: Optional[float] = None) -> str:
    if r is None:
        return "—"
    text = f"**{r[0]:.2f}**" if target is not None and r[0] <= target else f"{r[0]:.2f}"
    return text + (f" ({r[1]:.2f}–{r[2]:.2f})" if r[2] - r[1] >= 0.005 else "")


def render(steps: dict) -> list[str]:
    """Sections 6-9 of perf.md (9 only for runs that timed the split batch)."""
    T, dtypes = steps["times"], steps["dtypes"]
    L = [f"## 6. Full-weight step variants (batch {steps['batch_size']}, SST-2; {steps['threads']} thread(s))", "",
         "Step / (2 x forward with the base weights, same runner, same dtype). Target <= 1.5 with the add/subtract "
         "restore (peak memory <= 1.1x inference; the exact restore keeps a copy of the weights: 1.4x).", "",
         "| variant | " + " | ".join(f"{d} (s) | ratio" for d in dtypes) + " |",
         "|---|" + "---|---|" * len(dtypes)]
    for c in FULL_CASES:
        cells = []
        if any(f"{d}:{c}" not in T for d in dtypes):  # a case added after the run
            continue
        for d in dtypes:
            t = T[f"{d}:{c}"]
            cells.append(f"{_med(t):.3f} | " + ("—" if c == "fwd_base" else
                                                 _fmt(_ratio(t, T[f"{d}:fwd_base"], 2), 1.5 if "addsub" in c or "rad" in c else None)))
        L.append(f"| {LABELS[c]} | " + " | ".join(cells) + " |")
    L += ["", "## 7. Long prompts: RTE against SST-2 (MeZO-LoRA paired step, batch "
          f"{steps['batch_size']}; real rows)", "",
          "Target: RTE step <= 1.2 x (SST-2 step x token ratio). Tokens are the batch's real tokens (SGLang packs "
          "them: no padding).", "",
          "| dtype | SST-2 tokens (max) | RTE tokens (max) | token ratio | SST-2 fwd / step (s) | RTE fwd / step (s) | "
          "ms per token, fwd SST-2 / RTE | RTE step / (SST-2 step x token ratio) |",
          "|---|---|---|---|---|---|---|---|"]
    for d in dtypes:
        b = steps["batches"][d]
        ratio = b["rte"]["tokens"] / b["sst-2"]["tokens"]
        f_s, f_r = _med(T[f"{d}:fwd_lora:sst-2"]), _med(T[f"{d}:fwd_lora:rte"])
        L.append(f"| {d} | {b['sst-2']['tokens']} ({b['sst-2']['max_len']}) | {b['rte']['tokens']} ({b['rte']['max_len']}) | "
                 f"{ratio:.2f} | {f_s:.3f} / {_med(T[f'{d}:lora_paired:sst-2']):.3f} | "
                 f"{f_r:.3f} / {_med(T[f'{d}:lora_paired:rte']):.3f} | "
                 f"{1e3 * f_s / b['sst-2']['tokens']:.2f} / {1e3 * f_r / b['rte']['tokens']:.2f} | "
                 f"{_fmt(_ratio(T[f'{d}:lora_paired:rte'], T[f'{d}:lora_paired:sst-2'], ratio), 1.2)} |")
    if len(dtypes) > 1:
        a, b = dtypes[0], dtypes[1]
        L += ["", f"## 8. {b} against {a} (same cases, interleaved; time {b} / time {a})", "",
              f"| case | {a} (s) | {b} (s) | {b} / {a} |", "|---|---|---|---|"]
        for c in [c for c in CASES if f"{a}:{c}" in T]:
            L.append(f"| {LABELS[c]} | {_med(T[f'{a}:{c}']):.3f} | {_med(T[f'{b}:{c}']):.3f} | "
                     f"{_fmt(_ratio(T[f'{b}:{c}'], T[f'{a}:{c}']))} |")
    if all(f"{d}:lora_split{n}:sst-2" in T for d in dtypes for n in SPLITS):  # runs before the split had none
        L += ["", f"## 9. A batch split over n directions (MeZO-LoRA, batch {steps['batch_size']}, SST-2)", "",
              "Step with the batch split over n directions (`split_batch`, n_spsa = n) / the paired step with one "
              "direction (same rank, same forwards).", "",
              "| dtype | paired step (s) | " + " | ".join(f"split {n} (s) | ratio" for n in SPLITS) + " |",
              "|---|---|" + "---|---|" * len(SPLITS)]
        for d in dtypes:
            paired = T[f"{d}:lora_paired:sst-2"]
            L.append(f"| {d} | {_med(paired):.3f} | " + " | ".join(
                f"{_med(T[f'{d}:lora_split{n}:sst-2']):.3f} | {_fmt(_ratio(T[f'{d}:lora_split{n}:sst-2'], paired))}"
                for n in SPLITS) + " |")
    L.append("")
    return L
