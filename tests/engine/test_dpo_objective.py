"""The DPO objective on SGLang's forward, checked against HF transformers + PEFT, and DPO runs end to
end on a tiny chat model: the reference computed once at the initial weights, kept with the run, and
read back (not recomputed) by a resumed run."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest
import torch
from conftest import trainer_for
from safetensors.torch import load_file
from test_run import stop_after
from test_trainer import load_into_peft, peft_model, small_config
from transformers import AutoTokenizer

from sglang.srt.mezo.cli.train import main as cli_main
from sglang.srt.mezo.data.chat import TokenizedCompletion
from sglang.srt.mezo.data.preference import TokenizedPair
from sglang.srt.mezo.engine.runner import release_model_runner
from sglang.srt.mezo.errors import DataFormatError
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.finetune import mezo_mlm_finetune
from sglang.srt.mezo.training.objectives.dpo import DPOObjective
from sglang.srt.mezo.training.plan import REFERENCE_FILE, prepare, start_run
from sglang.srt.mezo.training.replay_weights import replay
from sglang.srt.mezo.training.trainer import MeZOTrainer


def _side(prompt: list[int], answer: list[int]) -> TokenizedCompletion:
    return TokenizedCompletion(tuple(prompt + answer), (False,) * len(prompt) + (True,) * len(answer), len(prompt))


LONG_PROMPT = [0] + list(range(20, 44))  # longer than the shortest prefix worth sharing (16 tokens)
PAIRS = [TokenizedPair(_side([0, 5, 7], [11, 3]), _side([0, 5, 7], [12, 40, 2])),
         TokenizedPair(_side(LONG_PROMPT, [200, 4, 9]), _side(LONG_PROMPT, [201])),
         TokenizedPair(_side([0, 300, 301, 302], [305, 6]), _side([0, 300, 301, 302], [306, 7]))]


def hf_logp(model, side: TokenizedCompletion) -> float:
    """The answer's summed log-likelihood under an HF/PEFT model (float64 log-softmax of its logits)."""
    with torch.no_grad():
        logits = model(torch.tensor([side.input_ids])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], -1)
    return sum(logp[i - 1, t].item() for i, (t, on) in enumerate(zip(side.input_ids, side.targets)) if on)


def hf_dpo_loss(model, pairs, reference, beta: float) -> float:
    """DPO's sigmoid loss (the DPO paper's, TRL's loss_type="sigmoid"), mean over the pairs."""
    total = 0.0
    for p, (ref_c, ref_r) in zip(pairs, reference):
        z = beta * ((hf_logp(model, p.chosen) - ref_c) - (hf_logp(model, p.rejected) - ref_r))
        total += math.log1p(math.exp(-z))
    return total / len(pairs)


def set_adapter(trainer, seed: int, scale: float = 0.05) -> dict:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in trainer.trainable.tensors:
            t.copy_(torch.randn(t.shape, generator=gen) * scale)
    trainer.trainable.after_update()
    return {n: t.clone() for n, t in zip(trainer.trainable.names, trainer.trainable.tensors)}


def test_dpo_loss_rewards_and_projected_gradient_match_peft(tmp_path, tiny_llama, llama_tokenizer_dir):
    beta = 0.5
    objective = DPOObjective(AutoTokenizer.from_pretrained(llama_tokenizer_dir), beta=beta)
    cfg = small_config(tmp_path, epsilon=1e-2)
    with trainer_for(MeZOTrainer, tiny_llama, cfg, objective=objective) as tr:
        # The reference: one adapter; the trained model: another (a real run's reference is B = 0).
        theta_ref = set_adapter(tr, 1)
        inputs = objective.forward_inputs(PAIRS)
        assert inputs.owners == [0, 0, 1, 1, 2, 2] and inputs.row_counts() == [2, 3, 3, 1, 2, 2]
        reference = objective.reference_values(tr.logits_for(inputs), PAIRS)
        peft = peft_model(tiny_llama, tr.save(str(tmp_path / "ref")))
        expected_ref = [[hf_logp(peft, p.chosen), hf_logp(peft, p.rejected)] for p in PAIRS]
        assert torch.allclose(torch.tensor(reference), torch.tensor(expected_ref), atol=1e-5)
        pairs = objective.with_reference(PAIRS, reference)

        theta = set_adapter(tr, 2)
        assert not torch.equal(next(iter(theta.values())), next(iter(theta_ref.values())))
        load_into_peft(peft, theta)
        expected = hf_dpo_loss(peft, pairs, reference, beta)
        assert abs(tr.compute_loss(pairs) - expected) < 1e-5

        # TRL's reward metrics: beta * (log p - log p_ref) per side, margins, accuracies.
        metrics = objective.train_metrics(tr.logits_for(objective.forward_inputs(pairs)), pairs)
        rewards = [(beta * (hf_logp(peft, p.chosen) - r[0]), beta * (hf_logp(peft, p.rejected) - r[1]))
                   for p, r in zip(pairs, reference)]
        assert abs(metrics["rewards/chosen"] - sum(c for c, _ in rewards) / 3) < 1e-5
        assert abs(metrics["rewards/margins"] - sum(c - r for c, r in rewards) / 3) < 1e-5
        assert metrics["rewards/accuracies"] == sum(c > r for c, r in rewards) / 3

        # At the reference weights every reward is 0 and the loss is log 2.
        load_into_peft(peft, theta_ref)
        assert abs(hf_dpo_loss(peft, pairs, reference, beta) - math.log(2)) < 1e-5

        # The paired forward extends the long prompt once per side: its KV is shared by both answers.
        extends, original = [], tr.runner.forward
        tr.runner.forward = lambda batch, *a, **kw: extends.append(list(batch.extend_prefix_lens_cpu)) or \
            original(batch, *a, **kw)
        try:
            seed = 7
            g, lp, lm = tr.projected_gradient(pairs, seed)
        finally:
            del tr.runner.forward
        assert len(extends) == 2 and sorted(extends[1])[-4:] == [len(LONG_PROMPT) - 1] * 4
        losses = {}
        for sign in (1, -1):
            load_into_peft(peft, {n: theta[n] + sign * cfg.epsilon * tr.tensors.z(seed, i, theta[n])
                                  for i, n in enumerate(tr.trainable.names)})
            losses[sign] = hf_dpo_loss(peft, pairs, reference, beta)
        assert abs(lp - losses[1]) < 1e-5 and abs(lm - losses[-1]) < 1e-5
        g_hf = (losses[1] - losses[-1]) / (2 * cfg.epsilon)
        assert abs(g) > 1e-4 and abs(g - g_hf) < 1e-3 * max(1.0, abs(g_hf))
        assert all(torch.equal(t, theta[n]) for n, t in zip(tr.trainable.names, tr.trainable.tensors))


def test_a_pair_without_its_reference_is_refused(tmp_path, tiny_llama, llama_tokenizer_dir):
    objective = DPOObjective(AutoTokenizer.from_pretrained(llama_tokenizer_dir))
    with trainer_for(MeZOTrainer, tiny_llama, small_config(tmp_path), objective=objective) as tr:
        with pytest.raises(ValueError, match="no reference log-likelihoods"):
            tr.compute_loss(PAIRS)
    with pytest.raises(ValueError, match="beta must be > 0"):
        DPOObjective(None, beta=0)


# ---------------------------------------------------------------- runs on a chat model

def _openai_pair(question: str, good: str, bad: str) -> dict:
    return {"input": {"messages": [{"role": "system", "content": "answer briefly"},
                                   {"role": "user", "content": question}]},
            "preferred_output": [{"role": "assistant", "content": good}],
            "non_preferred_output": [{"role": "assistant", "content": bad}]}


OPENAI_ROWS = [_openai_pair(f"what is {w}?", f"{w} is fine", f"no idea about {w}")
               for w in ("red", "blue", "tea", "rain", "salt", "iron")]
TRL_ROWS = [{"prompt": f"Q: {w}?\nA:", "chosen": f" {w}.", "rejected": " dunno."} for w in ("up", "down", "left")]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _spec(model, train, valid, out, **kw):
    return MeZOConfig(model_path=model, objective="dpo", train_file=train, eval_file=valid, output_dir=str(out),
                      **{**dict(num_steps=4, eval_steps=2, batch_size=2, lora_rank=2, learning_rate=1e-2,
                                epsilon=1e-2, dtype="float32", progress_bar=False), **kw})


def test_a_dpo_run_records_its_reference_and_a_resumed_run_reads_it_back(tmp_path, tiny_chat_llama):
    train = _jsonl(tmp_path / "train.jsonl", OPENAI_ROWS)
    valid = _jsonl(tmp_path / "valid.jsonl", OPENAI_ROWS[:3])
    result = mezo_mlm_finetune(tiny_chat_llama, objective="dpo", train_dataset=train, eval_dataset=valid,
                               output_dir=str(tmp_path / "a"), num_steps=4, eval_steps=2, batch_size=2,
                               lora_rank=2, learning_rate=1e-2, epsilon=1e-2, dtype="float32", beta=0.2,
                               progress_bar=False)
    assert result["task"] == "preference" and result["primary_metric"] == "eval_rewards/accuracies"
    zero = result["zero_shot_eval"]  # at the reference weights: every reward 0, loss log 2
    assert abs(zero["eval_loss"] - math.log(2)) < 1e-6 and abs(zero["eval_rewards/margins"]) < 1e-6
    final = result["final_eval"]
    assert set(final) >= {"eval_loss", "eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/margins",
                          "eval_rewards/accuracies", "eval_logps/chosen", "eval_logps/rejected"}
    assert final["eval_loss"] != zero["eval_loss"]
    record = json.loads((tmp_path / "a" / REFERENCE_FILE).read_text())
    assert len(record["values"]["train"]) == 6 and len(record["values"]["eval"]) == 3
    steps = [json.loads(line) for line in open(tmp_path / "a" / "metrics.jsonl")]
    steps = [e for e in steps if e.get("event") == "step"]
    assert len(steps) == 4 and all({"rewards/accuracies", "rewards/margins"} <= set(e) for e in steps)

    # Replay needs no reference: the trajectory holds each step's projected gradient.
    rebuilt = load_file(os.path.join(replay(str(tmp_path / "a"), str(tmp_path / "replayed")), "adapter_model.safetensors"))
    saved = load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    assert saved.keys() == rebuilt.keys() and all(torch.equal(saved[n], rebuilt[n]) for n in saved)

    # Stopped after 2 steps and resumed: the same losses as the straight run, from the recorded
    # reference (computing it again now would use trained weights, and every number would move).
    spec = _spec(tiny_chat_llama, train, valid, tmp_path / "b", beta=0.2)
    stop_after(spec, 2)
    reference = tmp_path / "b" / REFERENCE_FILE
    assert json.loads(reference.read_text()) == record
    resumed = start_run(prepare(dataclasses.replace(spec, resume=True)))
    try:
        assert resumed.step_count == 2
        assert resumed.train_data[0].reference == tuple(record["values"]["train"][0])
        out = resumed.run_to_end()
    finally:
        release_model_runner(resumed.trainer.runner)
    assert out["train_loss"] == result["train_loss"]

    # A resumed run whose data changed is refused, not trained against the wrong reference.
    _jsonl(tmp_path / "train.jsonl", OPENAI_ROWS[::-1])  # the same file name, other rows
    with pytest.raises(ValueError, match="computed for other data"):
        start_run(prepare(dataclasses.replace(spec, resume=True)))


def test_trl_rows_train_through_the_cli_and_bad_rows_fail_before_a_model_loads(tmp_path, tiny_chat_llama, capsys):
    train = _jsonl(tmp_path / "trl.jsonl", TRL_ROWS)
    out = tmp_path / "cli"
    assert cli_main(["--model-path", tiny_chat_llama, "--objective", "dpo", "--beta", "0.3", "--train-file", train,
                 "--eval-file", train, "--num-steps", "2", "--eval-steps", "0", "--batch-size", "2", "--lora-rank",
                 "2", "--dtype", "float32", "--output-dir", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "preference" and summary["config"]["beta"] == 0.3 and summary["steps"] == 2
    assert "final eval rewards/accuracies" in capsys.readouterr().out

    bad = _jsonl(tmp_path / "bad.jsonl", [TRL_ROWS[0], {"prompt": "Q", "chosen": " a", "rejected": " a"}])
    with pytest.raises(DataFormatError, match=r"bad\.jsonl, line 2: 'chosen' and 'rejected' are the same answer"):
        prepare(MeZOConfig(model_path=tiny_chat_llama, objective="dpo", train_file=bad))
    with pytest.raises(ValueError, match="task 'chat' trains with objective 'completion'"):
        MeZOConfig(task="chat", objective="dpo")
