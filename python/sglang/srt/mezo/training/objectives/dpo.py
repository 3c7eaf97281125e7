"""Direct preference optimisation (DPO, Rafailov et al. 2023) with forward passes only.

For a pair (prompt x, preferred y_w, non-preferred y_l) the loss is

    -log sigmoid(beta * ((log p(y_w|x) - log p_ref(y_w|x)) - (log p(y_l|x) - log p_ref(y_l|x))))

with each log-likelihood summed over the answer's tokens, as the DPO paper and TRL's
``DPOTrainer`` (``loss_type="sigmoid"``) define it, averaged over the batch's pairs. MeZO follows it
like any other loss: both answers of every pair go through one packed extend (logits only at the
answer's positions, as for the completion objective), the +eps and -eps copies side by side.

The reference model is the model the run starts from (a new LoRA adapter has B = 0: the base
model), so ``log p_ref`` is a constant per pair: the run computes it once before its first step
(:class:`~.base.ReferenceObjective`) and keeps it with the run; no second model is held.

Metrics are TRL's: ``rewards/chosen`` = beta * (log p(y_w) - log p_ref(y_w)), ``rewards/rejected``
likewise, ``rewards/margins`` (their difference), ``rewards/accuracies`` (the share of pairs whose
chosen reward is the larger), ``logps/chosen`` and ``logps/rejected``; an evaluation reports them
with TRL's ``eval_`` prefix, and ``eval_loss``.

>>> dpo_losses([-3.0], [-5.0], [-4.0], [-4.0], beta=0.1)[0].item()  # margin 0.1 * (1 - -1) = 0.2
0.5981388693815918
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from sglang.srt.mezo.data.preference import PreferenceExample, TokenizedPair, encode_pairs, with_reference
from sglang.srt.mezo.training.objectives import register
from sglang.srt.mezo.training.objectives.base import ForwardInputs, ReferenceObjective
from sglang.srt.mezo.training.objectives.completion import row_limit, target_positions

#: DPO's temperature when a run does not set one (TRL's and OpenAI's default).
DEFAULT_BETA = 0.1


def dpo_losses(logp_chosen, logp_rejected, ref_chosen, ref_rejected, beta: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, chosen reward, rejected reward) per pair, in float64, from summed log-likelihoods."""
    as64 = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
    chosen = beta * (as64(logp_chosen) - as64(ref_chosen))
    rejected = beta * (as64(logp_rejected) - as64(ref_rejected))
    return -torch.nn.functional.logsigmoid(chosen - rejected), chosen, rejected


def _summary(prefix: str, loss, chosen, rejected, logp_chosen, logp_rejected) -> dict:
    return {f"{prefix}rewards/chosen": chosen.mean().item(), f"{prefix}rewards/rejected": rejected.mean().item(),
            f"{prefix}rewards/margins": (chosen - rejected).mean().item(),
            f"{prefix}rewards/accuracies": (chosen > rejected).double().mean().item(),
            f"{prefix}logps/chosen": logp_chosen.mean().item(), f"{prefix}logps/rejected": logp_rejected.mean().item(),
            **({f"{prefix}loss": loss.mean().item()} if prefix else {})}


@register("dpo")
class DPOObjective(ReferenceObjective):
    """DPO's sigmoid loss over the pairs of a batch (see the module docstring); ``beta`` its temperature."""

    #: Whether the preferred answer wins on the validation pairs (TRL's reward accuracy).
    primary_metric = "eval_rewards/accuracies"
    #: A pair's two sequences share the whole prompt: it is extended once per side of a step.
    shares_prefixes = True

    def __init__(self, tokenizer, beta: float = DEFAULT_BETA, max_length: Optional[int] = None):
        if not beta > 0:
            raise ValueError(f"beta must be > 0 (DPO's temperature; TRL's default is {DEFAULT_BETA}), got {beta}")
        self.tokenizer, self.beta, self.max_length = tokenizer, float(beta), max_length

    @classmethod
    def from_plan(cls, plan, name: str) -> "DPOObjective":
        """The objective of a :class:`~sglang.srt.mezo.training.plan.RunPlan` whose spec names it."""
        return cls(plan.tokenizer, plan.config.beta, row_limit(plan))

    def encode(self, examples: Sequence[Union[PreferenceExample, TokenizedPair]]) -> list[TokenizedPair]:
        """Pairs as token ids, both sides rendered as the completion objective renders a row."""
        return encode_pairs(self.tokenizer, examples, self.max_length)

    def forward_inputs(self, batch: Sequence[TokenizedPair]) -> ForwardInputs:
        """Two sequences a pair (chosen, then rejected), logits at their answers' positions."""
        sides = [side for p in batch for side in (p.chosen, p.rejected)]
        return ForwardInputs([list(s.input_ids) for s in sides], [target_positions(s) for s in sides], None,
                             [k for k in range(len(batch)) for _ in (0, 1)])

    def _logps(self, logits: torch.Tensor, batch: Sequence[TokenizedPair]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-likelihood of every pair's chosen and rejected answer (float64)."""
        sides = [side for p in batch for side in (p.chosen, p.rejected)]
        targets = torch.tensor([t for s in sides for t, on in zip(s.input_ids, s.targets) if on], device=logits.device)
        token_logp = -torch.nn.functional.cross_entropy(logits.double(), targets, reduction="none")
        counts = torch.tensor([sum(s.targets) for s in sides], device=logits.device)
        owner = torch.repeat_interleave(torch.arange(len(sides), device=logits.device), counts)
        sums = torch.zeros(len(sides), dtype=torch.float64, device=logits.device).index_add_(0, owner, token_logp)
        return sums[0::2].cpu(), sums[1::2].cpu()

    def _terms(self, logits, batch):
        missing = next((p.where or f"pair {i}" for i, p in enumerate(batch) if p.reference is None), None)
        if missing is not None:
            raise ValueError(f"{missing}: no reference log-likelihoods; the run computes them before its first "
                             "step (objective.with_reference)")
        logp_c, logp_r = self._logps(logits, batch)
        ref = torch.tensor([p.reference for p in batch], dtype=torch.float64)
        return (*dpo_losses(logp_c, logp_r, ref[:, 0], ref[:, 1], self.beta), logp_c, logp_r)

    def loss(self, logits: torch.Tensor, batch: Sequence[TokenizedPair]) -> float:
        return self._terms(logits, batch)[0].mean().item()

    def train_metrics(self, logits: torch.Tensor, batch: Sequence[TokenizedPair]) -> dict:
        """TRL's reward metrics of the batch (``rewards/accuracies`` and the rest)."""
        return _summary("", *self._terms(logits, batch))

    def predict(self, logits: torch.Tensor, batch: Sequence[TokenizedPair]) -> tuple[list, list]:
        """Per pair (loss, chosen reward, rejected reward, log p chosen, log p rejected); no references."""
        columns = [t.tolist() for t in self._terms(logits, batch)]
        return [tuple(row) for row in zip(*columns)], [None] * len(batch)

    def metrics(self, predictions: list, references: list) -> dict:
        columns = [torch.tensor(c, dtype=torch.float64) for c in zip(*predictions)]
        return _summary("eval_", *columns)

    # ---- the reference model: the run's initial weights

    def reference_values(self, logits: torch.Tensor, batch: Sequence[TokenizedPair]) -> list:
        logp_c, logp_r = self._logps(logits, batch)
        return [[c, r] for c, r in zip(logp_c.tolist(), logp_r.tolist())]

    def with_reference(self, batch: Sequence[TokenizedPair], values: Sequence) -> list[TokenizedPair]:
        return with_reference(batch, values)
