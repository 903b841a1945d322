#!/usr/bin/env python3
"""Evaluate finished SOLAR (or VAE-ablation) runs again: the last LQR-FLM update or the best measured policy.

    python scripts/evaluate_run.py runs/benchmark/NAME/sawyer_reach_solar_s1 [more runs] [--policy both]

For each run directory (with its checkpoint.pt) it rebuilds the final model and runs the chosen policy's
mean on the run's own noise-free evaluation episodes (the same start states as ``solar-ros train``'s
evaluation), printing success, final distance and mean cost. ``--policy update``: the LQR-FLM update of
the last iteration's rollouts (what a run with ``final_policy=update`` evaluates); ``best_measured``: the
measured step's anchor, the policy whose training rollouts cost least (``final_policy=best_measured``);
``best_success``: the policy whose training rollouts succeeded most often (``final_policy=best_success``);
``both``; default: the run's own ``final_policy``. The training is not repeated: a run's evaluation with
the other setting is exactly what this prints.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from solar_ros.algos import solar  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="finished SOLAR runs' output directories")
    p.add_argument("--policy", choices=("update", "best_measured", "best_success", "both"), default=None,
                   help="which policy to evaluate (default: the run's final_policy)")
    p.add_argument("--episodes", type=int, default=None, help="evaluation episodes (default: the run's)")
    args = p.parse_args()
    if args.episodes is not None and args.episodes < 1:
        p.error(f"--episodes must be >= 1, got {args.episodes}")
    torch.set_num_threads(1)
    which = [None] if args.policy is None else ["update", "best_measured"] if args.policy == "both" else [args.policy]
    print(f"{'run':60s} {'policy':14s} {'success':>8s} {'final distance':>15s} {'mean cost':>10s}")
    for run in args.runs:
        for w in which:
            try:
                s = solar.evaluate_saved_run(run, w, args.episodes)
            except (OSError, ValueError, KeyError, TypeError) as err:
                p.error(f"cannot evaluate {run}: {err}")
            print(f"{str(run)[-60:]:60s} {w or 'its own':14s} {s['success_rate']:8.0%} "
                  f"{s['final_distance']:15.4f} {s['mean_cost']:10.4g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
