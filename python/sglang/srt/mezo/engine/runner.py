"""A ModelRunner built in this process the way SGLang's scheduler builds one (on a CPU: its
torch_native attention and LoRA backends, no CUDA graphs), its dtype and device, and its release.

The forwards that MeZO runs on it are in :mod:`sglang.srt.mezo.engine.forward`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

import torch
from sglang.srt.configs.model_config import ModelConfig
from sglang.srt.distributed import bootstrap
from sglang.srt.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel
from sglang.srt.model_executor.model_runner import ModelRunner
from sglang.srt.plugins import load_plugins
from sglang.srt.runtime_context import SpawnRanks, get_device, publish, spawn_world_rank
from sglang.srt.server_args import PortArgs, ServerArgs

from sglang.srt.mezo.engine.hardware import AUTO_DTYPE, choose_dtype
from sglang.srt.mezo.engine.lora_pool import model_lora_targets
from sglang.srt.mezo.engine.models import model_architectures

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
    # SGLang's Engine module takes half a second to import, for this one setup call.
    from sglang.srt.entrypoints.engine import _set_envs_and_config  # noqa: PLC0415

    device = resolve_device(spec.device)
    native = choose_dtype(AUTO_DTYPE, device)
    dtype = native.dtype if spec.dtype == AUTO_DTYPE else spec.dtype
    if dtype == "bfloat16" and native.dtype != "bfloat16":
        logger.warning("dtype bfloat16 was asked for, but %s", native.reason.split(": ", 1)[1])
    # Our plugin (CPU LoRA fix, model classes) must be in place before the model is built, and
    # a hand-built runner is not a process where SGLang loads plugins by itself.
    load_plugins()

    kwargs: dict = dict(
        model_path=spec.model_path,
        device="cpu" if device == "cpu" else "cuda",
        dtype=dtype,
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
    # The registry imports every model class SGLang has (about a second, and a log line per model
    # that cannot load here): only a LoRA runner's target names need it.
    from sglang.srt.models.registry import ModelRegistry  # noqa: PLC0415

    architectures = model_architectures(model_path)
    return ModelRegistry.models.get(architectures[0]) if architectures else None


def release_model_runner(runner: ModelRunner) -> None:
    """Tear down what :func:`build_model_runner` set up process-wide, so that another runner can be
    built in this process (SGLang builds its parallel groups once per process)."""
    destroy_model_parallel()
    destroy_distributed_environment()
    del runner
