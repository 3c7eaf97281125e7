"""A SGLang server in a child process: SGLang's own launch command (``python -m
sglang.launch_server``) on 127.0.0.1 and a free port, waited for until ``/health`` answers 200, and
stopped with its whole process group (the scheduler and detokenizer too).

The integration tests and the benchmarks both start real servers this way. It lives in the
package, not under ``tests/`` or ``benchmarks/``, because the package is what both already import:
a benchmark that imported the tests (or the reverse) would run one folder's code from the other's
path. It imports only the standard library, so it costs the server layer nothing, and a user can
start a local ``--enable-mezo`` server from Python the same way::

    with LocalServer("smollm2-135m", "--enable-mezo", log_path="server.log") as server:
        server.wait_healthy()
        ...  # requests to server.url
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any, Optional

STARTUP_TIMEOUT_S = 180.0

# Straight to the server: a proxy from the environment has no business with 127.0.0.1.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``GET <url>/health`` answers 200."""
    try:
        with _DIRECT.open(url + "/health", timeout=timeout_s) as r:
            return r.status == 200
    except (OSError, http.client.HTTPException):  # refused, reset, timed out, an error status, cut short
        return False


class LocalServer:
    """``python -m sglang.launch_server --model-path <model> --host 127.0.0.1 --port <free> <flags>``,
    started by the constructor (output to ``log_path``, appended), in a session of its own so that
    :meth:`stop` and :meth:`kill` reach every process it starts."""

    def __init__(self, model: str, *flags: str, log_path: str, env: Optional[dict[str, str]] = None):
        self.model = model
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", model, "--host", "127.0.0.1",
                    "--port", str(self.port), *flags]
        self.log = open(log_path, "ab")  # noqa: SIM115  (open while the server runs; closed by stop())
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=env)

    def wait_healthy(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Return once ``/health`` answers 200; if the server exits or is not healthy within
        ``timeout_s``, stop it and raise a RuntimeError that names the log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"server exited with {self.proc.returncode}; log: {self.log_path}")
            if healthy(self.url):
                return
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"server not healthy after {timeout_s:g} s; log: {self.log_path}")

    def kill(self) -> None:
        """SIGKILL to the whole process group at once: a crash, with no chance to finish anything."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.stop()

    def stop(self) -> None:
        """Terminate the server (30 s to finish), then kill whatever is left of its process group."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of the process group (scheduler, detokenizer)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=30)
        self.log.close()

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
