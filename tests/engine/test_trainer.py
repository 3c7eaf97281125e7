"""MeZOTrainer on SGLang's forward path, checked against HF transformers / PEFT."""

from __future__ import annotations

import json
import math
import os
import weakref

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

import pytest
import torch
import transformers
from conftest import make_causal_lm, runner_for, trainer_for
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file
from sglang.srt.lora.lora_registry import LoRARef
from torch.utils._pytree import tree_leaves
from transformers import AutoModelForCausalLM

import sglang.srt.mezo.zo.perturbable as trainer_moves
import sglang.srt.mezo.zo.update as mt
from sglang.srt.mezo.engine.forward import ExtendForward
from sglang.srt.mezo.engine.runner import RunnerSpec
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.trainer import MeZOTrainer
from sglang.srt.mezo.zo.trajectory import Trajectory
from sglang.srt.mezo.zo.update import replay_steps, split_evenly

SEQS = [[0, 5, 7, 9, 11, 3, 40], [0, 8, 200, 4], [0, 300, 301, 302, 303, 304, 305, 306, 307]]
# A fixed prompt -> a chosen next token: learnable by a rank-4 adapter in a few hundred steps.
TASK = [(s, 42) for s in SEQS] + [([0, 17, 18, 19], 42)]


def hf_logits(model, seqs, positions):
    with torch.no_grad():
        return torch.stack([model(torch.tensor([s])).logits[0, p] for s, p in zip(seqs, positions)])


def hf_loss(model, batch):
    logits = hf_logits(model, [s for s, _ in batch], [len(s) - 1 for s, _ in batch])
    return torch.nn.functional.cross_entropy(logits, torch.tensor([t for _, t in batch])).item()


def small_config(tmp_path, **kw) -> MeZOConfig:
    # fp32 and plain SGD: the numbers are checked against PEFT's and against the MeZO update itself.
    base = dict(lora_rank=4, lora_alpha=8, batch_size=4, progress_bar=False, output_dir=str(tmp_path / "out"),
                dtype="float32", update_rule="sgd")
    base.update(kw)
    return MeZOConfig(**base)


def peft_model(model_dir, adapter_dir):
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter_dir).eval()


def load_into_peft(model, tensors: dict[str, torch.Tensor]) -> None:
    result = set_peft_model_state_dict(model, {k: v.detach().clone() for k, v in tensors.items()})
    assert not [k for k in result.unexpected_keys if "lora" in k]


# ---- the forward path ------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_sglang_logits_match_hf(tmp_path, arch):
    path = make_causal_lm(str(tmp_path / arch), arch)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    positions = [3, 2, 8]
    with runner_for(RunnerSpec(path)) as runner:
        assert type(runner.model).__name__ == {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[arch]
        forward = ExtendForward(runner)
        full = forward(SEQS, positions)
        rows = forward(SEQS, positions, vocab_ids=torch.tensor([5, 42, 300]))
    ref = hf_logits(hf, SEQS, positions)
    assert (full - ref).abs().max().item() < 1e-4
    assert (rows - ref[:, [5, 42, 300]]).abs().max().item() < 1e-4


def test_lora_logits_and_projected_gradient_match_peft(tmp_path, tiny_llama):
    cfg = small_config(tmp_path, epsilon=1e-2)
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        # A trained-looking adapter (B != 0) so that the adapter's effect is visible.
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for t in tr.trainable.tensors:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.05)
        tr.trainable.after_update()
        theta = {n: t.clone() for n, t in zip(tr.trainable.names, tr.trainable.tensors)}
        adapter = tr.save(str(tmp_path / "saved"))
        peft = peft_model(tiny_llama, adapter)

        batch = TASK[:3]
        seqs, pos = [s for s, _ in batch], [len(s) - 1 for s, _ in batch]
        sg = tr.logits(seqs, pos)
        ref = hf_logits(peft, seqs, pos)
        with peft.disable_adapter():
            base = hf_logits(peft, seqs, pos)
        assert (sg - ref).abs().max().item() < 1e-4
        assert (ref - base).abs().max().item() > 1e-2  # the adapter does change the logits

        seed = 1234
        g, lp, lm = tr.projected_gradient(batch, seed)
        eps = cfg.epsilon
        losses = {}
        for sign in (1, -1):
            perturbed = {
                n: theta[n] + sign * eps * tr.tensors.z(seed, i, theta[n])
                for i, n in enumerate(tr.trainable.names)
            }
            load_into_peft(peft, perturbed)
            losses[sign] = hf_loss(peft, batch)
        g_hf = (losses[1] - losses[-1]) / (2 * eps)
        assert abs(lp - losses[1]) < 1e-5 and abs(lm - losses[-1]) < 1e-5
        assert abs(g) > 1e-3
        assert abs(g - g_hf) < 1e-3 * max(1.0, abs(g_hf))


# ---- the MeZO step ---------------------------------------------------------------------------


@pytest.mark.parametrize("trainable,dtype,paired", [
    ("lora", "float32", True), ("lora", "float16", True), ("lora", "bfloat16", True),
    ("lora", "bfloat16", False), ("full", "float32", False), ("full", "bfloat16", False),
])
def test_restore_is_bitwise_exact(tmp_path, trainable, dtype, paired):
    path = make_causal_lm(str(tmp_path / "m"), "llama", dtype=dtype)
    cfg = small_config(tmp_path, trainable=trainable, dtype=dtype, epsilon=1e-1, paired_forward=paired)
    with trainer_for(MeZOTrainer, path, cfg) as tr:
        with torch.no_grad():  # nonzero LoRA B so that every tensor has real values to lose
            for t in tr.trainable.tensors:
                t.add_(0.01)
        before = [t.clone() for t in tr.trainable.tensors]
        assert before[0].dtype == getattr(torch, dtype)
        for seed in (1, 2, 3):
            tr.projected_gradient(TASK, seed)
        assert all(torch.equal(a, b) for a, b in zip(before, tr.trainable.tensors))

        if dtype == "bfloat16" and not paired:
            # The reference code's add/subtract restore is not exact here: the check can fail.
            tr.estimator.exact = False
            for seed in (1, 2, 3):
                tr.projected_gradient(TASK, seed)
            assert not all(torch.equal(a, b) for a, b in zip(before, tr.trainable.tensors))


def test_step_moves_weights_along_minus_z(tmp_path, tiny_llama):
    cfg = small_config(tmp_path, learning_rate=1e-2, epsilon=1e-2)
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        before = [t.clone() for t in tr.trainable.tensors]
        result = tr.step(TASK)
        (g,), (seed,) = result.projected_grads, result.seeds
        assert g != 0
        for i, (b, t) in enumerate(zip(before, tr.trainable.tensors)):
            z = tr.tensors.z(seed, i, t)
            torch.testing.assert_close(t - b, -cfg.learning_rate * g * z, rtol=1e-5, atol=1e-7)
        # SGLang's host copy (what it reloads after an eviction) follows the pool.
        for lt in tr.trainable.lora.tensors:
            assert torch.equal(lt.host, lt.pool)


def test_deterministic(tmp_path, tiny_llama):
    runs = []
    for k in range(2):
        cfg = small_config(tmp_path / str(k), num_steps=5, learning_rate=1e-2, seed=7, n_spsa=2, weight_decay=0.1)
        with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
            out = tr.train(TASK)
            runs.append((out["train_loss"], [t.clone() for t in tr.trainable.tensors]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_mezo_lowers_the_loss_of_a_learnable_task(tmp_path, tiny_llama):
    cfg = small_config(tmp_path, num_steps=300, learning_rate=5e-2, epsilon=1e-2, eval_steps=100,
                       eval_at_start=False)
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        start = tr.evaluate(TASK)["eval_loss"]
        out = tr.train(TASK, TASK)
    assert out["steps"] == 300 and len(out["train_loss"]) == 300
    assert out["eval_loss"] < start - 0.5, (start, out["eval_loss"])
    lines = [json.loads(x) for x in open(os.path.join(cfg.output_dir, "metrics.jsonl"))]
    assert sum(x["event"] == "step" for x in lines) == 300
    assert [x["step"] for x in lines if x["event"] == "eval"] == [100, 200, 300]


# ---- saving ----------------------------------------------------------------------------------


def test_saved_adapter_loads_in_peft_and_sglang_with_the_same_logits(tmp_path, tiny_llama):
    cfg = small_config(tmp_path, num_steps=20, learning_rate=5e-2)
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        out = tr.train(TASK)
        seqs, pos = [s for s, _ in TASK], [len(s) - 1 for s, _ in TASK]
        inside = tr.logits(seqs, pos)
    adapter = out["adapter_path"]
    assert sorted(f for f in os.listdir(adapter) if not f.startswith(".")) == [
        "adapter_config.json", "adapter_model.safetensors"]
    assert (hf_logits(peft_model(tiny_llama, adapter), seqs, pos) - inside).abs().max().item() < 1e-4

    spec = RunnerSpec(tiny_llama, lora_rank=4, lora_target_modules=["q_proj", "v_proj"])
    with runner_for(spec) as runner:
        ref = LoRARef(lora_name="trained", lora_path=adapter, pinned=False)
        assert runner.load_lora_adapter(ref).success
        served = ExtendForward(runner)(seqs, pos, lora_ids=[ref.lora_id] * len(seqs))
    assert (served - inside).abs().max().item() < 1e-5


# ---- bad input -------------------------------------------------------------------------------


def test_bad_configuration_is_rejected_with_a_clear_error(tmp_path, tiny_llama):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MeZOTrainer(str(tmp_path / "no-such-model"), small_config(tmp_path))
    with pytest.raises(ValueError, match="unknown trainable set 'prefix'"):
        MeZOTrainer(tiny_llama, small_config(tmp_path, trainable="prefix"))
    with pytest.raises(ValueError, match="epsilon must be a positive number"):
        MeZOTrainer(tiny_llama, small_config(tmp_path, epsilon=0.0))
    with pytest.raises(ValueError, match="epsilon must be a positive number"):
        MeZOTrainer(tiny_llama, small_config(tmp_path, epsilon=-1e-3))
    with pytest.raises(ValueError, match="LoRA target modules \\['c_attn'\\] are not supported"):
        MeZOTrainer(tiny_llama, small_config(tmp_path, lora_target_modules=("q_proj", "c_attn")))


def test_target_module_the_runner_lacks(tmp_path, tiny_llama):
    spec = RunnerSpec(tiny_llama, lora_rank=4, lora_target_modules=["q_proj", "v_proj"])
    with runner_for(spec) as runner:
        with pytest.raises(ValueError, match="'down_proj' is not in this model"):
            MeZOTrainer(config=small_config(tmp_path, lora_target_modules=("down_proj",)), runner=runner)


class _NaNAtStep(MeZOTrainer):
    nan_from_call = 10**9

    def compute_loss(self, batch):
        self.calls = getattr(self, "calls", 0) + 1
        return math.nan if self.calls >= self.nan_from_call else super().compute_loss(batch)


def test_nan_loss_stops_the_run_with_a_clear_reason_and_hands_back_good_weights(tmp_path, tiny_llama):
    cfg = small_config(tmp_path, num_steps=10, eval_steps=2, learning_rate=5e-2)
    with trainer_for(_NaNAtStep, tiny_llama, cfg) as tr:
        tr.nan_from_call = 2 * 5 + 1  # two forwards a step: the 6th step sees NaN
        result = tr.train(TASK)
        good = {n: t.clone() for n, t in zip(tr.trainable.names, tr.trainable.tensors)}
    assert result["steps"] == 5 and "not finite at step 5" in result["stop_reason"]
    assert [d["signal"] for d in result["divergences"]] == ["non_finite_loss"]
    assert result["returned_step"] == 5  # no validation data: the last step, the last good weights
    saved = load_file(os.path.join(cfg.output_dir, "adapter", "adapter_model.safetensors"))
    assert set(saved) == set(good)
    assert all(torch.equal(saved[n], good[n]) and torch.isfinite(saved[n]).all() for n in good)
    assert not [f for f in os.listdir(os.path.join(cfg.output_dir, "adapter")) if f.startswith(".")]


# ---- memory ----------------------------------------------------------------------------------


class _Allocations(torch.utils._python_dispatch.TorchDispatchMode):
    """Bytes of the new tensors every op creates while active: live peak and largest single one."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = self.largest = 0
        self.largest_op = None
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Views (select, slice, ...) share an input's storage: not an allocation.
        inputs = {x.untyped_storage().data_ptr() for x in tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in self._seen or key in inputs or storage.nbytes() == 0:
                continue
            self._seen.add(key)
            self.live += storage.nbytes()
            if storage.nbytes() > self.largest:
                self.largest, self.largest_op = storage.nbytes(), str(func)
            self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._free, key, storage.nbytes())
        return out

    def _free(self, key, nbytes):
        self._seen.discard(key)
        self.live -= nbytes


def test_lora_step_costs_what_two_forwards_cost(tmp_path, llama_tokenizer_dir):
    # Weights large next to the activations of a short batch, so a weight-sized copy would show.
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=400, hidden_size=512, intermediate_size=2048, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False)
    path = str(tmp_path / "wide")
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    weight_bytes = 512 * 512 * 4  # the smallest base weight matrix (q_proj) in fp32

    with trainer_for(MeZOTrainer, path, small_config(tmp_path, lora_rank=8)) as tr:
        assert tr.trainable.minus is not None  # the default: both passes in one forward
        tr.step(TASK)  # warm-up
        with _Allocations() as fwd:  # the same tokens as the step's one forward
            tr.compute_loss(TASK + TASK)
        with _Allocations() as step:
            tr.step(TASK)
        lora_bytes = sum(t.numel() * t.element_size() for t in tr.trainable.tensors)
    assert step.largest < weight_bytes, (step.largest, step.largest_op)
    assert step.peak <= fwd.peak + 3 * lora_bytes, (step.peak, fwd.peak, lora_bytes)

    # The same meter sees the full-weight snapshot: the check above can fail.
    with trainer_for(MeZOTrainer, path, small_config(tmp_path, trainable="full")) as tr:
        with _Allocations() as full_step:
            tr.step(TASK)
    assert full_step.largest >= weight_bytes


def test_paired_forward_gives_the_same_step_as_two_forwards(tmp_path, tiny_llama):
    results = {}
    for paired in (False, True):
        cfg = small_config(tmp_path / str(paired), paired_forward=paired, num_steps=3, learning_rate=1e-2)
        with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
            assert (tr.trainable.minus is not None) == paired
            before = [t.clone() for t in tr.trainable.tensors]
            g, lp, lm = tr.projected_gradient(TASK, 99)
            assert all(torch.equal(a, b) for a, b in zip(before, tr.trainable.tensors))
            out = tr.train(TASK)
            results[paired] = (g, lp, lm, out["train_loss"], [t.clone() for t in tr.trainable.tensors])
    a, b = results[False], results[True]
    assert abs(a[1] - b[1]) < 1e-5 and abs(a[2] - b[2]) < 1e-5 and abs(a[0] - b[0]) < 1e-3
    assert all((x - y).abs().max().item() < 1e-5 for x, y in zip(a[4], b[4]))


def test_split_batch_estimates_each_direction_on_its_own_part_in_one_forward(tmp_path, tiny_llama):
    # Direction k's (L+, L-) is what a plain paired trainer measures for seed k on part k alone.
    cfg = small_config(tmp_path / "split", n_spsa=2, split_batch=True, num_steps=2, learning_rate=1e-2)
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        assert len(tr.trainable.probe_slots) == 2 and tr.runner.lora_manager.max_loras_per_batch == 5
        start = [t.clone() for t in tr.trainable.tensors]
        forwards = []
        original = tr.model.forward
        tr.model.forward = lambda *a, **kw: forwards.append(len(a[0])) or original(*a, **kw)
        split = tr.estimator.measure(TASK, [11, 12]).losses
        assert forwards == [2 * len(TASK)]  # both directions, both signs: one forward of the batch twice
        assert all(torch.equal(a, b) for a, b in zip(start, tr.trainable.tensors))
        tr.model.forward = original
        tr.train(TASK)
        trained = [t.clone() for t in tr.trainable.tensors]
        steps = tr.trajectory.steps
        tr.close()
    assert [len(s) for s, _ in steps] == [2, 2]
    plain_cfg = small_config(tmp_path / "plain", num_steps=2, learning_rate=1e-2)
    with trainer_for(MeZOTrainer, tiny_llama, plain_cfg) as plain:
        assert all(torch.equal(a, b) for a, b in zip(start, plain.trainable.tensors))  # the same init
        parts = split_evenly(len(TASK), 2)
        for (lp, lm), seed, rows in zip(split, [11, 12], parts):
            ref_p, ref_m = plain.perturbed_losses([TASK[r] for r in rows], seed)
            assert abs(lp - ref_p) < 1e-5 and abs(lm - ref_m) < 1e-5 and lp != lm
        # The run's trajectory replays to its weights: n-SPSA's (seeds, grads) record, as it is.
        replay_steps(steps, tr.config, plain.trainable.tensors, plain.tensors.decay, {})
        assert all(torch.equal(a, b) for a, b in zip(trained, plain.trainable.tensors))
        assert not all(torch.equal(a, b) for a, b in zip(start, trained))


def test_a_full_weight_step_puts_the_next_perturbation_on_in_its_update_pass(tmp_path, tiny_llama, monkeypatch):
    """Told the next step's batch (MeZORun tells it), a full-weight step with the add/subtract
    restore (inference memory) makes two passes over the weights instead of three: its update pass also puts on the next step's theta + eps z. Weights
    and trajectory are bit for bit those of steps taken one at a time. A forward in between (an
    evaluation) takes the perturbation off first; the record says so, and replay repeats it."""
    passes = []
    real_move = mt.move
    for module in (trainer_moves, mt):  # the trainer's steps and replay's
        monkeypatch.setattr(module, "move", lambda *a, **k: passes.append(1) or real_move(*a, **k))
    batches = [TASK[:2], TASK[2:], TASK[1:3], TASK]
    runs = {}
    for mode in ("one at a time", "ahead", "interrupted"):
        cfg = small_config(tmp_path / mode.replace(" ", "-"), trainable="full", learning_rate=1e-3, epsilon=1e-3,
                           weight_decay=0.01, num_steps=len(batches), exact_restore=False)
        with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
            assert tr.restore == "add-subtract"
            start = [t.clone() for t in tr.trainable.tensors]
            passes.clear()
            for k, batch in enumerate(batches):
                tr.step(batch, batches[k + 1] if mode != "one at a time" and k + 1 < len(batches) else None)
                if mode == "interrupted" and k == 1:
                    assert tr.estimator.ahead.seed is not None
                    evaluated = tr.evaluate(TASK)
                    assert tr.estimator.ahead.seed is None
                    at_settle = [t.clone() for t in tr.trainable.tensors]  # what a save here holds
            trained = [t.clone() for t in tr.trainable.tensors]
            trajectory = Trajectory.from_dict(tr.trajectory.to_dict())  # what a checkpoint holds
            # Replay from the start: the whole run, and its first two steps with and without the
            # record of the interruption (a checkpoint saved at the interruption holds those).
            replayed = {}
            for name, steps, settled in (("all", trajectory.steps, trajectory.settled),
                                         ("two", trajectory.steps[:2], trajectory.settled),
                                         ("two, no record", trajectory.steps[:2], [])):
                for t, s in zip(tr.trainable.tensors, start):
                    t.copy_(s)
                mt.replay_steps(steps, tr.config, tr.trainable.tensors, tr.tensors.decay, {},
                                restore=trajectory.restore, noise=trajectory.noise, settled=settled)
                replayed[name] = [t.clone() for t in tr.trainable.tensors]
            runs[mode] = (len(passes) - (len(batches) + 2 + 2), trained, trajectory, replayed)
    one, ahead, interrupted = runs["one at a time"], runs["ahead"], runs["interrupted"]
    # Passes while stepping (the replays' one a step taken out: 4 + 2 + 2): 3 a step; 2 once the next is known;
    # an interruption costs the pass that takes the perturbation off and the +eps pass it undid.
    assert (one[0], ahead[0], interrupted[0]) == (12, 9, 11)
    assert ahead[2].steps == one[2].steps and ahead[2].settled == one[2].settled == []
    assert all(torch.equal(a, b) for a, b in zip(ahead[1], one[1]))
    assert all(torch.equal(a, b) for a, b in zip(one[3]["all"], one[1]))
    # The evaluation saw the trained weights, and only rounding tells the interrupted run apart.
    seed_of_step_3 = interrupted[2].steps[2][0][0]
    assert interrupted[2].settled == [(2, seed_of_step_3)] and interrupted[2].steps == one[2].steps
    assert all(torch.allclose(a, b, atol=1e-6, rtol=0) for a, b in zip(interrupted[1], one[1]))
    assert all(torch.equal(a, b) for a, b in zip(interrupted[3]["all"], interrupted[1]))
    assert all(torch.equal(a, b) for a, b in zip(interrupted[3]["two"], at_settle))
    assert not all(torch.equal(a, b) for a, b in zip(interrupted[3]["two, no record"], at_settle))
    assert evaluated["eval_loss"] > 0


def test_zo_adam_is_pytorch_adam_on_the_estimate_g_z_and_replays(tmp_path, tiny_llama):
    """update_rule="adam": three steps move the adapter as torch.optim.Adam moves a copy given
    g z as its gradient; the trajectory replays to the same weights bit for bit (the moments are
    recomputed from the record); every weight is refused (the moments would double the model)."""
    cfg = small_config(tmp_path, update_rule="adam", learning_rate=1e-2, num_steps=3)
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        start = [t.clone() for t in tr.trainable.tensors]
        copy = [torch.nn.Parameter(t.clone()) for t in start]
        reference = torch.optim.Adam(copy, lr=cfg.learning_rate)
        for _ in range(3):
            result = tr.step(TASK)
            (g,), (seed,) = result.projected_grads, result.seeds
            for i, (p, t) in enumerate(zip(copy, tr.trainable.tensors)):
                p.grad = g * tr.tensors.z(seed, i, t)
            reference.step()
        assert all(torch.allclose(t, p, rtol=1e-5, atol=1e-7) for t, p in zip(tr.trainable.tensors, copy))
        assert not all(torch.equal(t, s) for t, s in zip(tr.trainable.tensors, start))
        trained = [t.clone() for t in tr.trainable.tensors]
        for t, s in zip(tr.trainable.tensors, start):
            t.copy_(s)
        replay_steps(tr.trajectory.steps, tr.config, tr.trainable.tensors, tr.tensors.decay, {})
        assert all(torch.equal(a, b) for a, b in zip(trained, tr.trainable.tensors))
    with pytest.raises(ValueError, match="update_rule='adam' keeps Adam's two moments.*use trainable='lora'"):
        small_config(tmp_path, update_rule="adam", trainable="full")
    with pytest.raises(ValueError, match="update_rule='adam' keeps Adam's two moments"):  # full by default
        MeZOConfig(update_rule="adam").resolve("masked")


def test_split_batch_bad_settings_are_refused(tmp_path, tiny_llama):
    with pytest.raises(ValueError, match="needs trainable='lora'"):
        small_config(tmp_path, trainable="full", split_batch=True)
    with pytest.raises(ValueError, match="batch_size \\(4\\) must be >= n_spsa"):
        small_config(tmp_path, n_spsa=5, split_batch=True)
    spec = RunnerSpec(tiny_llama, lora_rank=4, lora_target_modules=["q_proj", "v_proj"], max_loras_per_batch=4)
    with runner_for(spec) as runner:
        with pytest.raises(ValueError, match="needs 4 free LoRA slots \\(this runner has 3"):
            MeZOTrainer(config=small_config(tmp_path, n_spsa=2, split_batch=True), runner=runner)


def test_trains_on_a_runner_it_is_handed(tmp_path, tiny_llama):
    # A live server's runner: built elsewhere, with room for its own adapters; the trainer loads
    # its adapter next to them and frees nothing of theirs.
    spec = RunnerSpec(tiny_llama, lora_rank=4, lora_target_modules=["q_proj", "v_proj"], max_loras_per_batch=4)
    with runner_for(spec) as runner:
        free_before = runner.token_to_kv_pool_allocator.available_size()
        cfg = small_config(tmp_path, num_steps=100, learning_rate=5e-2, lr_schedule="linear")
        tr = MeZOTrainer(config=cfg, runner=runner)
        assert tr.lr_at(0) == cfg.learning_rate and tr.lr_at(50) == cfg.learning_rate / 2
        start = tr.evaluate(TASK)["eval_loss"]
        out = tr.train(TASK, TASK)
        assert out["eval_loss"] < start - 0.3
        assert tr.trainable.lora_id in runner.lora_manager.loras
        assert runner.token_to_kv_pool_allocator.available_size() == free_before
