"""FZOO (``estimator="fzoo"``) on SGLang's ModelRunner and a tiny random Llama: theta and the
probes in one batched forward against one forward per slot, a step against the formula computed
from losses measured one at a time, and a run that replays to its weights bit for bit (resume:
tests/engine/test_run.py's stop-and-resume test has an FZOO case)."""

from __future__ import annotations

import json
import os
import statistics

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

import pytest
import torch
from conftest import trained_looking, trainer_for
from safetensors.torch import load_file

from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.estimators import FZOO
from sglang.srt.mezo.training.replay_weights import replay
from sglang.srt.mezo.training.trainer import MeZOTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = [([0, 5, 7, 9, 11, 3, 40], 42), ([0, 8, 200, 4], 42), ([0, 300, 301, 302, 303, 304, 305, 306, 307], 42),
        ([0, 17, 18, 19], 42)]
SEEDS = [11, 12, 13]


def config(tmp_path, **kw) -> MeZOConfig:
    # fp32 and a large eps: the probes' losses differ well above float rounding.
    base = dict(lora_rank=4, lora_alpha=8, batch_size=4, n_spsa=3, estimator="fzoo", epsilon=1e-1,
                learning_rate=1e-2, weight_decay=0.0, num_steps=4, eval_steps=2, eval_at_start=False, device="cpu",
                dtype="float32", progress_bar=False, output_dir=str(tmp_path / "run"), seed=5)
    base.update(kw)
    return MeZOConfig(**base)


def losses_one_forward_each(tr: MeZOTrainer, theta, seeds) -> tuple[float, list[float]]:
    """L_0 and each L_k, each from a forward of its own on the adapter's own slot (theta + eps z_k
    written there as the estimator writes its probe slots), theta put back after."""
    l0 = tr.compute_loss(TASK)
    lk = []
    with torch.no_grad():
        for seed in seeds:
            for i, (t, s) in enumerate(zip(tr.trainable.tensors, theta)):
                t.copy_(s).add_(tr.tensors.z(seed, i, s), alpha=tr.config.epsilon)
            tr.trainable.after_update()
            lk.append(tr.compute_loss(TASK))
        tr.tensors.copy_back(theta)
    tr.trainable.after_update()
    return l0, lk


def test_theta_and_the_probes_in_one_forward_give_what_one_forward_per_slot_gives(tmp_path, tiny_llama):
    with trainer_for(MeZOTrainer, tiny_llama, config(tmp_path)) as tr:
        assert isinstance(tr.estimator, FZOO) and tr.config.update_rule == "sgd"
        assert tr.runner.lora_manager.max_loras_per_batch == 5 and len(tr.estimator.slots) == 4
        theta = trained_looking(tr)
        forwards = []
        original = tr.model.forward
        tr.model.forward = lambda *a, **kw: forwards.append(len(a[0])) or original(*a, **kw)
        measured = tr.estimator.measure(TASK, SEEDS)
        assert forwards == [4 * len(TASK)]  # theta and three probes, the whole batch on each: one forward
        forwards.clear()
        assert all(torch.equal(a, b) for a, b in zip(theta, tr.trainable.tensors))  # theta's slot only read
        # The same slots (their weights untouched since), one forward each.
        ids = [slot_id for slot_id, _ in tr.estimator.slots]
        alone = [tr.objective.batch_loss(tr.model, TASK, slot_id) for slot_id in ids]
        assert forwards == [len(TASK)] * 4
        tr.model.forward = original
        # And on the adapter's own slot, with theta + eps z_k written there by hand.
        l0, lk = losses_one_forward_each(tr, theta, SEEDS)
    batched = [measured.losses[0][1]] + [lp for lp, _ in measured.losses]
    assert len(set(batched)) == 4  # the probes did move the loss
    # float32 on the CPU: each sequence's logits do not depend on what else the forward holds.
    assert batched == alone == [l0] + lk


def test_a_step_is_the_formula_on_losses_measured_one_at_a_time(tmp_path, tiny_llama):
    """theta <- theta - lr / (N sigma) sum_k (L_k - L_0) z_k, sigma the std of L_1..L_N (no eps)."""
    cfg = config(tmp_path)
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        theta = trained_looking(tr)
        result = tr.step(TASK)
        trained = [t.clone() for t in tr.trainable.tensors]
        tr.tensors.copy_back(theta)
        tr.trainable.after_update()
        l0, lk = losses_one_forward_each(tr, theta, result.seeds)
        z = [[tr.tensors.z(seed, i, s).double() for i, s in enumerate(theta)] for seed in result.seeds]
    n, sigma = len(lk), statistics.stdev(lk)
    assert result.loss == l0  # the step reports the loss at theta
    assert result.projected_grads == [(lp - l0) / sigma for lp in lk]
    for i, (start, got) in enumerate(zip(theta, trained)):
        want = start.double() - cfg.learning_rate / (n * sigma) * sum((lp - l0) * z[k][i] for k, lp in enumerate(lk))
        assert torch.allclose(got.double(), want, rtol=0, atol=1e-7), i
    assert not all(torch.equal(a, b) for a, b in zip(theta, trained))


def test_an_fzoo_run_replays_to_its_weights_bit_for_bit(tmp_path, tiny_llama):
    cfg = config(tmp_path)
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        tr.train(TASK)
        trained = {n: t.clone() for n, t in zip(tr.trainable.names, tr.trainable.tensors)}
        steps = tr.trajectory.steps
    assert len(steps) == 4 and all(len(seeds) == 3 for seeds, _ in steps)
    with open(os.path.join(cfg.output_dir, "metrics.jsonl")) as f:
        events = [json.loads(line) for line in f if '"step"' in line]
    # theta and 3 probes on a batch of 4, one batched forward: 16 sequences a step.
    assert [e["sequence_forwards"] for e in events if e["event"] == "step"] == [16] * 4
    out = replay(cfg.output_dir, str(tmp_path / "replayed"))
    rebuilt = load_file(os.path.join(out, "adapter_model.safetensors"))
    assert rebuilt.keys() == trained.keys()
    assert all(torch.equal(rebuilt[n], trained[n]) for n in trained)
    assert not all(torch.equal(rebuilt[n], load_file(os.path.join(cfg.output_dir, "adapter_init",
                                                                  "adapter_model.safetensors"))[n]) for n in trained)
