#!/usr/bin/env python3
"""Measure how fast the simulated tasks run.

For each task prints: environment steps per second with image observations and without
(``image_obs=False``), renders per second (``env.render()`` alone), and the real-time factor
(simulated seconds per wall-clock second, = steps/s * dt) in both modes.

    python scripts/bench_envs.py                       # all tasks, 500 steps each
    python scripts/bench_envs.py --task sawyer_reach --steps 2000

Actions are seeded Gaussian noise of std ``action_scale``; episodes are reset when they end (reset
time is included). Numbers are one reading on the machine it runs on.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from solar_ros.envs import TASKS, make  # noqa: E402


def _steps_per_second(env, steps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    actions = rng.normal(size=(steps, env.action_dim)) * env.action_scale
    env.reset(seed=seed)
    start = time.perf_counter()
    for u in actions:
        _, _, _, truncated, _ = env.step(u)
        if truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def _renders_per_second(env, renders: int, seed: int) -> float:
    env.reset(seed=seed)
    env.render()  # the first render creates the GL context: not part of the rate
    start = time.perf_counter()
    for _ in range(renders):
        env.render()
    return renders / (time.perf_counter() - start)


def bench(task: str, steps: int, seed: int = 0) -> dict[str, float]:
    """Rates for one task: steps/s with and without images, renders/s, real-time factors."""
    with_images = make(task, image_obs=True)
    without_images = make(task, image_obs=False)
    try:
        with_images.reset(seed=seed)  # warm up (GL context, caches)
        with_images.step(np.zeros(with_images.action_dim))
        sps_img = _steps_per_second(with_images, steps, seed)
        sps_state = _steps_per_second(without_images, steps, seed)
        rps = _renders_per_second(with_images, steps, seed)
    finally:
        with_images.close()
        without_images.close()
    dt = with_images.dt
    return {"steps_per_s_images": sps_img, "steps_per_s_state": sps_state, "renders_per_s": rps,
            "rtf_images": sps_img * dt, "rtf_state": sps_state * dt}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), action="append",
                        help="task to measure (repeatable; default: all)")
    parser.add_argument("--steps", type=int, default=500, help="steps (and renders) timed per measurement")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be positive")
    tasks = args.task or list(TASKS)
    header = (f"{'task':<14}{'steps/s (img)':>15}{'steps/s (state)':>17}{'renders/s':>11}"
              f"{'RTF (img)':>11}{'RTF (state)':>13}")
    print(header)
    print("-" * len(header))
    for task in tasks:
        r = bench(task, args.steps, args.seed)
        print(f"{task:<14}{r['steps_per_s_images']:>15.0f}{r['steps_per_s_state']:>17.0f}{r['renders_per_s']:>11.0f}"
              f"{r['rtf_images']:>11.1f}{r['rtf_state']:>13.1f}", flush=True)
    print("RTF = simulated seconds per wall-clock second (steps/s x dt).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
