"""What the benchmark scripts share, so that none imports another script's insides: the model the
accuracy records use, the machine a record names (a line, or perf_mezo's full dict), the command
line a record quotes, the log line on stderr, a ``--enable-mezo`` server started for a benchmark,
and markdown tables.

The server is :class:`sglang.srt.mezo.server.local_server.LocalServer`, the integration tests' own:
started with SGLang's launch command on 127.0.0.1 and a free port, waited for, stopped with its
process group. Scripts import this module by name (``from harness import ...``): Python puts the
script's folder, ``benchmarks/``, first on the path.

Importing this module imports the standard library only: the perf scripts import it in the worker
processes whose peak memory they measure, where SGLang, torch or requests loaded by a helper
would count against what is measured.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Iterable, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# The library's own answer ($SGLANG_MEZO_DATA_DIR, else the checkout's ../shared/data), so that a
# benchmark run from another worktree reads the same data.
SHARED_DATA = os.environ.get("SGLANG_MEZO_DATA_DIR") or os.path.join(os.path.dirname(REPO), "shared", "data")

# Straight to the server: a proxy from the environment has no business with 127.0.0.1.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

#: The model of the accuracy records (SmolLM2-135M-Instruct, the package's built-in alias).
MODEL = "smollm2-135m"


def logger(tag: str) -> Callable[[str], None]:
    """A ``log(msg)`` that prints ``[<tag> HH:MM:SS] msg`` to stderr at once."""

    def log(msg: str) -> None:
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


def _cpu_name() -> str:
    # engine.hardware imports torch: only when a record is written, so that the scripts that only
    # drive a server or subprocesses stay light while they run.
    from sglang.srt.mezo.engine.hardware import cpu_name  # noqa: PLC0415

    return cpu_name()


def machine_line() -> str:
    """The machine in one line, as the accuracy records name it: CPU, cores, architecture."""
    return f"{_cpu_name()}, {os.cpu_count()} cores, {platform.machine()}"


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _mem_total_gb() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        return None
    return None


def machine_info() -> dict:
    """The machine and software of a performance record: CPUs, memory, versions, the commit."""
    import torch  # noqa: PLC0415  (as in _cpu_name: only when a record is written)

    return {
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_name(),
        "mem_total_gb": _mem_total_gb(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "sglang": _version("sglang"),
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def command_line() -> str:
    """This process's command, the interpreter and script relative to the repository."""

    def rel(p: str) -> str:
        a = os.path.abspath(p)
        return os.path.relpath(a, REPO) if a.startswith(REPO + os.sep) else p

    return shlex.join([rel(sys.executable), rel(sys.argv[0])] + sys.argv[1:])


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table's lines: the header, the rule, one line a row (cells as ``str`` gives them).

    >>> print("\\n".join(markdown_table(["a", "b"], [[1, "x"], [2, "y"]])))
    | a | b |
    |---|---|
    | 1 | x |
    | 2 | y |
    """
    lines = ["| " + " | ".join(str(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


class MeZOServer:
    """``python -m sglang.launch_server --model-path <model> --enable-mezo`` with its store in
    ``out_dir`` (and its log, ``server.log``), healthy once made; the job API's calls a benchmark
    makes without a client library."""

    def __init__(self, model: str, out_dir: str, data_dir: str = SHARED_DATA, startup_timeout_s: float = 600):
        # SGLang's package only when a server is asked for (see the module docstring).
        from sglang.srt.mezo.server.local_server import LocalServer  # noqa: PLC0415

        self.process = LocalServer(model, "--enable-mezo", "--mezo-data-dir", data_dir, "--mezo-output-dir", out_dir,
                                   log_path=os.path.join(out_dir, "server.log"))
        self.url = self.process.url
        self.process.wait_healthy(startup_timeout_s)

    def stop(self) -> None:
        self.process.stop()

    def _call(self, method: str, path: str, params: Optional[dict] = None) -> Any:
        """The JSON answer of ``method path``; an error status raises (urllib's HTTPError)."""
        url = self.url + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with _DIRECT.open(urllib.request.Request(url, method=method), timeout=60) as r:
            return json.load(r)

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/fine_tuning/jobs/{job_id}")

    def control(self, job_id: str, action: str) -> dict:
        return self._call("POST", f"/v1/fine_tuning/jobs/{job_id}/{action}")

    def step_times(self, job_id: str, after_step: int) -> list[float]:
        """step_time_s of the job's steps numbered above ``after_step`` (events come newest first)."""
        out, after = [], None
        while True:
            params = {"limit": 100, **({"after": after} if after else {})}
            page = self._call("GET", f"/v1/fine_tuning/jobs/{job_id}/events", params)
            for e in page["data"]:
                step = e.get("data", {}).get("step")
                if e["type"] == "metrics" and "step_time_s" in e["data"]:
                    if step <= after_step:
                        return out
                    out.append(e["data"]["step_time_s"])
            if not page.get("has_more"):
                return out
            after = page["data"][-1]["id"]
