"""The Intera torque relay (``bin/intera_torque_relay``): ROS 2 torque commands -> the Sawyer's Intera SDK.

Runs on the robot's ROS 1 side (rospy + ``intera_interface``), where ros1_bridge carries
/effort_controller/commands (std_msgs/Float64MultiArray, 7 torques in N m, right_j0..right_j6) from
ROS 2. What it does with the SDK (the calls in ``reference/intera.md``):

* start: ``rospy.init_node``, ``RobotEnable().enable()``, ``Limb(limb)``; the limb must have the
  seven arm joints; ``Limb.set_command_timeout(timeout)``: if torque commands stop for ``timeout``
  seconds the robot itself leaves torque mode and holds its pose;
* every command: dropped with a throttled error if it does not have 7 finite values, else clipped to
  the torque limits and sent with ``Limb.set_joint_torques`` (JointCommand in TORQUE_MODE; the
  robot adds its gravity compensation). A dropped command sends nothing, so a stream of bad
  commands ends in the robot's command timeout like a silent one;
* shutdown (``rospy.on_shutdown``): no command is forwarded any more, then
  ``Limb.exit_control_mode()``.

The torque limits are the arm's (:func:`solar_ros.runtime.safety.arm_torque_limits`, from
``config/sawyer_parameters.yaml``: the controller's default limits come from the same place);
``--torque-limits`` may lower them, e.g. for the first episodes on the robot, never raise them.

Nothing here imports rospy or intera_interface at module level: :func:`main` imports them, so
tests run the relay against an emulation of those calls.
"""
from __future__ import annotations

import argparse
import math
import threading
from typing import Callable, Sequence

from .safety import SAWYER_JOINT_NAMES, arm_torque_limits


class TorqueRelay:
    """Validates, clips and forwards torque commands to an ``intera_interface.Limb``-like object."""

    def __init__(self, limb, torque_limits: Sequence[float], log_error: Callable[[str], None],
                 joint_names: Sequence[str] = SAWYER_JOINT_NAMES) -> None:
        limits = [float(v) for v in torque_limits]
        if len(limits) != len(joint_names) or not all(math.isfinite(v) and v > 0 for v in limits):
            raise ValueError(f"torque limits must be {len(joint_names)} positive finite numbers, got {limits}")
        missing = [n for n in joint_names if n not in list(limb.joint_names())]
        if missing:
            raise ValueError(f"the limb has no joints {missing} (it has {list(limb.joint_names())})")
        self.limb = limb
        self.joint_names = tuple(joint_names)
        self.torque_limits = tuple(limits)
        self._log_error = log_error
        self._lock = threading.Lock()  # rospy runs subscriber callbacks and shutdown hooks on other threads
        self.stopped = False
        self.forwarded = 0
        self.dropped = 0
        self.clipped = 0

    def on_command(self, values: Sequence[float]) -> bool:
        """One command: forwarded (clipped) -> True; malformed or after shutdown -> dropped, False."""
        u = list(values)
        n = len(self.joint_names)
        if len(u) != n or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in u):
            self.dropped += 1
            self._log_error(f"dropping torque command: need {n} finite values, got {u!r} ({self.dropped} dropped)")
            return False
        clipped = [max(-lim, min(lim, float(v))) for v, lim in zip(u, self.torque_limits)]
        with self._lock:
            if self.stopped:
                return False
            if clipped != u:
                self.clipped += 1
            self.limb.set_joint_torques(dict(zip(self.joint_names, clipped)))
            self.forwarded += 1
        return True

    def shutdown(self) -> None:
        """Forward nothing more and hand the arm back (``exit_control_mode``); once."""
        with self._lock:
            if self.stopped:
                return
            self.stopped = True
            self.limb.exit_control_mode()


def relay_torque_limits(override: str | None = None, arm_limits: Sequence[float] | None = None) -> tuple[float, ...]:
    """The arm's torque limits, or ``override`` (comma-separated N m) if every value is within them."""
    arm = tuple(arm_limits) if arm_limits is not None else arm_torque_limits()
    if not override:
        return arm
    try:
        values = tuple(float(v) for v in override.split(","))
    except ValueError:
        raise ValueError(f"--torque-limits must be {len(arm)} comma-separated numbers, got {override!r}") from None
    if len(values) != len(arm) or not all(math.isfinite(v) and 0 < v <= a for v, a in zip(values, arm)):
        raise ValueError(f"--torque-limits must be {len(arm)} positive numbers within the arm's limits {list(arm)}, "
                         f"got {override!r}")
    return values


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="intera_torque_relay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limb", default="right")
    parser.add_argument("--timeout", type=float, default=0.05,
                        help="seconds without a command before the robot holds its pose (> 0)")
    parser.add_argument("--topic", default="/effort_controller/commands")
    parser.add_argument("--torque-limits", default="",
                        help="comma-separated N m per joint, at most the arm's (default: the arm's)")
    args = parser.parse_args(list(argv))
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        parser.error(f"--timeout must be a positive number of seconds, got {args.timeout}")
    try:
        args.torque_limits = relay_torque_limits(args.torque_limits)
    except ValueError as err:
        parser.error(str(err))
    return args


def main(argv: Sequence[str]) -> int:
    """Run the relay until ROS 1 shuts down (``argv`` as ``sys.argv``: program name first)."""
    import intera_interface
    import rospy
    from std_msgs.msg import Float64MultiArray

    args = parse_args(rospy.myargv(list(argv))[1:])
    rospy.init_node("solar_intera_torque_relay")
    intera_interface.RobotEnable().enable()
    limb = intera_interface.Limb(args.limb)
    relay = TorqueRelay(limb, args.torque_limits, lambda text: rospy.logerr_throttle(2.0, text))
    limb.set_command_timeout(args.timeout)
    rospy.on_shutdown(relay.shutdown)
    rospy.Subscriber(args.topic, Float64MultiArray, lambda msg: relay.on_command(msg.data),
                     queue_size=1, tcp_nodelay=True)
    rospy.loginfo("relaying %s to the %s limb's torque commands (timeout %.3f s, limits %s N m)",
                  args.topic, args.limb, args.timeout, list(relay.torque_limits))
    rospy.spin()
    return 0
