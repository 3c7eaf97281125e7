"""``--enable-mezo`` and its flags on SGLang's launch command, and what they turn on.

- :func:`add_flags` (on ``ServerArgs.add_cli_args``) adds ``--enable-mezo``, ``--mezo-data-dir``,
  ``--mezo-output-dir``, ``--mezo-max-concurrent-jobs``, ``--mezo-train-share``,
  ``--mezo-max-loaded-adapters``, ``--mezo-keep-checkpoints``, ``--mezo-max-upload-mb``,
  ``--mezo-extensions``;
- :func:`configure_launch` (before ``ServerArgs.from_cli_args``) turns on, where the user did not
  choose, what training needs (LoRA with enough slots, rank and target modules, the non-overlap
  scheduler, the CPU settings on a machine without a GPU), imports the users' extension modules
  (``--mezo-extensions`` and the entry points of ``sglang_mezo.extensions``: a launch whose extension
  fails to import stops here, before the model loads) and refuses what cannot work
  (:func:`configure_args`);
- :func:`attach_settings` (after it) puts the settings on the ``ServerArgs`` record as ``_mezo``
  (pickled with it into the scheduler process) and sets ``SGLANG_MEZO_SERVER=1`` for the child
  processes.

Without ``--enable-mezo`` only the flags exist. Which hook goes where, and what else a launch with
the flag installs (the job routes, the scheduler's hooks), is :mod:`sglang.srt.mezo.plugin`'s.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from typing import Any, Optional

from sglang.srt.mezo.engine.cpu import use_cpu_engine
from sglang.srt.mezo.engine.hardware import AUTO_DTYPE, choose_dtype
from sglang.srt.mezo.engine.models import canonical_alias, resolve_model_path
from sglang.srt.mezo.errors import ExtensionError
from sglang.srt.mezo.extensions import parse_extensions
from sglang.srt.mezo.run_spec.defaults import SUPPORTED_TARGETS
from sglang.srt.mezo.server.settings import ServerSettings

logger = logging.getLogger(__name__)


#: Set by a launcher started with --enable-mezo: its children install the scheduler's hooks.
ENV = "SGLANG_MEZO_SERVER"


DEFAULT_OUTPUT_DIR = "mezo_output"


SERVING_SLOTS = 2  # LoRA pool slots left for serving: the base model and one served adapter per batch


CPU_MAX_TOTAL_TOKENS = 8192  # what the trainer's own runner uses on a CPU


DEFAULT_MAX_LOADED_ADAPTERS = 8


DEFAULT_KEEP_CHECKPOINTS = 2  # with the best one, OpenAI's three


DEFAULT_MAX_UPLOAD_MB = 32.0


# Filled by the add_cli_args hook: each flag's default and its option strings, to tell the values a
# user set from those left alone.
_defaults: dict[str, Any] = {}


_option_dest: dict[str, str] = {}


# ---------------------------------------------------------------- the flags
def add_flags(result: Any, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
    """AFTER ``ServerArgs.add_cli_args``: the flags of MeZO jobs, in a group of their own."""
    if any("--enable-mezo" in a.option_strings for a in parser._actions):
        return result
    group = parser.add_argument_group(
        "MeZO fine-tuning jobs (sglang-mezo)",
        "Train LoRA adapters with MeZO (forward passes only) inside this server, between serving batches, "
        "through an OpenAI-style API (/v1/files, /v1/fine_tuning/jobs).")
    group.add_argument("--enable-mezo", action="store_true",
                       help="Enable MeZO fine-tuning jobs. Turns on LoRA (rank 8 on q_proj,v_proj, 2 pool slots "
                            "per concurrent job plus serving slots) and the non-overlap scheduler unless set "
                            "otherwise; on a machine without a GPU also the CPU settings.")
    group.add_argument("--mezo-data-dir", default=None,
                       help="Folder a job's training_file/validation_file may name files in (relative paths "
                            "only). Default: none, jobs use uploaded files only.")
    group.add_argument("--mezo-output-dir", default=DEFAULT_OUTPUT_DIR,
                       help="Folder for uploads, job state, checkpoints and trained adapters (kept across "
                            "restarts). Default: %(default)s")
    group.add_argument("--mezo-max-concurrent-jobs", type=int, default=1,
                       help="Jobs that train at the same time; more wait queued. Default: %(default)s")
    group.add_argument("--mezo-train-share", type=float, default=0.5,
                       help="While requests are being served, the largest share of the scheduler's time that "
                            "training may take (after a training unit of t seconds, the next waits "
                            "t * (1/share - 1)); with no requests, training runs back to back. "
                            "Default: %(default)s")
    group.add_argument("--mezo-max-loaded-adapters", type=int, default=DEFAULT_MAX_LOADED_ADAPTERS,
                       help="Jobs' adapters and checkpoints loaded for serving at once: all of them are listed "
                            "and served, the least recently used are unloaded and loaded again on the next "
                            "request that names them. Default: %(default)s")
    group.add_argument("--mezo-keep-checkpoints", type=int, default=DEFAULT_KEEP_CHECKPOINTS,
                       help="Checkpoints a job keeps: its last N and its best (the lowest validation loss: the one "
                            "the job hands back; with load_best_model_at_end off, the highest validation accuracy); "
                            "older ones are unloaded and removed as new ones are saved. 0 keeps all. "
                            "Default: %(default)s")
    group.add_argument("--mezo-max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                       help="Largest file POST /v1/files takes, in MiB; larger uploads get HTTP 413. "
                            "Default: %(default)s")
    group.add_argument("--mezo-extensions", default=None, metavar="MOD[,MOD]",
                       help="Modules of your own (dotted names on PYTHONPATH) to import in the server's HTTP and "
                            "scheduler processes, e.g. one that registers a grader type (register_grader) that "
                            "reinforcement jobs then name. The entry points of the group sglang_mezo.extensions "
                            "are imported always. Default: none")
    for action in parser._actions:
        _defaults[action.dest] = action.default
        for option in action.option_strings:
            _option_dest[option] = action.dest
    return result


def _given_on_command_line() -> set[str]:
    given = set()
    for token in sys.argv[1:]:
        if token.startswith("--"):
            dest = _option_dest.get(token.split("=", 1)[0])
            if dest:
                given.add(dest)
    return given


class MeZOLaunchError(SystemExit):
    def __init__(self, message: str):
        super().__init__(f"error: --enable-mezo: {message}")


def configure_launch(cls: Any, args: argparse.Namespace, *rest: Any, **kwargs: Any) -> None:
    """BEFORE ``ServerArgs.from_cli_args``: with --enable-mezo, :func:`configure_args`."""
    if not getattr(args, "enable_mezo", False):
        os.environ.pop(ENV, None)
        return None
    configure_args(args)
    return None


def configure_args(args: argparse.Namespace) -> ServerSettings:
    """Set what MeZO jobs need on the parsed arguments, keeping what the user set; refuse what
    cannot work. Returns the job settings (also kept on ``args._mezo_settings``)."""
    given = _given_on_command_line()

    def explicit(dest: str) -> bool:
        return dest in given or (dest in _defaults and getattr(args, dest, None) != _defaults[dest])

    def default(dest: str, value: Any) -> None:
        if not explicit(dest):
            setattr(args, dest, value)

    jobs = getattr(args, "mezo_max_concurrent_jobs", 1)
    if jobs < 1:
        raise MeZOLaunchError(f"--mezo-max-concurrent-jobs must be >= 1, got {jobs}")
    share = getattr(args, "mezo_train_share", 0.5)
    if not 0 < share <= 1:
        raise MeZOLaunchError(f"--mezo-train-share must be in (0, 1], got {share}")
    loaded = getattr(args, "mezo_max_loaded_adapters", DEFAULT_MAX_LOADED_ADAPTERS)
    if loaded < 1:
        raise MeZOLaunchError(f"--mezo-max-loaded-adapters must be >= 1, got {loaded}")
    keep = getattr(args, "mezo_keep_checkpoints", DEFAULT_KEEP_CHECKPOINTS)
    if keep < 0:
        raise MeZOLaunchError(f"--mezo-keep-checkpoints must be >= 0 (0 keeps every checkpoint), got {keep}")
    upload_mb = getattr(args, "mezo_max_upload_mb", DEFAULT_MAX_UPLOAD_MB)
    if not upload_mb > 0:
        raise MeZOLaunchError(f"--mezo-max-upload-mb must be > 0, got {upload_mb}")
    for dest, flag in (("tp_size", "--tp-size"), ("dp_size", "--dp-size"), ("pp_size", "--pp-size"),
                       ("tokenizer_worker_num", "--tokenizer-worker-num")):
        if (getattr(args, dest, 1) or 1) > 1:
            raise MeZOLaunchError(f"{flag} {getattr(args, dest)} is not supported: MeZO jobs train in a single "
                                  "scheduler process next to a single HTTP process")
    if getattr(args, "is_embedding", False):
        raise MeZOLaunchError("--is-embedding serves an embedding model; MeZO jobs need a generative model")

    # The model: the built-in alias works here as in the trainer.
    alias = canonical_alias(args.model_path or "")
    if alias:
        args.model_path = resolve_model_path(alias)
        default("served_model_name", alias)
        if getattr(args, "tokenizer_path", None) == alias:
            args.tokenizer_path = args.model_path

    cpu = use_cpu_engine()
    stand_in = getattr(sys.modules.get("sgl_kernel"), "__sglang_mezo_fallback__", False)
    if cpu:
        if explicit("device") and args.device != "cpu":
            raise MeZOLaunchError(f"--device {args.device} was given, but this machine has no GPU; use --device cpu")
        args.device = "cpu"
        default("attention_backend", "torch_native")
        if stand_in and args.attention_backend != "torch_native":
            raise MeZOLaunchError(f"--attention-backend {args.attention_backend} needs SGLang's CPU kernels "
                                  "(sgl-kernel built for CPU), which are not installed; use torch_native")
        default("sampling_backend", "pytorch")
        # SGLang's dtype "auto" serves a float32 checkpoint in float16 (configs/model_config.py,
        # _get_and_verify_dtype), which a CPU computes slowly; the server serves, and its jobs train,
        # in the dtype this CPU computes natively, as a run started here would choose.
        if not explicit("dtype") or args.dtype == "auto":
            choice = choose_dtype(AUTO_DTYPE, "cpu")
            args.dtype = choice.dtype
            logger.info("MeZO server: dtype %s", choice.reason)
        args.disable_cuda_graph = True
        default("max_total_tokens", CPU_MAX_TOTAL_TOKENS)
        default("lora_backend", "torch_native")
        if args.lora_backend != "torch_native":
            raise MeZOLaunchError(f"--lora-backend {args.lora_backend} does not run on a CPU; use torch_native")

    # LoRA with enough slots: each concurrent job pins two (its adapter and the -eps twin).
    if getattr(args, "enable_lora", None) is False:
        raise MeZOLaunchError("LoRA was disabled, but MeZO jobs train LoRA adapters")
    args.enable_lora = True
    default("max_lora_rank", 8)
    if args.max_lora_rank is None or args.max_lora_rank < 1:
        raise MeZOLaunchError(f"--max-lora-rank must be >= 1, got {args.max_lora_rank}")
    default("lora_target_modules", ["q_proj", "v_proj"])
    targets = list(args.lora_target_modules or [])
    if "all" in targets:
        targets = list(SUPPORTED_TARGETS)
    trainable = [t for t in targets if t in SUPPORTED_TARGETS]
    if not trainable:
        raise MeZOLaunchError(f"--lora-target-modules {targets} has no module MeZO can train; include some of "
                              f"{list(SUPPORTED_TARGETS)}")
    needed = 2 * jobs + SERVING_SLOTS
    default("max_loras_per_batch", max(_defaults.get("max_loras_per_batch") or 8, needed + 1))
    if args.max_loras_per_batch < needed:
        raise MeZOLaunchError(
            f"--max-loras-per-batch {args.max_loras_per_batch} is too small: {jobs} concurrent job(s) pin "
            f"{2 * jobs} LoRA slots (an adapter and its -eps twin each), and serving needs {SERVING_SLOTS} more "
            f"(the base model and an adapter); use at least {needed}, or fewer --mezo-max-concurrent-jobs")
    if getattr(args, "max_loaded_loras", None) is not None and args.max_loaded_loras < needed:
        raise MeZOLaunchError(f"--max-loaded-loras {args.max_loaded_loras} is too small for {jobs} job(s); use at "
                              f"least {needed}")
    if getattr(args, "enable_lora_overlap_loading", None):
        raise MeZOLaunchError("--enable-lora-overlap-loading is not supported with MeZO jobs")
    # Training units run between batches of the normal (non-overlap) event loop.
    args.disable_overlap_schedule = True

    output_dir = os.path.abspath(os.path.expanduser(args.mezo_output_dir or DEFAULT_OUTPUT_DIR))
    try:
        os.makedirs(output_dir, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=output_dir, prefix=".probe-")
        probe.close()
    except OSError as e:
        raise MeZOLaunchError(f"--mezo-output-dir {output_dir} is not a writable folder ({e})") from None
    data_dir = None
    if args.mezo_data_dir:
        data_dir = os.path.realpath(os.path.expanduser(args.mezo_data_dir))
        if not os.path.isdir(data_dir):
            raise MeZOLaunchError(f"--mezo-data-dir {args.mezo_data_dir} is not a folder")
    settings = ServerSettings(
        output_dir=output_dir, data_dir=data_dir, max_concurrent_jobs=jobs, model_path=args.model_path,
        served_model_name=args.served_model_name or args.model_path, max_lora_rank=args.max_lora_rank,
        lora_target_modules=tuple(trainable), train_share=share, max_loaded_adapters=loaded,
        keep_checkpoints=keep, max_upload_bytes=int(upload_mb * 1024 * 1024),
        extensions=tuple(parse_extensions(getattr(args, "mezo_extensions", None) or "")))
    # Here, in the launcher (the HTTP process), before the model loads: a module that cannot be
    # imported stops the launch with its name, not the first job that needs it.
    try:
        in_effect = settings.load_extensions()
    except ExtensionError as e:
        raise MeZOLaunchError(f"--mezo-extensions: {e}") from None
    if in_effect:
        logger.info("MeZO extensions: %s", ", ".join(in_effect))
    args._mezo_settings = settings
    return settings


def attach_settings(result: Any, args: argparse.Namespace) -> Optional[ServerSettings]:
    """After ``ServerArgs.from_cli_args`` made ``result``: with --enable-mezo, the settings pickled
    with the record into the scheduler process, and the environment that tells the children to
    train. Returns the settings (None: the flag was not given)."""
    settings: Optional[ServerSettings] = getattr(args, "_mezo_settings", None)
    if settings is None:
        return None
    result._mezo = settings.to_dict()
    os.environ[ENV] = "1"
    logger.info("MeZO fine-tuning jobs enabled: output %s, data %s, %d concurrent job(s)",
                settings.output_dir, settings.data_dir, settings.max_concurrent_jobs)
    return settings
