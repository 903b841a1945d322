#!/usr/bin/env bash
# Build the package the way a full ROS 2 install does (colcon, ament_cmake, Python sources installed
# into the generated interface package) in a temporary workspace, then import it from the install.
# Uses the project's environment for the ROS 2 build tools; takes a few minutes.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
# shellcheck disable=SC1091
. "${SOLAR_ROS_VENV:-$ROOT/.venv}/bin/activate"
WS=$(mktemp -d)
trap 'rm -rf "$WS"' EXIT
mkdir -p "$WS/src"
git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 tar cf -) | (mkdir -p "$WS/src/solar_ros" && tar xf - -C "$WS/src/solar_ros")
cd "$WS"
export CMAKE_PREFIX_PATH=$VIRTUAL_ENV AMENT_PREFIX_PATH=$VIRTUAL_ENV
colcon build --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$(command -v python)" > "$WS/colcon.log" 2>&1 \
  || { tail -30 "$WS/colcon.log"; echo "colcon build FAILED"; exit 1; }
# A clean interpreter that sees only the install (not the editable checkout).
env -u VIRTUAL_ENV PYTHONNOUSERSITE=1 bash -c ". install/local_setup.sh && cd / && MUJOCO_GL=egl python -I -c '
import sys; sys.path[:0] = [p for p in \"$WS/install/solar_ros/lib/python3.11/site-packages\".split(\":\")]
import solar_ros, solar_ros.msg, solar_ros.srv, solar_ros.action
assert solar_ros.__file__.startswith(\"$WS\"), solar_ros.__file__
from solar_ros.envs import make
from solar_ros.core import lqr_flm
env = make(\"sawyer_reach\", image_obs=False); env.reset(seed=0)
print(\"installed package imports from\", solar_ros.__path__[0])
'"
ls "$WS/install/solar_ros/lib/solar_ros"
echo "colcon build OK"
