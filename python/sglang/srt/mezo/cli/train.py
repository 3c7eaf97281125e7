"""The command line of a MeZO run: ``python -m sglang.srt.mezo_mlm_trainer [flags]``.

Its flags are made from the run spec's fields (:mod:`sglang.srt.mezo.run_spec.config`). The screen shows
only the run's own log lines, its progress bar and the summary: the arguments are parsed before
SGLang is imported, and everything SGLang and its libraries print while they are imported and
while the model runner is built (warnings about GPU-only kernels, models that cannot load on
this machine, weight-loading bars) goes to ``<output_dir>/sglang.log`` instead; ``--verbose``
shows it all. Errors of the run always reach the screen as ``error: ...`` (exit code 2 for bad
input, 1 for a run that failed).

This module imports nothing heavy at import time, so ``--help`` and argument errors are quick.

>>> build_parser().parse_args(["--task", "rte", "--num-steps", "10"]).num_steps
10
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Iterator, Optional, Sequence

from sglang.srt.mezo.errors import DataFormatError, ExtensionError
from sglang.srt.mezo.extensions import ENTRY_POINT_GROUP, load_extensions
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.run_spec.config_arguments import add_config_arguments, config_from_arguments, defaults_table

logger = logging.getLogger("sglang.srt.mezo_mlm_trainer")


ENGINE_LOG = "sglang.log"


#: The loggers whose lines the CLI shows (this project's modules).
RUN_LOGGERS = ("sglang.srt.mezo",)  # the package's logger: every module's logger is a child of it


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sglang.srt.mezo_mlm_trainer",
        description=textwrap.fill(
            "MeZO (forward-only, zeroth-order) prompt fine-tuning of a masked or causal LM on a classification "
            "task, inside SGLang's model runner. Evaluates at step 0 (zero-shot), every --eval-steps and at the "
            "end; writes the adapter, metrics.jsonl and summary.json into --output-dir, and prints a summary.",
            width=100),
        epilog="defaults by model kind and trainable set (the same for every task; given options override):\n"
               f"{defaults_table()}\n\n"
               "examples:\n"
               "  python -m sglang.srt.mezo_mlm_trainer                     # SmolLM2-135M, 16-shot SST-2\n"
               "  python -m sglang.srt.mezo_mlm_trainer --num-steps 0       # zero-shot only\n"
               "  python -m sglang.srt.mezo_mlm_trainer --task rte --num-steps 2000 --max-eval-examples 200\n"
               "  python -m sglang.srt.mezo_mlm_trainer --model-path roberta-large --task sst-2 \\\n"
               "      --template '<S1> It was [MASK] .' --label-words 0:terrible,1:great",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    ext = p.add_argument_group("code of your own")
    ext.add_argument("--extension", action="append", default=[], metavar="MODULE",
                     help="import MODULE (a dotted name on PYTHONPATH) before the run spec is built, so that what "
                          "it registers (a grader type: register_grader) can be named by --grader; repeatable. "
                          f"Entry points of the group {ENTRY_POINT_GROUP} are imported always")
    dp = p.add_argument_group("data parallelism (several worker processes, each with its own model runner)")
    dp.add_argument("--nproc", type=int, default=1,
                    help="run N data-parallel workers on this machine (launches torchrun; each worker takes a shard "
                         "of every step's batch, the trajectory is that of one process) (default: %(default)s)")
    dp.add_argument("--dist-timeout", type=float, default=1800.0,
                    help="seconds a worker waits for the others in a step's exchange before it stops with an error; "
                         "must cover rank 0's evaluations and saves (default: %(default)s)")
    shown = p.add_argument_group("what is shown")
    shown.add_argument("--quiet", action="store_true", help="no progress bar or log lines; print only the summary")
    shown.add_argument("--verbose", action="store_true",
                       help=f"also show what SGLang and its libraries print while they start (else it goes to "
                            f"<output-dir>/{ENGINE_LOG})")
    return p


class EngineOutput:
    """Sends what is written to stderr (file descriptor 2: Python warnings, SGLang's log lines,
    C-level prints) to a log file inside :meth:`captured` blocks; the run's own log lines go to
    the real stderr all along. ``path=None`` captures nothing."""

    def __init__(self, path: Optional[str]):
        self.path = path
        self._log_fd: Optional[int] = None
        self._screen_fd: Optional[int] = None

    def __enter__(self) -> "EngineOutput":
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._log_fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._screen_fd = os.dup(2)
        return self

    def __exit__(self, *exc) -> None:
        for fd in (self._log_fd, self._screen_fd):
            if fd is not None:
                os.close(fd)
        self._log_fd = self._screen_fd = None

    def screen(self):
        """A text stream on the real stderr, also inside :meth:`captured` blocks."""
        if self._screen_fd is None:
            return sys.stderr
        return os.fdopen(os.dup(self._screen_fd), "w", buffering=1)

    @contextlib.contextmanager
    def captured(self) -> Iterator[None]:
        if self._log_fd is None:
            yield
            return
        sys.stderr.flush()
        os.dup2(self._log_fd, 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(self._screen_fd, 2)


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _metric_rows(result: dict, best_step: str) -> list[tuple[str, str]]:
    metric = result.get("primary_metric", "eval_accuracy")
    if metric == "eval_accuracy":
        return [("zero-shot eval accuracy (step 0)", _percent(result.get("zero_shot_accuracy"))),
                ("final eval accuracy", _percent(result.get("eval_accuracy")) + f" (step {result['steps']})"),
                ("best eval accuracy", _percent(result.get("best_eval_accuracy")) + best_step)]

    def value(record: Optional[dict]) -> str:
        v = (record or {}).get(metric)
        # Losses and DPO's reward metrics (shares, log-likelihood ratios) are small numbers; F1 is in %.
        return "-" if v is None else f"{v:.4f}" if metric == "eval_loss" or "rewards/" in metric else f"{v:.1f}"

    name = metric.removeprefix("eval_").replace("_", " ")
    return [(f"zero-shot eval {name} (step 0)", value(result.get("zero_shot_eval"))),
            (f"final eval {name}", value(result.get("final_eval")) + f" (step {result['steps']})"),
            (f"best eval {name}", value(result.get("best_eval")) + best_step)]


def format_summary(result: dict) -> str:
    """The final table the CLI prints."""
    h = result["hyperparameters"]
    best_step = f" (step {result.get('best_step')})" if result.get("best_step") is not None else ""
    rows = [
        ("task", f"{result['task']} ({result['num_train_examples']} train / "
                 f"{result['num_eval_examples']} eval examples)"),
        ("model", f"{result['model_path']} ({result['model_kind']} LM, "
                  + (f"LoRA r={h['lora_rank']})" if h["trainable"] == "lora" else "all weights)")),
        *_metric_rows(result, best_step),
        ("steps", str(result["steps"]) + (f" ({result['stop_reason']})" if result.get("stop_reason") else "")),
        *[("divergence", d["message"]) for d in result.get("divergences") or []],
        ("wall time", f"{result['wall_time_s']:.1f} s"),
        ("adapter", (result.get("adapter_path") or "-")
         + (f" (step {result['returned_step']}: {result['returned_reason']})"
            if result.get("returned_step") is not None else "")),
        ("summary", result.get("summary_path") or "-"),
    ]
    if result.get("engine_log"):
        rows.append(("SGLang's log", result["engine_log"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(["MeZO summary"] + [f"  {k:<{width}}  {v}" for k, v in rows])


def _worker_env():
    """This process's place among data-parallel workers (torchrun's variables), or None."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return None
    from sglang.srt.mezo.parallel.launch import WorkerEnv  # noqa: PLC0415 - imports torch: kept off --help

    return WorkerEnv.from_environ()


def _without_nproc(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _launch_workers(argv: Sequence[str], nproc: int, output_dir: str) -> int:
    """Run this command as ``nproc`` data-parallel workers under torchrun; its exit code."""
    from sglang.srt.mezo.parallel.launch import torchrun_command  # noqa: PLC0415 - imports torch: kept off --help

    # One output folder for the run, chosen here (a default one is named after the time).
    command = torchrun_command(nproc, [*_without_nproc(argv), "--output-dir", output_dir])
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(command, env=env)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        # First: the spec checks the grader when it is built, and may name a type an extension registers.
        load_extensions(args.extension)
        worker = _worker_env()
        if args.nproc < 1:
            raise ValueError(f"--nproc must be >= 1, got {args.nproc}")
        quiet = args.quiet or (worker is not None and worker.rank != 0)  # rank 0 logs, the others do not
        # The CLI always writes its run somewhere: runs/<task>-<timestamp> unless told where.
        config = config_from_arguments(args, progress_bar=not quiet, output_dir=args.output_dir or "runs")
        if not args.output_dir:
            config = dataclasses.replace(config, output_dir=os.path.join(
                "runs", f"{config.task}-{time.strftime('%Y%m%d-%H%M%S')}"))
    except (ValueError, ExtensionError) as e:  # a bad value or extension: say so before anything slow happens
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if args.nproc > 1 and worker is None:
        return _launch_workers(argv, args.nproc, config.output_dir)
    if worker is not None and worker.rank != 0:
        args.quiet = True
        engine_log = None if args.verbose else os.path.join(
            tempfile.gettempdir(), f"sglang-mezo-worker{worker.rank}-{os.getpid()}.log")
        with EngineOutput(engine_log) as engine:
            return _run(config, engine, engine_log, worker, args.dist_timeout)
    engine_log = None if args.verbose else os.path.join(config.output_dir, ENGINE_LOG)
    with EngineOutput(engine_log) as engine:
        handler = None
        if not args.quiet:
            handler = logging.StreamHandler(engine.screen())
            handler.setFormatter(logging.Formatter("[mezo] %(message)s"))
            for name in RUN_LOGGERS:
                run_logger = logging.getLogger(name)
                run_logger.addHandler(handler)
                run_logger.setLevel(logging.INFO)
                run_logger.propagate = False  # our lines once, whatever handlers SGLang puts on the root
        try:
            return _run(config, engine, engine_log, worker, args.dist_timeout)
        finally:
            if handler is not None:
                for name in RUN_LOGGERS:
                    logging.getLogger(name).removeHandler(handler)
                    logging.getLogger(name).propagate = True
                handler.close()


def _run(config: MeZOConfig, engine: EngineOutput, engine_log: Optional[str], worker=None,
         dist_timeout: float = 1800.0) -> int:
    who = f"[worker {worker.rank}] " if worker is not None else ""
    try:
        with engine.captured():
            # Here, not at the top: it imports SGLang (seconds, kept off --help), and what SGLang prints
            # while it is imported goes to sglang.log.
            from sglang.srt.mezo.training import plan as mm  # noqa: PLC0415
        group = None
        if worker is not None:
            # Only a data-parallel worker needs these (torch, and with the group SGLang's run too).
            import torch  # noqa: PLC0415

            from sglang.srt.mezo.parallel import data_parallel as md  # noqa: PLC0415
            from sglang.srt.mezo.parallel.launch import isolate_sglang, worker_device  # noqa: PLC0415

            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or
                                      max(1, (os.cpu_count() or 1) // worker.local_world_size)))
            group = md.DataParallelGroup(worker, timeout=dist_timeout)  # beside SGLang's own group
            isolate_sglang(worker)
            config = dataclasses.replace(config, device=worker_device(worker, config.device))
            logger.info("data-parallel worker %d of %d (gloo, timeout %g s)", worker.rank, worker.world_size,
                        dist_timeout)
        plan = mm.prepare(config)
        with engine.captured():
            if group is None:
                mezo_run = mm.start_run(plan)  # builds the model runner
            else:
                mezo_run, plan = md.start_worker_run(plan, group)
        result = mm.complete(plan, mezo_run, owns_runner=True)
    except (DataFormatError, ValueError, OSError) as e:  # bad input: data, arguments, paths
        print(f"error: {who}{' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # e.g. the loss diverged: the message says what to change
        print(f"error: {who}{' '.join(str(e).split())}", file=sys.stderr)
        return 1
    if worker is not None and worker.rank != 0:
        return 0
    result["engine_log"] = engine_log
    print(format_summary(result))
    return 0
