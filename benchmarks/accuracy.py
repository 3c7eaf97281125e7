"""Accuracy of MeZO on real tasks with a real pretrained model (SmolLM2-135M), on this machine.

One command runs a plan of runs and writes one JSON per run, then the table and learning curves:

    .venv/bin/python benchmarks/accuracy.py --plan full      # the issue's grid, < 2 h on 2 cores
    .venv/bin/python benchmarks/accuracy.py --plan sst2-k16  # SST-2, 16-shot, seed 42 only
    .venv/bin/python benchmarks/accuracy.py --report-only    # rebuild table/PNG from saved runs

Finished runs are kept in benchmarks/results/accuracy/ and skipped on the next call, so a plan
interrupted part-way resumes where it stopped. Rows:
- zero-shot: the same prompt objective, no training (``mezo_mlm_finetune(num_steps=0)``);
- MeZO (LoRA), MeZO (full): ``mezo_mlm_finetune`` on SGLang's forward path;
- Adam (LoRA): the backprop ceiling: the same LoRA (r 8, alpha 16, q/v), the same k-shot data, the
  same prompt encoding and label-word loss, autograd on the HF model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "accuracy")
MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Run:
    task: str
    k: int
    seed: int
    method: str  # zero-shot | mezo-lora | mezo-full | adam-lora
    steps: int = 0
    lr: Optional[float] = None
    eps: Optional[float] = None
    batch: int = 16
    eval_every: Optional[int] = None

    @property
    def name(self) -> str:
        extra = f"-s{self.steps}" + (f"-lr{self.lr:g}" if self.lr else "") + (f"-eps{self.eps:g}" if self.eps else "")
        return f"{self.task}-k{self.k}-seed{self.seed}-{self.method}{extra if self.method != 'zero-shot' else ''}"


def _grid() -> list[Run]:
    runs = []
    for seed in (13, 21, 42):  # LM-BFF data seeds
        runs += [
            Run("sst-2", 16, seed, "zero-shot"),
            Run("sst-2", 16, seed, "mezo-lora", steps=600, lr=1e-3, eps=1e-2, eval_every=200),
            Run("sst-2", 16, seed, "adam-lora", steps=100, lr=1e-3, eval_every=25),
        ]
    runs += [
        Run("sst-2", 16, 42, "mezo-full", steps=200, lr=1e-6, eps=1e-3, eval_every=100),
        Run("sst-2", 512, 42, "mezo-lora", steps=1000, lr=1e-3, eps=1e-2, eval_every=250),
        Run("sst-2", 512, 42, "adam-lora", steps=300, lr=1e-4, eval_every=100),
    ]
    for task in ("sst-5", "trec", "rte"):
        runs += [
            Run(task, 16, 42, "zero-shot"),
            Run(task, 16, 42, "mezo-lora", steps=600, lr=1e-3, eps=1e-2, eval_every=200),
        ]
    return runs


PLANS = {
    "full": _grid,
    "sst2-k16": lambda: [
        Run("sst-2", 16, 42, "zero-shot"),
        Run("sst-2", 16, 42, "mezo-lora", steps=600, lr=1e-3, eps=1e-2, eval_every=200),
        Run("sst-2", 16, 42, "adam-lora", steps=100, lr=1e-3, eval_every=25),
    ],
}


# ---- the runs --------------------------------------------------------------------------------


def run_mezo(run: Run, out_dir: str) -> dict:
    from sglang.srt.mezo_mlm_trainer import mezo_mlm_finetune

    trainable = {"mezo-lora": "lora", "mezo-full": "full"}.get(run.method)
    result = mezo_mlm_finetune(
        model_path=MODEL, task_name=run.task, k_shot=run.k, seed=run.seed, num_steps=run.steps,
        batch_size=run.batch, learning_rate=run.lr, epsilon=run.eps, trainable=trainable or "lora",
        eval_steps=run.eval_every, output_dir=out_dir if run.steps else None, progress_bar=sys.stderr.isatty(),
    )
    return {
        "eval_history": [{"step": e["step"], "accuracy": e["eval_accuracy"], "loss": e["eval_loss"]}
                         for e in result["eval_history"]],
        "final_accuracy": result["eval_accuracy"], "wall_time_s": result["wall_time_s"],
        "num_train": result["num_train_examples"], "num_eval": result["num_eval_examples"],
        "train_loss": result["train_loss"],
    }


def run_adam_lora(run: Run) -> dict:
    """Backprop baseline: PEFT LoRA on the HF model, the same prompt encoding and loss."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang.srt.mezo_mlm_trainer import PromptEncoder, prepare_data
    from sglang.srt.mezo_models import resolve_model_path
    from sglang.srt.mezo_tasks import get_task
    from sglang.srt.mezo_trainer import batch_indices

    start = time.perf_counter()
    torch.manual_seed(run.seed)
    path = resolve_model_path(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    preset = get_task(run.task)
    prompt = PromptEncoder.for_task(tokenizer, "causal", preset)
    train, evals = prepare_data(preset, k_shot=run.k, seed=run.seed)
    train, evals = prompt.encode_all(train), prompt.encode_all(evals)
    label_ids = torch.tensor(prompt.label_token_ids)

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                             lora_dropout=0.0, task_type="CAUSAL_LM"))
    body, head = model.get_base_model().model, model.get_base_model().lm_head

    def label_logits(batch):
        width = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id or 0)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, e in enumerate(batch):
            ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
            mask[i, : len(e.input_ids)] = 1
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
        rows = hidden[torch.arange(len(batch)), torch.tensor([e.position for e in batch])]
        return rows @ head.weight[label_ids].T

    def evaluate() -> dict:
        model.eval()
        correct, loss = 0, 0.0
        with torch.no_grad():
            for i in range(0, len(evals), 32):
                chunk = evals[i : i + 32]
                logits = label_logits(chunk)
                y = torch.tensor([e.label_index for e in chunk])
                loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(-1) == y).sum().item()
        model.train()
        return {"accuracy": correct / len(evals), "loss": loss / len(evals)}

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=run.lr)
    history = [{"step": 0, **evaluate()}]
    batches, losses = batch_indices(len(train), run.batch, run.seed), []  # MeZO's batch order
    model.train()
    for step in range(1, run.steps + 1):
        batch = [train[i] for i in next(batches)]
        loss = torch.nn.functional.cross_entropy(label_logits(batch), torch.tensor([e.label_index for e in batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % run.eval_every == 0 or step == run.steps:
            history.append({"step": step, **evaluate()})
    return {"eval_history": history, "final_accuracy": history[-1]["accuracy"],
            "wall_time_s": time.perf_counter() - start, "num_train": len(train), "num_eval": len(evals),
            "train_loss": losses}


def execute(run: Run) -> dict:
    out_dir = os.path.join(RESULTS, "runs", run.name)
    result = run_adam_lora(run) if run.method == "adam-lora" else run_mezo(run, out_dir)
    record = {"run": asdict(run), "name": run.name, **result}
    os.makedirs(RESULTS, exist_ok=True)
    tmp = os.path.join(RESULTS, f".{run.name}.json")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, os.path.join(RESULTS, f"{run.name}.json"))
    return record


# ---- the report ------------------------------------------------------------------------------


def load_records() -> list[dict]:
    if not os.path.isdir(RESULTS):
        return []
    return [json.load(open(os.path.join(RESULTS, f))) for f in sorted(os.listdir(RESULTS))
            if f.endswith(".json") and not f.startswith(".")]


def report(command: str) -> str:
    records = load_records()
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["run"]["task"], r["run"]["k"], r["run"]["method"], r["run"]["steps"])
        groups.setdefault(key, []).append(r)
    order = {"zero-shot": 0, "mezo-lora": 1, "mezo-full": 2, "adam-lora": 3}
    lines = [
        "# Accuracy: SmolLM2-135M, prompt objective, evaluated on the task's dev set",
        "",
        f"Command: `{command}`",
        "",
        "| task | k | method | steps | seeds | final acc, mean (std) | best acc during run | train / eval examples | wall time per run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups, key=lambda k: (k[0], k[1], order.get(k[2], 9), k[3])):
        rs = groups[key]
        finals = [100 * r["final_accuracy"] for r in rs]
        bests = [100 * max(e["accuracy"] for e in r["eval_history"]) for r in rs]
        std = f" ({statistics.stdev(finals):.1f})" if len(finals) > 1 else ""
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {','.join(str(r['run']['seed']) for r in rs)} | "
            f"{statistics.mean(finals):.1f}{std} | {statistics.mean(bests):.1f} | "
            f"{rs[0]['num_train']} / {rs[0]['num_eval']} | {statistics.mean(r['wall_time_s'] for r in rs) / 60:.1f} min |"
        )
    lines += ["", "Learning curves: `accuracy_curves.png` (dev accuracy against steps, one panel a task)."]
    _plot(records)
    return "\n".join(lines) + "\n"


def _plot(records: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r for r in records if r["run"]["method"] != "zero-shot"]
    tasks = sorted({r["run"]["task"] for r in curves})
    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in curves:
            if r["run"]["task"] != task:
                continue
            h = r["eval_history"]
            ax.plot([e["step"] for e in h], [100 * e["accuracy"] for e in h], marker="o", ms=3,
                    label=f"{r['run']['method']} k={r['run']['k']} seed={r['run']['seed']}")
        for r in records:
            if r["run"]["task"] == task and r["run"]["method"] == "zero-shot":
                ax.axhline(100 * r["final_accuracy"], color="grey", ls=":", lw=1)
        ax.set_title(task)
        ax.set_xlabel("step")
        ax.set_ylabel("dev accuracy (%)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(os.path.dirname(RESULTS), "accuracy_curves.png"), dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", choices=sorted(PLANS), default="full")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    command = "python benchmarks/accuracy.py " + " ".join(sys.argv[1:])
    if not args.report_only:
        done = {r["name"] for r in load_records()}
        for run in PLANS[args.plan]():
            if run.name in done:
                print(f"[skip] {run.name} (already in {RESULTS})", flush=True)
                continue
            t0 = time.perf_counter()
            record = execute(run)
            print(f"[done] {run.name}: final acc {100 * record['final_accuracy']:.1f}% "
                  f"({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
    with open(os.path.join(os.path.dirname(RESULTS), "accuracy.md"), "w") as f:
        f.write(report(command))
    print(open(os.path.join(os.path.dirname(RESULTS), "accuracy.md")).read())


if __name__ == "__main__":
    main()
