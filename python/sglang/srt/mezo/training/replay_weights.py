"""Rebuild a MeZO run's trained weights from its trajectory: no data, no forward pass.

A run's ``mezo_trajectory.json`` (:mod:`sglang.srt.mezo.zo.trajectory`) records where its weights
started and each step's seeds and projected gradients. Replaying regenerates each step's z and
applies the same update, through the same function and operations training used
(:func:`sglang.srt.mezo.zo.noise.move`; an add/subtract restore's rounding included), so the result is
bit for bit the weights at the end of the run, in fp32, fp16 and bf16:

- a LoRA run gives a PEFT adapter (from the run's initial adapter);
- a full-weight run gives a checkpoint folder in the base model's own format (its config and
  tokenizer, ``model.safetensors``) that transformers and SGLang (``--model-path``) load: the
  training tensors are SGLang's (``qkv_proj`` and ``gate_up_proj`` fused, the vocabulary padded),
  so each one is assembled from the checkpoint's pieces, updated, and split back.

The base model must be the one the run recorded (a hash of its weight files), else replay
refuses; z is drawn by the device's generator, so replay runs on the kind of device that
recorded the run.

    python -m sglang.srt.mezo_trainer replay RUN_DIR --out DIR [--base-model PATH]

>>> import sglang.srt.mezo.training.replay_weights as r
>>> r.hf_pieces("model.layers.0.self_attn.qkv_proj.weight")
['model.layers.0.self_attn.q_proj.weight', 'model.layers.0.self_attn.k_proj.weight', 'model.layers.0.self_attn.v_proj.weight']
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Optional, Sequence

import torch
from safetensors.torch import load_file, save_file

from sglang.srt.mezo.engine.lora_pool import FUSED_PROJECTIONS, save_peft_adapter
from sglang.srt.mezo.io import atomic_dir
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.zo.perturbable import decay_mask
from sglang.srt.mezo.zo.trajectory import Trajectory, weights_hash
from sglang.srt.mezo.zo.update import replay_steps


def hf_pieces(name: str) -> list[str]:
    """The checkpoint tensors SGLang's tensor ``name`` is made of, in stacking order."""
    for fused, parts in FUSED_PROJECTIONS.items():
        if f".{fused}." in name:
            return [name.replace(f".{fused}.", f".{part}.") for part in parts]
    return [name]


def check_base(trajectory: Trajectory, base_model: str) -> None:
    """Refuse a base model whose weights are not those the run recorded."""
    recorded = trajectory.model.get("sha256")
    if recorded is None:
        return  # the run's base was not a local folder (a hub id): nothing to compare
    if not os.path.isdir(base_model):
        raise FileNotFoundError(f"base model {base_model!r} (recorded by the run) is not a folder here: pass "
                                "--base-model with the checkpoint the run started from")
    found = weights_hash(base_model)
    if found != recorded:
        raise ValueError(f"base model {base_model!r} is not the one this run trained (weights sha256 {found[:12]}..., "
                         f"the run recorded {recorded[:12]}...): replay refuses, since the result would be "
                         "meaningless; pass --base-model with the run's own base checkpoint")


def replay(run_dir: str, out_dir: str, *, base_model: Optional[str] = None, device: str = "cpu") -> str:
    """Write the weights at the end of ``run_dir``'s trajectory (a run or checkpoint folder) into
    ``out_dir``: a PEFT adapter for a LoRA run, a full checkpoint for a full-weight run.

    >>> replay("runs/sst2", "runs/sst2-replayed")  # doctest: +SKIP
    'runs/sst2-replayed'
    """
    trajectory = Trajectory.load(run_dir)
    config = MeZOConfig.from_record(trajectory.config)
    base_model = base_model or trajectory.model.get("path")
    check_base(trajectory, base_model)
    if torch.device(device).type != trajectory.device_type:
        raise ValueError(f"the run drew its noise on {trajectory.device_type!r}; {device!r} generators draw other "
                         f"numbers from the same seeds: replay on {trajectory.device_type}")
    dtype = getattr(torch, trajectory.dtype)
    if "adapter" in trajectory.start:
        return _replay_lora(trajectory, config, run_dir, out_dir, dtype, device)
    return _replay_full(trajectory, config, base_model, out_dir, dtype, device)


def _steps(trajectory: Trajectory, config: MeZOConfig, tensors: Sequence, names: Sequence[str]) -> None:
    for want, t in zip(trajectory.tensor_shapes, tensors):
        if list(t.shape) != list(want):
            raise ValueError(f"a starting tensor has shape {list(t.shape)}, the run trained {want}")
    replay_steps(trajectory.steps, config, tensors, decay_mask(names), {}, restore=trajectory.restore,
                 noise=trajectory.noise, settled=trajectory.settled, lr_scales=trajectory.lr_scales,
                 curvatures=trajectory.curvatures)


def _replay_lora(trajectory, config, run_dir, out_dir, dtype, device) -> str:
    start = trajectory.start["adapter"]
    if not os.path.isdir(start):  # the run folder was moved: its own copy of the starting adapter
        start = os.path.join(run_dir if os.path.isdir(run_dir) else os.path.dirname(run_dir), "adapter_init")
    if not os.path.isfile(os.path.join(start, "adapter_model.safetensors")):
        raise FileNotFoundError(f"the run's starting adapter ({trajectory.start['adapter']}) is gone; replay needs it")
    initial = load_file(os.path.join(start, "adapter_model.safetensors"))
    names = trajectory.tensor_names
    # As SGLang loads an adapter into its pool: cast to the model's dtype.
    tensors = [initial[n].to(device=device, dtype=dtype).clone() for n in names]
    _steps(trajectory, config, tensors, names)
    with open(os.path.join(start, "adapter_config.json")) as f:
        peft_config = json.load(f)
    # The whole adapter: tensors the run did not train (lora_layers, freeze_lora_a) as they started.
    adapter = {n: t.to(device=device, dtype=dtype) for n, t in initial.items()}
    return save_peft_adapter(out_dir, {**adapter, **dict(zip(names, tensors))}, peft_config)


def _replay_full(trajectory, config, base_model, out_dir, dtype, device) -> str:
    files = sorted(f for f in os.listdir(base_model) if f.endswith(".safetensors"))
    if not files:
        raise ValueError(f"{base_model} has no .safetensors weights; full-weight replay reads and writes safetensors")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(os.path.join(base_model, f)))
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    fused = []
    for name, shape in zip(trajectory.tensor_names, trajectory.tensor_shapes):
        pieces = hf_pieces(name)
        missing = [p for p in pieces if p not in state]
        if missing:
            raise ValueError(f"cannot map the trained tensor {name!r} to this checkpoint (no {missing}): full-weight "
                             "replay knows Llama/Qwen2-style checkpoints (fused qkv_proj, gate_up_proj)")
        # SGLang's tensor: the pieces stacked, and the vocabulary padded with rows no token uses.
        t = torch.zeros(shape, dtype=dtype, device=device)
        rows = sum(state[p].shape[0] for p in pieces)
        t[:rows].copy_(torch.cat([state[p] for p in pieces]) if len(pieces) > 1 else state[pieces[0]])
        fused.append((pieces, t))
    _steps(trajectory, config, [t for _, t in fused], trajectory.tensor_names)
    for pieces, t in fused:
        offset = 0
        for p in pieces:
            n = state[p].shape[0]
            state[p] = t[offset: offset + n].clone()
            offset += n

    def fill(folder: str) -> None:
        for f in os.listdir(base_model):  # config, tokenizer, generation config: everything but weights
            src = os.path.join(base_model, f)
            if os.path.isfile(src) and not f.endswith((".safetensors", ".bin")) and f != "model.safetensors.index.json":
                shutil.copy2(src, os.path.join(folder, f))
        save_file({k: v.contiguous().cpu() for k, v in state.items()}, os.path.join(folder, "model.safetensors"),
                  metadata={"format": "pt"})
        cfg_path = os.path.join(folder, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["dtype"] = trajectory.dtype
        if "torch_dtype" in cfg:
            cfg["torch_dtype"] = trajectory.dtype
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)

    return atomic_dir(out_dir, fill)
