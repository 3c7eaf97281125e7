"""scripts/setup.sh: a line a step on screen, pip's errors too, but not the resolver report that the
--no-deps installs cause; pip's full output in the log. Nothing here installs anything: the script's
step runner is tested sourced, on stand-ins for pip, and the one full run is the up-to-date one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# The repo root: the nearest folder above this file with scripts/setup.sh (tests/ may gain sub-folders).
ROOT = next(d for d in (os.path.abspath(os.path.join(__file__, *[".."] * n)) for n in range(2, 5))
            if os.path.isfile(os.path.join(d, "scripts", "setup.sh")))
SETUP = os.path.join(ROOT, "scripts", "setup.sh")

# What pip 26 printed after the requirements install of a cold run (scripts/setup.sh before the
# quiet steps), cut to a few of its lines, and the environment's index warnings.
RESOLVER_REPORT = """\
WARNING: Location 'file:///opt/pypi/simple/torch/' is ignored: it is neither a file nor a directory.
ERROR: pip's dependency resolver does not currently take into account all the packages that are installed. \
This behaviour is the source of the following dependency conflicts.
sglang 0.5.23 requires anthropic>=0.20.0, which is not installed.
sglang 0.5.23 requires flashinfer_python[cu13]==0.7.2, which is not installed.
sglang 0.5.23 requires python-dateutil<3, but you have python-dateutil 4.0.0 which is incompatible.
Successfully installed aiohttp-3.13.2
"""


def _sourced(tmp_path, commands: str) -> subprocess.CompletedProcess:
    """Runs ``commands`` in bash after sourcing setup.sh (its functions and set -euo pipefail, not
    the install), with the log in tmp_path; stdout and stderr together, as on a terminal."""
    script = f'source "{SETUP}"\nLOG="{tmp_path}/setup.log"\n{commands}\n'
    return subprocess.run(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=60)


def _fake_pip(tmp_path, output: str, status: int) -> str:
    path = tmp_path / "fake-pip"
    (tmp_path / "fake-pip.out").write_text(output)
    path.write_text(f'#!/usr/bin/env bash\ncat "{tmp_path}/fake-pip.out"\nexit {status}\n')
    path.chmod(0o755)
    return str(path)


def test_a_second_run_says_only_that_the_venv_is_up_to_date():
    stamp = subprocess.run(["bash", "-c", f'source "{SETUP}"; [ "$(cat "$STAMP" 2>/dev/null)" = "$(want_stamp)" ]'],
                           timeout=60)
    if stamp.returncode != 0:  # a real run would reinstall for minutes, which is no test's job
        pytest.fail(".venv's stamp does not match scripts/setup.sh, requirements-cpu.txt and pyproject.toml: "
                    "run `bash scripts/setup.sh` (scripts/test.sh does) before this test")
    run = subprocess.run(["bash", SETUP], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
                         cwd=ROOT)
    assert (run.returncode, run.stdout) == (0, "setup: .venv is up to date\n")


def test_the_resolver_report_stays_in_the_log(tmp_path):
    pip = _fake_pip(tmp_path, RESOLVER_REPORT, 0)
    run = _sourced(tmp_path, f'quiet "installing what sglang imports" "{pip}" install -r x.txt\necho "next step"')
    assert (run.returncode, run.stdout) == (0, "setup: installing what sglang imports\nnext step\n")
    log = (tmp_path / "setup.log").read_text()
    assert RESOLVER_REPORT in log and "=== setup: installing what sglang imports" in log


def test_other_errors_and_the_steps_own_lines_reach_the_screen(tmp_path):
    pip = _fake_pip(tmp_path, RESOLVER_REPORT + "ERROR: a wheel's RECORD is broken\nsetup: random-sign kernel built\n",
                    0)
    run = _sourced(tmp_path, f'quiet "building" "{pip}"')
    assert (run.returncode, run.stdout) == (
        0, "setup: building\nERROR: a wheel's RECORD is broken\nsetup: random-sign kernel built\n")


def test_a_failing_step_stops_the_script_with_its_error_on_screen(tmp_path):
    error = ("ERROR: Could not find a version that satisfies the requirement sglang==9.9 (from versions: none)\n"
             "ERROR: No matching distribution found for sglang==9.9\n")
    pip = _fake_pip(tmp_path, RESOLVER_REPORT + error, 3)
    run = _sourced(tmp_path, f'quiet "installing sglang" "{pip}" install sglang==9.9\necho "next step"')
    assert run.returncode == 3
    assert run.stdout.startswith("setup: installing sglang\nsetup: failed (exit status 3): installing sglang.")
    assert run.stdout.endswith(error) and "next step" not in run.stdout
    assert error in (tmp_path / "setup.log").read_text()


def test_a_real_pip_failure_is_shown(tmp_path):
    # pip itself, failing at once: no index, a name that exists nowhere.
    name = "sglang-mezo-no-such-package"
    run = _sourced(tmp_path, f'quiet "installing {name}" "{sys.executable}" -m pip install --no-index '
                             f'--disable-pip-version-check {name}')
    assert run.returncode != 0
    assert f"ERROR: No matching distribution found for {name}" in run.stdout.splitlines()
