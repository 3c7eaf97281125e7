"""MeZO fine-tuning jobs of a server: the job store on disk, job requests, and OpenAI's objects.

The HTTP process and the scheduler process share one folder, ``--mezo-output-dir``, and each
file in it has exactly one writer, so the two processes never race on a file:

- ``files/<file-id>.json`` and ``files/<file-id><ext>``: uploads (HTTP process);
- ``jobs/<job-id>/request.json``: what was asked, checked and resolved (HTTP process, once);
- ``jobs/<job-id>/control.json``: cancel / pause / resume wishes (HTTP process);
- ``jobs/<job-id>/state.json``, ``events.jsonl``, ``checkpoints/``, ``run/``: what the job did
  (the scheduler process, the only place where training runs).

Every JSON file is written atomically (a temporary file renamed into place), so a reader, a
restart or a crash never sees half of one. This module imports neither torch nor SGLang.

>>> parse_hyperparameter("n_epochs", "auto"), parse_hyperparameter("batch_size", 4)
(None, 4)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional

from sglang.srt.mezo_config import MeZOConfig
from sglang.srt.mezo_io import atomic_json, atomic_write

# ---------------------------------------------------------------- statuses

VALIDATING, QUEUED, RUNNING, PAUSED = "validating_files", "queued", "running", "paused"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
FINAL = (SUCCEEDED, FAILED, CANCELLED)
ACTIVE = (RUNNING, PAUSED)  # jobs that hold LoRA slots in the scheduler

DATA_SUFFIXES = (".jsonl", ".json", ".tsv", ".csv", ".txt")
MAX_UPLOAD_BYTES = 64 * 1024 * 1024


class RequestError(Exception):
    """A bad request: HTTP ``status`` with an OpenAI-style error body naming ``param``."""

    def __init__(self, message: str, param: Optional[str] = None, status: int = 400, code: Optional[str] = None):
        super().__init__(message)
        self.message, self.param, self.status = message, param, status
        self.code = code or ("not_found" if status == 404 else "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": "invalid_request_error",
                          "param": self.param, "code": self.code}}


@dataclass
class ServerSettings:
    """What a MeZO-enabled server was started with (carried from the launcher to every process)."""

    output_dir: str
    data_dir: Optional[str] = None
    max_concurrent_jobs: int = 1
    model_path: str = ""  # the folder the server loaded (an alias resolved)
    served_model_name: str = ""
    max_lora_rank: int = 8
    lora_target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    train_share: float = 0.5  # of the scheduler's time, at most, while requests are waiting

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lora_target_modules"] = list(self.lora_target_modules)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ServerSettings":
        d = dict(d)
        d["lora_target_modules"] = tuple(d.get("lora_target_modules") or ())
        return cls(**d)


# ---------------------------------------------------------------- atomic files


def read_json(path: str, default: Any = None) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


# ---------------------------------------------------------------- the store


class JobStore:
    """The folder layout above, with readers for both processes and the HTTP process's writers."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.files_dir = os.path.join(self.root, "files")
        self.jobs_dir = os.path.join(self.root, "jobs")
        os.makedirs(self.files_dir, exist_ok=True)
        os.makedirs(self.jobs_dir, exist_ok=True)

    # -- files (uploads)

    def save_upload(self, filename: str, data: bytes, purpose: str) -> dict:
        base = os.path.basename(filename or "")
        suffix = os.path.splitext(base)[1].lower()
        if purpose != "fine-tune":
            raise RequestError(f"purpose must be 'fine-tune' (got {purpose!r}): this server stores training and "
                               "validation data only", "purpose")
        if suffix not in DATA_SUFFIXES:
            raise RequestError(f"file {base!r}: unsupported type {suffix or '(no extension)'!r}; upload one of "
                               f"{', '.join(DATA_SUFFIXES)} (JSONL: one object per line with a text field such as "
                               "'sentence' and a 'label')", "file")
        if not data.strip():
            raise RequestError(f"file {base!r} is empty", "file")
        if len(data) > MAX_UPLOAD_BYTES:
            raise RequestError(f"file {base!r} is {len(data)} bytes, more than the {MAX_UPLOAD_BYTES} allowed", "file")
        file_id = new_id("file")
        data_path = os.path.join(self.files_dir, file_id + suffix)
        atomic_write(data_path, lambda tmp: open(tmp, "wb").write(data))
        meta = {"id": file_id, "object": "file", "bytes": len(data), "created_at": now(), "filename": base,
                "purpose": purpose, "status": "processed", "status_details": None, "suffix": suffix}
        atomic_json(os.path.join(self.files_dir, file_id + ".json"), meta, indent=1)
        return meta

    def get_file(self, file_id: str) -> Optional[dict]:
        if not re.fullmatch(r"file-[0-9a-f]{24}", file_id or ""):
            return None
        return read_json(os.path.join(self.files_dir, file_id + ".json"))

    def file_path(self, meta: dict) -> str:
        return os.path.join(self.files_dir, meta["id"] + meta["suffix"])

    def list_files(self) -> list[dict]:
        out = []
        for name in os.listdir(self.files_dir):
            if name.endswith(".json") and name.startswith("file-"):
                meta = read_json(os.path.join(self.files_dir, name))
                if meta:
                    out.append(meta)
        return sorted(out, key=lambda m: (m["created_at"], m["id"]), reverse=True)

    # -- jobs

    def job_dir(self, job_id: str) -> str:
        return os.path.join(self.jobs_dir, job_id)

    def job_ids(self) -> list[str]:
        try:
            names = os.listdir(self.jobs_dir)
        except FileNotFoundError:
            return []
        return [n for n in names if re.fullmatch(r"ftjob-[0-9a-f]{24}", n)
                and os.path.exists(os.path.join(self.jobs_dir, n, "request.json"))]

    def create_job(self, request: dict) -> None:
        atomic_json(os.path.join(self.job_dir(request["id"]), "request.json"), request, indent=1)

    def request(self, job_id: str) -> Optional[dict]:
        if not re.fullmatch(r"ftjob-[0-9a-f]{24}", job_id or ""):
            return None
        return read_json(os.path.join(self.job_dir(job_id), "request.json"))

    def state(self, job_id: str) -> dict:
        return read_json(os.path.join(self.job_dir(job_id), "state.json"), {}) or {}

    def write_state(self, job_id: str, state: dict) -> None:
        atomic_json(os.path.join(self.job_dir(job_id), "state.json"), state, indent=1)

    def control(self, job_id: str) -> dict:
        return read_json(os.path.join(self.job_dir(job_id), "control.json"), {}) or {}

    def write_control(self, job_id: str, control: dict) -> None:
        atomic_json(os.path.join(self.job_dir(job_id), "control.json"), control, indent=1)

    def append_event(self, job_id: str, level: str, message: str, data: Optional[dict] = None,
                     type: str = "message") -> dict:
        event = {"object": "fine_tuning.job.event", "id": new_id("ftevent"), "created_at": now(),
                 "level": level, "message": message, "data": data or {}, "type": type}
        with open(os.path.join(self.job_dir(job_id), "events.jsonl"), "a") as f:
            f.write(json.dumps(event) + "\n")
        return event

    def events(self, job_id: str) -> list[dict]:
        """Newest first, as OpenAI lists them; the creation event comes from request.json."""
        request = self.request(job_id) or {}
        out = [{"object": "fine_tuning.job.event", "id": f"ftevent-created-{job_id[6:]}",
                "created_at": request.get("created_at", 0), "level": "info",
                "message": f"Created fine-tuning job: {job_id}", "data": {}, "type": "message"}]
        try:
            with open(os.path.join(self.job_dir(job_id), "events.jsonl")) as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:  # a line cut short by a crash
                        pass
        except FileNotFoundError:
            pass
        return out[::-1]


# ---------------------------------------------------------------- the job object (OpenAI's shape)


def job_status(request: dict, state: dict) -> str:
    return state.get("status") or QUEUED


def job_object(request: dict, state: dict) -> dict:
    """``fine_tuning.job`` as OpenAI returns it, plus MeZO's progress fields."""
    status = job_status(request, state)
    succeeded = status == SUCCEEDED
    return {
        "object": "fine_tuning.job",
        "id": request["id"],
        "model": request["model"],
        "created_at": request["created_at"],
        "finished_at": state.get("finished_at"),
        "status": status,
        "error": state.get("error"),
        "fine_tuned_model": request["fine_tuned_model"] if succeeded else None,
        "organization_id": "sglang-mezo",
        "result_files": state.get("result_files", []),
        "seed": request["seed"],
        "trained_tokens": state.get("trained_tokens") if succeeded else None,
        "training_file": request["training_file"],
        "validation_file": request.get("validation_file"),
        "hyperparameters": state.get("hyperparameters") or request["hyperparameters"],
        "method": {"type": "supervised", "supervised": {
            "hyperparameters": state.get("hyperparameters") or request["hyperparameters"]}},
        "metadata": request.get("metadata"),
        "suffix": request.get("suffix"),
        "user_provided_suffix": request.get("suffix"),
        "estimated_finish": state.get("estimated_finish"),
        "integrations": [],
        # MeZO's own progress (the openai client exposes these as extra fields)
        "steps_completed": state.get("step", 0),
        "total_steps": state.get("num_steps", request.get("num_steps")),
        "train_loss": state.get("train_loss"),
        "eval_accuracy": state.get("eval_accuracy"),
        "eval_loss": state.get("eval_loss"),
        "mezo": request.get("config"),
    }


def checkpoint_objects(request: dict, state: dict) -> list[dict]:
    """Newest first, as OpenAI lists them."""
    out = []
    for ckpt in state.get("checkpoints", []):
        out.append({
            "object": "fine_tuning.job.checkpoint",
            "id": f"ftckpt-{request['id'][6:]}-{ckpt['step']}",
            "created_at": ckpt["created_at"],
            "fine_tuned_model_checkpoint": ckpt["name"],
            "fine_tuning_job_id": request["id"],
            "step_number": ckpt["step"],
            "metrics": ckpt.get("metrics", {}),
        })
    return out[::-1]


def page(items: list[dict], after: Optional[str], limit: Optional[str | int], default: int = 20) -> dict:
    """OpenAI's cursor list: items after the one with id ``after``, at most ``limit``, and has_more."""
    try:
        n = default if limit in (None, "") else int(limit)
    except (TypeError, ValueError):
        raise RequestError(f"limit must be a whole number, got {limit!r}", "limit") from None
    if not 1 <= n <= 100:
        raise RequestError(f"limit must be between 1 and 100, got {n}", "limit")
    start = 0
    if after:
        ids = [it["id"] for it in items]
        if after not in ids:
            raise RequestError(f"after={after!r} is not an id in this list", "after")
        start = ids.index(after) + 1
    chunk = items[start:start + n]
    return {"object": "list", "data": chunk, "has_more": start + n < len(items)}


# ---------------------------------------------------------------- job requests


# Settings a job body may carry (top level, via the openai client's extra_body, or inside
# hyperparameters), besides OpenAI's own fields.
OPENAI_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
OPENAI_KEYS = ("model", "training_file", "validation_file", "hyperparameters", "method", "seed", "suffix",
               "metadata", "integrations")
# Run-spec fields that the server decides, never a request: where files are, what runs where.
SERVER_OWNED = {
    "model_path": "the model is the one this server serves: give it as 'model'",
    "train_file": "give the training data as 'training_file' (a file id or a path under --mezo-data-dir)",
    "eval_file": "give the validation data as 'validation_file' (a file id or a path under --mezo-data-dir)",
    "output_dir": "the server writes every job under --mezo-output-dir",
    "init_adapter": "a job starts from a new adapter",
    "device": "the job runs on the server's device", "dtype": "the job runs in the server's dtype",
    "max_total_tokens": "the job shares the server's KV cache", "progress_bar": "a server job has no progress bar",
    "exact_restore": "a server job always restores exactly", "paired_forward": "the server decides",
    "split_batch": "a server job gets two LoRA slots (its adapter and its -eps twin), not one pair per direction",
    "resume": "the server resumes an interrupted job by itself",
}
#: The run-spec fields a request may set (OpenAI's own keys aside): all that the server does not own.
MEZO_KEYS = tuple(f.name for f in dataclasses.fields(MeZOConfig)
                  if f.name not in SERVER_OWNED and f.name not in OPENAI_KEYS)


def parse_hyperparameter(name: str, value: Any) -> Any:
    """OpenAI's n_epochs / batch_size / learning_rate_multiplier: "auto" (None here) or a number."""
    if value is None or value == "auto":
        return None
    if name in ("n_epochs", "batch_size"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(f"{name} must be 'auto' or a whole number >= 1, got {value!r}",
                               f"hyperparameters.{name}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise RequestError(f"{name} must be 'auto' or a number > 0, got {value!r}", f"hyperparameters.{name}")
    return float(value)


def _hyperparameter_sources(body: dict) -> dict:
    """Merge the hyperparameters of ``method`` (current) and top-level ``hyperparameters`` (older)."""
    merged: dict = {}
    top = body.get("hyperparameters")
    method = body.get("method")
    if top is not None and not isinstance(top, dict):
        raise RequestError("hyperparameters must be an object", "hyperparameters")
    sources = [("hyperparameters", top or {})]
    if method is not None:
        if not isinstance(method, dict):
            raise RequestError("method must be an object like {'type': 'supervised', 'supervised': {...}}", "method")
        kind = method.get("type", "supervised")
        if kind != "supervised":
            raise RequestError(f"method type {kind!r} is not supported: MeZO jobs are 'supervised' (a prompt "
                               "objective over label words)", "method.type")
        unknown = set(method) - {"type", "supervised"}
        if unknown:
            raise RequestError(f"method has unknown keys {sorted(unknown)}", "method")
        sup = method.get("supervised") or {}
        if not isinstance(sup, dict) or set(sup) - {"hyperparameters"}:
            raise RequestError("method.supervised must be {'hyperparameters': {...}}", "method.supervised")
        hp = sup.get("hyperparameters") or {}
        if not isinstance(hp, dict):
            raise RequestError("method.supervised.hyperparameters must be an object",
                               "method.supervised.hyperparameters")
        sources.append(("method.supervised.hyperparameters", hp))
    for where, hp in sources:
        for key, value in hp.items():
            if key in SERVER_OWNED:
                raise RequestError(f"{key!r} cannot be set in a job: {SERVER_OWNED[key]}", f"{where}.{key}")
            if key not in OPENAI_HYPERPARAMETERS and key not in MEZO_KEYS:
                import difflib

                known = OPENAI_HYPERPARAMETERS + tuple(k for k in MEZO_KEYS if k not in OPENAI_HYPERPARAMETERS)
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise RequestError(f"unknown hyperparameter {key!r} in {where}{hint}; known: {', '.join(known)}",
                                   f"{where}.{key}")
            if key in merged and merged[key] != value:
                raise RequestError(f"hyperparameter {key!r} is given twice with different values "
                                   f"({merged[key]!r} and {value!r}); give it once", where)
            merged[key] = value
    return merged


def resolve_data_file(ref: Any, param: str, settings: ServerSettings, store: JobStore) -> tuple[str, str]:
    """(absolute path, name to show) of a file id or a path relative to --mezo-data-dir.

    Paths are only read from inside the data folder: absolute paths, ``..`` and symlinks that
    lead out of it are refused.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise RequestError(f"{param} must be a file id (from POST /v1/files) or a path under the server's "
                           f"data folder, got {ref!r}", param)
    ref = ref.strip()
    if ref.startswith("file-"):
        meta = store.get_file(ref)
        if meta is None:
            raise RequestError(f"{param}: no such file {ref!r}; upload it with POST /v1/files", param, 404)
        return store.file_path(meta), f"{ref} ({meta['filename']})"
    if settings.data_dir is None:
        raise RequestError(f"{param} {ref!r} is not a file id, and this server reads no paths (it was started "
                           "without --mezo-data-dir): upload the file with POST /v1/files", param)
    if os.path.isabs(ref) or ref.startswith("~"):
        raise RequestError(f"{param} {ref!r}: absolute paths are not allowed; give a path relative to the "
                           "server's data folder", param)
    parts = re.split(r"[\\/]+", ref)
    if ".." in parts:
        raise RequestError(f"{param} {ref!r}: '..' is not allowed; give a path inside the server's data folder",
                           param)
    root = os.path.realpath(settings.data_dir)
    path = os.path.realpath(os.path.join(root, ref))
    if os.path.commonpath([root, path]) != root:
        raise RequestError(f"{param} {ref!r} leads out of the server's data folder (a symlink?); only files "
                           "inside it can be read", param)
    if not os.path.isfile(path):
        raise RequestError(f"{param} {ref!r}: no such file in the server's data folder", param, 404)
    if os.path.splitext(path)[1].lower() not in DATA_SUFFIXES:
        raise RequestError(f"{param} {ref!r}: unsupported file type; use one of {', '.join(DATA_SUFFIXES)}", param)
    return path, ref


@dataclass
class JobRequest:
    """A job body, checked: the run spec (``config``, a :class:`MeZOConfig` dict without server-owned
    fields), the OpenAI fields, and what the data files are."""

    config: dict
    model: str
    training_file: str
    validation_file: Optional[str]
    train_path: str
    eval_path: Optional[str]
    display_names: dict
    seed: int
    suffix: Optional[str]
    metadata: Optional[dict]
    n_epochs: Optional[int] = None
    learning_rate_multiplier: Optional[float] = None
    given_hyperparameters: dict = field(default_factory=dict)


def parse_job_request(body: Any, settings: ServerSettings, store: JobStore) -> JobRequest:
    """Check a ``POST /v1/fine_tuning/jobs`` body (no model or tokenizer needed: see :func:`plan_job`)."""

    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    for key in body:
        if key in SERVER_OWNED:
            raise RequestError(f"{key!r} cannot be set in a job: {SERVER_OWNED[key]}", key)
        if key not in OPENAI_KEYS and key not in MEZO_KEYS:
            import difflib

            close = difflib.get_close_matches(str(key), OPENAI_KEYS + MEZO_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RequestError(f"unknown field {key!r}{hint}; known fields: {', '.join(OPENAI_KEYS + MEZO_KEYS)}", key)
    model = body.get("model")
    served = {settings.served_model_name, settings.model_path}
    if not isinstance(model, str) or not model:
        raise RequestError(f"model is required: this server fine-tunes {settings.served_model_name!r}", "model")
    if model not in served:
        raise RequestError(f"model {model!r} is not served here: this server fine-tunes "
                           f"{settings.served_model_name!r}", "model")
    if body.get("integrations"):
        raise RequestError("integrations are not supported by this server", "integrations")
    if "training_file" not in body:
        raise RequestError("training_file is required", "training_file")
    train_path, train_name = resolve_data_file(body["training_file"], "training_file", settings, store)
    eval_path, eval_name = None, None
    if body.get("validation_file") is not None:
        eval_path, eval_name = resolve_data_file(body["validation_file"], "validation_file", settings, store)
    seed = body.get("seed", 42)
    if seed is None:
        seed = 42
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise RequestError(f"seed must be a whole number in [0, 2^31), got {seed!r}", "seed")
    suffix = body.get("suffix")
    if suffix is not None and (not isinstance(suffix, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", suffix)):
        raise RequestError(f"suffix must be 1-40 letters, digits, '-', '_' or '.', got {suffix!r}", "suffix")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or len(metadata) > 16 or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                for k, v in metadata.items()):
            raise RequestError("metadata must be an object of at most 16 string keys (<= 64 chars) and string "
                               "values (<= 512 chars)", "metadata")

    hp = _hyperparameter_sources(body)
    for key in MEZO_KEYS:
        if key in body:
            if key in hp and hp[key] != body[key]:
                raise RequestError(f"{key!r} is given twice with different values; give it once", key)
            hp[key] = body[key]
    n_epochs = parse_hyperparameter("n_epochs", hp.pop("n_epochs", None))
    multiplier = parse_hyperparameter("learning_rate_multiplier", hp.pop("learning_rate_multiplier", None))
    if "batch_size" in hp:
        hp["batch_size"] = parse_hyperparameter("batch_size", hp["batch_size"])
    if n_epochs is not None and hp.get("num_steps") is not None:
        raise RequestError("give n_epochs or num_steps, not both", "hyperparameters.n_epochs")
    if multiplier is not None and hp.get("learning_rate") is not None:
        raise RequestError("give learning_rate_multiplier or learning_rate, not both",
                           "hyperparameters.learning_rate_multiplier")
    if hp.get("trainable", "lora") == "full":
        raise RequestError("trainable='full' is refused: full-weight training would change the base model that "
                           "this server is serving to everyone. Server jobs train a LoRA adapter "
                           "(trainable='lora')", "trainable")
    if hp.get("lora_rank") is not None and isinstance(hp["lora_rank"], int) and hp["lora_rank"] > settings.max_lora_rank:
        raise RequestError(f"lora_rank {hp['lora_rank']} is more than this server's --max-lora-rank "
                           f"{settings.max_lora_rank}", "lora_rank")
    targets = hp.get("lora_target_modules")
    if targets is not None:
        names = [targets] if isinstance(targets, str) else list(targets) if isinstance(targets, (list, tuple)) else None
        names = [t.strip() for n in names for t in n.split(",")] if names is not None and \
            all(isinstance(n, str) for n in names) else None
        if not names or any(t not in settings.lora_target_modules for t in names):
            raise RequestError(f"lora_target_modules {targets!r} must be a subset of this server's "
                               f"--lora-target-modules {list(settings.lora_target_modules)}", "lora_target_modules")
        hp["lora_target_modules"] = names
    elif not set(("q_proj", "v_proj")) <= set(settings.lora_target_modules):
        hp["lora_target_modules"] = [t for t in settings.lora_target_modules]
    values = {k: v for k, v in hp.items() if v is not None}
    values.update(model_path=settings.model_path, seed=seed, progress_bar=False, trainable="lora")
    try:
        config = MeZOConfig.from_dict(values)
    except ValueError as e:
        raise RequestError(str(e), _param_of(str(e))) from None
    return JobRequest(
        config=config.to_dict(), model=model, training_file=body["training_file"],
        validation_file=body.get("validation_file"), train_path=train_path, eval_path=eval_path,
        display_names={train_path: train_name, **({eval_path: eval_name} if eval_path else {})},
        seed=seed, suffix=suffix, metadata=metadata, n_epochs=n_epochs, learning_rate_multiplier=multiplier,
        given_hyperparameters={k: v for k, v in hp.items() if k in ("batch_size",)},
    )


def _param_of(message: str) -> Optional[str]:
    """The body field an error message from the run spec is about."""
    for prefix, param in (("unknown task", "task"), ("label word", "label_words"), ("template", "template")):
        if message.startswith(prefix):
            return param
    m = re.match(r"unknown setting '([a-z_]+)'|([a-z_]+) must", message)
    return (m.group(1) or m.group(2)) if m else None


def describe_error(e: BaseException, display_names: Mapping[str, str]) -> str:
    """An error's message with the server's own file paths replaced by the names the user gave."""
    message = " ".join(str(e).split())
    for path, name in sorted(display_names.items(), key=lambda kv: -len(kv[0])):
        message = message.replace(path, name)
    return message


def plan_job(req: JobRequest, prepare: Callable, defaults: Mapping) -> tuple[Any, dict]:
    """Resolve a checked request with the trainer's ``prepare`` (tokenizer, prompt, data): the plan
    and the MeZOConfig dict to run, with OpenAI's n_epochs / learning_rate_multiplier applied.

    Raises :class:`RequestError` with the data file named as the user named it."""

    config = MeZOConfig.from_dict(req.config)
    eval_source = req.eval_path if req.eval_path is not None else []

    def run_prepare(cfg):
        try:
            return prepare(cfg, req.train_path, eval_source)
        except (ValueError, OSError, TypeError) as e:  # DataFormatError is a ValueError
            param = "validation_file" if req.eval_path and req.eval_path in str(e) else \
                "training_file" if req.train_path in str(e) else _param_of(str(e))
            raise RequestError(describe_error(e, req.display_names), param) from None

    plan = run_prepare(config)
    changed = {}
    if req.learning_rate_multiplier is not None:
        base = defaults[(plan.kind, plan.config.trainable)]["learning_rate"]
        changed["learning_rate"] = base * req.learning_rate_multiplier
    if req.n_epochs is not None:
        changed["num_steps"] = max(1, math.ceil(req.n_epochs * len(plan.train) / plan.config.batch_size))
    if changed:
        config = dataclasses.replace(config, **changed)
        plan = run_prepare(config)
    if plan.config.num_steps < 1:
        raise RequestError("num_steps must be >= 1 for a fine-tuning job", "num_steps")
    # Every default resolved: the job runs (and, after a restart, resumes) with these values.
    return plan, plan.config.to_dict()


def openai_hyperparameters(plan) -> dict:
    """The resolved run in OpenAI's three hyperparameters (plus MeZO's own)."""
    c = plan.config
    n_train = max(len(plan.train), 1)
    from sglang.srt.mezo_config import DEFAULTS

    base_lr = DEFAULTS[(plan.kind, c.trainable)]["learning_rate"]
    return {
        "n_epochs": _number(c.num_steps * c.batch_size / n_train),
        "batch_size": c.batch_size,
        "learning_rate_multiplier": c.learning_rate / base_lr if base_lr else None,
        "num_steps": c.num_steps, "learning_rate": c.learning_rate, "epsilon": c.epsilon,
        "lora_rank": c.lora_rank, "eval_steps": c.eval_steps, "k_shot": c.k_shot,
    }


def _number(x: float):
    return int(round(x)) if abs(x - round(x)) < 1e-9 else round(x, 3)


def iter_jsonl(path: str) -> Iterator[dict]:
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
    except FileNotFoundError:
        return
