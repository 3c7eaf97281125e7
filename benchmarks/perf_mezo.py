"""Performance benchmark of sglang-mezo: MeZO step time and memory on SGLang's forward path.

One command measures, side by side, on SmolLM2-135M fp32 with real SST-2 prompts
("<sentence> It was" -> " terrible"/" great", cross-entropy over the two label logits at the last
position):

1. overhead: MeZO step time / (2 x a plain forward of the same batch through the same runner),
   for LoRA (paired +/-eps and two forwards) and full-parameter (exact and add/subtract restore);
2. versus the reference structure of MeZO (``perf_reference.py``: HF eager forward, full-vocabulary
   log-softmax at every position, global-RNG ``torch.normal``, ``param.data = ...`` rebinding),
   same model, batch and trainable set, timed in the same process, interleaved;
3. peak memory (one subprocess per measurement): SGLang inference forward, MeZO steps, HF forward,
   backprop Adam fine-tuning of the same LoRA and of all weights;
4. paired +/-eps (one forward over two adapter slots) versus two forwards;
5. scaling of step time with batch size and with sequence length;
6-9. (``perf_steps.py``, worker processes per dtype) full-weight step variants, RTE against SST-2
   scaled by tokens, bf16 against fp32, a LoRA step with its batch split over n directions.

All timings happen in one process and one ModelRunner, round-robin over every (batch, config)
within each repeat (the start rotates between repeats), so drift hits all configs alike; each
number is the median over ``--repeats`` after one warm-up round; ratios are medians of per-repeat
ratios. Writes ``benchmarks/results/perf_<date>.json`` (every repeat), ``perf.md`` and
``perf_scaling.png``.

    .venv/bin/python benchmarks/perf_mezo.py                 # the real run (~20-25 min, 2 cores)
    .venv/bin/python benchmarks/perf_mezo.py --quick         # smoke test (results/smoke/, not for commit)
    .venv/bin/python benchmarks/perf_mezo.py --from-json benchmarks/results/perf_<date>.json  # re-render
    taskset -c 1 .venv/bin/python benchmarks/perf_mezo.py --steps-only --threads 1 --repeats 3  # 6-9 only (~6 min)
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

# Torch and the reference code only at the top: SGLang, sglang.srt.mezo and HF are imported in the
# functions that need them, so that a memory worker process holds what its kind measures and
# nothing more (memory_worker).
import perf_reference as ref  # noqa: E402  (imports torch and never sglang)
import perf_steps  # noqa: E402  (sections 6-9: full-weight step variants, long prompts, bf16)
import torch  # noqa: E402
from harness import command_line, logger, machine_info  # noqa: E402

# Hyperparameters only matter for keeping the weights sane over the timed steps.
LORA_LR, LORA_EPS = 1e-3, 1e-2  # the project's calibrated MeZO-LoRA setting
FULL_LR, FULL_EPS = 1e-7, 1e-3  # the paper's OPT full-parameter setting

CONFIG_LABELS = {
    "sgl_forward_lora": "SGLang forward, LoRA adapter",
    "sgl_forward_base": "SGLang forward, base weights",
    "mezo_lora_paired": "MeZO LoRA, paired +/-eps (one forward of 2B)",
    "mezo_lora_two": "MeZO LoRA, two forwards",
    "mezo_full_exact": "MeZO full, exact restore",
    "mezo_full_inexact": "MeZO full, add/subtract restore",
    "ref_forward": "reference forward (HF eager, full-vocab log-softmax)",
    "ref_lora_step": "reference MeZO LoRA step",
    "ref_full_step": "reference MeZO full step",
}
SGL_CONFIGS = ["sgl_forward_lora", "sgl_forward_base", "mezo_lora_paired", "mezo_lora_two",
               "mezo_full_exact", "mezo_full_inexact"]
REF_CONFIGS = ["ref_forward", "ref_lora_step", "ref_full_step"]

MEMORY_LABELS = {
    "sgl_inference_lora": "SGLang inference forward (LoRA runner, adapter)",
    "mezo_lora_paired": "MeZO LoRA step, paired",
    "mezo_lora_two": "MeZO LoRA step, two forwards",
    "sgl_inference_base": "SGLang inference forward (base runner)",
    "mezo_full_exact": "MeZO full step, exact restore",
    "mezo_full_inexact": "MeZO full step, add/subtract restore",
    "mezo_full_rademacher": "MeZO full step, add/subtract restore, Rademacher z",
    "hf_inference": "HF forward (reference objective, no grad)",
    "adam_lora": "Adam backprop LoRA (reference objective)",
    "adam_lora_lean": "Adam backprop LoRA (last-position label logits)",
    "adam_full": "Adam backprop full (reference objective)",
    "adam_full_lean": "Adam backprop full (last-position label logits)",
}
MEMORY_KINDS_QUICK = ["sgl_inference_lora", "mezo_lora_paired", "mezo_lora_two", "hf_inference", "adam_lora",
                      "adam_lora_lean"]
MEMORY_KINDS = MEMORY_KINDS_QUICK + ["sgl_inference_base", "mezo_full_exact", "mezo_full_inexact",
                                     "mezo_full_rademacher", "adam_full", "adam_full_lean"]
SGL_MEMORY_KINDS = {"sgl_inference_lora", "mezo_lora_paired", "mezo_lora_two", "sgl_inference_base",
                    "mezo_full_exact", "mezo_full_inexact", "mezo_full_rademacher"}


log = logger("perf")


# =========================================================================== the SGLang side

def _make_trainer(config, runner, tokenizer):
    """The library's prompt objective (SST-2: " terrible"/" great" at the last position) on ``runner``."""
    # Local: see the note above the imports.
    from sglang.srt.mezo.training.prompt_trainer import MeZOMLMTrainer  # noqa: PLC0415

    trainer = MeZOMLMTrainer(config=config, task="sst-2", runner=runner, tokenizer=tokenizer)
    assert tuple(trainer.prompt.label_token_ids) == ref.LABEL_IDS, trainer.prompt.label_token_ids
    return trainer


def _encoded(batch):
    """The benchmark's (prompt ids, label index) rows as the trainer's encoded examples."""
    # Local: see the note above the imports.
    from sglang.srt.mezo.data.prompt import EncodedExample  # noqa: PLC0415

    return [EncodedExample(tuple(ids), len(ids) - 1, label) for ids, label in batch]


def _mezo_config(kind: str, scratch: str, max_total_tokens: int):
    # Local: see the note above the imports.
    from sglang.srt.mezo.run_spec.config import MeZOConfig  # noqa: PLC0415

    # Rank 8 (the runner's), plain SGD and Gaussian z: the settings the committed results were measured with.
    common = dict(progress_bar=False, seed=0, output_dir=scratch, max_total_tokens=max_total_tokens, lora_rank=8,
                  update_rule="sgd", noise="rademacher" if kind == "full_rademacher" else "gaussian")
    if kind == "lora_paired":
        return MeZOConfig(trainable="lora", learning_rate=LORA_LR, epsilon=LORA_EPS, paired_forward=True, **common)
    if kind == "lora_two":
        return MeZOConfig(trainable="lora", learning_rate=LORA_LR, epsilon=LORA_EPS, paired_forward=False, **common)
    if kind == "full_exact":
        return MeZOConfig(trainable="full", learning_rate=FULL_LR, epsilon=FULL_EPS, exact_restore=True, **common)
    if kind in ("full_inexact", "full_rademacher"):  # the noise in common tells them apart
        return MeZOConfig(trainable="full", learning_rate=FULL_LR, epsilon=FULL_EPS, exact_restore=False, **common)
    raise ValueError(kind)


def _runner_spec(model_path: str, max_total_tokens: int, lora: bool, max_loras_per_batch: int):
    # Local: see the note above the imports.
    from sglang.srt.mezo.engine.runner import RunnerSpec  # noqa: PLC0415

    if not lora:
        return RunnerSpec(model_path, max_total_tokens=max_total_tokens)
    return RunnerSpec(model_path, max_total_tokens=max_total_tokens, lora_rank=ref.LORA_RANK,
                      lora_target_modules=list(ref.LORA_TARGETS), max_loras_per_batch=max_loras_per_batch)


def kv_tokens_needed(batches: Sequence[Sequence]) -> int:
    """max_total_tokens for a runner that must run every batch's paired forward (2B sequences) in one
    extend: ExtendForward allows max_total_tokens // 2 tokens per forward. Rounded up to 256."""
    most = max(2 * sum(len(ids) for ids, _ in b) for b in batches)
    need = 2 * most
    return -(-need // 256) * 256


# =========================================================================== timing (main process)

class Case:
    def __init__(self, group: str, size: int, config: str, fn: Callable[[], object], batch):
        self.group, self.size, self.config, self.fn = group, size, config, fn
        self.batch = batch
        self.warmup: list[float] = []
        self.times: list[float] = []

    @property
    def key(self) -> str:
        return f"{self.group}:{self.size}:{self.config}"


def run_timings(args, tok, model_path: str, nat: dict, fixed: dict, scratch: str) -> dict:
    # Local: see the note above the imports.
    from sglang.srt.mezo.engine.runner import build_model_runner, release_model_runner  # noqa: PLC0415

    all_batches = list(nat.values()) + list(fixed.values())
    max_tokens = kv_tokens_needed(all_batches)
    log(f"building the SGLang runner (max_total_tokens={max_tokens}, 6 LoRA slots)")
    runner = build_model_runner(_runner_spec(model_path, max_tokens, lora=True, max_loras_per_batch=6))
    torch.set_num_threads(args.threads)
    trainers = {
        kind: _make_trainer(_mezo_config(kind, scratch, max_tokens), runner, tok)
        for kind in ("lora_paired", "lora_two", "full_exact", "full_inexact")
    }
    assert trainers["lora_paired"].trainable.paired, "the paired trainer did not get its second slot"
    assert not trainers["lora_two"].trainable.paired

    hf_base = hf_lora = None
    if not args.no_reference:
        log(f"loading the HF reference models (attn_implementation={args.ref_attn})")
        hf_base = ref.load_hf_model(model_path, args.ref_attn)
        hf_lora = ref.add_lora(ref.load_hf_model(model_path, args.ref_attn), seed=0)
        ref_full = ref.ReferenceMeZO(hf_base, "full", lr=FULL_LR, eps=FULL_EPS, seed=0)
        ref_lora = ref.ReferenceMeZO(hf_lora, "lora", lr=LORA_LR, eps=LORA_EPS, seed=0)
    torch.set_num_threads(args.threads)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    padded = {id(b): ref.pad_batch(b, pad_id) for b in all_batches}

    # Same objective on both sides, at the starting weights (LoRA B = 0: the base model).
    check_b = nat[16] if 16 in nat else nat[min(nat)]
    sanity = {
        "batch_size": len(check_b),
        "sglang_base_loss": trainers["full_exact"].compute_loss(_encoded(check_b)),
        "sglang_lora_loss": trainers["lora_two"].compute_loss(_encoded(check_b)),
    }
    if hf_base is not None:
        sanity["reference_base_loss"] = float(ref_full.zo_forward(padded[id(check_b)]))
        sanity["reference_lora_loss"] = float(ref_lora.zo_forward(padded[id(check_b)]))
        sanity["max_abs_diff"] = max(abs(sanity[a] - sanity[b]) for a in ("sglang_base_loss", "sglang_lora_loss")
                                     for b in ("reference_base_loss", "reference_lora_loss"))
    log(f"loss check at the starting weights: {sanity}")

    def sgl_case(config: str, b):
        b = _encoded(b)
        fn = {
            "sgl_forward_lora": lambda: trainers["lora_two"].compute_loss(b),
            "sgl_forward_base": lambda: trainers["full_exact"].compute_loss(b),
            "mezo_lora_paired": lambda: trainers["lora_paired"].step(b),
            "mezo_lora_two": lambda: trainers["lora_two"].step(b),
            "mezo_full_exact": lambda: trainers["full_exact"].step(b),
            "mezo_full_inexact": lambda: trainers["full_inexact"].step(b),
        }[config]
        return fn

    def ref_case(config: str, b):
        p = padded[id(b)]
        return {
            "ref_forward": lambda: ref_full.zo_forward(p),
            "ref_lora_step": lambda: ref_lora.step(p),
            "ref_full_step": lambda: ref_full.step(p),
        }[config]

    cases: list[Case] = []
    for B, b in nat.items():
        for c in SGL_CONFIGS:
            cases.append(Case("batch", B, c, sgl_case(c, b), b))
        if hf_base is not None:
            for c in REF_CONFIGS:
                cases.append(Case("batch", B, c, ref_case(c, b), b))
    for L, b in fixed.items():
        for c in SGL_CONFIGS:
            cases.append(Case("seqlen", L, c, sgl_case(c, b), b))
        if hf_base is not None and args.reference_seq_lens:
            for c in REF_CONFIGS:
                cases.append(Case("seqlen", L, c, ref_case(c, b), b))

    rounds = 1 + args.repeats
    t_start = time.perf_counter()
    round_secs = []
    for r in range(rounds):
        t_round = time.perf_counter()
        k = r % len(cases)
        for case in cases[k:] + cases[:k]:
            gc.collect()
            t0 = time.perf_counter()
            case.fn()
            dt = time.perf_counter() - t0
            (case.warmup if r == 0 else case.times).append(dt)
        round_secs.append(time.perf_counter() - t_round)
        left = (rounds - r - 1) * (statistics.median(round_secs[1:]) if r >= 1 else round_secs[0])
        log(f"round {r + 1}/{rounds} ({'warm-up' if r == 0 else 'timed'}) took {round_secs[-1]:.1f} s; "
            f"~{left / 60:.1f} min of timing left")
    timing_secs = time.perf_counter() - t_start

    def batch_info(b):
        p = padded[id(b)]
        lens = [len(ids) for ids, _ in b]
        return {"real_tokens": sum(lens), "max_len": max(lens), "mean_len": sum(lens) / len(lens),
                "padded_tokens": p.padded_tokens}

    out = {
        "runner": {"max_total_tokens": max_tokens, "max_total_num_tokens": runner.max_total_num_tokens,
                   "max_loras_per_batch": 6, "lora_backend": runner.server_args.lora_backend,
                   "attention_backend": runner.server_args.attention_backend},
        "trainable_parameters": {"lora": trainers["lora_two"].trainable.num_parameters,
                                 "full": trainers["full_exact"].trainable.num_parameters},
        "reference_trainable_parameters": ({"lora": ref_lora.num_parameters, "full": ref_full.num_parameters}
                                           if hf_base is not None else None),
        "loss_check": sanity,
        "batches": {"batch": {str(B): batch_info(b) for B, b in nat.items()},
                    "seqlen": {str(L): batch_info(b) for L, b in fixed.items()}},
        "cases": [{"group": c.group, "size": c.size, "config": c.config, "warmup_s": c.warmup, "times_s": c.times}
                  for c in cases],
        "round_seconds": round_secs,
        "timing_seconds": timing_secs,
        "threads": torch.get_num_threads(),
    }
    trainers.clear()  # not del: the cases' lambdas above close over the name (ruff F821)
    del hf_base, hf_lora
    release_model_runner(runner)
    gc.collect()
    return out


# =========================================================================== memory (subprocesses)

def memory_worker(args) -> int:
    """One memory measurement in a fresh process; prints ``PERF_MEMORY {json}`` on stdout."""
    kind = args.memory_worker
    torch.set_num_threads(args.threads)
    with open(args.batch_file) as f:
        batch = [(tuple(ids), y) for ids, y in json.load(f)]
    if kind in SGL_MEMORY_KINDS:
        # What this process holds is what is measured: each kind imports its libraries here.
        import sglang.srt.mezo_trainer  # noqa: F401, PLC0415  (the library baseline of an SGLang process)
    else:
        import peft  # noqa: F401, PLC0415
        import transformers  # noqa: F401, PLC0415
    gc.collect()
    rss_import = ref.rss_mb()

    scratch = tempfile.mkdtemp(prefix="perf-mezo-mem-")
    try:
        if kind in SGL_MEMORY_KINDS:
            from transformers import AutoTokenizer  # noqa: PLC0415

            from sglang.srt.mezo.engine.runner import build_model_runner  # noqa: PLC0415

            tok = AutoTokenizer.from_pretrained(args.model_path)
            lora = kind in ("sgl_inference_lora", "mezo_lora_paired", "mezo_lora_two")
            runner = build_model_runner(_runner_spec(args.model_path, args.max_total_tokens, lora=lora,
                                                     max_loras_per_batch=3))
            torch.set_num_threads(args.threads)
            tkind = {"sgl_inference_lora": "lora_paired", "mezo_lora_paired": "lora_paired",
                     "mezo_lora_two": "lora_two", "sgl_inference_base": "full_exact",
                     "mezo_full_exact": "full_exact", "mezo_full_inexact": "full_inexact",
                     "mezo_full_rademacher": "full_rademacher"}[kind]
            trainer = _make_trainer(_mezo_config(tkind, scratch, args.max_total_tokens), runner, tok)
            encoded = _encoded(batch)
            op = (lambda: trainer.compute_loss(encoded)) if kind.startswith("sgl_inference") else (lambda: trainer.step(encoded))
        else:
            from transformers import AutoTokenizer  # noqa: PLC0415

            tok = AutoTokenizer.from_pretrained(args.model_path)
            pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            padded = ref.pad_batch(batch, pad_id)
            model = ref.load_hf_model(args.model_path, args.ref_attn)
            torch.set_num_threads(args.threads)
            if kind == "hf_inference":
                mezo_ref = ref.ReferenceMeZO(model, "full", lr=0.0, eps=FULL_EPS)
                op = lambda: mezo_ref.zo_forward(padded)  # noqa: E731
            else:
                trainable = "lora" if kind.startswith("adam_lora") else "full"
                if trainable == "lora":
                    model = ref.add_lora(model, seed=0)
                adam = ref.AdamFineTune(model, trainable, objective="lean" if kind.endswith("_lean") else "reference")
                op = lambda: adam.step(padded)  # noqa: E731
        ref.make_resident(runner.model if kind in SGL_MEMORY_KINDS else model)
        gc.collect()
        rss_load = ref.rss_mb()
        reset_ok = ref.reset_peak_rss()
        times = []
        for _ in range(args.mem_iters):
            t0 = time.perf_counter()
            op()
            times.append(time.perf_counter() - t0)
        peak = ref.peak_rss_mb() if reset_ok else ref.ru_maxrss_mb()
        result = {"kind": kind, "rss_after_import_mb": rss_import, "rss_after_load_mb": rss_load,
                  "peak_rss_mb": peak, "ru_maxrss_mb": ref.ru_maxrss_mb(), "peak_is_since_load": reset_ok,
                  "iterations": args.mem_iters, "op_seconds": times, "batch_size": len(batch)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("PERF_MEMORY " + json.dumps(result), flush=True)
    return 0


def run_memory(args, model_path: str, batch, kinds: Sequence[str], max_total_tokens: int) -> dict:
    fd, batch_file = tempfile.mkstemp(prefix="perf-mezo-batch-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump([[list(ids), y] for ids, y in batch], f)
    results = {}
    try:
        for kind in kinds:
            cmd = [sys.executable, os.path.abspath(__file__), "--memory-worker", kind, "--batch-file", batch_file,
                   "--model-path", model_path, "--max-total-tokens", str(max_total_tokens),
                   "--threads", str(args.threads), "--mem-iters", str(args.mem_iters), "--ref-attn", args.ref_attn]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PERF_MEMORY ")), None)
            if proc.returncode != 0 or line is None:
                results[kind] = {"kind": kind, "error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
                log(f"memory {kind}: FAILED (exit {proc.returncode})\n{proc.stderr[-2000:]}")
                continue
            results[kind] = json.loads(line[len("PERF_MEMORY "):])
            log(f"memory {kind}: peak {results[kind]['peak_rss_mb']:.0f} MB, after load "
                f"{results[kind]['rss_after_load_mb']:.0f} MB ({time.perf_counter() - t0:.0f} s)")
    finally:
        os.unlink(batch_file)
    return results


# =========================================================================== report

def _med(xs):
    return statistics.median(xs) if xs else float("nan")


class Results:
    """Access to a results dict: medians and per-repeat ratios."""

    def __init__(self, data: dict):
        self.data = data
        self.t = data.get("timing") or {}
        self.by = {(c["group"], c["size"], c["config"]): c["times_s"] for c in self.t.get("cases", [])}

    def times(self, group, size, config):
        return self.by.get((group, size, config))

    def med(self, group, size, config) -> Optional[float]:
        t = self.times(group, size, config)
        return _med(t) if t else None

    def ratio(self, group, size, num: str, den: str, den_factor: float = 1.0) -> Optional[tuple]:
        """(median, min, max) over repeats of num_r / (den_factor * den_r)."""
        a, b = self.times(group, size, num), self.times(group, size, den)
        if not a or not b:
            return None
        rs = [x / (den_factor * y) for x, y in zip(a, b)]
        return _med(rs), min(rs), max(rs)

    def sizes(self, group) -> list[int]:
        return sorted({s for g, s, _ in self.by if g == group})


def _s(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.3f}"


def _r(r: Optional[tuple], target: Optional[float] = None) -> str:
    if r is None:
        return "—"
    text = f"**{r[0]:.2f}**" if target is not None and r[0] <= target else f"{r[0]:.2f}"
    return text + (f" ({r[1]:.2f}–{r[2]:.2f})" if r[2] - r[1] >= 0.005 else "")


def render_steps_markdown(data: dict) -> str:
    """perf_steps.md: the header and sections 6-9 of a ``--steps-only`` run."""
    meta, m = data["meta"], data["meta"]["machine"]
    L = ["# sglang-mezo performance: cheaper steps (sections 6-9 of perf.md)", "", "```", meta["command"], "```", "",
         f"- date: {meta['date']}; wall time {meta['wall_seconds'] / 60:.1f} min; git {m['git_commit']}"
         f"{' (+ uncommitted changes)' if m['git_dirty'] else ''}",
         f"- machine: nproc {m['nproc']} (affinity {m['affinity_cpus']}), {m['cpu_model']}; load average at start "
         f"{meta['loadavg_start']}, at end {meta['loadavg_end']}",
         f"- software: Python {m['python']}, torch {m['torch']}, sglang {m['sglang']}; {meta['threads']} torch threads",
         f"- SmolLM2-135M (`{meta['model_path']}`), one worker process per dtype, every (dtype, case) round-robin "
         f"(start rotated per round), median of {meta['repeats']} rounds after 1 warm-up; ratios are medians of "
         "per-round ratios (min–max)", ""]
    L += perf_steps.render(data["steps"])
    L.append(f"Raw data (every repeat): `{meta.get('json_name')}`.")
    L.append("")
    return "\n".join(L)


def render_memory(mem: dict) -> list[str]:
    """Section 3 of perf.md: peak memory of each measurement and the factors between them."""
    L: list[str] = []
    if mem:
        mb = mem.get("batch_size")
        rows = mem.get("results", {})
        L.append(f"## 3. Peak memory (batch {mb}, one fresh process per measurement)")
        L.append("")
        L.append(f"RSS in MB. \"after import\": libraries imported, no model (an SGLang process imports far more than an "
                 f"HF-only one); \"after load\": model, runner, adapters, optimizer built; \"peak\": VmHWM over "
                 f"{mem.get('iterations')} operations (the first included), reset after load. SGLang allocates its KV pool "
                 f"(max_total_tokens = {mem.get('max_total_tokens')}, just enough for this batch's paired forward) and "
                 "request pools up front, at load: they are part of its baseline.")
        L.append("")
        L.append("| measurement | after import | after load | peak | peak − load | peak − import |")
        L.append("|---|---|---|---|---|---|")
        for kind, label in MEMORY_LABELS.items():
            r = rows.get(kind)
            if not r:
                continue
            if "error" in r:
                L.append(f"| {label} | failed | | | | |")
                continue
            L.append(f"| {label} | {r['rss_after_import_mb']:.0f} | {r['rss_after_load_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['peak_rss_mb'] - r['rss_after_load_mb']:.0f} | {r['peak_rss_mb'] - r['rss_after_import_mb']:.0f} |")
        L.append("")

        def fac(a, b, target=None):
            ra, rb = rows.get(a), rows.get(b)
            if not ra or not rb or "error" in ra or "error" in rb:
                return None
            peak = ra["peak_rss_mb"] / rb["peak_rss_mb"]
            net = (ra["peak_rss_mb"] - ra["rss_after_import_mb"]) / (rb["peak_rss_mb"] - rb["rss_after_import_mb"])
            ok = lambda x: f"**{x:.2f}**" if target is not None and x <= target else f"{x:.2f}"  # noqa: E731
            return f"| {MEMORY_LABELS[a]} / {MEMORY_LABELS[b]} | {ok(peak)} | {ok(net)} | {target or ''} |"

        pairs = [("mezo_lora_paired", "sgl_inference_lora", 1.1), ("mezo_lora_two", "sgl_inference_lora", 1.1),
                 ("mezo_full_exact", "sgl_inference_base", 1.1), ("mezo_full_inexact", "sgl_inference_base", 1.1),
                 ("mezo_full_rademacher", "sgl_inference_base", 1.1),
                 ("adam_lora", "mezo_lora_paired", None), ("adam_lora", "mezo_lora_two", None),
                 ("adam_lora_lean", "mezo_lora_two", None), ("adam_full", "mezo_full_exact", None),
                 ("adam_full", "mezo_full_inexact", None), ("adam_full_lean", "mezo_full_inexact", None),
                 ("hf_inference", "sgl_inference_base", None)]
        frows = [f for f in (fac(*p) for p in pairs) if f]
        if frows:
            L.append("| factor | peak / peak | (peak − import) / (peak − import) | target |")
            L.append("|---|---|---|---|")
            L += frows
            L.append("")
    return L


def render_markdown(data: dict) -> str:
    if not data.get("timing") and not data.get("steps"):  # --memory-only
        meta = data["meta"]
        return "\n".join(["# sglang-mezo peak memory", "", "```", meta["command"], "```", "",
                          f"- date: {meta['date']}; git {meta['machine']['git_commit']}"
                          f"{' (+ uncommitted changes)' if meta['machine']['git_dirty'] else ''}", ""]
                         + render_memory(data.get("memory") or {}))
    if not data.get("timing"):
        return render_steps_markdown(data)
    R = Results(data)
    meta, m = data["meta"], data["meta"]["machine"]
    t = data.get("timing") or {}
    L = []
    L.append(f"# sglang-mezo performance{' (SMOKE TEST: --quick, not results)' if meta.get('quick') else ''}")
    L.append("")
    L.append("```")
    L.append(meta["command"])
    L.append("```")
    L.append("")
    L.append(f"- date: {meta['date']}; wall time {meta['wall_seconds'] / 60:.1f} min; git {m['git_commit']}"
             f"{' (+ uncommitted changes)' if m['git_dirty'] else ''}")
    L.append(f"- machine: nproc {m['nproc']} (affinity {m['affinity_cpus']}), {m['cpu_model']}, {m['mem_total_gb']} GB RAM; "
             f"load average at start {meta['loadavg_start']}, at end {meta['loadavg_end']}")
    L.append(f"- software: Python {m['python']}, torch {m['torch']}, sglang {m['sglang']}, transformers {m['transformers']}, "
             f"peft {m['peft']}; {meta['threads']} torch threads")
    L.append(f"- model: SmolLM2-135M fp32 (`{meta['model_path']}`); data: SST-2 train, seeded sample (seed {meta['seed']}), "
             "prompt `<sentence> It was` -> ` terrible`/` great` (ids 13321/1109), loss = cross-entropy over the two "
             "label logits at the last position")
    L.append(f"- timing: median of {meta['repeats']} repeats after 1 warm-up round, every config of every batch "
             "round-robin within a repeat (start rotated per repeat), all in one process and one SGLang ModelRunner "
             f"(attention `{t.get('runner', {}).get('attention_backend')}`, LoRA backend "
             f"`{t.get('runner', {}).get('lora_backend')}`, max_total_tokens {t.get('runner', {}).get('max_total_tokens')}); "
             "ratios are medians of per-repeat ratios (min–max in parentheses); **bold** = meets the target")
    tp = t.get("trainable_parameters") or {}
    rtp = t.get("reference_trainable_parameters") or {}
    def count(n) -> str:  # "?" when that side did not run (--no-reference)
        return f"{n:,}" if isinstance(n, int) else "?"

    L.append(f"- trainable sets: LoRA r=8, alpha=16, q_proj+v_proj ({count(tp.get('lora'))} parameters; reference PEFT "
             f"{count(rtp.get('lora'))}), full ({count(tp.get('full'))}; reference {count(rtp.get('full'))}); "
             f"MeZO LoRA lr {LORA_LR} eps {LORA_EPS}, full lr {FULL_LR} eps {FULL_EPS}")
    lc = t.get("loss_check") or {}
    if lc:
        L.append(f"- same objective on both sides: loss at the starting weights, batch {lc.get('batch_size')}: SGLang "
                 f"{lc.get('sglang_base_loss', float('nan')):.6f}, reference {lc.get('reference_base_loss', float('nan')):.6f} "
                 f"(max |diff| {lc.get('max_abs_diff', float('nan')):.1e})")
    L.append("")

    bsizes = R.sizes("batch")
    binfo = (t.get("batches") or {}).get("batch", {})
    # ---- 1. overhead
    L.append("## 1. Overhead: MeZO step / (2 x plain forward of the same batch, same runner)")
    L.append("")
    L.append("Target <= 1.15 for LoRA. The LoRA forward runs with the adapter, the full-parameter forward with the base "
             "weights (through the same LoRA-enabled runner: its base requests also pass the LoRA layers).")
    L.append("")
    L.append("| B | fwd LoRA (s) | LoRA paired (s) | ratio | LoRA two-fwd (s) | ratio | fwd base (s) | full exact (s) | ratio | full add/sub (s) | ratio |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for B in bsizes:
        g = "batch"
        L.append(f"| {B} | {_s(R.med(g, B, 'sgl_forward_lora'))} | {_s(R.med(g, B, 'mezo_lora_paired'))} | "
                 f"{_r(R.ratio(g, B, 'mezo_lora_paired', 'sgl_forward_lora', 2), 1.15)} | "
                 f"{_s(R.med(g, B, 'mezo_lora_two'))} | {_r(R.ratio(g, B, 'mezo_lora_two', 'sgl_forward_lora', 2), 1.15)} | "
                 f"{_s(R.med(g, B, 'sgl_forward_base'))} | {_s(R.med(g, B, 'mezo_full_exact'))} | "
                 f"{_r(R.ratio(g, B, 'mezo_full_exact', 'sgl_forward_base', 2))} | {_s(R.med(g, B, 'mezo_full_inexact'))} | "
                 f"{_r(R.ratio(g, B, 'mezo_full_inexact', 'sgl_forward_base', 2))} |")
    L.append("")

    # ---- 2. reference
    if any(R.med("batch", B, "ref_lora_step") for B in bsizes):
        L.append("## 2. Versus the reference structure of MeZO (same model, batch, trainable set)")
        L.append("")
        L.append("Step-time ratio sglang-mezo / reference, target <= 0.6. Reference = `perf_reference.py`: HF "
                 f"transformers (`attn_implementation={meta.get('ref_attn')}`), padded batch, full-vocabulary "
                 "log-softmax at every position, global-RNG `torch.normal` per parameter, `param.data = ...` rebinding. "
                 "Tokens: real / padded (the reference computes the padding too).")
        L.append("")
        L.append("| B | tokens | ref fwd (s) | SGLang fwd / ref fwd | ref LoRA step (s) | LoRA paired / ref | LoRA two-fwd / ref | ref full step (s) | full exact / ref | full add/sub / ref |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for B in bsizes:
            g = "batch"
            bi = binfo.get(str(B), {})
            L.append(f"| {B} | {bi.get('real_tokens', '?')} / {bi.get('padded_tokens', '?')} | {_s(R.med(g, B, 'ref_forward'))} | "
                     f"{_r(R.ratio(g, B, 'sgl_forward_base', 'ref_forward'))} | {_s(R.med(g, B, 'ref_lora_step'))} | "
                     f"{_r(R.ratio(g, B, 'mezo_lora_paired', 'ref_lora_step'), 0.6)} | "
                     f"{_r(R.ratio(g, B, 'mezo_lora_two', 'ref_lora_step'), 0.6)} | {_s(R.med(g, B, 'ref_full_step'))} | "
                     f"{_r(R.ratio(g, B, 'mezo_full_exact', 'ref_full_step'), 0.6)} | "
                     f"{_r(R.ratio(g, B, 'mezo_full_inexact', 'ref_full_step'), 0.6)} |")
        L.append("")

    # ---- 3. memory
    L += render_memory(data.get("memory") or {})

    # ---- 4. paired vs two
    L.append("## 4. Paired +/-eps (both passes as two adapter slots of one batch) vs two forwards")
    L.append("")
    L.append("| batch | paired (s) | two forwards (s) | paired / two | faster |")
    L.append("|---|---|---|---|---|")
    for g, name in (("batch", "B={}"), ("seqlen", "B=16, L={}")):
        for s in R.sizes(g):
            rr = R.ratio(g, s, "mezo_lora_paired", "mezo_lora_two")
            faster = "—" if rr is None else ("paired" if rr[0] < 1 else "two forwards")
            L.append(f"| {name.format(s)} | {_s(R.med(g, s, 'mezo_lora_paired'))} | {_s(R.med(g, s, 'mezo_lora_two'))} | "
                     f"{_r(rr)} | {faster} |")
    L.append("")

    # ---- 5. scaling
    L.append("## 5. Scaling (median step time, s; ± = half the min–max spread)")
    L.append("")
    for g, head, info in (("batch", "B", binfo), ("seqlen", "L (B=16)", (t.get("batches") or {}).get("seqlen", {}))):
        sizes = R.sizes(g)
        if not sizes:
            continue
        configs = [c for c in CONFIG_LABELS if any(R.times(g, s, c) for s in sizes)]
        L.append("| " + head + " | tokens | " + " | ".join(CONFIG_LABELS[c] for c in configs) + " |")
        L.append("|---|---|" + "---|" * len(configs))
        for s in sizes:
            cells = []
            for c in configs:
                ts = R.times(g, s, c)
                cells.append("—" if not ts else f"{_med(ts):.3f} ±{(max(ts) - min(ts)) / 2:.3f}")
            tok = info.get(str(s), {})
            L.append(f"| {s} | {tok.get('real_tokens', '?')} | " + " | ".join(cells) + " |")
        L.append("")
    if data.get("steps"):
        L += perf_steps.render(data["steps"])
    L.append("![scaling](perf_scaling.png)")
    L.append("")
    L.append(f"Raw data (every repeat): `{meta.get('json_name')}`.")
    L.append("")
    return "\n".join(L)


def render_plot(data: dict, path: str) -> None:
    # matplotlib only when a plot is drawn, its backend chosen before pyplot is imported.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    R = Results(data)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    styles = {"sgl_forward_lora": ":", "sgl_forward_base": ":", "ref_forward": ":"}
    for ax, g, xlabel in ((axes[0], "batch", "batch size B"), (axes[1], "seqlen", "prompt length L (tokens), B = 16")):
        sizes = R.sizes(g)
        for c, label in CONFIG_LABELS.items():
            pts = [(s, R.times(g, s, c)) for s in sizes if R.times(g, s, c)]
            if not pts:
                continue
            xs = [s for s, _ in pts]
            ys = [_med(ts) for _, ts in pts]
            lo = [y - min(ts) for y, (_, ts) in zip(ys, pts)]
            hi = [max(ts) - y for y, (_, ts) in zip(ys, pts)]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", ms=4, capsize=3, linestyle=styles.get(c, "-"), label=label)
        if sizes:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(sizes)
            ax.set_xticklabels([str(s) for s in sizes])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("time per step / forward (s)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title("step time vs batch size")
    axes[1].set_title("step time vs sequence length")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    meta = data["meta"]
    fig.suptitle(f"sglang-mezo, SmolLM2-135M fp32, {meta['threads']} threads, median of {meta['repeats']}"
                 f"{' (SMOKE TEST)' if meta.get('quick') else ''}", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(data: dict, out_dir: str) -> tuple[str, str, str]:
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, data["meta"]["json_name"])
    if not os.path.exists(json_path) or data["meta"].get("_fresh"):
        data["meta"].pop("_fresh", None)
        with open(json_path, "w") as f:
            json.dump(data, f, indent=1)
    md_path = os.path.join(out_dir, "perf.md" if data.get("timing") else "perf_steps.md" if data.get("steps")
                           else "perf_memory.md")
    with open(md_path, "w") as f:
        f.write(render_markdown(data))
    png_path = os.path.join(out_dir, "perf_scaling.png")
    if not data.get("timing"):  # --steps-only: no scaling plot
        return json_path, md_path
    render_plot(data, png_path)
    return json_path, md_path, png_path


# =========================================================================== main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="sglang-mezo performance benchmark (see the module docstring).")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (after one warm-up round); default 5")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--seq-lens", type=int, nargs="+", default=[16, 32, 64, 128],
                   help="prompt lengths for the sequence-length scaling at batch 16")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: repeats 1, batch sizes 8 16, seq len 32, no full-parameter memory runs; "
                        "writes to benchmarks/results/smoke/")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the SST-2 sample")
    p.add_argument("--memory-batch-size", type=int, default=16)
    p.add_argument("--mem-iters", type=int, default=3, help="operations per memory measurement")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--memory-kinds", nargs="+", default=None, choices=MEMORY_KINDS,
                   help="only these memory measurements (default: all; --quick: the LoRA ones)")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--reference-seq-lens", action="store_true",
                   help="also time the reference in the sequence-length scaling (adds ~5 min)")
    p.add_argument("--ref-attn", default="eager", help="HF attn_implementation of the reference (default eager)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default=ref.default_data_file())
    p.add_argument("--out-dir", default=None, help="default benchmarks/results (--quick: benchmarks/results/smoke)")
    p.add_argument("--from-json", default=None, help="re-render perf.md and the PNG from a saved JSON, no measuring")
    p.add_argument("--steps-only", action="store_true",
                   help="only sections 6-9 (full-weight step variants, RTE vs SST-2, dtypes): perf_steps.md")
    p.add_argument("--no-steps", action="store_true", help="skip sections 6-9")
    p.add_argument("--memory-only", action="store_true",
                   help="only the peak-memory measurements (section 3; with --memory-kinds, some of them)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], help="dtypes of sections 6-9")
    # internal: one memory measurement
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-total-tokens", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--steps-worker", default=None, help=argparse.SUPPRESS)  # a dtype: one perf_steps worker
    p.add_argument("--steps-batch-size", type=int, default=16, help=argparse.SUPPRESS)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.memory_worker:
        return memory_worker(args)
    if args.steps_worker:
        return perf_steps.worker(args.steps_worker, args.model_path, args.threads, args.steps_batch_size, args.seed)
    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
        out_dir = args.out_dir or os.path.dirname(os.path.abspath(args.from_json))
        for p in write_outputs(data, out_dir)[1:]:
            print(p)
        return 0
    if args.quick:
        args.repeats, args.batch_sizes, args.seq_lens = 1, [8, 16], [32]
    out_dir = args.out_dir or os.path.join(HERE, "results", "smoke" if args.quick else "")
    out_dir = os.path.normpath(out_dir)

    t_wall = time.perf_counter()
    torch.set_num_threads(args.threads)
    now = datetime.datetime.now()
    meta = {
        "command": command_line(), "date": now.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick,
        "repeats": args.repeats, "batch_sizes": args.batch_sizes, "seq_lens": args.seq_lens, "seed": args.seed,
        "threads": args.threads, "ref_attn": args.ref_attn, "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "json_name": f"perf{'_steps' if args.steps_only else '_memory' if args.memory_only else ''}_{now.strftime('%Y%m%d-%H%M%S')}"
                     f"{'_quick' if args.quick else ''}.json",
    }
    log(f"command: {meta['command']}")
    load1 = os.getloadavg()[0]
    if load1 > 0.5:
        log(f"WARNING: load average {load1:.2f} at start: other work is running, timings will not be clean "
            f"(with {args.threads} threads on a shared CPU, OpenMP barriers stall whenever a thread is preempted)")

    # Local: see the note above the imports.
    from transformers import AutoTokenizer  # noqa: PLC0415

    from sglang.srt.mezo.engine.models import resolve_model_path  # noqa: PLC0415

    model_path = resolve_model_path(args.model)
    meta["model_path"] = model_path
    meta["machine"] = machine_info()
    tok = AutoTokenizer.from_pretrained(model_path)
    ref.check_label_ids(tok)
    rows = ref.load_sst2(args.data)
    sizes = sorted(set(args.batch_sizes) | {args.memory_batch_size})
    nat_all = ref.natural_batches(tok, rows, sizes, args.seed)
    nat = {B: nat_all[B] for B in sorted(args.batch_sizes)}
    fixed = ref.fixed_length_batches(tok, rows, 16, sorted(args.seq_lens), args.seed)

    timing = None
    if not args.steps_only and not args.memory_only:
        scratch = tempfile.mkdtemp(prefix="perf-mezo-")
        try:
            timing = run_timings(args, tok, model_path, nat, fixed, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    memory = None
    if not args.no_memory and not args.steps_only:
        mbatch = nat_all[args.memory_batch_size]
        kinds = args.memory_kinds or (MEMORY_KINDS_QUICK if args.quick else MEMORY_KINDS)
        mtokens = kv_tokens_needed([mbatch])
        log(f"memory: {len(kinds)} subprocesses, batch {len(mbatch)}, max_total_tokens {mtokens}")
        t0 = time.perf_counter()
        memory = {"batch_size": len(mbatch), "max_total_tokens": mtokens, "iterations": args.mem_iters,
                  "results": run_memory(args, model_path, mbatch, kinds, mtokens),
                  "seconds": time.perf_counter() - t0}

    steps = None
    if not args.no_steps and not args.memory_only:
        steps = perf_steps.run(os.path.abspath(__file__), model_path, args.dtypes, args.threads,
                               args.repeats, seed=args.seed, log=log)
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta["wall_seconds"] = time.perf_counter() - t_wall
    meta["threads"] = args.threads
    meta["_fresh"] = True
    data = {"meta": meta, "timing": timing, "memory": memory, "steps": steps}
    if args.quick:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, ".gitignore"), "w") as f:
            f.write("# smoke-test output of perf_mezo.py --quick: not results\n*\n")
    paths = write_outputs(data, out_dir)
    print(render_markdown(data))
    log(f"wrote {', '.join(paths)}; wall time {meta['wall_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
