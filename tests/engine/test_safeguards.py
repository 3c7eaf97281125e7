"""A run driven to diverge (a learning rate far too large) on a real SGLang runner: the divergence is
noticed, the run reacts by its rule (recorded in the trajectory, so replay and resume repeat it),
and the weights handed back are the checkpoint with the lowest validation loss."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from sglang.srt.mezo.engine.runner import release_model_runner
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.checkpoints import checkpoint_dirs
from sglang.srt.mezo.training.divergence import MAX_SHRINKS, SHRINK
from sglang.srt.mezo.training.plan import prepare, run, start_run
from sglang.srt.mezo.training.replay_weights import replay
from sglang.srt.mezo.zo.trajectory import Trajectory

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LR = 2.0  # the toy task learns at 5e-2: forty times that throws the adapter far off


def spec(model: str, toy_file: str, out: str, **kw) -> MeZOConfig:
    base = dict(model_path=model, task="sst-2", train_file=toy_file, eval_file=toy_file, device="cpu",
                progress_bar=False, label_words={"0": "bad", "1": "good"}, learning_rate=LR, epsilon=1e-2,
                batch_size=8, lora_rank=4, dtype="float32", num_steps=24, eval_steps=4, divergence_window=3,
                output_dir=out, seed=3)
    base.update(kw)
    return MeZOConfig(**base)


def adapter(folder: str) -> dict:
    return load_file(os.path.join(folder, "adapter", "adapter_model.safetensors"))


def events(out: str, kind: str) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [e for e in map(json.loads, f) if e["event"] == kind]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def diverged(tiny_llama, toy_file, tmp_path_factory):
    """The straight run with the default rule (shrink), kept for the tests below."""
    out = str(tmp_path_factory.mktemp("diverged") / "run")
    return run(prepare(spec(tiny_llama, toy_file, out))), out


def test_a_diverging_run_is_noticed_and_each_shrink_halves_the_steps_that_follow(diverged):
    result, out = diverged
    found = result["divergences"]
    assert found, "a learning rate 40x too large went unnoticed"
    assert found == [{k: v for k, v in e.items() if k != "event"} for e in events(out, "divergence")]
    for d in found:
        assert d["reaction"] in ("shrink", "stop") and d["value"] > d["best"] and d["message"].startswith("Divergence")
    shrinks = [d["step"] for d in found if d["reaction"] == "shrink"]
    assert 1 <= len(shrinks) <= MAX_SHRINKS
    lrs = {e["step"]: e["lr"] for e in events(out, "step")}
    for step, lr in lrs.items():  # the lr of step k (1-based) is set by the reactions after steps < k
        assert lr == pytest.approx(LR * SHRINK ** sum(s < step for s in shrinks))
    # The trajectory records the changes; replaying the whole run (its last checkpoint) lands on
    # that checkpoint's adapter bit for bit.
    last = checkpoint_dirs(out)[-1]
    assert Trajectory.load(last).lr_scales == [(s, SHRINK) for s in shrinks]
    assert same(load_file(os.path.join(replay(last, out + "-replayed"), "adapter_model.safetensors")),
                adapter(last))


def test_the_weights_handed_back_are_the_checkpoint_with_the_lowest_validation_loss(diverged):
    result, out = diverged
    history = result["eval_history"]
    best = min(history, key=lambda r: r["eval_loss"])
    assert result["returned_step"] == best["step"] < result["steps"], result["returned_reason"]
    assert result["returned_eval"]["eval_loss"] <= history[0]["eval_loss"]  # never worse than the start
    assert f"step {best['step']} has the lowest validation loss" in result["returned_reason"]
    chosen = os.path.join(out, "checkpoints", f"step-{best['step']:06d}")
    assert same(adapter(out), adapter(chosen)) and result["adapter_path"] == os.path.join(out, "adapter")
    # The trajectory beside it replays to it; the last checkpoint keeps the whole run.
    assert Trajectory.load(out).steps == Trajectory.load(chosen).steps
    assert len(Trajectory.load(checkpoint_dirs(out)[-1]).steps) == result["steps"]
    assert [e["returned_step"] for e in events(out, "returned")] == [best["step"]]
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["returned_step"] == best["step"]


def test_the_starting_weights_are_a_candidate(diverged):
    result, out = diverged
    start = adapter(os.path.join(out, "checkpoints", "step-000000"))
    assert all(not t.any() for name, t in start.items() if "lora_B" in name)  # B = 0: the base model's outputs


def test_a_stop_rule_ends_the_run_at_the_first_divergence(diverged, tiny_llama, toy_file, tmp_path):
    straight, _ = diverged
    out = str(tmp_path / "stop")
    result = run(prepare(spec(tiny_llama, toy_file, out, on_divergence="stop")))
    first = straight["divergences"][0]["step"]
    assert result["steps"] == first < 24 and result["stop_reason"].startswith(f"stopped at step {first}")
    assert [d["reaction"] for d in result["divergences"]] == ["stop"]
    assert result["eval_history"][-1]["step"] == first  # it evaluated and saved before it ended
    assert checkpoint_dirs(out)[-1].endswith(f"step-{first:06d}")


def test_off_switches_hand_back_the_last_step(tiny_llama, toy_file, tmp_path):
    out = str(tmp_path / "last")
    result = run(prepare(spec(tiny_llama, toy_file, out, on_divergence="warn", load_best_model_at_end=False,
                              num_steps=12)))
    assert result["returned_step"] == 12 and "load_best_model_at_end is off" in result["returned_reason"]
    assert all(d["reaction"] == "warn" for d in result["divergences"])
    assert not Trajectory.load(out).lr_scales
    assert same(adapter(out), adapter(checkpoint_dirs(out)[-1]))


def test_resume_in_the_middle_of_a_reaction_ends_as_the_straight_run(diverged, tiny_llama, toy_file, tmp_path):
    straight, straight_out = diverged
    first = straight["divergences"][0]["step"]
    out = str(tmp_path / "resumed")
    # Stop one step after the first reaction, before the next evaluation, with a checkpoint there.
    mezo_run = start_run(prepare(spec(tiny_llama, toy_file, out)))
    try:
        while mezo_run.step_count < first + 1:
            mezo_run.advance()
        assert mezo_run.divergences and mezo_run.trainer.trajectory.lr_scales
        mezo_run.save()
    finally:
        release_model_runner(mezo_run.trainer.runner)
    result = run(prepare(spec(tiny_llama, toy_file, out, resume=True)))
    for key in ("train_loss", "eval_history", "divergences", "returned_step", "steps", "stop_reason"):
        assert result[key] == straight[key], key
    assert Trajectory.load(checkpoint_dirs(out)[-1]).to_dict()["grads_f64le"] == \
        Trajectory.load(checkpoint_dirs(straight_out)[-1]).to_dict()["grads_f64le"]
    assert same(adapter(out), adapter(straight_out))
