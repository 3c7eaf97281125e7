"""GreedyGenerator (prefill, then SGLang's decode steps on the KV cache) against HF transformers' and
PEFT's greedy ``generate`` on the same weights, and the KV pool it leaves behind."""

from __future__ import annotations

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

import pytest
import torch
from conftest import runner_for
from peft import LoraConfig, PeftModel, get_peft_model
from sglang.srt.lora.lora_registry import LoRARef
from transformers import AutoModelForCausalLM

from sglang.srt.mezo.engine.generate import GreedyGenerator
from sglang.srt.mezo.engine.runner import RunnerSpec

# Different lengths, so that requests of a batch sit at different positions and finish apart.
PROMPTS = [[0, 5, 7, 9, 11, 3, 40], [0, 8, 200, 4], [0, 300, 301, 302, 303, 304, 305, 306, 307], [0, 17]]
MAX_NEW = 10
LORA_RANK = 4


def hf_greedy(model, prompts, max_new_tokens, stop=None) -> list[list[int]]:
    """HF's greedy generate, one prompt at a time (no padding), the stop token cut off."""
    outs = []
    for p in prompts:
        with torch.no_grad():
            ids = model.generate(torch.tensor([p]), do_sample=False, max_new_tokens=max_new_tokens,
                                 eos_token_id=stop, pad_token_id=1)[0, len(p):].tolist()
        if stop is not None and stop in ids:
            ids = ids[: ids.index(stop)]
        outs.append(ids)
    return outs


def pool_free(runner) -> tuple[int, int]:
    return runner.token_to_kv_pool_allocator.available_size(), runner.req_to_token_pool.available_size()


@pytest.fixture(scope="module")
def hf_model(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # stop only where a test asks for it
    return model


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_llama):
    """A PEFT adapter on q/v with random A and B (B != 0, so that it changes what is generated)."""
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=LORA_RANK, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    path = str(tmp_path_factory.mktemp("adapter"))
    model.save_pretrained(path)
    return path


def test_matches_hf_generate_with_and_without_a_stop_token(tiny_llama, hf_model):
    free_ids = hf_greedy(hf_model, PROMPTS, MAX_NEW)
    # A stop token the model does produce mid-way, so that the requests finish at different steps.
    stop = free_ids[0][3]
    stopped = hf_greedy(hf_model, PROMPTS, MAX_NEW, stop=stop)
    assert len({len(ids) for ids in stopped}) > 1

    with runner_for(RunnerSpec(tiny_llama, max_total_tokens=1024)) as runner:
        assert runner.model.lm_head.weight.shape[0] > runner.model_config.vocab_size  # the vocab is padded
        generate = GreedyGenerator(runner)
        before = pool_free(runner)
        assert generate(PROMPTS, max_new_tokens=MAX_NEW) == free_ids
        assert generate(PROMPTS, max_new_tokens=MAX_NEW, stop_token_ids=[stop]) == stopped
        assert generate(PROMPTS, max_new_tokens=1) == [ids[:1] for ids in free_ids]
        assert generate(PROMPTS, max_new_tokens=0) == [[]] * len(PROMPTS)
        assert pool_free(runner) == before


@pytest.fixture(scope="module")
def lora_runner(tiny_llama, adapter):
    spec = RunnerSpec(tiny_llama, max_total_tokens=1024, lora_rank=LORA_RANK, lora_target_modules=["q_proj", "v_proj"])
    with runner_for(spec) as runner:
        ref = LoRARef(lora_name="gen", lora_path=adapter, pinned=False)
        assert runner.load_lora_adapter(ref).success
        yield runner, ref.lora_id


def test_lora_matches_peft_generate_in_a_mixed_batch(tiny_llama, adapter, lora_runner):
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    base.generation_config.eos_token_id = None
    peft = PeftModel.from_pretrained(base, adapter).eval()
    with_adapter = hf_greedy(peft, PROMPTS, MAX_NEW)
    with peft.disable_adapter():
        without = hf_greedy(peft, PROMPTS, MAX_NEW)
    assert with_adapter != without  # the adapter matters

    runner, lora_id = lora_runner
    generate = GreedyGenerator(runner)
    # Adapter and base-model requests decode in one batch.
    lora_ids = [lora_id, None, lora_id, None]
    expected = [with_adapter[i] if lora_ids[i] else without[i] for i in range(len(PROMPTS))]
    assert generate(PROMPTS, max_new_tokens=MAX_NEW, lora_ids=lora_ids) == expected
    assert generate(PROMPTS, max_new_tokens=MAX_NEW, lora_ids=[lora_id] * len(PROMPTS)) == with_adapter
    stop = with_adapter[2][2]
    stopped = hf_greedy(peft, PROMPTS, MAX_NEW, stop=stop)
    assert generate(PROMPTS, max_new_tokens=MAX_NEW, stop_token_ids={stop}, lora_ids=[lora_id] * 4) == stopped


def test_chunks_to_the_kv_budget_and_frees_everything_even_on_errors(lora_runner, monkeypatch):
    runner, lora_id = lora_runner
    lora_ids = [lora_id, None] * 2
    expected = GreedyGenerator(runner)(PROMPTS, max_new_tokens=MAX_NEW, lora_ids=lora_ids)
    before = pool_free(runner)

    # Room for one request (at most 9 + 10 - 1 = 18 slots) at a time: four groups, same ids.
    small = GreedyGenerator(runner, max_tokens_per_forward=20)
    peak = []
    alloc = runner.token_to_kv_pool_allocator
    original = alloc.alloc

    def watched(need, *args, **kwargs):
        out = original(need, *args, **kwargs)
        peak.append(before[0] - alloc.available_size())
        return out

    monkeypatch.setattr(alloc, "alloc", watched)
    assert small(PROMPTS, max_new_tokens=MAX_NEW, lora_ids=lora_ids) == expected
    monkeypatch.undo()
    assert peak and max(peak) <= 20
    assert pool_free(runner) == before

    with pytest.raises(ValueError, match="more than the 20 KV slots"):
        small([list(range(30))], max_new_tokens=MAX_NEW)
    with pytest.raises(ValueError, match="one per prompt"):
        small(PROMPTS, max_new_tokens=2, lora_ids=[None])

    # A forward that fails in the middle of decoding (after some requests have finished and left).
    calls = {"n": 0}
    forward = runner.forward

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("boom")
        return forward(*args, **kwargs)

    monkeypatch.setattr(runner, "forward", failing)
    with pytest.raises(RuntimeError, match="boom"):
        GreedyGenerator(runner)(PROMPTS, max_new_tokens=MAX_NEW, stop_token_ids={expected[3][1]}, lora_ids=lora_ids)
    monkeypatch.undo()
    assert calls["n"] == 4
    assert pool_free(runner) == before
    assert GreedyGenerator(runner)(PROMPTS, max_new_tokens=MAX_NEW, lora_ids=lora_ids) == expected
