#!/usr/bin/env bash
# The project's test command: set up (idempotently), then run the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh test/core -x
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
# shellcheck disable=SC1091
. "${SOLAR_ROS_VENV:-$ROOT/.venv}/bin/activate"
cd "$ROOT"
export MUJOCO_GL=${MUJOCO_GL:-egl}
# Each test has a hard per-test timeout (pytest.ini) so a hung ROS process fails instead of blocking.
exec python -m pytest "${@:-test}"
