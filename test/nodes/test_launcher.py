"""solar_ros.launcher: parameter overrides, command lines, and real runs (clean stop, one node dying)."""
from __future__ import annotations

import ast
import io
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from solar_ros import launcher as launcher_module
from solar_ros.launcher import (
    CONFIG_DIR,
    PROFILES,
    LaunchError,
    get_profile,
    launch,
    launch_record,
    node_command,
    params_yaml,
    parse_overrides,
    validate_params_files,
)
from solar_ros.nodes import contract


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


def _pid_of(text: str, node: str, nth: int = 1) -> int | None:
    pids = re.findall(rf"\[launch\] started {node} \(pid (\d+)\)", text)
    return int(pids[nth - 1]) if len(pids) >= nth else None


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.ros
@pytest.mark.timeout(90)
def test_a_killed_node_is_respawned_and_the_launch_goes_on(tmp_path):
    import os
    import signal
    import threading

    out = io.StringIO()
    done = threading.Event()

    def kill_recorder_then_stop():
        try:
            _wait_for(lambda: out.getvalue().count("recording episodes to") == 1, 40, "the recorder")
            os.kill(_pid_of(out.getvalue(), "recorder_node"), signal.SIGKILL)
            _wait_for(lambda: out.getvalue().count("recording episodes to") == 2, 40, "the respawned recorder")
            time.sleep(0.5)
        finally:
            done.set()
            os.kill(os.getpid(), signal.SIGINT)  # the launcher's own stop request (Ctrl-C)

    killer = threading.Thread(target=kill_recorder_then_stop, daemon=True)
    killer.start()
    rc = launch("sim", {"recorder_node.output_dir": str(tmp_path / "eps")}, nodes=["camera_node", "recorder_node"],
                output=out, duration=80.0, grace=3.0, respawn_delay=0.5)
    killer.join(timeout=5)
    text = out.getvalue()
    assert done.is_set()
    assert rc == 0, text
    assert "[launch] recorder_node was killed by SIGKILL; respawning it in 0.5 s (respawn 1 of at most" in text, text
    first, second = _pid_of(text, "recorder_node", 1), _pid_of(text, "recorder_node", 2)
    assert second is not None and second != first, text
    assert _pid_of(text, "camera_node", 2) is None, "only the dead node is restarted"
    assert "stopping the others" not in text


@pytest.mark.ros
@pytest.mark.timeout(60)
def test_without_respawn_a_killed_node_ends_the_launch():
    import os
    import signal
    import threading

    out = io.StringIO()

    def kill_camera():
        _wait_for(lambda: _pid_of(out.getvalue(), "camera_node") is not None, 20, "the camera node's start")
        time.sleep(1.0)
        os.kill(_pid_of(out.getvalue(), "camera_node"), signal.SIGKILL)

    threading.Thread(target=kill_camera, daemon=True).start()
    t0 = time.monotonic()
    rc = launch("sim", {}, nodes=["camera_node", "recorder_node"], output=out, duration=40.0, grace=3.0,
                respawn=False)
    text = out.getvalue()
    assert rc == -signal.SIGKILL, text
    assert "[launch] camera_node exited with status -9; stopping the others" in text
    assert time.monotonic() - t0 < 30


# ---- what the launcher accepts ------------------------------------------------------------------

@pytest.fixture
def no_processes(monkeypatch):
    """Fail the test if the launcher starts any process."""
    def refuse(*args, **kwargs):
        raise AssertionError("a node was started although the launch should have been rejected")
    monkeypatch.setattr(launcher_module, "_Process", refuse)


def test_parse_overrides_needs_name_and_value():
    assert parse_overrides(["controller_node.rate:=250", "use_sim_time:=true", "trainer_node.fit_config:={a: 1}"]) \
        == {"controller_node.rate": "250", "use_sim_time": "true", "trainer_node.fit_config": "{a: 1}"}
    assert parse_overrides(["recorder_node.output_dir:="]) == {"recorder_node.output_dir": ""}
    for bad in (["controller_node.rate=250"], ["sim"], [":=3"]):
        with pytest.raises(LaunchError, match="is not NAME:=VALUE"):
            parse_overrides(bad)


@pytest.mark.parametrize("overrides, message", [
    ({"controler_node.rate": "250"}, "profile 'sim' runs no node 'controler_node' (did you mean controller_node?); "
                                     "its nodes: sim_arm_node, camera_node, encoder_node, controller_node"),
    ({"controller_node.rat": "250"}, "controller_node has no parameter rat (did you mean rate?); its parameters: "
                                     "abort_on_fault, clock, command_on_latent"),
    ({"controller_node": {"rate": 1, "bogus": 2}}, "controller_node has no parameter bogus"),
    ({"ratee": "250"}, "no node of profile 'sim' has a parameter 'ratee'"),
])
def test_unknown_nodes_and_parameters_are_rejected_before_anything_starts(overrides, message, no_processes):
    with pytest.raises(LaunchError) as err:
        launch("sim", overrides, output=io.StringIO(), duration=0.1)
    assert message in str(err.value)


def test_overrides_for_a_node_of_another_profile_are_rejected(no_processes):
    with pytest.raises(LaunchError, match="profile 'gazebo' runs no node 'trainer_node'"):
        launch("gazebo", {"trainer_node.seed": "1"}, duration=0.1)
    with pytest.raises(LaunchError, match="has no nodes \\['trainer'\\]; its nodes"):
        launch("sim", {}, nodes=["trainer"], duration=0.1)


def _config_copy(tmp_path):
    shutil.copytree(CONFIG_DIR, tmp_path / "config")
    return tmp_path / "config"


def test_unknown_keys_in_a_parameter_file_are_rejected_before_anything_starts(tmp_path, no_processes):
    config = _config_copy(tmp_path)
    path = config / "controller_node.yaml"
    content = yaml.safe_load(path.read_text())
    content["controller_node"]["ros__parameters"]["max_latency"] = 0.1  # a typo'd / stale key
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(LaunchError) as err:
        launch("sim", {}, config_dir=config, output=io.StringIO(), duration=0.1)
    text = str(err.value)
    assert str(path) in text and "controller_node has no parameter max_latency" in text
    assert "its parameters: abort_on_fault" in text and "use_sim_time" in text


@pytest.mark.parametrize("content, message", [
    ({"camra_node": {"ros__parameters": {"rate": 5}}}, "unknown node 'camra_node' (did you mean camera_node?)"),
    ({"camera_node": {"rate": 5}}, "expected exactly one key, ros__parameters"),
    ({"/**": {"ros__parameters": {"use_sim_time": True, "bogus": 1}}},
     "no node of profile 'sim' has a parameter 'bogus'"),
    (["camera_node"], "expected node sections"),
])
def test_malformed_profile_files_are_rejected(tmp_path, content, message, no_processes):
    config = _config_copy(tmp_path)
    (config / "sim.yaml").write_text(yaml.safe_dump(content))
    with pytest.raises(LaunchError, match=re.escape(message)):
        launch("sim", {}, config_dir=config, nodes=["camera_node"], duration=0.1)


def test_the_repository_parameter_files_are_valid():
    for spec in PROFILES.values():
        params = validate_params_files(spec)
        assert set(params) == {n.name for n in spec.nodes}
    sim = validate_params_files(PROFILES["sim"])
    assert sim["sim_arm_node"]["clock_rate"] == 100.0  # sim.yaml overrides sim_arm_node.yaml
    # In simulation the controller ticks on the simulator's joint states: one command each, in simulated time.
    assert sim["controller_node"]["clock"] == "joint_states" and sim["controller_node"]["use_sim_time"] is False


def test_launch_record_has_the_command_line_and_every_node_parameter():
    spec = PROFILES["sim"]
    record = launch_record(spec, validate_params_files(spec), {"trainer_node.method": "dsae", "use_sim_time": "false"},
                           ["solar-ros", "launch", "sim", "trainer_node.method:=dsae"])
    assert record["argv"] == ["solar-ros", "launch", "sim", "trainer_node.method:=dsae"]
    assert record["profile"] == "sim"
    assert record["parameters"]["trainer_node"]["method"] == "dsae"
    assert record["parameters"]["controller_node"]["use_sim_time"] is False
    json.dumps(record)


def test_cli_launch_errors_are_one_line_and_status_2(capsys, no_processes):
    from solar_ros import cli
    for args, message in ((["sim", "controller_node.rate=250"], "is not NAME:=VALUE"),
                          (["sim", "controller_node.rte:=250"], "controller_node has no parameter rte"),
                          (["moon"], "unknown launch profile 'moon'; available: sim, gazebo, real_sawyer")):
        assert cli.main(["launch", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("solar-ros launch: error: ") and message in err and "Traceback" not in err


# ---- the parameter contract matches the nodes' declarations -------------------------------------

def _declared(module_path) -> list[str]:
    """Names passed to declare(node, NAME, ...) / declare_parameter(NAME, ...) in a node module's source, and
    ``realtime_priority`` where it calls ``declare_realtime_priority()``."""
    names = []
    for call in ast.walk(ast.parse(module_path.read_text())):
        if not isinstance(call, ast.Call):
            continue
        func = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", None)
        if func == "declare_realtime_priority":  # StackNode's helper declares this one
            names.append("realtime_priority")
            continue
        if func not in ("declare", "declare_parameter"):
            continue
        arg = call.args[1] if func == "declare" else call.args[0]
        assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), \
            f"{module_path.name}:{call.lineno}: a parameter name must be a literal for the launcher's contract"
        names.append(arg.value)
    return names


def test_contract_parameters_are_what_each_node_declares():
    nodes_dir = Path(contract.__file__).parent
    modules = {p.stem for p in nodes_dir.glob("*_node.py")}
    assert set(contract.PARAMETERS) == modules
    for node, names in contract.PARAMETERS.items():
        declared = _declared(nodes_dir / f"{node}.py")
        assert len(declared) == len(set(declared)), f"{node} declares a parameter twice"
        assert sorted(names) == sorted(declared), f"contract.PARAMETERS[{node!r}] differs from its declarations"
    for spec in PROFILES.values():
        assert {n.name for n in spec.nodes} <= set(contract.PARAMETERS)


@pytest.mark.ros
@pytest.mark.timeout(60)
def test_rclpy_declares_only_the_listed_builtin_parameters():
    import rclpy
    from rclpy.node import Node
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = Node("contract_probe", context=context)
        assert set(node._parameters) == set(contract.ROS_PARAMETERS)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_the_inspector_and_the_labeller_are_optional_in_every_profile(no_processes):
    from solar_ros.launcher import split_optional

    for spec in PROFILES.values():
        assert [n.name for n in spec.optional] == ["inspector_node", "labeller_node"]
        assert validate_params_files(spec, nodes=spec.optional)["inspector_node"]["port"] == 8765
        assert validate_params_files(spec, nodes=spec.optional)["labeller_node"]["delay"] == 0.5
        assert split_optional(spec, {"labeller": "true", "inspector": "false"}) == ([spec.node("labeller_node")], {})
        assert split_optional(spec, {"inspector": "true", "seed": "1"}) == ([spec.node("inspector_node")],
                                                                            {"seed": "1"})
        assert split_optional(spec, {"inspector": "false"}) == ([], {})
        assert split_optional(spec, {}) == ([], {})
    assert PROFILES["real_sawyer"].node("inspector_node").remappings == (("/joint_states", "/robot/joint_states"),)
    with pytest.raises(LaunchError, match="inspector:='yes please': expected true or false"):
        launch("sim", {"inspector": "yes please"}, duration=0.1)
    with pytest.raises(LaunchError, match="inspector_node has no parameter prot"):
        launch("sim", {"inspector": "true", "inspector_node.prot": "1"}, duration=0.1)


@pytest.mark.ros
@pytest.mark.timeout(60)
def test_launch_with_inspector_true_starts_the_inspector(tmp_path):
    out = io.StringIO()
    rc = launch("gazebo", {"inspector": "true", "inspector_node.port": 0}, nodes=["inspector_node"], output=out,
                duration=6.0)
    text = out.getvalue()
    assert rc == 0, text
    assert "[launch] started inspector_node" in text
    assert re.search(r"\[inspector_node\].*Foxglove WebSocket server on ws://127\.0\.0\.1:\d+", text), text
    assert "Traceback" not in text
