"""MeZO-LoRA on a masked LM: our RobertaForMaskedLM in SGLang's LoRA manager, against HF transformers
+ PEFT LoRA (target_modules=["query", "value"]) on the same weights and the same adapter.

A tiny random RoBERTa (2 layers, hidden 64) and the byte-level BPE tokenizer from conftest; SST-2's
prompt (``<S1> It was <mask> .``, label words " terrible"/" great"). One trainer per module
(runners are one per process): the end-to-end runs come first, then the trainer fixture.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import TOY_ROWS, make_masked_lm, trainer_for
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file
from sglang.srt import mezo_mlm_trainer as mm
from transformers import AutoModelForMaskedLM

from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.finetune import mezo_mlm_finetune
from sglang.srt.mezo.training.prompt_trainer import MeZOMLMTrainer
from sglang.srt.mezo.zo.update import apply_update

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RANK, ALPHA, EPS = 4, 8.0, 1e-2
LOGIT_TOL = 1e-5
EXAMPLES = [Example(s, None, y) for y, s in TOY_ROWS[:4] + TOY_ROWS[-4:]]


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory, roberta_tokenizer_dir):
    return make_masked_lm(str(tmp_path_factory.mktemp("roberta_lora")), roberta_tokenizer_dir)


def hf_base(model_dir):
    return AutoModelForMaskedLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def peft_from_tensors(model_dir, tensors: dict[str, torch.Tensor]):
    """PEFT's own LoRA (r, alpha, query/value) on the HF model, holding exactly ``tensors``."""
    model = get_peft_model(hf_base(model_dir), LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                                          target_modules=["query", "value"]))
    assert set(get_peft_model_state_dict(model)) == set(tensors)  # the same tensors, under the same names
    load_into(model, tensors)
    return model.eval()


def load_into(model, tensors: dict[str, torch.Tensor]) -> None:
    result = set_peft_model_state_dict(model, {k: v.detach().clone() for k, v in tensors.items()})
    assert not [k for k in result.unexpected_keys if "lora" in k]


def hf_mask_logits(model, encoded, vocab_ids=None) -> torch.Tensor:
    with torch.no_grad():
        rows = torch.stack([model(torch.tensor([e.input_ids])).logits[0, e.position] for e in encoded])
    return rows if vocab_ids is None else rows[:, vocab_ids]


def hf_loss(model, encoded, label_ids) -> float:
    logits = hf_mask_logits(model, encoded, label_ids)
    return torch.nn.functional.cross_entropy(logits, torch.tensor([e.label_index for e in encoded])).item()


# ---- end to end (each builds and releases its own runner) -------------------------------------


def test_mezo_mlm_finetune_trains_lora_on_a_masked_lm(tiny_roberta, toy_file, tmp_path):
    # The default target names (q_proj, v_proj) are aliases of RoBERTa's query/value.
    r = mezo_mlm_finetune(tiny_roberta, "sst-2", toy_file, toy_file, trainable="lora", num_steps=6, eval_steps=3,
                          lora_rank=RANK, learning_rate=1e-2, epsilon=1e-2, device="cpu", progress_bar=False,
                          output_dir=str(tmp_path))
    assert r["hyperparameters"]["trainable"] == "lora" and r["prompt"]["model_kind"] == "masked"
    assert [h["step"] for h in r["eval_history"]] == [0, 3, 6] and len(r["train_loss"]) == 6
    assert all(0 < loss < 5 for loss in r["train_loss"])
    adapter = Path(r["adapter_path"])
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["query", "value"] and config["task_type"] is None
    # The adapter moved, and it is a PEFT adapter for HF's RobertaForMaskedLM.
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert len(saved) == 2 * 2 * 2 and any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in saved.items())
    PeftModel.from_pretrained(hf_base(tiny_roberta), str(adapter))


def test_cli_trainable_lora(tiny_roberta, toy_file, tmp_path, capsys):
    out = tmp_path / "run"
    code = mm.main(["--model-path", tiny_roberta, "--train-file", toy_file, "--eval-file", toy_file,
                    "--trainable", "lora", "--lora-target-modules", "query,value", "--lora-rank", str(RANK),
                    "--num-steps", "2", "--eval-steps", "2", "--learning-rate", "1e-2",
                    "--output-dir", str(out), "--device", "cpu", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["hyperparameters"]["trainable"] == "lora"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


# ---- against PEFT, on one trainer ---------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tiny_roberta, tmp_path_factory):
    out = tmp_path_factory.mktemp("roberta_lora_trainer")
    cfg = MeZOConfig(task="sst-2", trainable="lora", lora_rank=RANK, lora_alpha=ALPHA,
                     lora_target_modules=("query", "value"), epsilon=EPS, learning_rate=1e-2, batch_size=8,
                     device="cpu", progress_bar=False, output_dir=str(out))
    with trainer_for(MeZOMLMTrainer, tiny_roberta, cfg) as tr:
        assert tr.trainable.minus is not None  # +eps and -eps as one batch over two slots
        # A trained-looking adapter (B != 0), so that the adapter's effect on the logits shows.
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for t in tr.trainable.tensors:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
        tr.trainable.after_update()
        yield tr, tr.encode(EXAMPLES), out


def test_lora_manager_wraps_query_and_value(setup):
    tr, _, _ = setup
    manager = tr.runner.lora_manager
    assert manager.target_modules == {"query", "value"}
    assert [sorted(m) for m in manager.lora_modules] == [
        [f"roberta.encoder.layers.{i}.attention.self.query", f"roberta.encoder.layers.{i}.attention.self.value"]
        for i in range(2)]
    assert tr.trainable.names[:2] == ["base_model.model.roberta.encoder.layer.0.attention.self.query.lora_A.weight",
                                      "base_model.model.roberta.encoder.layer.0.attention.self.query.lora_B.weight"]
    assert [tuple(t.shape) for t in tr.trainable.tensors[:2]] == [(RANK, 64), (64, RANK)]


def test_logits_match_peft(setup, tiny_roberta):
    tr, encoded, _ = setup
    peft = peft_from_tensors(tiny_roberta, dict(zip(tr.trainable.names, tr.trainable.tensors)))
    labels = tr.label_logits(encoded)
    ref = hf_mask_logits(peft, encoded, tr.label_ids)
    seqs, pos = [list(e.input_ids) for e in encoded], [e.position for e in encoded]
    vocab = tr.logits(seqs, pos, None)
    ref_vocab = hf_mask_logits(peft, encoded)
    with peft.disable_adapter():
        base = hf_mask_logits(peft, encoded)
    diff_labels, diff_vocab = (labels - ref).abs().max().item(), (vocab - ref_vocab).abs().max().item()
    print(f"\nlabel logits |SGLang - PEFT| max {diff_labels:.2e}; vocabulary logits max {diff_vocab:.2e}; "
          f"adapter effect {(ref_vocab - base).abs().max().item():.2e}")
    assert diff_labels < LOGIT_TOL and diff_vocab < LOGIT_TOL
    assert (ref_vocab - base).abs().max().item() > 1e-2  # the adapter does change the logits
    sglang_base = tr.logits(seqs, pos, None, lora_ids=[None] * len(seqs))  # slot 0: the base model
    assert (sglang_base - base).abs().max().item() < LOGIT_TOL


@pytest.mark.parametrize("paired", [True, False])
def test_projected_gradient_matches_peft(setup, tiny_roberta, paired):
    tr, encoded, _ = setup
    theta = {n: t.clone() for n, t in zip(tr.trainable.names, tr.trainable.tensors)}
    peft = peft_from_tensors(tiny_roberta, theta)
    minus = tr.trainable.minus
    if not paired:  # the two passes one after the other in the adapter's own slot
        tr.trainable.minus = None
    try:
        worst = 0.0
        for seed in (1234, 99):
            g, lp, lm = tr.projected_gradient(encoded, seed)
            losses = {}
            for sign in (1, -1):
                load_into(peft, {n: theta[n] + sign * EPS * tr.tensors.z(seed, i, theta[n])
                                 for i, n in enumerate(tr.trainable.names)})
                losses[sign] = hf_loss(peft, encoded, tr.label_ids)
            g_hf = (losses[1] - losses[-1]) / (2 * EPS)
            print(f"\npaired={paired} seed {seed}: g {g:.6f} PEFT {g_hf:.6f} |dg| {abs(g - g_hf):.2e}; "
                  f"|dL+| {abs(lp - losses[1]):.2e} |dL-| {abs(lm - losses[-1]):.2e}")
            assert abs(lp - losses[1]) < 1e-5 and abs(lm - losses[-1]) < 1e-5
            assert abs(g) > 1e-3
            worst = max(worst, abs(g - g_hf) / max(1.0, abs(g_hf)))
        assert worst < 1e-3
    finally:
        tr.trainable.minus = minus


def test_restore_is_bitwise_exact_and_a_step_moves_along_minus_z(setup):
    tr, encoded, _ = setup
    before = [t.clone() for t in tr.trainable.tensors]
    for seed in (1, 2, 3):
        tr.projected_gradient(encoded, seed)  # paired: both slots written, the adapter's restored
    minus = tr.trainable.minus
    tr.trainable.minus = None
    try:
        for seed in (4, 5):
            tr.projected_gradient(encoded, seed)  # in place: +eps z, copy back, -eps z, copy back
    finally:
        tr.trainable.minus = minus
    assert all(torch.equal(a, b) for a, b in zip(before, tr.trainable.tensors))

    result = tr.step(encoded)
    expected = [b.clone() for b in before]
    apply_update(expected, tr.tensors.decay, result.seeds, result.projected_grads, result.lr, tr.config.weight_decay, {})
    assert result.projected_grads[0] != 0
    assert all(torch.equal(a, b) for a, b in zip(expected, tr.trainable.tensors))
    for lt in tr.trainable.lora.tensors:  # SGLang's host copy (reloaded after an eviction) follows
        assert torch.equal(lt.host, lt.pool)


def test_saved_adapter_loads_in_peft_with_the_same_logits(setup, tiny_roberta, tmp_path):
    tr, encoded, _ = setup
    tr.step(encoded)
    adapter = tr.save(str(tmp_path / "saved"))
    assert sorted(f for f in os.listdir(adapter) if not f.startswith(".")) == [
        "adapter_config.json", "adapter_model.safetensors"]
    peft = PeftModel.from_pretrained(hf_base(tiny_roberta), adapter).eval()
    seqs, pos = [list(e.input_ids) for e in encoded], [e.position for e in encoded]
    inside = tr.logits(seqs, pos, None)
    diff = (hf_mask_logits(peft, encoded) - inside).abs().max().item()
    print(f"\nsaved adapter in PEFT: vocabulary logits |SGLang - PEFT| max {diff:.2e}")
    assert diff < LOGIT_TOL
