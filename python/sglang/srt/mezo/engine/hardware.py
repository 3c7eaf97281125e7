"""What the machine at hand computes fast, for the defaults that depend on it.

A CPU computes bf16 matmuls natively only with avx512_bf16 or AMX; elsewhere PyTorch emulates
them, and a bf16 run is several times slower than float32 (README, "Results"). The choice is made
where the run starts, on the device it runs on, and recorded with the reason.

>>> choice = choose_dtype("auto", "cpu")
>>> choice.dtype in ("bfloat16", "float32"), choice.dtype in choice.reason
(True, True)
>>> choose_dtype("float16", "cpu").reason
'float16: given'
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import torch

#: The ``dtype`` value that asks for the fastest dtype this device computes natively.
AUTO_DTYPE = "auto"

_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype a run uses and why, as its summary and first screen report it."""

    dtype: str
    reason: str


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is absent)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC 7B13", ...), for records that name the machine."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_instructions() -> tuple[str, ...]:
    """This CPU's instruction sets that compute bf16 natively (AMX, avx512_bf16); empty: none."""
    flags = cpu_flags()
    if flags:
        return tuple(f for f in _BF16_CPU_FLAGS if f in flags)
    # Not Linux: PyTorch's own probe (it checks avx512_bf16 through cpuinfo).
    return ("avx512_bf16",) if torch.cpu._is_avx512_bf16_supported() else ()


def choose_dtype(requested: str | None, device: str) -> DtypeChoice:
    """``requested`` if it names a dtype; for ``"auto"`` (or None), bf16 where ``device`` computes
    it natively and float32 elsewhere.

    ``SGLANG_MEZO_ASSUME_BF16=1``/``0`` overrides the probe (tests, and machines whose flags lie).
    """
    if requested not in (None, AUTO_DTYPE):
        return DtypeChoice(requested, f"{requested}: given")
    assumed = os.environ.get("SGLANG_MEZO_ASSUME_BF16")
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device)) if assumed is None else "assumed"
        native = torch.cuda.is_bf16_supported() if assumed is None else assumed == "1"
        where = f"the CUDA device ({name})"
        how = "computes bf16" if native else "has no bf16 (compute capability under 8.0)"
    else:
        found = cpu_bf16_instructions() if assumed is None else (("assumed",) if assumed == "1" else ())
        native = bool(found)
        where = f"this CPU ({cpu_name()})"
        how = (f"computes bf16 natively ({', '.join(found)})" if native else
               "has no bf16 instructions (avx512_bf16 or AMX): PyTorch would emulate bf16, slower than float32")
    dtype = "bfloat16" if native else "float32"
    return DtypeChoice(dtype, f"{dtype}: {where} {how}")
