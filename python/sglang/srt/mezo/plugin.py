"""sglang-mezo's SGLang plugin: every hook the package installs into SGLang, and when.

SGLang calls :func:`register` (entry point group ``sglang.srt.plugins``) in its CLI, Engine,
scheduler and detokenizer processes; :func:`sglang.srt.mezo.engine.runner.build_model_runner` calls
``load_plugins()`` for in-process runners. What it installs:

- in every process: on a machine without a GPU, :data:`CPU_HOOKS` (SGLang's LoRA layers without
  pinned host memory); ``RobertaForMaskedLM`` in SGLang's model registry; :data:`LAUNCH_HOOKS`, the
  ``--enable-mezo`` flags on ``ServerArgs`` (:mod:`.server.launch_flags`);
- in a launcher started with ``--enable-mezo``, once its arguments are parsed
  (:func:`after_from_cli_args`): :data:`HTTP_HOOKS`, the job API on SGLang's app (:mod:`.server.http_api`);
- in a child process of such a launcher (``SGLANG_MEZO_SERVER`` set): :data:`SCHEDULER_HOOKS`, the
  training units' turns between serving batches (:mod:`.server.scheduler_jobs`).

The users' extension modules (``--mezo-extensions`` and the entry points of ``sglang_mezo.extensions``,
:mod:`.extensions`) are imported through these hooks in both processes that read graders: by
:data:`LAUNCH_HOOKS` in the launcher, which is the HTTP process (a module that fails to import stops the
launch), again as :data:`HTTP_HOOKS` install the job API, and by :data:`SCHEDULER_HOOKS` in the
scheduler when its jobs are first made, before any job trains.

Without ``--enable-mezo`` a server gets only the flags: no route, no scheduler hook.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any, Callable, Iterator, Sequence

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

import torch
from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from sglang.srt.mezo.engine.cpu import ensure_cpu_runtime, share_cpu_kernels_with_children
from sglang.srt.mezo.server.http_api import before_setup_http_server
from sglang.srt.mezo.server.launch_flags import ENV, add_flags, attach_settings, configure_launch
from sglang.srt.mezo.server.scheduler_jobs import after_on_idle, after_process_batch_result, around_maybe_sleep_on_idle

#: (target, hook, kind): a hook as SGLang's HookRegistry takes it.
Hook = tuple[str, Callable, HookType]

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


def without_pinning(original: Callable, *args: Any, **kwargs: Any) -> Any:
    """AROUND one of SGLang's LoRA methods that pin host memory: the method, with pinning a no-op."""
    with _pageable_host_memory():
        return original(*args, **kwargs)


def after_from_cli_args(result: Any, cls: Any, args: argparse.Namespace, *rest: Any, **kwargs: Any) -> Any:
    """AFTER ``ServerArgs.from_cli_args``: with --enable-mezo, the settings on the record and the
    job API's hooks on SGLang's HTTP server (applied now: the launcher starts it next)."""
    if attach_settings(result, args) is not None:
        _register(HTTP_HOOKS)
        HookRegistry.apply_hooks()
    return result


CPU_HOOKS: Sequence[Hook] = tuple((target, without_pinning, HookType.AROUND) for target in _LORA_METHODS_THAT_PIN)

LAUNCH_HOOKS: Sequence[Hook] = (
    ("sglang.srt.server_args.ServerArgs.add_cli_args", add_flags, HookType.AFTER),
    ("sglang.srt.server_args.ServerArgs.from_cli_args", configure_launch, HookType.BEFORE),
    ("sglang.srt.server_args.ServerArgs.from_cli_args", after_from_cli_args, HookType.AFTER),
)

HTTP_HOOKS: Sequence[Hook] = (
    ("sglang.srt.entrypoints.http_server._setup_and_run_http_server", before_setup_http_server, HookType.BEFORE),
)

SCHEDULER_HOOKS: Sequence[Hook] = (
    ("sglang.srt.managers.scheduler.Scheduler.process_batch_result", after_process_batch_result, HookType.AFTER),
    ("sglang.srt.managers.scheduler.Scheduler.on_idle", after_on_idle, HookType.AFTER),
    ("sglang.srt.managers.scheduler.Scheduler.maybe_sleep_on_idle", around_maybe_sleep_on_idle, HookType.AROUND),
)


def _register(hooks: Sequence[Hook]) -> None:
    for target, hook, kind in hooks:
        HookRegistry.register(target, hook, kind)


def register() -> None:
    """Entry point: install the CPU fixes, sglang-mezo's model classes and the server's hooks into SGLang."""
    if ensure_cpu_runtime():
        _register(CPU_HOOKS)

    # The registry imports every one of SGLang's model modules (seconds): when SGLang loads the
    # plugin, not wherever this module is imported for its hook tables.
    from sglang.srt.models.registry import ModelRegistry  # noqa: PLC0415

    from sglang.srt.mezo.engine.roberta_mlm import RobertaForMaskedLM  # noqa: PLC0415

    ModelRegistry.models["RobertaForMaskedLM"] = RobertaForMaskedLM

    share_cpu_kernels_with_children()
    _register(LAUNCH_HOOKS)
    if os.environ.get(ENV):
        _register(SCHEDULER_HOOKS)
