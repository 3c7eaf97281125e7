"""HiZOO (``estimator="hizoo"``) on SGLang's ModelRunner and a tiny random Llama: theta and the
+/- probes in one batched forward against one forward per slot, three steps against the formula
(H and theta by hand in float64) from losses measured one at a time, and a run that replays to its
weights bit for bit with its Hessian rebuilt from the record (resume: tests/engine/test_run.py's
stop-and-resume test has a HiZOO case)."""

from __future__ import annotations

import os

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

import pytest
import torch
from conftest import trained_looking, trainer_for
from safetensors.torch import load_file

from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.estimators import HiZOO
from sglang.srt.mezo.training.replay_weights import replay
from sglang.srt.mezo.training.trainer import MeZOTrainer
from sglang.srt.mezo.zo.perturbable import PerturbableTensors
from sglang.srt.mezo.zo.trajectory import Trajectory
from sglang.srt.mezo.zo.update import StepUpdate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = [([0, 5, 7, 9, 11, 3, 40], 42), ([0, 8, 200, 4], 42), ([0, 300, 301, 302, 303, 304, 305, 306, 307], 42),
        ([0, 17, 18, 19], 42)]
ALPHA = 0.5  # large, so that H moves well above float rounding within a few steps


def config(tmp_path, **kw) -> MeZOConfig:
    # fp32 and a large eps: L+ + L- - 2 L0 stands well above float rounding. sgd: the paper's step.
    base = dict(lora_rank=4, lora_alpha=8, batch_size=4, estimator="hizoo", hessian_smoothing=ALPHA, epsilon=1e-1,
                learning_rate=1e-2, update_rule="sgd", weight_decay=0.0, num_steps=4, eval_steps=2,
                eval_at_start=False, device="cpu", dtype="float32", progress_bar=False,
                output_dir=str(tmp_path / "run"), seed=5)
    base.update(kw)
    return MeZOConfig(**base)


def losses_one_forward_each(tr: MeZOTrainer, theta, seed, h) -> tuple[float, float, float]:
    """L0, L+ and L-, each from a forward of its own on the adapter's own slot (theta +/- eps z / sqrt(h)
    written there as the estimator writes its probe slots), theta put back after."""
    eps = tr.config.epsilon
    with torch.no_grad():
        tr.tensors.copy_back(theta)
        tr.trainable.after_update()
        l0 = tr.compute_loss(TASK)
        sides = []
        for sign in (1, -1):
            for i, (t, s) in enumerate(zip(tr.trainable.tensors, theta)):
                t.copy_(s).add_(tr.tensors.z(seed, i, s).double().div_(h[i].sqrt()), alpha=sign * eps)
            tr.trainable.after_update()
            sides.append(tr.compute_loss(TASK))
        tr.tensors.copy_back(theta)
    tr.trainable.after_update()
    return l0, sides[0], sides[1]


def test_theta_and_both_probes_in_one_forward_give_what_one_forward_per_slot_gives(tmp_path, tiny_llama):
    with trainer_for(MeZOTrainer, tiny_llama, config(tmp_path)) as tr:
        assert isinstance(tr.estimator, HiZOO) and tr.estimator.hessian is tr.update.hessian
        assert tr.runner.lora_manager.max_loras_per_batch == 5 and len(tr.estimator.slots) == 4
        theta = trained_looking(tr)
        with torch.no_grad():  # an H that is not 1, so that the probes' scaling shows
            gen = torch.Generator().manual_seed(2)
            for h in tr.update.hessian.h:
                h.copy_(torch.rand(h.shape, generator=gen, dtype=torch.float64) * 3 + 0.25)
        h = [t.clone() for t in tr.update.hessian.h]
        forwards = []
        original = tr.model.forward
        tr.model.forward = lambda *a, **kw: forwards.append(len(a[0])) or original(*a, **kw)
        measured = tr.estimator.measure(TASK, [11])
        assert forwards == [3 * len(TASK)]  # theta and both probes, the whole batch on each: one forward
        forwards.clear()
        assert all(torch.equal(a, b) for a, b in zip(theta, tr.trainable.tensors))  # theta's slot only read
        # The same slots (their weights untouched since), one forward each.
        ids = [slot_id for slot_id, _ in tr.estimator.slots[:3]]
        alone = [tr.objective.batch_loss(tr.model, TASK, slot_id) for slot_id in ids]
        assert forwards == [len(TASK)] * 3
        tr.model.forward = original
        # And on the adapter's own slot, with theta +/- eps z / sqrt(H) written there by hand.
        by_hand = list(losses_one_forward_each(tr, theta, 11, h))
    batched = [measured.losses[-1][0], *measured.losses[0]]
    assert len(set(batched)) == 3  # the probes did move the loss
    # float32 on the CPU: each sequence's logits do not depend on what else the forward holds.
    assert batched == alone == by_hand


def test_three_steps_are_the_formula_on_losses_measured_one_at_a_time(tmp_path, tiny_llama):
    """H_t = (1 - a) H + a |L+ + L- - 2 L0| / (2 eps^2) H z^2 (from 1; the probes use the H before the
    step), theta <- theta - lr (L+ - L-) / (2 eps) z / sqrt(H_t), by hand in float64."""
    cfg = config(tmp_path)
    eps, lr = cfg.epsilon, cfg.learning_rate
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        trained_looking(tr)
        want_h = [torch.ones(t.shape, dtype=torch.float64) for t in tr.trainable.tensors]
        for step in range(3):
            before = [t.clone() for t in tr.trainable.tensors]
            result = tr.step(TASK)
            after = [t.clone() for t in tr.trainable.tensors]
            (seed,) = result.seeds
            l0, lp, lm = losses_one_forward_each(tr, before, seed, want_h)
            with torch.no_grad():
                tr.tensors.copy_back(after)
            tr.trainable.after_update()
            # The step measured what one forward per side measures (exact in float32) ...
            assert result.loss == l0 and result.projected_grads == [(lp - lm) / (2 * eps)]
            assert tr.trajectory.curvatures[-1] == [lp + lm - 2 * l0] and len(tr.trajectory.curvatures) == step + 1
            # ... and moved H and theta as the formula says.
            for i, (start, got) in enumerate(zip(before, after)):
                z = tr.tensors.z(seed, i, start).double()
                want_h[i] = (1 - ALPHA) * want_h[i] + ALPHA * abs(lp + lm - 2 * l0) / (2 * eps ** 2) * want_h[i] * z * z
                want = start.double() - lr * (lp - lm) / (2 * eps) * z / want_h[i].sqrt()
                assert torch.allclose(tr.update.hessian.h[i], want_h[i], rtol=1e-12, atol=0), (step, i)
                assert torch.allclose(got.double(), want, rtol=0, atol=1e-7), (step, i)
            assert not all(torch.equal(a, b) for a, b in zip(before, after))
        assert min(float((h - 1).abs().max()) for h in want_h) > 0.1  # H moved in every tensor


def test_a_hizoo_run_replays_to_its_weights_bit_for_bit_and_rebuilds_its_hessian(tmp_path, tiny_llama):
    cfg = config(tmp_path)
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        tr.train(TASK)
        trained = {n: t.clone() for n, t in zip(tr.trainable.names, tr.trainable.tensors)}
        live_h = [h.clone() for h in tr.update.hessian.h]
        start = [t.clone() for t in tr.trainable.tensors]
    record = Trajectory.load(cfg.output_dir)
    assert len(record.steps) == 4 and len(record.curvatures) == 4 and all(len(c) == 1 for c in record.curvatures)
    out = replay(cfg.output_dir, str(tmp_path / "replayed"))
    rebuilt = load_file(os.path.join(out, "adapter_model.safetensors"))
    assert rebuilt.keys() == trained.keys()
    assert all(torch.equal(rebuilt[n], trained[n]) for n in trained)
    initial = load_file(os.path.join(cfg.output_dir, "adapter_init", "adapter_model.safetensors"))
    assert not all(torch.equal(rebuilt[n], initial[n]) for n in trained)
    # Resume's way: H from the record alone, bit for bit the live one.
    update = StepUpdate(MeZOConfig.from_record(record.config), PerturbableTensors(start, [True] * len(start)))
    update.rebuild(record.steps, record.curvatures)
    assert all(torch.equal(a, b) for a, b in zip(update.hessian.h, live_h))
    assert not all(torch.equal(h, torch.ones_like(h)) for h in live_h)
