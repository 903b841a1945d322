#!/usr/bin/env bash
# The project's main job: set up (idempotently), then run the whole ROS 2 node stack (simulated
# Sawyer, camera, encoder, controller, recorder, model fitting, trainer: one process each) learning
# to reach a goal on `sawyer_reach`, ending with the results table, summary.json and the
# learning-curve plot. The console shows the trainer's progress (and any warning or error); every
# node's full log goes to OUT_DIR/stack.log.
# Usage: scripts/main.sh [OUT_DIR]   (default runs/main)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$ROOT/runs/main}
bash "$ROOT/scripts/setup_env.sh"
# shellcheck disable=SC1091
. "${SOLAR_ROS_VENV:-$ROOT/.venv}/bin/activate"
export MUJOCO_GL=${MUJOCO_GL:-egl}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/episodes" "$OUT/models" "$OUT/trainer_state.json"   # a fresh run: its own episodes, models, state
# Method dsae: the deep-spatial-autoencoder pipeline of Finn et al. through the nodes (12 iterations of
# 5 episodes, each followed by a fit). Fits 1-6: an exploratory LQR-FLM controller on [q, dq] with the
# task's cost through the arm's kinematics (sent as a latent+joints policy with zero gains on the
# latent). Fit 7: the autoencoder is trained on the camera images of those 35 episodes, the goal image
# (the last frame of the episode that ended closest to the goal) gives target feature points, and the
# model goes to the encoder. Fits 7-12: the final LQR-FLM controller on [feature points, q, dq] with a
# cost on the feature points' distance to their targets only, starting from the exploratory gains
# (solar_ros/runtime/dsae_fit.py). The controller's state is [latent, q, dq] throughout. Success: the
# hand within 5 cm of the goal after the episode, on 10 noise-free evaluation episodes.
solar-ros launch sim \
  recorder_node.output_dir:="$OUT/episodes" trainer_node.episode_dir:="$OUT/episodes" \
  model_fitting_node.output_dir:="$OUT/models" trainer_node.output_dir:="$OUT" \
  trainer_node.method:=dsae controller_node.state_source:=latent+joints \
  trainer_node.fit_config:="{explore_iterations: 6, dsae_steps: 300, control_points: 8}" \
  trainer_node.seed:=0 trainer_node.iterations:=12 trainer_node.episodes_per_iteration:=5 \
  trainer_node.eval_episodes:=10 \
  2>&1 | tee "$OUT/stack.log" | grep --line-buffered -E '^\[(trainer_node|launch)\]|WARN|ERROR|Traceback'
echo
echo "summary: $OUT/summary.json"
echo "plot:    $OUT/learning_curve.png"
echo "logs:    $OUT/stack.log (every node), episodes in $OUT/episodes (ros2 bag / Foxglove readable)"
