"""GreedyGenerator against SGLang's own server: the same tiny random Llama and LoRA adapter, served by
``python -m sglang.launch_server --enable-lora`` (CPU, 127.0.0.1, a free port) and answering
``/generate`` at temperature 0, must give the same tokens and text as the in-process generator."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import requests
import torch
from conftest import runner_for

from sglang.srt.mezo.engine.generate import GreedyGenerator
from sglang.srt.mezo.engine.runner import RunnerSpec

STARTUP_TIMEOUT_S = 180
LORA_RANK = 4
PROMPTS = ["it was", "the film is great fun . the", "a great movie , a", "one two three"]
MAX_NEW = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_adapter(model_dir: str, path: str) -> str:
    """A PEFT q/v adapter with random A and B (B != 0, so that it changes what is generated)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=LORA_RANK, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.save_pretrained(path)
    return path


def _start_server(model: str, adapter: str, log) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", model, "--host", "127.0.0.1",
           "--port", str(port), "--device", "cpu", "--attention-backend", "torch_native",
           "--sampling-backend", "pytorch", "--disable-cuda-graph", "--max-total-tokens", "2048",
           "--dtype", "float32", "--enable-lora", "--lora-paths", f"gen={adapter}", "--max-lora-rank",
           str(LORA_RANK), "--lora-target-modules", "q_proj", "v_proj", "--lora-backend", "torch_native"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def _wait_healthy(proc: subprocess.Popen, url: str, log_path: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; log: {log_path}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise RuntimeError(f"server not healthy after {STARTUP_TIMEOUT_S} s; log: {log_path}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:  # whatever is left of the process group (scheduler, detokenizer)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=30)


def test_greedy_generator_matches_the_server(tiny_llama, tmp_path):
    from sglang.srt.lora.lora_registry import LoRARef
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    adapter = _make_adapter(tiny_llama, str(tmp_path / "adapter"))
    log_path = str(tmp_path / "server.log")
    with open(log_path, "ab") as log:
        proc, url = _start_server(tiny_llama, adapter, log)
        try:
            prompt_ids = [tok(p)["input_ids"] for p in PROMPTS]
            # Adapter and base-model requests mixed, in both places.
            names = ["gen", None, "gen", None]
            # Built while the server starts: the two share the 2 cores but not a port or a pool.
            spec = RunnerSpec(tiny_llama, max_total_tokens=1024, lora_rank=LORA_RANK,
                              lora_target_modules=["q_proj", "v_proj"])
            with runner_for(spec) as runner:
                ref = LoRARef(lora_name="gen", lora_path=adapter, pinned=False)
                assert runner.load_lora_adapter(ref).success
                generate = GreedyGenerator(runner)
                lora_ids = [ref.lora_id if n else None for n in names]
                ours = generate(prompt_ids, max_new_tokens=MAX_NEW, stop_token_ids={tok.eos_token_id},
                                lora_ids=lora_ids)
                base_only = generate(prompt_ids, max_new_tokens=MAX_NEW, stop_token_ids={tok.eos_token_id})
            assert ours != base_only  # the adapter matters for what is compared

            _wait_healthy(proc, url, log_path)
            r = requests.post(url + "/generate", timeout=120, json={
                "input_ids": prompt_ids, "lora_path": names,
                "sampling_params": {"temperature": 0, "max_new_tokens": MAX_NEW}})
            assert r.status_code == 200, r.text
            served = r.json()
            for i, out in enumerate(served):
                ids = list(out["output_ids"])
                if ids and ids[-1] == tok.eos_token_id:
                    ids.pop()
                assert ids == ours[i], (PROMPTS[i], names[i])
                assert out["text"] == tok.decode(ours[i], skip_special_tokens=True), (PROMPTS[i], names[i])
        finally:
            _stop(proc)
