#!/usr/bin/env python3
"""The learned latent cost of a finished SOLAR run against the task's, binned by the true distance of
the end effector (or held block) to the goal.

    python scripts/cost_by_distance.py runs/benchmark/NAME/sawyer_reach_solar_s0 [--rollouts pretrain iter_010]

For each chosen rollout file of the run (default: the pretraining and the last iteration) it prints, per
distance bin, how many frames lie there, the mean of the final model's state cost (action term left
out) on their smoothed latents, and the mean observed per-step cost. A cost that is flat where the
observed one falls (near the goal) cannot lead the policy there.

``--probe-near R`` adds how precisely the final latent gives the position there: a linear probe from the
smoothed latent to the ``ee_pos_idx`` entries, fitted on a random 80% of the chosen rollouts' frames within R (m)
of the goal and scored on the other 20%: the error of the first three (the hand, or the held block's centre;
median and 90th percentile, cm) and, on ``sawyer_stack``, of the block's tilt computed from the probed points
(degrees). ``--rollouts all``: every rollout file of the run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from solar_ros.algos import solar  # noqa: E402
from solar_ros.algos.solar.persistence import load_rollouts_with_states  # noqa: E402
from solar_ros.envs import make  # noqa: E402
from solar_ros.models.checkpoint import load_checkpoint  # noqa: E402

BINS = (0.0, 0.05, 0.10, 0.15, 0.20, 0.30, 0.50, np.inf)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished SOLAR run's output directory (with checkpoint.pt and data/)")
    p.add_argument("--rollouts", nargs="*", default=None,
                   help="rollout files of the run, or 'all' (default: first and last)")
    p.add_argument("--probe-near", type=float, default=None, metavar="R",
                   help="also probe the latent for the position on frames within R m of the goal")
    args = p.parse_args()
    checkpoint = args.run / solar.CHECKPOINT_NAME
    torch.set_num_threads(1)
    try:
        ckpt = load_checkpoint(checkpoint)
        saved = ckpt.extra
        if saved.get("method") != "solar":
            p.error(f"{args.run} is a {saved.get('method')!r} run; this reads SOLAR runs")
        cfg = solar.SolarConfig(**saved["config"])
        env = make(saved["task"], image_obs=False)
        model = solar.SVAELatentModel(cfg.image_size or env.image_shape[0], env.action_dim, cfg,
                                      readout_idx=list(env.ee_pos_idx))
        model.restore(ckpt, checkpoint)
        goal = np.asarray(saved["goal"], dtype=np.float64)
        files = args.rollouts or [saved["data_files"][0], saved["data_files"][-1]]
        if files == ["all"]:
            files = list(saved["data_files"])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        p.error(f"cannot read the SOLAR run in {args.run}: {err}")
    if args.probe_near is not None and not args.probe_near > 0:
        p.error("--probe-near must be a positive distance")
    cost = solar.latent_cost(model, env.horizon)
    near_latents, near_positions = [], []
    for name in files:
        try:
            data = load_rollouts_with_states(args.run, name)
        except ValueError as err:
            p.error(str(err))
        latents = model.smooth(data)
        learned = cost.value(latents, np.zeros_like(data.actions))
        distance = np.linalg.norm(data.states[..., list(env.ee_pos_idx)] - goal, axis=-1)
        print(f"{name}: {distance.size} frames")
        print("  distance (m)    frames  learned state cost  observed cost")
        for lo, hi in zip(BINS[:-1], BINS[1:]):
            m = (distance >= lo) & (distance < hi)
            if m.any():
                print(f"  [{lo:.2f}, {hi:.2f})  {m.sum():7d}  {learned[m].mean():18.3f}  {data.costs[m].mean():13.3f}")
        if args.probe_near is not None:
            near = distance < args.probe_near
            near_latents.append(latents[near])
            near_positions.append(data.states[..., list(env.ee_pos_idx)][near])
    if args.probe_near is not None:
        tilt = None
        if hasattr(env, "tilt"):  # a held block: its tilt from the block points (the state's other entries unused)
            def tilt(points: np.ndarray) -> np.ndarray:
                states = np.zeros((len(points), env.state_dim))
                states[:, list(env.ee_pos_idx)] = points
                return env.tilt(states)
        probe_near(np.concatenate(near_latents), np.concatenate(near_positions), args.probe_near, tilt)
    return 0


def probe_near(latents: np.ndarray, positions: np.ndarray, radius: float, tilt=None, seed: int = 0) -> None:
    """Print a held-out linear probe's position error (cm; the first 3 columns of ``positions``) on frames near
    the goal, and with ``tilt`` (points -> degrees) the error of the tilt of the probed points (see the module
    docstring)."""
    n = len(latents)
    if n < 10 * (latents.shape[1] + 1):
        print(f"probe within {radius} m of the goal: {n} frames, too few for a probe of a {latents.shape[1]}-d latent")
        return
    order = np.random.default_rng(seed).permutation(n)
    fit, test = order[: n * 4 // 5], order[n * 4 // 5:]
    X = np.hstack([latents, np.ones((n, 1))])
    W = np.linalg.lstsq(X[fit], positions[fit], rcond=None)[0]
    predicted = X[test] @ W
    err = np.linalg.norm(predicted[:, :3] - positions[test, :3], axis=1) * 100.0
    spread = np.linalg.norm(positions[test, :3].std(axis=0)) * 100.0
    print(f"probe within {radius} m of the goal ({len(fit)} frames fitted, {len(test)} held out): position error "
          f"median {np.median(err):.2f} cm, 90th percentile {np.percentile(err, 90):.2f} cm "
          f"(spread of the positions there {spread:.2f} cm)")
    if tilt is not None:
        true_tilt = tilt(positions[test])
        tilt_err = np.abs(tilt(predicted) - true_tilt)
        print(f"  tilt of the block from the probed points: error median {np.median(tilt_err):.1f}, 90th percentile "
              f"{np.percentile(tilt_err, 90):.1f} degrees (tilt there median {np.median(true_tilt):.1f}, 90th "
              f"percentile {np.percentile(true_tilt, 90):.1f} degrees)")


if __name__ == "__main__":
    raise SystemExit(main())
