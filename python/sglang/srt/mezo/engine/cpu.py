"""Make SGLang's own forward path run on a machine without a GPU.

SGLang 0.5.23 has a CPU engine, but it is switched on by an environment variable that must be set
before its internals are imported, and it imports a few CPU kernels from ``sgl_kernel``, whose
CPU build is not published on PyPI. :func:`ensure_cpu_runtime` covers both, and does nothing on a
machine with CUDA or with a real ``sgl_kernel`` installed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
import types

import torch

logger = logging.getLogger(__name__)


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


def share_cpu_kernels_with_children() -> None:
    """Make the pure-torch ``sgl_kernel`` stand-in importable in SGLang's child processes.

    :func:`ensure_cpu_runtime` puts it in this process's ``sys.modules``; SGLang spawns its
    scheduler and detokenizer (multiprocessing "spawn"), which import SGLang modules that import
    ``sgl_kernel`` before any plugin runs there. A spawned child starts with its parent's
    ``sys.path``, so a folder holding a two-line ``sgl_kernel`` package that re-creates the
    stand-in is enough.
    """
    module = sys.modules.get("sgl_kernel")
    if module is None or not getattr(module, "__sglang_mezo_fallback__", False):
        return
    root = os.path.join(tempfile.gettempdir(), f"sglang-mezo-cpu-kernels-{os.getuid()}")
    package = os.path.join(root, "sgl_kernel")
    init = os.path.join(package, "__init__.py")
    source = ('"""Pure-torch stand-in for sgl_kernel\'s CPU kernels (written by sglang-mezo)."""\n'
              "from sglang.srt.mezo.engine.cpu import _fallback_sgl_kernel as _make\n"
              "globals().update({k: v for k, v in vars(_make()).items() if not k.startswith('__')})\n"
              "__sglang_mezo_fallback__ = True\n")
    try:
        current = open(init).read() if os.path.exists(init) else None
        if current != source:
            os.makedirs(package, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=package)
            with os.fdopen(fd, "w") as f:
                f.write(source)
            os.replace(tmp, init)
    except OSError:
        logger.warning("sglang-mezo: could not write the CPU kernel stand-in to %s", root, exc_info=True)
        return
    if root not in sys.path:
        sys.path.append(root)
