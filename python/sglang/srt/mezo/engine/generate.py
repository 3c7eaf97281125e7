"""Greedy generation through SGLang's own forward path: a prefill (extend) of the prompts, then
decode steps that read and grow the KV cache, as SGLang's scheduler runs a batch.

Every prompt computes its KV from scratch (:class:`~sglang.srt.mezo.engine.forward.NoPrefixCache`):
nothing is shared with a prefix cache, so what is generated reflects the weights in place now,
a perturbed or freshly trained adapter included. All KV slots and ``req_to_token`` rows a call
takes are given back before it returns, whether it returns or raises.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

import torch
from sglang.srt.managers.schedule_batch import FINISH_MATCHED_TOKEN, Req, ScheduleBatch
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.model_executor.model_runner import ModelRunner
from sglang.srt.sampling.sampling_params import SamplingParams

from sglang.srt.mezo.engine.forward import move_prefill_input_ids, new_req, new_schedule_batch


class GreedyGenerator:
    """Greedy (argmax) continuations of token-id prompts, batched, one LoRA adapter per prompt.

    The prompts are split into groups whose KV (prompt plus continuation) fits in
    ``max_tokens_per_forward`` slots (half of the runner's pool by default, so that a live server
    sharing the pool keeps room). A group is prefilled in one extend forward, then decodes one
    token per request per step; a request that has met a stop token or ``max_new_tokens`` leaves
    the batch and gives its KV back at once.

    Example:
        >>> generate = GreedyGenerator(build_model_runner(RunnerSpec("path/to/llama")))  # doctest: +SKIP
        >>> generate([[0, 5, 7], [0, 9]], max_new_tokens=4, stop_token_ids={2})  # doctest: +SKIP
        [[31, 8, 8, 40], [17]]
        >>> generate([[0, 5, 7]], max_new_tokens=4, lora_ids=[adapter.lora_id])  # doctest: +SKIP
        [[12, 12, 3, 90]]
    """

    def __init__(self, runner: ModelRunner, max_tokens_per_forward: int | None = None):
        self.runner = runner
        # As ExtendForward: leave room in a pool that a live server's own requests may share.
        self.max_tokens_per_forward = max_tokens_per_forward or runner.max_total_num_tokens // 2
        self.max_requests_per_forward = max(1, runner.req_to_token_pool.size // 2)
        self._rid = 0

    def __call__(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        stop_token_ids: Collection[int] = (),
        lora_ids: Sequence[str | None] | None = None,
        temperature: float = 0.0,
        sample_seeds: Sequence[int] | None = None,
    ) -> list[list[int]]:
        """Continuation token ids of each prompt, without the stop token; stops at a stop token
        or after max_new_tokens. Greedy by default; ``temperature > 0`` samples from the softmax at
        that temperature, prompt i drawing from its own generator seeded with ``sample_seeds[i]``:
        two prompts given the same seed under the same weights draw the same answer."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        lora_ids = list(lora_ids) if lora_ids is not None else [None] * len(prompts)
        if len(lora_ids) != len(prompts):
            raise ValueError(f"{len(lora_ids)} lora_ids for {len(prompts)} prompts: give one per prompt")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
        if temperature > 0 and (sample_seeds is None or len(sample_seeds) != len(prompts)):
            raise ValueError("sampling (temperature > 0) needs one sample seed per prompt")
        if max_new_tokens == 0:
            return [[] for _ in prompts]
        seeds = list(sample_seeds) if temperature > 0 else None
        # The last token is sampled but never fed back, so it needs no KV slot.
        needs = [len(p) + max_new_tokens - 1 for p in prompts]
        row_width = self.runner.req_to_token_pool.req_to_token.shape[1]
        for i, (prompt, need) in enumerate(zip(prompts, needs)):
            if not prompt:
                raise ValueError(f"prompt {i} is empty")
            if need > min(self.max_tokens_per_forward, row_width):
                raise ValueError(
                    f"prompt {i} has {len(prompt)} tokens and may grow by {max_new_tokens}: more than the "
                    f"{min(self.max_tokens_per_forward, row_width)} KV slots this runner allows per request; "
                    "raise max_total_tokens or context_length, or shorten the prompt"
                )
        stops = {int(t) for t in stop_token_ids}
        out: list[list[int]] = [[] for _ in prompts]
        group: list[int] = []
        budget = 0
        for i, need in enumerate(needs):
            if group and (budget + need > self.max_tokens_per_forward or len(group) == self.max_requests_per_forward):
                self._generate(group, prompts, lora_ids, max_new_tokens, stops, out, temperature, seeds)
                group, budget = [], 0
            group.append(i)
            budget += need
        self._generate(group, prompts, lora_ids, max_new_tokens, stops, out, temperature, seeds)
        return out

    @torch.no_grad()
    def _generate(self, idx, prompts, lora_ids, max_new_tokens, stops, out, temperature, seeds) -> None:
        reqs = []
        draws = {}  # request id -> its own sampling generator (temperature > 0)
        for i in idx:
            self._rid += 1
            params = SamplingParams(temperature=0, max_new_tokens=max_new_tokens, stop_token_ids=set(stops))
            # The scheduler normalizes every request's params; without it the stop-string check fails.
            params.normalize(None)
            reqs.append(new_req(f"mezo-gen-{self._rid}", prompts[i], lora_ids[i], params))
            if seeds is not None:
                draws[reqs[-1].rid] = torch.Generator().manual_seed(seeds[i] % 2**63)
        batch = new_schedule_batch(self.runner, reqs)
        try:
            batch.prepare_for_extend()
            move_prefill_input_ids(batch)
            self._step(batch, draws, temperature)
            while True:
                self._drop_finished(batch)
                if batch.is_empty():
                    break
                # What SGLang's worker leaves in input_ids after a non-overlapped forward: the new tokens.
                batch.input_ids = torch.tensor([r.output_ids[-1] for r in batch.reqs], dtype=torch.int64,
                                               device=batch.device)
                batch.prepare_for_decode()
                self._step(batch, draws, temperature)
        finally:
            self._release(reqs)
        for req, i in zip(reqs, idx):
            ids = list(req.output_ids[: req.finished_len])
            if isinstance(req.finished_reason, FINISH_MATCHED_TOKEN):
                ids.pop()  # the stop token itself
            out[i] = ids

    def _step(self, batch: ScheduleBatch, draws: dict, temperature: float) -> None:
        """One forward of ``batch`` (extend or decode), its argmax (or a draw) appended to each request."""
        runner = self.runner
        forward_batch = ForwardBatch.init_new(batch, runner, return_hidden_states_before_norm=False)
        logits = runner.forward(forward_batch).logits_output.next_token_logits
        # SGLang pads the vocabulary for its kernels; the padding rows are not tokens.
        vocab = runner.model_config.vocab_size
        logits = logits[:, :vocab]
        if draws:
            # On the CPU, each request's own generator: its draws do not depend on the batch it sits in.
            probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
            next_ids = [int(torch.multinomial(p, 1, generator=draws[r.rid])) for p, r in zip(probs, batch.reqs)]
        else:
            next_ids = logits.argmax(dim=-1).tolist()
        for req, token in zip(batch.reqs, next_ids):
            req.output_ids.append(token)
            req.update_finish_state()

    def _drop_finished(self, batch: ScheduleBatch) -> None:
        finished = [r for r in batch.reqs if r.finished()]
        if finished:
            self._release(finished)
            batch.filter_batch(keep_indices=[i for i, r in enumerate(batch.reqs) if not r.finished()])

    def _release(self, reqs: Sequence[Req]) -> None:
        """Give back each request's KV slots and ``req_to_token`` row (once; a no-op if it holds none).

        SGLang's own ``release_kv_cache`` first offers the KV to the prefix cache; with no prefix cache
        that reduces to freeing the row's slots, which is done here directly."""
        runner = self.runner
        slots, rows = [], []
        for req in reqs:
            kv = req.kv
            if kv.req_pool_idx is None:
                continue
            if kv.kv_allocated_len:
                slots.append(runner.req_to_token_pool.req_to_token[kv.req_pool_idx, : kv.kv_allocated_len])
            rows.append(kv.req_pool_idx)
            kv.mark_kv_released()
            kv.req_pool_idx = None
        if slots:
            runner.token_to_kv_pool_allocator.free(torch.cat(slots).to(torch.int64))
        if rows:
            runner.req_to_token_pool.free_rows(rows)
