"""The MuJoCo Sawyer against the yaml facts, computed independently with 4x4 transforms.

Forward kinematics, kinetic energy (masses, centres of mass, full inertia tensors, armature),
gravity torques (finite differences of the potential energy), gravity compensation, torque clamping,
solvability of the reach box, and the camera image.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import mujoco
import numpy as np
import pytest

from solar_ros.envs import make

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sawyer_kinematics import FACTS, kinetic_energy, link_poses, potential_energy, random_configs  # noqa: E402


@pytest.fixture(scope="module")
def env():
    e = make("sawyer_reach")
    e.reset(seed=0)
    yield e
    e.close()


# ---- the model matches the facts -----------------------------------------------------------------

def test_hand_pose_matches_independent_forward_kinematics(env):
    env.reset(seed=0)
    for q in random_configs(8, seed=1):
        x = env.set_joint_state(q)
        hand = link_poses(q)["right_hand"]
        np.testing.assert_allclose(x[14:17], hand[:3, 3], atol=1e-9)
        np.testing.assert_allclose(env.hand_position, hand[:3, 3], atol=1e-9)
        np.testing.assert_allclose(env.hand_rotation, hand[:3, :3], atol=1e-9)
        for name in ("right_hand_camera", "head_camera"):
            site = env.model.site(name).id
            np.testing.assert_allclose(env.data.site_xpos[site], link_poses(q)[name][:3, 3], atol=1e-9)


def test_neutral_pose_puts_the_hand_in_front_pointing_down(env):
    x = env.set_joint_state(FACTS["neutral_pose"])
    np.testing.assert_allclose(x[14:17], [0.4496, 0.1603, 0.2158], atol=1e-3)
    assert env.hand_rotation[2, 2] < -0.99  # the hand's z axis points at the table


def test_hand_velocity_is_the_time_derivative_of_the_forward_kinematics(env):
    env.reset(seed=0)
    rng = np.random.default_rng(2)
    q, dq = random_configs(1, seed=3)[0], rng.normal(size=7)
    x = env.set_joint_state(q, dq)
    h = 1e-6
    fd = (link_poses(q + h * dq)["right_hand"][:3, 3] - link_poses(q - h * dq)["right_hand"][:3, 3]) / (2 * h)
    np.testing.assert_allclose(x[17:20], fd, atol=1e-7)
    np.testing.assert_allclose(x[7:14], dq)


def test_mass_matrix_matches_kinetic_energy_of_the_yaml_inertias(env):
    """0.5 dq' M(q) dq from MuJoCo equals the kinetic energy of the yaml's links (full inertia tensors)."""
    env.reset(seed=0)
    rng = np.random.default_rng(4)
    M = np.zeros((env.model.nv, env.model.nv))
    for q in random_configs(4, seed=5):
        env.set_joint_state(q)
        mujoco.mj_fullM(env.model, env.data, M)
        for _ in range(3):
            dq = rng.normal(size=7)
            np.testing.assert_allclose(0.5 * dq @ M @ dq, kinetic_energy(q, dq), rtol=1e-6)


def test_gravity_torques_match_the_potential_energy_gradient(env):
    """Gravity compensation (added to the actuators) = dV/dq; with it off the same torque is MuJoCo's bias."""
    env.reset(seed=0)
    h = 1e-6
    for q in random_configs(3, seed=6):
        grad = np.array([(potential_energy(q + h * e) - potential_energy(q - h * e)) / (2 * h) for e in np.eye(7)])
        env.gravity_compensation = True
        env.set_joint_state(q)
        env.data.ctrl[:] = 0.0
        mujoco.mj_forward(env.model, env.data)
        comp = env.data.qfrc_actuator.copy()
        # The shoulder joints can exceed their torque limit only in extreme poses; clamp like the model does.
        effort = env.limits["effort"]
        np.testing.assert_allclose(comp, np.clip(grad, -effort, effort), rtol=1e-5, atol=1e-6)
        env.gravity_compensation = False
        mujoco.mj_forward(env.model, env.data)
        np.testing.assert_allclose(env.data.qfrc_bias, grad, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(env.data.qfrc_actuator, 0.0, atol=1e-12)
    env.gravity_compensation = True


# ---- behaviour --------------------------------------------------------------------------------

def test_with_gravity_compensation_zero_torque_holds_the_start_pose():
    env = make("sawyer_reach", image_obs=False)
    obs, _ = env.reset(seed=3)
    start = obs["state"].copy()
    for _ in range(env.horizon):
        obs, *_ = env.step(np.zeros(7))
    assert np.max(np.abs(obs["state"][:7] - start[:7])) < 1e-3
    assert np.linalg.norm(obs["state"][14:17] - start[14:17]) < 1e-3


def test_without_gravity_compensation_the_arm_sags():
    env = make("sawyer_reach", image_obs=False, gravity_compensation=False)
    assert not env.gravity_compensation
    obs, _ = env.reset(seed=3)
    start = obs["state"].copy()
    for _ in range(20):
        obs, *_ = env.step(np.zeros(7))
    assert obs["state"][16] < start[16] - 0.05  # the hand drops
    assert np.max(np.abs(obs["state"][:7] - start[:7])) > 0.1


def test_commanded_torque_plus_gravity_compensation_is_clamped_to_the_limit(env):
    env.reset(seed=0)
    env.set_joint_state(FACTS["neutral_pose"])
    env.data.ctrl[:] = 0.0
    mujoco.mj_forward(env.model, env.data)
    gravity = env.data.qfrc_actuator.copy()
    effort = env.limits["effort"]
    assert np.all(np.abs(gravity) < effort) and np.abs(gravity[1]) > 5.0  # the shoulder carries the arm
    direction = np.where(gravity >= 0, 1.0, -1.0)
    # Pushing with gravity compensation: the sum saturates at the limit.
    env.data.ctrl[:] = direction * effort
    mujoco.mj_forward(env.model, env.data)
    np.testing.assert_allclose(env.data.qfrc_actuator, direction * effort, rtol=1e-12)
    # Pushing against it: command plus compensation, within the limit.
    env.data.ctrl[:] = -direction * effort
    mujoco.mj_forward(env.model, env.data)
    np.testing.assert_allclose(env.data.qfrc_actuator, gravity - direction * effort, rtol=1e-12)
    env.data.ctrl[:] = 0.0


def _ik(env, goal, q0, iters=200):
    """Damped-least-squares IK on MuJoCo's hand Jacobian, within the joint limits."""
    q = np.array(q0, dtype=float)
    jac = np.zeros((3, 7))
    for _ in range(iters):
        x = env.set_joint_state(q)
        err = goal - x[14:17]
        if np.linalg.norm(err) < 1e-5:
            break
        mujoco.mj_jacSite(env.model, env.data, jac, None, env.model.site("right_hand").id)
        step = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(3), err)
        # A little pull to the neutral pose keeps the solution near the start configuration.
        null = np.eye(7) - np.linalg.pinv(jac) @ jac
        q = np.clip(q + step + 0.05 * null @ (np.array(FACTS["neutral_pose"]) - q),
                    env.limits["lower"], env.limits["upper"])
    return q, np.linalg.norm(goal - env.set_joint_state(q)[14:17])


def test_every_corner_of_the_goal_box_is_reachable_and_pd_control_gets_there():
    """IK reaches each corner of the random-goal box; a joint PD controller then brings the hand there in T steps."""
    env = make("sawyer_reach", image_obs=False)
    # Gains for a 5 rad/s critically damped response of each joint alone (diagonal of the mass matrix at
    # the neutral pose), slow enough for a 20 Hz zero-order-hold loop.
    env.reset(seed=0)
    env.set_joint_state(FACTS["neutral_pose"])
    M = np.zeros((7, 7))
    mujoco.mj_fullM(env.model, env.data, M)
    omega = 5.0
    kp, kd = omega**2 * np.diag(M), 2.0 * omega * np.diag(M)
    for corner in itertools.product(*zip(env.goal_low, env.goal_high)):
        goal = np.array(corner)
        obs, _ = env.reset(seed=0, options={"goal": goal})
        q_goal, residual = _ik(env, goal, obs["state"][:7])
        assert residual < 1e-4, f"corner {corner} unreachable (residual {residual:.4f} m)"
        obs, _ = env.reset(seed=0, options={"goal": goal})
        for _ in range(env.horizon):
            x = obs["state"]
            obs, _, _, _, info = env.step(kp * (q_goal - x[:7]) - kd * x[7:14])
        assert np.max(np.abs(obs["state"][:7] - q_goal)) < 0.06
        assert info["success"], f"corner {corner}: final distance {info['distance']:.3f}"
        np.testing.assert_allclose(obs["state"][14:17], link_poses(obs["state"][:7])["right_hand"][:3, 3], atol=1e-9)


def test_unit_exploration_noise_moves_the_hand_moderately():
    """White torque noise of std action_scale: the hand moves centimetres to decimetres, joints stay within speed
    limits."""
    env = make("sawyer_reach", image_obs=False)
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        start = obs["state"][14:17].copy()
        rng = np.random.default_rng(seed)
        peak = np.zeros(7)
        for _ in range(env.horizon):
            obs, *_ = env.step(rng.normal(size=7) * env.action_scale)
            peak = np.maximum(peak, np.abs(obs["state"][7:14]))
        assert 0.03 < np.linalg.norm(obs["state"][14:17] - start) < 0.4
        assert np.all(peak < env.limits["velocity"])


def test_camera_sees_the_arm_move(env):
    env.reset(seed=0)
    a = env.render().astype(int)
    env.set_joint_state(np.array(FACTS["neutral_pose"]) + np.array([0.6, 0.4, 0, -0.5, 0, 0, 0]))
    b = env.render().astype(int)
    red = lambda im: (im[..., 0] > 120) & (im[..., 1] < 60) & (im[..., 2] < 60)  # noqa: E731  (the red links)
    assert red(a).sum() > 20 and red(b).sum() > 20
    assert (red(a) ^ red(b)).sum() > 10


def test_the_wide_start_puts_the_hand_anywhere_in_the_goal_box_at_rest():
    env = make("sawyer_reach", image_obs=False)
    low, high = np.array(env.goal_low), np.array(env.goal_high)
    hands, joints = [], []
    for seed in range(120):
        obs, _ = env.reset(seed=seed, options={"wide_start": True})
        hands.append(obs["state"][14:17])
        joints.append(obs["state"][:7])
        assert np.all(obs["state"][7:14] == 0.0)
    hands, joints = np.array(hands), np.array(joints)
    tol = env.wide_start_tolerance
    assert np.all(hands >= low - tol) and np.all(hands <= high + tol)
    assert np.all(joints >= env.limits["lower"]) and np.all(joints <= env.limits["upper"])
    # uniform over the box: every half of every axis holds about half of the starts
    for axis in range(3):
        upper_half = np.mean(hands[:, axis] > (low[axis] + high[axis]) / 2)
        assert 0.3 < upper_half < 0.7, (axis, upper_half)
    # the drawn point is reached: the same draws as the env's, replayed here
    rng = np.random.default_rng(5)
    env.reset(seed=0)
    env._reset_physics_wide(rng)
    replay = np.random.default_rng(5)
    target = replay.uniform(low, high)
    assert np.linalg.norm(env.hand_position - target) < env.wide_start_tolerance


# ---- scene options: the camera and the hand marker -----------------------------------------------

def _pixel(env, point):
    """Where the ``scene`` camera's image shows a base-frame point (column, row; pinhole model)."""
    m, d = env.model, env.data
    cam = m.camera("scene").id
    rel = d.cam_xmat[cam].reshape(3, 3).T @ (np.asarray(point) - d.cam_xpos[cam])  # camera frame, looks along -z
    size = env.image_shape[0]
    f = 0.5 * size / np.tan(0.5 * np.radians(m.cam_fovy[cam]))
    return np.array([0.5 * size + f * rel[0] / -rel[2], 0.5 * size - f * rel[1] / -rel[2]])


def test_the_yellow_hand_marker_shows_where_the_hand_is():
    radius = 0.04
    env = make("sawyer_reach", image_size=128, hand_marker_radius=radius)
    env.reset(seed=0)
    geom = env.model.geom("hand_marker")
    assert geom.contype[0] == 0 and geom.conaffinity[0] == 0  # seen, never touched
    yellow = lambda im: (im[..., 0] > 120) & (im[..., 1] > 100) & (im[..., 2] < 40)  # noqa: E731
    for offset in ([0, 0, 0, 0, 0, 0, 0], [0.5, 0.3, 0, -0.4, 0, 0, 0], [-0.3, 0.2, 0.3, 0.2, 0, 0, 0]):
        env.set_joint_state(np.array(FACTS["neutral_pose"]) + np.array(offset))
        centre = env.hand_position + env.hand_rotation[:, 2] * radius  # on the flange, along the tool axis
        assert np.allclose(env.data.geom_xpos[geom.id], centre, atol=1e-9)
        mask = yellow(env.render())
        assert mask.sum() >= 5
        rows, cols = np.nonzero(mask)
        # the visible part of the ball (the hand hides some of it) is off its centre's image by less than
        # its radius in the image (4-6 px here)
        radius_px = np.linalg.norm(_pixel(env, centre + radius * env.data.cam_xmat[env.model.camera("scene").id]
                                          .reshape(3, 3)[:, 0]) - _pixel(env, centre))
        assert np.linalg.norm(np.array([cols.mean(), rows.mean()]) - _pixel(env, centre)) < radius_px
    env.close()
    # without it (the default) the model has no such geom, and the same motion is unchanged
    plain = make("sawyer_reach", image_obs=False)
    with pytest.raises(KeyError):
        plain.model.geom("hand_marker")
    plain.close()
    with pytest.raises(ValueError):
        make("sawyer_reach", hand_marker_radius=-0.01)


def test_the_scene_camera_can_be_placed():
    from solar_ros.envs.sawyer_model import SceneCamera
    cam = SceneCamera(pos=(1.5, -0.7, 1.0), lookat=(0.55, 0.15, 0.125), fovy=45.0)
    env = make("sawyer_reach", camera=cam)
    env.reset(seed=0)
    m, d = env.model, env.data
    i = m.camera("scene").id
    assert np.allclose(d.cam_xpos[i], cam.pos) and np.isclose(m.cam_fovy[i], 45.0)
    # it looks at lookat: the point projects to the image centre
    assert np.allclose(_pixel(env, cam.lookat), [32, 32], atol=1e-6)
    env.close()
    with pytest.raises(ValueError, match="SceneCamera"):
        make("sawyer_reach", camera=(1.5, -0.7, 1.0))
