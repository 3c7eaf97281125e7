"""A real run killed with SIGKILL, resumed, ending exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch

from sglang.srt.mezo.zo.trajectory import Trajectory


def test_a_run_killed_mid_step_resumes_exactly(tmp_path, tiny_llama, toy_file):
    """A real CLI run, SIGKILLed after its second checkpoint, continued with --resume: its
    trajectory, metrics and final adapter equal those of a run that was never stopped."""
    from safetensors.torch import load_file

    def cli(out, *extra):
        return [sys.executable, "-m", "sglang.srt.mezo_mlm_trainer", "--model-path", tiny_llama, "--train-file",
                toy_file, "--eval-file", toy_file, "--label-words", "0:bad,1:good", "--device", "cpu",
                "--num-steps", "600", "--eval-steps", "100", "--batch-size", "8", "--learning-rate", "5e-2",
                "--output-dir", str(out), "--quiet", *extra]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.Popen(cli(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    second = tmp_path / "killed" / "checkpoints" / "step-000200"
    deadline = time.monotonic() + 300
    while not second.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    state = json.loads((tmp_path / "killed" / "summary.json").read_text()) if (tmp_path / "killed" / "summary.json").exists() else None
    assert state is None  # it did not finish

    resumed = subprocess.run(cli(tmp_path / "killed", "--resume"), capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run(cli(tmp_path / "straight"), capture_output=True, text=True, env=env, timeout=600)
    assert straight.returncode == 0, straight.stderr

    # The last checkpoint holds the whole run (the top of the folder holds the step handed back).
    last = os.path.join("checkpoints", "step-000600")
    a, b = Trajectory.load(str(tmp_path / "killed" / last)), Trajectory.load(str(tmp_path / "straight" / last))
    assert len(a.steps) == 600 and a.steps == b.steps and a.lr_scales == b.lr_scales

    def metrics(run):
        lines = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in e.items() if k != "step_time_s"} for e in lines]

    assert metrics("killed") == metrics("straight")
    wa = load_file(str(tmp_path / "killed" / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_run_killed_right_after_a_divergence_reaction_resumes_exactly(tmp_path, tiny_llama, toy_file):
    """A CLI run driven to diverge (a learning rate far too large), SIGKILLed as soon as it reports
    a divergence (its reaction, a halved learning rate, not yet in any checkpoint), then resumed:
    it notices the same divergence at the same step, and ends with the trajectory, learning-rate
    changes, metrics and returned adapter of a run that was never stopped."""
    from safetensors.torch import load_file

    def cli(out, *extra):
        return [sys.executable, "-m", "sglang.srt.mezo_mlm_trainer", "--model-path", tiny_llama, "--train-file",
                toy_file, "--eval-file", toy_file, "--label-words", "0:bad,1:good", "--device", "cpu",
                "--num-steps", "60", "--eval-steps", "4", "--batch-size", "8", "--learning-rate", "2",
                "--epsilon", "1e-2", "--lora-rank", "4", "--dtype", "float32", "--seed", "3",
                "--divergence-window", "3", "--output-dir", str(out), "--quiet", *extra]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    metrics_file = tmp_path / "killed" / "metrics.jsonl"
    killed = subprocess.Popen(cli(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300
    while killed.poll() is None and time.monotonic() < deadline:
        if metrics_file.exists() and '"event": "divergence"' in metrics_file.read_text():
            break
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert '"event": "divergence"' in metrics_file.read_text(), "no divergence before the kill"

    resumed = subprocess.run(cli(tmp_path / "killed", "--resume"), capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run(cli(tmp_path / "straight"), capture_output=True, text=True, env=env, timeout=600)
    assert straight.returncode == 0, straight.stderr

    last = os.path.join("checkpoints", "step-000060")
    a, b = Trajectory.load(str(tmp_path / "killed" / last)), Trajectory.load(str(tmp_path / "straight" / last))
    assert a.lr_scales and a.lr_scales == b.lr_scales and a.steps == b.steps

    def lines(run):
        return [{k: v for k, v in json.loads(x).items() if k != "step_time_s"}
                for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    assert lines("killed") == lines("straight")
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["returned_step"] < 60 and summary["divergences"]
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())["returned_step"] == summary["returned_step"]
    wa = load_file(str(tmp_path / "killed" / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
