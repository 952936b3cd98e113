#!/usr/bin/env bash
# Set up (or reuse) .venv (ROS 2 included) and run the whole test suite, lint included.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
# ROS 2 Kilted from wheels + the interface packages (the ROS tests need them).
bash "$repo/scripts/setup_ros.sh"
cd "$repo"
exec "$repo/.venv/bin/python" -m pytest "$@"
