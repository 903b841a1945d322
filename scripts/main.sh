#!/usr/bin/env bash
# The project's main job: set up (idempotently), then learn a simulated task end to end and
# print the results summary; the learning-curve plot is written next to summary.json.
# Usage: scripts/main.sh [OUT_DIR]   (default runs/main)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$ROOT/runs/main}
bash "$ROOT/scripts/setup_env.sh"
# shellcheck disable=SC1091
. "${SOLAR_ROS_VENV:-$ROOT/.venv}/bin/activate"
export MUJOCO_GL=${MUJOCO_GL:-egl}
solar-ros train --task reacher --method lqr_state --seed 0 --out "$OUT"
