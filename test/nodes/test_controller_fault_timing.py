"""controller_node in its own process: how fast a fault or the e-stop brings zero torque, measured.

Bound: zero torque within 2 command periods of the fault's onset, plus a scheduling margin. The
controller's own clock stamps each CommandInfo (status FAULT/ESTOP with a zero command), and the
test's clock is the same system clock, so onset -> zero command is measured across the processes:

* stale joint state: onset = the newest joint state's stamp + ``max_joint_age`` (the instant it goes
  stale); the controller finds it at its next tick;
* NaN joint state: onset = the NaN message's publication by the test (so the figure includes the
  transport); the controller commands zero on its arrival;
* e-stop: onset = the test sending the SetBool request; the controller commands zero in the handler.

The fake-clock version of the same rules, without scheduling, is in test/runtime/test_runtime_safety.py
(at most 1 period for staleness, 0 for a NaN). Here the processes share 2 cores with whatever else
runs, so the bound carries SCHEDULING_MARGIN: a timer or message callback can be late by a few ms
(the controller benchmark's gap p99 was 2-5 ms when the machine was quiet, 7-13 ms at load 2-6, with
single gaps up to ~60 ms; docs/ros_interfaces.md, "Performance").
"""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from solar_ros.core.types import LinearGaussianPolicy as LGPolicy
from solar_ros.msg import CommandInfo, EpisodeEvent, LinearGaussianPolicy
from solar_ros.nodes import contract
from solar_ros.runtime.policy_msg import PolicyPackage, policy_to_msg
from solar_ros.runtime.safety import SAWYER_JOINT_NAMES
from solar_ros.srv import StartEpisode

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

RATE = 250.0
PERIOD_MS = 1e3 / RATE
MAX_JOINT_AGE = 0.1
SCHEDULING_MARGIN_MS = 60.0
"""Allowance for the OS scheduling the controller's timer or callback late on a shared 2-core machine."""
BOUND_MS = 2 * PERIOD_MS + SCHEDULING_MARGIN_MS


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class Rig:
    def __init__(self, ros, controller):
        self.ros, self.controller = ros, controller
        n = ros.node
        self.feeding = True
        self.nan = False
        self.last_stamp = 0
        self.infos: list[CommandInfo] = []
        self.commands: list[tuple[int, np.ndarray]] = []
        self.events: list[EpisodeEvent] = []
        self.joint_pub = n.create_publisher(JointState, contract.JOINT_STATES, contract.RELIABLE_QOS)
        self.policy_pub = n.create_publisher(LinearGaussianPolicy, contract.POLICY, contract.POLICY_QOS)
        n.create_subscription(CommandInfo, contract.COMMAND_INFO, self.infos.append, contract.EVENT_QOS)
        n.create_subscription(Float64MultiArray, contract.COMMANDS,
                              lambda m: self.commands.append((self.now(), np.array(m.data))), contract.RELIABLE_QOS)
        n.create_subscription(EpisodeEvent, contract.EPISODE, self.events.append, contract.EVENT_QOS)
        self.start_cli = n.create_client(StartEpisode, contract.START_EPISODE)
        self.stop_cli = n.create_client(Trigger, contract.STOP_EPISODE)
        self.estop_cli = n.create_client(SetBool, contract.ESTOP)
        n.create_timer(0.005, self.feed)

    def now(self) -> int:
        return self.ros.node.get_clock().now().nanoseconds

    def publish_joints(self, nan: bool = False) -> int:
        js = JointState()
        t = self.now()
        js.header.stamp.sec, js.header.stamp.nanosec = divmod(t, 1_000_000_000)
        js.name = list(SAWYER_JOINT_NAMES)
        js.position = [float("nan")] * 7 if nan else [0.1] * 7
        js.velocity = [0.0] * 7
        self.joint_pub.publish(js)
        if not nan:
            self.last_stamp = t
        return t

    def feed(self) -> None:
        if self.feeding:
            self.publish_joints()

    def start(self, episode_id: str) -> None:
        self.feeding = True
        self.ros.spin(0.1)  # fresh joint states
        r = self.ros.call(self.start_cli, StartEpisode.Request(episode_id=episode_id, deterministic=True))
        assert r.success, r.message
        self.ros.spin_until(lambda: any(i.status == CommandInfo.ACTIVE for i in self.infos), 5, "active commands")

    def first_info(self, status: int, after_ns: int, timeout: float = 5.0) -> CommandInfo:
        def found():
            return [i for i in self.infos if i.status == status and _ns(i.header.stamp) >= after_ns]
        self.ros.spin_until(lambda: found(), timeout, f"a CommandInfo with status {status}")
        return found()[0]

    def ended(self, episode_id: str) -> EpisodeEvent:
        def find():
            return [e for e in self.events if e.episode_id == episode_id and e.event != EpisodeEvent.START]
        self.ros.spin_until(lambda: find(), 5, f"the end of {episode_id}")
        return find()[0]

    def zero_after(self, t_ns: int, n: int = 20) -> bool:
        """Whether the commands received from 50 ms after ``t_ns`` on (those sent before it have arrived
        by then) are zero."""
        t_ns += 50_000_000
        self.ros.spin_until(lambda: len([c for t, c in self.commands if t > t_ns]) >= n, 5, f"{n} commands")
        return all(np.all(c == 0.0) for t, c in self.commands if t > t_ns)


@pytest.fixture(scope="module")
def rig(ros, start_node):
    controller = start_node("controller_node", {
        "state_source": "joints", "rate": RATE, "max_joint_age": MAX_JOINT_AGE, "abort_on_fault": True,
        "stats_period": 0.0})
    r = Rig(ros, controller)
    ros.wait_for_publishers(contract.COMMANDS, timeout=20)
    ros.wait_for_subscribers(r.joint_pub)
    ros.wait_for_subscribers(r.policy_pub)
    T = 400
    pol = LGPolicy(np.zeros((T, 7, 14)), np.full((T, 7), 1.0), np.tile(np.eye(7) * 1e-4, (T, 1, 1)))
    r.policy_pub.publish(policy_to_msg(PolicyPackage(pol, "timing", 0.05, "joints"), LinearGaussianPolicy()))
    ros.spin_until(lambda: "policy 'timing'" in controller.log(), 10, "the policy")
    yield r
    assert controller.alive(), controller.log()


def _report(what: str, latency_ms: float) -> None:
    print(f"\n{what}: {latency_ms:.2f} ms from the fault's onset to the first zero command "
          f"(bound {BOUND_MS:.0f} ms = 2 periods of {PERIOD_MS:g} ms + {SCHEDULING_MARGIN_MS:g} ms scheduling margin)")


def test_stale_joint_state_zero_torque_within_two_periods(rig, ros):
    rig.start("stale")
    rig.feeding = False
    try:
        ros.spin(0.02)  # let the last joint state arrive
        onset = rig.last_stamp + int(MAX_JOINT_AGE * 1e9)
        info = rig.first_info(CommandInfo.FAULT, onset - int(MAX_JOINT_AGE * 1e9))
        latency_ms = (_ns(info.header.stamp) - onset) * 1e-6
        _report("stale joint state", latency_ms)
        assert latency_ms >= 0, "zero torque before the state was stale"
        assert latency_ms <= BOUND_MS
        end = rig.ended("stale")
        assert end.event == EpisodeEvent.ABORT and "stale" in end.reason
        assert rig.zero_after(_ns(info.header.stamp))
    finally:
        rig.feeding = True
    ros.spin(0.2)


def test_nan_joint_state_zero_torque_within_two_periods(rig, ros):
    rig.start("nan")
    # The controller keeps only the newest joint state (best effort, depth 1), as a real-time consumer
    # should: a valid state that arrives before it reads the NaN supersedes it. So the feed pauses at the
    # NaN until the fault (the joint age limit is far longer than the bound), and the zero command (and
    # the abort) must come from the NaN's arrival itself, not from staleness.
    rig.feeding = False
    onset = rig.publish_joints(nan=True)
    try:
        info = rig.first_info(CommandInfo.FAULT, onset)
    finally:
        rig.feeding = True
    latency_ms = (_ns(info.header.stamp) - onset) * 1e-6
    _report("NaN joint state (publication -> zero command, transport included)", latency_ms)
    assert latency_ms <= BOUND_MS
    end = rig.ended("nan")
    assert end.event == EpisodeEvent.ABORT and "NaN" in end.reason
    assert rig.zero_after(_ns(info.header.stamp))
    ros.spin(0.2)


def test_estop_zero_torque_latency(rig, ros):
    rig.start("estop")
    ros.spin_until(lambda: rig.estop_cli.service_is_ready(), 10, "the e-stop service")
    onset = rig.now()
    future = rig.estop_cli.call_async(SetBool.Request(data=True))
    info = rig.first_info(CommandInfo.ESTOP, onset)
    ros.spin_until(future.done, 5, "the e-stop reply")
    reply_ms = (rig.now() - onset) * 1e-6
    latency_ms = (_ns(info.header.stamp) - onset) * 1e-6
    ros.spin_until(lambda: any(t > onset and np.all(c == 0) for t, c in rig.commands), 5, "a zero command")
    received_ms = (next(t for t, c in rig.commands if t > onset and np.all(c == 0)) - onset) * 1e-6
    _report("e-stop service", latency_ms)
    print(f"e-stop: first zero command received by the test {received_ms:.2f} ms after the request, "
          f"service reply after {reply_ms:.2f} ms")
    try:
        assert latency_ms <= BOUND_MS
        assert rig.ended("estop").reason == "e-stop"
        assert rig.zero_after(_ns(info.header.stamp))
    finally:
        assert ros.call(rig.estop_cli, SetBool.Request(data=False)).success
