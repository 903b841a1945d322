#!/usr/bin/env python3
"""How well does the stacking camera see what SOLAR must learn? For each start of ``sawyer_stack``: the share of
frames of SOLAR's random pretraining rollouts (the task's default noise and smoothing, seeded) in which the
held block's centre projects inside the 64x64 image, and the image scale at the stacked pose (pixels per cm of
motion along the base frame's x, y and z).

    python scripts/camera_coverage.py                       # the task's camera
    python scripts/camera_coverage.py --pos 0.85,-0.7,0.42 --lookat 0.58,0.06,-0.04 --fovy 40   # another one

The rollouts run without rendering: the block's position is projected through the camera's pinhole model
(:meth:`SceneCamera.project`, the one MuJoCo renders).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from solar_ros.algos.common import rollout  # noqa: E402
from solar_ros.algos.solar import TASK_DEFAULTS  # noqa: E402
from solar_ros.algos.solar.loop import random_actor  # noqa: E402
from solar_ros.envs import make  # noqa: E402
from solar_ros.envs.sawyer_model import SceneCamera  # noqa: E402
from solar_ros.envs.sawyer_stack import SawyerStackEnv  # noqa: E402

STARTS = (0, 1, 2)


def _vector(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not np.all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"expected three numbers x,y,z, got {text!r}")
    return values


def camera_from_args(args: argparse.Namespace) -> SceneCamera:
    """The task's camera with the options given replacing its fields."""
    camera = SawyerStackEnv.stacking.camera
    changes = {k: v for k, v in (("pos", args.pos), ("lookat", args.lookat), ("fovy", args.fovy)) if v is not None}
    return dataclasses.replace(camera, **changes)


def block_tracks(start: int, rollouts: int, seed: int) -> np.ndarray:
    """Held block centres (rollouts, T, 3) of SOLAR's pretraining exploration from ``start``."""
    task = f"sawyer_stack_{start}"
    cfg = TASK_DEFAULTS[task]
    env = make(task, image_obs=False)
    tracks = []
    for i in range(rollouts):
        rng = np.random.default_rng([seed, i])
        act = random_actor(rng, cfg.pretrain_noise * env.action_scale, env.action_space.low, env.action_space.high,
                           cfg.pretrain_smoothing, env.horizon)
        episode = rollout(env, act, seed=int(rng.integers(2**31)))
        tracks.append(episode.X[:, list(env.ee_pos_idx)].reshape(env.horizon, -1, 3).mean(axis=1))
    return np.stack(tracks)


def coverage(camera: SceneCamera, tracks: np.ndarray, image_size: int = 64) -> float:
    """Share of the positions in ``tracks`` (..., 3) that project inside the image, in front of the camera."""
    pixels, depth = camera.project(tracks, image_size)
    inside = np.all((pixels >= 0) & (pixels < image_size), axis=-1) & (depth > 0)
    return float(inside.mean())


def pixels_per_cm(camera: SceneCamera, point: np.ndarray, image_size: int = 64) -> np.ndarray:
    """Image motion (pixels) per cm of motion of ``point`` along the base frame's x, y and z."""
    here, _ = camera.project(point, image_size)
    moved, _ = camera.project(point + 0.01 * np.eye(3), image_size)
    return np.linalg.norm(moved - here, axis=-1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pos", type=_vector, help="camera position x,y,z (m, base frame)")
    parser.add_argument("--lookat", type=_vector, help="point the camera looks at x,y,z (m)")
    parser.add_argument("--fovy", type=float, help="vertical field of view (degrees)")
    parser.add_argument("--rollouts", type=int, default=30, help="pretraining rollouts per start")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.fovy is not None and not 0 < args.fovy < 180:
        parser.error(f"--fovy must lie in (0, 180), got {args.fovy}")
    if args.rollouts < 1:
        parser.error(f"--rollouts must be at least 1, got {args.rollouts}")
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer, got {args.seed}")
    camera = camera_from_args(args)
    env = make("sawyer_stack", image_obs=False)
    env.reset(seed=args.seed)
    goal = np.asarray(env.goal_centre, float)
    print(f"camera pos {camera.pos}, lookat {camera.lookat}, fovy {camera.fovy}")
    print("pixels per cm at the stacked pose (x, y, z):", np.round(pixels_per_cm(camera, goal), 2).tolist())
    for start in STARTS:
        tracks = block_tracks(start, args.rollouts, args.seed)
        print(f"start {start}: held block in the image in {coverage(camera, tracks):.0%} of "
              f"{tracks.shape[0] * tracks.shape[1]} pretraining frames")


if __name__ == "__main__":
    main()
