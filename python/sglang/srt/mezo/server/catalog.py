"""Every model the jobs of a store serve (a succeeded job's adapter, each kept checkpoint), and why
a former one is gone (deleted, or pruned by the checkpoint retention).

Read from the store by the HTTP process. A job that has ended changes only by what this process
itself does (a deletion, which calls :meth:`Catalog.forget`), so its entry is read once; jobs
still going are read again on every :meth:`Catalog.refresh`. A server with a thousand finished
jobs thus re-reads only the few that are running.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Optional

from sglang.srt.mezo.server.store import FINAL, SUCCEEDED, JobStore


@dataclass(frozen=True)
class JobModel:
    """A servable model of a job: its adapter (``kind="adapter"``) or a checkpoint."""

    name: str
    job_id: str
    kind: str
    path: str  # the PEFT adapter folder SGLang loads
    created_at: int
    step: Optional[int] = None

    @property
    def folder(self) -> str:
        """What deleting the model removes: the adapter folder, or the whole checkpoint folder."""
        return os.path.dirname(self.path) if self.kind == "checkpoint" else self.path


@dataclass
class JobEntry:
    """What one job contributes: its models, the names it no longer serves and why, its status."""

    status: str
    models: dict[str, JobModel] = field(default_factory=dict)
    gone: dict[str, str] = field(default_factory=dict)
    names: tuple[str, ...] = ()  # every name the job owns or will own (adapter, checkpoints)


def read_entry(store: JobStore, job_id: str) -> Optional[JobEntry]:
    """The job's entry from its request, state and deletion marks (None: no such job)."""
    request = store.request(job_id)
    if request is None:
        return None
    state = store.state(job_id)
    deleted = store.deletions(job_id)
    entry = JobEntry(status=state.get("status") or "queued")
    candidates = []
    if entry.status == SUCCEEDED and state.get("adapter_path"):
        candidates.append(JobModel(request["fine_tuned_model"], job_id, "adapter", state["adapter_path"],
                                   state.get("finished_at") or request["created_at"]))
    for ckpt in state.get("checkpoints", []):
        candidates.append(JobModel(ckpt["name"], job_id, "checkpoint", ckpt["path"], ckpt["created_at"], ckpt["step"]))
    for model in candidates:
        if model.name in deleted:
            entry.gone[model.name] = f"the model {model.name!r} was deleted"
        else:
            entry.models[model.name] = model
    for name in state.get("pruned_checkpoints", []):
        entry.gone[name] = (f"the checkpoint {name!r} was removed by the server's checkpoint retention (the "
                            "launch flag --mezo-keep-checkpoints); the job's later checkpoints are kept")
    entry.names = (request["fine_tuned_model"], *entry.models, *entry.gone)
    return entry


class Catalog:
    """The job models of a store, by name; :meth:`refresh` brings it up to date."""

    def __init__(self, store: JobStore):
        self.store = store
        self._entries: dict[str, JobEntry] = {}
        self._lock = threading.Lock()  # refreshes run in worker threads
        self.models: dict[str, JobModel] = {}
        self.gone: dict[str, str] = {}
        self.owners: dict[str, str] = {}  # name -> job id, for every name a job owns

    def refresh(self) -> None:
        with self._lock:
            for job_id in self.store.job_ids():
                cached = self._entries.get(job_id)
                if cached is None or cached.status not in FINAL:
                    entry = read_entry(self.store, job_id)
                    if entry is not None:
                        self._entries[job_id] = entry
            self._index()

    def forget(self, job_id: str) -> None:
        """Read the job again (its models changed: a deletion)."""
        with self._lock:
            entry = read_entry(self.store, job_id)
            if entry is None:
                self._entries.pop(job_id, None)
            else:
                self._entries[job_id] = entry
            self._index()

    def _index(self) -> None:
        models, gone, owners = {}, {}, {}
        for job_id, entry in self._entries.items():
            models.update(entry.models)
            gone.update(entry.gone)
            owners.update(dict.fromkeys(entry.names, job_id))
        self.models, self.gone, self.owners = models, gone, owners

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a job model, served or gone."""
        return name in self.models or name in self.gone

    def owner(self, name: str) -> Optional[str]:
        """The job a model name belongs to, also a checkpoint not saved yet (``<adapter>-step-N``)."""
        job_id = self.owners.get(name)
        if job_id is None and "-step-" in name:
            job_id = self.owners.get(name.rsplit("-step-", 1)[0])
        return job_id
