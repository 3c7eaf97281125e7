"""SGLang's extend forward as MeZO uses it: a packed batch of sequences, one LoRA adapter per
sequence, logits only at the positions asked for and only for the vocabulary rows asked for, with no
prefix cache shared with anything else.

Within one forward, sequences of one adapter that start with the same prefix can compute that
prefix's KV once (``share_prefixes``, :mod:`~sglang.srt.mezo.engine.prefix_sharing`): a radix tree
of that forward alone, emptied when it ends, so no KV outlives the weights it was computed under."""

from __future__ import annotations

import contextlib
from array import array
from typing import Iterator, Optional, Sequence, Union

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

import torch
from sglang.srt.layers.logits_processor import LogitsProcessorOutput
from sglang.srt.managers.schedule_batch import Req, ScheduleBatch
from sglang.srt.mem_cache.common import checkpoint_kv_cache, match_kv_cache, release_kv_cache
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.model_executor.model_runner import ModelRunner
from sglang.srt.runtime_context import get_schedule
from sglang.srt.sampling.sampling_params import SamplingParams
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

from sglang.srt.mezo.engine.prefix_sharing import (
    DEFAULT_MIN_SHARED_TOKENS,
    ScopedPrefixTree,
    SharedPrefix,
    can_share_prefixes,
    plan_shared_prefixes,
)


class NoPrefixCache:
    """A tree cache that never shares a prefix: every training forward computes all of its KV
    under the weights in place at that moment."""

    def __init__(self, runner: ModelRunner):
        self.page_size = get_schedule().page_size
        self.device = runner.device
        self.token_to_kv_pool_allocator = runner.token_to_kv_pool_allocator

    def supports_swa(self) -> bool:
        return False

    def supports_mamba(self) -> bool:
        return False

    def supports_prefix_sharing(self) -> bool:
        return False

    def evict(self, params) -> None:
        pass

    def maybe_hand_to_session(self, req) -> None:
        pass


def new_req(rid: str, ids: Sequence[int], lora_id: str | None,
            sampling_params: SamplingParams | None = None) -> Req:
    """A request whose first extend computes all of ``ids`` (nothing comes from a prefix cache)."""
    ids = array("q", ids)
    req = Req(
        rid=rid,
        origin_input_text="",
        origin_input_ids=ids,
        sampling_params=sampling_params or SamplingParams(temperature=0, max_new_tokens=1),
        lora_id=lora_id,
    )
    req.full_untruncated_fill_ids = ids
    req.logprob_start_len = -1
    req.extend_end = len(ids)
    return req


def new_schedule_batch(runner: ModelRunner, reqs: list[Req], tree_cache=None) -> ScheduleBatch:
    """A ScheduleBatch of ``reqs`` on ``runner``'s pools, with ``tree_cache`` (a
    :class:`NoPrefixCache` by default)."""
    return ScheduleBatch.init_new(
        reqs=reqs,
        req_to_token_pool=runner.req_to_token_pool,
        token_to_kv_pool_allocator=runner.token_to_kv_pool_allocator,
        tree_cache=tree_cache if tree_cache is not None else NoPrefixCache(runner),
        model_config=runner.model_config,
        enable_overlap=False,
        spec_algorithm=SpeculativeAlgorithm.NONE,
    )


def move_prefill_input_ids(batch: ScheduleBatch) -> None:
    # prepare_for_extend leaves the ids on the host; SGLang's worker moves them before the forward.
    if batch.input_ids is None:
        batch.input_ids = batch.prefill_input_ids_cpu.to(batch.device)
        batch.prefill_input_ids_cpu = None


class PositionLogits(torch.nn.Module):
    """Stands in for a model's ``logits_processor`` during a training forward.

    It receives the final hidden states of every token in the packed batch and returns logits
    only for ``vocab_ids`` at the positions asked for: row k is request ``requests[k]``'s position
    ``positions[k]``, counted from the first token the extend computes (the sequence's position
    minus the prefix the request found cached). ``lm_head`` may carry a ``bias`` and a
    ``transform`` (a masked-LM head's dense/activation/norm) that is applied to those rows first.
    """

    def __init__(self, requests: torch.Tensor, positions: torch.Tensor, vocab_ids: Optional[torch.Tensor]):
        super().__init__()
        self.requests = requests
        self.positions = positions
        self.vocab_ids = vocab_ids

    def forward(self, input_ids, hidden_states, lm_head, forward_batch, *args, **kwargs):
        device = hidden_states.device
        starts = forward_batch.extend_start_loc[self.requests.to(device)]
        rows = hidden_states[starts + self.positions.to(device)]
        transform = getattr(lm_head, "transform", None)
        if transform is not None:
            rows = transform(rows)
        weight = lm_head.weight
        bias = getattr(lm_head, "bias", None)
        if self.vocab_ids is not None:
            ids = self.vocab_ids.to(weight.device)
            weight = weight[ids]
            bias = bias[ids] if bias is not None else None
        else:
            # SGLang pads the vocabulary to a multiple of 64; the padding rows are not tokens.
            vocab = getattr(lm_head, "org_vocab_size", weight.shape[0])
            weight = weight[:vocab]
            bias = bias[:vocab] if bias is not None else None
        logits = rows @ weight.T
        if bias is not None:
            logits = logits + bias
        return LogitsProcessorOutput(next_token_logits=logits.float())


@contextlib.contextmanager
def _position_logits(model: torch.nn.Module, head: PositionLogits) -> Iterator[None]:
    original = model.logits_processor
    model.logits_processor = head
    try:
        yield
    finally:
        model.logits_processor = original


class ExtendForward:
    """Batched prefill forwards through a ModelRunner, returning selected logits.

    ``share_prefixes``: a prefix of at least ``min_shared_tokens`` tokens that two or more sequences
    of one adapter start with is extended once, its KV put in a radix tree of this forward alone,
    and every sequence that starts with it extends only the rest (:mod:`.prefix_sharing`). A
    sequence shares no more than the tokens before its first requested position, so every
    requested logit is still computed in the sequence's own extend. Logits are the same as without
    sharing up to float rounding. Only causal decoders with plain KV share
    (:func:`~.prefix_sharing.can_share_prefixes`); for other models the option does nothing.
    Off by default: a forward that shares runs two extends instead of one, and on a tiny model
    that fixed cost (a few milliseconds) outweighs the prefix tokens it saves; it pays once the
    shared tokens cost more than one extra extend (long passages on a real model).

    Example:
        >>> fwd = ExtendForward(build_model_runner(RunnerSpec("path/to/llama")))  # doctest: +SKIP
        >>> fwd([[1, 5, 7], [1, 9]], positions=[2, 1], vocab_ids=torch.tensor([5, 9]))  # doctest: +SKIP
        tensor([[...], [...]])   # (2 requests, 2 vocabulary rows)
        >>> shared = ExtendForward(runner, share_prefixes=True)  # doctest: +SKIP
        >>> passage = list(range(10, 60))  # one passage, two questions: the passage's KV once
        >>> shared([passage + [3, 4], passage + [5]], positions=[[50, 51], 50])  # doctest: +SKIP
        tensor([[...], [...], [...]])
    """

    def __init__(self, runner: ModelRunner, max_tokens_per_forward: Optional[int] = None,
                 share_prefixes: bool = False, min_shared_tokens: int = DEFAULT_MIN_SHARED_TOKENS):
        self.runner = runner
        # Leave room in a shared pool: a live server's own requests hold slots too.
        self.max_tokens_per_forward = max_tokens_per_forward or runner.max_total_num_tokens // 2
        self.share_prefixes = share_prefixes
        self.min_shared_tokens = min_shared_tokens
        self._can_share = can_share_prefixes(runner)
        self._rid = 0

    def __call__(
        self,
        sequences: Sequence[Sequence[int]],
        positions: Sequence[Union[int, Sequence[int]]],
        vocab_ids: Optional[torch.Tensor] = None,
        lora_ids: Optional[Sequence[Optional[str]]] = None,
        share_prefixes: Optional[bool] = None,
    ) -> torch.Tensor:
        """Logits ``[rows, len(vocab_ids) or vocab]`` at ``positions[i]`` of sequence i, in order.

        ``positions[i]`` is one position (one row) or a list of positions (one row each, in the
        list's order): a completion's loss needs the logits of every position before its tokens.
        ``share_prefixes``: this forward's choice (None: the one the forward was built with)."""
        share = self.share_prefixes if share_prefixes is None else share_prefixes
        if len(positions) != len(sequences):
            raise ValueError("one position (or one list of positions) per sequence is required")
        positions = [[p] if isinstance(p, int) else list(p) for p in positions]
        lora_ids = list(lora_ids) if lora_ids is not None else [None] * len(sequences)
        out, chunk = [], []
        budget = 0
        for i, seq in enumerate(sequences):
            if not positions[i] or not all(0 <= p < len(seq) for p in positions[i]):
                raise ValueError(f"positions {positions[i]} are not inside sequence {i} of length {len(seq)}")
            if len(seq) > self.max_tokens_per_forward:
                raise ValueError(
                    f"sequence {i} has {len(seq)} tokens, more than the {self.max_tokens_per_forward} "
                    "this runner's KV pool allows per forward: raise max_total_tokens or truncate"
                )
            # Sharing only lowers what a chunk allocates, so the unshared count stays a safe bound.
            if chunk and budget + len(seq) > self.max_tokens_per_forward:
                out.append(self._forward(chunk, sequences, positions, vocab_ids, lora_ids, share))
                chunk, budget = [], 0
            chunk.append(i)
            budget += len(seq)
        out.append(self._forward(chunk, sequences, positions, vocab_ids, lora_ids, share))
        return torch.cat(out)

    def _new_req(self, ids: Sequence[int], lora_id: Optional[str]) -> Req:
        self._rid += 1
        return new_req(f"mezo-{self._rid}", ids, lora_id)

    @torch.no_grad()
    def _forward(self, idx, sequences, positions, vocab_ids, lora_ids, share: bool) -> torch.Tensor:
        if share and self._can_share and len(idx) > 1:
            # A shared prefix stops before a sequence's first requested position: that logit must
            # come out of the sequence's own extend.
            caps = [min(positions[i]) for i in idx]
            plans = plan_shared_prefixes([sequences[i] for i in idx], caps, [lora_ids[i] for i in idx],
                                         self.min_shared_tokens, get_schedule().page_size)
            if plans:
                return self._forward_shared(idx, sequences, positions, vocab_ids, lora_ids, caps, plans)
        runner = self.runner
        reqs = [self._new_req(sequences[i], lora_ids[i]) for i in idx]
        batch = new_schedule_batch(runner, reqs)
        batch.prepare_for_extend()
        try:
            head = PositionLogits(torch.tensor([j for j, i in enumerate(idx) for _ in positions[i]]),
                                  torch.tensor([p for i in idx for p in positions[i]]), vocab_ids)
            logits = self._run(batch, head)
        finally:
            runner.token_to_kv_pool_allocator.free(batch.out_cache_loc)
            runner.req_to_token_pool.free_rows(batch.req_pool_indices.tolist())
        return logits

    def _run(self, batch: ScheduleBatch, head: PositionLogits) -> torch.Tensor:
        """One model forward of a prepared extend ``batch``, logits from ``head``."""
        runner = self.runner
        move_prefill_input_ids(batch)
        forward_batch = ForwardBatch.init_new(batch, runner, return_hidden_states_before_norm=False)
        with _position_logits(runner.model, head):
            return runner.forward(forward_batch).logits_output.next_token_logits

    def _forward_shared(self, idx, sequences, positions, vocab_ids, lora_ids, caps: list[int],
                        plans: list[SharedPrefix]) -> torch.Tensor:
        """Two extends on one radix tree of this forward: the shared prefixes, checkpointed into the
        tree as SGLang publishes a chunked prefill; then every sequence, its prefix matched from
        the tree and locked as the scheduler admits a request. Every request's row and KV, and the
        tree's KV, are given back at the end, also when a step raises."""
        runner = self.runner
        tree = ScopedPrefixTree(runner, get_schedule().page_size)
        held: list[Req] = []
        try:
            prefix_reqs = [self._new_req(p.tokens, p.lora_id) for p in plans]
            held += prefix_reqs
            batch = new_schedule_batch(runner, prefix_reqs, tree)
            batch.prepare_for_extend()
            # Only the prefixes' KV is wanted; one logit per prefix keeps the LM head out of it.
            self._run(batch, PositionLogits(torch.arange(len(plans)), torch.tensor([len(p.tokens) - 1 for p in plans]),
                                            torch.zeros(1, dtype=torch.int64)))
            for req in prefix_reqs:
                checkpoint_kv_cache(req, tree)  # the tree now owns the prefix's slots
                release_kv_cache(req, tree, checkpoint=False)  # the row goes back, the slots stay
            reqs = []
            for i, cap in zip(idx, caps):
                req = self._new_req(sequences[i], lora_ids[i])
                held.append(req)
                # The adapter is in req.extra_key: a match never reaches another adapter's KV.
                match_kv_cache(req, tree, req.full_untruncated_fill_ids, max_prefix_len=cap)
                req.kv.cache_protected_len = req.prefix_len
                req.lock = tree.lock(req.last_node)
                reqs.append(req)
            batch = new_schedule_batch(runner, reqs, tree)
            batch.prepare_for_extend()
            # The extend computes tokens from each request's prefix_len on: positions count from there.
            head = PositionLogits(torch.tensor([j for j, i in enumerate(idx) for _ in positions[i]]),
                                  torch.tensor([p - req.prefix_len for req, i in zip(reqs, idx) for p in positions[i]]),
                                  vocab_ids)
            return self._run(batch, head)
        finally:
            for req in held:
                self._release(req, tree)
            tree.release_all()

    @staticmethod
    def _release(req: Req, tree: ScopedPrefixTree) -> None:
        """Give back ``req``'s row, its own KV slots and its lock on the tree (a no-op once done)."""
        if req.kv.holds_kv and req.kv.kv_allocated_len:
            release_kv_cache(req, tree, checkpoint=False)  # frees what lies past the tree's prefix
            return
        if req.kv.holds_kv:  # a row was taken but its KV allocation failed
            tree.req_to_token_pool.free(req)
        tree.unlock(req.lock)
        req.lock = None
