#!/usr/bin/env bash
# Set up (or reuse) .venv (ROS 2 included) and run the demo on the embedded default.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
# ROS 2 Kilted from wheels: part 2 of the demo replays a bag through the node.
bash "$repo/scripts/setup_ros.sh"
cd "$repo"
exec "$repo/.venv/bin/scorehmr" demo "$@"
