"""A run rebuilt from its trajectory, bit for bit (the kill-and-resume test is in
tests/integration/test_kill_and_resume.py)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import make_causal_lm, runner_for, trainer_for
from safetensors.torch import load_file
from sglang.srt.mezo_trainer import main as trainer_main
from transformers import AutoModelForCausalLM

from sglang.srt.mezo.engine.forward import ExtendForward
from sglang.srt.mezo.engine.runner import RunnerSpec
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.replay_weights import hf_pieces, replay
from sglang.srt.mezo.training.trainer import MeZOTrainer
from sglang.srt.mezo.zo.trajectory import Trajectory

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = [([0, 5, 7, 9, 11, 3, 40], 42), ([0, 8, 200, 4], 42), ([0, 300, 301, 302, 303, 304, 305, 306, 307], 42),
        ([0, 17, 18, 19], 42)]


def config(tmp_path, **kw) -> MeZOConfig:
    base = dict(lora_rank=4, lora_alpha=8, batch_size=4, num_steps=6, learning_rate=1e-2, epsilon=1e-2, n_spsa=2,
                weight_decay=0.1, eval_steps=3, eval_at_start=False, device="cpu", progress_bar=False,
                output_dir=str(tmp_path / "run"), seed=5)
    base.update(kw)
    return MeZOConfig(**base)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_lora_replay_is_bit_identical(tmp_path, tiny_llama, dtype):
    cfg = config(tmp_path, dtype=dtype)
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        tr.train(TASK)
        trained = {n: t.clone() for n, t in zip(tr.trainable.names, tr.trainable.tensors)}
    out = replay(cfg.output_dir, str(tmp_path / "replayed"))
    rebuilt = load_file(os.path.join(out, "adapter_model.safetensors"))
    assert rebuilt.keys() == trained.keys()
    assert all(rebuilt[n].dtype == trained[n].dtype and torch.equal(rebuilt[n], trained[n]) for n in trained)
    # The adapter the run itself saved is the same.
    saved = load_file(os.path.join(cfg.output_dir, "adapter", "adapter_model.safetensors"))
    assert all(torch.equal(saved[n], rebuilt[n]) for n in trained)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_full_weight_replay_gives_a_checkpoint_transformers_and_sglang_load(tmp_path, tiny_llama, dtype):
    cfg = config(tmp_path, trainable="full", learning_rate=1e-3, epsilon=1e-3, n_spsa=1, num_steps=4, dtype=dtype)
    seqs, positions = [s for s, _ in TASK], [len(s) - 1 for s, _ in TASK]
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        tr.train(TASK)
        trained = {n: t.clone() for n, t in zip(tr.trainable.names, tr.trainable.tensors)}
        trained_logits = tr.logits(seqs, positions)
    out = replay(cfg.output_dir, str(tmp_path / "replayed"))
    state = load_file(os.path.join(out, "model.safetensors"))
    for name, t in trained.items():
        pieces = torch.cat([state[p] for p in hf_pieces(name)])
        assert torch.equal(pieces, t[: pieces.shape[0]]), name  # bit for bit (padding rows aside)
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=getattr(torch, dtype)).eval()
    with torch.no_grad():
        hf_logits = torch.stack([hf(torch.tensor([s])).logits[0, p] for s, p in zip(seqs, positions)])
    assert torch.allclose(hf_logits.float(), trained_logits.float(), atol=1e-4 if dtype == "float32" else 5e-2)
    with runner_for(RunnerSpec(out, device="cpu", dtype=dtype)) as runner:
        served = ExtendForward(runner)(seqs, positions)
    assert torch.equal(served, trained_logits)


def test_replay_refuses_another_base_model_and_the_cli_runs(tmp_path, tiny_llama, llama_tokenizer_dir, capsys):
    cfg = config(tmp_path, num_steps=2, eval_steps=0)
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        tr.train(TASK)
    other = make_causal_lm(str(tmp_path / "other"), "llama", seed=1, tokenizer_dir=llama_tokenizer_dir)
    with pytest.raises(ValueError, match="is not the one this run trained .* replay refuses"):
        replay(cfg.output_dir, str(tmp_path / "x"), base_model=other)
    assert trainer_main(["replay", cfg.output_dir, "--out", str(tmp_path / "cli")]) == 0
    assert os.path.isfile(tmp_path / "cli" / "adapter_model.safetensors")
    assert trainer_main(["replay", cfg.output_dir, "--out", str(tmp_path / "y"), "--base-model", other]) == 2
    assert "replay refuses" in capsys.readouterr().err


def test_a_20000_step_trajectory_is_under_half_a_megabyte():
    t = Trajectory(tensor_names=[f"t{i}" for i in range(120)], tensor_shapes=[[8, 576]] * 120, dtype="float32",
                   device_type="cpu", n_spsa=1)
    for i in range(20000):
        t.append([(i * 2654435761) % 2**62], [0.1 * i])
    size = len(json.dumps(t.to_dict()))
    assert size < 500_000, size
    assert Trajectory.from_dict(json.loads(json.dumps(t.to_dict()))).steps == t.steps
