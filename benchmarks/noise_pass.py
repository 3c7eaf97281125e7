"""One pass of ``sglang.srt.mezo.zo.noise.move`` over tensors of SmolLM2-135M's shapes, per kind of z: what a
full-weight step pays on top of its two forwards (as a run steps: a -2 eps pass with one seed, and
the update pass that also restores and puts on the next step's +eps z: three adds, two seeds), and
what replay pays once a step. Random signs are timed with the compiled sign kernel and through the
torch path (what a machine without a compiler runs). Synthetic weights (no model load); run it
alone on an idle machine. Prints a Markdown table; ``--out FILE`` also writes it there.

    .venv/bin/python benchmarks/noise_pass.py --threads 2 --repeats 9 --out benchmarks/results/noise_pass.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import statistics
import sys
import time

import torch
from harness import machine_info, markdown_table

from sglang.srt.mezo.zo.noise import AddZ, move, sign_kernel_off
from sglang.srt.mezo.zo.sign_kernel import sign_kernel

#: SmolLM2-135M's weight matrices: the (tied) embedding, then 30 layers of q, k, v, o, gate, up, down.
SHAPES = [(49152, 576)] + [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)] * 30
PASSES = {"one add (1 seed)": [AddZ(1, -2e-3)],
          "update pass (3 adds, 2 seeds)": [AddZ(1, 1e-3), AddZ(1, -1e-7), AddZ(2, 1e-3)]}
WAYS = [("gaussian", "gaussian", True), ("rademacher, sign kernel", "rademacher", True),
        ("rademacher, torch path", "rademacher", False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if sign_kernel() is None:
        sys.exit("the sign kernel did not build: nothing to compare")
    tensors = [torch.randn(s).to(getattr(torch, args.dtype)) for s in SHAPES]
    decay = [False] * len(tensors)
    generators: dict = {}
    times = {}
    for _ in range(args.repeats + 1):  # round-robin, so drift hits every cell alike
        for way, kind, kernel in WAYS:
            with contextlib.nullcontext() if kernel else sign_kernel_off():
                for name, ops in PASSES.items():
                    t0 = time.perf_counter()
                    move(tensors, ops, decay, generators, kind=kind)
                    times.setdefault((way, name), []).append(time.perf_counter() - t0)
    lines = [f"Command: `python {' '.join(sys.argv)}` ({datetime.datetime.now():%Y%m%d-%H%M%S}; "
             f"{machine_info()['cpu_model']}, torch {torch.__version__}). "
             f"{sum(t.numel() for t in tensors):,} {args.dtype} weights in SmolLM2-135M's shapes, {args.threads} "
             f"threads, median (min-max) of {args.repeats} rounds after 1 warm-up, seconds a pass.", ""]

    def cell(t: list[float]) -> str:
        return f"{statistics.median(t):.3f} ({min(t):.3f}-{max(t):.3f})"

    lines += markdown_table(["z", *PASSES], [[way, *(cell(times[(way, name)][1:]) for name in PASSES)]
                                             for way, _, _ in WAYS])
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
