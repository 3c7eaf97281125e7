"""ruff over the whole repository, with the rules pyproject.toml selects: the test command lints
(test_layers.py runs the other checker, import-linter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUFF = [sys.executable, "-m", "ruff", "check", "--no-cache"]  # pinned in scripts/requirements-cpu.txt


def ruff(*args: str, text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*RUFF, *args], cwd=REPO, input=text, capture_output=True, text=True, timeout=300)


def test_the_code_passes_ruff():
    out = ruff(".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_flags_an_import_inside_a_function():
    """The config selects PLC0415: a local import without its noqa is reported (and one with it is not)."""
    code = "def f():\n    import json{}\n\n    return json\n"
    named = ["--stdin-filename", "python/sglang/srt/mezo/example.py", "-"]
    flagged = ruff(*named, text=code.format(""))
    assert flagged.returncode == 1 and "PLC0415" in flagged.stdout, flagged.stdout + flagged.stderr
    allowed = ruff(*named, text=code.format("  # noqa: PLC0415"))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
