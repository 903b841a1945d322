#!/usr/bin/env bash
# The project's main job: set up (idempotently), then run the whole ROS 2 node stack (simulated
# Sawyer, camera, encoder, controller, recorder, model fitting, trainer: one process each) learning
# to reach a goal on `sawyer_reach` from the camera, ending with the results table, summary.json and
# the learning-curve plot. The console shows the trainer's progress (and any warning or error); every
# node's full log goes to OUT_DIR/stack.log.
# Usage: scripts/main.sh [OUT_DIR] [--method solar|solar_mpc|dsae] [--seed N] [--set KEY=VALUE ...]
#        (default runs/main, method solar, seed 0; --set: a setting of the method, as `solar-ros train --set`)
# solar_mpc is SOLAR's MPC ablation (the same model and budget, actions replanned by CEM at every camera frame).
# SOLAR runs the simulator at SOLAR_ROS_RTF x real time (default 1.5), the deep spatial autoencoder at 1.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/runs/main
METHOD=solar
SEED=0
SETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --method) METHOD=${2:-}; shift 2 || { echo "main.sh: --method needs a value (solar, solar_mpc or dsae)" >&2; exit 2; } ;;
    --method=*) METHOD=${1#--method=}; shift ;;
    --seed) SEED=${2:-}; shift 2 || { echo "main.sh: --seed needs a value (a non-negative integer)" >&2; exit 2; } ;;
    --seed=*) SEED=${1#--seed=}; shift ;;
    --set) SETS+=("${2:-}"); shift 2 || { echo "main.sh: --set needs KEY=VALUE" >&2; exit 2; } ;;
    --set=*) SETS+=("${1#--set=}"); shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "main.sh: unknown option $1 (usage: scripts/main.sh [OUT_DIR] [--method solar|solar_mpc|dsae] [--seed N] [--set KEY=VALUE])" >&2; exit 2 ;;
    *) OUT=$1; shift ;;
  esac
done
case "$METHOD" in
  solar|solar_mpc|dsae) ;;
  *) echo "main.sh: --method must be solar, solar_mpc or dsae, got '$METHOD'" >&2; exit 2 ;;
esac
[[ "$SEED" =~ ^[0-9]+$ ]] || { echo "main.sh: --seed must be a non-negative integer, got '$SEED'" >&2; exit 2; }
SETTINGS=""   # the --set pairs as YAML mapping entries, for the fitter (trainer_node.fit_config)
for pair in ${SETS[@]+"${SETS[@]}"}; do
  [[ "$pair" =~ ^[a-z_][a-z0-9_]*=[^,{}:]+$ ]] || { echo "main.sh: --set needs KEY=VALUE (a setting's name, a plain value), got '$pair'" >&2; exit 2; }
  SETTINGS+="${SETTINGS:+, }${pair%%=*}: ${pair#*=}"
done
RTF=${SOLAR_ROS_RTF:-1.5}
[[ "$RTF" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "main.sh: SOLAR_ROS_RTF must be a non-negative number, got '$RTF' (0: as fast as possible)" >&2; exit 2; }
bash "$ROOT/scripts/setup_env.sh"
# shellcheck disable=SC1091
. "${SOLAR_ROS_VENV:-$ROOT/.venv}/bin/activate"
export MUJOCO_GL=${MUJOCO_GL:-egl}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/episodes" "$OUT/models" "$OUT/trainer_state.json"   # a fresh run: its own episodes, models, state
if [ "$METHOD" = dsae ]; then
  # The deep-spatial-autoencoder pipeline of Finn et al. through the nodes (12 iterations of 5
  # episodes, each followed by a fit). Fits 1-6: an exploratory LQR-FLM controller on [q, dq] with the
  # task's cost through the arm's kinematics (sent as a latent+joints policy with zero gains on the
  # latent). Fit 7: the autoencoder is trained on the camera images of those 35 episodes, the goal image
  # (the last frame of the episode that ended closest to the goal) gives target feature points, and the
  # model goes to the encoder. Fits 7-12: the final LQR-FLM controller on [feature points, q, dq] with a
  # cost on the feature points' distance to their targets only, starting from the exploratory gains
  # (solar_ros/runtime/dsae_fit.py). The controller's state is [latent, q, dq] throughout. Success: the
  # hand within 5 cm of the goal after the episode, on 10 noise-free evaluation episodes.
  ARGS=(trainer_node.method:=dsae controller_node.state_source:=latent+joints
        trainer_node.fit_config:="{explore_iterations: 6, dsae_steps: 300, control_points: 8${SETTINGS:+, $SETTINGS}}"
        trainer_node.iterations:=12 trainer_node.episodes_per_iteration:=5 trainer_node.eval_episodes:=10)
else
  # (solar_mpc: the same stack, model and budget, with the controller replanning by CEM at every frame.)
  # SOLAR from the camera alone, with the task's SOLAR settings (solar_ros/algos/solar/config.py): 100
  # random pretraining episodes (the hand started anywhere in the goal box) -> the structured VAE fit ->
  # the model hot-swapped into the encoder -> 20 iterations of 20 episodes of LQR-FLM on the filtered
  # latent, each followed by a refit and an update; the run ends on the policy whose episodes reached
  # the goal most often. Success: the hand within 5 cm of the goal after the episode, on 20 noise-free
  # evaluation episodes. The simulator runs 1.5x real time, with 100 Hz joint states, so that the 500
  # episodes and 21 fits take under 30 minutes on 2 cores: the policy acts on the camera's 20 Hz latent (each frame's command
  # is sent when its latent arrives and held until the next), so a faster command stream only takes
  # CPU from the fitter (at 250 Hz the whole job took 31 minutes); 100 Hz steps also fall exactly on
  # the 50 ms frames (at 250 Hz frames came 48 and 52 ms apart).
  ARGS=(trainer_node.method:="$METHOD" controller_node.state_source:=latent
        trainer_node.iterations:=21 trainer_node.first_iteration_episodes:=100
        trainer_node.episodes_per_iteration:=20 trainer_node.eval_episodes:=20
        sim_arm_node.real_time_factor:="$RTF" sim_arm_node.control_rate:=100)
  [ -z "$SETTINGS" ] || ARGS+=(trainer_node.fit_config:="{$SETTINGS}")
fi
solar-ros launch sim \
  recorder_node.output_dir:="$OUT/episodes" trainer_node.episode_dir:="$OUT/episodes" \
  model_fitting_node.output_dir:="$OUT/models" trainer_node.output_dir:="$OUT" \
  trainer_node.seed:="$SEED" "${ARGS[@]}" \
  2>&1 | tee "$OUT/stack.log" | grep --line-buffered -E '^\[(trainer_node|launch)\]|WARN|ERROR|Traceback'
echo
echo "summary: $OUT/summary.json"
echo "plot:    $OUT/learning_curve.png"
echo "logs:    $OUT/stack.log (every node), episodes in $OUT/episodes (ros2 bag / Foxglove readable)"
