"""z drawn a chunk at a time is the whole tensor's z; the random-sign kernel moves weights exactly
as the torch path does; ops apply in order; tensors shared among threads move as on one."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
import torch

import sglang.srt.mezo.zo.noise as noise
from sglang.srt.mezo.zo.noise import AddZ, Decay, draw_z, move, tensor_seed
from sglang.srt.mezo.zo.sign_kernel import sign_kernel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = [([0, 5, 7, 9, 11, 3, 40], 42), ([0, 8, 200, 4], 42), ([0, 300, 301, 302, 303, 304, 305, 306, 307], 42)]


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunks_hold_the_whole_tensors_z(small_chunks, kind, dtype):
    sizes = [5, 16, 17, 64, 64 + 5, 64 + 15, 64 + 16, 64 + 17, 3 * 64 + 40, 1000]
    tensors = [torch.zeros(n, dtype=dtype) for n in sizes]
    move(tensors, [AddZ(7, 1.0)], [True] * len(sizes), {}, kind=kind)
    for i, t in enumerate(tensors):
        assert torch.equal(t, draw_z(7, i, t, {}, kind=kind)), sizes[i]
    if kind == "gaussian":  # and draw_z is what it always was: one torch.randn of the tensor's shape
        gen = torch.Generator().manual_seed(tensor_seed(7, 9))
        assert torch.equal(tensors[9], torch.randn(1000, generator=gen).to(dtype))
    else:
        z = torch.cat(tensors).float()
        assert set(z.unique().tolist()) == {-1.0, 1.0} and abs(z.mean().item()) < 0.1


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_sign_kernel_moves_weights_bit_for_bit_as_the_torch_path(monkeypatch, dtype, threads):
    """The compiled kernel (what a full-weight run uses) against the torch path that defines z: the
    same weights after a pass of adds and decays, for sizes around its 32-value groups and across
    its chunks, and for values where rounding is delicate (ties, tiny, huge, inf, NaN)."""
    assert sign_kernel() is not None, "the kernel did not build (gcc and ninja are in CI's setup)"
    monkeypatch.setattr(noise, "FUSED_CHUNK", 128)  # tensors cross chunks of the kernel's words
    gen = torch.Generator().manual_seed(0)
    sizes = [1, 31, 32, 33, 64, 65, 127, 128, 129, 1000, 4099]
    start = [torch.randn(n, generator=gen) * 10.0 ** torch.randint(-6, 4, (n,), generator=gen) for n in sizes]
    start[-1][:6] = torch.tensor([float("inf"), float("-inf"), float("nan"), 1e-40, 3e38, 0.109619140625])
    ops = [AddZ(11, 1e-2), Decay(0.999), AddZ(11, -3.3e-3), AddZ(12, 1e-2), AddZ(13, 7e-4), Decay(0.9)]
    decay = [i % 3 != 0 for i in range(len(sizes))]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        moved = {}
        for path in ("kernel", "torch"):
            with contextlib.nullcontext() if path == "kernel" else noise.sign_kernel_off():
                assert noise._fused(start[0], "rademacher") == (path == "kernel")
                tensors = [t.to(dtype) for t in start]
                move(tensors, ops, decay, {}, kind="rademacher")
            moved[path] = tensors
    finally:
        torch.set_num_threads(before)
    bits = torch.int16 if dtype == torch.bfloat16 else torch.int32
    for n, a, b in zip(sizes, moved["kernel"], moved["torch"]):
        nan = a.isnan()
        assert torch.equal(nan, b.isnan()), n  # a NaN stays a NaN (its payload bits may differ)
        assert torch.equal(a[~nan].view(bits), b[~nan].view(bits)), n  # -0.0 and +0.0 told apart
    assert not torch.equal(moved["kernel"][-1], start[-1].to(dtype))


@pytest.mark.parametrize("env, says", [({"CXX": "/bin/false"}, "random-sign kernel did not build"),
                                       ({"SGLANG_MEZO_SIGN_KERNEL": "0"}, "")])
def test_without_the_kernel_random_signs_take_the_torch_path(tmp_path, env, says):
    """A machine with no working compiler (or a user who turns the kernel off) gets the same z
    through the torch path, with a warning that says why and what to do, not a crash."""
    code = ("import torch\n"
            "from sglang.srt.mezo.zo.noise import AddZ, draw_z, move\n"
            "from sglang.srt.mezo.zo.sign_kernel import sign_kernel\n"
            "t = torch.zeros(1000)\n"
            "move([t], [AddZ(7, 1.0)], [False], {}, kind='rademacher')\n"
            "print(sign_kernel() is None, torch.equal(t, draw_z(7, 0, t, {}, kind='rademacher')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path), **env})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["True", "True"]
    assert says in out.stderr and ("gcc" in out.stderr) == bool(says)


def test_the_kernel_finds_the_ninja_pip_installed_without_an_activated_environment(tmp_path):
    """scripts/test.sh runs .venv/bin/python without activating .venv: torch looks for ninja on
    PATH, and the one pip installed (scripts/requirements-cpu.txt) is in .venv/bin."""
    code = ("import shutil\n"
            "from sglang.srt.mezo.zo.sign_kernel import _ninja_on_path\n"
            "from torch.utils.cpp_extension import is_ninja_available\n"
            "before = shutil.which('ninja')\n"
            "_ninja_on_path()\n"
            "print(before is None, is_ninja_available())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["True", "True"]


def test_ops_apply_in_order_with_decay_only_where_it_belongs(small_chunks):
    a, b = torch.ones(200), torch.ones(200)
    move([a, b], [Decay(0.5), AddZ(3, 0.25)], [True, False], {})
    assert torch.equal(a, 0.5 + 0.25 * draw_z(3, 0, a, {}))
    assert torch.equal(b, 1.0 + 0.25 * draw_z(3, 1, b, {}))


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_tensors_shared_out_among_threads_move_exactly_as_on_one(small_chunks, kind):
    """Gaussian: large tensors go to threads side by side, each with its own stream. Rademacher: one
    lane whose ops use torch's threads. Either way, the same numbers as on one thread."""
    shapes = [(40, 30), (7, 100), (500,), (33, 33), (64,)]
    ops = [AddZ(11, 0.5), Decay(0.9), AddZ(12, -0.25)]
    decay = [True, False, True, True, False]
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            tensors = [torch.linspace(-1, 1, torch.Size(s).numel()).view(s).clone() for s in shapes]
            if threads == 2:
                assert noise._lanes(tensors, kind) == (2 if kind == "gaussian" else 1)
            move(tensors, ops, decay, {}, kind=kind)
            results.append(tensors)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*results))
    assert noise._lanes([torch.zeros(100), torch.zeros(100)], "gaussian") == min(before, 2)  # threads restored
