"""SGLang's in-process forward path, as MeZO needs it: batched extend forwards that return logits
for chosen vocabulary rows at chosen positions.

The forward goes through ``ModelRunner.forward`` (RadixAttention, the attention backend, the LoRA
manager's batch preparation) exactly as the scheduler drives it for a prefill. Two things differ:
- the model's ``logits_processor`` is swapped, for the duration of one forward, for
  :class:`PositionLogits`, which computes ``hidden[pos] @ W[vocab_ids].T`` only: no full-vocabulary
  logits anywhere;
- requests never match a prefix (:class:`NoPrefixCache`) and their KV slots are freed right after
  the forward, so no KV computed under other weights is ever reused, and a runner that belongs to a
  live server keeps all of its own cache entries.
"""

from __future__ import annotations

import contextlib
import logging
from array import array
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

from sglang.srt.mezo_cpu import ensure_cpu_runtime

ensure_cpu_runtime()

import torch  # noqa: E402

from sglang.srt.layers.logits_processor import LogitsProcessorOutput  # noqa: E402
from sglang.srt.managers.schedule_batch import Req, ScheduleBatch  # noqa: E402
from sglang.srt.model_executor.forward_batch_info import ForwardBatch  # noqa: E402
from sglang.srt.model_executor.model_runner import ModelRunner  # noqa: E402
from sglang.srt.runtime_context import get_schedule  # noqa: E402
from sglang.srt.sampling.sampling_params import SamplingParams  # noqa: E402
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm  # noqa: E402

logger = logging.getLogger(__name__)


@dataclass
class RunnerSpec:
    """How to build an in-process ModelRunner. ``device=None`` picks CUDA when present, else CPU."""

    model_path: str
    device: Optional[str] = None
    dtype: str = "float32"
    max_total_tokens: int = 8192
    context_length: Optional[int] = None
    lora_rank: Optional[int] = None  # enables SGLang's LoRA manager when set
    lora_target_modules: Optional[list[str]] = None
    max_loras_per_batch: int = 3  # slot 0 is the base model; +/- eps as two adapters needs 3
    is_embedding: bool = False
    seed: int = 0
    extra_server_args: dict = field(default_factory=dict)


def runner_dtype(runner: ModelRunner) -> str:
    """The dtype a runner's weights are in, as a run spec names it ("float32", "bfloat16", ...)."""
    return str(runner.model_config.dtype).removeprefix("torch.")


def resolve_device(device: Optional[str]) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    return device


def build_model_runner(spec: RunnerSpec) -> ModelRunner:
    """Build a ModelRunner for ``spec`` in this process, the way SGLang's scheduler builds one.

    On a CPU it selects what runs there (torch_native attention and LoRA backends, the PyTorch
    sampler, no CUDA graphs); the user sets nothing.

    Example:
        >>> runner = build_model_runner(RunnerSpec("path/to/llama"))  # doctest: +SKIP
    """
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.distributed import bootstrap
    from sglang.srt.entrypoints.engine import _set_envs_and_config
    from sglang.srt.plugins import load_plugins
    from sglang.srt.runtime_context import SpawnRanks, get_device, publish, spawn_world_rank
    from sglang.srt.server_args import PortArgs, ServerArgs

    device = resolve_device(spec.device)
    if device == "cpu" and spec.dtype == "bfloat16" and not torch.cpu._is_avx512_bf16_supported():
        # Without bf16 instructions PyTorch emulates bf16 matmuls, and they run slower than fp32.
        logger.warning("this CPU has no bf16 instructions (avx512_bf16/AMX): dtype='float32' will be faster")
    # Our plugin (CPU LoRA fix, model classes) must be in place before the model is built, and
    # a hand-built runner is not a process where SGLang loads plugins by itself.
    load_plugins()

    kwargs: dict = dict(
        model_path=spec.model_path,
        device="cpu" if device == "cpu" else "cuda",
        dtype=spec.dtype,
        max_total_tokens=spec.max_total_tokens,
        disable_radix_cache=True,
        skip_tokenizer_init=True,
        random_seed=spec.seed,
        is_embedding=spec.is_embedding,
        log_level="error",
    )
    if spec.context_length:
        kwargs["context_length"] = spec.context_length
    if device == "cpu":
        kwargs.update(
            attention_backend="torch_native",
            sampling_backend="pytorch",
            disable_cuda_graph=True,
        )
    if spec.lora_rank is not None:
        from sglang.srt.mezo_lora import model_lora_targets

        # In the model's own names: on RoBERTa, q_proj/v_proj are its query/value projections.
        targets = model_lora_targets(_model_class(spec.model_path), spec.lora_target_modules or ["q_proj", "v_proj"])
        kwargs.update(
            enable_lora=True,
            max_lora_rank=spec.lora_rank,
            lora_target_modules=list(targets),
            max_loras_per_batch=spec.max_loras_per_batch,
            lora_backend="torch_native" if device == "cpu" else "triton",
        )
    kwargs.update(spec.extra_server_args)

    server_args = ServerArgs(**kwargs)
    server_args.resolve_once()
    _set_envs_and_config(server_args)
    port_args = PortArgs.init_new(server_args)
    gpu_id = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    publish(
        server_args,
        role="scheduler",
        ranks=SpawnRanks(world_rank=spawn_world_rank(server_args, tp_rank=0, pp_rank=0), gpu_id=gpu_id),
    )
    model_config = ModelConfig.from_server_args(server_args)
    bootstrap.init_parallel_runtime(
        server_args=server_args, device=get_device().device, dist_port=port_args.nccl_port
    )
    bootstrap.init_layer_runtime(model_config=model_config)
    runner = ModelRunner(
        model_config=model_config,
        mem_fraction_static=server_args.mem_fraction_static,
        gpu_id=gpu_id,
        nccl_port=port_args.nccl_port,
        server_args=server_args,
    )
    runner.alloc_memory_pool()
    runner.init_attention_backends()
    runner.init_cuda_graphs()  # also sets up the eager path when graphs are disabled
    runner.model.eval()
    return runner


def _model_class(model_path: str):
    """The model class SGLang registers for the checkpoint's architecture (None if it has no readable
    config); read for its ``lora_target_aliases`` only."""
    from sglang.srt.mezo_models import model_architectures
    from sglang.srt.models.registry import ModelRegistry

    architectures = model_architectures(model_path)
    return ModelRegistry.models.get(architectures[0]) if architectures else None


def release_model_runner(runner: ModelRunner) -> None:
    """Tear down what :func:`build_model_runner` set up process-wide, so that another runner can be
    built in this process (SGLang builds its parallel groups once per process)."""
    from sglang.srt.distributed.parallel_state import (
        destroy_distributed_environment,
        destroy_model_parallel,
    )

    destroy_model_parallel()
    destroy_distributed_environment()
    del runner


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
