"""solar_ros.runtime.arm_frames: the frames from the URDF and joint angles match MuJoCo's forward
kinematics of the same arm (the model the simulator runs), for random joint angles."""
from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest

from solar_ros.envs.sawyer_model import build_urdf
from solar_ros.envs.sawyer_reach import SawyerReachEnv
from solar_ros.runtime.arm_frames import ArmFrames
from solar_ros.runtime.safety import SAWYER_JOINT_NAMES

REPO_URDF = Path(__file__).resolve().parents[2] / "urdf" / "sawyer.urdf"


def test_frames_match_mujoco_forward_kinematics():
    arm = ArmFrames(REPO_URDF.read_text())
    assert arm.root == "base" and arm.moving == list(SAWYER_JOINT_NAMES)
    env = SawyerReachEnv()
    env.reset(seed=0)
    m, d = env.model, env.data
    rng = np.random.default_rng(4)
    for _ in range(5):
        q = rng.uniform(-1.5, 1.5, 7)
        for name, angle in zip(SAWYER_JOINT_NAMES, q):
            d.qpos[m.joint(name).qposadr[0]] = angle
        mujoco.mj_kinematics(m, d)
        poses = arm.world(dict(zip(SAWYER_JOINT_NAMES, q)))
        hand = m.site("right_hand").id
        np.testing.assert_allclose(poses["right_hand"][:3, 3], d.site_xpos[hand], atol=1e-9)
        np.testing.assert_allclose(poses["right_hand"][:3, :3], d.site_xmat[hand].reshape(3, 3), atol=1e-9)
        for link in ("right_l0", "right_l2", "right_l4", "right_l6"):
            np.testing.assert_allclose(poses[link][:3, 3], d.xpos[m.body(link).id], atol=1e-9)


def test_transforms_compose_to_the_world_poses():
    arm = ArmFrames(build_urdf())
    q = dict(zip(SAWYER_JOINT_NAMES, np.linspace(-1, 1, 7)))
    transforms = arm.transforms(q)
    assert len(transforms) == len(arm.joints) and {t.child for t in transforms} >= {"right_hand", "scene_camera"}
    poses = {arm.root: np.eye(4)}
    for t in transforms:  # parents come first
        x, y, z, w = t.rotation
        assert abs(x * x + y * y + z * z + w * w - 1) < 1e-12
        R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, t.translation
        poses[t.child] = poses[t.parent] @ T
    world = arm.world(q)
    for link, pose in world.items():
        np.testing.assert_allclose(poses[link], pose, atol=1e-12)


@pytest.mark.parametrize("text, message", [
    ("<robot", "not valid XML"),
    ("<model/>", "expected <robot>"),
    ("<robot/>", "has no joints"),
    ('<robot><joint name="j" type="fixed"><parent link="a"/></joint></robot>', "no parent or child"),
    ('<robot><joint name="j" type="revolute"><parent link="a"/><child link="b"/><axis xyz="0 0 0"/></joint></robot>',
     "zero axis"),
    ('<robot><joint name="j" type="fixed"><parent link="a"/><child link="b"/><origin xyz="1 2"/></joint></robot>',
     "expected 3 numbers"),
    ('<robot><joint name="j" type="fixed"><parent link="a"/><child link="b"/></joint>'
     '<joint name="k" type="fixed"><parent link="c"/><child link="d"/></joint></robot>', "one root link"),
])
def test_bad_robot_descriptions_are_rejected_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        ArmFrames(text)


def test_non_finite_angles_are_rejected():
    arm = ArmFrames(build_urdf())
    with pytest.raises(ValueError, match="right_j3: angle nan is not finite"):
        arm.transforms({"right_j3": float("nan")})
