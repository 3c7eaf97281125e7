"""A full-weight step with the add/subtract restore draws z one time fewer (3 times with one seed),
and its replay lands on the trained weights bit for bit."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import trainer_for
from safetensors.torch import load_file

import sglang.srt.mezo.zo.noise as noise
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.replay_weights import hf_pieces, replay
from sglang.srt.mezo.training.trainer import MeZOTrainer
from sglang.srt.mezo.zo.trajectory import Trajectory

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = [([0, 5, 7, 9, 11, 3, 40], 42), ([0, 8, 200, 4], 42), ([0, 300, 301, 302, 303, 304, 305, 306, 307], 42)]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_add_subtract_run_draws_z_three_times_a_step_and_replays_bit_for_bit(small_chunks, monkeypatch, tmp_path,
                                                                            tiny_llama, dtype, kind):
    cfg = MeZOConfig(trainable="full", exact_restore=False, dtype=dtype, noise=kind, batch_size=3, num_steps=3, n_spsa=2,
                     learning_rate=1e-3, epsilon=1e-2, weight_decay=0.1, eval_steps=3, eval_at_start=False,
                     device="cpu", progress_bar=False, output_dir=str(tmp_path / "run"), seed=5)
    fills = []  # z drawn: Gaussian values, or random words (64 signs each, by the kernel or the torch path)
    if kind == "gaussian":
        real_fill = noise._fill
        monkeypatch.setattr(noise, "_fill", lambda out, gen, kind, *scratch: fills.append(out.numel()) or real_fill(out, gen, kind, *scratch))
    else:
        real_words = noise._random_words
        monkeypatch.setattr(noise, "_random_words", lambda words, gen: fills.append(words.numel()) or real_words(words, gen))
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        assert tr.restore == "add-subtract"
        tr.tensors.perturb(1, 0.0)
        one_draw = sum(fills)
        assert one_draw > 0
        fills.clear()
        tr.step(TASK)
        # Per seed +eps, -2 eps, +eps and the update's draw, except that the last seed's restore and
        # update share one: 4 n - 1 draws (3 with one seed) where there were 4 n.
        assert sum(fills) == (4 * cfg.n_spsa - 1) * one_draw
        tr.train(TASK)
        trained = {n: t.clone() for n, t in zip(tr.trainable.names, tr.trainable.tensors)}
    recorded = Trajectory.load(cfg.output_dir)
    assert (recorded.restore, recorded.noise) == ("add-subtract", kind)
    out = replay(cfg.output_dir, str(tmp_path / "replayed"))
    state = load_file(os.path.join(out, "model.safetensors"))
    for name, t in trained.items():
        pieces = torch.cat([state[p] for p in hf_pieces(name)])
        assert torch.equal(pieces, t[: pieces.shape[0]]), name
