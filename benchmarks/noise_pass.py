"""One pass of ``mezo_noise.move`` (theta += alpha z) over tensors of SmolLM2-135M's shapes, per
kind of z: what a full-weight step pays three times on top of its two forwards, and what replay
pays once a step. Synthetic weights (no model load); run it alone on an idle machine.

    .venv/bin/python benchmarks/noise_pass.py --threads 2 --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sglang.srt.mezo_noise import NOISE_KINDS, AddZ, move

#: SmolLM2-135M's weight matrices: the (tied) embedding, then 30 layers of q, k, v, o, gate, up, down.
SHAPES = [(49152, 576)] + [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)] * 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tensors = [torch.randn(s) for s in SHAPES]
    decay = [False] * len(tensors)
    generators: dict = {}
    print(f"{sum(t.numel() for t in tensors):,} weights, {args.threads} threads, median of {args.repeats} passes "
          "after 1 warm-up")
    for kind in NOISE_KINDS:
        times = []
        for _ in range(args.repeats + 1):
            t0 = time.perf_counter()
            move(tensors, [AddZ(1, 1e-3)], decay, generators, kind=kind)
            times.append(time.perf_counter() - t0)
        print(f"{kind:<11} {statistics.median(times[1:]):.3f} s a pass (min {min(times[1:]):.3f}, max {max(times[1:]):.3f})")


if __name__ == "__main__":
    main()
