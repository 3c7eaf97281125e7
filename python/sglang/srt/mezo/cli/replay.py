"""``python -m sglang.srt.mezo_trainer replay RUN_DIR --out DIR``: rebuild a run's weights from its
trajectory (:func:`sglang.srt.mezo.training.replay_weights.replay`)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from sglang.srt.mezo.errors import ExtensionError
from sglang.srt.mezo.extensions import load_extensions
from sglang.srt.mezo.training.replay_weights import replay


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sglang.srt.mezo_trainer replay",
                                description="Rebuild a MeZO run's trained weights from its trajectory (bit for bit).")
    p.add_argument("run_dir", help="the run's output folder (or one of its checkpoints/step-N folders)")
    p.add_argument("--out", required=True, help="where to write the adapter (LoRA) or the checkpoint (full weights)")
    p.add_argument("--base-model", default=None, help="the base checkpoint (default: the path the run recorded)")
    p.add_argument("--device", default="cpu", help="cpu or cuda: the kind of device that recorded the run")
    p.add_argument("--extension", action="append", default=[], metavar="MODULE",
                   help="import MODULE first, as the run did (its recorded spec may name a grader type MODULE "
                        "registers); repeatable")
    args = p.parse_args(argv)
    try:
        load_extensions(args.extension)  # before the recorded spec is read back: it checks its grader
        out = replay(args.run_dir, args.out, base_model=args.base_model, device=args.device)
    except (ValueError, OSError, ExtensionError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(out)
    return 0
