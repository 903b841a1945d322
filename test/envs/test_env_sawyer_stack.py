"""sawyer_stack: geometry of the starts and the goal, contacts, the success box, the pose cost on 3 block
points from kinematics, solvability by a scripted controller, determinism and the images."""
from __future__ import annotations

import sys
from pathlib import Path

import mujoco
import numpy as np
import pytest

from solar_ros.algos.probes import state_groups
from solar_ros.envs import TASKS, make
from solar_ros.envs.sawyer_model import TABLE_TOP, build_mjcf
from solar_ros.envs.sawyer_stack import (
    BLOCK_POINTS,
    STACKED_ROTATION,
    STACKING,
    START_BLOCK_POSITIONS,
    START_POSES,
    TABLE_CLEARANCE,
    SawyerStackEnv,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sawyer_kinematics import link_poses, random_configs  # noqa: E402

HELD_HALF = np.array(STACKING.held_half_size)
BASE_HALF = np.array(STACKING.base_half_size)
BASE_CENTRE = np.array([0.60, 0.05, TABLE_TOP + BASE_HALF[2]])
GOAL = BASE_CENTRE + [0.0, 0.0, BASE_HALF[2] + HELD_HALF[2]]
"""The stacked centre."""
GOAL_POINTS = np.r_[GOAL, GOAL + [0.0, 0.05, 0.0], GOAL + [0.05, 0.0, 0.0]]
"""The stacked pose's 3 block points, written out: the block's x axis lies along the world's y, its y axis along x."""
SIDE_FACE_X = BASE_CENTRE[0] - BASE_HALF[0] - HELD_HALF[0]
"""The held block's centre cannot pass this x (m) at table height: its face touches the base's side there."""


@pytest.fixture(scope="module")
def env():
    e = make("sawyer_stack", image_obs=False)
    e.reset(seed=0)
    yield e
    e.close()


def _down_rotation(env) -> np.ndarray:
    """The hand's orientation at the starts (pointing straight down), read from start 0's joint angles."""
    env.set_joint_state(START_POSES[0])
    return env.hand_rotation


def _osc(env, p_des, R_des, omega=6.0, omega_r=8.0):
    """Operational-space control on the true state: the block's centre to p_des, the hand to R_des.

    Block acceleration omega^2 (p_des - p) - 2 omega v (critically damped), the same for the hand's
    orientation, mapped to torques with the operational-space inertia; joint damping in the null space.
    """
    m, d = env.model, env.data
    jp, jr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
    mujoco.mj_jacSite(m, d, jp, jr, m.site("held_block").id)
    J = np.r_[jp, jr][:, :7]
    M = np.zeros((m.nv, m.nv))
    mujoco.mj_fullM(m, d, M)
    M = M[:7, :7]
    x = env.state
    p, v, dq = x[14:17], x[23:26], x[7:14]
    R = env.hand_rotation
    rot_err = 0.5 * sum(np.cross(R[:, i], R_des[:, i]) for i in range(3))
    acc = np.r_[omega**2 * (p_des - p) - 2 * omega * v, omega_r**2 * rot_err - 2 * omega_r * (jr[:, :7] @ dq)]
    Minv = np.linalg.inv(M)
    Lam = np.linalg.inv(J @ Minv @ J.T + 1e-6 * np.eye(6))
    null = np.eye(7) - J.T @ (Minv @ J.T @ Lam).T
    return J.T @ Lam @ acc + null @ (M @ (-2.0 * dq))


def _min_jerk(a, b, s):
    s = float(np.clip(s, 0.0, 1.0))
    return np.asarray(a) + (np.asarray(b) - np.asarray(a)) * (10 * s**3 - 15 * s**4 + 6 * s**5)


def _drive(env, targets, R_des):
    """Step the episode with the operational-space controller through the targets; returns states and infos."""
    states, infos, peak = [], [], 0.0
    for p_des in targets:
        u = _osc(env, np.asarray(p_des), R_des)
        peak = max(peak, float(np.max(np.abs(u) / env.action_space.high)))
        obs, _, _, _, info = env.step(u)
        states.append(obs["state"])
        infos.append(info)
    return np.array(states), infos, peak


def _contact_pairs(env) -> set[tuple[str, str]]:
    m, d = env.model, env.data
    return {tuple(sorted((m.geom(c.geom1).name, m.geom(c.geom2).name))) for c in d.contact[:d.ncon]}


# ---- names, starts, goal ----------------------------------------------------------------------------

def test_task_names_pick_the_start():
    for name, start in (("sawyer_stack", 0), ("sawyer_stack_0", 0), ("sawyer_stack_1", 1), ("sawyer_stack_2", 2)):
        e = make(name, image_obs=False)
        assert isinstance(e, SawyerStackEnv) and e.start == start
        np.testing.assert_array_equal(e.start_pose, START_POSES[start])
    assert make("sawyer_stack_2", start=1, image_obs=False).start == 1  # the keyword wins
    for bad in (3, -1, 1.0, "1", True):
        with pytest.raises(ValueError):
            make("sawyer_stack", start=bad, image_obs=False)
    assert TASKS["sawyer_stack"].success_threshold == 0.01


def test_model_without_stacking_is_unchanged():
    """The stacking scene is an addition: the default model has no gripper, blocks or second camera."""
    default = build_mjcf()
    for word in ("right_gripper", "held_block", "base_block", 'name="stack"'):
        assert word not in default
    assert '<body name="target" mocap="true"' in default


def test_start_poses_put_the_block_where_documented(env):
    env.reset(seed=0)
    R_down = _down_rotation(env)
    for start, (q, pos) in enumerate(zip(START_POSES, START_BLOCK_POSITIONS)):
        x = env.set_joint_state(q)
        np.testing.assert_allclose(x[14:17], pos, atol=1e-3, err_msg=f"start {start}")
        np.testing.assert_allclose(env.hand_rotation, R_down, atol=2e-3)  # the hand points straight down
        assert env.hand_rotation[2, 2] < -0.999
        assert np.all(q >= env.limits["lower"]) and np.all(q <= env.limits["upper"])
    # Starts 0 and 1: in the air, well above the base block, at different arm poses.
    for start in (0, 1):
        assert START_BLOCK_POSITIONS[start][2] - HELD_HALF[2] > TABLE_TOP + 0.2
    assert np.max(np.abs(np.subtract(START_POSES[0], START_POSES[1]))) > 0.4
    # Start 2: resting just above the table, beside the base (a gap between the blocks' faces) ...
    p2 = np.array(START_BLOCK_POSITIONS[2])
    assert p2[2] - HELD_HALF[2] == pytest.approx(TABLE_TOP + TABLE_CLEARANCE, abs=1e-9)
    assert 0.03 < SIDE_FACE_X - p2[0] < 0.1 and abs(p2[1] - BASE_CENTRE[1]) < 0.02
    # ... and the straight line to the goal runs into the base: at the side face the block is below its top.
    s = (SIDE_FACE_X - p2[0]) / (GOAL[0] - p2[0])
    z_at_face = p2[2] + s * (GOAL[2] - p2[2])
    assert z_at_face - HELD_HALF[2] < TABLE_TOP + 2 * BASE_HALF[2] - 0.01


@pytest.mark.parametrize("start", [0, 1, 2])
def test_reset_is_the_start_plus_small_noise_without_contacts(start):
    e = make("sawyer_stack", start=start, image_obs=False)
    for seed in range(4):
        obs, info = e.reset(seed=seed)
        x = obs["state"]
        assert np.max(np.abs(x[:7] - START_POSES[start])) < 0.05 and np.all(x[7:] [:7] == 0)
        assert np.linalg.norm(x[14:17] - START_BLOCK_POSITIONS[start]) < 0.05
        assert not info["success"] and e.data.ncon == 0
        if start == 2:  # resting 2 mm above the table whatever the noise
            R = e.data.geom_xmat[e.model.geom("held_block").id].reshape(3, 3)
            lowest = x[16] - np.abs(R[2]) @ HELD_HALF
            assert lowest == pytest.approx(TABLE_TOP + TABLE_CLEARANCE, abs=1e-5)
    e.close()


def test_goal_is_the_stacked_pose_and_fixed(env):
    for seed in range(3):
        _, info = env.reset(seed=seed)
        np.testing.assert_allclose(env.goal, GOAL_POINTS, atol=1e-12)
        np.testing.assert_allclose(info["goal"], GOAL_POINTS, atol=1e-12)
        np.testing.assert_allclose(env.goal_centre, GOAL, atol=1e-12)
        np.testing.assert_allclose(env.base_block_position, BASE_CENTRE, atol=1e-12)
    np.testing.assert_allclose(env.stacked_centre, STACKING.stacked_pos)
    np.testing.assert_allclose(env.stacked_goal, GOAL_POINTS, atol=1e-12)
    assert env.goal_dim == 9
    # A goal passed in is a stacked centre or the stacked pose's 9-vector; the base block goes under it.
    other = GOAL + [-0.05, 0.04, 0.0]
    other_points = GOAL_POINTS + np.tile([-0.05, 0.04, 0.0], 3)
    for given in (other, other_points, list(other)):
        env.reset(seed=0, options={"goal": given})
        np.testing.assert_allclose(env.goal, other_points, atol=1e-12)
        np.testing.assert_allclose(env.base_block_position, other - [0, 0, BASE_HALF[2] + HELD_HALF[2]], atol=1e-12)
    fixed = make("sawyer_stack", goal=other, image_obs=False)
    fixed.reset(seed=1)
    np.testing.assert_allclose(fixed.goal, other_points, atol=1e-12)
    np.testing.assert_allclose(fixed.cost_model(goal=GOAL).terms[0].target, GOAL_POINTS, atol=1e-12)
    fixed.close()
    for bad in (GOAL + [0, 0, 0.01], GOAL + [0.5, 0, 0], GOAL + [0, -0.4, 0],
                GOAL_POINTS + np.tile([0, 0, 0.01], 3),  # every point too high
                GOAL_POINTS + np.r_[0, 0, 0, 0, 0, 0.01, 0, 0, 0],  # the right centre, tilted
                np.r_[GOAL, GOAL + [0.05, 0, 0], GOAL + [0, 0.05, 0]]):  # turned 90 degrees and mirrored
        with pytest.raises(ValueError, match="stacked pose"):
            env.reset(seed=0, options={"goal": bad})
    for bad in (GOAL[:2], np.r_[GOAL, 0.0], np.full(3, np.nan), np.full(9, np.inf)):
        with pytest.raises(ValueError):
            env.reset(seed=0, options={"goal": bad})
    env.reset(seed=0)


def test_stacked_orientation_is_the_starts_and_upright(env):
    """The stacked pose's block orientation is a proper rotation, upright and axis-aligned, and the block's
    orientation at every start (the hand pointing down): reaching it needs no turn about the vertical."""
    R = np.array(STACKED_ROTATION)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    assert np.all(np.isin(R, (-1.0, 0.0, 1.0)))
    env.reset(seed=0)
    for q in START_POSES:
        env.set_joint_state(q)
        np.testing.assert_allclose(env.data.geom_xmat[env.model.geom("held_block").id].reshape(3, 3), R, atol=2e-3)
    np.testing.assert_allclose(BLOCK_POINTS, [[0, 0, 0], [2 * HELD_HALF[0], 0, 0], [0, 2 * HELD_HALF[1], 0]])
    env.reset(seed=0)


@pytest.mark.parametrize("start", [0, 2])
def test_zero_torque_holds_the_start_and_gravity_compensation_covers_the_gripper(start):
    e = make("sawyer_stack", start=start, image_obs=False)
    obs, _ = e.reset(seed=1)
    block = obs["state"][14:17].copy()
    for _ in range(e.horizon):
        obs, *_ = e.step(np.zeros(7))
    assert np.linalg.norm(obs["state"][14:17] - block) < 1e-3
    gripper = e.model.body("right_gripper").id
    assert e.gravity_compensation and e.model.body_gravcomp[gripper] == 1.0
    e.gravity_compensation = False
    assert e.model.body_gravcomp[gripper] == 0.0
    off = make("sawyer_stack", start=start, image_obs=False, gravity_compensation=False)
    assert not off.gravity_compensation and off.model.body_gravcomp[gripper] == 0.0


# ---- the cost and the state from kinematics ----------------------------------------------------------

def _points_from_kinematics(q, held_offset) -> np.ndarray:
    """The 3 block points (9) by independent forward kinematics from the yaml: hand pose * (offset + point)."""
    hand = link_poses(q)["right_hand"]
    local = np.asarray(held_offset) + np.array([[0, 0, 0], [0.05, 0, 0], [0, 0.05, 0]])
    return (local @ hand[:3, :3].T + hand[:3, 3]).ravel()


def test_block_points_are_the_hand_pose_times_fixed_offsets(env):
    """On the real robot the 3 block points (the cost's input) are forward kinematics times constants."""
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    assert env.state_dim == 32 and env.ee_pos_idx == tuple(range(14, 23)) and env.ee_vel_idx == tuple(range(23, 32))
    for q in random_configs(6, seed=11):
        dq = rng.normal(size=7)
        x = env.set_joint_state(q, dq)
        points = _points_from_kinematics(q, env.held_offset)
        np.testing.assert_allclose(x[14:23], points, atol=1e-9)
        np.testing.assert_allclose(env.block_points, points.reshape(3, 3), atol=1e-9)
        np.testing.assert_allclose(env.block_points_from_hand(env.hand_position, env.hand_rotation).ravel(), points,
                                   atol=1e-9)
        np.testing.assert_allclose(env.block_position_from_hand(env.hand_position, env.hand_rotation), points[:3],
                                   atol=1e-9)
        # The points keep their distances (a rigid body) and their velocities are d/dt of the positions.
        p = points.reshape(3, 3)
        np.testing.assert_allclose(np.linalg.norm(p[1:] - p[0], axis=1), 0.05, atol=1e-12)
        assert abs(np.dot(p[1] - p[0], p[2] - p[0])) < 1e-12
        h = 1e-6
        fd = (_points_from_kinematics(q + h * dq, env.held_offset)
              - _points_from_kinematics(q - h * dq, env.held_offset)) / (2 * h)
        np.testing.assert_allclose(x[23:32], fd, atol=1e-6)
    np.testing.assert_allclose(env.held_offset, [0.0, 0.0, 0.06])


def test_probe_groups_see_the_points_as_the_end_effector(env):
    groups = state_groups(env.state_names, env.ee_pos_idx)
    assert groups["ee_position"] == list(range(14, 23))
    assert groups["joint_angles"] == list(range(7))
    assert groups["velocities"] == list(range(7, 14)) + list(range(23, 32))


def test_cost_is_the_reach_form_on_the_three_block_points(env):
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(5):
        u = rng.normal(size=7) * env.action_scale
        x = env.state
        obs, reward, _, _, info = env.step(u)
        points = _points_from_kinematics(x[:7], env.held_offset).reshape(3, 3)
        d2 = np.sum((points - GOAL_POINTS.reshape(3, 3)) ** 2)  # summed squared distances of the 3 points
        expected = 0.5 * 10.0 * d2 + 1.0 * np.sqrt(1e-5 + d2) + 0.5 * 0.01 * np.sum((u / env.action_scale) ** 2)
        assert info["cost"] == pytest.approx(expected, rel=1e-9) and reward == -info["cost"]
        after = _points_from_kinematics(obs["state"][:7], env.held_offset).reshape(3, 3)
        distance = np.sqrt(np.sum(np.linalg.norm(after - GOAL_POINTS.reshape(3, 3), axis=1) ** 2))
        assert info["distance"] == pytest.approx(distance, rel=1e-9)


def _state_with_block(env, centre, R) -> np.ndarray:
    """A state whose block has centre ``centre`` and orientation ``R`` (block to base frame), at rest."""
    x = env.state.copy()
    x[14:23] = (np.asarray(centre) + np.array(BLOCK_POINTS) @ R.T).ravel()
    x[23:32] = 0.0
    return x


def _rot(axis, angle) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


@pytest.mark.parametrize("axis", [(1, 0, 0), (0, 1, 0), (1, 1, 0), (0, 0, 1)])
def test_a_tilted_or_turned_block_at_the_stacked_centre_costs_more(env, axis):
    """The cost sees the pose: at the stacked centre, a block tilted (or turned about the vertical) costs
    more than the upright one, more the larger the angle; success, on the centre only, is unchanged."""
    env.reset(seed=0)
    R0 = np.array(STACKED_ROTATION)
    cost = env.cost_model()
    u = np.zeros((1, 7))
    upright = _state_with_block(env, GOAL, R0)
    assert env.distance(upright) == pytest.approx(0.0, abs=1e-12)
    previous = cost.eval(upright[None], u).l[0]
    for degrees in (5, 15, 29, 45):
        a = np.radians(degrees)
        tilted = _state_with_block(env, GOAL, _rot(axis, a) @ R0)
        now = cost.eval(tilted[None], u).l[0]
        assert now > previous
        previous = now
        assert env.is_success(tilted) and env.is_success(upright)
        # D lies between the chord 5 cm * sqrt(2 - 2 cos a) and sqrt(2) times it (both points moving by it)
        chord = 0.05 * np.sqrt(2 - 2 * np.cos(a))
        assert chord - 1e-12 <= env.distance(tilted) <= np.sqrt(2) * chord + 1e-12
    # The case: set down tilted by 29 degrees about an edge, the centre rests 11 mm high. That fails
    # the box (as before), and now the cost sees more than the centre's 11 mm.
    resting = _state_with_block(env, GOAL + [0, 0, 0.011], _rot((1, 0, 0), np.radians(29)) @ R0)
    assert not env.is_success(resting)
    assert env.distance(resting) > 0.015
    assert cost.eval(resting[None], u).l[0] > cost.eval(_state_with_block(env, GOAL + [0, 0, 0.011], R0)[None], u).l[0]


@pytest.mark.parametrize("axis", [(1, 0, 0), (0, 1, 0), (1, 1, 0)])
def test_tilt_is_the_blocks_lean_from_upright_and_ignores_a_turn(env, axis):
    env.reset(seed=0)
    R0 = np.array(STACKED_ROTATION)
    assert env.tilt(_state_with_block(env, GOAL, R0)) == pytest.approx(0.0, abs=1e-6)
    assert env.tilt(_state_with_block(env, GOAL, _rot((0, 0, 1), np.radians(30)) @ R0)) == pytest.approx(0.0, abs=1e-6)
    states = np.stack([_state_with_block(env, GOAL, _rot(axis, np.radians(d)) @ R0) for d in (5, 24, 60)])
    np.testing.assert_allclose(env.tilt(states), [5, 24, 60], atol=1e-6)
    np.testing.assert_allclose(env.tilt(states[None]), [[5, 24, 60]], atol=1e-6)  # any leading dimensions
    with pytest.raises(ValueError, match="dimension 32"):
        env.tilt(np.zeros(9))


# ---- success ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("offset, success", [
    ((0.0, 0.0, 0.0), True),
    ((0.014, 0.0, 0.0), True),
    ((0.0, -0.014, 0.009), True),
    ((0.0099, 0.0099, -0.0099), True),  # 1.4 cm horizontally, 0.99 cm vertically: inside the box
    ((0.016, 0.0, 0.0), False),
    ((0.011, 0.011, 0.0), False),  # 1.56 cm horizontally
    ((0.0, 0.0, 0.011), False),
    ((0.0, 0.0, -0.011), False),
])
def test_success_is_the_box_around_the_stacked_pose(env, offset, success):
    env.reset(seed=0)
    x = _state_with_block(env, GOAL + np.asarray(offset), np.array(STACKED_ROTATION))
    assert env.is_success(x) is success
    if env.distance(x) < env.success_threshold:
        assert success  # below success_threshold always counts
    batch = np.stack([x, x])
    np.testing.assert_array_equal(env.is_success(batch), [success, success])
    # Success is on the centre only: the block's orientation does not change it.
    turned = _state_with_block(env, GOAL + np.asarray(offset), _rot((1, 1, 0), 0.5) @ np.array(STACKED_ROTATION))
    assert env.is_success(turned) is success
    assert env.is_success(turned, goal=GOAL) is success and env.is_success(turned, goal=GOAL_POINTS) is success


# ---- contacts -----------------------------------------------------------------------------------------

def test_block_rests_on_the_base_block():
    """Pushed down onto the base from 3 cm above the goal (target 3 cm below it), the block stops on top."""
    e = make("sawyer_stack", image_obs=False)
    e.reset(seed=0)
    R = _down_rotation(e)
    e.reset(seed=0)
    above = GOAL + [0.0, 0.0, 0.03]
    states, _, _ = _drive(e, [_min_jerk(e.state[14:17], above, (k + 1) / 25) for k in range(35)], R)
    np.testing.assert_allclose(states[-1][14:17], above, atol=0.01)
    states, infos, _ = _drive(e, [GOAL - [0.0, 0.0, 0.03]] * 15, R)
    block = states[-1][14:17]
    assert block[2] == pytest.approx(GOAL[2], abs=0.002)  # on top, not in the base block
    assert np.all(np.abs(block[:2] - BASE_CENTRE[:2]) < BASE_HALF[:2])
    assert ("base_block", "held_block") in _contact_pairs(e)
    assert infos[-1]["success"]


def test_block_is_blocked_by_the_side_of_the_base_and_rests_on_the_table():
    """From start 2, pushed along the table into the base's side: it stops at the side face."""
    e = make("sawyer_stack_2", image_obs=False)
    e.reset(seed=0)
    R = _down_rotation(e)
    obs, _ = e.reset(seed=0)
    p0 = obs["state"][14:17].copy()
    # Pressed onto the table first: it rests on it.
    states, _, _ = _drive(e, [p0 - [0.0, 0.0, 0.02]] * 10, R)
    assert states[-1][16] == pytest.approx(TABLE_TOP + HELD_HALF[2], abs=0.002)
    assert ("held_block", "table") in _contact_pairs(e)
    # Then pushed 10 cm past the base's centre at table height.
    target = np.array([BASE_CENTRE[0] + 0.1, p0[1], TABLE_TOP + HELD_HALF[2] - 0.01])
    states, infos, _ = _drive(e, [target] * 30, R)
    assert np.max(states[:, 14]) < SIDE_FACE_X + 0.004
    assert states[-1][14] > SIDE_FACE_X - 0.01  # it did get there
    assert np.max(states[:, 16]) < TABLE_TOP + 2 * BASE_HALF[2]  # and did not climb onto the base
    assert ("base_block", "held_block") in _contact_pairs(e)
    assert not infos[-1]["success"]
    # The held block never touches the arm or the gripper.
    for a, b in _contact_pairs(e):
        assert "held_block" not in (a, b) or {a, b} & {"base_block", "table"}


# ---- solvability ------------------------------------------------------------------------------------

@pytest.mark.parametrize("start", [0, 1, 2])
def test_scripted_controller_stacks_from_each_start(start):
    """Operational-space control on the true state, within the torque limits: above the base, then down
    onto it; from start 2 the block is lifted 7 cm first."""
    e = make("sawyer_stack", start=start, image_obs=False)
    e.reset(seed=3)
    R = _down_rotation(e)
    obs, _ = e.reset(seed=3)
    p0, above = obs["state"][14:17].copy(), GOAL + [0.0, 0.0, 0.03]
    legs = [(p0, above, 28), (above, GOAL, 10)]
    if start == 2:
        lifted = p0 + [0.0, 0.0, 0.07]
        legs = [(p0, lifted, 10), (lifted, above, 18), (above, GOAL, 10)]
    targets = [_min_jerk(a, b, (k + 1) / n) for a, b, n in legs for k in range(n)]
    targets += [GOAL] * (e.horizon - len(targets))
    states, infos, peak = _drive(e, targets, R)
    assert infos[-1]["success"], f"start {start}: final error {states[-1][14:17] - GOAL}"
    # The pose too: set down upright and not turned, the points around the centre are where the goal's are.
    P, G = states[-1][14:23].reshape(3, 3), GOAL_POINTS.reshape(3, 3)
    assert np.max(np.linalg.norm((P - P[0]) - (G - G[0]), axis=1)) < 0.004  # 4.6 degrees on arms of 5 cm
    assert peak < 1.0  # never clipped
    assert e.t == e.horizon


def test_moving_straight_to_the_goal_from_start_2_is_blocked():
    e = make("sawyer_stack_2", image_obs=False)
    e.reset(seed=3)
    R = _down_rotation(e)
    obs, _ = e.reset(seed=3)
    p0 = obs["state"][14:17].copy()
    states, infos, _ = _drive(e, [_min_jerk(p0, GOAL, (k + 1) / 38) for k in range(e.horizon)], R)
    assert np.max(states[:, 14]) < SIDE_FACE_X + 0.004
    assert not infos[-1]["success"] and infos[-1]["distance"] > 0.04


# ---- determinism and images -------------------------------------------------------------------------

def test_same_seed_same_images_and_states():
    a, b = make("sawyer_stack_2"), make("sawyer_stack_2")
    rng = np.random.default_rng(5)
    actions = rng.normal(size=(8, 7)) * a.action_scale
    runs = []
    for e, seed in ((a, 7), (b, 7), (a, 8)):
        obs, _ = e.reset(seed=seed)
        states, images = [obs["state"]], [obs["image"]]
        for u in actions:
            obs, *_ = e.step(u)
            states.append(obs["state"])
            images.append(obs["image"])
        runs.append((np.array(states), np.array(images)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not np.allclose(runs[0][0], runs[2][0])
    a.close()
    b.close()


def _yellow(img):
    return (img[..., 0] > 150) & (img[..., 1] > 120) & (img[..., 2] < 80)


def _blue(img):
    return (img[..., 2] > 150) & (img[..., 0] < 90) & (img[..., 1] < 110)


@pytest.mark.parametrize("start", [0, 1, 2])
def test_images_show_both_blocks(start):
    e = make("sawyer_stack", start=start)
    obs, _ = e.reset(seed=0)
    img = obs["image"].astype(int)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert _yellow(img).sum() >= 8, "held block not visible"
    assert _blue(img).sum() >= 15, "base block not visible"
    rows_y = np.nonzero(_yellow(img))[0]
    rows_b = np.nonzero(_blue(img))[0]
    if start in (0, 1):
        assert rows_y.mean() < rows_b.mean() - 5  # the held block is seen above the base
    # Stacked: the yellow block sits right on top of the blue one.
    R = _down_rotation(e)
    e.reset(seed=0)
    above = GOAL + [0.0, 0.0, 0.03]
    targets = [_min_jerk(e.state[14:17], above, (k + 1) / 25) for k in range(28)] + [GOAL] * 12
    _drive(e, targets, R)
    img = e.render().astype(int)
    ys, xs = np.nonzero(_yellow(img))
    yb, xb = np.nonzero(_blue(img))
    assert len(ys) >= 8 and abs(xs.mean() - xb.mean()) < 4 and 0 < yb.mean() - ys.mean() < 8
    e.close()


def test_generator_script_writes_the_stacking_model(tmp_path):
    import subprocess

    from solar_ros.envs.sawyer_model import StackingScene

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "sawyer_stack.xml"
    result = subprocess.run([sys.executable, str(repo / "scripts" / "gen_sawyer_models.py"), "--urdf",
                             str(tmp_path / "sawyer.urdf"), "--stack-mjcf", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == build_mjcf(stacking=StackingScene())
    assert (tmp_path / "sawyer.urdf").read_text() == (repo / "urdf" / "sawyer.urdf").read_text()


def test_the_wide_start_holds_the_block_upright_anywhere_above_the_goal_box_at_rest():
    env = make("sawyer_stack_1", image_obs=False)
    (x0, y0), (x1, y1), (z0, z1) = env.goal_low, env.goal_high, env.wide_start_z
    low, high, tol = np.array([x0, y0, z0]), np.array([x1, y1, z1]), env.wide_start_tolerance
    centres = []
    for seed in range(40):
        obs, info = env.reset(seed=seed, options={"wide_start": True})
        np.testing.assert_array_equal(info["goal"], env.stacked_goal)  # the task's goal, its base block below it
        np.testing.assert_allclose(env.base_block_position, env.stacked_centre - [0, 0, 0.05], atol=1e-9)
        centre = obs["state"][14:17]
        assert np.all(centre >= low - tol) and np.all(centre <= high + tol)
        assert np.all(obs["state"][7:14] == 0.0)
        # upright in the stacked orientation: the two side points sit where the stacked pose has them
        np.testing.assert_allclose(obs["state"][14:23], env.goal_points(centre), atol=2 * tol)
        centres.append(centre)
    assert np.array(centres).std(0).min() > 0.05
    for _ in range(10):  # at rest and clear of the table and the base block: gravity compensation holds it
        obs, *_ = env.step(np.zeros(7))
    np.testing.assert_allclose(obs["state"][14:17], centres[-1], atol=1e-6)
