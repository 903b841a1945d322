"""A small emulation of the rospy and intera_interface calls the Intera torque relay makes
(``reference/intera.md``), for tests that put it in ``sys.modules`` in place of the ROS 1 packages.

* ``intera_interface.RobotEnable().enable()`` records that the robot was enabled.
* ``intera_interface.Limb(name)``: ``joint_names()`` (right_j0..right_j6), ``set_command_timeout(s)``,
  ``set_joint_torques(dict)``, ``exit_control_mode()``. Like the robot, the limb is in torque mode
  only while torque commands keep arriving within the command timeout (then it holds its pose) and
  until ``exit_control_mode``; time is the emulation's fake clock (``Robot.now``, seconds).
* ``rospy``: ``myargv``, ``init_node``, ``Subscriber`` (the callback is kept, so a test can deliver
  messages), ``on_shutdown``, ``spin`` (runs the test's scenario, then the shutdown hooks, as a
  Ctrl-C would), ``loginfo``, ``logerr``, ``logerr_throttle`` (throttled on the fake clock).
* ``std_msgs.msg.Float64MultiArray`` with its ``data`` field.
"""
from __future__ import annotations

import types
from typing import Callable

ARM = tuple(f"right_j{i}" for i in range(7))


class Float64MultiArray:
    def __init__(self, data=()) -> None:
        self.data = tuple(data)


class Robot:
    """The emulated robot and ROS 1 master: everything the relay did, on a fake clock."""

    def __init__(self, joint_names=ARM) -> None:
        self.now = 0.0
        self.joint_names = tuple(joint_names)
        self.calls: list[tuple] = []
        """(call, args) in order: enable, limb, set_command_timeout, set_joint_torques, exit_control_mode."""
        self.enabled = False
        self.node_name = ""
        self.command_timeout: float | None = None
        self.torques: list[tuple[float, dict]] = []
        """(time, {joint: torque}) for every set_joint_torques."""
        self.exited = False
        self.subscribers: list[tuple[str, type, Callable, dict]] = []
        self.shutdown_hooks: list[Callable] = []
        self.errors: list[str] = []
        self.infos: list[str] = []
        self._throttle: dict[str, float] = {}
        self.scenario: Callable[[Robot], None] = lambda robot: None

    # ---- what a test does ----------------------------------------------------------------------

    def publish(self, data) -> None:
        """Deliver one Float64MultiArray to every subscriber."""
        msg = Float64MultiArray(data)
        for _topic, _type, callback, _kw in self.subscribers:
            callback(msg)

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def mode(self) -> str:
        """``torque`` while commands arrive within the command timeout, else ``holding`` (the robot's
        position mode at its current pose)."""
        if self.exited or not self.torques or self.command_timeout is None:
            return "holding"
        return "torque" if self.now - self.torques[-1][0] <= self.command_timeout else "holding"

    # ---- the modules -----------------------------------------------------------------------------

    def modules(self) -> dict[str, types.ModuleType]:
        """``rospy``, ``intera_interface``, ``std_msgs`` and ``std_msgs.msg`` for ``sys.modules``."""
        robot = self

        class RobotEnable:
            def enable(self) -> None:
                robot.enabled = True
                robot.calls.append(("enable",))

        class Limb:
            def __init__(self, limb: str = "right") -> None:
                robot.calls.append(("limb", limb))

            def joint_names(self) -> list[str]:
                return list(robot.joint_names)

            def set_command_timeout(self, timeout: float) -> None:
                robot.command_timeout = float(timeout)
                robot.calls.append(("set_command_timeout", float(timeout)))

            def set_joint_torques(self, torques: dict) -> None:
                if robot.exited:
                    raise RuntimeError("set_joint_torques after exit_control_mode")
                robot.torques.append((robot.now, dict(torques)))
                robot.calls.append(("set_joint_torques", dict(torques)))

            def exit_control_mode(self) -> None:
                robot.exited = True
                robot.calls.append(("exit_control_mode",))

        intera = types.ModuleType("intera_interface")
        intera.RobotEnable = RobotEnable
        intera.Limb = Limb

        rospy = types.ModuleType("rospy")
        rospy.myargv = lambda argv=None: [a for a in (argv or []) if ":=" not in a]

        def init_node(name, **_kw):
            robot.node_name = name

        def subscriber(topic, msg_type, callback, **kw):
            robot.subscribers.append((topic, msg_type, callback, kw))

        def spin():
            robot.scenario(robot)
            for hook in robot.shutdown_hooks:  # what rospy does on Ctrl-C
                hook()

        def logerr_throttle(period, text):
            key = text.split(":", 1)[0]
            if robot.now - robot._throttle.get(key, -1e9) >= period:
                robot._throttle[key] = robot.now
                robot.errors.append(text)

        rospy.init_node = init_node
        rospy.Subscriber = subscriber
        rospy.on_shutdown = robot.shutdown_hooks.append
        rospy.spin = spin
        rospy.loginfo = lambda text, *args: robot.infos.append(text % args if args else text)
        rospy.logerr = lambda text, *args: robot.errors.append(text % args if args else text)
        rospy.logerr_throttle = logerr_throttle

        std_msgs = types.ModuleType("std_msgs")
        std_msgs_msg = types.ModuleType("std_msgs.msg")
        std_msgs_msg.Float64MultiArray = Float64MultiArray
        std_msgs.msg = std_msgs_msg
        return {"rospy": rospy, "intera_interface": intera, "std_msgs": std_msgs, "std_msgs.msg": std_msgs_msg}
