"""sglang-mezo's general plugin: what must run inside every SGLang process that may train.

SGLang calls :func:`register` (entry point group ``sglang.srt.plugins``) in its CLI, Engine,
scheduler and detokenizer processes; :func:`sglang.srt.mezo.engine.runner.build_model_runner` calls
``load_plugins()`` for in-process runners.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from sglang.srt.mezo.engine.cpu import ensure_cpu_runtime

# SGLang's LoRA layers stage small index tensors in pinned host memory, which PyTorch refuses
# without an accelerator. Only these constructors/methods are wrapped, only while they run.
_LORA_METHODS_THAT_PIN = (
    "sglang.srt.lora.layers.VocabParallelEmbeddingWithLoRA.__init__",
    "sglang.srt.lora.layers.ParallelLMHeadWithLoRA.__init__",
    "sglang.srt.lora.layers.ColumnParallelLinearWithLoRA.__init__",
    "sglang.srt.lora.layers.MergedColumnParallelLinearWithLoRA.set_lora_info",
    "sglang.srt.lora.layers.QKVParallelLinearWithLoRA.__init__",
    "sglang.srt.lora.layers.RowParallelLinearWithLoRA.__init__",
    "sglang.srt.lora.backend.torch_backend.TorchNativeLoRABackend.prepare_lora_batch",
)


_FACTORIES = ("tensor", "zeros", "ones", "empty", "full", "arange")


@contextlib.contextmanager
def _pageable_host_memory() -> Iterator[None]:
    import torch

    originals = {name: getattr(torch, name) for name in _FACTORIES}
    pin = torch.Tensor.pin_memory

    def unpinned(factory):
        def make(*args, **kwargs):
            kwargs.pop("pin_memory", None)
            return factory(*args, **kwargs)

        return make

    for name, factory in originals.items():
        setattr(torch, name, unpinned(factory))
    torch.Tensor.pin_memory = lambda self, *a, **k: self
    try:
        yield
    finally:
        for name, factory in originals.items():
            setattr(torch, name, factory)
        torch.Tensor.pin_memory = pin


def _without_pinning(original, *args, **kwargs):
    with _pageable_host_memory():
        return original(*args, **kwargs)


def register() -> None:
    """Entry point: install the CPU fixes and sglang-mezo's model classes into SGLang."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    if ensure_cpu_runtime():
        for target in _LORA_METHODS_THAT_PIN:
            HookRegistry.register(target, _without_pinning, HookType.AROUND)

    # Imported here, after ensure_cpu_runtime(): SGLang's model modules read the engine choice.
    from sglang.srt.models.registry import ModelRegistry

    from sglang.srt.mezo.engine.roberta_mlm import RobertaForMaskedLM

    ModelRegistry.models["RobertaForMaskedLM"] = RobertaForMaskedLM

    # The server side: --enable-mezo and its job API.
    from sglang.srt.mezo.engine.cpu import share_cpu_kernels_with_children
    from sglang.srt.mezo.server.hooks import register as register_server

    share_cpu_kernels_with_children()
    register_server()
