"""solar_ros.launcher: parameter overrides, command lines, and real runs (clean stop, one node dying)."""
from __future__ import annotations

import io
import time

import pytest
import yaml

from solar_ros.launcher import CONFIG_DIR, PROFILES, get_profile, launch, node_command, params_yaml


def test_params_yaml_forms():
    out = params_yaml({"rate": "100", "controller_node.state_source": "joints",
                       "camera_node:width": 32, "recorder_node": {"write_mcap": "false"}})
    assert out == {
        "/**": {"ros__parameters": {"rate": 100}},
        "controller_node": {"ros__parameters": {"state_source": "joints"}},
        "camera_node": {"ros__parameters": {"width": 32}},
        "recorder_node": {"ros__parameters": {"write_mcap": False}},
    }


def test_params_yaml_keeps_yaml_mappings_as_text():
    # a ROS parameter cannot hold a mapping: settings like the trainer's fit_config are YAML strings
    out = params_yaml({"trainer_node.fit_config": "{kl_step: 2.0, image_size: 32}", "seed": "[1, 2]"})
    assert out["trainer_node"]["ros__parameters"]["fit_config"] == "{kl_step: 2.0, image_size: 32}"
    assert out["/**"]["ros__parameters"]["seed"] == [1, 2]


def test_sim_profile_is_the_learning_stack_ending_with_its_trainer():
    spec = get_profile("sim")
    assert [n.name for n in spec.nodes] == ["sim_arm_node", "camera_node", "encoder_node", "controller_node",
                                            "recorder_node", "model_fitting_node", "trainer_node"]
    assert spec.main_node == "trainer_node"


def test_node_command_uses_profile_files_in_order():
    spec = PROFILES["real_sawyer"].node("controller_node")
    cmd = node_command(spec, CONFIG_DIR, "extra.yaml", python="py")
    assert cmd[:3] == ["py", "-m", "solar_ros.nodes.controller_node"]
    files = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--params-file"]
    assert files == [str(CONFIG_DIR / "controller_node.yaml"), str(CONFIG_DIR / "real_sawyer.yaml"), "extra.yaml"]
    assert "/joint_states:=/robot/joint_states" in cmd
    for f in files[:2]:
        content = yaml.safe_load(open(f))
        assert "controller_node" in content, f"{f} has no controller_node section"
    with pytest.raises(ValueError, match="unknown launch profile"):
        get_profile("moon")


@pytest.mark.ros
@pytest.mark.timeout(60)
def test_launch_runs_prefixes_output_and_stops_cleanly(tmp_path):
    out = io.StringIO()
    rc = launch("sim", {"recorder_node.output_dir": str(tmp_path / "eps")}, nodes=["camera_node", "recorder_node"],
                output=out, duration=4.0)
    text = out.getvalue()
    assert rc == 0, text
    assert "[camera_node]" in text and "[recorder_node]" in text
    assert "recording episodes to" in text and str(tmp_path / "eps") in text
    assert "Traceback" not in text


@pytest.mark.ros
@pytest.mark.timeout(60)
def test_launch_stops_everything_when_one_node_dies():
    out = io.StringIO()
    t0 = time.monotonic()
    rc = launch("sim", {"camera_node.encoding": "bgr8"}, nodes=["camera_node", "recorder_node"], output=out,
                duration=30.0, grace=3.0)
    text = out.getvalue()
    assert rc == 2, text
    assert "encoding must be one of" in text
    assert "camera_node exited with status 2; stopping the others" in text
    assert time.monotonic() - t0 < 20, "the launcher must not wait for its duration once a node died"
