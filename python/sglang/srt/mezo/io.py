"""Writing a run's files so that a reader, or a crash, never sees half of one.

Every file a MeZO run writes in one piece (adapter weights and config, trajectory, run state,
summary) goes through :func:`atomic_write`: the bytes go to a temporary file in the same folder,
are flushed to disk, and the file is renamed into place (an atomic replace on POSIX).

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> _ = atomic_json(os.path.join(d, "state.json"), {"step": 3})
>>> open(os.path.join(d, "state.json")).read()
'{"step": 3}'
>>> sorted(os.listdir(d))  # no temporary file left behind
['state.json']
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Callable


def atomic_write(path: str, write: Callable[[str], None]) -> str:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically; returns ``path``.

    On any failure the temporary file is removed and ``path`` keeps its previous content.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # the data must be on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_json(path: str, payload: Any, *, indent: int | None = None) -> str:
    """Write ``payload`` as JSON to ``path`` atomically (sets and tuples become lists)."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=indent, default=_json_default)

    return atomic_write(path, write)


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "value"):  # enums such as peft's TaskType
        return value.value
    return str(value)


def atomic_dir(path: str, fill: Callable[[str], None]) -> str:
    """Call ``fill(tmp_dir)`` and move the folder to ``path`` in one rename, so a folder at ``path``
    is always complete; a folder already there is replaced. Returns ``path``."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        fill(tmp)
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.rename(path, os.path.join(old, "x"))
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
