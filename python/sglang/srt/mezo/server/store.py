"""The job store: uploaded files, jobs' requests and states, events, one JSON file each, written
atomically so that a crash never leaves a half-written record.

The HTTP process and the scheduler process share one folder, ``--mezo-output-dir``, and each
file in it has exactly one writer, so the two processes never race on a file:

- ``files/<file-id>.json`` and ``files/<file-id><ext>``: uploads (HTTP process);
- ``jobs/<job-id>/request.json``: what was asked, checked and resolved (HTTP process, once);
- ``jobs/<job-id>/control.json``: cancel / pause / resume wishes (HTTP process);
- ``jobs/<job-id>/deleted.json``: the job's models deleted with ``DELETE /v1/models`` (HTTP
  process; their folders are removed by it too, once the job has ended and nothing else writes them);
- ``jobs/<job-id>/state.json``, ``events.jsonl``, ``results.csv``, ``run/``: what the job did
  (the scheduler process, the only place where training runs).

Every JSON file is written atomically (a temporary file renamed into place), so a reader, a
restart or a crash never sees half of one. This module imports neither torch nor SGLang.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from typing import Any, BinaryIO, Optional

from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.io import atomic_json, atomic_write

DATA_SUFFIXES = (".jsonl", ".json", ".tsv", ".csv", ".txt")


TOMBSTONE = ".deleting-"  # a folder renamed to this prefix is on its way out, never read

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
        self._marks_lock = threading.Lock()

    # -- files (uploads)

    def check_upload(self, filename: str, purpose: str) -> str:
        """The stored suffix of an upload named ``filename``, or the RequestError that refuses it."""
        base = os.path.basename(filename or "")
        suffix = os.path.splitext(base)[1].lower()
        if purpose != "fine-tune":
            raise RequestError(f"purpose must be 'fine-tune' (got {purpose!r}): this server stores training and "
                               "validation data only", "purpose")
        if suffix not in DATA_SUFFIXES:
            raise RequestError(f"file {base!r}: unsupported type {suffix or '(no extension)'!r}; upload one of "
                               f"{', '.join(DATA_SUFFIXES)} (JSONL: one object per line, OpenAI's chat rows "
                               "{'messages': [...]} or prompt/completion rows, or classification rows with a text "
                               "field such as 'sentence' and a 'label')", "file")
        return suffix

    def save_upload(self, filename: str, source: BinaryIO, purpose: str) -> dict:
        """Store an upload read from ``source``: its data file first, then the record that makes it
        visible, each written atomically (a crash in between leaves an unlisted data file, which
        :meth:`sweep` removes)."""
        suffix = self.check_upload(filename, purpose)
        base = os.path.basename(filename or "")
        file_id = new_id("file")
        data_path = os.path.join(self.files_dir, file_id + suffix)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                shutil.copyfileobj(source, f, 1024 * 1024)

        atomic_write(data_path, write)
        size = os.path.getsize(data_path)
        if not _has_content(data_path):
            os.unlink(data_path)
            raise RequestError(f"file {base!r} is empty", "file")
        meta = {"id": file_id, "object": "file", "bytes": size, "created_at": now(), "filename": base,
                "purpose": purpose, "status": "processed", "status_details": None, "suffix": suffix}
        atomic_json(os.path.join(self.files_dir, file_id + ".json"), meta, indent=1)
        return meta

    def delete_file(self, meta: dict) -> None:
        """Remove an upload: its record first (one unlink: it is gone from every listing at once),
        then its data."""
        os.unlink(os.path.join(self.files_dir, meta["id"] + ".json"))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.file_path(meta))

    def sweep(self) -> list[str]:
        """Remove what a crash can leave: upload data without a record, temporary files of atomic
        writes, folders half-way through :func:`remove_tree`. Call only while no upload is being
        written (at start-up). Returns what was removed."""
        removed = []
        names = set(os.listdir(self.files_dir))
        for name in names:
            path = os.path.join(self.files_dir, name)
            stem, ext = os.path.splitext(name)
            orphan = name.startswith("file-") and ext != ".json" and stem + ".json" not in names
            if orphan or name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                removed.append(path)
        for job_id in self.job_ids():
            run = os.path.join(self.job_dir(job_id), "run")
            removed += _remove_tombstones(run) + _remove_tombstones(os.path.join(run, "checkpoints"))
        return removed

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

    def jobs(self) -> list[tuple[dict, dict]]:
        """Every job's (request, state), newest first (by creation, then by its creation's order)."""
        out = []
        for job_id in self.job_ids():
            request = self.request(job_id)
            if request:
                out.append((request, self.state(job_id)))
        out.sort(key=lambda rs: (rs[0]["created_at"], rs[0].get("seq", 0)), reverse=True)
        return out

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

    def deletions(self, job_id: str) -> dict:
        """Models of the job that were deleted (name -> when); written by the HTTP process only."""
        return read_json(os.path.join(self.job_dir(job_id), "deleted.json"), {}) or {}

    def mark_deleted(self, job_id: str, name: str) -> None:
        with self._marks_lock:  # two deletions of one job's models must not lose each other's mark
            marks = self.deletions(job_id)
            marks[name] = now()
            atomic_json(os.path.join(self.job_dir(job_id), "deleted.json"), marks, indent=1)

    def results_csv(self, job_id: str) -> Optional[str]:
        """The metrics CSV a succeeded job wrote (None: none yet)."""
        try:
            with open(os.path.join(self.job_dir(job_id), "results.csv")) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write_results_csv(self, job_id: str, text: str) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "w") as f:
                f.write(text)

        atomic_write(os.path.join(self.job_dir(job_id), "results.csv"), write)

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


# ---------------------------------------------------------------- removing folders
def remove_tree(path: str) -> None:
    """Remove a folder so that no reader sees half of it: one rename out of the way, then the
    deletion (a crash in between leaves a tombstone that :meth:`JobStore.sweep` removes)."""
    if not os.path.isdir(path):
        return
    parent, name = os.path.split(os.path.abspath(path))
    doomed = os.path.join(parent, f"{TOMBSTONE}{name}-{secrets.token_hex(4)}")
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _remove_tombstones(folder: str) -> list[str]:
    """Remove the tombstones directly in ``folder`` (where :func:`remove_tree` leaves them)."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(TOMBSTONE)]
    except FileNotFoundError:
        return []
    for name in names:
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    return [os.path.join(folder, n) for n in names]


def _has_content(path: str) -> bool:
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            if chunk.strip():
                return True
    return False
