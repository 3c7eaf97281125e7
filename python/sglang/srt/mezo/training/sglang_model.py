"""The model objectives measure through (:class:`~sglang.srt.mezo.training.objectives.base.Model`),
on a trainer's ModelRunner: logits from SGLang's extend forward, answers from its prefill and
decode, each sequence on the LoRA adapter named for it."""

from __future__ import annotations

import hashlib
import random
from typing import Callable, Optional, Sequence, Union

import torch

from sglang.srt.mezo.engine.forward import ExtendForward
from sglang.srt.mezo.engine.generate import GreedyGenerator
from sglang.srt.mezo.training.objectives.base import GenerationInputs


class SGLangModel:
    """``step``: the number of steps done, which keys the sampling seeds (with ``seed``);
    ``temperature``: that of sampled answers (a reward objective's)."""

    def __init__(self, runner, *, seed: int, temperature: float, step: Callable[[], int]):
        self.runner, self.seed, self.temperature, self.step = runner, seed, temperature, step
        self.forward = ExtendForward(runner)
        #: True: extend each shared prefix once per adapter (an objective whose sequences share
        #: prefixes); None: the forward's own setting.
        self.share_prefixes: Optional[bool] = None
        self._generator: Optional[GreedyGenerator] = None  # built on the first generation

    def logits(self, sequences: Sequence[Sequence[int]], positions: Sequence[Union[int, list[int]]],
               vocab_ids: Optional[torch.Tensor], lora_ids: Sequence[Optional[str]]) -> torch.Tensor:
        return self.forward(sequences, positions, vocab_ids, list(lora_ids), share_prefixes=self.share_prefixes)

    def generate(self, inputs: GenerationInputs, lora_ids: Sequence[Optional[str]],
                 sampled: bool = False) -> list[list[int]]:
        if self._generator is None:
            self._generator = GreedyGenerator(self.runner)
        return self._generator(inputs.prompts, max_new_tokens=inputs.max_new_tokens,
                               stop_token_ids=inputs.stop_token_ids, lora_ids=list(lora_ids),
                               temperature=self.temperature if sampled else 0.0,
                               sample_seeds=self.sample_seeds(inputs.prompts) if sampled else None)

    def sample_seeds(self, prompts: Sequence[Sequence[int]]) -> list[int]:
        """One sampling seed per prompt of this step: the +eps and -eps answers to a prompt draw
        alike, so their rewards differ by what the perturbation changed, not by sampling noise. The
        seed is keyed on the prompt's ids, not its row, so a data-parallel worker's shard draws what
        one process does (a prompt given twice in a batch draws alike)."""
        step = self.step()
        return [random.Random(f"{self.seed}:{step}:{hashlib.sha256(repr(list(p)).encode()).hexdigest()}")
                .randrange(2**63) for p in prompts]
