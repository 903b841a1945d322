"""sawyer_push: the scene (and the other Sawyer models left unchanged), the start and the wide start, contacts
of the mug with the table and the gripper, the success rule, goals, determinism, the images, and solvability by a
scripted pushing controller."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import mujoco
import numpy as np
import pytest

from solar_ros.algos.common import rollout
from solar_ros.algos.probes import state_groups
from solar_ros.algos.solar.loop import random_actor
from solar_ros.envs import TASKS, make
from solar_ros.envs.sawyer_model import TABLE_TOP, PushingScene, StackingScene, build_mjcf
from solar_ros.envs.sawyer_push import (
    DOWN_ROTATION,
    MUG_START,
    PUSHING,
    START_POSE,
    START_TIP_POSITION,
    SawyerPushEnv,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sawyer_kinematics import link_poses, random_configs  # noqa: E402

MUG_R, MUG_H = PUSHING.mug_radius, 2 * PUSHING.mug_half_height
REST_Z = TABLE_TOP + MUG_H / 2
GOAL = np.array([0.65, 0.05, REST_Z])
"""The default goal: the mug standing centred on the coaster."""
TOUCH = MUG_R + PUSHING.finger_radius
"""Distance (m) of the fingers' axis from the mug's axis when they touch."""


@pytest.fixture(scope="module")
def env():
    e = make("sawyer_push", image_obs=False)
    e.reset(seed=0)
    yield e
    e.close()


def _tilt(env) -> float:
    """How far the mug's axis leans from the vertical (degrees), from the simulation (for checks, not control)."""
    return float(np.degrees(np.arccos(np.clip(env.mug_rotation[2, 2], -1.0, 1.0))))


def _contact_pairs(env) -> set[tuple[str, str]]:
    m, d = env.model, env.data
    return {tuple(sorted((m.geom(c.geom1).name, m.geom(c.geom2).name))) for c in d.contact[:d.ncon]}


def _osc(env, x, p_des, omega=8.0, omega_r=10.0):
    """Operational-space PD control of the gripper tip to ``p_des`` with the hand pointing straight down.

    Uses the state (tip position and velocity, joint velocities), the hand's orientation (forward kinematics) and
    the arm's Jacobian and mass matrix at the current joint angles (the robot's model), nothing of the mug beyond
    the state. Tip acceleration omega^2 (p_des - p) - 2 omega v, the same for the orientation, mapped to torques
    with the operational-space inertia; joint damping in the null space.
    """
    m, d = env.model, env.data
    jp, jr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
    mujoco.mj_jacSite(m, d, jp, jr, m.site("gripper_tip").id)
    J = np.r_[jp, jr][:, :7]
    M = np.zeros((m.nv, m.nv))
    mujoco.mj_fullM(m, d, M)
    M = M[:7, :7]  # the arm's block (the mug is a separate body)
    p, v, dq = x[17:20], x[23:26], x[7:14]
    R, R_des = env.hand_rotation, np.array(DOWN_ROTATION)
    rot_err = 0.5 * sum(np.cross(R[:, i], R_des[:, i]) for i in range(3))
    acc = np.r_[omega**2 * (p_des - p) - 2 * omega * v, omega_r**2 * rot_err - 2 * omega_r * (jr[:, :7] @ dq)]
    Minv = np.linalg.inv(M)
    Lam = np.linalg.inv(J @ Minv @ J.T + 1e-6 * np.eye(6))
    null = np.eye(7) - J.T @ (Minv @ J.T @ Lam).T
    return J.T @ Lam @ acc + null @ (M @ (-2.0 * dq))


def _push_target(x, goal, height, lead=0.05):
    """Where the scripted pusher sends the tip, from the state: the contact point behind the mug on the line from
    the goal through the mug's centre, ``lead`` further towards the goal (pushing), or 2 cm behind the contact
    point while the tip is more than 1 cm off that line (lining up again); where it is, once the mug is within
    1 cm of the goal (the line from the goal through the mug turns quickly there)."""
    mug, tip = x[14:16], x[17:19]
    to_goal = goal[:2] - mug
    dist = np.linalg.norm(to_goal)
    if dist < 0.01:
        return np.array([tip[0], tip[1], height])
    u = to_goal / dist
    contact = mug - TOUCH * u
    rel = tip - contact
    if np.linalg.norm(rel - (rel @ u) * u) > 0.01:
        xy = contact - 0.02 * u
    else:
        xy = contact + min(lead, dist) * u
    return np.array([xy[0], xy[1], height])


def _scripted_push(env, seed, options=None):
    """One episode of the scripted pusher; returns the states (T+1), the last info, the peak torque (fraction of
    the limit) and the mug's largest tilt (degrees)."""
    obs, info = env.reset(seed=seed, options=options)
    states, peak, tilt = [obs["state"]], 0.0, 0.0
    height = obs["state"][19]
    for _ in range(env.horizon):
        u = _osc(env, states[-1], _push_target(states[-1], env.goal, height))
        peak = max(peak, float(np.max(np.abs(u) / env.action_space.high)))
        obs, _, _, _, info = env.step(u)
        states.append(obs["state"])
        tilt = max(tilt, _tilt(env))
    return np.array(states), info, peak, tilt


# ---- the scene --------------------------------------------------------------------------------------

MODEL_SHA256 = {
    "reach": "b2f6b440337a3539f4e1484a3ad9f2691b4feca5e894ad0c899f636989e78ddc",
    "stack": "83273469a73574c627f852d849fdd5b2ec11aeff26af93f41492aa42fa3e2a5d",
}
"""SHA-256 of the reach and stack models (the project's yaml) as they were before the pushing scene was added."""


def test_reach_and_stack_models_are_byte_identical_without_the_pushing_scene():
    assert hashlib.sha256(build_mjcf().encode()).hexdigest() == MODEL_SHA256["reach"]
    assert hashlib.sha256(build_mjcf(stacking=StackingScene()).encode()).hexdigest() == MODEL_SHA256["stack"]
    for word in ("mug", "coaster", 'name="push"', "gripper_tip"):
        assert word not in build_mjcf() and word not in build_mjcf(stacking=StackingScene())
    with pytest.raises(ValueError, match="one task scene"):
        build_mjcf(stacking=StackingScene(), pushing=PushingScene())


def test_pushing_scene_mug_coaster_gripper_and_collisions(env):
    m = env.model
    assert TASKS["sawyer_push"] is SawyerPushEnv and isinstance(env, SawyerPushEnv)
    assert m.nq == 7 + 7 and m.nv == 7 + 6 and m.nmocap == 1  # the arm's joints first, then the mug's freejoint
    mug = m.geom("mug")
    assert mug.type[0] == mujoco.mjtGeom.mjGEOM_CYLINDER
    np.testing.assert_allclose(mug.size[:2], [0.04, 0.05])
    assert m.body("mug").mass[0] == pytest.approx(0.3)
    np.testing.assert_allclose(mug.friction, PUSHING.mug_friction)
    coaster = m.geom("coaster")
    assert coaster.contype[0] == 0 and coaster.conaffinity[0] == 0  # a mark: no contacts
    assert m.body("coaster").mocapid[0] == 0
    # The mug collides with the table, the gripper and every arm link.
    def collide(a, b):
        return bool((a.contype[0] & b.conaffinity[0]) or (b.contype[0] & a.conaffinity[0]))
    colliding = [m.geom(i) for i in range(m.ngeom) if m.geom(i).bodyid[0] != m.body("mug").id]
    names = {g.name for g in colliding if collide(g, mug)}
    assert {"table", "gripper_palm", "gripper_finger_left", "gripper_finger_right"} <= names
    assert {f"right_l{i}_geom" for i in range(7)} <= names
    # The fingers are closed: two capsules touching, their end the tip site, 0.125 m along the hand's z axis.
    np.testing.assert_allclose(env.tip_offset, [0.0, 0.0, 0.125])
    left, right = m.geom("gripper_finger_left"), m.geom("gripper_finger_right")
    assert np.linalg.norm(left.pos - right.pos) == pytest.approx(2 * PUSHING.finger_radius)
    assert left.pos[2] + left.size[1] + left.size[0] == pytest.approx(0.125)


def test_tip_is_the_hand_pose_times_a_fixed_offset(env):
    """On the real robot the tip comes from forward kinematics: the ``right_hand`` pose times (0, 0, 0.125)."""
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for q in random_configs(5, seed=3):
        dq = rng.normal(size=7)
        x = env.set_joint_state(q, dq)
        hand = link_poses(q)["right_hand"]
        tip = hand[:3, :3] @ env.tip_offset + hand[:3, 3]
        np.testing.assert_allclose(x[17:20], tip, atol=1e-9)
        np.testing.assert_allclose(env.tip_from_hand(env.hand_position, env.hand_rotation), tip, atol=1e-9)
        h = 1e-6
        fd = [(link_poses(q + s * h * dq)["right_hand"] @ np.r_[env.tip_offset, 1.0])[:3] for s in (1, -1)]
        np.testing.assert_allclose(x[23:26], (fd[0] - fd[1]) / (2 * h), atol=1e-6)
    env.reset(seed=0)


def test_state_layout_and_probe_groups(env):
    assert env.state_dim == 26 and env.ee_pos_idx == (14, 15, 16) and env.ee_vel_idx == (20, 21, 22)
    assert env.state_names[14:26] == ("mug_x", "mug_y", "mug_z", "tip_x", "tip_y", "tip_z",
                                      "mug_vx", "mug_vy", "mug_vz", "tip_vx", "tip_vy", "tip_vz")
    groups = state_groups(env.state_names, env.ee_pos_idx)
    assert groups["ee_position"] == [14, 15, 16] and groups["joint_angles"] == list(range(7))
    assert groups["velocities"] == list(range(7, 14)) + list(range(20, 26))


# ---- start, goal ---------------------------------------------------------------------------------------

def test_start_pose_puts_the_tip_low_behind_the_mug(env):
    env.reset(seed=0)
    x = env.set_joint_state(START_POSE)
    np.testing.assert_allclose(x[17:20], START_TIP_POSITION, atol=1e-4)
    np.testing.assert_allclose(env.hand_rotation, DOWN_ROTATION, atol=2e-3)  # pointing straight down
    assert np.all(np.array(START_POSE) >= env.limits["lower"]) and np.all(np.array(START_POSE) <= env.limits["upper"])
    tip, mug, coaster = np.array(START_TIP_POSITION), np.array(MUG_START), GOAL[:2]
    assert 0.01 <= tip[2] - TABLE_TOP <= 0.02
    # On the line from the coaster through the mug, 7 cm behind the mug; the coaster 15-20 cm beyond it.
    u = (coaster - mug) / np.linalg.norm(coaster - mug)
    assert (mug - tip[:2]) @ [-u[1], u[0]] == pytest.approx(0.0, abs=1e-3)
    assert (mug - tip[:2]) @ u == pytest.approx(0.07, abs=1e-3)
    assert 0.15 <= np.linalg.norm(coaster - mug) <= 0.20
    # The palm passes above the mug's top when the tip is at the start height.
    palm_bottom = tip[2] + env.tip_offset[2] - 2 * PUSHING.palm_half_size[2]  # the hand's z axis points down
    assert palm_bottom > TABLE_TOP + MUG_H + 0.005
    env.reset(seed=0)


def test_reset_is_the_start_plus_noise_with_the_tip_in_place_and_no_contact(env):
    mugs = []
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        x = obs["state"]
        assert np.max(np.abs(x[:7] - START_POSE)) < 0.05 and np.all(x[7:14] == 0) and np.all(x[20:26] == 0)
        np.testing.assert_allclose(x[17:20], START_TIP_POSITION, atol=1e-5)  # the noise never moves the tip
        assert env.hand_rotation[2, 2] < -0.998  # still pointing down (within 3.6 degrees)
        assert np.all(np.abs(x[14:16] - MUG_START) <= env.mug_start_noise) and x[16] == pytest.approx(REST_Z)
        assert env.data.ncon == 0 and not info["success"]
        # the mug lies between the tip and the coaster, 1.4 cm or more from the fingers
        u = (GOAL[:2] - x[14:16]) / np.linalg.norm(GOAL[:2] - x[14:16])
        assert (x[14:16] - x[17:19]) @ u > TOUCH + 0.014 and np.linalg.norm(GOAL[:2] - x[14:16]) > 0.15
        np.testing.assert_array_equal(info["goal"], GOAL)
        np.testing.assert_allclose(env.coaster_position[:2], GOAL[:2])
        mugs.append(x[14:16])
    assert np.array(mugs).std(0).min() > 0.001  # the mug's offset comes from the seed


def test_goal_is_fixed_and_a_given_goal_is_validated(env):
    for seed in range(3):
        env.reset(seed=seed)
        np.testing.assert_array_equal(env.goal, GOAL)
    np.testing.assert_array_equal(env.push_goal, GOAL)
    other = np.array([0.6, 0.12, REST_Z])
    for given in (other, other[:2], list(other)):  # the mug's centre, or the coaster's x, y
        _, info = env.reset(seed=0, options={"goal": given})
        np.testing.assert_array_equal(env.goal, other)
        np.testing.assert_allclose(env.coaster_position, [0.6, 0.12, TABLE_TOP + PUSHING.coaster_half_thickness])
    fixed = make("sawyer_push", goal=(0.7, 0.0), image_obs=False)
    fixed.reset(seed=1)
    np.testing.assert_array_equal(fixed.goal, [0.7, 0.0, REST_Z])
    fixed.close()
    for bad, match in (((0.65, 0.05, REST_Z + 0.01), "not a mug position"), ((0.3, 0.05), "x in \\[0.45, 0.75\\]"),
                       ((0.65, 0.3), "y in \\[-0.15, 0.25\\]"), ((0.65, 0.05, REST_Z, 0.0), "shape \\(4,\\)"),
                       ((np.nan, 0.05), "NaN"), ("goal", "numeric")):
        with pytest.raises(ValueError, match=match):
            env.reset(seed=0, options={"goal": bad})
    with pytest.raises(ValueError, match="not a mug position"):
        make("sawyer_push", goal=(0.65, 0.05, 0.0), image_obs=False)
    env.reset(seed=0)


# ---- contacts -------------------------------------------------------------------------------------------

def test_mug_rests_on_the_table_under_gravity():
    """Zero torque for a whole episode: the arm holds its start, the mug neither sinks nor drifts nor tilts."""
    e = make("sawyer_push", image_obs=False)
    obs, _ = e.reset(seed=1)
    x0 = obs["state"].copy()
    for _ in range(50):
        obs, *_ = e.step(np.zeros(7))
    x = obs["state"]
    assert np.linalg.norm(x[14:16] - x0[14:16]) < 1e-4 and abs(x[16] - REST_Z) < 1e-4
    assert np.linalg.norm(x[17:20] - x0[17:20]) < 1e-3 and _tilt(e) < 0.1
    assert ("mug", "table") in _contact_pairs(e)
    mug = e.model.geom("mug").id
    assert sum(mug in (c.geom1, c.geom2) for c in e.data.contact[:e.data.ncon]) >= 3  # a flat bottom, not a point
    e.close()


def test_the_gripper_pushes_the_mug_and_cannot_pass_through_it():
    e = make("sawyer_push", image_obs=False)
    obs, _ = e.reset(seed=2)
    x = obs["state"]
    start_mug, height = x[14:17].copy(), x[19]
    # Straight along +x through the mug's centre to 10 cm beyond where it started.
    target = np.array([start_mug[0] + 0.10, x[18], height])
    closest, pairs = np.inf, set()
    for _ in range(20):
        obs, *_ = e.step(_osc(e, x, target))
        x = obs["state"]
        closest = min(closest, np.linalg.norm(x[14:16] - x[17:19]))
        pairs |= _contact_pairs(e)
    assert x[14] - start_mug[0] > 0.05 and abs(x[16] - REST_Z) < 1e-3 and _tilt(e) < 2.0
    assert pairs & {("gripper_finger_left", "mug"), ("gripper_finger_right", "mug")}
    assert closest > np.sqrt(TOUCH**2 - PUSHING.finger_radius**2) - 0.002  # never into the mug
    # From above: up, over the mug, then pressed 5 cm into its top: the fingers stop on it, the mug stays put.
    top = REST_Z + MUG_H / 2
    for target in ([*x[17:19], top + 0.03], [*x[14:16], top + 0.03], [*x[14:16], top - 0.05]):
        for _ in range(10):
            obs, *_ = e.step(_osc(e, x, np.array(target)))
            x = obs["state"]
    assert x[19] > top - 0.002 and abs(x[16] - REST_Z) < 1e-3
    assert _contact_pairs(e) & {("gripper_finger_left", "mug"), ("gripper_finger_right", "mug")}
    e.close()


# ---- success ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("offset, success", [
    ((0.0, 0.0, 0.0), True),
    ((0.029, 0.0, 0.0), True),
    ((-0.021, 0.021, 0.0), True),  # 2.97 cm
    ((0.0, -0.029, 0.0029), True),
    ((0.031, 0.0, 0.0), False),
    ((0.022, -0.022, 0.0), False),  # 3.11 cm
    ((0.0, 0.0, 0.0031), False),  # leaning
    ((0.0, 0.0, -0.01), False),  # lying on its side
])
def test_success_is_the_mug_standing_within_3_cm_of_the_goal(env, offset, success):
    env.reset(seed=0)
    x = env.state
    x[14:17] = GOAL + np.asarray(offset)
    assert env.is_success(x) is success
    np.testing.assert_array_equal(env.is_success(np.stack([x, x])), [success, success])
    assert env.is_success(x, goal=GOAL) is success
    assert env.distance(x) == pytest.approx(np.linalg.norm(offset))
    with pytest.raises(ValueError, match="dimension 26"):
        env.is_success(x[:20])


def test_a_tipped_mug_on_the_coaster_fails_and_an_upright_one_succeeds():
    e = make("sawyer_push", image_obs=False)
    on_side = np.array([np.cos(np.pi / 4), np.sin(np.pi / 4), 0.0, 0.0])  # its axis along the world's y
    for quat, z, success in (((1.0, 0.0, 0.0, 0.0), REST_Z, True), (on_side, TABLE_TOP + MUG_R, False)):
        e.reset(seed=0)
        e.set_mug_pose(GOAL + [0.01, 0.0, z - REST_Z], quat)
        for _ in range(10):
            obs, _, _, _, info = e.step(np.zeros(7))
        x = obs["state"]
        assert np.linalg.norm(x[14:16] - GOAL[:2]) < 0.015  # close to the coaster's centre either way
        assert info["success"] is success and (_tilt(e) > 80) is (not success)
    e.close()


def test_cost_is_the_reach_form_on_the_mug(env):
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(3):
        u = rng.normal(size=7) * env.action_scale
        x = env.state
        _, reward, _, _, info = env.step(u)
        d2 = np.sum((x[14:17] - GOAL) ** 2)
        expected = 0.5 * 10.0 * d2 + np.sqrt(1e-5 + d2) + 0.5 * 0.01 * np.sum((u / env.action_scale) ** 2)
        assert info["cost"] == pytest.approx(expected, rel=1e-9) and reward == -info["cost"]


# ---- wide start ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("goal", [None, (0.55, -0.1)])
def test_wide_start_puts_the_mug_on_the_strip_to_the_goal_and_the_gripper_behind_it(env, goal):
    options = {"wide_start": True} if goal is None else {"wide_start": True, "goal": goal}
    distances = []
    for seed in range(30):
        obs, info = env.reset(seed=seed, options=options)
        x = obs["state"]
        g = info["goal"]
        u = (g[:2] - np.array(MUG_START)) / np.linalg.norm(g[:2] - np.array(MUG_START))
        side = np.array([-u[1], u[0]])
        along = (x[14:16] - MUG_START) @ u
        assert -1e-9 <= along <= np.linalg.norm(g[:2] - MUG_START) + 1e-9
        assert abs((x[14:16] - MUG_START) @ side) <= env.wide_start_side + 1e-9 and x[16] == pytest.approx(REST_Z)
        behind = (x[14:16] - x[17:19]) @ u
        assert TOUCH + env.wide_start_gap[0] - 1e-6 <= behind <= TOUCH + env.wide_start_gap[1] + 1e-6
        assert abs((x[14:16] - x[17:19]) @ side) <= env.wide_start_side + env.wide_start_tip_side + 1e-6
        assert x[19] == pytest.approx(START_TIP_POSITION[2], abs=1e-6) and env.hand_rotation[2, 2] < -0.998
        assert np.all(x[7:14] == 0) and np.all(x[20:26] == 0) and env.data.ncon == 0
        np.testing.assert_array_equal(env.reset(seed=seed, options=options)[0]["state"], x)  # seeded
        distances.append(np.linalg.norm(x[14:16] - g[:2]))
    assert min(distances) < 0.03 and max(distances) > 0.12  # some start at the goal, some near the start
    env.reset(seed=0)


def test_random_pretraining_sees_successes_only_from_the_wide_start():
    """SOLAR's pretraining actions (smoothed noise, std 1 x action_scale) push the mug onto the coaster from the
    wide start, never from the task's start: the labels a sparse-reward run learns from need the wide start."""
    e = make("sawyer_push", image_obs=False)
    low, high = e.action_space.low, e.action_space.high
    counts = {}
    for wide in (False, True):
        episodes = [rollout(e, random_actor(np.random.default_rng(1000 + i), e.action_scale, low, high, 3.0,
                                            e.horizon), seed=i, options={"wide_start": wide}) for i in range(100)]
        counts[wide] = sum(ep.success for ep in episodes)
    assert counts[False] == 0 and counts[True] >= 10, counts
    e.close()


# ---- solvability -------------------------------------------------------------------------------------------

def test_scripted_pusher_puts_the_mug_on_the_coaster():
    """The scripted pusher (operational-space control of the tip, lining up behind the mug on the line to the
    goal and pushing along it) succeeds from the start and from the wide start on every seed of 5 each, within
    the torque limits, without tipping the mug."""
    e = make("sawyer_push", image_obs=False)
    for seed, options in [(s, None) for s in range(5)] + [(s, {"wide_start": True}) for s in range(5)]:
        states, info, peak, tilt = _scripted_push(e, seed, options)
        assert info["success"], (seed, options, states[-1][14:17] - GOAL)
        assert np.linalg.norm(states[-1][14:16] - GOAL[:2]) < 0.015
        assert peak < 1.0 and tilt < 1.0  # never clipped; the mug slid, it did not tip
        assert np.linalg.norm(states[-1][20:23]) < 0.05  # nearly at rest at the end
    e.close()


def test_doing_nothing_fails(env):
    obs, info = env.reset(seed=0)
    for _ in range(env.horizon):
        obs, _, _, _, info = env.step(np.zeros(7))
    assert not info["success"] and info["distance"] > 0.15


# ---- determinism and images ------------------------------------------------------------------------------

def test_same_seed_same_images_and_states():
    a, b = make("sawyer_push"), make("sawyer_push")
    actions = np.random.default_rng(5).normal(size=(8, 7)) * a.action_scale
    runs = []
    for e, seed, wide in ((a, 7, False), (b, 7, False), (a, 8, False), (a, 7, True), (b, 7, True)):
        obs, _ = e.reset(seed=seed, options={"wide_start": wide})
        states, images = [obs["state"]], [obs["image"]]
        for u in actions:
            obs, *_ = e.step(u)
            states.append(obs["state"])
            images.append(obs["image"])
        runs.append((np.array(states), np.array(images)))
    for i, j in ((0, 1), (3, 4)):
        np.testing.assert_array_equal(runs[i][0], runs[j][0])
        np.testing.assert_array_equal(runs[i][1], runs[j][1])
    assert not np.allclose(runs[0][0], runs[2][0]) and not np.array_equal(runs[0][1], runs[2][1])
    a.close()
    b.close()


def _yellow(img):
    return (img[..., 0] > 150) & (img[..., 1] > 120) & (img[..., 2] < 80)


def _green(img):
    return (img[..., 1] > 150) & (img[..., 0] < 90) & (img[..., 2] < 90)


def _centroid(mask) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean(), rows.mean()])


def test_images_show_the_mug_and_the_coaster_where_they_are():
    e = make("sawyer_push")
    cam = PUSHING.camera
    obs, _ = e.reset(seed=0)
    img = obs["image"].astype(int)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    mug_px, coaster_px = cam.project(obs["state"][14:17], 64)[0], cam.project(e.coaster_position, 64)[0]
    assert _yellow(img).sum() >= 40 and _green(img).sum() >= 30
    assert np.linalg.norm(_centroid(_yellow(img)) - mug_px) < 3.0
    assert np.linalg.norm(_centroid(_green(img)) - coaster_px) < 2.0
    # the gripper's dark fingers appear at the tip's projection
    col, row = np.round(cam.project(obs["state"][17:20], 64)[0]).astype(int)
    patch = img[row - 3:row + 2, col - 2:col + 3]
    assert (patch.max(-1) < 80).any()
    # Pushed onto the coaster: the mug stands where the coaster is, hiding its middle.
    states, info, _, _ = _scripted_push(e, 0)
    img = e.render().astype(int)
    assert info["success"]
    mug_px = cam.project(states[-1][14:17], 64)[0]
    assert np.linalg.norm(_centroid(_yellow(img)) - mug_px) < 3.0
    assert abs(_centroid(_yellow(img))[0] - coaster_px[0]) < 3.0
    e.close()


def test_generator_script_writes_the_pushing_model(tmp_path):
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "sawyer_push.xml"
    result = subprocess.run([sys.executable, str(repo / "scripts" / "gen_sawyer_models.py"), "--urdf",
                             str(tmp_path / "sawyer.urdf"), "--push-mjcf", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == build_mjcf(pushing=PushingScene())
    assert (tmp_path / "sawyer.urdf").read_text() == (repo / "urdf" / "sawyer.urdf").read_text()
