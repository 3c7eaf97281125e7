"""The reference structure of MeZO, re-implemented for the performance benchmark.

This is *not* project code: it rebuilds, from the paper's description and the structure of its
public code (Malladi et al. 2023, ``princeton-nlp/MeZO`` ``large_models/trainer.py``), the way the
reference runs one MeZO step, so that ``perf_mezo.py`` can time both on the same model, batch and
trainable set:

- forward: Hugging Face transformers, eager (``attn_implementation="eager"`` by default), a padded
  batch with an attention mask, ``model(...).logits`` at every position and
  ``log_softmax(logits.float(), -1)`` over the full vocabulary at every position, under
  ``torch.inference_mode()`` in eval mode;
- objective: the label words' log-probabilities at the last real position, cross-entropy over
  them (the paper's "train as classification" prompt objective);
- perturbation: the global RNG, ``torch.manual_seed(seed)`` then ``torch.normal`` per parameter,
  applied as ``param.data = param.data + scaling * eps * z`` (a new tensor per parameter);
- step: +eps, loss, -2 eps, loss, +eps, then the update regenerates z from the same seed:
  ``param.data = param.data - lr * (g * z + wd * param.data)`` (no decay on bias/LayerNorm).

Trainable sets: ``"lora"`` = PEFT ``LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj",
"v_proj"])`` on the HF model (the parameters PEFT leaves trainable); ``"full"`` = every parameter.

It also holds the backprop (Adam) fine-tuning step that the memory comparison uses, the batch
builder shared with ``perf_mezo.py``, and the memory probes. Importing it never imports sglang.

Standalone use (times the reference step alone):
    python benchmarks/perf_reference.py --trainable lora --batch-size 16 --repeats 3
"""

# transformers and peft are imported where a reference step needs them: perf_mezo.py imports this
# module for its batch builder and memory probes, in processes whose memory it measures.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

#: The causal SST-2 prompt of the paper's OPT experiments: "<sentence> It was" -> " terrible"/" great".
PROMPT_SUFFIX = " It was"
LABEL_WORDS = (" terrible", " great")
#: SmolLM2's ids for the label words (checked against the tokenizer by :func:`check_label_ids`).
LABEL_IDS = (13321, 1109)

LORA_RANK = 8
LORA_ALPHA = 16
LORA_TARGETS = ("q_proj", "v_proj")


# --------------------------------------------------------------------------- data

def default_data_file() -> str:
    """SST-2 train TSV: ``$SGLANG_MEZO_DATA_DIR/sst2/train.tsv``, else ``<repo>/../shared/data/...``."""
    root = os.environ.get("SGLANG_MEZO_DATA_DIR") or os.path.join(os.path.dirname(REPO), "shared", "data")
    return os.path.join(root, "sst2", "train.tsv")


def default_model_path() -> str:
    """The converted SmolLM2-135M fp32 folder that ``sglang.srt.mezo.engine.models.resolve_model_path``
    caches (importing that module would import sglang, which this module never does)."""
    root = os.environ.get("SGLANG_MEZO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sglang-mezo", "models")
    return os.path.join(root, "smollm2-135m")


def load_sst2(path: str) -> list[tuple[str, int]]:
    """(sentence, label) rows of a GLUE-format SST-2 TSV (header ``sentence<TAB>label`` in any order)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row["sentence"].strip(), int(row["label"])) for row in reader]


def check_label_ids(tokenizer) -> None:
    for word, expected in zip(LABEL_WORDS, LABEL_IDS):
        ids = tokenizer.encode(word, add_special_tokens=False)
        if ids != [expected]:
            raise ValueError(f"label word {word!r} encodes to {ids}, expected [{expected}]: not SmolLM2's tokenizer?")


Example = tuple  # (token ids as a tuple, label index 0/1)


def natural_batches(tokenizer, rows: Sequence[tuple[str, int]], batch_sizes: Sequence[int], seed: int) -> dict[int, list]:
    """Real SST-2 sentences as prompts "<sentence> It was", a fixed seeded sample; the batch of
    size B is the first B of one sample (so smaller batches are prefixes of larger ones)."""
    idx = random.Random(seed).sample(range(len(rows)), max(batch_sizes))
    sample = []
    for i in idx:
        text, label = rows[i]
        sample.append((tuple(tokenizer.encode(text + PROMPT_SUFFIX)), label))
    return {b: sample[:b] for b in batch_sizes}


def fixed_length_batches(tokenizer, rows: Sequence[tuple[str, int]], batch_size: int, seq_lens: Sequence[int],
                         seed: int) -> dict[int, list]:
    """Prompts of exactly L tokens: consecutive sampled SST-2 sentences concatenated (then
    truncated) to L - len(" It was") tokens, then " It was"; the label is the first sentence's."""
    suffix = tokenizer.encode(PROMPT_SUFFIX, add_special_tokens=False)
    rng = random.Random(seed + 1)
    order = list(range(len(rows)))
    rng.shuffle(order)
    out = {}
    for L in seq_lens:
        if L <= len(suffix):
            raise ValueError(f"sequence length {L} is not longer than the prompt suffix ({len(suffix)} tokens)")
        pos = 0
        batch = []
        for _ in range(batch_size):
            label = rows[order[pos]][1]
            body: list[int] = []
            while len(body) < L - len(suffix):
                body += tokenizer.encode(rows[order[pos]][0] + " ", add_special_tokens=False)
                pos += 1
            batch.append((tuple(body[: L - len(suffix)] + suffix), label))
        out[L] = batch
    return out


@dataclass
class PaddedBatch:
    input_ids: torch.Tensor  # [B, T], right-padded
    attention_mask: torch.Tensor
    last: torch.Tensor  # [B] index of the last real token
    labels: torch.Tensor  # [B] label index into LABEL_IDS

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.numel())


def pad_batch(batch: Sequence[Example], pad_id: int) -> PaddedBatch:
    T = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), T), dtype=torch.long)
    for i, (ids, _) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    last = torch.tensor([len(ids) - 1 for ids, _ in batch])
    labels = torch.tensor([y for _, y in batch])
    return PaddedBatch(input_ids, mask, last, labels)


# --------------------------------------------------------------------------- models

def load_hf_model(path: str, attn: str = "eager") -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)
    model.eval()
    return model


def add_lora(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """PEFT LoRA r=8, alpha=16 on q_proj/v_proj (A kaiming-uniform, B = 0, PEFT's default)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, target_modules=list(LORA_TARGETS),
                        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    model.eval()
    return model


def trainable_parameters(model: torch.nn.Module, trainable: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The reference's ``named_parameters_to_optim``: LoRA = what PEFT left trainable; full = all."""
    named = list(model.named_parameters())
    if trainable == "lora":
        named = [(n, p) for n, p in named if p.requires_grad]
    elif trainable != "full":
        raise ValueError(f"trainable must be 'lora' or 'full', got {trainable!r}")
    return named


# --------------------------------------------------------------------------- objective

def label_logprobs(model: torch.nn.Module, batch: PaddedBatch) -> torch.Tensor:
    """The reference forward: full logits at every position, full-vocabulary log-softmax at every
    position, then the label words' log-probabilities at the last real position: [B, 2]."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logp = F.log_softmax(logits.float(), dim=-1)
    rows = logp[torch.arange(logp.shape[0]), batch.last]
    return rows[:, list(LABEL_IDS)]


def reference_loss(model: torch.nn.Module, batch: PaddedBatch) -> torch.Tensor:
    """Cross-entropy over the label words (a softmax restricted to them), mean over the batch."""
    return F.cross_entropy(label_logprobs(model, batch), batch.labels)


def lean_loss(model: torch.nn.Module, batch: PaddedBatch) -> torch.Tensor:
    """The same objective computed leanly (used only as a second backprop baseline): the body's
    hidden states, then the two label rows of the LM head at the last real position only."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    rows = hidden[torch.arange(hidden.shape[0]), batch.last]
    logits = rows @ base.lm_head.weight[list(LABEL_IDS)].T
    return F.cross_entropy(logits.float(), batch.labels)


# --------------------------------------------------------------------------- the reference MeZO step

def _decays(name: str) -> bool:
    # The reference's test, verbatim (with weight_decay 0 both branches cost the same anyway).
    return "bias" not in name and "layer_norm" not in name and "layernorm" not in name


class ReferenceMeZO:
    """One MeZO step the way the reference code structures it (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, trainable: str, *, lr: float, eps: float, weight_decay: float = 0.0,
                 seed: int = 0):
        self.model = model
        self.named = trainable_parameters(model, trainable)
        self.lr = lr
        self.eps = eps
        self.weight_decay = weight_decay
        self.rng = random.Random(seed)
        self.projected_grad = 0.0
        self.zo_random_seed = 0

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for _, p in self.named)

    def zo_perturb_parameters(self, scaling_factor: float = 1.0) -> None:
        torch.manual_seed(self.zo_random_seed)
        for _, param in self.named:
            z = torch.normal(mean=0, std=1, size=param.data.size(), device=param.data.device, dtype=param.data.dtype)
            param.data = param.data + scaling_factor * z * self.eps

    def zo_forward(self, batch: PaddedBatch) -> torch.Tensor:
        self.model.eval()
        with torch.inference_mode():
            loss = reference_loss(self.model, batch)
        return loss.detach()

    def zo_step(self, batch: PaddedBatch) -> torch.Tensor:
        self.zo_random_seed = self.rng.randrange(1_000_000_000)
        self.zo_perturb_parameters(scaling_factor=1)
        loss1 = self.zo_forward(batch)
        self.zo_perturb_parameters(scaling_factor=-2)
        loss2 = self.zo_forward(batch)
        self.projected_grad = ((loss1 - loss2) / (2 * self.eps)).item()
        self.zo_perturb_parameters(scaling_factor=1)
        return loss1

    def zo_update(self) -> None:
        torch.manual_seed(self.zo_random_seed)
        for name, param in self.named:
            z = torch.normal(mean=0, std=1, size=param.data.size(), device=param.data.device, dtype=param.data.dtype)
            if _decays(name):
                param.data = param.data - self.lr * (self.projected_grad * z + self.weight_decay * param.data)
            else:
                param.data = param.data - self.lr * (self.projected_grad * z)

    def step(self, batch: PaddedBatch) -> float:
        loss = self.zo_step(batch)
        self.zo_update()
        return float(loss)


# --------------------------------------------------------------------------- backprop baseline

class AdamFineTune:
    """Backprop fine-tuning with Adam (torch.optim.AdamW, wd 0) of the same trainable set;
    ``objective`` "reference" (full-vocabulary log-softmax at every position, the paper's) or
    "lean" (last-position label logits only)."""

    def __init__(self, model: torch.nn.Module, trainable: str, *, lr: float = 1e-4, objective: str = "reference"):
        self.model = model
        if trainable == "full":
            for p in model.parameters():
                p.requires_grad_(True)
        self.params = [p for _, p in trainable_parameters(model, trainable)]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.0)
        self.loss_fn = {"reference": reference_loss, "lean": lean_loss}[objective]

    def step(self, batch: PaddedBatch) -> float:
        self.model.train()
        loss = self.loss_fn(self.model, batch)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


# --------------------------------------------------------------------------- memory probes

def rss_mb() -> float:
    """Current resident set size (VmRSS), MB."""
    return _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    """Peak resident set size since the last :func:`reset_peak_rss` (VmHWM), MB."""
    return _status_kb("VmHWM") / 1024


def ru_maxrss_mb() -> float:
    """Lifetime peak RSS of this process (getrusage ru_maxrss, KB on Linux), MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_resident(model: torch.nn.Module) -> None:
    """Read every parameter and buffer once. transformers maps safetensors weights lazily, so right
    after ``from_pretrained`` most of them are not yet in RSS and would be counted as the first
    forward's peak instead of as the load."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            t.detach().sum()


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    raise KeyError(key)


# --------------------------------------------------------------------------- standalone

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default=default_model_path())
    parser.add_argument("--data", default=default_data_file())
    parser.add_argument("--trainable", choices=("lora", "full"), default="lora")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--attn", default="eager", help="HF attn_implementation (the reference: eager)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model_path)
    check_label_ids(tok)
    batch = natural_batches(tok, load_sst2(args.data), [args.batch_size], args.seed)[args.batch_size]
    padded = pad_batch(batch, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    model = load_hf_model(args.model_path, args.attn)
    if args.trainable == "lora":
        model = add_lora(model, args.seed)
    lr, eps = (1e-3, 1e-2) if args.trainable == "lora" else (1e-7, 1e-3)
    mezo = ReferenceMeZO(model, args.trainable, lr=lr, eps=eps, seed=args.seed)
    times = []
    for r in range(args.repeats + 1):
        t0 = time.perf_counter()
        loss = mezo.step(padded)
        times.append(time.perf_counter() - t0)
        print(f"{'warm-up' if r == 0 else f'repeat {r}'}: step {times[-1]:.3f} s, loss {loss:.4f}", flush=True)
    print(json.dumps({
        "trainable": args.trainable, "trainable_parameters": mezo.num_parameters, "batch_size": args.batch_size,
        "real_tokens": padded.real_tokens, "padded_tokens": padded.padded_tokens,
        "median_step_s": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "peak_rss_mb": round(ru_maxrss_mb(), 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
