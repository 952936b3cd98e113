#!/usr/bin/env bash
# Create or reuse the project's virtual environment at <repo>/.venv with pinned
# dependencies, and install scorehmr_ros into it in editable mode.
# Idempotent: a stamp of the requirement files skips work that is already done.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$py" -m venv "$venv"
fi

stamp="$venv/.scorehmr_stamp"
want="$(cat "$repo/requirements.txt" "$repo/setup.py" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing pinned dependencies (torch CPU build from local disk)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$repo/requirements.txt"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$repo"
  echo "$want" > "$stamp"
fi
echo "[setup] environment ready: $venv"
