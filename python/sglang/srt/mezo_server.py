"""``--enable-mezo``: MeZO fine-tuning jobs inside a running SGLang server, through SGLang's hooks.

What :func:`register` (called by the project's plugin in every SGLang process) installs:

- in every process, two hooks on ``ServerArgs``: ``add_cli_args`` (AFTER) adds the flags
  ``--enable-mezo``, ``--mezo-data-dir``, ``--mezo-output-dir``, ``--mezo-max-concurrent-jobs``;
  ``from_cli_args`` (BEFORE) turns on, where the user did not choose, what training needs (LoRA
  with enough slots, rank and target modules, the non-overlap scheduler, the CPU settings on a
  machine without a GPU) and refuses what cannot work; (AFTER) attaches the settings to the
  ``ServerArgs`` record as ``_mezo`` (pickled with it into the scheduler process) and sets
  ``SGLANG_MEZO_SERVER=1`` for the child processes;
- in the launcher (HTTP) process, only with the flag: a BEFORE hook on
  ``http_server._setup_and_run_http_server`` that adds the job and file routes to SGLang's app
  (so ``--api-key`` protects them) and a background task that loads finished adapters through the
  tokenizer manager (so ``/generate``'s ``lora_path``, ``model="<base>:<name>"`` and
  ``/v1/models`` know them);
- in a child of such a launcher: the scheduler hooks of :mod:`sglang.srt.mezo_worker`.

Without ``--enable-mezo`` only the flags exist: no route, no scheduler hook.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from typing import Any, Optional

from sglang.srt.mezo_config import SUPPORTED_TARGETS
from sglang.srt.mezo_jobs import (
    FINAL, PAUSED, RUNNING, SUCCEEDED, JobStore, RequestError, ServerSettings, checkpoint_objects, job_object,
    job_status, new_id, now, page, parse_job_request, plan_job, openai_hyperparameters,
)

logger = logging.getLogger(__name__)

ENV = "SGLANG_MEZO_SERVER"
DEFAULT_OUTPUT_DIR = "mezo_output"
SERVING_SLOTS = 2  # LoRA pool slots left for serving: the base model and one served adapter per batch
CPU_MAX_TOTAL_TOKENS = 8192  # what the trainer's own runner uses on a CPU

# Filled by the add_cli_args hook: each flag's default and its option strings, to tell the values a
# user set from those left alone.
_defaults: dict[str, Any] = {}
_option_dest: dict[str, str] = {}


# ---------------------------------------------------------------- registration


def register() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register("sglang.srt.server_args.ServerArgs.add_cli_args", _after_add_cli_args, HookType.AFTER)
    HookRegistry.register("sglang.srt.server_args.ServerArgs.from_cli_args", _before_from_cli_args, HookType.BEFORE)
    HookRegistry.register("sglang.srt.server_args.ServerArgs.from_cli_args", _after_from_cli_args, HookType.AFTER)
    if os.environ.get(ENV):  # a child process of a launcher started with --enable-mezo
        from sglang.srt.mezo_worker import SCHEDULER_HOOKS

        for target, hook, kind in SCHEDULER_HOOKS:
            HookRegistry.register(target, hook, getattr(HookType, kind))


def share_cpu_kernels_with_children() -> None:
    """Make the pure-torch ``sgl_kernel`` stand-in importable in SGLang's child processes.

    ``mezo_cpu.ensure_cpu_runtime`` puts it in this process's ``sys.modules``; SGLang spawns its
    scheduler and detokenizer (multiprocessing "spawn"), which import SGLang modules that import
    ``sgl_kernel`` before any plugin runs there. A spawned child starts with its parent's
    ``sys.path``, so a folder holding a two-line ``sgl_kernel`` package that re-creates the
    stand-in is enough.
    """
    module = sys.modules.get("sgl_kernel")
    if module is None or not getattr(module, "__sglang_mezo_fallback__", False):
        return
    root = os.path.join(tempfile.gettempdir(), f"sglang-mezo-cpu-kernels-{os.getuid()}")
    package = os.path.join(root, "sgl_kernel")
    init = os.path.join(package, "__init__.py")
    source = ('"""Pure-torch stand-in for sgl_kernel\'s CPU kernels (written by sglang-mezo)."""\n'
              "from sglang.srt.mezo_cpu import _fallback_sgl_kernel as _make\n"
              "globals().update({k: v for k, v in vars(_make()).items() if not k.startswith('__')})\n"
              "__sglang_mezo_fallback__ = True\n")
    try:
        current = open(init).read() if os.path.exists(init) else None
        if current != source:
            os.makedirs(package, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=package)
            with os.fdopen(fd, "w") as f:
                f.write(source)
            os.replace(tmp, init)
    except OSError:
        logger.warning("sglang-mezo: could not write the CPU kernel stand-in to %s", root, exc_info=True)
        return
    if root not in sys.path:
        sys.path.append(root)


# ---------------------------------------------------------------- the flags


def _after_add_cli_args(result, parser: argparse.ArgumentParser, *args, **kwargs):
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


def _before_from_cli_args(cls, args: argparse.Namespace, *rest, **kwargs):
    if not getattr(args, "enable_mezo", False):
        os.environ.pop(ENV, None)
        return None
    configure_args(args)
    return None


def configure_args(args: argparse.Namespace) -> ServerSettings:
    """Set what MeZO jobs need on the parsed arguments, keeping what the user set; refuse what
    cannot work. Returns the job settings (also kept on ``args._mezo_settings``)."""
    from sglang.srt.mezo_cpu import use_cpu_engine

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
    for dest, flag in (("tp_size", "--tp-size"), ("dp_size", "--dp-size"), ("pp_size", "--pp-size"),
                       ("tokenizer_worker_num", "--tokenizer-worker-num")):
        if (getattr(args, dest, 1) or 1) > 1:
            raise MeZOLaunchError(f"{flag} {getattr(args, dest)} is not supported: MeZO jobs train in a single "
                                  "scheduler process next to a single HTTP process")
    if getattr(args, "is_embedding", False):
        raise MeZOLaunchError("--is-embedding serves an embedding model; MeZO jobs need a generative model")

    # The model: the built-in alias works here as in the trainer.
    from sglang.srt.mezo_models import canonical_alias, resolve_model_path

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
        # _get_and_verify_dtype); the trainer runs float32 on a CPU, and so does the server here.
        default("dtype", "float32")
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
        lora_target_modules=tuple(trainable), train_share=share)
    args._mezo_settings = settings
    return settings


def _after_from_cli_args(result, cls, args: argparse.Namespace, *rest, **kwargs):
    settings: Optional[ServerSettings] = getattr(args, "_mezo_settings", None)
    if settings is None:
        return result
    result._mezo = settings.to_dict()  # pickled with the record into the scheduler process
    os.environ[ENV] = "1"  # the children register the scheduler hooks
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register("sglang.srt.entrypoints.http_server._setup_and_run_http_server",
                          _before_setup_http_server, HookType.BEFORE)
    HookRegistry.apply_hooks()
    logger.info("MeZO fine-tuning jobs enabled: output %s, data %s, %d concurrent job(s)",
                settings.output_dir, settings.data_dir, settings.max_concurrent_jobs)
    return result


# ---------------------------------------------------------------- the HTTP side


def _before_setup_http_server(*args, **kwargs):
    server_args = kwargs.get("server_args", args[0] if args else None)
    tokenizer_manager = kwargs.get("tokenizer_manager", args[1] if len(args) > 1 else None)
    settings = getattr(server_args, "_mezo", None)
    if settings and tokenizer_manager is not None:
        from sglang.srt.entrypoints import http_server

        JobAPI(ServerSettings.from_dict(settings), tokenizer_manager).install(http_server.app)
    return None


def _error(e: RequestError):
    from fastapi.responses import JSONResponse

    return JSONResponse(e.body(), status_code=e.status)


def _ok(payload: Any, status: int = 200):
    from fastapi.responses import JSONResponse

    return JSONResponse(payload, status_code=status)


def _public_file(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "suffix"}


class JobAPI:
    """The OpenAI-shaped routes and the loader that serves finished adapters by name."""

    ACK_TIMEOUT_S = 15.0

    def __init__(self, settings: ServerSettings, tokenizer_manager):
        self.settings = settings
        self.tm = tokenizer_manager
        self.store = JobStore(settings.output_dir)
        self.load_lock = asyncio.Lock()
        self.load_failures: dict[str, str] = {}

    def install(self, app) -> None:
        routes = [
            ("/v1/files", self.upload_file, ["POST"]),
            ("/v1/files", self.list_files, ["GET"]),
            ("/v1/files/{file_id}", self.get_file, ["GET"]),
            ("/v1/files/{file_id}/content", self.file_content, ["GET"]),
            ("/v1/fine_tuning/jobs", self.create_job, ["POST"]),
            ("/v1/fine_tuning/jobs", self.list_jobs, ["GET"]),
            ("/v1/fine_tuning/jobs/{job_id}", self.get_job, ["GET"]),
            ("/v1/fine_tuning/jobs/{job_id}/events", self.list_events, ["GET"]),
            ("/v1/fine_tuning/jobs/{job_id}/checkpoints", self.list_checkpoints, ["GET"]),
            ("/v1/fine_tuning/jobs/{job_id}/cancel", self.cancel_job, ["POST"]),
            ("/v1/fine_tuning/jobs/{job_id}/pause", self.pause_job, ["POST"]),
            ("/v1/fine_tuning/jobs/{job_id}/resume", self.resume_job, ["POST"]),
        ]
        for path, endpoint, methods in routes:
            app.add_api_route(path, self._guard(endpoint), methods=methods, include_in_schema=True)
        original = app.router.lifespan_context
        api = self

        @contextlib.asynccontextmanager
        async def lifespan(a):
            async with original(a) as state:
                task = asyncio.create_task(api.adapter_loader())
                try:
                    yield state
                finally:
                    task.cancel()

        app.router.lifespan_context = lifespan

    @staticmethod
    def _guard(endpoint):
        from fastapi import Request

        async def handler(request: Request):
            try:
                return await endpoint(request)
            except RequestError as e:
                return _error(e)

        handler.__name__ = f"mezo_{endpoint.__name__}"
        handler.__annotations__ = {"request": Request}  # a class, not this module's postponed string
        return handler

    # -- files

    async def upload_file(self, request):
        try:
            form = await request.form()
        except Exception as e:
            raise RequestError(f"expected a multipart form with 'file' and 'purpose' ({e})") from None
        upload = form.get("file")
        if upload is None or not hasattr(upload, "read"):
            raise RequestError("the form has no 'file' part", "file")
        data = await upload.read()
        meta = await asyncio.to_thread(self.store.save_upload, upload.filename or "", data,
                                       str(form.get("purpose") or ""))
        return _ok(_public_file(meta))

    async def list_files(self, request):
        q = request.query_params
        files = [_public_file(m) for m in self.store.list_files()]
        if q.get("purpose"):
            files = [m for m in files if m["purpose"] == q["purpose"]]
        return _ok(page(files, q.get("after"), q.get("limit"), default=100))

    def _results_file(self, file_id: str) -> Optional[tuple[dict, str]]:
        from sglang.srt.mezo_worker import results_csv

        if not file_id.startswith("file-results-"):
            return None
        job_id = "ftjob-" + file_id[len("file-results-"):]
        request = self.store.request(job_id)
        content = results_csv(self.store, job_id) if request else None
        if content is None:
            return None
        meta = {"id": file_id, "object": "file", "bytes": len(content.encode()), "created_at":
                self.store.state(job_id).get("finished_at") or request["created_at"],
                "filename": "step_metrics.csv", "purpose": "fine-tune-results", "status": "processed",
                "status_details": None}
        return meta, content

    async def get_file(self, request):
        file_id = request.path_params["file_id"]
        results = self._results_file(file_id)
        if results:
            return _ok(results[0])
        meta = self.store.get_file(file_id)
        if meta is None:
            raise RequestError(f"no such file: {file_id!r}", "file_id", 404)
        return _ok(_public_file(meta))

    async def file_content(self, request):
        from fastapi.responses import Response

        file_id = request.path_params["file_id"]
        results = self._results_file(file_id)
        if results:
            return Response(results[1], media_type="text/csv")
        meta = self.store.get_file(file_id)
        if meta is None:
            raise RequestError(f"no such file: {file_id!r}", "file_id", 404)
        with open(self.store.file_path(meta), "rb") as f:
            return Response(f.read(), media_type="application/octet-stream")

    # -- jobs

    def _job(self, job_id: str) -> tuple[dict, dict]:
        request = self.store.request(job_id)
        if request is None:
            raise RequestError(f"no such fine-tuning job: {job_id!r}", "fine_tuning_job_id", 404)
        return request, self.store.state(job_id)

    async def create_job(self, request):
        try:
            body = await request.json()
        except Exception:
            raise RequestError("the request body is not valid JSON") from None
        req = parse_job_request(body, self.settings, self.store)
        from sglang.srt.mezo_config import DEFAULTS
        from sglang.srt.mezo_mlm_trainer import prepare

        plan, config = await asyncio.to_thread(plan_job, req, prepare, DEFAULTS)
        job_id = new_id("ftjob")
        label = req.suffix or "mezo"
        record = {
            "id": job_id, "created_at": now(), "seq": time.time_ns(), "model": req.model,
            "training_file": req.training_file, "validation_file": req.validation_file,
            "train_path": req.train_path, "eval_path": req.eval_path, "seed": req.seed, "suffix": req.suffix,
            "metadata": req.metadata, "config": config, "num_steps": plan.config.num_steps,
            "hyperparameters": openai_hyperparameters(plan),
            "fine_tuned_model": f"ft-{label}-{job_id[6:14]}",
            "num_train_examples": len(plan.train), "num_eval_examples": len(plan.eval),
        }
        await asyncio.to_thread(self.store.create_job, record)
        return _ok(job_object(record, {}))

    async def _jobs(self) -> list[tuple[dict, dict]]:
        out = []
        for job_id in self.store.job_ids():
            request = self.store.request(job_id)
            if request:
                out.append((request, self.store.state(job_id)))
        out.sort(key=lambda rs: (rs[0]["created_at"], rs[0].get("seq", 0)), reverse=True)
        return out

    async def list_jobs(self, request):
        q = request.query_params
        await self.load_adapters()
        jobs = [job_object(r, s) for r, s in await self._jobs()]
        return _ok(page(jobs, q.get("after"), q.get("limit")))

    async def get_job(self, request):
        job_id = request.path_params["job_id"]
        self._job(job_id)
        await self.load_adapters()
        return _ok(job_object(*self._job(job_id)))

    async def list_events(self, request):
        job_id = request.path_params["job_id"]
        self._job(job_id)
        q = request.query_params
        return _ok(page(self.store.events(job_id), q.get("after"), q.get("limit")))

    async def list_checkpoints(self, request):
        job_id = request.path_params["job_id"]
        req, state = self._job(job_id)
        await self.load_adapters()
        q = request.query_params
        return _ok(page(checkpoint_objects(req, state), q.get("after"), q.get("limit"), default=10))

    async def _control(self, request, action: str):
        job_id = request.path_params["job_id"]
        req, state = self._job(job_id)
        status = job_status(req, state)
        control = self.store.control(job_id)
        if action == "cancel":
            if status in FINAL:
                raise RequestError(f"job {job_id} is already {status}; there is nothing to cancel",
                                   "fine_tuning_job_id")
            control["cancel"] = True
            wanted = ("cancelled",)
        elif action == "pause":
            if status != RUNNING:
                raise RequestError(f"job {job_id} is {status}; only a running job can be paused",
                                   "fine_tuning_job_id")
            control["pause"] = True
            wanted = (PAUSED,) + FINAL
        else:
            if status != PAUSED:
                raise RequestError(f"job {job_id} is {status}; only a paused job can be resumed",
                                   "fine_tuning_job_id")
            control["pause"] = False
            wanted = (RUNNING,) + FINAL
        await asyncio.to_thread(self.store.write_control, job_id, control)
        # The scheduler applies it between two batches (it reads the store every 0.25 s).
        deadline = time.monotonic() + self.ACK_TIMEOUT_S
        while time.monotonic() < deadline:
            req, state = self._job(job_id)
            if job_status(req, state) in wanted:
                break
            await asyncio.sleep(0.05)
        return _ok(job_object(req, state))

    async def cancel_job(self, request):
        return await self._control(request, "cancel")

    async def pause_job(self, request):
        return await self._control(request, "pause")

    async def resume_job(self, request):
        return await self._control(request, "resume")

    # -- finished adapters, served by name

    def _adapters_to_serve(self) -> list[tuple[str, str]]:
        out = []
        for job_id in self.store.job_ids():
            request = self.store.request(job_id)
            state = self.store.state(job_id)
            if not request or not state:
                continue
            if state.get("status") == SUCCEEDED and state.get("adapter_path"):
                out.append((request["fine_tuned_model"], state["adapter_path"]))
            for ckpt in state.get("checkpoints", []):
                out.append((ckpt["name"], ckpt["path"]))
        return out

    async def load_adapters(self) -> None:
        """Load every finished adapter and checkpoint not yet known to the tokenizer manager."""
        from sglang.srt.managers.io_struct import LoadLoRAAdapterReqInput

        async with self.load_lock:
            wanted = await asyncio.to_thread(self._adapters_to_serve)
            known = set(self.tm.lora_registry.get_all_adapters())
            for name, path in wanted:
                if name in known or name in self.load_failures:
                    continue
                if not os.path.isfile(os.path.join(path, "adapter_config.json")):
                    self.load_failures[name] = f"{path} has no adapter_config.json"
                    logger.warning("MeZO: cannot serve %s: %s", name, self.load_failures[name])
                    continue
                result = await self.tm.load_lora_adapter(LoadLoRAAdapterReqInput(lora_name=name, lora_path=path))
                if not result.success:
                    self.load_failures[name] = result.error_message
                    logger.warning("MeZO: loading adapter %s from %s failed: %s", name, path, result.error_message)
                else:
                    logger.info("MeZO: serving adapter %s from %s", name, path)

    async def adapter_loader(self) -> None:
        while True:
            try:
                await self.load_adapters()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("MeZO: adapter loader error")
            await asyncio.sleep(1.0)
