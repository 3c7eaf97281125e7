"""A LoRA adapter inside SGLang's LoRA manager, seen as the set of tensors MeZO trains.

SGLang stores an adapter in a memory-pool slot with its projections fused (``q/k/v`` into
``qkv_proj``, ``gate/up`` into ``gate_up_proj``) and a host copy it reloads from after an eviction.
:class:`PoolLoRA` names each real PEFT tensor (``...q_proj.lora_A.weight``) and hands out views into
the pool slot, so MeZO's in-place perturbations are what the next forward reads, and nothing else in
the slot (the zero ``k_proj`` rows of a q/v adapter, the rank padding) is ever touched.

A model class can adapt this to its own names (:class:`~sglang.srt.mezo.engine.roberta_mlm.RobertaForMaskedLM` does):
``lora_target_aliases`` maps the target names users may pass to the model's own (``q_proj`` ->
``query``), ``peft_name``/``sglang_lora_name`` rename tensors between the model's module paths and
PEFT's, and ``peft_task_type`` is the ``task_type`` written into a saved adapter's config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

import torch
from safetensors.torch import load_file, save_file
from sglang.srt.lora.lora_registry import LoRARef

from sglang.srt.mezo.io import atomic_json, atomic_write
from sglang.srt.mezo.run_spec.defaults import ENCODER_TARGETS, SUPPORTED_TARGETS

# Projections SGLang fuses, and their slice order inside the fused module.
#: SGLang's fused projections and the HF modules stacked into each, in stacking order.
FUSED_PROJECTIONS: dict[str, tuple[str, ...]] = {"qkv_proj": ("q_proj", "k_proj", "v_proj"),
                                                "gate_up_proj": ("gate_proj", "up_proj")}
#: HF module -> (SGLang's fused module, its index in the stack).
_FUSED = {part: (fused, i) for fused, parts in FUSED_PROJECTIONS.items() for i, part in enumerate(parts)}


@dataclass(frozen=True)
class LoRASettings:
    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"lora rank must be >= 1, got {self.rank}")
        unknown = [t for t in self.target_modules if t not in SUPPORTED_TARGETS + ENCODER_TARGETS]
        if unknown or not self.target_modules:
            raise ValueError(
                f"LoRA target modules {unknown or list(self.target_modules)} are not supported; "
                f"choose among {list(SUPPORTED_TARGETS)} (RoBERTa: {list(ENCODER_TARGETS)})"
            )


@dataclass
class LoRATensor:
    name: str  # PEFT name, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
    pool: torch.Tensor  # view into the pool slot: what forwards read
    host: torch.Tensor  # view into SGLang's host copy of the adapter


def _wrapped_modules(runner) -> list[dict[str, torch.nn.Module]]:
    return runner.lora_manager.lora_modules


def model_lora_targets(model, targets: Sequence[str]) -> tuple[str, ...]:
    """``targets`` in ``model``'s own names (its class's ``lora_target_aliases``), in order, once each.
    ``model`` may be a model instance or class; a model without aliases keeps the names as given.

    >>> class Encoder: lora_target_aliases = {"q_proj": "query", "v_proj": "value"}
    >>> model_lora_targets(Encoder, ["q_proj", "value", "v_proj"])
    ('query', 'value')
    >>> model_lora_targets(None, ["q_proj", "v_proj"])
    ('q_proj', 'v_proj')
    """
    aliases = getattr(model, "lora_target_aliases", None) or {}
    return tuple(dict.fromkeys(aliases.get(t, t) for t in targets))


def _peft_path(runner, module_path: str) -> str:
    """A module path of the SGLang model as PEFT names it in the HF model."""
    rename = getattr(runner.model, "peft_name", None)
    return rename(module_path) if rename is not None else module_path


def _peft_task_type(runner) -> Optional[str]:
    return getattr(runner.model, "peft_task_type", "CAUSAL_LM")


def load_adapter(runner, lora_ref, path: str):
    """Load the PEFT adapter in folder ``path`` into ``runner``'s LoRA manager under ``lora_ref``.

    SGLang reads adapter files by name (a layer is ``layers.<i>.``, q/v are ``q_proj``/``v_proj``);
    a model whose PEFT names differ (``sglang_lora_name``) gets its tensors renamed and handed over
    in memory. Returns SGLang's ``LoRAUpdateOutput``."""
    rename = getattr(runner.model, "sglang_lora_name", None)
    if rename is None:
        return runner.load_lora_adapter(lora_ref)
    weights = os.path.join(path, "adapter_model.safetensors")
    if os.path.isfile(weights):
        tensors = load_file(weights)
    else:  # older PEFT versions wrote a pickle
        tensors = torch.load(os.path.join(path, "adapter_model.bin"), map_location="cpu", weights_only=True)
    with open(os.path.join(path, "adapter_config.json")) as f:
        config = json.load(f)
    return runner.load_lora_adapter_from_tensors(lora_ref, {rename(k): v for k, v in tensors.items()}, config)


def check_targets(runner, settings: LoRASettings) -> None:
    """Fail early, naming what the model has, when a target module is not in it."""
    present = set()
    for layer_modules in _wrapped_modules(runner):
        for full_name in layer_modules:
            present.add(full_name.rsplit(".", 1)[-1])
    for target in settings.target_modules:
        fused = _FUSED.get(target, (target, 0))[0]
        if fused not in present:
            raise ValueError(
                f"LoRA target module {target!r} is not in this model (it has: {sorted(present)}); "
                "SGLang's LoRA manager was started with lora_target_modules="
                f"{sorted(runner.lora_manager.target_modules)}"
            )


def _module_shapes(runner, target: str, layer: int) -> tuple[str, int, int]:
    """(HF module path, in_features, out_features) of ``target`` in ``layer``."""
    fused, index = _FUSED.get(target, (target, 0))
    for full_name, module in _wrapped_modules(runner)[layer].items():
        if full_name.rsplit(".", 1)[-1] != fused:
            continue
        pool = runner.lora_manager.memory_pool
        in_dim = pool.A_buffer[fused][layer].shape[-1]
        offsets = getattr(module, "lora_offsets", (0, pool.B_buffer[fused][layer].shape[1]))
        out_dim = offsets[index + 1] - offsets[index]
        return _peft_path(runner, full_name.rsplit(".", 1)[0]) + "." + target, in_dim, out_dim
    raise ValueError(f"layer {layer} has no LoRA-wrapped {fused}")


def init_peft_tensors(runner, settings: LoRASettings) -> dict[str, torch.Tensor]:
    """A new adapter initialised as PEFT initialises one: A ~ kaiming-uniform(a=sqrt(5)), B = 0,
    so training starts exactly at the base model. Seeded, so runs are reproducible."""
    gen = torch.Generator().manual_seed(settings.seed)
    tensors = {}
    for layer in range(len(_wrapped_modules(runner))):
        for target in settings.target_modules:
            path, in_dim, out_dim = _module_shapes(runner, target, layer)
            a = torch.empty(settings.rank, in_dim)
            bound = 1.0 / math.sqrt(in_dim)  # kaiming_uniform_(a=sqrt(5)) reduces to this bound
            a.uniform_(-bound, bound, generator=gen)
            tensors[f"base_model.model.{path}.lora_A.weight"] = a
            tensors[f"base_model.model.{path}.lora_B.weight"] = torch.zeros(out_dim, settings.rank)
    return tensors


def peft_config_dict(settings: LoRASettings, base_model: str, task_type: Optional[str] = "CAUSAL_LM") -> dict:
    """The ``adapter_config.json`` of an adapter with ``settings``; ``task_type`` None for a model
    PEFT has no task type for (a masked LM)."""
    # peft takes seconds to import; only writing an adapter's config needs it.
    from peft import LoraConfig  # noqa: PLC0415

    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        target_modules=list(settings.target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type=task_type,
        base_model_name_or_path=base_model,
    )
    return config.to_dict()


def save_peft_adapter(directory: str, tensors: dict[str, torch.Tensor], config: dict) -> str:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into ``directory``, each
    atomically (:func:`sglang.srt.mezo.io.atomic_write`); the weights go last, so a folder with
    weights is always complete."""
    atomic_json(os.path.join(directory, "adapter_config.json"), config, indent=2)
    cpu = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    atomic_write(os.path.join(directory, "adapter_model.safetensors"),
                 lambda path: save_file(cpu, path, metadata={"format": "pt"}))
    return directory


class _DropCopyWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "another copy is being loaded" not in record.getMessage()


@contextlib.contextmanager
def copies_expected() -> Iterator[None]:
    """Silence SGLang's warning that an adapter folder is being loaded under a second name: MeZO's
    -eps twin and a split batch's probe slots are such copies by design (one per slot)."""
    manager_log = logging.getLogger("sglang.srt.lora.lora_manager")
    quiet = _DropCopyWarnings()
    manager_log.addFilter(quiet)
    try:
        yield
    finally:
        manager_log.removeFilter(quiet)


class PoolLoRA:
    """The trainable tensors of one adapter resident in SGLang's LoRA memory pool.

    Example:
        >>> lora = PoolLoRA.create(runner, LoRASettings(rank=8), "mezo", "/tmp/mezo-init")  # doctest: +SKIP
        >>> [t.name for t in lora.tensors][:1]  # doctest: +SKIP
        ['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight']
    """

    def __init__(self, runner, lora_ref, settings: LoRASettings, base_model: str):
        self.runner = runner
        self.ref = lora_ref
        # Target names as the model spells them (q_proj -> query on RoBERTa): what PEFT and the pool use.
        self.settings = dataclasses.replace(
            settings, target_modules=model_lora_targets(runner.model, settings.target_modules))
        self.base_model = base_model
        self.tensors: list[LoRATensor] = list(self._views())

    @property
    def lora_id(self) -> str:
        return self.ref.lora_id

    @classmethod
    def create(
        cls,
        runner,
        settings: LoRASettings,
        name: str,
        init_dir: str,
        base_model: str,
        init_from: Optional[str] = None,
    ) -> "PoolLoRA":
        """Load a new (or, with ``init_from``, an existing PEFT) adapter into ``runner``'s manager,
        pinned so that it is never evicted while it trains."""
        settings = dataclasses.replace(settings, target_modules=model_lora_targets(runner.model, settings.target_modules))
        check_targets(runner, settings)
        path = init_from
        if path is None:
            path = save_peft_adapter(
                init_dir, init_peft_tensors(runner, settings),
                peft_config_dict(settings, base_model, _peft_task_type(runner)),
            )
        ref = LoRARef(lora_name=name, lora_path=path, pinned=True)
        result = load_adapter(runner, ref, path)
        if not result.success:
            raise RuntimeError(f"SGLang could not load the LoRA adapter at {path}: {result.error_message}")
        lora = cls(runner, ref, settings, base_model)
        lora.make_resident()
        return lora

    def make_resident(self) -> None:
        """Give the adapter its pool slot now (SGLang loads it lazily at its first batch)."""
        manager = self.runner.lora_manager
        if self.lora_id not in manager.memory_pool.uid_to_buffer_id:
            manager.fetch_new_loras({self.lora_id})
        self.tensors = list(self._views())

    def _views(self) -> Iterator[LoRATensor]:
        manager = self.runner.lora_manager
        pool = manager.memory_pool
        slot = pool.uid_to_buffer_id.get(self.lora_id)
        if slot is None:
            return
        adapter = manager.loras[self.lora_id]
        r = self.settings.rank
        for layer, modules in enumerate(manager.lora_modules):
            host_weights = adapter.layers[layer].weights
            for target in self.settings.target_modules:
                fused, index = _FUSED.get(target, (target, 0))
                full_name, module = next(
                    (n, m) for n, m in modules.items() if n.rsplit(".", 1)[-1] == fused
                )
                offsets = getattr(module, "lora_offsets", (0, pool.B_buffer[fused][layer].shape[1]))
                out = slice(offsets[index], offsets[index + 1])
                rows = slice(index * r, (index + 1) * r)
                host_a = next(v for k, v in host_weights.items() if k.endswith(f"{fused}.lora_A.weight"))
                host_b = next(v for k, v in host_weights.items() if k.endswith(f"{fused}.lora_B.weight"))
                peft = f"base_model.model.{_peft_path(self.runner, full_name.rsplit('.', 1)[0])}.{target}"
                yield LoRATensor(f"{peft}.lora_A.weight", pool.A_buffer[fused][layer][slot, rows, :], host_a[rows])
                yield LoRATensor(f"{peft}.lora_B.weight", pool.B_buffer[fused][layer][slot, out, :r], host_b[out])

    def sync_host_copy(self) -> None:
        """Copy the trained pool values into SGLang's host copy, which it reloads after eviction."""
        with torch.no_grad():
            for t in self.tensors:
                t.host.copy_(t.pool)

    def unload(self) -> None:
        """Remove the adapter from SGLang's LoRA manager, freeing its pool slot."""
        result = self.runner.unload_lora_adapter(self.ref)
        if not result.success:
            raise RuntimeError(f"SGLang could not unload LoRA adapter {self.ref.lora_name}: {result.error_message}")
        self.tensors = []

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {t.name: t.pool for t in self.tensors}

    def save(self, directory: str, replace: Optional[dict[str, torch.Tensor]] = None) -> str:
        """The adapter as a PEFT folder; ``replace``: tensors (by PEFT name) to write instead of the
        slot's own (a perturbed copy's values, say)."""
        return save_peft_adapter(
            directory, {**self.state_dict(), **(replace or {})},
            peft_config_dict(self.settings, self.base_model, _peft_task_type(self.runner)),
        )

    @property
    def num_parameters(self) -> int:
        return sum(t.pool.numel() for t in self.tensors)
