"""RobertaForMaskedLM on SGLang's ModelRunner against HF transformers' RobertaForMaskedLM.

A tiny random RoBERTa with an MLM head is saved as a checkpoint; one in-process runner per module
(released at teardown, ``conftest.runner_for``) computes logits through ``ExtendForward``, which swaps the
model's ``logits_processor`` for ``PositionLogits``, and through the model's default
``LogitsProcessor``. The embedding-mode runner is built in a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import runner_for
from safetensors.torch import load_file
from transformers import RobertaConfig
from transformers import RobertaForMaskedLM as HFRobertaForMaskedLM

from sglang.srt.mezo.engine import forward as mezo_forward
from sglang.srt.mezo.engine.forward import ExtendForward
from sglang.srt.mezo.engine.roberta_mlm import RobertaForMaskedLM
from sglang.srt.mezo.engine.runner import RunnerSpec

VOCAB = 500  # not a multiple of 64: SGLang pads the embedding rows, the head must not show them
PAD = 1
TOL = 1e-4

# <s>=0, </s>=2, pad=1; lengths 6, 9, 128 (the longest RoBERTa allows with 130 positions: ids run
# from padding_idx+1 = 2 to 129). The middle one holds a pad token, which keeps position padding_idx.
SEQUENCES = [
    [0, 5, 7, 9, 11, 2],
    [0, 8, 200, 4, PAD, 77, 499, 3, 2],
    [0] + [int(t) for t in torch.randint(3, VOCAB, (126,), generator=torch.Generator().manual_seed(1))] + [2],
]


def make_checkpoint(path, tie_word_embeddings: bool = True) -> HFRobertaForMaskedLM:
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=130,
        pad_token_id=PAD,
        bos_token_id=0,
        eos_token_id=2,
        tie_word_embeddings=tie_word_embeddings,
        architectures=["RobertaForMaskedLM"],
    )
    model = HFRobertaForMaskedLM(config).eval()
    with torch.no_grad():  # make every part of the head and embeddings matter
        model.lm_head.bias.normal_(0, 0.5)
        model.lm_head.layer_norm.weight.normal_(1, 0.2)
        model.lm_head.layer_norm.bias.normal_(0, 0.2)
        model.roberta.embeddings.token_type_embeddings.weight.normal_(0, 0.5)
        model.roberta.embeddings.position_embeddings.weight.normal_(0, 0.5)
        if not tie_word_embeddings:  # an untied head's forward adds decoder.bias, not lm_head.bias
            model.lm_head.decoder.bias.normal_(0, 0.5)
    model.save_pretrained(path)
    return model


def hf_logits(model, sequences, positions) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([model(torch.tensor([s])).logits[0, p] for s, p in zip(sequences, positions)])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("roberta_mlm")
    hf = make_checkpoint(path)
    assert "position_embedding_type" not in json.loads((path / "config.json").read_text())
    with runner_for(RunnerSpec(str(path), max_total_tokens=1024)) as runner:
        yield hf, runner, ExtendForward(runner)


def test_runner_uses_our_model_class(setup):
    _, runner, _ = setup
    assert type(runner.model) is RobertaForMaskedLM
    assert runner.model.config.position_embedding_type == "absolute"


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_full_vocab_logits_match_hf(setup, where):
    hf, _, fwd = setup
    positions = {
        "first": [0, 0, 0],
        "middle": [2, 4, 60],  # 4 is the pad token of the second sequence
        "last": [len(s) - 1 for s in SEQUENCES],
    }[where]
    ours = fwd(SEQUENCES, positions)
    ref = hf_logits(hf, SEQUENCES, positions)
    assert ours.shape == (3, VOCAB)
    assert (ours - ref).abs().max().item() < TOL


def test_vocab_subset_logits_match_hf(setup):
    hf, _, fwd = setup
    positions = [3, 5, 127]
    vocab_ids = torch.tensor([7, 499, 2, 300, 31])
    ours = fwd(SEQUENCES, positions, vocab_ids=vocab_ids)
    ref = hf_logits(hf, SEQUENCES, positions)[:, vocab_ids]
    assert ours.shape == (3, 5)
    assert (ours - ref).abs().max().item() < TOL
    # batch order and size do not matter
    one = fwd(SEQUENCES[1:2], positions[1:2], vocab_ids=vocab_ids)
    assert (one - ref[1:2]).abs().max().item() < TOL


def test_default_logits_processor_matches_hf(setup, monkeypatch):
    """Without the swap, SGLang's LogitsProcessor returns last-token logits with the MLM head."""
    hf, runner, fwd = setup
    monkeypatch.setattr(mezo_forward, "_position_logits", lambda model, head: contextlib.nullcontext())
    last = [len(s) - 1 for s in SEQUENCES]
    ours = fwd(SEQUENCES, last)
    ref = hf_logits(hf, SEQUENCES, last)
    assert ours.shape == (3, VOCAB)
    assert (ours - ref).abs().max().item() < TOL


def test_decoder_is_tied_and_parameters_are_unique(setup):
    _, runner, fwd = setup
    model = runner.model
    embedding = model.roberta.embeddings.word_embeddings.weight
    assert model.lm_head.weight.data_ptr() == embedding.data_ptr()
    head_params = sorted(n for n, _ in model.named_parameters() if n.startswith("lm_head."))
    assert head_params == [
        "lm_head.bias", "lm_head.dense.bias", "lm_head.dense.weight",
        "lm_head.layer_norm.bias", "lm_head.layer_norm.weight",
    ]
    assert not model.roberta.embeddings.position_ids.requires_grad
    # an in-place change of the embedding shows in the head's logits (what MeZO relies on)
    vocab_ids = torch.tensor([11])
    before = fwd(SEQUENCES[:1], [1], vocab_ids=vocab_ids)
    with torch.no_grad():
        embedding[11].add_(1.0)
        try:
            after = fwd(SEQUENCES[:1], [1], vocab_ids=vocab_ids)
        finally:
            embedding[11].sub_(1.0)
    assert (after - before).abs().max().item() > 1e-3
    assert (fwd(SEQUENCES[:1], [1], vocab_ids=vocab_ids) - before).abs().max().item() < 1e-6


@pytest.mark.parametrize("tied", [True, False])
def test_load_weights_old_and_untied_checkpoints(setup, tmp_path, tied):
    """Names of older HF checkpoints (decoder weight and bias, position_ids, pooler) load too,
    and an untied decoder gets its own matrix."""
    _, runner, _ = setup
    hf = make_checkpoint(tmp_path, tie_word_embeddings=tied)
    state = load_file(str(tmp_path / "model.safetensors"))
    assert ("lm_head.decoder.bias" in state) is not tied
    if tied:  # what transformers 4 wrote for a tied head
        state["lm_head.decoder.weight"] = hf.roberta.embeddings.word_embeddings.weight
        state["lm_head.decoder.bias"] = hf.lm_head.bias
    state["roberta.embeddings.position_ids"] = torch.arange(130).unsqueeze(0)
    state["roberta.pooler.dense.weight"] = torch.zeros(64, 64)
    state["roberta.pooler.dense.bias"] = torch.zeros(64)
    model = RobertaForMaskedLM(config=hf.config)
    model.load_weights(iter(state.items()))
    head = model.lm_head
    assert torch.equal(head.weight, hf.lm_head.decoder.weight)
    assert torch.equal(head.bias, hf.lm_head.decoder.bias)
    assert torch.equal(head.dense.weight, hf.lm_head.dense.weight)
    assert torch.equal(head.layer_norm.weight, hf.lm_head.layer_norm.weight)
    assert (head.weight.data_ptr() == model.roberta.embeddings.word_embeddings.weight.data_ptr()) is tied
    assert tied or not torch.equal(head.weight, hf.roberta.embeddings.word_embeddings.weight)
    # the transform and the head match HF's on the same rows
    h = torch.randn(4, 64)
    with torch.no_grad():
        assert (head(h) - hf.lm_head(h)).abs().max().item() < 1e-5


def test_embedding_mode_runner_matches_hf(tmp_path):
    """RunnerSpec(is_embedding=True) (SGLang passes get_embedding=True) gives the same logits."""
    hf = make_checkpoint(tmp_path)
    positions = [1, 4, 100]
    vocab_ids = [3, 17, 256]
    ref = hf_logits(hf, SEQUENCES, positions)[:, vocab_ids]
    script = textwrap.dedent(
        f"""
        import json, torch
        from sglang.srt.mezo.engine.forward import ExtendForward
        from sglang.srt.mezo.engine.runner import RunnerSpec, build_model_runner
        runner = build_model_runner(RunnerSpec({str(tmp_path)!r}, is_embedding=True, max_total_tokens=1024))
        assert type(runner.model).__name__ == "RobertaForMaskedLM" and not runner.model_config.is_generation
        out = ExtendForward(runner)({SEQUENCES!r}, {positions!r}, vocab_ids=torch.tensor({vocab_ids!r}))
        print("RESULT", json.dumps(out.tolist()))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(out for out in proc.stdout.splitlines() if out.startswith("RESULT "))
    ours = torch.tensor(json.loads(line[len("RESULT "):]))
    assert (ours - ref).abs().max().item() < TOL
