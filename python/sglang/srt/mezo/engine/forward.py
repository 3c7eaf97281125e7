"""SGLang's extend forward as MeZO uses it: a packed batch of sequences, one LoRA adapter per
sequence, logits only at the positions asked for and only for the vocabulary rows asked for, with no
prefix cache shared with anything else."""

from __future__ import annotations

import contextlib
from array import array
from typing import Iterator, Optional, Sequence

import torch
from sglang.srt.layers.logits_processor import LogitsProcessorOutput
from sglang.srt.managers.schedule_batch import Req, ScheduleBatch
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.model_executor.model_runner import ModelRunner
from sglang.srt.runtime_context import get_schedule
from sglang.srt.sampling.sampling_params import SamplingParams
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm


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


class PositionLogits(torch.nn.Module):
    """Stands in for a model's ``logits_processor`` during a training forward.

    It receives the final hidden states of every token in the packed batch and returns logits
    only for ``vocab_ids`` at one position per request. ``lm_head`` may carry a ``bias`` and a
    ``transform`` (a masked-LM head's dense/activation/norm) that is applied to those rows first.
    """

    def __init__(self, positions: torch.Tensor, vocab_ids: Optional[torch.Tensor]):
        super().__init__()
        self.positions = positions
        self.vocab_ids = vocab_ids

    def forward(self, input_ids, hidden_states, lm_head, forward_batch, *args, **kwargs):
        rows = hidden_states[forward_batch.extend_start_loc + self.positions.to(hidden_states.device)]
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

    Example:
        >>> fwd = ExtendForward(build_model_runner(RunnerSpec("path/to/llama")))  # doctest: +SKIP
        >>> fwd([[1, 5, 7], [1, 9]], positions=[2, 1], vocab_ids=torch.tensor([5, 9]))  # doctest: +SKIP
        tensor([[...], [...]])   # (2 requests, 2 vocabulary rows)
    """

    def __init__(self, runner: ModelRunner, max_tokens_per_forward: Optional[int] = None):
        self.runner = runner
        # Leave room in a shared pool: a live server's own requests hold slots too.
        self.max_tokens_per_forward = max_tokens_per_forward or runner.max_total_num_tokens // 2
        self._rid = 0

    def __call__(
        self,
        sequences: Sequence[Sequence[int]],
        positions: Sequence[int],
        vocab_ids: Optional[torch.Tensor] = None,
        lora_ids: Optional[Sequence[Optional[str]]] = None,
    ) -> torch.Tensor:
        """Logits ``[len(sequences), len(vocab_ids) or vocab]`` at ``positions[i]`` of sequence i."""
        if len(positions) != len(sequences):
            raise ValueError("one position per sequence is required")
        lora_ids = list(lora_ids) if lora_ids is not None else [None] * len(sequences)
        out, chunk = [], []
        budget = 0
        for i, seq in enumerate(sequences):
            if not 0 <= positions[i] < len(seq):
                raise ValueError(f"position {positions[i]} is outside sequence {i} of length {len(seq)}")
            if len(seq) > self.max_tokens_per_forward:
                raise ValueError(
                    f"sequence {i} has {len(seq)} tokens, more than the {self.max_tokens_per_forward} "
                    "this runner's KV pool allows per forward: raise max_total_tokens or truncate"
                )
            if chunk and budget + len(seq) > self.max_tokens_per_forward:
                out.append(self._forward(chunk, sequences, positions, vocab_ids, lora_ids))
                chunk, budget = [], 0
            chunk.append(i)
            budget += len(seq)
        out.append(self._forward(chunk, sequences, positions, vocab_ids, lora_ids))
        return torch.cat(out)

    @torch.no_grad()
    def _forward(self, idx, sequences, positions, vocab_ids, lora_ids) -> torch.Tensor:
        runner = self.runner
        reqs = []
        for i in idx:
            self._rid += 1
            ids = array("q", sequences[i])
            req = Req(
                rid=f"mezo-{self._rid}",
                origin_input_text="",
                origin_input_ids=ids,
                sampling_params=SamplingParams(temperature=0, max_new_tokens=1),
                lora_id=lora_ids[i],
            )
            req.full_untruncated_fill_ids = ids
            req.logprob_start_len = -1
            req.extend_end = len(ids)
            reqs.append(req)
        batch = ScheduleBatch.init_new(
            reqs=reqs,
            req_to_token_pool=runner.req_to_token_pool,
            token_to_kv_pool_allocator=runner.token_to_kv_pool_allocator,
            tree_cache=NoPrefixCache(runner),
            model_config=runner.model_config,
            enable_overlap=False,
            spec_algorithm=SpeculativeAlgorithm.NONE,
        )
        batch.prepare_for_extend()
        try:
            if batch.input_ids is None:
                batch.input_ids = batch.prefill_input_ids_cpu.to(batch.device)
                batch.prefill_input_ids_cpu = None
            forward_batch = ForwardBatch.init_new(batch, runner, return_hidden_states_before_norm=False)
            head = PositionLogits(torch.tensor([positions[i] for i in idx]), vocab_ids)
            with _position_logits(runner.model, head):
                logits = runner.forward(forward_batch).logits_output.next_token_logits
        finally:
            runner.token_to_kv_pool_allocator.free(batch.out_cache_loc)
            runner.req_to_token_pool.free_rows(batch.req_pool_indices.tolist())
        return logits
