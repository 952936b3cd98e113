#!/usr/bin/env bash
# Set up (or reuse) .venv and run the whole test suite, lint included.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
cd "$repo"
exec "$repo/.venv/bin/python" -m pytest "$@"
