"""A compiled CPU kernel for random-sign (Rademacher) z: one pass over a tensor applies a sequence
of ``theta += alpha z`` and ``theta *= factor`` operations, taking each sign straight from the
random words' bits. The torch path in :mod:`sglang.srt.mezo.zo.noise` turns the bits into a float z
(an index_select of a sign table) and then adds it, once per operation: most of a full-weight pass.

The results are bit for bit those of that torch path, which stays as the fallback and defines them:
``alpha z`` with z = +-1 is exact, so each operation is one rounding, done in float and rounded to
the tensor's type after every operation as torch's in-place ops do; torch's ``add_`` first rounds
alpha to the tensor's type (bf16), ``mul_`` keeps the factor in float; no contraction into FMAs.

Built once per machine with PyTorch's own ``torch.utils.cpp_extension.load_inline`` (gcc and ninja,
about 35 s, cached under ``~/.cache/torch_extensions``; ``-march=native``, so the cache entry is
named for this CPU). ``SGLANG_MEZO_SIGN_KERNEL=0`` turns it off; a failed build logs why and falls
back to the torch path.

>>> import torch
>>> from sglang.srt.mezo.zo.sign_kernel import apply_sign_ops, sign_kernel
>>> t = torch.zeros(64)
>>> words = torch.tensor([0x0F], dtype=torch.int64)  # bits 0-3 set: z = +1, +1, +1, +1, -1, -1, ...
>>> if sign_kernel() is not None:
...     apply_sign_ops(t, [words], [0, -1], [0.5, 2.0])  # theta += 0.5 z, then theta *= 2
...     print(t[:6].tolist())
[1.0, 1.0, 1.0, 1.0, -1.0, -1.0]
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import sys
from typing import Optional, Sequence

import torch

logger = logging.getLogger(__name__)


_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <cstring>

// Rounding to T, kept in a float: bf16 rounds to nearest even as c10::BFloat16 does (NaN -> 0x7FC0),
// written without branches so that the loops vectorize.
template <typename T> static inline float rnd(float f) { return f; }
template <> inline float rnd<c10::BFloat16>(float f) {
  uint32_t u, r;
  std::memcpy(&u, &f, 4);
  r = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  r = (u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC00000u : r;
  std::memcpy(&f, &r, 4);
  return f;
}
template <typename T> static inline void store(T* p, float v) { *p = v; }
template <> inline void store<c10::BFloat16>(c10::BFloat16* p, float v) {  // v is rounded already
  uint32_t u;
  std::memcpy(&u, &v, 4);
  *p = c10::BFloat16(static_cast<uint16_t>(u >> 16), c10::BFloat16::from_bits());
}

// Op o: seed_index[o] >= 0: v += alpha z, z = +1 where bit i of that seed's words is set, else -1;
// seed_index[o] < 0: v *= alpha. 32 values at a time, held in registers across all the ops.
template <typename T>
static void run(T* t, int64_t n, const std::vector<const uint32_t*>& bits, const std::vector<int64_t>& seed_index,
                const std::vector<double>& alpha) {
  const size_t nops = alpha.size();
  std::vector<float> a(nops);
  for (size_t o = 0; o < nops; ++o)  // torch's add_ rounds alpha to T; mul_ keeps the factor in float
    a[o] = seed_index[o] >= 0 ? rnd<T>(static_cast<float>(alpha[o]))
                              : static_cast<float>(alpha[o]);
  const int64_t groups = n / 32;
  at::parallel_for(0, groups, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      float v[32];
      T* p = t + g * 32;
      for (int k = 0; k < 32; ++k) v[k] = static_cast<float>(p[k]);
      for (size_t o = 0; o < nops; ++o) {
        const float ao = a[o];
        if (seed_index[o] >= 0) {
          const uint32_t w = bits[seed_index[o]][g];
          for (int k = 0; k < 32; ++k) v[k] = rnd<T>(v[k] + (((w >> k) & 1u) ? ao : -ao));
        } else {
          for (int k = 0; k < 32; ++k) v[k] = rnd<T>(v[k] * ao);
        }
      }
      for (int k = 0; k < 32; ++k) store<T>(p + k, v[k]);
    }
  });
  for (int64_t i = groups * 32; i < n; ++i) {
    float v = static_cast<float>(t[i]);
    for (size_t o = 0; o < nops; ++o) {
      if (seed_index[o] >= 0) {
        const uint32_t w = bits[seed_index[o]][i >> 5];
        v = rnd<T>(v + (((w >> (i & 31)) & 1u) ? a[o] : -a[o]));
      } else {
        v = rnd<T>(v * a[o]);
      }
    }
    store<T>(t + i, v);
  }
}

void apply_sign_ops(torch::Tensor t, std::vector<torch::Tensor> words, std::vector<int64_t> seed_index,
                    std::vector<double> alpha) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), "apply_sign_ops: a contiguous CPU tensor");
  TORCH_CHECK(seed_index.size() == alpha.size(), "apply_sign_ops: one alpha per op");
  std::vector<const uint32_t*> bits;
  for (auto& w : words) {
    TORCH_CHECK(w.scalar_type() == torch::kInt64 && w.is_contiguous() && w.numel() * 64 >= t.numel(),
                "apply_sign_ops: contiguous int64 words, 64 signs each, covering the tensor");
    bits.push_back(reinterpret_cast<const uint32_t*>(w.data_ptr<int64_t>()));
  }
  for (auto s : seed_index) TORCH_CHECK(s < static_cast<int64_t>(bits.size()), "apply_sign_ops: no words for op");
  if (t.scalar_type() == torch::kFloat32)
    run<float>(t.data_ptr<float>(), t.numel(), bits, seed_index, alpha);
  else if (t.scalar_type() == torch::kBFloat16)
    run<c10::BFloat16>(t.data_ptr<c10::BFloat16>(), t.numel(), bits, seed_index, alpha);
  else
    TORCH_CHECK(false, "apply_sign_ops: float32 or bfloat16, not ", t.scalar_type());
}
"""


#: The dtypes the kernel handles; others take the torch path.
DTYPES = (torch.float32, torch.bfloat16)


def _cpu_tag() -> str:
    # -march=native code must not be loaded on another CPU that shares the cache directory.
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return hashlib.sha256((platform.machine() + flags).encode()).hexdigest()[:10]


def _ninja_on_path() -> None:
    # torch runs `ninja` from PATH; pip puts it in this environment's bin folder, which is not on
    # PATH when the environment's python runs without being activated (scripts/test.sh, say).
    here = os.path.dirname(sys.executable)
    if shutil.which("ninja") is None and os.access(os.path.join(here, "ninja"), os.X_OK):
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")


@functools.lru_cache(maxsize=None)
def sign_kernel():
    """The compiled module (built on first use), or None: turned off, or it would not build."""
    if os.environ.get("SGLANG_MEZO_SIGN_KERNEL", "1") == "0":
        return None
    try:
        quiet = logging.getLogger("torch.utils.cpp_extension")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # its import warns that there is no CUDA, which this CPU code never needs
        try:
            # Imported here, inside the quieted logger: the module warns on import that there is no CUDA.
            from torch.utils.cpp_extension import load_inline  # noqa: PLC0415
        finally:
            quiet.setLevel(level)
        _ninja_on_path()
        return load_inline(f"sglang_mezo_sign_ops_{_cpu_tag()}", cpp_sources=[_SOURCE], functions=["apply_sign_ops"],
                           extra_cflags=["-O3", "-march=native", "-ffp-contract=off"], verbose=False)
    except Exception as e:  # no compiler or ninja, say: the torch path gives the same numbers, slower
        logger.warning("sglang-mezo: the random-sign kernel did not build (%s); using the slower torch path. "
                       "Install gcc and ninja to get it, or set SGLANG_MEZO_SIGN_KERNEL=0 to stop trying.",
                       str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__)
        return None


def apply_sign_ops(t: torch.Tensor, words: Sequence[torch.Tensor], seed_index: Sequence[int],
                   alpha: Sequence[float]) -> None:
    """In place on the contiguous CPU tensor ``t`` (float32 or bfloat16), op by op: ``seed_index[o]
    >= 0``: t += alpha[o] z, the signs of z being the bits of ``words[seed_index[o]]`` (int64, bit
    k of word j is the sign of element 64 j + k, 1 for +1); ``seed_index[o] < 0``: t *= alpha[o].
    Call only when :func:`sign_kernel` is not None."""
    kernel: Optional[object] = sign_kernel()
    if kernel is None:
        raise RuntimeError("the random-sign kernel is not available (see sign_kernel())")
    kernel.apply_sign_ops(t, list(words), [int(s) for s in seed_index], [float(a) for a in alpha])
