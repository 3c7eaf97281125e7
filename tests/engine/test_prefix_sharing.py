"""Shared prefixes computed once per forward (``ExtendForward(share_prefixes=True)``): the same
logits and projected gradients as without sharing, no KV across adapters, every slot given back."""

from __future__ import annotations

import random
from array import array

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

import pytest
import torch
from conftest import trainer_for
from sglang.srt.managers.schedule_batch import Req
from sglang.srt.mem_cache.base_prefix_cache import InsertParams, MatchPrefixParams
from sglang.srt.mem_cache.radix_cache import RadixKey
from sglang.srt.sampling.sampling_params import SamplingParams
from test_completion_objective import completion_item, random_adapter
from test_trainer import small_config
from transformers import AutoTokenizer

from sglang.srt.mezo.data.presets import get_task
from sglang.srt.mezo.engine.forward import ExtendForward
from sglang.srt.mezo.engine.prefix_sharing import ScopedPrefixTree, plan_shared_prefixes
from sglang.srt.mezo.training.objectives.completion import CompletionObjective
from sglang.srt.mezo.training.objectives.options import OptionsItem, OptionsObjective
from sglang.srt.mezo.training.trainer import MeZOTrainer

_rng = random.Random(0)
PASSAGE = [0] + [_rng.randrange(5, 390) for _ in range(40)]  # a SQuAD passage, say: 41 tokens
SYSTEM = [0] + [_rng.randrange(5, 390) for _ in range(24)]  # a system prompt, 25 tokens
# (a): a long shared prefix with positions after it; one sequence asks for a position inside the
# prefix (its match must stop there), one shares nothing, one shares a shorter system prompt.
SEQS = [PASSAGE + [11, 12, 13, 14], PASSAGE + [21, 22], PASSAGE + [31, 32, 33], PASSAGE[:30] + [7, 8],
        [0, 300, 301, 302, 303], SYSTEM + [50, 51, 52], SYSTEM + [60, 61]]
POSITIONS = [[41, 42, 43], 42, [40, 41], 3, [2, 4], [25, 26], 25]


def _pools(runner) -> tuple[int, int]:
    return runner.token_to_kv_pool_allocator.available_size(), runner.req_to_token_pool.available_size()


def _both(forward: ExtendForward, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(shared, unshared) logits of one call."""
    shared = forward(*args, **kwargs)
    forward.share_prefixes = False
    try:
        return shared, forward(*args, **kwargs)
    finally:
        forward.share_prefixes = True


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, tiny_llama, one_torch_thread):
    """A paired MeZO-LoRA trainer (two adapter slots: +eps and -eps) with a trained-looking adapter."""
    cfg = small_config(tmp_path_factory.mktemp("share"), epsilon=1e-2)
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        assert not tr.forward.share_prefixes  # off by default
        tr.forward.share_prefixes = True
        random_adapter(tr)
        yield tr


def test_plan_groups_per_adapter_and_respects_caps():
    seqs = [PASSAGE + [1], PASSAGE + [2], PASSAGE + [3], PASSAGE + [4]]
    plans = plan_shared_prefixes(seqs, [41, 41, 20, 41], ["a", "a", "a", "b"], min_tokens=16)
    # Taking the third sequence in would cap the group at 20 tokens: three sharing 20 save 40
    # tokens, two sharing 41 save 41, so it stays out; the fourth is another adapter's and alone.
    assert [(len(p.tokens), p.lora_id, p.members) for p in plans] == [(41, "a", (0, 1))]
    plans = plan_shared_prefixes(seqs, [41, 41, 41, 41], ["a", "a", "b", "b"], min_tokens=16)
    assert sorted((p.lora_id, p.members, p.tokens) for p in plans) == [("a", (0, 1), tuple(PASSAGE)),
                                                                     ("b", (2, 3), tuple(PASSAGE))]
    assert plan_shared_prefixes(seqs, [10] * 4, [None] * 4, min_tokens=16) == []  # too short to pay


def test_radix_tree_keeps_adapters_apart(trainer):
    """SGLang folds a request's lora_id into its extra_key, and the tree keys children by it."""
    runner = trainer.runner
    (plus_id, _), (minus_id, _) = trainer.trainable.probe_slots[0]
    reqs = {lora: Req(rid=f"r-{lora}", origin_input_text="", origin_input_ids=array("q", PASSAGE),
                      sampling_params=SamplingParams(max_new_tokens=1), lora_id=lora) for lora in (plus_id, minus_id)}
    assert reqs[plus_id].extra_key != reqs[minus_id].extra_key
    tree = ScopedPrefixTree(runner, page_size=1)
    free = runner.token_to_kv_pool_allocator.available_size()
    slots = runner.token_to_kv_pool_allocator.alloc(len(PASSAGE))
    try:
        tree.insert(InsertParams(key=RadixKey(array("q", PASSAGE), reqs[plus_id].extra_key), value=slots))
        hit = tree.match_prefix(MatchPrefixParams(key=RadixKey(array("q", PASSAGE), reqs[plus_id].extra_key)))
        miss = tree.match_prefix(MatchPrefixParams(key=RadixKey(array("q", PASSAGE), reqs[minus_id].extra_key)))
        assert hit.device_prefix_len == len(PASSAGE) and miss.device_prefix_len == 0
    finally:
        tree.release_all()
    assert runner.token_to_kv_pool_allocator.available_size() == free and tree.total_size() == 0


def test_shared_logits_equal_unshared(trainer):
    forward = trainer.forward
    lora = [trainer.trainable.lora_id] * len(SEQS)
    extends = []
    original = trainer.runner.forward

    def spy(forward_batch, *args, **kwargs):
        extends.append((list(forward_batch.extend_prefix_lens_cpu), list(forward_batch.extend_seq_lens_cpu)))
        return original(forward_batch, *args, **kwargs)

    trainer.runner.forward = spy
    try:
        before = _pools(trainer.runner)
        shared, unshared = _both(forward, SEQS, POSITIONS, lora_ids=lora)
        assert _pools(trainer.runner) == before
    finally:
        del trainer.runner.forward
    # Two extends with sharing: the prefixes (the passage, the system prompt), then the rest.
    (pre_prefix, pre_len), (prefix_lens, seq_lens), unshared_extend = extends
    assert sorted(pre_len) == [25, 40] and pre_prefix == [0, 0]
    # Capped at the first requested position; the lone sequence still finds the shared <s>.
    assert prefix_lens == [40, 40, 40, 3, 1, 25, 25]
    assert sum(pre_len) + sum(seq_lens) < sum(unshared_extend[1]) and unshared_extend[0] == [0] * len(SEQS)
    assert shared.shape == unshared.shape == (sum(len(p) if isinstance(p, list) else 1 for p in POSITIONS), 400)
    assert (shared - unshared).abs().max().item() < 1e-5
    # Only a subset of the vocabulary, too.
    vocab = torch.tensor([5, 42, 300])
    shared, unshared = _both(forward, SEQS, POSITIONS, vocab_ids=vocab, lora_ids=lora)
    assert (shared - unshared).abs().max().item() < 1e-5


def test_sharing_never_crosses_adapters(trainer):
    """The +eps/-eps layout of a paired step: the same sequences twice, once per adapter; the minus
    slot's adapter differs from the plus slot's (it still holds the initial one)."""
    (plus_id, _), (minus_id, _) = trainer.trainable.probe_slots[0]
    lora = [plus_id] * len(SEQS) + [minus_id] * len(SEQS)
    plans = plan_shared_prefixes(SEQS * 2, [min(p) if isinstance(p, list) else p for p in POSITIONS] * 2, lora)
    assert sorted((p.lora_id, len(p.tokens)) for p in plans) == sorted(
        [(plus_id, 40), (plus_id, 25), (minus_id, 40), (minus_id, 25)])
    shared, unshared = _both(trainer.forward, SEQS * 2, POSITIONS * 2, lora_ids=lora)
    n = shared.shape[0] // 2
    assert (shared - unshared).abs().max().item() < 1e-5
    # The halves differ as much with sharing as without: no half read the other adapter's KV.
    assert (unshared[:n] - unshared[n:]).abs().max().item() > 1e-2
    assert ((shared[:n] - shared[n:]) - (unshared[:n] - unshared[n:])).abs().max().item() < 1e-5


@pytest.mark.parametrize("fail_at", [1, 2])
def test_every_slot_and_row_given_back_when_a_forward_raises(trainer, fail_at):
    """A failure in the prefix extend (1) or in the sequences' extend (2): the tree's KV, every
    row and every lock go back all the same."""
    runner = trainer.runner
    before = _pools(runner)
    calls = []
    original = runner.forward

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError("forced failure")
        return original(*args, **kwargs)

    runner.forward = failing
    try:
        with pytest.raises(RuntimeError, match="forced failure"):
            trainer.forward(SEQS, POSITIONS, lora_ids=[trainer.trainable.lora_id] * len(SEQS))
    finally:
        del runner.forward
    assert _pools(runner) == before
    # And the forward works afterwards.
    trainer.forward(SEQS, POSITIONS, lora_ids=[trainer.trainable.lora_id] * len(SEQS))
    assert _pools(runner) == before


def _gradients(trainer, batch, seed: int) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(g, L+, L-) with sharing, then without; sharing must have happened (two extends, not one)."""
    runner, calls = trainer.runner, []
    original = runner.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    runner.forward = counting
    try:
        shared = trainer.projected_gradient(batch, seed)
        assert len(calls) == 2
        trainer.forward.share_prefixes = False
        unshared = trainer.projected_gradient(batch, seed)
        assert len(calls) == 3
        return shared, unshared
    finally:
        del runner.forward
        trainer.forward.share_prefixes = True


def _assert_same_step(shared, unshared) -> None:
    (g, lp, lm), (g0, lp0, lm0) = shared, unshared
    assert abs(lp - lp0) < 1e-5 and abs(lm - lm0) < 1e-5
    assert abs(g) > 1e-3 and abs(g - g0) < 1e-3 * max(1.0, abs(g0))


def test_projected_gradient_same_with_sharing_options_objective(trainer, llama_tokenizer_dir):
    """A multiple-choice question runs prompt + option once per option: the prompt is shared."""
    objective = OptionsObjective(AutoTokenizer.from_pretrained(llama_tokenizer_dir), get_task("arc-easy"))
    batch = [OptionsItem(tuple(PASSAGE), ((11,), (12, 13, 14), (40, 41), (9, 8)), 1),
             OptionsItem(tuple(SYSTEM), ((200, 4), (9,), (17, 18, 19)), 2)]
    theta = [t.clone() for t in trainer.trainable.tensors]
    original, trainer.objective = trainer.objective, objective
    try:
        assert trainer.trainable.paired  # the +/- eps passes are one forward over two adapters
        _assert_same_step(*_gradients(trainer, batch, seed=7))
    finally:
        trainer.objective = original
    assert all(torch.equal(t, s) for t, s in zip(trainer.trainable.tensors, theta))


def test_projected_gradient_same_with_sharing_completion_objective(trainer, llama_tokenizer_dir):
    """SQuAD-style: one passage, several questions, the answer the completion."""
    objective = CompletionObjective(AutoTokenizer.from_pretrained(llama_tokenizer_dir))
    batch = [completion_item(PASSAGE + [70, 71, 72], [11, 3, 40]), completion_item(PASSAGE + [80, 81], [200, 4, 9]),
             completion_item(PASSAGE + [90], [305, 306]), completion_item([0, 8, 9], [12, 13])]
    original, trainer.objective = trainer.objective, objective
    try:
        _assert_same_step(*_gradients(trainer, batch, seed=11))
    finally:
        trainer.objective = original
