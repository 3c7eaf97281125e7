"""What a MeZO job costs a running server, and what serving costs the job, measured side by side.

One SGLang server (``python -m sglang.launch_server --enable-mezo``, SmolLM2-135M, CPU) and one
MeZO-LoRA job on 16-shot SST-2. Three kinds of window, interleaved and repeated so that drift hits
each alike (the job is paused and resumed through the job API between windows):

- ``serve``: a steady stream of base-model requests, the job paused (no training);
- ``serve+train``: the same stream while the job trains;
- ``train``: the job trains, no requests.

The request stream is ``--clients`` closed-loop clients, each sending greedy ``/generate``
requests (an SST-2 dev sentence, ``--max-new-tokens`` tokens) back to back. Per window: requests
completed per second, p50/p99 latency; MeZO steps completed per second (from the job's
``steps_completed``) and the median seconds per step of the steps inside the window (the job's
own ``step_time_s`` metrics: compute only, not the time a step waits for its turn).

    .venv/bin/python benchmarks/serving.py                  # ~6 min on an idle 2-core machine
    .venv/bin/python benchmarks/serving.py --window-s 10 --repeats 1   # smoke test

Writes ``benchmarks/results/serving_<date>.json`` (every window) and ``results/serving.md``.
Run it alone: on 2 cores any other busy process distorts every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time

import requests
from harness import HERE, SHARED_DATA, MeZOServer, logger, markdown_table

RESULTS = os.path.join(HERE, "results")
log = logger("serving")


def dev_sentences(n: int) -> list[str]:
    with open(os.path.join(SHARED_DATA, "sst2", "dev.tsv")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return [r[1] for r in rows[:n]]


def request_stream(url: str, prompts: list[str], clients: int, max_new_tokens: int, seconds: float) -> list[float]:
    """Latencies of the requests that ``clients`` closed-loop clients complete in ``seconds``."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(k: int) -> None:
        i = k
        session = requests.Session()
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            r = session.post(url + "/generate", json={"text": prompts[i % len(prompts)], "sampling_params": {
                "max_new_tokens": max_new_tokens, "temperature": 0, "ignore_eos": True}}, timeout=300)
            r.raise_for_status()
            done = time.monotonic()
            if done <= stop_at:
                with lock:
                    latencies.append(done - t0)
            i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--window-s", type=float, default=30.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    command = "python benchmarks/serving.py " + " ".join(sys.argv[1:])
    out_dir = tempfile.mkdtemp(prefix="mezo-serving-")
    log(f"starting the server ({args.model}); files in {out_dir}")
    t0 = time.monotonic()
    server = MeZOServer(args.model, out_dir)
    log(f"server ready in {time.monotonic() - t0:.0f} s")
    windows = []
    try:
        prompts = dev_sentences(200)
        request_stream(server.url, prompts, args.clients, args.max_new_tokens, 5)  # warm-up
        job = requests.post(server.url + "/v1/fine_tuning/jobs", json={
            "model": "smollm2-135m", "training_file": "sst2/train.tsv", "task": "sst-2", "k_shot": 16,
            "num_steps": 100000, "batch_size": args.batch_size, "eval_steps": 0, "eval_at_start": False,
            "seed": 42}, timeout=120).json()
        job_id = job["id"]
        deadline = time.monotonic() + 300
        while server.job(job_id)["steps_completed"] < 3:  # started, and past its first steps
            if time.monotonic() > deadline:
                raise RuntimeError(f"the job did not start: {server.job(job_id)}")
            time.sleep(1)
        for repeat in range(args.repeats):
            for kind in ("serve", "serve+train", "train"):
                if kind == "serve":
                    server.control(job_id, "pause")
                elif server.job(job_id)["status"] == "paused":
                    server.control(job_id, "resume")
                before = server.job(job_id)["steps_completed"]
                start = time.monotonic()
                if kind == "train":
                    time.sleep(args.window_s)
                    latencies = []
                else:
                    latencies = request_stream(server.url, prompts, args.clients, args.max_new_tokens, args.window_s)
                elapsed = time.monotonic() - start
                after = server.job(job_id)["steps_completed"]
                step_times = server.step_times(job_id, before) if after > before else []
                w = {"repeat": repeat, "kind": kind, "seconds": elapsed, "requests": len(latencies),
                     "requests_per_s": len(latencies) / elapsed, "steps": after - before,
                     "steps_per_s": (after - before) / elapsed, "step_time_s": step_times,
                     "latency_s": latencies}
                windows.append(w)
                p50 = percentile(latencies, 50) if latencies else float("nan")
                log(f"repeat {repeat} {kind:<12} {w['requests_per_s']:.2f} req/s, p50 {p50:.3f} s, "
                    f"{w['steps_per_s']:.2f} steps/s")
        server.control(job_id, "cancel")
    finally:
        server.stop()
    write(windows, args, command)


def summarize(windows: list[dict]) -> dict:
    out = {}
    for kind in ("serve", "serve+train", "train"):
        ws = [w for w in windows if w["kind"] == kind]
        lat = [x for w in ws for x in w["latency_s"]]
        steps = [x for w in ws for x in w["step_time_s"]]
        out[kind] = {
            "requests_per_s": statistics.median(w["requests_per_s"] for w in ws),
            "p50_s": percentile(lat, 50) if lat else None, "p99_s": percentile(lat, 99) if lat else None,
            "steps_per_s": statistics.median(w["steps_per_s"] for w in ws),
            "step_time_s": statistics.median(steps) if steps else None,
            "windows": len(ws), "requests": len(lat), "steps": sum(w["steps"] for w in ws),
        }
    return out


def write(windows: list[dict], args, command: str) -> None:
    import torch  # noqa: PLC0415  (its version for the record: the script itself only speaks HTTP)

    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "torch": torch.__version__, "load_average": os.getloadavg()}
    summary = summarize(windows)
    with open(os.path.join(RESULTS, f"serving_{stamp}.json"), "w") as f:
        json.dump({"command": command, "args": vars(args), "machine": machine, "summary": summary,
                   "windows": windows}, f, indent=1)
    lines = report(summary, vars(args), command, machine, stamp)
    with open(os.path.join(RESULTS, "serving.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def report(summary: dict, args: dict, command: str, machine: dict, stamp: str) -> list[str]:
    """``serving.md``'s lines, from a record's summary, arguments, command, machine and stamp."""
    s, st, t = summary["serve"], summary["serve+train"], summary["train"]

    def ms(x):
        return "-" if x is None else f"{1000 * x:.0f} ms"

    def step(r):
        return "-" if r["step_time_s"] is None else f"{r['step_time_s']:.2f}"

    rows = [[name, f"{r['requests_per_s']:.2f}", ms(r["p50_s"]), ms(r["p99_s"]), f"{r['steps_per_s']:.3f}", step(r)]
            for name, r in (("serving, job paused", s), ("serving while the job trains", st),
                            ("job trains, no requests", t))]
    lines = [
        "# Serving while a MeZO job trains (`benchmarks/serving.py`)", "",
        f"Command: `{command}` ({stamp}; {machine['cpus']} CPUs, torch {machine['torch']}, load average at the "
        f"end {machine['load_average'][0]:.2f}). SmolLM2-135M fp32 on the CPU, `--enable-mezo`; the job: MeZO-LoRA "
        f"(r 8, q/v, paired ±eps) on 16-shot SST-2, batch {args['batch_size']}. Requests: {args['clients']} "
        f"closed-loop clients, greedy `/generate` of {args['max_new_tokens']} tokens for SST-2 dev sentences. "
        f"{args['repeats']} repeats of {args['window_s']:.0f}-second windows, interleaved; medians over windows, "
        "latency percentiles over all requests of a kind.", "",
        *markdown_table(["window", "requests/s", "p50 latency", "p99 latency", "MeZO steps/s",
                         "s per step (compute)"], rows),
    ]
    lines += ["", "Ratios:",
              f"- a training job costs serving {100 * (1 - st['requests_per_s'] / s['requests_per_s']):.0f}% of its "
              f"throughput; p50 latency x{st['p50_s'] / s['p50_s']:.2f}, p99 x{st['p99_s'] / s['p99_s']:.2f};",
              f"- serving costs the job {100 * (1 - st['steps_per_s'] / t['steps_per_s']):.0f}% of its steps per "
              f"second (a step's own compute x{st['step_time_s'] / t['step_time_s']:.2f})." if t["step_time_s"] and
              st["step_time_s"] else "- (no step times measured)"]
    return lines

if __name__ == "__main__":
    main()
