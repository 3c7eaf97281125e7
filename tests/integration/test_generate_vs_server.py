"""GreedyGenerator against SGLang's own server: the same tiny random Llama and LoRA adapter, served by
``python -m sglang.launch_server --enable-lora`` (CPU, 127.0.0.1, a free port) and answering
``/generate`` at temperature 0, must give the same tokens and text as the in-process generator. The
server starts while the in-process runner is built (:class:`~sglang.srt.mezo.server.local_server.LocalServer`)."""

from __future__ import annotations

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

import requests
import torch
from conftest import runner_for
from peft import LoraConfig, get_peft_model
from sglang.srt.lora.lora_registry import LoRARef
from transformers import AutoModelForCausalLM, AutoTokenizer

from sglang.srt.mezo.engine.generate import GreedyGenerator
from sglang.srt.mezo.engine.runner import RunnerSpec
from sglang.srt.mezo.server.local_server import LocalServer

STARTUP_TIMEOUT_S = 180
LORA_RANK = 4
PROMPTS = ["it was", "the film is great fun . the", "a great movie , a", "one two three"]
MAX_NEW = 12


def _make_adapter(model_dir: str, path: str) -> str:
    """A PEFT q/v adapter with random A and B (B != 0, so that it changes what is generated)."""
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


def _start_server(model: str, adapter: str, log_path: str) -> LocalServer:
    return LocalServer(model, "--device", "cpu", "--attention-backend", "torch_native", "--sampling-backend",
                       "pytorch", "--disable-cuda-graph", "--max-total-tokens", "2048", "--dtype", "float32",
                       "--enable-lora", "--lora-paths", f"gen={adapter}", "--max-lora-rank", str(LORA_RANK),
                       "--lora-target-modules", "q_proj", "v_proj", "--lora-backend", "torch_native",
                       log_path=log_path)


def test_greedy_generator_matches_the_server(tiny_llama, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    adapter = _make_adapter(tiny_llama, str(tmp_path / "adapter"))
    with _start_server(tiny_llama, adapter, str(tmp_path / "server.log")) as server:
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

        server.wait_healthy(STARTUP_TIMEOUT_S)
        r = requests.post(server.url + "/generate", timeout=120, json={
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
