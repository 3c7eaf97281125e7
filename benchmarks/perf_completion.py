"""Speed and memory of a MeZO step with the completion objective, against the step a careful user
writes with HF transformers + PEFT, on the same chat batch.

Model: SmolLM2-135M-Instruct (``smollm2-135m``), 2 torch threads. Data: SQuAD train rows (a
seeded sample of ``../shared/data/squad/train.jsonl``, read in place) as chat rows, the user
giving the context and the question, the assistant answering with the first reference answer,
rendered with the model's chat template (``data/chat.py`` ``encode_chat``): the targets are the
answer's tokens and ``<|im_end|>``. The batch of size B is the first B rows of one sample.

Both sides: LoRA at the library's defaults for causal LMs (rank 2, alpha 16, q_proj/v_proj, the
same initial adapter), lr 1e-3, eps 1e-2, the normalized update rule, Gaussian z; the loss is
the token mean of the cross-entropy over every target token of the batch (a PEFT model's loss
with ``-100`` labels).

- ours: ``MeZOTrainer(model_path, MeZOConfig(objective="completion", ...),
  objective=CompletionObjective(tokenizer)).step(batch)``: the +eps and -eps passes as one packed
  forward over two adapter slots, vocabulary logits only at the positions before target tokens;
- HF+PEFT (:class:`PeftMeZO`): ``attn_implementation="sdpa"``, the batch right-padded with an
  attention mask (padded once, outside the timing), under ``torch.no_grad``: one forward per side
  (+eps, -eps) of the PEFT model's body, then ``lm_head`` only on the hidden states at the target
  positions; z added in place from a ``torch.Generator`` seeded per tensor, +eps, -2 eps, and the
  restore fused with the update (+eps - lr * coefficient), regenerated each time, never stored.

The two draw the same z for a seed (the per-tensor seed derivation is the library's), so a check
first compares both sides' (L+, L-) at one seed at the starting weights: they must agree within
1e-4 in float32.

Timing: one worker process per dtype (float32; bf16 too where the CPU computes it natively,
``engine.hardware.choose_dtype``), every (batch size, case) round-robin within a round, the start
rotated between rounds; medians over the timed rounds after the warm-up rounds; ratios are
medians of per-round ratios. Cases: our step, the HF+PEFT step, and for reference one SGLang
inference forward and one HF forward of the batch.

Memory: one fresh process per measurement (each timed dtype unless ``--memory-dtypes``): an SGLang inference
forward of the batch (``trainer.compute_loss``) against our step, on identically configured
runners (KV pool sized for that batch's paired forward), and the HF+PEFT step for context (a process
without SGLang's runner, a fresh adapter of the same shape); RSS
high-water mark (VmHWM, reset after the model is loaded and resident), as ``perf_mezo.py``.

    .venv/bin/python benchmarks/perf_completion.py       # the real run (alone on the machine)
    .venv/bin/python benchmarks/perf_completion.py --repeats 1 --warmup 1 --batch-sizes 2 --out-dir /tmp/x  # smoke

Writes ``perf_completion.md`` and ``perf_completion_<date>.json`` (every round) into
``benchmarks/results`` (or ``--out-dir``).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

# Torch and the reference code only at the top: SGLang, sglang.srt.mezo and HF are imported in the
# functions that need them, so that a memory worker process holds what its kind measures and
# nothing more (memory_worker).
import perf_reference as ref  # noqa: E402  (memory probes)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from harness import command_line, logger, machine_info  # noqa: E402

PREFIX_TIMING = "PERF_COMPLETION_TIMING "
PREFIX_MEMORY = "PERF_COMPLETION_MEMORY "
CASES = ["sgl_step", "hf_step", "sgl_forward", "hf_forward"]
LABELS = {
    "sgl_step": "our MeZO step (SGLang, paired +/-eps)",
    "hf_step": "HF+PEFT MeZO step (sdpa, padded, two forwards)",
    "sgl_forward": "SGLang inference forward",
    "hf_forward": "HF+PEFT forward",
}
MEMORY_KINDS = ["sgl_inference", "sgl_step", "hf_step"]
MEMORY_LABELS = {
    "sgl_inference": "SGLang inference forward of the batch",
    "sgl_step": "our MeZO step",
    "hf_step": "HF+PEFT MeZO step",
}
CHECK_TOL = 1e-4
CHECK_SEED = 1234


log = logger("perf_completion")


# =========================================================================== data

def default_data_file() -> str:
    root = os.environ.get("SGLANG_MEZO_DATA_DIR") or os.path.join(os.path.dirname(REPO), "shared", "data")
    return os.path.join(root, "squad", "train.jsonl")


def chat_rows(path: str, n: int, seed: int):
    """``n`` SQuAD train rows, a seeded sample in sample order, as chat rows: the user message is
    the context, a blank line and ``Question: <question>``; the assistant's is the first answer."""
    # Local: see the note above the imports.
    from sglang.srt.mezo.data.chat import ChatExample, Message  # noqa: PLC0415

    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if n > len(rows):
        raise ValueError(f"{path} has {len(rows)} rows, fewer than the {n} asked for")
    out = []
    for i in random.Random(seed).sample(range(len(rows)), n):
        r = rows[i]
        user = f"{r['context'].strip()}\n\nQuestion: {r['question'].strip()}"
        out.append(ChatExample((Message("user", user), Message("assistant", r["answers"][0].strip())),
                               where=f"{path}, row id {r['id']}"))
    return out


def chat_batches(tokenizer, path: str, sizes: Sequence[int], seed: int, sample_size: Optional[int] = None) -> dict:
    """{B: the first B encoded rows of one sample of ``sample_size`` (default max(sizes)) rows}:
    smaller batches are prefixes of larger ones (a sample's size changes which rows it draws)."""
    # Local: see the note above the imports.
    from sglang.srt.mezo.data.chat import encode_chat  # noqa: PLC0415

    sample = [encode_chat(tokenizer, e) for e in chat_rows(path, sample_size or max(sizes), seed)]
    return {b: sample[:b] for b in sizes}


def batch_info(batch) -> dict:
    lens = [len(e.input_ids) for e in batch]
    return {"examples": len(batch), "real_tokens": sum(lens), "max_len": max(lens),
            "padded_tokens": len(batch) * max(lens), "target_tokens": sum(sum(e.targets) for e in batch)}


def kv_tokens_needed(batch) -> int:
    """max_total_tokens for a runner whose paired forward (2B sequences) of ``batch`` fits one
    extend (ExtendForward allows max_total_tokens // 2 tokens a forward), rounded up to 256."""
    need = 2 * 2 * sum(len(e.input_ids) for e in batch)
    return -(-need // 256) * 256


# =========================================================================== the HF+PEFT side

@dataclass
class PaddedCompletions:
    input_ids: torch.Tensor  # [B, T], right-padded
    attention_mask: torch.Tensor
    rows: torch.Tensor  # [N] batch index of each target token's predicting position
    cols: torch.Tensor  # [N] its position (the target token's index - 1)
    targets: torch.Tensor  # [N] the target token ids


def pad_completions(batch, pad_id: int) -> PaddedCompletions:
    T = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), T), dtype=torch.long)
    rows, cols, targets = [], [], []
    for b, e in enumerate(batch):
        ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[b, : len(e.input_ids)] = 1
        for i, is_target in enumerate(e.targets):
            if is_target:
                rows.append(b)
                cols.append(i - 1)
                targets.append(e.input_ids[i])
    return PaddedCompletions(ids, mask, torch.tensor(rows), torch.tensor(cols), torch.tensor(targets))


def tensor_seed(step_seed: int, index: int) -> int:
    """The library's per-tensor seed (``zo.noise.tensor_seed``), so both sides draw the same z."""
    return (step_seed * 1_000_003 + index * 7_919) % (2**63 - 1)


def load_peft_model(model_path: str, adapter_dir: str, dtype: torch.dtype):
    """HF model with sdpa attention and the trainer's initial adapter (PEFT format), adapter in the
    model's dtype as SGLang's pool holds it (not PEFT's fp32 upcast)."""
    # Local: see the note above the imports.
    from peft import PeftModel  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation="sdpa")
    model = PeftModel.from_pretrained(model, adapter_dir, autocast_adapter_dtype=False)
    model.eval()
    return model


def peft_param_name(name: str) -> str:
    """A PEFT adapter-file tensor name -> the live parameter's name (adapter "default")."""
    head, _, last = name.rpartition(".")
    return f"{head}.default.{last}"


class PeftMeZO:
    """The MeZO-LoRA step as a careful user writes it with HF + PEFT (see the module docstring).
    ``names``: the PEFT model's trained parameters, in the order that fixes each one's seed."""

    BETA = 0.99  # the normalized rule's running mean of g^2 (the library's UpdateRule.BETA)

    def __init__(self, model, names: Sequence[str], *, lr: float, eps: float, seed: int):
        self.model = model
        self.base = model.get_base_model()
        params = dict(model.named_parameters())
        self.params = [params[n] for n in names]
        self.lr, self.eps = lr, eps
        self.gen = torch.Generator()
        self.bufs = [torch.empty(p.shape, dtype=torch.float32) for p in self.params]  # z, reused
        self.seed_rng = random.Random(seed)
        self.v, self.t = 0.0, 0

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.params)

    @torch.no_grad()
    def add_z(self, seed: int, alpha: float) -> None:
        """theta += alpha * z_seed, in place, z regenerated tensor by tensor."""
        for i, (p, z) in enumerate(zip(self.params, self.bufs)):
            self.gen.manual_seed(tensor_seed(seed, i))
            z.normal_(generator=self.gen)
            p.add_(z if p.dtype == torch.float32 else z.to(p.dtype), alpha=alpha)

    @torch.no_grad()
    def loss(self, batch: PaddedCompletions) -> float:
        hidden = self.base.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        logits = self.base.lm_head(hidden[batch.rows, batch.cols])
        return F.cross_entropy(logits.float(), batch.targets).item()

    @torch.no_grad()
    def losses(self, batch: PaddedCompletions, seed: int) -> tuple[float, float]:
        """(L+, L-) at seed ``seed``; theta restored by regenerating z (+eps, -2 eps, +eps)."""
        self.add_z(seed, self.eps)
        lp = self.loss(batch)
        self.add_z(seed, -2 * self.eps)
        lm = self.loss(batch)
        self.add_z(seed, self.eps)
        return lp, lm

    def _coefficient(self, g: float) -> float:
        self.v, self.t = self.BETA * self.v + (1 - self.BETA) * g * g, self.t + 1
        rms = math.sqrt(self.v / (1 - self.BETA ** self.t))
        return g / rms if rms > 0 else 0.0

    @torch.no_grad()
    def step(self, batch: PaddedCompletions) -> float:
        seed = self.seed_rng.randrange(2**62)
        self.add_z(seed, self.eps)
        lp = self.loss(batch)
        self.add_z(seed, -2 * self.eps)
        lm = self.loss(batch)
        g = (lp - lm) / (2 * self.eps)
        self.add_z(seed, self.eps - self.lr * self._coefficient(g))  # restore and update in one pass
        return (lp + lm) / 2


# =========================================================================== workers

def _make_trainer(model_path: str, tokenizer, dtype: str, max_total_tokens: int, seed: int):
    # Local: see the note above the imports.
    from sglang.srt.mezo.run_spec.config import MeZOConfig  # noqa: PLC0415
    from sglang.srt.mezo.training.objectives.completion import CompletionObjective  # noqa: PLC0415
    from sglang.srt.mezo.training.trainer import MeZOTrainer  # noqa: PLC0415

    config = MeZOConfig(objective="completion", dtype=dtype, seed=seed, max_total_tokens=max_total_tokens,
                        progress_bar=False)
    trainer = MeZOTrainer(model_path, config, tokenizer=tokenizer, objective=CompletionObjective(tokenizer))
    c = trainer.config
    assert trainer.trainable.paired, "the trainer did not get its paired forward"
    assert (c.trainable, c.lora_rank, tuple(c.lora_target_modules)) == ("lora", 2, ("q_proj", "v_proj")), c
    return trainer


def _make_peft(trainer, model_path: str, dtype: str, seed: int) -> PeftMeZO:
    model = load_peft_model(model_path, trainer.trainable.lora.ref.lora_path, getattr(torch, dtype))
    c = trainer.config
    return PeftMeZO(model, [peft_param_name(n) for n in trainer.trainable.names], lr=c.learning_rate,
                    eps=c.epsilon, seed=seed)


def _config_record(trainer, hf: PeftMeZO) -> dict:
    c = trainer.config
    return {"dtype": c.dtype, "trainable": c.trainable, "lora_rank": c.lora_rank, "lora_alpha": c.lora_alpha,
            "lora_target_modules": list(c.lora_target_modules), "learning_rate": c.learning_rate,
            "epsilon": c.epsilon, "update_rule": c.update_rule, "noise": c.noise, "paired": trainer.trainable.paired,
            "trainable_parameters": trainer.trainable.num_parameters, "hf_trainable_parameters": hf.num_parameters,
            "hf_adapter_dtype": str(hf.params[0].dtype), "attention_backend": trainer.runner.server_args.attention_backend,
            "lora_backend": trainer.runner.server_args.lora_backend}


def _check_seed_derivation() -> None:
    # Local: see the note above the imports.
    from sglang.srt.mezo.zo.noise import tensor_seed as library_tensor_seed  # noqa: PLC0415

    assert all(tensor_seed(s, i) == library_tensor_seed(s, i) for s in (0, 7, 2**61 + 3) for i in (0, 5, 119))


def timing_worker(args) -> int:
    dtype = args.timing_worker
    torch.set_num_threads(args.threads)
    sizes = sorted(args.batch_sizes)
    # Local: see the note above the imports.
    from transformers import AutoTokenizer  # noqa: PLC0415

    _check_seed_derivation()
    tok = AutoTokenizer.from_pretrained(args.model_path)
    batches = chat_batches(tok, args.data, sizes, args.seed)
    max_tokens = kv_tokens_needed(batches[max(sizes)])
    log(f"{dtype}: building the trainer (max_total_tokens {max_tokens}) and the HF+PEFT model")
    trainer = _make_trainer(args.model_path, tok, dtype, max_tokens, args.seed)
    hf = _make_peft(trainer, args.model_path, dtype, args.seed)
    torch.set_num_threads(args.threads)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    padded = {b: pad_completions(batch, pad_id) for b, batch in batches.items()}

    # The check, at the starting weights: the same loss, and the same (L+, L-) at one seed.
    cb = batches[sizes[0]]
    check = {"batch_size": len(cb), "seed": CHECK_SEED, "tolerance": CHECK_TOL,
             "sglang_loss": trainer.compute_loss(cb), "hf_loss": hf.loss(padded[sizes[0]])}
    check["sglang_plus"], check["sglang_minus"] = trainer.perturbed_losses(cb, CHECK_SEED)
    check["hf_plus"], check["hf_minus"] = hf.losses(padded[sizes[0]], CHECK_SEED)
    check["max_abs_diff"] = max(abs(check["sglang_plus"] - check["hf_plus"]),
                                abs(check["sglang_minus"] - check["hf_minus"]))
    check["loss_abs_diff"] = abs(check["sglang_loss"] - check["hf_loss"])
    check["passed"] = check["max_abs_diff"] <= CHECK_TOL
    log(f"{dtype}: check at seed {CHECK_SEED}, batch {len(cb)}: ours (L+, L-) = ({check['sglang_plus']:.6f}, "
        f"{check['sglang_minus']:.6f}), HF+PEFT ({check['hf_plus']:.6f}, {check['hf_minus']:.6f}), max |diff| "
        f"{check['max_abs_diff']:.2e} ({'ok' if check['passed'] else 'ABOVE ' + str(CHECK_TOL)})")

    fns = {}
    for b in sizes:
        batch, p = batches[b], padded[b]
        fns[(b, "sgl_step")] = lambda batch=batch: trainer.step(batch)
        fns[(b, "hf_step")] = lambda p=p: hf.step(p)
        fns[(b, "sgl_forward")] = lambda batch=batch: trainer.compute_loss(batch)
        fns[(b, "hf_forward")] = lambda p=p: hf.loss(p)
    keys = list(fns)
    times = {k: [] for k in keys}
    warm = {k: [] for k in keys}
    rounds = args.warmup + args.repeats
    for r in range(rounds):
        t_round = time.perf_counter()
        k0 = r % len(keys)
        for key in keys[k0:] + keys[:k0]:
            gc.collect()
            t0 = time.perf_counter()
            fns[key]()
            dt = time.perf_counter() - t0
            (warm if r < args.warmup else times)[key].append(dt)
        log(f"{dtype}: round {r + 1}/{rounds} ({'warm-up' if r < args.warmup else 'timed'}) "
            f"{time.perf_counter() - t_round:.1f} s")
    out = {"dtype": dtype, "max_total_tokens": max_tokens, "config": _config_record(trainer, hf), "check": check,
           "batches": {str(b): batch_info(batches[b]) for b in sizes},
           "cases": [{"batch_size": b, "case": c, "warmup_s": warm[(b, c)], "times_s": times[(b, c)]}
                     for b, c in keys],
           "threads": torch.get_num_threads()}
    print(PREFIX_TIMING + json.dumps(out), flush=True)
    return 0


def memory_worker(args) -> int:
    kind, dtype, b = args.memory_worker, args.dtype, args.batch_size
    torch.set_num_threads(args.threads)
    # What this process holds is what is measured: each kind imports its libraries here.
    import peft  # noqa: F401, PLC0415  (both kinds of process hold the same libraries)
    import sglang.srt.mezo_trainer  # noqa: F401, PLC0415
    from transformers import AutoTokenizer  # noqa: PLC0415

    from sglang.srt.mezo.run_spec.config import MeZOConfig  # noqa: PLC0415

    gc.collect()
    rss_import = ref.rss_mb()
    tok = AutoTokenizer.from_pretrained(args.model_path)
    batch = chat_batches(tok, args.data, [b], args.seed, sample_size=max(args.batch_sizes))[b]
    if kind == "hf_step":
        # No SGLang runner in this process: a fresh PEFT adapter of the same shape (the library's
        # defaults for a causal LM), its trainable parameters in PEFT's order.
        from peft import LoraConfig, get_peft_model  # noqa: PLC0415
        from transformers import AutoModelForCausalLM  # noqa: PLC0415

        c = MeZOConfig(objective="completion").resolve("causal")
        model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=getattr(torch, dtype),
                                                     attn_implementation="sdpa")
        model = get_peft_model(model, LoraConfig(r=c.lora_rank, lora_alpha=c.lora_alpha, lora_dropout=0.0,
                                                 target_modules=list(c.lora_target_modules), bias="none",
                                                 task_type="CAUSAL_LM"), autocast_adapter_dtype=False)
        model.eval()
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        hf = PeftMeZO(model, names, lr=c.learning_rate, eps=c.epsilon, seed=args.seed)
        torch.set_num_threads(args.threads)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        p = pad_completions(batch, pad_id)
        op, resident = (lambda: hf.step(p)), model
    else:
        trainer = _make_trainer(args.model_path, tok, dtype, args.max_total_tokens, args.seed)
        torch.set_num_threads(args.threads)
        op = (lambda: trainer.compute_loss(batch)) if kind == "sgl_inference" else (lambda: trainer.step(batch))
        resident = trainer.runner.model
    gc.collect()
    ref.make_resident(resident)
    rss_load = ref.rss_mb()
    reset_ok = ref.reset_peak_rss()
    secs = []
    for _ in range(args.mem_iters):
        t0 = time.perf_counter()
        op()
        secs.append(time.perf_counter() - t0)
    peak = ref.peak_rss_mb() if reset_ok else ref.ru_maxrss_mb()
    print(PREFIX_MEMORY + json.dumps({
        "kind": kind, "dtype": dtype, "batch_size": b, "max_total_tokens": args.max_total_tokens,
        "rss_after_import_mb": rss_import, "rss_after_load_mb": rss_load, "peak_rss_mb": peak,
        "peak_is_since_load": reset_ok, "iterations": args.mem_iters, "op_seconds": secs}), flush=True)
    return 0


def _worker_args(args) -> list[str]:
    return ["--model-path", args.model_path, "--data", args.data, "--seed", str(args.seed),
            "--threads", str(args.threads)]


def _run_worker(cmd: list[str], prefix: str) -> dict:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)  # stderr: the worker's log, live
    line = next((x for x in proc.stdout.splitlines() if x.startswith(prefix)), None)
    if proc.returncode != 0 or line is None:
        return {"error": f"exit {proc.returncode}; stdout tail: {proc.stdout[-1500:]}"}
    return json.loads(line[len(prefix):])


# =========================================================================== report

def _med(xs):
    return statistics.median(xs) if xs else float("nan")


def _times(t: dict, b: int, case: str) -> list:
    return next((c["times_s"] for c in t.get("cases", []) if c["batch_size"] == b and c["case"] == case), [])


def _ratio(t: dict, b: int, num: str, den: str, factor: float = 1.0) -> Optional[tuple]:
    a, d = _times(t, b, num), _times(t, b, den)
    if not a or not d:
        return None
    rs = [x / (factor * y) for x, y in zip(a, d)]
    return _med(rs), min(rs), max(rs)


def _r(r: Optional[tuple], target: Optional[float] = None) -> str:
    if r is None:
        return "—"
    text = f"{r[0]:.2f}"
    if target is not None:
        text = f"**{text}**" if r[0] <= target else text
    return text + (f" ({r[1]:.2f}–{r[2]:.2f})" if r[2] - r[1] >= 0.005 else "")


def render(data: dict) -> str:
    meta, m = data["meta"], data["meta"]["machine"]
    L = [f"# MeZO completion step: sglang-mezo vs HF+PEFT{' (SMOKE RUN, not results)' if meta['smoke'] else ''}",
         "", "```", meta["command"], "```", "",
         f"- date: {meta['date']}; wall time {meta['wall_seconds'] / 60:.1f} min; git {m['git_commit']}"
         f"{' (+ uncommitted changes)' if m['git_dirty'] else ''}",
         f"- machine: {m['cpu_model']}, nproc {m['nproc']} (affinity {m['affinity_cpus']}), {m['mem_total_gb']} GB RAM; "
         f"load average at start {meta['loadavg_start']}, at end {meta['loadavg_end']}",
         f"- software: Python {m['python']}, torch {m['torch']}, sglang {m['sglang']}, transformers "
         f"{m['transformers']}, peft {m['peft']}; {meta['threads']} torch threads",
         f"- model: SmolLM2-135M-Instruct (`{meta['model_path']}`); dtypes {', '.join(meta['dtypes'])} "
         f"({meta['dtype_reason']})",
         f"- data: {meta['sample_size']} SQuAD train rows (seed {meta['seed']}, `{meta['data']}`) as chat rows (user: "
         "context + question; assistant: the first answer), the model's chat template; targets = the answer's tokens "
         "and `<|im_end|>`; batch B = the first B rows",
         "- both steps: LoRA rank 2, alpha 16, q_proj+v_proj, the same initial adapter; lr 1e-3, eps 1e-2, normalized "
         "update, Gaussian z (same per-tensor seeds); loss = mean CE over the batch's target tokens. Ours: "
         "`MeZOTrainer(..., objective=CompletionObjective(tok)).step(batch)` (paired +/-eps forward, packed, logits only "
         "before target tokens). HF+PEFT: sdpa, right-padded batch (padded outside the timing), `torch.no_grad`, one "
         "forward per side, `lm_head` only at the target positions, in-place z from a seeded `torch.Generator`, "
         "restore fused with the update",
         f"- timing: median of {meta['repeats']} rounds after {meta['warmup']} warm-up rounds, one process per dtype, "
         "every (B, case) round-robin within a round (start rotated); ratios are medians of per-round ratios "
         "(min–max); **bold** = meets the target",
         ""]
    for t in data["timing"]:
        dtype = t.get("dtype", "?")
        if "error" in t:
            L += [f"## {dtype}: timing worker failed", "", "```", t["error"], "```", ""]
            continue
        c = t["check"]
        L += [f"## {dtype}", "",
              f"Check at the starting weights, batch {c['batch_size']}, seed {c['seed']}: ours (L+, L-) = "
              f"({c['sglang_plus']:.6f}, {c['sglang_minus']:.6f}), HF+PEFT ({c['hf_plus']:.6f}, {c['hf_minus']:.6f}); "
              f"max |diff| {c['max_abs_diff']:.2e} "
              + (f"(tolerance {c['tolerance']:g}: {'**passed**' if c['passed'] else 'FAILED'})" if dtype == "float32"
                 else "(the 1e-4 check applies to float32; bf16 rounds differently on each side)")
              + f"; loss at theta {c['sglang_loss']:.6f} vs {c['hf_loss']:.6f}.", "",
              f"Trainable parameters: {t['config']['trainable_parameters']:,} (HF+PEFT "
              f"{t['config']['hf_trainable_parameters']:,}, adapter dtype {t['config']['hf_adapter_dtype']}); "
              f"SGLang attention `{t['config']['attention_backend']}`, LoRA backend `{t['config']['lora_backend']}`, "
              f"max_total_tokens {t['max_total_tokens']}.", "",
              "| B | tokens real / padded / targets | our step (s) | HF+PEFT step (s) | ours / HF (target <= 0.5) | "
              "SGLang fwd (s) | HF fwd (s) | our step / 2 SGLang fwd | HF step / 2 HF fwd |",
              "|---|---|---|---|---|---|---|---|---|"]
        for bs, bi in t["batches"].items():
            b = int(bs)
            L.append(f"| {b} | {bi['real_tokens']} / {bi['padded_tokens']} / {bi['target_tokens']} | "
                     f"{_med(_times(t, b, 'sgl_step')):.3f} | {_med(_times(t, b, 'hf_step')):.3f} | "
                     f"{_r(_ratio(t, b, 'sgl_step', 'hf_step'), 0.5)} | {_med(_times(t, b, 'sgl_forward')):.3f} | "
                     f"{_med(_times(t, b, 'hf_forward')):.3f} | {_r(_ratio(t, b, 'sgl_step', 'sgl_forward', 2))} | "
                     f"{_r(_ratio(t, b, 'hf_step', 'hf_forward', 2))} |")
        L.append("")
    mem = data.get("memory") or []
    if mem:
        L += ["## Peak memory", "",
              f"RSS in MB, one fresh process per measurement ({meta['mem_iters']} operations each, the first included); "
              "\"after load\": model, runner (its KV pool, sized for the batch's paired forward and the same for the "
              "inference and step runs, is allocated at load) or HF+PEFT model resident; peak = VmHWM, reset after load. "
              "Factor = our step's peak / the inference forward's peak (target <= 1.05).", "",
              "| dtype | B | SGLang inference: load / peak | our step: load / peak | step / inference (peak) | "
              "(peak − load) ours / inference | HF+PEFT step: load / peak |",
              "|---|---|---|---|---|---|---|"]
        by = {(r.get("dtype"), r.get("batch_size"), r.get("kind")): r for r in mem}
        for dtype, b in dict.fromkeys((r.get("dtype"), r.get("batch_size")) for r in mem):
            def cell(kind):
                r = by.get((dtype, b, kind))
                if r is None:
                    return "—"
                return "failed" if "error" in r else f"{r['rss_after_load_mb']:.0f} / {r['peak_rss_mb']:.0f}"
            inf, st = by.get((dtype, b, "sgl_inference")), by.get((dtype, b, "sgl_step"))
            fac = net = "—"
            if inf and st and "error" not in inf and "error" not in st:
                f = st["peak_rss_mb"] / inf["peak_rss_mb"]
                fac = f"**{f:.3f}**" if f <= 1.05 else f"{f:.3f}"
                di, ds = inf["peak_rss_mb"] - inf["rss_after_load_mb"], st["peak_rss_mb"] - st["rss_after_load_mb"]
                net = f"{ds:.0f} / {di:.0f} MB"
            L.append(f"| {dtype} | {b} | {cell('sgl_inference')} | {cell('sgl_step')} | {fac} | {net} | {cell('hf_step')} |")
        L.append("")
    L += [f"Raw data (every round): `{meta['json_name']}`.", ""]
    return "\n".join(L)


# =========================================================================== main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="MeZO completion step: sglang-mezo vs HF+PEFT (see the module docstring)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up rounds (default 2)")
    p.add_argument("--dtypes", nargs="+", default=None,
                   help="default: float32, and bfloat16 too where the CPU computes it natively")
    p.add_argument("--memory-dtypes", nargs="+", default=None, help="dtypes of the memory runs (default: the timed dtypes)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--mem-iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="the data sample's, LoRA init's and step seeds' seed")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default=default_data_file())
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    # internal: the workers
    p.add_argument("--timing-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--memory-worker", default=None, choices=MEMORY_KINDS, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-total-tokens", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-path", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.timing_worker:
        return timing_worker(args)
    if args.memory_worker:
        return memory_worker(args)

    t_wall = time.perf_counter()
    # Local: see the note above the imports.
    from transformers import AutoTokenizer  # noqa: PLC0415

    from sglang.srt.mezo.engine.hardware import choose_dtype  # noqa: PLC0415
    from sglang.srt.mezo.engine.models import resolve_model_path  # noqa: PLC0415

    args.model_path = resolve_model_path(args.model)
    choice = choose_dtype("auto", "cpu")
    dtypes = args.dtypes or (["float32"] + (["bfloat16"] if choice.dtype == "bfloat16" else []))
    sizes = sorted(args.batch_sizes)
    now = datetime.datetime.now()
    smoke = args.repeats < 3
    meta = {"command": command_line(), "date": now.strftime("%Y-%m-%d %H:%M:%S"), "smoke": smoke,
            "batch_sizes": sizes, "repeats": args.repeats, "warmup": args.warmup, "dtypes": dtypes,
            "dtype_reason": f"auto here: {choice.reason}", "threads": args.threads, "seed": args.seed,
            "sample_size": max(sizes), "data": os.path.relpath(args.data, REPO), "model_path": args.model_path,
            "mem_iters": args.mem_iters, "machine": machine_info(),
            "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "json_name": f"perf_completion_{now.strftime('%Y%m%d-%H%M%S')}{'_smoke' if smoke else ''}.json"}
    log(f"command: {meta['command']}; machine: {meta['machine']['cpu_model']}; dtypes {dtypes}")
    if os.getloadavg()[0] > 0.5:
        log(f"WARNING: load average {os.getloadavg()[0]:.2f} at start: other work is running, timings will not be clean")

    script = os.path.abspath(__file__)
    timing = []
    for dtype in dtypes:
        cmd = [sys.executable, script, "--timing-worker", dtype, "--batch-sizes", *map(str, sizes),
               "--repeats", str(args.repeats), "--warmup", str(args.warmup), *_worker_args(args)]
        result = _run_worker(cmd, PREFIX_TIMING)
        result.setdefault("dtype", dtype)
        timing.append(result)

    memory = []
    if not args.no_memory:
        tok = AutoTokenizer.from_pretrained(args.model_path)
        batches = chat_batches(tok, args.data, sizes, args.seed)
        for dtype in args.memory_dtypes or dtypes:
            for b in sizes:
                mtokens = kv_tokens_needed(batches[b])
                for kind in MEMORY_KINDS:
                    cmd = [sys.executable, script, "--memory-worker", kind, "--dtype", dtype, "--batch-size", str(b),
                           "--batch-sizes", str(max(sizes)), "--max-total-tokens", str(mtokens),
                           "--mem-iters", str(args.mem_iters), *_worker_args(args)]
                    t0 = time.perf_counter()
                    r = _run_worker(cmd, PREFIX_MEMORY)
                    r.update(kind=kind, dtype=dtype, batch_size=b)
                    memory.append(r)
                    log(f"memory {dtype} B={b} {kind}: " + (f"peak {r['peak_rss_mb']:.0f} MB, after load "
                        f"{r['rss_after_load_mb']:.0f} MB" if "error" not in r else "FAILED")
                        + f" ({time.perf_counter() - t0:.0f} s)")

    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta["wall_seconds"] = time.perf_counter() - t_wall
    data = {"meta": meta, "timing": timing, "memory": memory}
    os.makedirs(args.out_dir, exist_ok=True)
    json_path = os.path.join(args.out_dir, meta["json_name"])
    with open(json_path, "w") as f:
        json.dump(data, f, indent=1)
    md_path = os.path.join(args.out_dir, "perf_completion.md")
    text = render(data)
    with open(md_path, "w") as f:
        f.write(text)
    print(text)
    log(f"wrote {json_path} and {md_path}; wall time {meta['wall_seconds'] / 60:.1f} min")
    failed = [t["dtype"] for t in timing if "error" in t or (t["dtype"] == "float32" and not t["check"]["passed"])]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
