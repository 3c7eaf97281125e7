#!/usr/bin/env bash
# Runs the test suite against the working tree (editable install), setting up .venv first if needed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
