"""A real run killed with SIGKILL, resumed, ending exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Callable

import torch
from safetensors.torch import load_file

from sglang.srt.mezo.zo.trajectory import Trajectory


def kill_resume_and_run_straight(tmp_path, cli: Callable, killed_when: Callable[[], bool]) -> None:
    """``cli(out, *extra)``'s run in ``tmp_path/killed``, SIGKILLed once ``killed_when()`` holds, then
    continued with --resume; and the same run in ``tmp_path/straight`` that was never stopped."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.Popen(cli(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300
    while not killed_when() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "summary.json").exists()  # it did not finish
    for name, extra in (("killed", ["--resume"]), ("straight", [])):
        done = subprocess.run(cli(tmp_path / name, *extra), capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr


def assert_same_end(tmp_path, last_step: int) -> tuple[Trajectory, Trajectory]:
    """The killed-and-resumed run and the straight one: the same whole-run trajectory (the last
    checkpoint's; the top of the folder holds the step handed back), metrics and returned adapter."""
    last = os.path.join("checkpoints", f"step-{last_step:06d}")
    a, b = Trajectory.load(str(tmp_path / "killed" / last)), Trajectory.load(str(tmp_path / "straight" / last))
    assert len(a.steps) == last_step and a.steps == b.steps and a.lr_scales == b.lr_scales

    def metrics(run):
        lines = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in e.items() if k != "step_time_s"} for e in lines]

    assert metrics("killed") == metrics("straight")
    wa = load_file(str(tmp_path / "killed" / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    return a, b


def test_a_run_killed_mid_step_resumes_exactly(tmp_path, tiny_llama, toy_file):
    """A real CLI run, SIGKILLed after its second checkpoint, continued with --resume: its
    trajectory, metrics and final adapter equal those of a run that was never stopped."""

    def cli(out, *extra):
        return [sys.executable, "-m", "sglang.srt.mezo_mlm_trainer", "--model-path", tiny_llama, "--train-file",
                toy_file, "--eval-file", toy_file, "--label-words", "0:bad,1:good", "--device", "cpu",
                "--num-steps", "600", "--eval-steps", "100", "--batch-size", "8", "--learning-rate", "5e-2",
                "--output-dir", str(out), "--quiet", *extra]

    kill_resume_and_run_straight(tmp_path, cli, (tmp_path / "killed" / "checkpoints" / "step-000200").exists)
    assert_same_end(tmp_path, 600)


def test_a_run_killed_right_after_a_divergence_reaction_resumes_exactly(tmp_path, tiny_llama, toy_file):
    """A CLI run driven to diverge (a learning rate far too large), SIGKILLed as soon as it reports
    a divergence (its reaction, a halved learning rate, not yet in any checkpoint), then resumed:
    it notices the same divergence at the same step, and ends with the trajectory, learning-rate
    changes, metrics and returned adapter of a run that was never stopped."""

    def cli(out, *extra):
        return [sys.executable, "-m", "sglang.srt.mezo_mlm_trainer", "--model-path", tiny_llama, "--train-file",
                toy_file, "--eval-file", toy_file, "--label-words", "0:bad,1:good", "--device", "cpu",
                "--num-steps", "60", "--eval-steps", "4", "--batch-size", "8", "--learning-rate", "2",
                "--epsilon", "1e-2", "--lora-rank", "4", "--dtype", "float32", "--seed", "3",
                "--divergence-window", "3", "--output-dir", str(out), "--quiet", *extra]

    metrics_file = tmp_path / "killed" / "metrics.jsonl"

    def diverged() -> bool:
        return metrics_file.exists() and '"event": "divergence"' in metrics_file.read_text()

    kill_resume_and_run_straight(tmp_path, cli, diverged)
    a, _ = assert_same_end(tmp_path, 60)
    assert a.lr_scales
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["returned_step"] < 60 and summary["divergences"]
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())["returned_step"] == summary["returned_step"]
