#!/usr/bin/env bash
# Create or refresh the project's virtual environment and build the ROS 2 interfaces in place.
# Idempotent: each step records a fingerprint of its inputs and is skipped when nothing changed,
# so a second run takes seconds. Usage: scripts/setup_env.sh   (SOLAR_ROS_VENV overrides .venv)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${SOLAR_ROS_VENV:-$ROOT/.venv}
BUILD=$ROOT/build
log() { echo "[setup] $*"; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }
fingerprint() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -c1-16; }
stamp_ok() { [ -f "$VENV/.stamp-$1" ] && [ "$(cat "$VENV/.stamp-$1")" = "$2" ]; }
stamp_set() { echo "$2" > "$VENV/.stamp-$1"; }

# 1. System prerequisites: a C/C++ toolchain and CMake for the interfaces, EGL for headless rendering.
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v cc >/dev/null || missing+=(gcc)
command -v c++ >/dev/null || missing+=(g++)
ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1' || missing+=(libegl1 libgl1-mesa-dri)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing system packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
      || die "apt-get install ${missing[*]} failed"
  else
    die "missing system packages: ${missing[*]} (install them, e.g. with apt-get, and run again)"
  fi
fi

# 2. Python 3.11 (the ROS 2 wheels are built for it) and the virtual environment.
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}
[ -n "$PYTHON" ] || die "python3.11 not found"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || die "Python 3.11 is required (found $("$PYTHON" --version 2>&1) at $PYTHON); set PYTHON=/path/to/python3.11"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV" || die "could not create the virtual environment"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

# 3. Python dependencies (pinned).
deps=$(fingerprint "$ROOT/requirements.txt")
if ! stamp_ok deps "$deps"; then
  log "installing Python dependencies (first run: a few minutes)"
  python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # (index locations that do not exist on this machine make pip warn once per package: not errors)
  python -m pip install -q -r "$ROOT/requirements.txt" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) \
    || die "pip install -r requirements.txt failed"
  python "$ROOT/scripts/fix_ros_wheel_cmake.py" "$VENV" || die "could not patch the ROS CMake exports"
  stamp_set deps "$deps"
else
  log "Python dependencies up to date"
fi

# 4. Custom interfaces (msg/, srv/, action/): generate with rosidl, then place the generated Python
#    modules next to the sources (an in-place build; the C libraries go to the venv's lib/).
ifaces=$(fingerprint "$ROOT"/msg/* "$ROOT"/srv/* "$ROOT"/action/* "$ROOT/CMakeLists.txt" "$ROOT/package.xml" <(echo "$deps"))
if ! stamp_ok interfaces "$ifaces" || [ ! -d "$ROOT/solar_ros/msg" ]; then
  log "building ROS 2 interfaces"
  export CMAKE_PREFIX_PATH=$VENV AMENT_PREFIX_PATH=$VENV
  rm -rf "$BUILD/interfaces" "$BUILD/interfaces_py" && mkdir -p "$BUILD"
  {
    cmake -S "$ROOT" -B "$BUILD/interfaces" -DCMAKE_INSTALL_PREFIX="$VENV" -DBUILD_TESTING=OFF \
      -DPython3_EXECUTABLE="$VENV/bin/python" -DSOLAR_ROS_INSTALL_PYTHON_SOURCES=OFF \
      -DPYTHON_INSTALL_DIR="$BUILD/interfaces_py" &&
    cmake --build "$BUILD/interfaces" -j"$(nproc)" &&
    cmake --install "$BUILD/interfaces"
  } > "$BUILD/interfaces.log" 2>&1 || { tail -30 "$BUILD/interfaces.log" >&2; die "interface build failed (log: build/interfaces.log)"; }
  gen=$BUILD/interfaces_py/solar_ros
  rm -rf "$ROOT"/solar_ros/{msg,srv,action} "$ROOT"/solar_ros/*.so "$ROOT"/solar_ros/_solar_ros_s.ep.*
  for d in msg srv action; do [ -d "$gen/$d" ] && cp -r "$gen/$d" "$ROOT/solar_ros/"; done
  cp "$gen"/*.so "$ROOT/solar_ros/"
  stamp_set interfaces "$ifaces"
else
  log "ROS 2 interfaces up to date"
fi

# 5. The package itself, editable (console scripts: solar-ros and the node executables).
pkg=$(fingerprint "$ROOT/setup.py" <(echo "$deps"))
if ! stamp_ok package "$pkg"; then
  mkdir -p "$BUILD"
  log "installing solar_ros (editable)"
  python -m pip install -q --no-deps --no-build-isolation -e "$ROOT" > "$BUILD/pip-editable.log" 2>&1 \
    || { tail -20 "$BUILD/pip-editable.log" >&2; die "pip install -e . failed"; }
  stamp_set package "$pkg"
fi
python -c 'import rclpy, torch, mujoco; from solar_ros.msg import LatentState' \
  || die "the environment does not import (rclpy, torch, mujoco, solar_ros.msg)"
log "environment ready: $VENV"
