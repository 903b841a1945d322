"""The reacher: fingertip kinematics against the planar 2-link formulas, solvability, camera geometry."""
from __future__ import annotations

import numpy as np

from solar_ros.envs import make
from solar_ros.envs.reacher import VIEW_EXTENT

L1, L2 = 0.10, 0.11


def planar_fk(q):
    """Fingertip position and Jacobian of a planar 2-link arm (independent of the MuJoCo model)."""
    q1, q12 = q[0], q[0] + q[1]
    tip = np.array([L1 * np.cos(q1) + L2 * np.cos(q12), L1 * np.sin(q1) + L2 * np.sin(q12)])
    J = np.array([[-L1 * np.sin(q1) - L2 * np.sin(q12), -L2 * np.sin(q12)],
                  [L1 * np.cos(q1) + L2 * np.cos(q12), L2 * np.cos(q12)]])
    return tip, J


def planar_ik(goal, q_near):
    """Elbow-up/down solution of the 2-link inverse kinematics closest to q_near in q1."""
    c2 = (goal @ goal - L1**2 - L2**2) / (2 * L1 * L2)
    q2 = np.arccos(np.clip(c2, -1.0, 1.0))
    q1 = np.arctan2(goal[1], goal[0]) - np.arctan2(L2 * np.sin(q2), L1 + L2 * np.cos(q2))
    q1 = (q1 - q_near[0] + np.pi) % (2 * np.pi) - np.pi + q_near[0]
    return np.array([q1, q2])


def test_state_fingertip_matches_planar_kinematics():
    env = make("reacher", image_obs=False)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        q = np.r_[rng.uniform(-np.pi, np.pi), rng.uniform(-3.0, 3.0)]
        dq = rng.normal(size=2)
        x = env.set_joint_state(q, dq)
        tip, J = planar_fk(q)
        np.testing.assert_allclose(x[:4], np.r_[q, dq], atol=1e-12)
        np.testing.assert_allclose(x[4:6], tip, atol=1e-9)
        np.testing.assert_allclose(x[6:8], J @ dq, atol=1e-9)


def test_state_after_steps_is_consistent_with_the_joint_state():
    """After physics steps the reported fingertip is that of the new joint angles, not of a sub-step before."""
    env = make("reacher", image_obs=False)
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(5):
        obs, *_ = env.step(rng.normal(size=2) * env.action_scale)
        x = obs["state"]
        tip, J = planar_fk(x[:2])
        np.testing.assert_allclose(x[4:6], tip, atol=1e-9)
        np.testing.assert_allclose(x[6:8], J @ x[2:4], atol=1e-9)
    # The velocity is the time derivative of the angle: compare with finite differences over the rollout.
    env.reset(seed=2)
    u = np.array([0.03, -0.02])
    states = [env.state] + [env.step(u)[0]["state"] for _ in range(20)]
    states = np.array(states)
    fd = (states[2:, :2] - states[:-2, :2]) / (2 * env.dt)
    np.testing.assert_allclose(fd[5:], states[1:-1, 2:4][5:], rtol=0.05, atol=0.02)


def test_joint_pd_controller_reaches_random_goals():
    """The task is solvable within the horizon and torque limits: PD on the IK angles succeeds."""
    env = make("reacher", image_obs=False)
    for seed in range(12):
        obs, _ = env.reset(seed=100 + seed)
        q_goal = planar_ik(env.goal, obs["state"][:2])
        np.testing.assert_allclose(planar_fk(q_goal)[0], env.goal, atol=1e-9)
        for _ in range(env.horizon):
            x = obs["state"]
            obs, _, _, _, info = env.step(0.5 * (q_goal - x[:2]) - 0.05 * x[2:4])
        assert info["success"], f"seed {seed}: final distance {info['distance']:.3f}"


def test_top_camera_is_orthographic_and_centred_on_the_base():
    """The goal marker appears where the top-down orthographic projection puts it."""
    env = make("reacher")
    n = env.image_shape[0]
    for goal in ([-0.12, 0.1], [-0.05, -0.15], [0.0, 0.18]):  # away from the arm stretched along +x
        obs, _ = env.reset(seed=0, options={"goal": goal})
        img = obs["image"].astype(int)
        mask = (img[..., 0] > 150) & (img[..., 1] < 90) & (img[..., 2] < 90)
        rows, cols = np.nonzero(mask)
        assert len(rows) >= 4
        col = (goal[0] / VIEW_EXTENT + 0.5) * n - 0.5
        row = (0.5 - goal[1] / VIEW_EXTENT) * n - 0.5
        np.testing.assert_allclose([rows.mean(), cols.mean()], [row, col], atol=0.75)


def test_reacher_paper_has_the_papers_fixed_goal_and_start():
    env = make("reacher_paper")
    for seed in (0, 1, 2):
        obs, info = env.reset(seed=seed)
        np.testing.assert_array_equal(env.goal, [-0.1, -0.1])
        np.testing.assert_array_equal(info["goal"], [-0.1, -0.1])
        np.testing.assert_array_equal(obs["state"][:4], 0.0)  # q = (0, 0) at rest, whatever the seed
        np.testing.assert_allclose(obs["state"][4:6], [L1 + L2, 0.0], atol=1e-12)
    # The goal is drawn bottom left in the image (x to the right, y up).
    img = obs["image"].astype(int)
    n = env.image_shape[0]
    rows, cols = np.nonzero((img[..., 0] > 150) & (img[..., 1] < 90) & (img[..., 2] < 90))
    assert len(rows) >= 4
    assert rows.mean() > n / 2 + 5 and cols.mean() < n / 2 - 5
    col = (-0.1 / VIEW_EXTENT + 0.5) * n - 0.5
    row = (0.5 + 0.1 / VIEW_EXTENT) * n - 0.5
    np.testing.assert_allclose([rows.mean(), cols.mean()], [row, col], atol=0.75)
    # The random-goal reacher is unchanged: goals vary with the seed.
    plain = make("reacher", image_obs=False)
    goals = [plain.reset(seed=s)[1]["goal"] for s in (0, 1)]
    assert not np.allclose(goals[0], goals[1])


def test_reacher_paper_is_solvable_by_joint_pd():
    env = make("reacher_paper", image_obs=False)
    obs, _ = env.reset(seed=0)
    q_goal = planar_ik(env.goal, obs["state"][:2])
    for _ in range(env.horizon):
        x = obs["state"]
        obs, _, _, _, info = env.step(0.5 * (q_goal - x[:2]) - 0.05 * x[2:4])
    assert info["success"], f"final distance {info['distance']:.3f}"
