"""Shared prefixes of one extend forward, computed once: which prefixes to share, and a radix tree
that lives for one forward only.

A batch of training sequences often repeats a prefix: a system prompt, one SQuAD passage with
several questions, a multiple-choice question once per option. :func:`plan_shared_prefixes` picks,
per LoRA adapter, the prefixes that at least two sequences start with; :class:`ScopedPrefixTree`
is SGLang's own :class:`~sglang.srt.mem_cache.radix_cache.RadixCache`, made for one forward and
emptied (every KV slot it holds given back to the allocator) when that forward ends.

Why the KV never crosses from one adapter, side or step to another:

- the tree is new for each forward and empty after it, so nothing survives to a later step or to
  the other side of a step when the two sides run as separate forwards (full-weight MeZO);
- SGLang's ``Req`` appends its ``lora_id`` to its ``extra_key``, and the radix tree keys every child
  by ``extra_key``: a +eps request and a -eps request of one paired forward carry different
  adapters, so they never match each other's nodes even when their tokens are the same.

Only a causal decoder can share: a prefix's KV must not depend on what follows it (a bidirectional
encoder's does), and sliding-window or state-space layers keep state a plain radix tree does not
hold. :func:`can_share_prefixes` tells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

from sglang.srt.mem_cache.cache_init_params import CacheInitParams
from sglang.srt.mem_cache.memory_pool import HybridReqToTokenPool
from sglang.srt.mem_cache.radix_cache import RadixCache
from sglang.srt.model_executor.model_runner import ModelRunner

#: A prefix shorter than this is not worth a forward of its own (the extra launch costs more
#: than attention over a few tokens saves).
DEFAULT_MIN_SHARED_TOKENS = 16


@dataclass(frozen=True)
class SharedPrefix:
    """A prefix of ``tokens`` that sequences ``members`` (indices into the batch) all start with, to
    be computed once under adapter ``lora_id``."""

    tokens: tuple[int, ...]
    lora_id: Optional[str]
    members: tuple[int, ...]


def _common_prefix_len(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    for k in range(n):
        if a[k] != b[k]:
            return k
    return n


def plan_shared_prefixes(
    sequences: Sequence[Sequence[int]],
    caps: Sequence[int],
    lora_ids: Sequence[Optional[str]],
    min_tokens: int = DEFAULT_MIN_SHARED_TOKENS,
    page_size: int = 1,
) -> list[SharedPrefix]:
    """The prefixes worth computing once: each is shared by >= 2 sequences of one adapter, at least
    ``min_tokens`` long, a multiple of ``page_size``, and no longer than any member's cap
    (``caps[i]``: how many leading tokens of sequence i may come from a prefix: no more than its
    first position whose logits are wanted).

    Within one adapter the sequences are sorted, so sequences with a common prefix sit next to each
    other; a run of neighbours becomes one group as long as taking the next one in saves more
    tokens than it loses (a group of n sharing L tokens saves (n - 1) * L).

    >>> system = list(range(100, 120))
    >>> seqs = [system + [1, 2], system + [3], [7] * 30, system + [4, 5]]
    >>> [(len(p.tokens), p.members) for p in plan_shared_prefixes(seqs, [21, 20, 29, 21], [None] * 4)]
    [(20, (0, 1, 3))]
    >>> plan_shared_prefixes(seqs, [21, 20, 29, 21], ["plus", "minus", None, None])  # one per adapter
    []
    """
    if not (len(sequences) == len(caps) == len(lora_ids)):
        raise ValueError("one cap and one lora_id per sequence are required")
    min_tokens = max(min_tokens, 1)
    by_lora: dict[Optional[str], list[int]] = {}
    for i, lora in enumerate(lora_ids):
        by_lora.setdefault(lora, []).append(i)
    plans: list[SharedPrefix] = []

    def close(group: list[int], length: int, lora: Optional[str]) -> None:
        length -= length % page_size  # the tree keeps whole pages only
        if len(group) >= 2 and length >= min_tokens:
            plans.append(SharedPrefix(tuple(sequences[group[0]][:length]), lora, tuple(sorted(group))))

    for lora, idx in by_lora.items():
        idx = sorted(idx, key=lambda i: tuple(sequences[i]))
        group, length = [idx[0]], caps[idx[0]]
        for i in idx[1:]:
            shared = min(length, caps[i], _common_prefix_len(sequences[group[0]], sequences[i], length))
            if len(group) * shared > (len(group) - 1) * length and shared >= min_tokens:
                group.append(i)
                length = shared
            else:
                close(group, length, lora)
                group, length = [i], caps[i]
        close(group, length, lora)
    return plans


def can_share_prefixes(runner: ModelRunner) -> bool:
    """Whether ``runner``'s model lets a prefix's KV serve every sequence that starts with it: a
    causal decoder with plain full-attention KV (no encoder, no sliding window, no state-space
    layers, no multimodal inputs).

    >>> can_share_prefixes(build_model_runner(RunnerSpec("path/to/llama")))  # doctest: +SKIP
    True
    """
    config = runner.model_config
    return bool(
        getattr(config, "is_generation", False)
        and not getattr(config, "is_encoder_decoder", False)
        and not getattr(config, "is_hybrid_swa", False)
        and not getattr(config, "is_multimodal", False)
        and not isinstance(runner.req_to_token_pool, HybridReqToTokenPool)
    )


class ScopedPrefixTree(RadixCache):
    """SGLang's radix tree over ``runner``'s pools, for one forward: :meth:`release_all` gives every
    KV slot it still holds back to the allocator and empties it.

    >>> tree = ScopedPrefixTree(runner, page_size=1)  # doctest: +SKIP
    >>> try:  # doctest: +SKIP
    ...     ...  # extend the prefixes, checkpoint them into the tree, extend the rest
    ... finally:
    ...     tree.release_all()
    """

    def __init__(self, runner: ModelRunner, page_size: int):
        super().__init__(
            CacheInitParams(
                disable=False,
                req_to_token_pool=runner.req_to_token_pool,
                token_to_kv_pool_allocator=runner.token_to_kv_pool_allocator,
                page_size=page_size,
            )
        )

    def release_all(self) -> None:
        """Free every slot still in the tree, locked or not (the forward is over: no request reads
        them any more), and start empty."""
        if self.total_size():
            self.token_to_kv_pool_allocator.free(self.all_values_flatten())
        self.reset()
