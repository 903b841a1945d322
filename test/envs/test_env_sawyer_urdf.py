"""urdf/sawyer.urdf: up to date with its generator, well-formed, faithful to the yaml, ros2_control-ready."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml

from solar_ros.envs import make
from solar_ros.envs.sawyer_model import build_mjcf, build_urdf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sawyer_kinematics import link_poses, random_configs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
URDF_PATH = REPO / "urdf" / "sawyer.urdf"
FACTS = yaml.safe_load((REPO / "config" / "sawyer_parameters.yaml").read_text())
ARM = [f"right_j{i}" for i in range(7)]


@pytest.fixture(scope="module")
def robot():
    return ET.parse(URDF_PATH).getroot()


def _floats(text):
    return np.array([float(v) for v in text.split()])


def test_committed_urdf_is_up_to_date_with_the_generator():
    assert URDF_PATH.read_text() == build_urdf(), "run scripts/gen_sawyer_models.py"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_sawyer_models.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_generator_check_flags_a_stale_file(tmp_path):
    stale = tmp_path / "sawyer.urdf"
    stale.write_text(build_urdf().replace('effort="80"', 'effort="81"', 1))
    script = str(REPO / "scripts" / "gen_sawyer_models.py")
    result = subprocess.run([sys.executable, script, "--check", "--urdf", str(stale)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "out of date" in result.stderr
    result = subprocess.run([sys.executable, script, "--urdf", str(stale), "--mjcf", str(tmp_path / "sawyer.xml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert stale.read_text() == build_urdf()
    assert (tmp_path / "sawyer.xml").read_text() == build_mjcf()


def test_tree_structure(robot):
    links = {l.get("name") for l in robot.findall("link")}
    joints = robot.findall("joint")
    children = [j.find("child").get("link") for j in joints]
    assert len(children) == len(set(children)), "a link has two parents"
    for j in joints:
        assert j.find("parent").get("link") in links and j.find("child").get("link") in links
    roots = links - set(children)
    assert roots == {"base"}
    for frame in ("right_hand", "head_camera", "right_hand_camera", "scene_camera", "scene_camera_optical", "head"):
        assert frame in links


def test_arm_joints_limits_and_dynamics_match_the_yaml(robot):
    facts = {j["name"]: j for j in FACTS["joints"]}
    joints = {j.get("name"): j for j in robot.findall("joint")}
    for name in ARM:
        j = joints[name]
        assert j.get("type") == "revolute"
        lim = j.find("limit")
        for key in ("lower", "upper", "velocity", "effort"):
            assert float(lim.get(key)) == pytest.approx(facts[name]["limit"][key], abs=1e-9)
        np.testing.assert_allclose(_floats(j.find("axis").get("xyz")), [0, 0, 1])
        assert float(j.find("dynamics").get("damping")) > 0
    assert [float(joints[n].find("limit").get("effort")) for n in ARM] == [80, 80, 40, 40, 9, 9, 9]
    assert joints["head_pan"].get("type") == "fixed"
    links = {l.get("name"): l for l in robot.findall("link")}
    for fact in FACTS["links"]:
        inertial = links[fact["name"]].find("inertial")
        assert float(inertial.find("mass").get("value")) == pytest.approx(fact["mass"])
        inertia = inertial.find("inertia")
        for key, value in fact["inertia"].items():
            assert float(inertia.get(key)) == pytest.approx(value)


def test_ros2_control_block(robot):
    blocks = robot.findall("ros2_control")
    assert len(blocks) == 1
    block = blocks[0]
    assert block.find("hardware/plugin").text == "gz_ros2_control/GazeboSimSystem"
    joints = block.findall("joint")
    assert [j.get("name") for j in joints] == ARM
    for j, effort, q0 in zip(joints, [80, 80, 40, 40, 9, 9, 9], FACTS["neutral_pose"]):
        commands = j.findall("command_interface")
        assert [c.get("name") for c in commands] == ["effort"]
        params = {p.get("name"): float(p.text) for p in commands[0].findall("param")}
        assert params == {"min": -effort, "max": effort}
        states = j.findall("state_interface")
        assert [s.get("name") for s in states] == ["position", "velocity", "effort"]
        assert float(states[0].find("param").text) == pytest.approx(q0)


def test_gazebo_plugin_only_with_a_controllers_file():
    assert "gz_ros2_control-system" not in build_urdf()
    text = build_urdf(controllers_config="/opt/ws/config/controllers.yaml")
    plugin = ET.fromstring(text).find("gazebo/plugin")
    assert plugin.get("filename") == "gz_ros2_control-system"
    assert plugin.find("parameters").text == "/opt/ws/config/controllers.yaml"


def _urdf_joint_table(robot):
    out = []
    for j in robot.findall("joint"):
        origin = j.find("origin")
        out.append({
            "name": j.get("name"), "type": j.get("type"),
            "parent": j.find("parent").get("link"), "child": j.find("child").get("link"),
            "origin_xyz": _floats(origin.get("xyz")), "origin_rpy": _floats(origin.get("rpy")),
        })
    return out


def test_urdf_kinematics_match_the_mujoco_model(robot):
    """The URDF's own joint origins put the hand and the scene camera where MuJoCo has them."""
    table = _urdf_joint_table(robot)
    env = make("sawyer_reach")
    env.reset(seed=0)
    for q in random_configs(5, seed=8):
        env.set_joint_state(q)
        poses = link_poses(q, joints=table)
        np.testing.assert_allclose(poses["right_hand"][:3, 3], env.hand_position, atol=1e-8)
        np.testing.assert_allclose(poses["right_hand"][:3, :3], env.hand_rotation, atol=1e-8)
    cam = env.model.camera("scene").id
    optical = link_poses(np.zeros(7), joints=table)["scene_camera_optical"]
    cam_R = env.data.cam_xmat[cam].reshape(3, 3)  # columns: right, up, backward (MuJoCo looks along -z)
    np.testing.assert_allclose(optical[:3, 3], env.data.cam_xpos[cam], atol=1e-9)
    np.testing.assert_allclose(optical[:3, 0], cam_R[:, 0], atol=1e-8)   # x right
    np.testing.assert_allclose(optical[:3, 1], -cam_R[:, 1], atol=1e-8)  # y down
    np.testing.assert_allclose(optical[:3, 2], -cam_R[:, 2], atol=1e-8)  # z forward
    env.close()
