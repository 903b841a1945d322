#!/usr/bin/env python3
"""The learned latent cost of a finished SOLAR run against the task's, binned by the true distance of
the end effector (or held block) to the goal.

    python scripts/cost_by_distance.py runs/benchmark/NAME/sawyer_reach_solar_s0 [--rollouts pretrain iter_010]

For each chosen rollout file of the run (default: the pretraining and the last iteration) it prints, per
distance bin, how many frames lie there, the mean of the final model's state cost (action term left
out) on their smoothed latents, and the mean observed per-step cost. A cost that is flat where the
observed one falls (near the goal) cannot lead the policy there.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from solar_ros.algos import solar  # noqa: E402
from solar_ros.algos.solar.persistence import load_data  # noqa: E402
from solar_ros.envs import make  # noqa: E402
from solar_ros.models.checkpoint import load_checkpoint  # noqa: E402

BINS = (0.0, 0.05, 0.10, 0.15, 0.20, 0.30, 0.50, np.inf)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished SOLAR run's output directory (with checkpoint.pt and data/)")
    p.add_argument("--rollouts", nargs="*", default=None, help="rollout files of the run (default: first and last)")
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
        model = solar.SVAELatentModel(cfg.image_size or env.image_shape[0], env.action_dim, cfg)
        model.restore(ckpt, checkpoint)
        goal = np.asarray(saved["goal"], dtype=np.float64)
        files = args.rollouts or [saved["data_files"][0], saved["data_files"][-1]]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        p.error(f"cannot read the SOLAR run in {args.run}: {err}")
    cost = solar.latent_cost(model, env.horizon)
    for name in files:
        try:
            data = load_data(args.run, [name])
        except (OSError, ValueError, KeyError) as err:
            p.error(f"cannot read the rollouts {name!r} of {args.run}: {err}")
        if data.states is None:
            p.error(f"the rollouts {name!r} of {args.run} carry no true states to measure distances with")
        latents = model.smooth(data)
        learned = cost.value(latents, np.zeros_like(data.actions))
        distance = np.linalg.norm(data.states[..., list(env.ee_pos_idx)] - goal, axis=-1)
        print(f"{name}: {distance.size} frames")
        print("  distance (m)    frames  learned state cost  observed cost")
        for lo, hi in zip(BINS[:-1], BINS[1:]):
            m = (distance >= lo) & (distance < hi)
            if m.any():
                print(f"  [{lo:.2f}, {hi:.2f})  {m.sum():7d}  {learned[m].mean():18.3f}  {data.costs[m].mean():13.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
