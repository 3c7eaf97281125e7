"""What a training run asks of the engine before its first step, from its spec: the dtype it
computes in, and a ModelRunner with LoRA slots for the adapter and its perturbed copies."""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

from sglang.srt.model_executor.model_runner import ModelRunner

from sglang.srt.mezo.engine.hardware import AUTO_DTYPE, choose_dtype
from sglang.srt.mezo.engine.models import check_model_path, is_masked_lm, model_architectures, resolve_model_path
from sglang.srt.mezo.engine.runner import RunnerSpec, build_model_runner, resolve_device, runner_dtype
from sglang.srt.mezo.run_spec.config import MeZOConfig

logger = logging.getLogger(__name__)


def checked_model(model_path: Optional[str], config: MeZOConfig, runner: Optional[ModelRunner] = None,
                  kind: Optional[str] = None) -> tuple[str, str]:
    """(model path, kind: "masked" or "causal") of a run: a runner's own model; else ``model_path``
    (or the spec's) resolved and checked, unless the caller did that already and says so by
    naming the ``kind`` (a run's plan)."""
    if runner is not None:
        model_path = runner.server_args.model_path
    elif kind is None:
        model_path = resolve_model_path(model_path or config.model_path)
        check_model_path(model_path)
    return model_path, kind or ("masked" if is_masked_lm(model_architectures(model_path)) else "causal")


def with_dtype(config: MeZOConfig, runner: Optional[ModelRunner] = None) -> MeZOConfig:
    """``config`` with its dtype settled: a runner the run does not own sets it (a server's, say);
    "auto" becomes the choice for the device (a plan has usually chosen already)."""
    if runner is not None:
        return dataclasses.replace(config, dtype=runner_dtype(runner))
    if config.dtype != AUTO_DTYPE:
        return config
    choice = choose_dtype(config.dtype, resolve_device(config.device))
    logger.info("dtype %s", choice.reason)
    return dataclasses.replace(config, dtype=choice.dtype)


def runner_for(config: MeZOConfig, model_path: str, *, masked: bool) -> ModelRunner:
    """A ModelRunner in this process for a run with ``config`` (dtype settled): LoRA enabled for a
    LoRA run, with a slot for the base model and two for each pair its estimator takes (config.slot_pairs_per_forward)."""
    use_lora = config.trainable == "lora"
    return build_model_runner(RunnerSpec(
        model_path=model_path,
        device=config.device,
        dtype=config.dtype,
        max_total_tokens=config.max_total_tokens,
        lora_rank=config.lora_rank if use_lora else None,
        lora_target_modules=list(config.lora_target_modules) if use_lora else None,
        max_loras_per_batch=1 + 2 * config.slot_pairs_per_forward,
        is_embedding=masked,
        seed=config.seed,
    ))
