"""Make SGLang's own forward path run on a machine without a GPU.

SGLang 0.5.23 has a CPU engine, but it is switched on by an environment variable that must be set
before its internals are imported, and it imports a few CPU kernels from ``sgl_kernel``, whose
CPU build is not published on PyPI. :func:`ensure_cpu_runtime` covers both, and does nothing on a
machine with CUDA or with a real ``sgl_kernel`` installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import torch

# Names the CPU engine imports from sgl_kernel but that the torch_native paths used for training
# never call (speculative decoding, hierarchical KV cache): importable, and loud if ever called.
_UNUSED_CPU_KERNELS = (
    "copy_all_layer_kv_cache_cpu",
    "assign_draft_cache_locs_contiguous_cpu",
    "assign_extend_cache_locs_cpu",
    "build_tree_kernel_efficient_cpu",
    "fill_accept_out_cache_loc_cpu",
    "fill_bonus_tokens_cpu",
    "verify_tree_greedy_cpu",
)


def use_cpu_engine() -> bool:
    """True when SGLang should run on the CPU (no CUDA device, or forced by the user)."""
    if os.environ.get("SGLANG_USE_CPU_ENGINE", "").lower() in ("1", "true"):
        return True
    return not torch.cuda.is_available()


def _assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    # out_cache_loc holds the new KV slots of all requests packed back to back, in batch order.
    packed = 0
    for row, start, end in zip(req_pool_indices.tolist(), start_offset.tolist(), end_offset.tolist()):
        n = end - start
        req_to_token[row, start:end] = out_cache_loc[packed : packed + n]
        packed += n


def _not_available(name: str):
    def fail(*args, **kwargs):
        raise NotImplementedError(
            f"sgl_kernel.{name} has no CPU fallback in sglang-mezo; it belongs to an SGLang feature "
            "(speculative decoding, hierarchical cache) that MeZO training does not use on the CPU. "
            "Install SGLang's CPU kernels (sgl-kernel built for CPU) to use it."
        )

    return fail


def _fallback_sgl_kernel() -> types.ModuleType:
    module = types.ModuleType("sgl_kernel")
    module.__doc__ = "Pure-torch stand-in for sgl_kernel's CPU kernels (installed by sglang-mezo)."
    module.assign_req_to_token_pool_cpu = _assign_req_to_token_pool_cpu
    for name in _UNUSED_CPU_KERNELS:
        setattr(module, name, _not_available(name))
    module.__sglang_mezo_fallback__ = True
    return module


def ensure_cpu_runtime() -> bool:
    """Prepare SGLang for the CPU if there is no GPU; returns whether the CPU engine is in use.

    Must run before ``sglang.srt``'s model-executor modules are imported (they read the engine
    choice at import time); every sglang-mezo entry point calls it first.
    """
    if not use_cpu_engine():
        return False
    os.environ["SGLANG_USE_CPU_ENGINE"] = "1"
    if "sgl_kernel" not in sys.modules and importlib.util.find_spec("sgl_kernel") is None:
        sys.modules["sgl_kernel"] = _fallback_sgl_kernel()
    return True
