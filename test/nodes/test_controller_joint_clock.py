"""controller_node with ``clock: joint_states`` (the sim profile's): one command per joint state, at the joint
state's stamp, whatever the wall clock says; no commands without joint states; the watchdog ends an episode
when they stop."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from solar_ros.core.types import LinearGaussianPolicy as LGPolicy
from solar_ros.msg import CommandInfo, EpisodeEvent, LinearGaussianPolicy
from solar_ros.nodes import contract
from solar_ros.runtime.policy_msg import PolicyPackage, policy_to_msg
from solar_ros.runtime.safety import SAWYER_JOINT_NAMES
from solar_ros.srv import StartEpisode

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

SIM_START_NS = 1_000_000_000_000
"""Simulated time of the first joint state: 1000 s, far from the wall clock (a timer-clocked controller on
wall time would find every such joint state stale)."""
PERIOD_NS = 2_000_000  # 500 Hz of simulated time


class JointClockRig:
    def __init__(self, ros, controller):
        self.ros, self.controller = ros, controller
        n = ros.node
        self.sim_ns = SIM_START_NS
        self.q = np.linspace(-0.3, 0.3, 7)
        self.commands: list[np.ndarray] = []
        self.infos: list[CommandInfo] = []
        self.events: list[EpisodeEvent] = []
        self.joint_pub = n.create_publisher(JointState, contract.JOINT_STATES, contract.RELIABLE_QOS)
        self.policy_pub = n.create_publisher(LinearGaussianPolicy, contract.POLICY, contract.POLICY_QOS)
        n.create_subscription(Float64MultiArray, contract.COMMANDS,
                              lambda m: self.commands.append(np.array(m.data)), contract.RELIABLE_QOS)
        n.create_subscription(CommandInfo, contract.COMMAND_INFO, self.infos.append, contract.EVENT_QOS)
        n.create_subscription(EpisodeEvent, contract.EPISODE, self.events.append, contract.EVENT_QOS)
        self.start_cli = n.create_client(StartEpisode, contract.START_EPISODE)

    def step(self, n: int = 1, spin: float = 0.0) -> None:
        """Publish ``n`` joint states, each one simulated period after the last, each after the controller's
        answer to the one before (its subscription keeps only the newest joint state)."""
        for _ in range(n):
            sent = len(self.commands)
            self.sim_ns += PERIOD_NS
            js = JointState()
            js.header.stamp.sec, js.header.stamp.nanosec = divmod(self.sim_ns, 1_000_000_000)
            js.name = list(SAWYER_JOINT_NAMES)
            js.position = self.q.tolist()
            js.velocity = [0.0] * 7
            js.effort = [0.0] * 7
            self.joint_pub.publish(js)
            self.ros.spin_until(lambda: len(self.commands) > sent, 5, "the answer to a joint state")
            self.ros.spin(spin)


@pytest.fixture(scope="module")
def rig(ros, start_node):
    controller = start_node("controller_node", {
        "state_source": "joints", "clock": "joint_states", "rate": 500.0, "hardware_timeout": 0.1,
        "max_joint_age": 0.05, "use_sim_time": False})
    r = JointClockRig(ros, controller)
    ros.wait_for_publishers(contract.COMMANDS, timeout=20)
    ros.wait_for_subscribers(r.joint_pub)
    ros.spin_until(lambda: "one command per joint state" in controller.log(), 20, "the controller's start-up")
    yield r
    assert controller.alive(), controller.log()


def test_one_command_per_joint_state_and_none_without(rig, ros):
    ros.spin(0.3)
    assert rig.commands == [], "no joint state yet: no command (there is no timer)"
    rig.step(40)
    ros.spin(0.3)
    assert len(rig.commands) == 40, f"{len(rig.commands)} commands for 40 joint states"
    assert np.all(np.array(rig.commands) == 0.0), "idle: zero torque"


def test_episode_runs_in_the_joint_states_time(rig, ros):
    T, dt = 10, 0.01  # 5 joint states (2 ms each) per step: the episode lasts 50 joint states of simulated time
    K = np.zeros((7, 14))
    K[0, 2] = 10.0  # q2 -> joint 0
    k = np.full(7, 0.5)
    package = PolicyPackage(LGPolicy(np.tile(K, (T, 1, 1)), np.tile(k, (T, 1)), np.tile(np.eye(7) * 1e-4, (T, 1, 1))),
                            "jc", dt, "joints")
    rig.policy_pub.publish(policy_to_msg(package, LinearGaussianPolicy()))
    ros.spin_until(lambda: "policy 'jc'" in rig.controller.log(), 10, "the policy")
    rig.step(2)
    reply = ros.call(rig.start_cli, StartEpisode.Request(episode_id="ep-jc", deterministic=True, noise_seed=0))
    assert reply.success, reply.message
    rig.commands.clear()
    rig.infos.clear()
    # Slowly in wall time (about 20 ms a joint state, 10 times the simulated period): the episode still lasts
    # 50 joint states, because its clock is theirs.
    for _ in range(60):
        rig.step(1, spin=0.02)
        if any(e.episode_id == "ep-jc" and e.event == EpisodeEvent.STOP for e in rig.events):
            break
    stop = [e for e in rig.events if e.episode_id == "ep-jc" and e.event != EpisodeEvent.START]
    assert stop and stop[0].event == EpisodeEvent.STOP and stop[0].reason == "horizon reached", stop
    assert stop[0].steps == T
    start = [e for e in rig.events if e.episode_id == "ep-jc" and e.event == EpisodeEvent.START][0]
    assert (stop[0].header.stamp.sec * 10**9 + stop[0].header.stamp.nanosec
            - start.header.stamp.sec * 10**9 - start.header.stamp.nanosec) == T * dt * 1e9
    ros.spin(0.1)
    # One command per joint state stamped inside the episode: 5 per step, less the start's own instant (the
    # start is answered by the next joint state).
    active = [c for c in rig.commands if np.any(c != 0)]
    assert len(active) == T * 5 - 1, f"{len(active)} active commands, one per joint state of the episode"
    np.testing.assert_allclose(active, np.tile(K @ np.concatenate([rig.q, np.zeros(7)]) + k, (len(active), 1)))
    # Each command is computed at its joint state's stamp, from that joint state.
    stamps = [i.header.stamp.sec * 10**9 + i.header.stamp.nanosec for i in rig.infos]
    sources = [i.source_stamp.sec * 10**9 + i.source_stamp.nanosec for i in rig.infos]
    assert len(stamps) == T * 5 - 1 and stamps == sources
    assert np.all(np.diff(stamps) == PERIOD_NS)


def test_watchdog_aborts_when_the_joint_states_stop(rig, ros):
    package = PolicyPackage(LGPolicy(np.zeros((100, 7, 14)), np.full((100, 7), 1.0),
                                     np.tile(np.eye(7) * 1e-4, (100, 1, 1))), "wd", 0.05, "joints")
    rig.policy_pub.publish(policy_to_msg(package, LinearGaussianPolicy()))
    ros.spin_until(lambda: "policy 'wd'" in rig.controller.log(), 10, "the policy")
    rig.step(2)
    assert ros.call(rig.start_cli, StartEpisode.Request(episode_id="ep-wd", deterministic=True)).success
    rig.step(5)
    ros.spin_until(lambda: any(np.all(c == 1.0) for c in rig.commands), 5, "the episode's torques")
    rig.commands.clear()
    ros.spin_until(lambda: any(e.episode_id == "ep-wd" and e.event == EpisodeEvent.ABORT for e in rig.events), 2,
                   "the watchdog's abort")
    end = [e for e in rig.events if e.episode_id == "ep-wd" and e.event == EpisodeEvent.ABORT][0]
    assert "no joint state" in end.reason
    ros.spin_until(lambda: len(rig.commands) >= 1, 2, "the zero command")
    assert np.all(rig.commands[-1] == 0.0)


@pytest.mark.parametrize("node_name, params, message", [
    ("controller_node", {"clock": "wall"}, "clock must be one of"),
    ("controller_node", {"clock": "joint_states", "hardware_timeout": 0.0}, "hardware_timeout must be positive"),
    ("sim_arm_node", {"clock_rate": -5.0}, "clock_rate must be >= 0"),
])
def test_bad_clock_settings_are_configuration_errors(start_node, node_name, params, message):
    """A clock setting out of range stops the node with status 2 and one line that names it."""
    node = start_node(node_name, {"state_source": "joints", **params} if node_name == "controller_node" else params)
    assert node.proc.wait(timeout=60) == 2
    assert message in node.log()
