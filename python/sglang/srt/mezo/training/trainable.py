"""What MeZO perturbs and updates: every weight of the model, or a LoRA adapter's tensors in
SGLang's memory pool (:class:`TrainableSet`)."""

from __future__ import annotations

import re
from typing import Optional, Sequence

import torch  # noqa: E402

from sglang.srt.mezo.engine.lora_pool import PoolLoRA


class FullWeights:
    """Every parameter of the SGLang model, perturbed in place."""

    lora_id = None

    def __init__(self, model: torch.nn.Module):
        named = list(model.named_parameters())  # tied weights appear once
        self.names = [n for n, _ in named]
        self.tensors = [p.data for _, p in named]
        from sglang.srt.mezo.engine.tensor_parallel import tensor_parallel_layouts

        # Under SGLang's tensor parallelism: where each shard sits in its full tensor (None: unsharded).
        self.layouts = tensor_parallel_layouts(model, self.names)

    def after_update(self) -> None:
        pass

    def start(self) -> dict:
        return {}  # the base model's own weights

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors)


class LoRAWeights:
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
        self.minus_tensors = [minus.tensors[i].pool for i in keep] if minus else None
        self.probes = list(probes)
        # Direction k's (lora id, tensors) for +eps and -eps; direction 0 is the adapter and its twin.
        self.probe_slots = [((lora.lora_id, self.tensors), (minus.lora_id, self.minus_tensors))] if minus else []
        self.probe_slots += [((p.lora_id, [p.tensors[i].pool for i in keep]),
                              (m.lora_id, [m.tensors[i].pool for i in keep])) for p, m in self.probes]

    def after_update(self) -> None:
        self.lora.sync_host_copy()

    def start(self) -> dict:
        return {"adapter": self.lora.ref.lora_path}

    @property
    def num_parameters(self) -> int:
        return self.lora.num_parameters


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
