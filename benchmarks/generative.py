"""Generative and multiple-choice accuracy on SmolLM2-135M-Instruct: SQuAD (F1 / EM of greedy
answers generated through SGLang) and ARC-Easy (accuracy of the option with the best mean
log-likelihood), each as zero-shot, MeZO-LoRA at the library's defaults, and Adam-LoRA with
backprop (HF + PEFT) on the same training examples. On SQuAD, `mezo-reward` trains MeZO-LoRA on
the reward objective instead (the greedy answers of both sides graded by SQuAD F1, the preset's
default grader) with the same defaults, so the same steps are the same number of forward passes.
`es-reward` is ES at scale's population form of that run (`reward_shaping="z-score"`): a population
of `--population` mirrored pairs, each answering the same `16 / population` prompts a step, so that a
step generates as many answers as a `mezo-reward` step at batch 16 (the same forward budget).

Every evaluation, the Adam run's included, goes through the library's own SGLang path: the Adam
adapter is saved in PEFT's format and evaluated by a zero-step run that starts from it.

    .venv/bin/python benchmarks/generative.py --task squad --method zero-shot
    .venv/bin/python benchmarks/generative.py --task squad --method mezo-lora --steps 1000
    .venv/bin/python benchmarks/generative.py --task squad --method adam-lora --steps 200
    .venv/bin/python benchmarks/generative.py --task squad --method mezo-reward --steps 150
    .venv/bin/python benchmarks/generative.py --task squad --method es-reward --population 4 --steps 150
    .venv/bin/python benchmarks/generative.py --table    # results/generative.md from the records

Records: benchmarks/results/generative/<task>-<method>-<steps>-s<seed>.json (each names the
machine); the table collects them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from harness import MODEL, machine_line, markdown_table

from sglang.srt.mezo.run_spec.config import MeZOConfig

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "generative")


def _metric(task: str) -> str:
    return "eval_f1" if task == "squad" else "eval_accuracy"


def run_library(task: str, steps: int, seed: int, out_dir: str, eval_steps: int | None = None,
                **overrides) -> dict:
    """Zero-shot (steps=0) or MeZO-LoRA at the defaults, through mezo_mlm_finetune."""
    # torch and SGLang's model executor: loaded by a run, not by --table.
    from sglang.srt.mezo.training.finetune import mezo_mlm_finetune  # noqa: PLC0415

    # A generative evaluation generates every dev answer (minutes on a CPU): step 0 is the
    # zero-shot record's, so a training run evaluates at its end only, unless told otherwise.
    kw = dict(eval_steps=eval_steps or steps, eval_at_start=False) if steps else {}
    result = mezo_mlm_finetune(MODEL, task_name=task, num_steps=steps, seed=seed, output_dir=out_dir,
                               progress_bar=False, **kw, **overrides)
    return {k: result.get(k) for k in ("eval_history", "final_eval", "best_eval", "zero_shot_eval", "primary_metric",
                                       "train_loss", "wall_time_s", "num_train_examples", "num_eval_examples",
                                       "hyperparameters", "dtype_choice", "adapter_path")}


def _padded(items, pad: int):
    import torch  # noqa: PLC0415  (as in run_library)

    width = max(len(ids) for ids in items)
    ids = torch.full((len(items), width), pad)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, seq in enumerate(items):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    return ids, mask


def run_adam_lora(task: str, steps: int, seed: int, out_dir: str, lr: float, batch: int) -> dict:
    """Backprop ceiling: the same LoRA (rank, alpha, targets), data and objective on HF + PEFT,
    then evaluated by the library (SGLang) from the saved adapter."""
    # As in run_library: torch, HF + PEFT and the trainer only when this baseline runs.
    import torch  # noqa: PLC0415
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    from sglang.srt.mezo.training.plan import prepare  # noqa: PLC0415
    from sglang.srt.mezo.training.run import BatchSampler  # noqa: PLC0415

    start = time.perf_counter()
    torch.manual_seed(seed)
    plan = prepare(MeZOConfig(model_path=MODEL, task=task, seed=seed, num_steps=steps, batch_size=batch))
    c = plan.config
    model = AutoModelForCausalLM.from_pretrained(plan.model_path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=c.lora_rank, lora_alpha=c.lora_alpha,
                                             target_modules=list(c.lora_target_modules), lora_dropout=0.0,
                                             task_type="CAUSAL_LM"))
    pad = plan.tokenizer.pad_token_id or 0

    def loss_of(batch_items) -> torch.Tensor:
        if c.objective == "completion":  # token-mean CE over the targets, as the MeZO objective
            ids, mask = _padded([list(e.input_ids) for e in batch_items], pad)
            rows, cols = zip(*[(i, j) for i, e in enumerate(batch_items) for j, t in enumerate(e.targets) if t])
            rows, cols = torch.tensor(rows), torch.tensor(cols)
            # The vocabulary head only where a target token is predicted (the step before it), as a
            # careful user writes it: the head over every position is most of a small model's step.
            lm = model.get_base_model()
            hidden = lm.model(input_ids=ids, attention_mask=mask).last_hidden_state
            logits = lm.lm_head(hidden[rows, cols - 1]).float()
            return torch.nn.functional.cross_entropy(logits, ids[rows, cols])
        losses = []  # options: CE over each option's mean log-likelihood
        for item in batch_items:
            seqs = [list(item.prompt_ids) + list(o) for o in item.options]
            ids, mask = _padded(seqs, pad)
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
            start_pos = len(item.prompt_ids) - 1
            scores = torch.stack([logp[k, start_pos + torch.arange(len(o)), torch.tensor(o)].mean()
                                  for k, o in enumerate(item.options)])
            losses.append(torch.nn.functional.cross_entropy(scores.unsqueeze(0), torch.tensor([item.label_index])))
        return torch.stack(losses).mean()

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    batches, losses = BatchSampler(len(plan.train), batch, seed), []
    model.train()
    for step in range(1, steps + 1):
        loss = loss_of([plan.train[i] for i in next(batches)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == steps:  # a run of tens of minutes says where it is
            print(f"adam step {step}/{steps} loss {sum(losses[-10:]) / len(losses[-10:]):.4f} "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    train_time = time.perf_counter() - start
    adapter = os.path.join(out_dir, "adam_adapter")
    model.save_pretrained(adapter)
    evaluated = run_library(task, 0, seed, os.path.join(out_dir, "eval"), init_adapter=adapter)
    return {**evaluated, "train_loss": losses, "train_time_s": train_time, "lr": lr, "batch_size": batch,
            "wall_time_s": time.perf_counter() - start}


def execute(args) -> dict:
    name = f"{args.task}-{args.method}-{args.steps}-s{args.seed}" + (f"-{args.tag}" if args.tag else "")
    out_dir = os.path.join(RESULTS, "runs", name)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    if args.method == "adam-lora":
        result = run_adam_lora(args.task, args.steps, args.seed, out_dir, args.lr, args.batch)
    else:
        overrides = {}
        if args.lr is not None:
            overrides["learning_rate"] = args.lr
        if args.batch is not None:
            overrides["batch_size"] = args.batch
        if args.method in ("mezo-reward", "es-reward"):
            overrides["objective"] = "reward"
        if args.method == "es-reward":
            overrides.update(reward_shaping="z-score", n_spsa=args.population)
        result = run_library(args.task, 0 if args.method == "zero-shot" else args.steps, args.seed, out_dir,
                             args.eval_steps, **overrides)
    record = {"name": name, "task": args.task, "method": args.method, "steps": args.steps, "seed": args.seed,
              "machine": machine_line(), "started": started, "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
              "tag": args.tag, **result}
    if args.method in ("mezo-reward", "es-reward"):  # the forward budget: answers generated a step
        record["answers_per_step"] = 2 * (args.population if args.method == "es-reward" else 1) * \
            result["hyperparameters"]["batch_size"]
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)
    metric = _metric(args.task)
    print(json.dumps({"name": name, metric: (result.get("final_eval") or {}).get(metric),
                      "best": (result.get("best_eval") or {}).get(metric), "wall_time_s": result.get("wall_time_s")}))
    return record


def table() -> str:
    """results/generative.md: one row per record."""
    rows = []
    for file in sorted(os.listdir(RESULTS)):
        if not file.endswith(".json"):
            continue
        r = json.load(open(os.path.join(RESULTS, file)))
        final = r.get("final_eval") or {}
        method = r["method"] + (f" ({r['tag']})" if r.get("tag") else "")
        cells = [r["task"], method, str(r["steps"]), str(r.get("num_train_examples")), str(r.get("num_eval_examples"))]
        if r["task"] == "squad":
            cells += [f"{final.get('eval_f1', float('nan')):.1f}", f"{final.get('eval_exact_match', float('nan')):.1f}"]
        else:
            cells += [f"{100 * final.get('eval_accuracy', float('nan')):.1f}", "-"]
        cells += [f"{r.get('wall_time_s', 0) / 60:.1f}", r["machine"], f"`{r['command']}`"]
        rows.append(cells)
    head = ["task", "method", "steps", "train", "dev", "F1 / acc. (dev)", "EM (dev)", "minutes", "machine", "command"]
    text = "# Generative and multiple-choice accuracy (dev splits)\n\n" + "\n".join(markdown_table(head, rows)) + "\n"
    with open(os.path.join(HERE, "results", "generative.md"), "w") as f:
        f.write(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("squad", "arc-easy"), default="squad")
    p.add_argument("--method", choices=("zero-shot", "mezo-lora", "mezo-reward", "es-reward", "adam-lora"),
                   default="zero-shot")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--lr", type=float, default=None, help="learning rate (Adam default 1e-3; MeZO: the library's)")
    p.add_argument("--batch", type=int, default=None, help="batch size (Adam default 8; MeZO: the library's)")
    p.add_argument("--population", type=int, default=4, help="es-reward: mirrored pairs a step (n_spsa); the "
                   "batch defaults to 16 // population, a mezo-reward step's 32 answers")
    p.add_argument("--eval-steps", type=int, default=None, help="MeZO: evaluate every N steps (default: at the end)")
    p.add_argument("--tag", default="", help="suffix of the record's name (a sweep point, say)")
    p.add_argument("--table", action="store_true", help="only write results/generative.md from the records")
    args = p.parse_args()
    if args.table:
        print(table())
        return
    if args.method == "adam-lora":
        args.lr, args.batch = args.lr or 1e-3, args.batch or 8
    if args.method == "zero-shot":
        args.steps = 0
    if args.method == "es-reward":
        args.batch = args.batch or max(1, 16 // args.population)
        args.tag = args.tag or f"n{args.population}b{args.batch}"
    execute(args)


if __name__ == "__main__":
    main()
