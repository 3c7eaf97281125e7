"""The perturbation z of MeZO: regenerated from (step seed, tensor, position), never stored.

:func:`draw_z` defines z for a whole tensor. :func:`move` is how weights actually move: it applies
a sequence of in-place operations (``AddZ``: theta += alpha z_seed; ``Decay``: theta *= factor)
to each tensor, a chunk at a time. Each chunk of z is drawn once into a reused buffer and every
operation of the sequence is applied to it while it sits in the cache, so a full-weight step does
not allocate (and page-fault in) a fresh weight-sized z per tensor and per pass, and the restore
after the -eps pass and the update share one draw. The chunks hold the same numbers as
:func:`draw_z`'s whole tensor: PyTorch's CPU ``normal_`` fills blocks of 16 values from the
generator's stream in order (and redraws a last partial block), so a stream cut at multiples of 16,
with a last piece of at least 16 values, continues exactly where the whole tensor's would.

Random-sign z on a CPU takes a shortcut with the same results: a compiled kernel
(:mod:`sglang.srt.mezo.zo.sign_kernel`) applies all of a pass's operations to a tensor at once, taking
each sign straight from the random words' bits instead of building a float z per chunk.

Training, replay and resume all move weights through :func:`move` with the same operations, in
the same chunks, so they agree bit for bit.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import typing
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Union

import torch

from sglang.srt.mezo.run_spec.config import Noise
from sglang.srt.mezo.zo.sign_kernel import DTYPES, apply_sign_ops, sign_kernel

#: "gaussian": z ~ N(0, I) (MeZO's). "rademacher": z = +-1 with probability 1/2 each, from 64
#: random bits per 64 values, ~3x cheaper to draw on a CPU; SPSA stays unbiased (E[z z^T] = I).
NoiseKind = Noise


NOISE_KINDS: tuple[str, ...] = typing.get_args(Noise)


#: Elements per chunk: 1 MiB of fp32, which stays in a core's L2 cache between the draw and the adds.
#: A multiple of 64 (whole random words for Rademacher; Gaussian needs a multiple of 16).
CHUNK = 1 << 18


def tensor_seed(step_seed: int, index: int) -> int:
    # Each tensor has its own stream, so z does not depend on iteration order or on other tensors.
    return (step_seed * 1_000_003 + index * 7_919) % (2**63 - 1)


@dataclass(frozen=True)
class ShardLayout:
    """Where a tensor-parallel shard sits in its full (unsharded) tensor: along ``dim`` the shard
    is the concatenation of the full tensor's slices ``pieces`` = ((start, length), ...)."""

    full_shape: tuple[int, ...]
    dim: int
    pieces: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class AddZ:
    """theta += alpha * z of step seed ``seed``."""

    seed: int
    alpha: float


@dataclass(frozen=True)
class Decay:
    """theta *= factor, on the tensors that take weight decay."""

    factor: float


Op = Union[AddZ, Decay]


def _generator(cache: dict, device: torch.device, slot: int = 0) -> torch.Generator:
    # One generator per device and per stream drawn side by side (slot), kept for the trainer's life.
    key = (device, slot) if slot else device
    gen = cache.get(key)
    if gen is None:
        gen = cache[key] = torch.Generator(device=device)
    return gen


# Sign of element 8 * byte + k is bit k of the byte (little-endian words viewed as bytes).
_SIGN_TABLE = torch.tensor([[1.0 if (b >> k) & 1 else -1.0 for k in range(8)] for b in range(256)])


def _random_words(words: torch.Tensor, gen: torch.Generator) -> None:
    """The next ``words.numel()`` 64-bit words of ``gen``'s stream: Rademacher z's signs, 64 a word.
    The stream does not depend on how it is cut into calls, so chunks continue the whole tensor's."""
    words.random_(-(2**63), None, generator=gen)  # all 64 bits random (the default range has 63)


def _fill(out: torch.Tensor, gen: torch.Generator, kind: str, scratch: Optional[dict] = None) -> None:
    """Fill the 1-D float32 ``out`` with the next ``out.numel()`` values of ``gen``'s z stream.
    ``scratch``: a dict (one per thread) that keeps Rademacher's random words and indices, sized
    for the largest call so far, between calls; a chunked pass calls this hundreds of times."""
    if kind == "gaussian":
        out.normal_(generator=gen)
        return
    n = out.numel()
    nwords = (n + 63) // 64
    bufs = scratch.get("rademacher") if scratch is not None else None
    if bufs is None or bufs[0].numel() < nwords:
        bufs = (torch.empty(nwords, dtype=torch.int64, device=out.device),
                torch.empty(nwords * 8, dtype=torch.int32, device=out.device))
        if scratch is not None:
            scratch["rademacher"] = bufs
    words, index = bufs[0][:nwords], bufs[1][: nwords * 8]  # random_ fills a slice as a fresh tensor
    _random_words(words, gen)
    index.copy_(words.view(torch.uint8))
    table = _SIGN_TABLE if out.device.type == "cpu" else _SIGN_TABLE.to(out.device)
    if n % 8 == 0:  # straight into out, 8 signs a byte
        torch.index_select(table, 0, index[: n // 8], out=out.view(-1, 8))
    else:
        out.copy_(table.index_select(0, index).view(-1)[:n])


def draw_z(step_seed: int, index: int, tensor: torch.Tensor, generators: dict,
           layout: Optional[ShardLayout] = None, kind: NoiseKind = "gaussian") -> torch.Tensor:
    """z for tensor ``index`` of a step (a new tensor of ``tensor``'s shape and dtype), from a
    generator on the tensor's device.

    z depends on (seed, tensor, position) only: a shard (``layout``) gets its part of the full
    tensor's z, so tensor parallelism perturbs a weight exactly as one process does.
    CPU and CUDA generators are different algorithms: the same seed draws different z on each.
    """
    gen = _generator(generators, tensor.device)
    gen.manual_seed(tensor_seed(step_seed, index))
    shape = tensor.shape if layout is None else layout.full_shape
    full = torch.empty(shape, device=tensor.device, dtype=torch.float32)
    _fill(full.view(-1), gen, kind)
    if layout is None:
        return full.to(tensor.dtype)
    z = torch.cat([full.narrow(layout.dim, start, length) for start, length in layout.pieces], layout.dim)
    if z.shape != tensor.shape:
        raise ValueError(f"shard layout {layout} gives z of shape {tuple(z.shape)} for a tensor of shape "
                         f"{tuple(tensor.shape)}")
    return z.to(tensor.dtype)


def _chunks(n: int) -> Iterator[tuple[int, int]]:
    """(start, length) pieces of ``n`` elements: CHUNK each, the remainder joined to the last full
    chunk when it is shorter than 16 (normal_ draws fewer than 16 values by another algorithm)."""
    start = 0
    while start < n:
        length = n - start if n - start < CHUNK + 16 else CHUNK
        yield start, length
        start += length


def move(tensors: Sequence[torch.Tensor], ops: Sequence[Op], decay: Sequence[bool], generators: dict,
         layouts: Optional[Sequence[Optional[ShardLayout]]] = None, kind: NoiseKind = "gaussian") -> None:
    """Apply ``ops`` in order to every tensor, in place: the one path weights move through.

    A contiguous unsharded tensor goes a chunk at a time, each seed's chunk of z drawn once;
    ``generators`` is the caller's cache of generators and buffers (a trainer keeps one). On a
    CPU, large tensors are shared out among torch's threads: a generator draws serially, and each
    tensor has its own stream, so drawing several tensors side by side gives the same numbers.
    """
    seeds = list(dict.fromkeys(op.seed for op in ops if isinstance(op, AddZ)))
    big = []
    for i, t in enumerate(tensors):
        layout = layouts[i] if layouts else None
        if layout is None and _fused(t, kind):
            _move_fused(t, i, _ops_for(ops, decay[i]), seeds, generators)
        elif layout is not None or not t.is_contiguous() or t.numel() <= CHUNK:
            # Small, sharded or strided: whole-tensor z (a LoRA adapter's tensors are all small).
            z = {s: draw_z(s, i, t, generators, layout, kind) for s in seeds}
            _apply(t, _ops_for(ops, decay[i]), z)
        else:
            big.append(i)
    lanes = _lanes([tensors[i] for i in big], kind)
    groups: list[list[int]] = [[] for _ in range(lanes)]
    loads = [0] * lanes
    for i in sorted(big, key=lambda i: -tensors[i].numel()):  # largest first, to the least loaded lane
        lane = loads.index(min(loads))
        groups[lane].append(i)
        loads[lane] += tensors[i].numel()
    # Generators and buffers are made here, one set per lane, before any lane starts.
    work = []
    for lane, group in enumerate(groups):
        if group:
            device = tensors[group[0]].device
            gens = [_generator(generators, device, lane * len(seeds) + k + 1) for k in range(len(seeds))]
            work.append((group, gens, _buffers(generators, device, len(seeds), lane),
                         generators.setdefault(("fill scratch", device, lane), {})))

    def run(group, gens, bufs, scratch) -> None:
        for i in group:
            _move_chunked(tensors[i], i, _ops_for(ops, decay[i]), seeds, gens, bufs, kind, scratch)

    if len(work) <= 1:
        for item in work:
            run(*item)
        return
    futures = [_pool(len(work)).submit(run, *item) for item in work]
    for f in futures:
        f.result()


#: Elements per call of the random-sign kernel: its random words (64 signs each) for one seed take
#: 512 KiB, whatever the size of the model's largest tensor. A multiple of 64: whole words.
FUSED_CHUNK = 1 << 22


_KERNEL_OFF = False


@contextlib.contextmanager
def sign_kernel_off() -> Iterator[None]:
    """Inside the block, random signs go through the torch path instead of the compiled kernel:
    the same numbers, slower (what a machine without a compiler runs). For comparing the two."""
    global _KERNEL_OFF
    before, _KERNEL_OFF = _KERNEL_OFF, True
    try:
        yield
    finally:
        _KERNEL_OFF = before


def _fused(t: torch.Tensor, kind: str) -> bool:
    # Random signs on a contiguous CPU tensor go through the compiled kernel when it is built.
    return (kind == "rademacher" and not _KERNEL_OFF and t.device.type == "cpu" and t.is_contiguous()
            and t.dtype in DTYPES and sign_kernel() is not None)


def _move_fused(t: torch.Tensor, index: int, ops: Sequence[Op], seeds: Sequence[int], cache: dict) -> None:
    """:func:`move` for one tensor with random-sign z, by the kernel: the same numbers as the torch
    path (the signs of the same words; each op rounded as torch's in-place ops round it)."""
    gens = [_generator(cache, t.device, k + 1) for k in range(len(seeds))]
    for s, gen in zip(seeds, gens):
        gen.manual_seed(tensor_seed(s, index))
    slot = {s: k for k, s in enumerate(seeds)}
    seed_index = [slot[op.seed] if isinstance(op, AddZ) else -1 for op in ops]
    alpha = [op.alpha if isinstance(op, AddZ) else op.factor for op in ops]
    key = ("sign words", t.device)
    bufs = cache[key] = [b for b in cache.get(key, []) if b.numel() >= FUSED_CHUNK // 64]
    while len(bufs) < len(seeds):
        bufs.append(torch.empty(FUSED_CHUNK // 64, dtype=torch.int64))
    flat = t.view(-1)
    for start in range(0, flat.numel(), FUSED_CHUNK):
        piece = flat[start : start + FUSED_CHUNK]
        nwords = (piece.numel() + 63) // 64
        words = [buf[:nwords] for buf in bufs[: len(seeds)]]
        for w, gen in zip(words, gens):
            _random_words(w, gen)
        apply_sign_ops(piece, words, seed_index, alpha)


def _ops_for(ops: Sequence[Op], decays: bool) -> list[Op]:
    return [op for op in ops if isinstance(op, AddZ) or decays]


def _lanes(big: Sequence[torch.Tensor], kind: str) -> int:
    # Gaussian z is drawn serially (normal_ has one generator stream), so it goes faster drawn
    # for several tensors side by side. Rademacher z is cheap to draw, and its table lookup and the
    # adds are parallel ops already, and one lane with all threads measured faster than several
    # single-threaded lanes (benchmarks/results/noise_pass.md).
    if kind != "gaussian" or len(big) < 2 or any(t.device.type != "cpu" for t in big):
        return 1
    return max(1, min(torch.get_num_threads(), len(big)))


_POOLS: dict[int, concurrent.futures.ThreadPoolExecutor] = {}


def _pool(n: int) -> concurrent.futures.ThreadPoolExecutor:
    if n not in _POOLS:
        # The lanes are the parallelism: a lane's chunk ops (256K elements) split again over torch's
        # threads would put 2 x n threads on n cores, which made a pass slower than one lane. The
        # setting is per thread: the caller's forward passes keep all their threads.
        _POOLS[n] = concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="mezo-noise",
                                                          initializer=torch.set_num_threads, initargs=(1,))
    return _POOLS[n]


def _move_chunked(t: torch.Tensor, index: int, ops: Sequence[Op], seeds: Sequence[int],
                  gens: Sequence[torch.Generator], bufs: Sequence[torch.Tensor], kind: str,
                  scratch: Optional[dict] = None) -> None:
    for s, gen in zip(seeds, gens):
        gen.manual_seed(tensor_seed(s, index))
    flat = t.view(-1)
    for start, length in _chunks(flat.numel()):
        z = {}
        for s, gen, buf in zip(seeds, gens, bufs):
            chunk = buf[:length]
            _fill(chunk, gen, kind, scratch)
            z[s] = chunk if t.dtype == torch.float32 else chunk.to(t.dtype)
        _apply(flat[start : start + length], ops, z)


def _apply(t: torch.Tensor, ops: Sequence[Op], z: dict) -> None:
    for op in ops:
        if isinstance(op, Decay):
            t.mul_(op.factor)
        else:
            t.add_(z[op.seed], alpha=op.alpha)


def _buffers(cache: dict, device: torch.device, n: int, lane: int = 0) -> list[torch.Tensor]:
    # float32 chunk buffers reused across calls: no allocation (and no page faults) per chunk.
    key = ("chunk buffers", device, lane)
    bufs = [b for b in cache.get(key, []) if b.numel() >= CHUNK + 16]
    while len(bufs) < n:
        bufs.append(torch.empty(CHUNK + 16, dtype=torch.float32, device=device))
    cache[key] = bufs
    return bufs[:n]
