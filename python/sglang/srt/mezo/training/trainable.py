"""What MeZO perturbs and updates: every weight of the model, or a LoRA adapter's tensors in
SGLang's memory pool (:class:`TrainableSet`)."""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from typing import Callable, Optional, Sequence

import torch
from safetensors.torch import load_file

from sglang.srt.mezo.engine.lora_pool import LoRASettings, PoolLoRA, copies_expected
from sglang.srt.mezo.engine.tensor_parallel import tensor_parallel_layouts
from sglang.srt.mezo.run_spec.config import MeZOConfig

#: Where a run folder or checkpoint holds the PEFT adapter.
ADAPTER_DIR = "adapter"


class TrainableSet(ABC):
    """The tensors a MeZO run perturbs and updates, in place, and what saving and loading them means.

    ``names`` and ``tensors`` are parallel lists (the tensors are the live ones SGLang computes
    with); ``layouts`` gives each tensor's tensor-parallel shard layout (None: none is sharded);
    ``lora_id`` is the adapter requests must name to see the tensors (None: the base model's own);
    ``probe_slots`` are the (plus, minus) LoRA slots of a paired forward, one pair per direction
    (empty: the +eps and -eps passes are two forwards over ``tensors`` themselves)."""

    names: list[str]
    tensors: list[torch.Tensor]
    layouts: Optional[list] = None
    lora_id: Optional[str] = None
    probe_slots: list = []

    @property
    def paired(self) -> bool:
        """Whether the +eps and -eps passes share one forward, on two slots of their own."""
        return bool(self.probe_slots)

    @property
    @abstractmethod
    def num_parameters(self) -> int:
        """How many numbers the run trains."""

    def start(self) -> dict:
        """What the run started from, for its trajectory (base: the base model's own weights)."""
        return {}

    def after_update(self) -> None:
        """Called after every change to ``tensors``."""

    def save(self, directory: str) -> Optional[str]:
        """Write the trained tensors under ``directory``; returns what was written (None: nothing,
        the trajectory is the record)."""
        return None

    def holds_weights(self) -> bool:
        """Whether :meth:`save` writes the tensors (else they are rebuilt by replaying the trajectory)."""
        return False

    def load(self, checkpoint: str) -> None:
        """Copy the tensors :meth:`save` wrote under ``checkpoint`` back in."""
        raise NotImplementedError(f"{type(self).__name__} saves no weights: replay the trajectory instead")

    def save_slot(self, lora_id: str, directory: str) -> str:
        """Write the adapter as LoRA slot ``lora_id`` (its own, or a probe slot) holds it now, as a PEFT
        folder ``directory`` that SGLang can load and serve under a name of its own."""
        raise NotImplementedError(f"{type(self).__name__} has no LoRA slots to save")

    def close(self) -> None:
        """Give back what the set holds in the runner (base: nothing)."""


class FullWeights(TrainableSet):
    """Every parameter of the SGLang model, perturbed in place; checkpoints hold the trajectory only."""

    def __init__(self, model: torch.nn.Module):
        named = list(model.named_parameters())  # tied weights appear once
        self.names = [n for n, _ in named]
        self.tensors = [p.data for _, p in named]
        # Under SGLang's tensor parallelism: where each shard sits in its full tensor (None: unsharded).
        self.layouts = tensor_parallel_layouts(model, self.names)

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors)


class LoRAWeights(TrainableSet):
    """An adapter's tensors, as views into its SGLang memory-pool slot. ``minus`` is a second slot
    of the same shape that holds theta - eps z while the adapter's own slot holds theta + eps z.
    ``probes``: more (plus, minus) slot pairs, for the other directions of a split batch, which
    hold theta +/- eps z_k for directions k = 1, 2, ... in the same forward."""

    def __init__(self, lora: PoolLoRA, minus: Optional[PoolLoRA] = None, *, top_layers: Optional[int] = None,
                 freeze_a: bool = False, probes: Sequence[tuple[PoolLoRA, PoolLoRA]] = ()):
        self.lora = lora
        self.lora_id = lora.lora_id
        # The tensors MeZO perturbs; the others keep their initial values (B = 0: no effect) in
        # both slots, and the adapter saved is still the whole PEFT adapter.
        keep = trained_lora_tensors([t.name for t in lora.tensors], top_layers, freeze_a)
        self.names = [lora.tensors[i].name for i in keep]
        self.tensors = [lora.tensors[i].pool for i in keep]
        self.minus = minus
        self.probes = list(probes)
        # Direction k's (lora id, tensors) for +eps and -eps; direction 0 is the adapter and its twin.
        self.probe_slots = [((lora.lora_id, self.tensors), (minus.lora_id, [minus.tensors[i].pool for i in keep]))] \
            if minus else []
        self.probe_slots += [((p.lora_id, [p.tensors[i].pool for i in keep]),
                              (m.lora_id, [m.tensors[i].pool for i in keep])) for p, m in self.probes]

    @classmethod
    def allocate(cls, runner, settings: LoRASettings, name: str, init_dir: str, model_path: str, *,
                 init_from: Optional[str] = None, slot_pairs: int = 0, top_layers: Optional[int] = None,
                 freeze_a: bool = False) -> "LoRAWeights":
        """A new adapter (from ``init_from``, a PEFT folder, if given) in ``runner``'s LoRA pool,
        written to ``init_dir`` first (SGLang loads adapters from folders), with ``slot_pairs``
        (+eps, -eps) slot pairs for the estimator: the adapter's own slot and a twin make the
        first, copies of the adapter the others."""
        lora = PoolLoRA.create(runner, settings, name, init_dir, model_path, init_from=init_from)
        minus, probes = None, []

        def copy(suffix: str) -> PoolLoRA:
            return PoolLoRA.create(runner, settings, f"{name}-{suffix}", init_dir, model_path,
                                   init_from=lora.ref.lora_path)

        with copies_expected():  # slots that hold perturbed copies of the adapter, loaded from its folder
            if slot_pairs:
                minus = copy("minus")
            probes = [(copy(f"plus{k}"), copy(f"minus{k}")) for k in range(1, slot_pairs)]
        return cls(lora, minus, top_layers=top_layers, freeze_a=freeze_a, probes=probes)

    @property
    def paired(self) -> bool:
        return self.minus is not None

    def after_update(self) -> None:
        self.lora.sync_host_copy()

    def start(self) -> dict:
        return {"adapter": self.lora.ref.lora_path}

    @property
    def num_parameters(self) -> int:
        return self.lora.num_parameters

    def save(self, directory: str) -> str:
        """The whole PEFT adapter, in ``directory/adapter`` (loads in PEFT and SGLang ``--lora-paths``)."""
        adapter_dir = os.path.join(directory, ADAPTER_DIR)
        self.lora.save(adapter_dir)
        return adapter_dir

    def holds_weights(self) -> bool:
        return True

    def load(self, checkpoint: str) -> None:
        saved = load_file(os.path.join(checkpoint, ADAPTER_DIR, "adapter_model.safetensors"))
        for name, tensor in zip(self.names, self.tensors):
            tensor.copy_(saved[name])

    def save_slot(self, lora_id: str, directory: str) -> str:
        # The slots hold only the trained tensors' perturbed values; the others are the adapter's own.
        if lora_id == self.lora_id:
            return self.lora.save(directory)
        slot = next((tensors for pair in self.probe_slots for sid, tensors in pair if sid == lora_id), None)
        if slot is None:
            raise KeyError(f"LoRA slot {lora_id!r} is not one of this adapter's")
        return self.lora.save(directory, dict(zip(self.names, slot)))

    def close(self) -> None:
        """Unload the adapter and its perturbation slots from the runner's LoRA pool."""
        for lora in (self.lora, self.minus, *(s for pair in self.probes for s in pair)):
            if lora is not None:
                lora.unload()


def trained_lora_tensors(names: Sequence[str], top_layers: Optional[int], freeze_a: bool) -> list[int]:
    """Indices of the LoRA tensors a run perturbs: those of the top ``top_layers`` layers (all if
    None), B factors only if ``freeze_a``.

    >>> names = [f"m.layers.{i}.q_proj.lora_{f}.weight" for i in range(3) for f in "AB"]
    >>> trained_lora_tensors(names, 2, True)
    [3, 5]
    """
    layers = [int(m.group(1)) if (m := re.search(r"\.layers?\.(\d+)\.", n)) else None for n in names]
    if top_layers is not None and None in layers:
        raise ValueError(f"lora_layers: cannot tell the layer of {names[layers.index(None)]!r}")
    first = max(layers) + 1 - top_layers if top_layers is not None and layers else None
    return [i for i, (n, layer) in enumerate(zip(names, layers))
            if (first is None or layer >= first) and not (freeze_a and ".lora_A." in n)]


def trainable_set(runner, config: MeZOConfig, model_path: str, name: str, folder: Optional[str],
                  slot_pairs: Callable[[int], int]) -> TrainableSet:
    """What a run with ``config`` trains on ``runner``: every weight, or a new LoRA adapter named
    ``name`` (its initial PEFT folder written under ``folder``) with the slot pairs its estimator
    takes: ``slot_pairs(free)`` of them, ``free`` being the pool's slots besides the base model's
    and those other adapters hold pinned (adapters a server loaded without pinning can be evicted,
    so they do not count)."""
    if config.trainable == "full":
        return FullWeights(runner.model)
    manager = runner.lora_manager
    if manager is None:
        raise ValueError("trainable='lora' needs a ModelRunner started with LoRA enabled "
                         "(enable_lora, max_lora_rank >= lora_rank, the target modules)")
    free = manager.max_loras_per_batch - 1 - manager.num_pinned_loras
    settings = LoRASettings(config.lora_rank, config.lora_alpha, tuple(config.lora_target_modules), config.seed)
    return LoRAWeights.allocate(runner, settings, name, os.path.join(folder, "adapter_init"), model_path,
                                init_from=config.init_adapter, slot_pairs=slot_pairs(free),
                                top_layers=config.lora_layers, freeze_a=config.freeze_lora_a)
