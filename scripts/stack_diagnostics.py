#!/usr/bin/env python3
"""Where finished ``sawyer_stack`` runs leave the block, and whether their latent sees it.

    python scripts/stack_diagnostics.py runs/benchmark/NAME/sawyer_stack_1_solar_s0* [more runs] [--iterations 2]

For each SOLAR (or VAE-ablation) run directory it reads the training rollouts of the last ``--iterations``
iterations (``data/iter_*.npz``, with their exploration noise) and prints, as medians over those rollouts:

* the held block's centre error at the end, horizontal and vertical (success: under 1.5 and 1 cm), and how
  far the block leans from upright (a block set down tilted rests with its centre too high);
* the same over the episode (steps 0, 10, ..., 49): where the approach goes wrong;
* the linear readout from the run's final latent to the block points (fitted on those rollouts, as the
  readout cost is): its error near the goal (true centre within 6 cm). A small error there with a miss
  means the controller, not the representation, stops short;
* the run's own evaluation (``summary.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from solar_ros.algos import solar  # noqa: E402
from solar_ros.algos.solar.models import fit_readout  # noqa: E402
from solar_ros.algos.solar.persistence import load_data  # noqa: E402
from solar_ros.envs import make  # noqa: E402
from solar_ros.models.checkpoint import load_checkpoint  # noqa: E402

STEPS = (0, 10, 20, 30, 40, 49)
NEAR = 0.06  # m: frames whose true centre is this near the goal count as "near the goal"


def end_state_report(env, states: np.ndarray, goal: np.ndarray, steps=STEPS) -> dict[str, np.ndarray]:
    """Medians over rollouts ``states`` (N, T, state_dim) of the centre's horizontal and vertical error (m,
    the vertical signed: + above the stacked pose) and the block's tilt (degrees), at each of ``steps``,
    and the success rate at the last step."""
    centre_err = states[..., 14:17] - np.asarray(goal, dtype=np.float64)[:3]
    tilt = env.tilt(states)
    cols = list(steps)
    return {
        "xy": np.median(np.linalg.norm(centre_err[:, cols, :2], axis=-1), axis=0),
        "z": np.median(centre_err[:, cols, 2], axis=0),
        "tilt": np.median(tilt[:, cols], axis=0),
        "success": float(np.mean(env.is_success(states[:, -1], goal))),
    }


def readout_error_near_goal(env, latents: np.ndarray, states: np.ndarray, goal: np.ndarray
                            ) -> tuple[float, float, float, int]:
    """On the frames whose true centre lies within :data:`NEAR` of the goal's, the readout (fitted on every
    frame given, from the latents to the block points) against the truth: the centre's error (horizontal,
    vertical; m, means), the tilt's (degrees, mean absolute; the tilt of the read-out points); and how many
    frames that is."""
    idx = list(env.ee_pos_idx)
    targets = states[..., idx]
    P, b = fit_readout(latents, targets)
    pred = latents @ P.T + b
    err = pred[..., :3] - targets[..., :3]
    near = np.linalg.norm(states[..., 14:17] - np.asarray(goal)[:3], axis=-1) < NEAR
    if not near.any():
        return float("nan"), float("nan"), float("nan"), 0
    read_states = states.copy()
    read_states[..., idx] = pred
    tilt_err = np.abs(env.tilt(read_states) - env.tilt(states))
    return (float(np.linalg.norm(err[near][:, :2], axis=-1).mean()), float(np.abs(err[near][:, 2]).mean()),
            float(tilt_err[near].mean()), int(near.sum()))


def report_run(run: Path, iterations: int) -> None:
    ckpt = load_checkpoint(run / "checkpoint.pt")
    state = ckpt.extra
    if not str(state.get("task", "")).startswith("sawyer_stack"):
        raise ValueError(f"{run} is a {state.get('task')!r} run, not sawyer_stack")
    cfg = solar.SolarConfig(**state["config"])
    goal = np.asarray(state["goal"], dtype=np.float64)
    env = make(state["task"], image_obs=True, goal=goal,
               **({} if cfg.image_size is None else {"image_size": cfg.image_size}))
    model = solar.loop.MODEL_CLASSES[state["method"]](env.image_shape[0], env.action_dim, cfg,
                                                      readout_idx=list(env.ee_pos_idx))
    model.restore(ckpt, run / "checkpoint.pt")
    last = int(state["iteration"])
    data = load_data(run, [f"iter_{i:03d}" for i in range(max(1, last - iterations + 1), last + 1)])
    if data.states is None:
        raise ValueError(f"{run}: the rollouts carry no true states")
    rep = end_state_report(env, data.states, goal)
    xy_err, z_err, tilt_err, n_near = readout_error_near_goal(env, model.smooth(data), data.states, goal)
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    print(f"\n{run}")
    print(f"  evaluation: success {summary.get('success_rate', float('nan')):.0%}, final distance "
          f"{summary.get('final_distance', float('nan')):.3f} m; training rollouts of iterations "
          f"{max(1, last - iterations + 1)}-{last} ({data.N}): success {rep['success']:.0%}")
    print("  step           " + " ".join(f"{t:6d}" for t in STEPS))
    print("  centre xy (cm) " + " ".join(f"{v * 100:6.1f}" for v in rep["xy"]))
    print("  centre z (cm)  " + " ".join(f"{v * 100:6.1f}" for v in rep["z"]))
    print("  tilt (deg)     " + " ".join(f"{v:6.1f}" for v in rep["tilt"]))
    print(f"  readout error of the centre near the goal ({n_near} frames within {NEAR * 100:.0f} cm): "
          f"xy {xy_err * 100:.2f} cm, z {z_err * 100:.2f} cm, tilt {tilt_err:.1f} deg")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="finished sawyer_stack runs' output directories")
    p.add_argument("--iterations", type=int, default=2, help="how many of the last iterations' rollouts")
    args = p.parse_args()
    if args.iterations < 1:
        p.error(f"--iterations must be >= 1, got {args.iterations}")
    torch.set_num_threads(1)
    for run in args.runs:
        try:
            report_run(run, args.iterations)
        except (OSError, ValueError, KeyError) as err:
            p.error(f"cannot read {run}: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
