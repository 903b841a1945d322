"""bin/intera_torque_relay against an emulation of the rospy / intera_interface calls it makes
(intera_emulator.py, put in sys.modules): enable, command timeout, clipping to the arm's torque
limits (the controller's, from config/sawyer_parameters.yaml), dropping NaN/Inf and wrong-length
commands, the robot holding its pose when commands stop, shutdown."""
from __future__ import annotations

import math
import runpy
import sys
from pathlib import Path

import pytest
import yaml
from intera_emulator import ARM, Robot

from solar_ros.runtime.intera_relay import TorqueRelay, relay_torque_limits
from solar_ros.runtime.safety import SAWYER_TORQUE_LIMITS, arm_torque_limits

REPO = Path(__file__).resolve().parents[2]
LIMITS = (80.0, 80.0, 40.0, 40.0, 9.0, 9.0, 9.0)  # reference/sawyer_parameters.yaml


@pytest.fixture
def robot(monkeypatch):
    r = Robot()
    for name, module in r.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    return r


def run_relay(robot: Robot, scenario, *args: str) -> int:
    """Run the executable's main() with ``args``; ``scenario(robot)`` runs inside rospy.spin()."""
    robot.scenario = scenario
    main = runpy.run_path(str(REPO / "bin" / "intera_torque_relay"), run_name="relay_under_test")["main"]
    return main(["intera_torque_relay", *args])


def torques(entry) -> list[float]:
    return [entry[1][n] for n in ARM]


def test_start_up_enables_sets_the_timeout_then_subscribes(robot):
    def scenario(r):
        assert r.enabled and r.node_name
        assert [c[0] for c in r.calls] == ["enable", "limb", "set_command_timeout"]
        assert r.command_timeout == 0.02
        (topic, msg_type, _cb, kw), = r.subscribers
        assert topic == "/effort_controller/commands" and msg_type.__name__ == "Float64MultiArray"
        assert kw["queue_size"] == 1
    assert run_relay(robot, scenario, "--timeout", "0.02", "__name:=relay") == 0
    assert robot.calls[-1] == ("exit_control_mode",)


def test_commands_are_clipped_to_the_arm_limits_and_bad_ones_dropped(robot):
    good = [1.0, -2.0, 3.0, -4.0, 5.0, -6.0, 0.5]
    beyond = [100.0, -100.0, 50.0, -41.0, 20.0, -9.5, 9.0]

    def scenario(r):
        r.publish(good)
        r.publish(beyond)
        for bad in ([math.nan] + [0.0] * 6, [0.0] * 6 + [math.inf], [1.0] * 6, [1.0] * 8, [], [-math.inf] * 7):
            r.publish(bad)
        r.publish(good)
    assert run_relay(robot, scenario) == 0
    sent = [torques(t) for t in robot.torques]
    assert sent == [good, [80.0, -80.0, 40.0, -40.0, 9.0, -9.0, 9.0], good], "bad commands must not reach the robot"
    assert all(math.isfinite(v) for row in sent for v in row)
    assert len(robot.errors) == 1 and "dropping torque command: need 7 finite values" in robot.errors[0], \
        "errors are throttled"


def test_the_robot_holds_its_pose_when_commands_stop_or_are_all_bad(robot):
    def scenario(r):
        r.publish([1.0] * 7)
        assert r.mode() == "torque"
        r.advance(0.04)
        assert r.mode() == "torque", "within the 0.05 s timeout"
        r.advance(0.02)
        assert r.mode() == "holding", "no command for longer than the timeout"
        r.publish([2.0] * 7)
        assert r.mode() == "torque"
        for _ in range(10):  # only NaN commands: dropped, so the robot times out as if silent
            r.advance(0.01)
            r.publish([math.nan] * 7)
        assert r.mode() == "holding"
    assert run_relay(robot, scenario, "--timeout", "0.05") == 0
    assert robot.command_timeout == 0.05


@pytest.mark.parametrize("timeout", ["0", "-0.1", "nan", "inf"])
def test_a_bad_timeout_is_refused_before_touching_the_robot(robot, timeout, capsys):
    with pytest.raises(SystemExit) as exc:
        run_relay(robot, lambda r: None, "--timeout", timeout)
    assert exc.value.code == 2 and "--timeout must be a positive number" in capsys.readouterr().err
    assert robot.calls == [] and not robot.enabled


def test_shutdown_exits_control_mode_once_and_forwards_nothing_after(robot):
    def scenario(r):
        r.publish([1.0] * 7)
        for hook in r.shutdown_hooks:
            hook()
        r.publish([2.0] * 7)  # a command still in flight after the shutdown began
    assert run_relay(robot, scenario) == 0
    assert [c[0] for c in robot.calls].count("exit_control_mode") == 1
    assert robot.calls[-1] == ("exit_control_mode",)
    assert [torques(t) for t in robot.torques] == [[1.0] * 7]
    assert robot.mode() == "holding"


def test_lower_limits_for_first_trials_but_never_higher(robot, capsys):
    def scenario(r):
        r.publish([100.0] * 7)
    assert run_relay(robot, scenario, "--torque-limits", "8,8,4,4,1,1,1") == 0
    assert torques(robot.torques[0]) == [8.0, 8.0, 4.0, 4.0, 1.0, 1.0, 1.0]
    for bad in ("8,8,4,4,1,1", "81,8,4,4,1,1,1", "8,8,4,4,1,1,0", "a,b"):
        with pytest.raises(SystemExit):
            run_relay(Robot(), lambda r: None, "--torque-limits", bad)
        assert "--torque-limits must be" in capsys.readouterr().err


def test_torque_limits_come_from_the_arm_facts_like_the_controllers(tmp_path):
    from solar_ros.envs.sawyer_model import joint_limits, load_sawyer_params

    facts = tuple(joint_limits(load_sawyer_params())["effort"])
    assert facts == LIMITS
    assert arm_torque_limits() == facts == SAWYER_TORQUE_LIMITS, "the controller's default limits"
    assert relay_torque_limits() == facts, "the relay's limits"
    # One source: no parameter file writes the limits down again (the controller's default is read from the facts).
    for path in sorted((REPO / "config").glob("*.yaml")):
        for section in (yaml.safe_load(path.read_text()) or {}).values():
            if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
                assert "torque_limits" not in section["ros__parameters"], f"{path.name} repeats the torque limits"
    # The limits are read from the file, not written down a second time.
    params = yaml.safe_load((REPO / "config" / "sawyer_parameters.yaml").read_text())
    for joint in params["joints"]:
        if joint["name"] == "right_j6":
            joint["limit"]["effort"] = 4.5
    (tmp_path / "sawyer_parameters.yaml").write_text(yaml.safe_dump(params))
    assert arm_torque_limits(tmp_path / "sawyer_parameters.yaml")[6] == 4.5


def test_relay_core_refuses_a_limb_without_the_arm_joints():
    class Limb:
        def joint_names(self):
            return ["left_j0"]
    with pytest.raises(ValueError, match="no joints"):
        TorqueRelay(Limb(), LIMITS, print)
    with pytest.raises(ValueError, match="positive finite"):
        TorqueRelay(Limb(), LIMITS[:6], print)
