"""A masked-LM RoBERTa for SGLang, which ships encoders (``XLMRobertaModel``, rerankers) but no
masked-LM head.

The body is SGLang's own ``XLMRobertaBaseModel`` (``sglang/srt/models/roberta.py``): BERT layers
whose ``RadixAttention`` is ``AttentionType.ENCODER_ONLY``, i.e. bidirectional, and RoBERTa's
position ids (``padding_idx + 1`` onwards, pad tokens kept at ``padding_idx``), exactly as
HF's ``RobertaEmbeddings`` computes them. On top sits HF's ``RobertaLMHead``:
dense -> GELU -> LayerNorm (:meth:`RobertaMLMHead.transform`), then a decoder tied to the word
embeddings plus a vocabulary bias (:attr:`RobertaMLMHead.weight` / :attr:`RobertaMLMHead.bias`).

``forward`` hands the final hidden states of every token to ``self.logits_processor``. By default
that is SGLang's ``LogitsProcessor`` with the head's transform and bias applied to the rows it
keeps; during MeZO training :class:`sglang.srt.mezo_runner.PositionLogits` takes its place and
computes the label-word logits at the mask position only.

Loads HF ``RobertaForMaskedLM`` checkpoints (``roberta.*``, ``lm_head.dense/layer_norm/decoder``,
``lm_head.bias``), e.g. ``roberta-large``. SGLang picks this class for
``config.architectures[0] == "RobertaForMaskedLM"`` once :func:`sglang.srt.mezo_plugin.register`
has run. Decoding is not supported (the embeddings require every request to start at position 0):
use it through extend (prefill) forwards.
"""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sglang.srt.layers.logits_processor import LogitsProcessor
from sglang.srt.layers.quantization.base_config import QuantizationConfig
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.model_loader.weight_utils import default_weight_loader
from sglang.srt.models.roberta import XLMRobertaBaseModel
from sglang.srt.utils import add_prefix


class RobertaMLMHead(nn.Module):
    """HF's ``RobertaLMHead`` with its two halves exposed separately.

    ``transform(h)`` is dense -> GELU -> LayerNorm; ``weight`` (``[vocab_size, hidden]``) and
    ``bias`` (``[vocab_size]``) are the decoder, so ``logits = transform(h) @ weight.T + bias``.
    With tied embeddings (the default, as in every RoBERTa checkpoint) ``weight`` is a view of the
    word-embedding matrix, without SGLang's vocabulary padding rows; the head owns no copy of it.
    """

    def __init__(self, config, word_embeddings: nn.Module):
        super().__init__()
        hidden = config.hidden_size
        self.vocab_size = config.vocab_size
        self.dense = nn.Linear(hidden, hidden)
        self.layer_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.tied = bool(getattr(config, "tie_word_embeddings", True))
        if self.tied:
            # A plain tuple keeps the embedding out of this module's children: its weight is
            # registered (and perturbed, saved, counted) once, under roberta.embeddings.
            self._embedding = (word_embeddings,)
        else:
            self.decoder = nn.Linear(hidden, config.vocab_size, bias=False)

    @property
    def weight(self) -> torch.Tensor:
        full = self._embedding[0].weight if self.tied else self.decoder.weight
        return full[: self.vocab_size]

    def transform(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(F.gelu(self.dense(hidden_states)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.transform(hidden_states) @ self.weight.T + self.bias


class MaskedLMLogitsProcessor(LogitsProcessor):
    """SGLang's ``LogitsProcessor`` for a head with a transform and a bias.

    ``_compute_lm_head`` is where ``LogitsProcessor`` multiplies the rows it keeps (last token,
    or the logprob range) by ``lm_head.weight``; the transform and the bias are applied there, so
    only those rows go through the head.
    """

    def _compute_lm_head(self, hidden_states, lm_head, embedding_bias=None, *, out=None):
        hidden_states = lm_head.transform(hidden_states)
        logits = super()._compute_lm_head(hidden_states, lm_head, embedding_bias, out=out)
        return logits + lm_head.bias.to(logits.dtype)


class RobertaForMaskedLM(nn.Module):
    """RoBERTa with its masked-LM head, for SGLang's ModelRunner (architecture
    ``"RobertaForMaskedLM"``)."""

    def __init__(
        self,
        *,
        config,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        # transformers 5 no longer keeps position_embedding_type on RobertaConfig; SGLang's
        # embedding module reads it (and supports "absolute" only, RoBERTa's own).
        if getattr(config, "position_embedding_type", None) is None:
            config.position_embedding_type = "absolute"
        self.config = config
        self.roberta = XLMRobertaBaseModel(
            config=config, quant_config=quant_config, prefix=add_prefix("roberta", prefix)
        )
        # SGLang keeps HF's position_ids buffer as a parameter that no forward reads and that
        # transformers 5 checkpoints do not contain: give it defined values and keep it out of
        # the trainable set (MeZO perturbs parameters that require grad).
        position_ids = self.roberta.embeddings.position_ids
        position_ids.data.copy_(torch.arange(position_ids.shape[-1], dtype=position_ids.dtype))
        position_ids.requires_grad_(False)
        self.lm_head = RobertaMLMHead(config, self.roberta.embeddings.word_embeddings)
        self.logits_processor = MaskedLMLogitsProcessor(config)

    def get_input_embeddings(self) -> nn.Module:
        return self.roberta.embeddings.word_embeddings

    @torch.no_grad()
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        forward_batch: ForwardBatch,
        input_embeds: Optional[torch.Tensor] = None,
        get_embedding: bool = False,
    ):
        if input_embeds is not None:
            raise NotImplementedError("RobertaForMaskedLM takes token ids, not input embeddings")
        # The body runs the same whether the runner is in embedding or generation mode.
        hidden_states = self.roberta(input_ids, positions, forward_batch, None, True)
        return self.logits_processor(input_ids, hidden_states, self.lm_head, forward_batch)

    def load_weights(self, weights: Iterable[Tuple[str, torch.Tensor]]) -> None:
        head_weights = []

        def body_weights():
            for name, tensor in weights:
                if name.startswith("lm_head."):
                    head_weights.append((name[len("lm_head.") :], tensor))
                elif name.startswith("roberta."):
                    yield name[len("roberta.") :], tensor
                else:  # checkpoints saved from a bare encoder carry no prefix
                    yield name, tensor

        self.roberta.load_weights(body_weights())

        params = dict(self.lm_head.named_parameters())
        # HF's forward adds the decoder's bias. It is lm_head.bias itself when tied (then only
        # lm_head.bias is saved, or both with equal values by transformers 4); an untied head saves
        # both, and then the decoder's is the one in use.
        has_decoder_bias = any(name == "decoder.bias" for name, _ in head_weights)
        for name, tensor in head_weights:
            if name == "bias" and has_decoder_bias:
                continue
            if name == "decoder.bias":
                name = "bias"
            elif name == "decoder.weight" and self.lm_head.tied:
                continue  # the word embeddings, loaded with the body
            param = params[name]
            getattr(param, "weight_loader", default_weight_loader)(param, tensor)


EntryClass = [RobertaForMaskedLM]
