"""A masked-LM RoBERTa for SGLang, which ships encoders (``XLMRobertaModel``, rerankers) but no
masked-LM head, and whose LoRA manager can wrap its attention projections.

The body is built from SGLang's layers: its ``RobertaEmbedding`` (RoBERTa's position ids,
``padding_idx + 1`` onwards, pad tokens kept at ``padding_idx``, exactly as HF's
``RobertaEmbeddings`` computes them), ``RadixAttention`` with ``AttentionType.ENCODER_ONLY``
(bidirectional), ``ColumnParallelLinear``/``RowParallelLinear`` projections and SGLang's
``BertSelfOutput``/``BertIntermediate``/``BertOutput``. On top sits HF's ``RobertaLMHead``:
dense -> GELU -> LayerNorm (:meth:`RobertaMLMHead.transform`), then a decoder tied to the word
embeddings plus a vocabulary bias (:attr:`RobertaMLMHead.weight` / :attr:`RobertaMLMHead.bias`).

LoRA. SGLang's ``BertEncoder`` cannot take an adapter: its layers live under ``encoder.layer.<i>``
while the LoRA manager assigns a module to a layer only when its name contains ``layers.<i>.``
(``get_layer_id``), its attention is one fused ``qkv_proj`` that the manager sizes from
``num_key_value_heads`` (which ``RobertaConfig`` lacks), and PEFT's RoBERTa names (``query``,
``value``) are not SGLang's (``q_proj``, ``v_proj``). Here every module keeps HF's name except
``encoder.layers.<i>`` (HF: ``encoder.layer.<i>``), the attention has separate ``query``, ``key``
and ``value`` projections, and the model tells SGLang their LoRA shapes (:meth:`get_hidden_dim`).
So ``lora_target_modules=["query", "value"]`` (PEFT's names for RoBERTa) wraps them; ``q_proj``,
``k_proj`` and ``v_proj`` are accepted as aliases (:attr:`RobertaForMaskedLM.lora_target_aliases`,
applied by :func:`~sglang.srt.mezo.engine.runner.build_model_runner` and
:mod:`~sglang.srt.mezo.engine.lora_pool`). An adapter's tensors are renamed between PEFT's names and
SGLang's with :meth:`RobertaForMaskedLM.peft_name` / :meth:`RobertaForMaskedLM.sglang_lora_name`
(:mod:`~sglang.srt.mezo.engine.lora_pool` loads and saves adapters through them).

``forward`` hands the final hidden states of every token to ``self.logits_processor``. By default
that is SGLang's ``LogitsProcessor`` with the head's transform and bias applied to the rows it
keeps; during MeZO training :class:`sglang.srt.mezo.engine.forward.PositionLogits` takes its place and
computes the label-word logits at the mask position only.

Loads HF ``RobertaForMaskedLM`` checkpoints (``roberta.*``, ``lm_head.dense/layer_norm/decoder``,
``lm_head.bias``), e.g. ``roberta-large``. SGLang picks this class for
``config.architectures[0] == "RobertaForMaskedLM"`` once :func:`sglang.srt.mezo.plugin.register`
has run. Decoding is not supported (the embeddings require every request to start at position 0):
use it through extend (prefill) forwards.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional, Tuple

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

import torch
import torch.nn.functional as F
from sglang.srt.layers.linear import ColumnParallelLinear
from sglang.srt.layers.logits_processor import LogitsProcessor
from sglang.srt.layers.quantization.base_config import QuantizationConfig
from sglang.srt.layers.radix_attention import AttentionType, RadixAttention
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.model_loader.weight_utils import default_weight_loader
from sglang.srt.models.bert import BertIntermediate, BertOutput, BertSelfOutput
from sglang.srt.models.roberta import RobertaEmbedding
from sglang.srt.runtime_context import get_parallel
from sglang.srt.utils import add_prefix
from torch import nn

# HF/PEFT name a layer "encoder.layer.<i>"; SGLang's LoRA manager needs "layers.<i>." in the name.
_HF_LAYER = re.compile(r"(^|\.)encoder\.layer\.(\d+)\.")


_SGLANG_LAYER = re.compile(r"(^|\.)encoder\.layers\.(\d+)\.")


class RobertaSelfAttention(nn.Module):
    """Bidirectional self-attention with HF's separate ``query``/``key``/``value`` projections
    (each a ``ColumnParallelLinear``, which SGLang's LoRA manager wraps one by one)."""

    def __init__(self, config, layer_id: int, quant_config: Optional[QuantizationConfig] = None, prefix: str = ""):
        super().__init__()
        hidden, heads = config.hidden_size, config.num_attention_heads
        tp_size = get_parallel().tp_size
        if hidden % heads or heads % tp_size:
            raise ValueError(f"hidden_size {hidden} / num_attention_heads {heads} / tensor parallel size {tp_size} "
                             "do not divide evenly")
        head_dim = hidden // heads
        for name in ("query", "key", "value"):
            setattr(self, name, ColumnParallelLinear(hidden, hidden, bias=True, quant_config=quant_config,
                                                     prefix=add_prefix(name, prefix)))
        self.attn = RadixAttention(
            num_heads=heads // tp_size,
            head_dim=head_dim,
            scaling=head_dim**-0.5,
            num_kv_heads=heads // tp_size,
            layer_id=layer_id,
            prefix=add_prefix("attn", prefix),
            attn_type=AttentionType.ENCODER_ONLY,
        )

    def forward(self, hidden_states: torch.Tensor, forward_batch: ForwardBatch) -> torch.Tensor:
        q, _ = self.query(hidden_states)
        k, _ = self.key(hidden_states)
        v, _ = self.value(hidden_states)
        return self.attn(q, k, v, forward_batch)


class RobertaAttention(nn.Module):
    def __init__(self, config, layer_id: int, quant_config: Optional[QuantizationConfig] = None, prefix: str = ""):
        super().__init__()
        # "self" as in HF (roberta.encoder.layer.<i>.attention.self.query), so names map 1:1.
        self.self = RobertaSelfAttention(config, layer_id, quant_config, add_prefix("self", prefix))
        self.output = BertSelfOutput(config.hidden_size, config.layer_norm_eps, quant_config,
                                     add_prefix("output", prefix))

    def forward(self, hidden_states: torch.Tensor, forward_batch: ForwardBatch) -> torch.Tensor:
        return self.output(self.self(hidden_states, forward_batch), hidden_states)


class RobertaLayer(nn.Module):
    def __init__(self, config, layer_id: int, quant_config: Optional[QuantizationConfig] = None, prefix: str = ""):
        super().__init__()
        self.attention = RobertaAttention(config, layer_id, quant_config, add_prefix("attention", prefix))
        self.intermediate = BertIntermediate(config.hidden_size, config.intermediate_size, config.hidden_act,
                                             quant_config, add_prefix("intermediate", prefix))
        self.output = BertOutput(config.hidden_size, config.intermediate_size, config.layer_norm_eps,
                                 quant_config, add_prefix("output", prefix))

    def forward(self, hidden_states: torch.Tensor, forward_batch: ForwardBatch) -> torch.Tensor:
        attention = self.attention(hidden_states, forward_batch)
        return self.output(self.intermediate(attention), attention)


class RobertaEncoder(nn.Module):
    def __init__(self, config, quant_config: Optional[QuantizationConfig] = None, prefix: str = ""):
        super().__init__()
        self.layers = nn.ModuleList(
            RobertaLayer(config, i, quant_config, add_prefix(f"layers.{i}", prefix))
            for i in range(config.num_hidden_layers)
        )

    def forward(self, hidden_states: torch.Tensor, forward_batch: ForwardBatch) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states, forward_batch)
        return hidden_states


class RobertaModel(nn.Module):
    """RoBERTa's body (embeddings and encoder), without a pooler; parameters named as HF's
    ``RobertaModel`` names them, but for ``encoder.layers.<i>`` (HF: ``encoder.layer.<i>``)."""

    def __init__(self, config, quant_config: Optional[QuantizationConfig] = None, prefix: str = ""):
        super().__init__()
        self.config = config
        self.embeddings = RobertaEmbedding(config)
        self.encoder = RobertaEncoder(config, quant_config, add_prefix("encoder", prefix))

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, forward_batch: ForwardBatch) -> torch.Tensor:
        hidden_states = self.embeddings(input_ids=input_ids, seq_lens=forward_batch.seq_lens,
                                        position_ids=positions, forward_batch=forward_batch)
        return self.encoder(hidden_states, forward_batch)

    def load_weights(self, weights: Iterable[Tuple[str, torch.Tensor]]) -> None:
        """HF ``RobertaModel`` tensors (no ``roberta.`` prefix); the pooler, which the masked-LM
        head does not use, is skipped."""
        params = dict(self.named_parameters())
        for name, tensor in weights:
            if name.startswith("pooler."):
                continue
            name = _HF_LAYER.sub(r"\1encoder.layers.\2.", name)
            param = params.get(name)
            if param is None:
                raise ValueError(f"checkpoint tensor roberta.{name} has no place in RobertaForMaskedLM")
            getattr(param, "weight_loader", default_weight_loader)(param, tensor)


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
        self.roberta = RobertaModel(config, quant_config, add_prefix("roberta", prefix))
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
        hidden_states = self.roberta(input_ids, positions, forward_batch)
        return self.logits_processor(input_ids, hidden_states, self.lm_head, forward_batch)

    # ---- LoRA through SGLang's LoRA manager

    #: What SGLang's attention names (and this project's defaults) mean here: the LoRA targets are
    #: HF/PEFT's RoBERTa names, ``query``/``key``/``value``.
    lora_target_aliases = {"q_proj": "query", "k_proj": "key", "v_proj": "value"}
    #: PEFT has no masked-LM task type: a RoBERTa adapter is a plain ``PeftModel``'s.
    peft_task_type = None

    def get_hidden_dim(self, module_name: str, layer_idx: int) -> Tuple[int, int]:
        """(in, out) features of a LoRA target module, for SGLang's LoRA memory pool."""
        if module_name in ("query", "key", "value"):
            return self.config.hidden_size, self.config.hidden_size
        raise ValueError(f"LoRA target module {module_name!r} is not in RobertaForMaskedLM: choose among "
                         "query, key, value (or their aliases q_proj, k_proj, v_proj)")

    def get_stacked_multiply(self, module_name: str) -> int:
        return 1  # nothing is fused

    @staticmethod
    def peft_name(name: str) -> str:
        """This model's (SGLang's) tensor or module name -> HF's/PEFT's: ``encoder.layers.3.`` ->
        ``encoder.layer.3.``.

        >>> RobertaForMaskedLM.peft_name("roberta.encoder.layers.3.attention.self.query")
        'roberta.encoder.layer.3.attention.self.query'
        """
        return _SGLANG_LAYER.sub(r"\1encoder.layer.\2.", name)

    @staticmethod
    def sglang_lora_name(name: str) -> str:
        """The inverse of :meth:`peft_name`.

        >>> RobertaForMaskedLM.sglang_lora_name("base_model.model.roberta.encoder.layer.0.attention.self.value.lora_B.weight")
        'base_model.model.roberta.encoder.layers.0.attention.self.value.lora_B.weight'
        """
        return _HF_LAYER.sub(r"\1encoder.layers.\2.", name)

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
