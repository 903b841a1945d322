"""The nonholonomic car: it moves only along its heading, turns as a bicycle does, respects its limits and the walls,
is seeded, and the drive from its start to the target fits an episode (a simple steering controller gets there)."""
from __future__ import annotations

import numpy as np
import pytest

from solar_ros.envs import make


def test_the_car_moves_only_along_its_heading_and_turns_as_a_bicycle():
    env = make("car", image_obs=False)
    env.reset(seed=0)
    env._s = np.array([0.0, 0.0, 0.3, 1.0, 0.0])  # moving at 1 m/s, heading 0.3 rad, wheels straight
    for _ in range(5):
        before = env._s.copy()
        env.step(np.zeros(2))
        step = env._s[:2] - before[:2]
        np.testing.assert_allclose(step, 1.0 * env.dt * np.array([np.cos(0.3), np.sin(0.3)]), atol=1e-12)
    # steered: the heading turns at v tan(delta) / L, the position never moves sideways to the old heading
    env._s = np.array([0.0, 0.0, 0.0, 1.0, 0.4])
    before = env._s.copy()
    env.step(np.zeros(2))
    assert env._s[2] - before[2] == pytest.approx(1.0 * np.tan(0.4) / env.wheelbase * env.dt)
    assert env._s[1] == pytest.approx(0.0)  # this step's motion followed the heading it started with


def test_limits_and_walls():
    env = make("car", image_obs=False)
    env.reset(seed=0)
    for _ in range(40):  # full throttle and full steering rate: both saturate
        env.step(np.array([10.0, 10.0]))
    assert env._s[3] <= env.v_max and env._s[4] == pytest.approx(env.steer_max)
    env._s = np.array([1.4, 0.0, 0.0, 2.0, 0.0])  # straight into the right wall
    for _ in range(3):
        env.step(np.zeros(2))
    assert env._s[0] == pytest.approx(env.arena) and env._s[3] == 0.0


def _drive(env, seed: int) -> tuple[float, bool]:
    """A pursuit controller: steer towards the target, slow down near it."""
    obs, _ = env.reset(seed=seed)
    info = {}
    for _ in range(env.horizon):
        x, y, theta, v, delta = obs["state"]
        to_goal = env.goal - np.array([x, y])
        error = (np.arctan2(to_goal[1], to_goal[0]) - theta + np.pi) % (2 * np.pi) - np.pi
        steer = np.clip(2.0 * error, -env.steer_max, env.steer_max)
        speed = min(env.v_max, 2.0 * np.linalg.norm(to_goal))
        u = np.array([(speed - v) / env.dt, (steer - delta) / env.dt])
        obs, _, _, _, info = env.step(np.clip(u, env.action_space.low, env.action_space.high))
    return info["distance"], info["success"]


def test_the_drive_to_the_target_fits_an_episode():
    env = make("car", image_obs=False)
    results = [_drive(env, seed) for seed in range(5)]
    assert all(success for _, success in results), results
    # doing nothing stays where it started, far from the target
    obs, _ = env.reset(seed=0)
    for _ in range(env.horizon):
        obs, _, _, _, info = env.step(np.zeros(2))
    assert info["distance"] > 2.0 and not info["success"]


def test_seeded_and_the_image_shows_where_the_car_points():
    a, b = make("car"), make("car")
    oa, _ = a.reset(seed=3)
    ob, _ = b.reset(seed=3)
    np.testing.assert_array_equal(oa["state"], ob["state"])
    np.testing.assert_array_equal(oa["image"], ob["image"])
    # the same position facing the other way gives another image (the yellow front marker moves)
    a._s = np.array([0.0, 0.0, 0.0, 0.0, 0.0])
    right = a._render_image()
    a._s = np.array([0.0, 0.0, np.pi, 0.0, 0.0])
    left = a._render_image()
    yellow = lambda img: np.argwhere((img[..., 0] > 150) & (img[..., 1] > 120) & (img[..., 2] < 100))  # noqa: E731
    assert yellow(right)[:, 1].mean() > yellow(left)[:, 1].mean() + 1.0
