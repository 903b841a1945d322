"""The launch files (for a full ROS 2 install) and solar_ros.launcher describe the same processes.

``launch``/``launch_ros`` do not exist here, so each launch file is imported with small stand-ins
for those modules that record what the file builds; the solar_ros nodes it declares must match
``PROFILES`` (executables, names, parameter files, remappings), and every file must exist.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

from solar_ros.launcher import PROFILES, middleware_env

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILES = {"sim": "sim.launch.py", "gazebo": "gazebo.launch.py", "real_sawyer": "real_sawyer.launch.py"}


class Recorded:
    """Stand-in for any launch action/substitution: keeps its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __getattr__(self, name):
        return self.kwargs.get(name)


def fake_modules(share_dirs: dict[str, str]) -> dict[str, types.ModuleType]:
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    def cls(name):
        return type(name, (Recorded,), {})

    class LaunchDescription(Recorded):
        @property
        def entities(self):
            return self.args[0]

    def share(pkg):
        return share_dirs.get(pkg, f"/opt/ros/share/{pkg}")

    return {
        "launch": module("launch", LaunchDescription=LaunchDescription),
        "launch.actions": module("launch.actions", **{n: cls(n) for n in (
            "DeclareLaunchArgument", "IncludeLaunchDescription", "ExecuteProcess", "GroupAction", "TimerAction",
            "Shutdown")}),
        "launch.substitutions": module("launch.substitutions", LaunchConfiguration=cls("LaunchConfiguration"),
                                       PathJoinSubstitution=cls("PathJoinSubstitution")),
        "launch.conditions": module("launch.conditions", IfCondition=cls("IfCondition"),
                                    UnlessCondition=cls("UnlessCondition")),
        "launch.launch_description_sources": module("launch.launch_description_sources",
                                                    PythonLaunchDescriptionSource=cls("PythonLaunchDescriptionSource")),
        "launch_ros": module("launch_ros"),
        "launch_ros.actions": module("launch_ros.actions", Node=cls("Node")),
        "ament_index_python": module("ament_index_python"),
        "ament_index_python.packages": module("ament_index_python.packages", get_package_share_directory=share),
    }


def load_launch_file(path: Path, monkeypatch):
    for name, mod in fake_modules({"solar_ros": str(REPO)}).items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location(f"launch_file_{path.stem.replace('.', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


@pytest.mark.parametrize("profile", sorted(LAUNCH_FILES))
def test_launch_file_matches_the_launcher_profile(profile, monkeypatch):
    description = load_launch_file(REPO / "launch" / LAUNCH_FILES[profile], monkeypatch)
    ours = [e for e in description.entities if type(e).__name__ == "Node" and e.kwargs.get("package") == "solar_ros"]
    spec = PROFILES[profile]
    optional = [n for n in ours if n.kwargs.get("condition") is not None]
    ours = [n for n in ours if n.kwargs.get("condition") is None]
    assert [n.kwargs["executable"] for n in ours] == [n.name for n in spec.nodes]
    assert [n.kwargs["executable"] for n in optional] == [n.name for n in spec.optional] == ["inspector_node",
                                                                                                "labeller_node"]
    switches = {e.args[0]: e.kwargs["default_value"] for e in description.entities
                if type(e).__name__ == "DeclareLaunchArgument"}
    for node, arg in zip(optional, ("inspector", "labeller")):  # started only with inspector:=true (default
        condition = node.kwargs["condition"]                     # false) or labeller:=true, as `solar-ros launch`
        assert type(condition).__name__ == "IfCondition"
        assert condition.args[0].args == (arg,) and switches[arg] == "false"
    for node, expected in zip(ours + optional, spec.nodes + spec.optional):
        assert node.kwargs["name"] == expected.name
        files = [p for p in node.kwargs["parameters"] if isinstance(p, str)]
        assert files == [str(REPO / "config" / f) for f in expected.params_files]
        assert all(os.path.isfile(f) for f in files), files
        assert [tuple(r) for r in node.kwargs.get("remappings", [])] == list(expected.remappings)
        # the stack's Fast DDS profile, as `solar-ros launch` gives every node (config/fastdds_profile.xml)
        assert node.kwargs["additional_env"] == middleware_env(str(REPO / "config"))


@pytest.mark.parametrize("profile", sorted(LAUNCH_FILES))
def test_launch_file_respawns_every_node_and_ends_with_the_trainer(profile, monkeypatch):
    from types import SimpleNamespace

    description = load_launch_file(REPO / "launch" / LAUNCH_FILES[profile], monkeypatch)
    ours = [e for e in description.entities if type(e).__name__ == "Node" and e.kwargs.get("package") == "solar_ros"]
    spec = PROFILES[profile]
    assert spec.respawn and spec.respawn_delay > 0 and spec.max_respawns > 0
    for node in ours:  # launch_ros's respawn settings, the same values `solar-ros launch` uses
        assert node.kwargs["respawn"] is True, node.kwargs["name"]
        assert node.kwargs["respawn_delay"] == spec.respawn_delay
        assert node.kwargs["respawn_max_retries"] == spec.max_respawns
        if node.kwargs["name"] != spec.main_node:
            assert node.kwargs.get("on_exit") is None
    if spec.main_node is None:
        return
    on_exit = next(n for n in ours if n.kwargs["name"] == spec.main_node).kwargs["on_exit"]
    # launch calls on_exit(ProcessExited event, context) on every exit of the process
    assert on_exit(SimpleNamespace(returncode=-9), None) is None, "killed: respawned, the launch goes on"
    for status in (0, 1):
        actions = on_exit(SimpleNamespace(returncode=status), None)
        assert [type(a).__name__ for a in actions] == ["Shutdown"], "its own exit ends the launch"
        assert f"status {status}" in actions[0].kwargs["reason"]


def test_every_profile_node_has_an_executable_module_and_parameters():
    for spec in PROFILES.values():
        for node in spec.nodes + spec.optional:
            script = REPO / "bin" / node.name
            assert script.is_file() and os.access(script, os.X_OK), f"bin/{node.name} missing or not executable"
            assert f"from solar_ros.nodes.{node.name} import main" in script.read_text()
            assert callable(importlib.import_module(node.module).main)
            for f in node.params_files:
                assert (REPO / "config" / f).is_file(), f"config/{f} missing"


def test_launch_files_and_ros1_relay_are_valid_python():
    for path in list((REPO / "launch").glob("*.launch.py")) + [REPO / "bin" / "intera_torque_relay"]:
        ast.parse(path.read_text(), filename=str(path))
    assert (REPO / "config" / "gazebo_controllers.yaml").is_file()


@pytest.mark.parametrize("profile", sorted(LAUNCH_FILES))
def test_launch_file_rejects_an_unknown_parameter_in_its_files(profile, monkeypatch, tmp_path):
    import shutil

    import yaml

    from solar_ros.launcher import LaunchError

    shutil.copytree(REPO / "config", tmp_path / "config")
    node = PROFILES[profile].nodes[0]
    path = tmp_path / "config" / node.params_files[-1]
    content = yaml.safe_load(path.read_text())
    section = next(iter(content))
    content[section]["ros__parameters"]["not_a_parameter_of_this_node"] = 1
    path.write_text(yaml.safe_dump(content))
    for name, mod in fake_modules({"solar_ros": str(tmp_path)}).items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("launch_file_bad", REPO / "launch" / LAUNCH_FILES[profile])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(LaunchError, match="not_a_parameter_of_this_node"):
        module.generate_launch_description()
