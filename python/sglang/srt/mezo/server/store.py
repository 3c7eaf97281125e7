"""The job store: uploaded files, jobs' requests and states, events, one JSON file each, written
atomically so that a crash never leaves a half-written record."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from typing import Any, Optional

from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.io import atomic_json, atomic_write

DATA_SUFFIXES = (".jsonl", ".json", ".tsv", ".csv", ".txt")
MAX_UPLOAD_BYTES = 64 * 1024 * 1024

# ---------------------------------------------------------------- statuses
VALIDATING, QUEUED, RUNNING, PAUSED = "validating_files", "queued", "running", "paused"


SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"


FINAL = (SUCCEEDED, FAILED, CANCELLED)


ACTIVE = (RUNNING, PAUSED)  # jobs that hold LoRA slots in the scheduler


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
