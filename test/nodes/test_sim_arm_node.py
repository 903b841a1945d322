"""sim_arm_node in its own process: contract topics (joint states, camera, clock, cost), /sim/reset,
torque commands move the arm the commanded way, stale commands fall back to zero torque, torques beyond
the arm's limits are applied clipped."""
from __future__ import annotations

import numpy as np
import pytest
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool

from solar_ros.msg import TaskCost
from solar_ros.nodes import contract
from solar_ros.runtime.safety import SAWYER_JOINT_NAMES, arm_torque_limits
from solar_ros.srv import ResetArm

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

NEUTRAL = np.array([0.0, -1.18, 0.0, 2.18, 0.0, 0.57, 3.3161])


class Arm:
    def __init__(self, ros):
        n = ros.node
        self.ros = ros
        self.joints: list[JointState] = []
        self.images: list[Image] = []
        self.clock: list[int] = []
        self.costs: list[TaskCost] = []
        n.create_subscription(JointState, contract.JOINT_STATES, self.joints.append, contract.RELIABLE_QOS)
        n.create_subscription(Image, contract.CAMERA_RAW, self.images.append, contract.SENSOR_QOS)
        n.create_subscription(Clock, contract.CLOCK, lambda m: self.clock.append(m.clock.sec * 10**9 + m.clock.nanosec),
                              contract.RELIABLE_QOS)
        n.create_subscription(TaskCost, contract.COST, self.costs.append, contract.RELIABLE_QOS)
        self.cmd_pub = n.create_publisher(Float64MultiArray, contract.COMMANDS, contract.RELIABLE_QOS)
        self.reset_cli = n.create_client(ResetArm, contract.SIM_RESET)
        self.pause_cli = n.create_client(SetBool, contract.SIM_PAUSE)

    def reset(self, seed: int, goal=(), wide_start: bool = False):
        return self.ros.call(self.reset_cli, ResetArm.Request(seed=seed, goal=list(goal), wide_start=wide_start),
                             timeout=20)

    def pause(self, on: bool):
        return self.ros.call(self.pause_cli, SetBool.Request(data=on), timeout=20)

    def command(self, torque, seconds: float):
        """Publish a constant torque at ~100 Hz for ``seconds`` (wall)."""
        msg = Float64MultiArray(data=[float(v) for v in torque])
        for _ in range(int(seconds / 0.01)):
            self.cmd_pub.publish(msg)
            self.ros.spin(0.01)

    def latest(self) -> JointState:
        return self.joints[-1]


@pytest.fixture(scope="module")
def arm(ros, start_node):
    node = start_node("sim_arm_node", {"seed": 3, "real_time_factor": 1.0, "camera_rate": 20.0})
    a = Arm(ros)
    ros.wait_for_subscribers(a.cmd_pub, timeout=30)
    ros.spin_until(lambda: a.joints and a.images and a.costs and len(a.clock) > 10, 30, "the simulator's topics")
    yield a, node
    assert node.alive(), node.log()


def test_contract_topics(arm, ros):
    a, _node = arm
    types = ros.topic_types()
    assert types[contract.JOINT_STATES] == ["sensor_msgs/msg/JointState"]
    assert types[contract.CAMERA_RAW] == ["sensor_msgs/msg/Image"]
    assert types[contract.CLOCK] == ["rosgraph_msgs/msg/Clock"]
    assert types[contract.COST] == ["solar_ros/msg/TaskCost"]
    a.joints.clear()
    ros.spin(0.5)
    js = a.joints[-1]
    assert list(js.name) == list(SAWYER_JOINT_NAMES)
    assert len(js.position) == len(js.velocity) == len(js.effort) == 7
    stamps = np.array([m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in a.joints])
    steps = np.diff(stamps)
    assert np.all(steps > 0) and np.all(steps % 2_000_000 == 0), "joint states every 2 ms of simulated time"
    assert np.median(steps) == 2_000_000
    assert np.all(np.diff(a.clock) > 0)
    img = a.images[-1]
    assert (img.height, img.width, img.encoding, img.step) == (64, 64, "rgb8", 192)
    pixels = np.frombuffer(img.data, np.uint8)
    assert pixels.size == 64 * 64 * 3 and pixels.std() > 5, "a rendered scene, not a blank image"
    cost = a.costs[-1]
    assert cost.task == "sawyer_reach" and cost.cost > 0 and 0 < cost.distance < 2


def test_reset_sets_goal_and_start_pose(arm):
    a, _node = arm
    r = a.reset(5, goal=[0.6, 0.1, 0.15])
    assert r.success, r.message
    np.testing.assert_allclose(r.goal, [0.6, 0.1, 0.15])
    assert list(r.joint_names) == list(SAWYER_JOINT_NAMES)
    assert np.all(np.abs(np.array(r.joint_positions) - NEUTRAL) <= 0.02 + 1e-9)
    bad = a.reset(5, goal=[5.0, 0.0, 0.0])
    assert not bad.success and "reach" in bad.message
    wide = a.reset(5, goal=[0.6, 0.1, 0.15], wide_start=True)  # the task's wide start: spread, seeded
    assert wide.success, wide.message
    spread = np.abs(np.array(wide.joint_positions) - NEUTRAL)
    assert spread.max() > 0.1 and np.all(spread <= 0.5 + 1e-9)
    np.testing.assert_array_equal(a.reset(5, goal=[0.6, 0.1, 0.15], wide_start=True).joint_positions,
                                  wide.joint_positions)


def test_every_frame_has_the_cost_of_its_state_after_any_reset(arm, ros):
    """At equal camera and cost rates each frame's stamp has a cost sample (a fresh one at the reset, then
    both every 50 ms), whatever the phase of the reset: the recorder pairs them by stamp.

    Messages on two topics may arrive in another order than they were sent: a frame sent before the reset can
    arrive after the service's answer, its cost sample before it. So the frames checked are those stamped at or
    after the first cost sample received after the reset (costs arrive in order), once the costs have caught up."""
    a, _node = arm
    stamp = lambda m: m.header.stamp.sec * 10**9 + m.header.stamp.nanosec  # noqa: E731

    def checked():
        first_cost = stamp(a.costs[0]) if a.costs else None
        return [stamp(m) for m in a.images if first_cost is not None and stamp(m) >= first_cost]

    for delay in (0.013, 0.031):
        ros.spin(delay)
        assert a.reset(7).success
        a.images.clear()
        a.costs.clear()
        ros.spin_until(lambda: len(checked()) >= 4 and stamp(a.costs[-1]) >= max(checked()), 10,
                       "frames and costs after the reset")
        costs = {stamp(m) for m in a.costs}
        assert set(checked()) <= costs, "a cost sample at every frame's stamp"


def test_torque_moves_the_joint_the_commanded_way_and_times_out(arm, ros):
    a, node = arm
    for sign in (+1.0, -1.0):
        assert a.reset(11).success
        ros.spin(0.1)
        q_start = a.latest().position[6]
        torque = np.zeros(7)
        torque[6] = 3.0 * sign
        a.command(torque, 0.4)
        js = a.latest()
        moved = js.position[6] - q_start
        assert sign * moved > 0.05, f"wrist joint moved {moved:+.3f} rad under {torque[6]:+.1f} N m"
        assert js.effort[6] == pytest.approx(3.0 * sign), "effort reports the applied torque"
        assert abs(js.position[0] - NEUTRAL[0]) < 0.1, "the other joints hold (gravity compensation)"
        # No more commands: after the 0.2 s command timeout the arm gets zero torque.
        ros.spin(0.5)
        assert a.latest().effort[6] == 0.0
    a.command([1.0] * 6, 0.05)        # wrong length
    a.command([np.nan] * 7, 0.05)     # NaN
    ros.spin(0.1)
    assert a.latest().effort[6] == 0.0
    assert "ignoring torque command" in node.log()


def test_torques_beyond_the_arms_limits_are_applied_clipped(arm, ros):
    a, _node = arm
    limits = np.array(arm_torque_limits())  # config/sawyer_parameters.yaml, as for the controller
    assert a.reset(12).success
    beyond = np.array([200.0, -200.0, 100.0, -100.0, 30.0, -30.0, 12.0])
    a.command(beyond, 0.1)
    applied = np.array(a.latest().effort)
    np.testing.assert_allclose(applied, np.clip(beyond, -limits, limits), rtol=0, atol=1e-9)
    within = np.array([1.0, -1.0, 0.5, -0.5, 0.2, -0.2, 0.1])
    a.command(within, 0.1)
    np.testing.assert_allclose(a.latest().effort, within, rtol=0, atol=1e-9)
    ros.spin(0.4)  # past the command timeout: zero torque again
    assert a.reset(12).success


def test_pause_stops_simulated_time_and_every_stream_until_resumed_or_reset(arm, ros):
    a, _node = arm
    stamp = lambda m: m.header.stamp.sec * 10**9 + m.header.stamp.nanosec  # noqa: E731
    for resume in ("service", "reset"):
        r = a.pause(True)
        assert r.success and r.message == "paused"
        ros.spin(0.3)  # what was on its way when it paused
        a.joints.clear(), a.images.clear(), a.costs.clear(), a.clock.clear()
        ros.spin(1.0)
        assert not (a.joints or a.images or a.costs or a.clock), "nothing is published while paused"
        assert a.pause(True).message == "paused"  # pausing again changes nothing
        if resume == "service":
            assert a.pause(False).message == "running"
        else:
            assert a.reset(4).success  # a reset leaves the simulator running
        ros.spin_until(lambda: len(a.joints) > 50 and a.images and a.costs, 10, "the streams after resuming")
        steps = np.diff([stamp(m) for m in a.joints])
        assert np.all(steps == 2_000_000), "simulated time goes on from where it stopped, step by step"
