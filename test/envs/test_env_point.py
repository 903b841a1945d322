"""The point task: dynamics against the closed-form solution, walls, LQR solvability, the image."""
from __future__ import annotations

import numpy as np
import pytest

from solar_ros.envs import make
from solar_ros.envs.point import PointEnv


def closed_form_step(p, v, u, mass, damping, dt):
    """Exact solution of p' = v, v' = (u - damping v) / mass over dt with constant u (per axis)."""
    k = damping / mass
    decay = np.exp(-k * dt)
    v_inf = u / damping
    v_next = v_inf + (v - v_inf) * decay
    p_next = p + v_inf * dt + (v - v_inf) * (1.0 - decay) / k
    return p_next, v_next


def test_dynamics_match_the_analytic_damped_double_integrator():
    env = make("point", image_obs=False)
    obs, _ = env.reset(seed=0, options={"goal": [0.0, 0.0]})
    rng = np.random.default_rng(0)
    x = obs["state"]
    for _ in range(env.horizon):
        u = rng.uniform(-0.5, 0.5, size=2)  # small forces: stays inside the arena
        obs, *_ = env.step(u)
        p, v = closed_form_step(x[:2], x[2:], u, env.mass, env.damping, env.dt)
        np.testing.assert_allclose(obs["state"], np.r_[p, v], rtol=0, atol=1e-12)
        x = obs["state"]
    assert np.all(np.abs(x[:2]) < 1.0)


def test_linear_model_matrices_match_the_closed_form():
    A, B = PointEnv.linear_model(mass=2.0, damping=0.5, dt=0.1)
    rng = np.random.default_rng(1)
    x, u = rng.normal(size=4), rng.normal(size=2)
    p, v = closed_form_step(x[:2], x[2:], u, 2.0, 0.5, 0.1)
    np.testing.assert_allclose(A @ x + B @ u, np.r_[p, v], atol=1e-12)


def test_walls_stop_the_point():
    env = make("point", image_obs=False)
    env.reset(seed=0)
    for _ in range(env.horizon):
        obs, *_ = env.step([env.force_limit, -env.force_limit])
    x = obs["state"]
    assert x[0] == 1.0 and x[1] == -1.0
    assert x[2] == 0.0 and x[3] == 0.0  # velocity into the walls is removed


def _lqr_gains(A, B, Q, R, T):
    """Finite-horizon discrete Riccati recursion for sum_t 0.5 x'Qx + 0.5 u'Ru (u_t = -K_t x_t)."""
    P = Q.copy()
    K = np.zeros((T, B.shape[1], A.shape[0]))
    for t in reversed(range(T)):
        K[t] = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        P = Q + A.T @ P @ (A - B @ K[t])
    return K


def test_lqr_on_the_cost_model_reaches_every_goal():
    """The task is well conditioned: LQR on the env's own quadratic cost succeeds from any start."""
    env = make("point", image_obs=False)
    T = env.horizon
    A, B = PointEnv.linear_model(env.mass, env.damping, env.dt)  # cross-checked against the closed form above
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        expansion = env.cost_model().eval(obs["state"][None], np.zeros((1, 2)))
        Q, R = expansion.lxx[0], expansion.luu[0]
        K = _lqr_gains(A, B, Q, R, T)
        offset = np.r_[env.goal, 0.0, 0.0]  # the goal state is an equilibrium: A offset = offset
        np.testing.assert_allclose(A @ offset, offset, atol=1e-15)
        for t in range(T):
            obs, _, _, truncated, info = env.step(-K[t] @ (obs["state"] - offset))
        assert truncated and info["success"], f"seed {seed}: final distance {info['distance']:.3f}"


def _pixel(env, xy):
    """(row, col) of a world point in the image (pixel centres at integer coordinates)."""
    n = env.image_shape[0]
    col = (xy[0] + 1.0) / 2.0 * n - 0.5
    row = (1.0 - xy[1]) / 2.0 * n - 0.5
    return np.array([row, col])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_draws_agent_and_goal_where_they_are(seed):
    env = make("point")
    obs, _ = env.reset(seed=seed)
    img = obs["image"].astype(float)
    assert img.shape == (32, 32, 3)
    assert np.linalg.norm(obs["state"][:2] - env.goal) > 0.3  # the seeds chosen give separate discs
    for xy, mask in ((obs["state"][:2], (img[..., 2] > 150) & (img[..., 0] < 100)),
                     (env.goal, (img[..., 0] > 150) & (img[..., 2] < 100))):
        rows, cols = np.nonzero(mask)
        assert len(rows) >= 3
        np.testing.assert_allclose([rows.mean(), cols.mean()], _pixel(env, xy), atol=0.6)
