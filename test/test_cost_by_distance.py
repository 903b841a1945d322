"""scripts/cost_by_distance.py's near-goal probe: the position error of the first three probed entries and, for a
held block, the error of the tilt computed from the probed points (synthetic latents, known answers)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from solar_ros.envs import make

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cost_by_distance.py"
spec = importlib.util.spec_from_file_location("cost_by_distance", SCRIPT)
cost_by_distance = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cost_by_distance)


def _tilted_points(env, rng, n):
    """``n`` block-point 9-vectors of the stacked pose, shifted up to 2 cm and tilted 0-40 degrees about x."""
    goal = np.asarray(env.goal, dtype=np.float64)
    local = goal.reshape(3, 3) - goal[:3]
    out = np.empty((n, 9))
    for i, (shift, deg) in enumerate(zip(rng.uniform(-0.02, 0.02, (n, 3)), rng.uniform(0, 40, n))):
        a = np.radians(deg)
        rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        out[i] = (goal[:3] + shift + local @ rot.T).ravel()
    return out


def test_a_latent_that_holds_the_points_gives_their_position_and_tilt(capsys):
    env = make("sawyer_stack_1", image_obs=False)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    points = _tilted_points(env, rng, 400)

    def tilt(p):
        states = np.zeros((len(p), env.state_dim))
        states[:, list(env.ee_pos_idx)] = p
        return env.tilt(states)

    latents = points @ rng.normal(size=(9, 12)) + 0.5  # a linear image of the points
    cost_by_distance.probe_near(latents, points, 0.06, tilt)
    exact = capsys.readouterr().out
    assert "position error median 0.00 cm" in exact and "error median 0.0, 90th percentile 0.0 degrees" in exact
    true_median = np.median(tilt(points[np.random.default_rng(0).permutation(400)[320:]]))
    assert f"tilt there median {true_median:.1f}" in exact
    blurred = latents + rng.normal(0, 0.5, latents.shape)  # a latent that sees the points poorly
    cost_by_distance.probe_near(blurred, points, 0.06, tilt)
    assert "error median 0.0, " not in capsys.readouterr().out
