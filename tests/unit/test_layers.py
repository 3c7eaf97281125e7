"""The package's layers, as pyproject.toml's import-linter contracts state them: each folder imports
only from the folders below it, run_spec/ and data/ import neither torch nor SGLang, zo/ no SGLang, and
no folder's modules import each other in a cycle."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = [str(Path(sys.executable).parent / "lint-imports")]  # import-linter's command, installed beside this Python


def lint(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*LINT, "--no-cache", str(config)], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_contracts():
    out = lint(REPO / "pyproject.toml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 4 kept, 0 broken." in out.stdout, out.stdout


@pytest.mark.parametrize("change, broken", [
    # training below engine: training imports engine (trainable -> lora_pool), so this must break.
    (lambda s: s.replace('"training",\n  "engine",', '"engine",\n  "training",'), "each layer imports only"),
    # zo/ without torch: zo is made of torch, so this must break too.
    (lambda s: s.replace('forbidden_modules = ["sglang", "transformers", "peft"]',
                         'forbidden_modules = ["sglang", "transformers", "peft", "torch"]'), "zo/ uses torch"),
])
def test_the_contracts_see_the_imports(tmp_path, change, broken):
    """A contract the code breaks is reported broken: the check reads the real import graph."""
    text = (REPO / "pyproject.toml").read_text()
    changed = change(text)
    assert changed != text
    config = tmp_path / "pyproject.toml"
    config.write_text(changed)
    out = lint(config)
    assert out.returncode != 0
    assert re.search(re.escape(broken) + r".* BROKEN", out.stdout), out.stdout


GATE = "sglang.srt.mezo.engine.sglang_on_cpu"


def _sglang_import(node: ast.stmt) -> str | None:
    """The SGLang module (not this project's) that a top-level import statement imports, if any."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and not node.level:
        names = [f"{node.module}.{a.name}" for a in node.names]
    else:
        return None
    return next((n for n in names if n.startswith("sglang.") and not n.startswith("sglang.srt.mezo")), None)


def test_sglang_is_prepared_for_the_cpu_before_it_is_imported():
    """A module (of the package, or a test, which runs SGLang in-process) that imports SGLang at its
    top imports engine/sglang_on_cpu.py first: importing the package does not prepare SGLang for the
    CPU, and SGLang's modules read the engine choice when they are first imported, whichever path
    (CLI, library, test, worker) gets there first."""
    late = []
    for path in sorted([*(REPO / "python").rglob("*.py"), *(REPO / "tests").rglob("*.py")]):
        gated = False
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import) and any(a.name == GATE for a in node.names):
                gated = True
            found = _sglang_import(node)
            if found and not gated:
                late.append(f"{path.relative_to(REPO)}:{node.lineno} imports {found}")
                break
    assert not late, f"import {GATE} (its own isort section in pyproject.toml puts it first) in:\n" + "\n".join(late)
