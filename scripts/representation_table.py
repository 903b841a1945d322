#!/usr/bin/env python3
"""How well finished SOLAR (or VAE-ablation) runs' latents explained the state, iteration by iteration.

    python scripts/representation_table.py runs/benchmark/NAME/* [--keys readout_r2 heldout_probe_ee_position]

Every run logs its representation diagnostics in ``summary.json`` (per iteration: the learned or read-out
cost's R^2, linear probes from the latent to the true state on the buffer and on the newest, held-out
rollouts; see docs/results.md). For each run this prints, per key, the median over the RL iterations
(pretraining excluded) and the last iteration's value, so that runs and settings can be compared at a
glance. A key a run never logged prints as ``-``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

DEFAULT_KEYS = ("readout_r2", "heldout_probe_ee_position", "heldout_probe_joint_angles", "heldout_cost_r2")


def iteration_values(summary: dict, key: str) -> list[float]:
    """``key``'s finite values over the run's RL iterations (the rows whose phase is 'iteration')."""
    rows = summary.get("iterations") if isinstance(summary, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError("summary.json has no 'iterations' list of rows")
    values = []
    for row in rows:
        extra = row.get("extra") if isinstance(row.get("extra"), dict) else {}
        value = extra.get(key)
        if extra.get("phase") == "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
            values.append(float(value))
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="finished runs' output directories (with summary.json)")
    p.add_argument("--keys", nargs="+", default=list(DEFAULT_KEYS), help="diagnostics to show (default: %(default)s)")
    args = p.parse_args(argv)
    print(f"{'run':48s} " + " ".join(f"{k[-30:]:>30s}" for k in args.keys))
    print(f"{'':48s} " + " ".join(f"{'median / last':>30s}" for _ in args.keys))
    for run in args.runs:
        try:
            summary = json.loads((run / "summary.json").read_text())
            columns = [iteration_values(summary, k) for k in args.keys]
        except (OSError, ValueError) as err:
            p.error(f"cannot read {run}: {err}")
        cells = [f"{np.median(v):.3f} / {v[-1]:.3f}" if v else "-" for v in columns]
        label = f"{run.resolve().parent.name}/{summary.get('task', '?')}/s{summary.get('seed', '?')}"
        print(f"{label[-48:]:48s} " + " ".join(f"{c:>30s}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
