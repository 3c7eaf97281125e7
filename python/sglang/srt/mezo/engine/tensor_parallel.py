"""Where each tensor-parallel shard of an SGLang model's parameter sits in its full tensor, so that
the noise z of a sharded weight is that of the unsharded one."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from sglang.srt.mezo.zo.noise import ShardLayout


# ---------------------------------------------------------------- tensor parallelism: shard layouts
def tensor_parallel_layouts(model: torch.nn.Module, names: Sequence[str]) -> Optional[list]:
    """Per named parameter of ``model``, where its tensor-parallel shard sits in the full tensor
    (:class:`~sglang.srt.mezo_trainer.ShardLayout`, None for a replicated one); None when the model
    is not sharded. Covers SGLang's column-, merged-column-, QKV- and row-parallel linear layers;
    any other sharded parameter raises rather than getting noise that depends on the layout."""
    modules, params = dict(model.named_modules()), dict(model.named_parameters())
    layouts, sharded = [], False
    for name in names:
        module_name, _, pname = name.rpartition(".")
        module, param = modules.get(module_name), params[name]
        tp_size = getattr(module, "tp_size", 1) or 1
        dim = getattr(param, "output_dim", None)
        if dim is None:
            dim = getattr(param, "input_dim", None)
        if tp_size == 1 or dim is None:
            layouts.append(None)
            continue
        sharded, rank, kind = True, module.tp_rank, type(module).__name__
        local = param.shape[dim]
        if kind == "QKVParallelLinear" and getattr(param, "output_dim", None) == dim:
            if getattr(module, "num_kv_head_replicas", 1) != 1:
                raise NotImplementedError(f"{name}: KV heads replicated across tensor-parallel ranks")
            sizes = [module.total_num_heads * module.head_size, module.total_num_kv_heads * module.head_size,
                     module.total_num_kv_heads * module.v_head_size]
        elif kind in ("MergedColumnParallelLinear",) and getattr(param, "output_dim", None) == dim:
            sizes = list(module.output_sizes)
        elif kind in ("ColumnParallelLinear", "RowParallelLinear"):
            sizes = [local * tp_size]
        else:
            raise NotImplementedError(f"{name} ({kind}) is sharded by tensor parallelism in a way MeZO's "
                                      "shard-consistent noise does not know")
        pieces, offset = [], 0
        for size in sizes:
            part = size // tp_size
            pieces.append((offset + rank * part, part))
            offset += size
        full = list(param.shape)
        full[dim] = offset
        layouts.append(ShardLayout(tuple(full), dim, tuple(pieces)))
    return layouts if sharded else None
