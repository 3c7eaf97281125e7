"""Data-parallel MeZO and seed checkpoints, measured side by side on this machine.

- Step time at the same global batch: 1 worker with 2 torch threads against 2 data-parallel
  workers (``--nproc 2``) with 1 thread each, alternating, ``--repeats`` times; the median of each
  run's ``step_time_s`` (which for a worker includes waiting for the other in the step's exchange),
  the first steps left out as warm-up.
- Bytes a worker sends: its own count (``DataParallelGroup.bytes_sent``, logged at the end of a
  run), for runs of two lengths; per step = the difference over the difference of steps.
- Checkpoint size and replay time against the weights' size: a LoRA run's trajectory, adapter and
  replay time; a short full-weight run's trajectory and the time to replay it into a checkpoint.

SmolLM2-135M (``smollm2-135m``), 16-shot SST-2 (32 examples), MeZO-LoRA defaults (r 8, q/v, paired
+/-eps), evaluation on 16 dev sentences only (this measures steps, not accuracy).

    .venv/bin/python benchmarks/distributed.py          # ~10 min on an idle 2-core machine

Writes ``benchmarks/results/distributed_<date>.json`` and ``results/distributed.md``. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from harness import logger

from sglang.srt.mezo.engine.models import resolve_model_path

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
CLI = [sys.executable, "-m", "sglang.srt.mezo_mlm_trainer"]


log = logger("distributed")


def run_cli(out: str, steps: int, *extra: str, threads: int = 2, batch: int = 16) -> dict:
    cmd = [*CLI, "--num-steps", str(steps), "--batch-size", str(batch), "--eval-steps", "0", "--no-eval-at-start",
           "--max-eval-examples", "16", "--output-dir", out, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        times = [json.loads(x)["step_time_s"] for x in f if '"event": "step"' in x]
    sent = re.search(r"(\d+) exchanges, (\d+) bytes sent", done.stderr + done.stdout)
    return {"command": " ".join(cmd), "wall_s": wall, "step_times": times,
            "exchanges": int(sent.group(1)) if sent else None, "bytes_sent": int(sent.group(2)) if sent else None}


def size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--full-steps", type=int, default=5)
    args = p.parse_args()
    command = "python benchmarks/distributed.py " + " ".join(sys.argv[1:])
    scratch = tempfile.mkdtemp(prefix="mezo-dist-bench-")
    runs = {"1x2": [], "2x1": []}
    try:
        for repeat in range(args.repeats):
            for kind in ("1x2", "2x1") if repeat % 2 == 0 else ("2x1", "1x2"):
                out = os.path.join(scratch, f"{kind}-{repeat}")
                extra = ("--nproc", "2") if kind == "2x1" else ()
                r = run_cli(out, args.steps, *extra, threads=2 if kind == "1x2" else 1)
                r["median_step_s"] = statistics.median(r["step_times"][args.warmup:])
                runs[kind].append(r)
                log(f"{kind}: median step {r['median_step_s']:.3f} s, wall {r['wall_s']:.0f} s, "
                    f"bytes sent {r['bytes_sent']}")
        short = run_cli(os.path.join(scratch, "2x1-short"), args.steps // 2, "--nproc", "2", threads=1)
        long_ = runs["2x1"][0]
        per_step = (long_["bytes_sent"] - short["bytes_sent"]) / (args.steps - args.steps // 2)
        log(f"bytes per step per worker: {per_step:.1f}")

        # Checkpoints and replay: the first 1x2 LoRA run, and a short full-weight run.
        lora_dir = os.path.join(scratch, "1x2-0")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sglang.srt.mezo_trainer", "replay", lora_dir, "--out",
                        os.path.join(scratch, "lora-replayed")], check=True, capture_output=True)
        lora_replay_s = time.perf_counter() - t0
        full_dir = os.path.join(scratch, "full")
        full = run_cli(full_dir, args.full_steps, "--trainable", "full")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sglang.srt.mezo_trainer", "replay", full_dir, "--out",
                        os.path.join(scratch, "full-replayed")], check=True, capture_output=True)
        full_replay_s = time.perf_counter() - t0
        base = resolve_model_path("smollm2-135m")
        sizes = {
            "base_weights": size(os.path.join(base, "model.safetensors")),
            "lora_adapter": size(os.path.join(lora_dir, "adapter", "adapter_model.safetensors")),
            "lora_trajectory": size(os.path.join(lora_dir, "mezo_trajectory.json")),
            "lora_checkpoint": size(sorted(os.scandir(os.path.join(lora_dir, "checkpoints")),
                                           key=lambda e: e.name)[-1].path),
            "full_trajectory": size(os.path.join(full_dir, "mezo_trajectory.json")),
            "full_checkpoint": size(sorted(os.scandir(os.path.join(full_dir, "checkpoints")),
                                           key=lambda e: e.name)[-1].path),
            "full_replayed": size(os.path.join(scratch, "full-replayed", "model.safetensors")),
        }
        timing = {"lora_replay_s": lora_replay_s, "full_replay_s": full_replay_s, "full_steps": args.full_steps,
                  "full_step_s": statistics.median(full["step_times"]), "lora_steps": args.steps}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write(runs, per_step, short, sizes, timing, args, command)


def write(runs, per_step, short, sizes, timing, args, command) -> None:
    import torch  # noqa: PLC0415  (its version for the record: the script only runs the CLI in subprocesses)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
               "load_average": os.getloadavg()}
    one = statistics.median(r["median_step_s"] for r in runs["1x2"])
    two = statistics.median(r["median_step_s"] for r in runs["2x1"])
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"distributed_{stamp}.json"), "w") as f:
        json.dump({"command": command, "args": vars(args), "machine": machine, "runs": runs,
                   "bytes_per_step": per_step, "short_run": short, "sizes": sizes, "timing": timing}, f, indent=1)
    kb = lambda b: f"{b / 1024:.1f} KB"  # noqa: E731
    mb = lambda b: f"{b / 2**20:.1f} MB"  # noqa: E731
    lines = [
        "# Data-parallel MeZO and seed checkpoints (`benchmarks/distributed.py`)", "",
        f"Command: `{command}` ({stamp}; {machine['cpus']} CPUs, torch {machine['torch']}). SmolLM2-135M fp32, "
        f"16-shot SST-2, MeZO-LoRA (r 8, q/v, paired ±eps), global batch 16, {args.steps} steps a run, "
        f"{args.repeats} runs of each kind alternating; step time = median over a run's steps after "
        f"{args.warmup} warm-up steps, then the median over runs.", "",
        "| workers x threads | s per step | relative |", "|---|---|---|",
        f"| 1 x 2 | {one:.3f} | 1.00 |",
        f"| 2 x 1 (`--nproc 2`) | {two:.3f} | {two / one:.2f} |", "",
        f"Bytes a worker sends per step: **{per_step:.0f}** (its own count over a {args.steps}-step and a "
        f"{args.steps // 2}-step run: {runs['2x1'][0]['bytes_sent']} and {short['bytes_sent']} bytes in all, "
        "the rest being the start-up broadcast of the run's position and adapter and the final check).", "",
        "| what | size |", "|---|---|",
        f"| base weights (SmolLM2-135M fp32) | {mb(sizes['base_weights'])} |",
        f"| LoRA adapter | {mb(sizes['lora_adapter'])} |",
        f"| LoRA run's trajectory, {timing['lora_steps']} steps | {kb(sizes['lora_trajectory'])} |",
        f"| LoRA checkpoint folder (adapter + trajectory + state) | {kb(sizes['lora_checkpoint'])} |",
        f"| full-weight run's trajectory, {timing['full_steps']} steps | {kb(sizes['full_trajectory'])} |",
        f"| full-weight checkpoint folder (trajectory + state: no weights) | {kb(sizes['full_checkpoint'])} |",
        f"| full-weight replay's output (model.safetensors) | {mb(sizes['full_replayed'])} |", "",
        f"Replay (`python -m sglang.srt.mezo_trainer replay`, whole process): LoRA, {timing['lora_steps']} steps: "
        f"{timing['lora_replay_s']:.1f} s; full weights, {timing['full_steps']} steps: {timing['full_replay_s']:.1f} s "
        f"(a full-weight training step took {timing['full_step_s']:.2f} s).",
    ]
    with open(os.path.join(RESULTS, "distributed.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
