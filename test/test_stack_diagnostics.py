"""scripts/stack_diagnostics.py: where a stacking run leaves the block (centre error, tilt) and what the latent's
readout sees of it, on states built from the task's own geometry."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("stack_diagnostics", REPO / "scripts" / "stack_diagnostics.py")
diag = importlib.util.module_from_spec(spec)
spec.loader.exec_module(diag)

from solar_ros.envs import make  # noqa: E402


def _rot_x(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


@pytest.fixture(scope="module")
def env():
    e = make("sawyer_stack_1", image_obs=False)
    e.reset(seed=0)
    return e


def _states(env, centre_offsets, tilts, T=50) -> np.ndarray:
    """(N, T, state_dim) states whose block points are the stacked pose's, moved by ``centre_offsets`` (N, 3)
    and tilted by ``tilts`` (N degrees about x) at every step."""
    goal = np.asarray(env.goal, dtype=np.float64)
    local = goal.reshape(3, 3) - goal[:3]
    out = np.zeros((len(tilts), T, env.state_dim))
    for n, (off, tilt) in enumerate(zip(centre_offsets, tilts)):
        out[n, :, 14:23] = (goal[:3] + off + local @ _rot_x(tilt).T).ravel()
    return out


def test_the_report_reads_centre_error_tilt_and_success(env):
    offsets = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.016], [0.03, 0.04, 0.0]])
    states = _states(env, offsets, [0.0, 35.0, 0.0])
    rep = diag.end_state_report(env, states, env.goal)
    assert rep["success"] == pytest.approx(1 / 3)  # only the first: the tilted one is 1.6 cm too high
    assert rep["tilt"] == pytest.approx(np.zeros(len(diag.STEPS)), abs=1e-6)  # the median block is upright
    tilted = diag.end_state_report(env, states[1:2], env.goal)
    assert tilted["tilt"][-1] == pytest.approx(35.0, abs=1e-6) and tilted["z"][-1] == pytest.approx(0.016)
    far = diag.end_state_report(env, states[2:3], env.goal)
    assert far["xy"][-1] == pytest.approx(0.05)


def test_a_latent_that_holds_the_points_reads_them_out_exactly(env):
    rng = np.random.default_rng(0)
    states = _states(env, rng.uniform(-0.04, 0.04, (6, 3)), rng.uniform(0, 40, 6))
    states[..., 14:23] += rng.normal(0, 0.002, states[..., 14:23].shape)  # the points move within the episode
    mixing = rng.normal(size=(9, 12))
    latents = states[..., 14:23] @ mixing + 0.3  # an invertible linear image of the points, plus an offset
    xy, z, tilt, n = diag.readout_error_near_goal(env, latents, states, env.goal)
    assert n > 0 and xy < 1e-4 and z < 1e-4 and tilt < 0.05  # within the readout fit's ridge: 0.1 mm
    noisy = latents + rng.normal(0, 1.0, latents.shape)  # a latent that sees the points poorly
    assert diag.readout_error_near_goal(env, noisy, states, env.goal)[0] > 1e-3


def test_a_run_that_is_not_there_is_an_error():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "stack_diagnostics.py"), str(REPO / "no_such_run")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and "cannot read" in done.stderr
