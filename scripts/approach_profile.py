#!/usr/bin/env python3
"""How a finished run's rollouts approach the goal, step by step: the median horizontal and vertical
error of the end effector (or held block centre) to the goal, and where each rollout passed nearest.

    python scripts/approach_profile.py runs/benchmark/NAME/sawyer_stack_1_solar_s0 [--rollouts iter_004 iter_010]

For each chosen rollout file (default: the last) it prints, every ``--every`` steps, the median over
the rollouts of the horizontal (x, y) distance and the signed vertical offset (z - goal z; 0 on a
planar task) of the first three ``ee_pos_idx`` entries to the goal's, in cm (on ``sawyer_stack`` also how far
the held block leans from upright, in degrees); then the median of each rollout's nearest
horizontal pass, the step of it, the vertical offset there, and the horizontal distance at the end.
A rollout whose end is far beyond its nearest pass went past the goal and did not come back.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from solar_ros.algos.solar.persistence import load_rollouts_with_states  # noqa: E402
from solar_ros.envs import make  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished run's output directory (with summary.json and data/)")
    p.add_argument("--rollouts", nargs="*", default=None, help="rollout files of the run (default: the last)")
    p.add_argument("--every", type=int, default=7, help="print every this many steps (default 7)")
    args = p.parse_args()
    if args.every < 1:
        p.error("--every must be >= 1")
    try:
        summary = json.loads((args.run / "summary.json").read_text())
        env = make(summary["task"], image_obs=False)
        goal = np.asarray(summary["goal"], dtype=np.float64)[:3]
        files = args.rollouts or sorted(f.stem for f in (args.run / "data").glob("iter_*.npz"))[-1:]
    except (OSError, ValueError, KeyError, TypeError) as err:
        p.error(f"cannot read the run in {args.run}: {err}")
    if not files:
        p.error(f"{args.run} has no iteration rollouts in data/")
    idx = list(env.ee_pos_idx)[:3]  # a planar task has no vertical
    goal = goal[:len(idx)]
    for name in files:
        try:
            data = load_rollouts_with_states(args.run, name)
        except ValueError as err:
            p.error(str(err))
        err = (data.states[..., idx] - goal) * 100.0  # (N, T, 3) cm
        xy = np.linalg.norm(err[..., :2], axis=-1)
        dz = err[..., 2] if len(idx) == 3 else np.zeros_like(xy)
        steps = list(range(0, data.T, args.every)) + ([data.T - 1] if (data.T - 1) % args.every else [])
        print(f"{name}: {data.N} rollouts of {data.T} steps (cm, median over rollouts)")
        print("  step       " + " ".join(f"{t:6d}" for t in steps))
        print("  horizontal " + " ".join(f"{np.median(xy[:, t]):6.1f}" for t in steps))
        if len(idx) == 3:
            print("  vertical   " + " ".join(f"{np.median(dz[:, t]):6.1f}" for t in steps))
        tilt = getattr(env, "tilt", None)
        if tilt is not None:  # a held block: how far it leans from upright
            print("  tilt (deg) " + " ".join(f"{np.median(tilt(data.states[:, t])):6.1f}" for t in steps))
        nearest = xy.argmin(axis=1)
        rows = np.arange(data.N)
        print(f"  nearest horizontal pass {np.median(xy[rows, nearest]):.1f} at step {np.median(nearest):.0f}, "
              f"vertical offset there {np.median(dz[rows, nearest]):.1f}; at the end horizontal "
              f"{np.median(xy[:, -1]):.1f}, vertical {np.median(dz[:, -1]):.1f}; "
              f"{np.mean(xy[:, -1] > xy[rows, nearest] + 2.0):.0%} of the rollouts end > 2 cm beyond their "
              "nearest pass")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
