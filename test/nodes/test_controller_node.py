"""controller_node in its own process: contract topics, clipping, seeded noise, episodes, policy swap,
watchdog, NaN inputs, joint-name mismatch, out-of-order stamps, e-stop latch."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from solar_ros.core.types import LinearGaussianPolicy as LGPolicy
from solar_ros.msg import CommandInfo, EpisodeEvent, LatentState, LinearGaussianPolicy, PolicyStep
from solar_ros.nodes import contract
from solar_ros.runtime.policy_msg import PolicyPackage, policy_to_msg
from solar_ros.runtime.safety import SAWYER_JOINT_NAMES, SAWYER_TORQUE_LIMITS
from solar_ros.srv import StartEpisode

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

LATENT_DIM = 3
DX = LATENT_DIM + 14
LIMITS = np.array(SAWYER_TORQUE_LIMITS)


class Rig:
    """Feeds the controller latents and joint states at 100 Hz and records everything it sends."""

    def __init__(self, ros, controller):
        self.ros, self.controller = ros, controller
        n = ros.node
        self.latent = np.array([0.2, -0.1, 0.3])
        self.q = np.linspace(-0.3, 0.3, 7)
        self.dq = np.zeros(7)
        self.names = list(SAWYER_JOINT_NAMES)
        self.feed_latent = True
        self.latent_nan = False
        self.commands: list[np.ndarray] = []
        self.events: list[EpisodeEvent] = []
        self.steps: list[PolicyStep] = []
        self.infos: list[CommandInfo] = []
        self.latent_pub = n.create_publisher(LatentState, contract.LATENT, contract.SENSOR_QOS)
        self.joint_pub = n.create_publisher(JointState, contract.JOINT_STATES, contract.RELIABLE_QOS)
        self.policy_pub = n.create_publisher(LinearGaussianPolicy, contract.POLICY, contract.POLICY_QOS)
        n.create_subscription(Float64MultiArray, contract.COMMANDS,
                              lambda m: self.commands.append(np.array(m.data)), contract.RELIABLE_QOS)
        n.create_subscription(EpisodeEvent, contract.EPISODE, self.events.append, contract.EVENT_QOS)
        n.create_subscription(PolicyStep, contract.STEPS, self.steps.append, contract.EVENT_QOS)
        n.create_subscription(CommandInfo, contract.COMMAND_INFO, self.infos.append, contract.EVENT_QOS)
        self.start_cli = n.create_client(StartEpisode, contract.START_EPISODE)
        self.stop_cli = n.create_client(Trigger, contract.STOP_EPISODE)
        self.estop_cli = n.create_client(SetBool, contract.ESTOP)
        n.create_timer(0.01, self.feed)

    def stamp(self, msg, offset_ns: int = 0) -> None:
        t = self.ros.node.get_clock().now().nanoseconds + offset_ns
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t, 1_000_000_000)

    def feed(self) -> None:
        if self.feed_latent:
            m = LatentState()
            self.stamp(m)
            m.dim = LATENT_DIM
            m.mean = (np.full(LATENT_DIM, np.nan) if self.latent_nan else self.latent).tolist()
            self.latent_pub.publish(m)
        self.publish_joints(self.q)

    def publish_joints(self, q, offset_ns: int = 0) -> None:
        js = JointState()
        self.stamp(js, offset_ns)
        js.name = list(self.names)
        js.position = list(map(float, q))
        js.velocity = self.dq.tolist()
        js.effort = [0.0] * 7
        self.joint_pub.publish(js)

    @property
    def x(self) -> np.ndarray:
        return np.concatenate([self.latent, self.q, self.dq])

    def publish_policy(self, policy_id: str, K, k, std=0.1, T=10, dt=0.05) -> None:
        pol = LGPolicy(np.broadcast_to(K, (T, 7, DX)).copy(), np.broadcast_to(k, (T, 7)).copy(),
                       np.tile(np.eye(7) * std**2, (T, 1, 1)))
        package = PolicyPackage(pol, policy_id, dt, "latent+joints")
        self.policy_pub.publish(policy_to_msg(package, LinearGaussianPolicy()))
        # The controller logs each accepted policy; wait for it so the next start sees this one.
        self.ros.spin_until(lambda: f"policy '{policy_id}'" in self.controller.log(), 10,
                            f"policy {policy_id} accepted")

    def start(self, episode_id: str, deterministic=True, seed=0):
        return self.ros.call(self.start_cli, StartEpisode.Request(
            episode_id=episode_id, deterministic=deterministic, noise_seed=seed))

    def wait_end(self, episode_id: str, timeout=10.0) -> EpisodeEvent:
        def ended():
            return [e for e in self.events if e.episode_id == episode_id and e.event != EpisodeEvent.START]
        self.ros.spin_until(lambda: ended(), timeout, f"end of episode {episode_id}")
        return ended()[0]

    def commands_after(self, first, n: int = 30, timeout: float = 5.0) -> np.ndarray:
        """The first command satisfying ``first`` (older queued ones are skipped) and the n-1 after it."""
        self.commands.clear()
        self.ros.spin_until(lambda: any(first(c) for c in self.commands), timeout, "the expected command")
        i = next(i for i, c in enumerate(self.commands) if first(c))
        self.ros.spin_until(lambda: len(self.commands) >= i + n, timeout, f"{n} commands")
        return np.array(self.commands[i:i + n])

    def zero_commands(self, n: int = 30) -> np.ndarray:
        return self.commands_after(lambda c: np.all(c == 0.0), n)


@pytest.fixture(scope="module")
def rig(ros, start_node):
    controller = start_node("controller_node", {
        "state_source": "latent+joints", "rate": 500.0, "max_latent_age": 0.3, "max_joint_age": 0.3,
        "abort_on_fault": True})
    r = Rig(ros, controller)
    ros.wait_for_publishers(contract.COMMANDS, timeout=20)
    ros.wait_for_subscribers(r.joint_pub)
    ros.wait_for_subscribers(r.latent_pub)
    ros.spin_until(lambda: len(r.commands) > 10, 10, "idle commands")
    yield r
    assert controller.alive(), controller.log()


def test_contract_topics_services_and_idle_zero_stream(rig, ros):
    types = ros.topic_types()
    assert types[contract.COMMANDS] == ["std_msgs/msg/Float64MultiArray"]
    assert types[contract.EPISODE] == ["solar_ros/msg/EpisodeEvent"]
    assert types[contract.STEPS] == ["solar_ros/msg/PolicyStep"]
    assert types[contract.COMMAND_INFO] == ["solar_ros/msg/CommandInfo"]
    services = dict(ros.node.get_service_names_and_types())
    assert services[contract.START_EPISODE] == ["solar_ros/srv/StartEpisode"]
    assert services[contract.STOP_EPISODE] == ["std_srvs/srv/Trigger"]
    assert services[contract.ESTOP] == ["std_srvs/srv/SetBool"]
    rig.commands.clear()
    ros.spin(0.5)
    cmds = np.array(rig.commands)
    assert cmds.shape[1] == 7
    assert np.all(cmds == 0.0), "idle commands must be zero torques"
    assert len(cmds) > 50, f"zero torques must keep streaming while idle (got {len(cmds)} in 0.5 s)"


def test_start_refused_without_policy(rig):
    r = rig.start("no-policy")
    assert not r.success and "no policy" in r.message


def test_deterministic_policy_is_clipped_and_stops_at_horizon(rig, ros):
    K = np.zeros((7, DX))
    K[0, 0] = 10.0      # latent[0] -> joint 0
    K[2, LATENT_DIM + 1] = -5.0  # q1 -> joint 2
    k = np.array([1.0, -200.0, 3.0, 60.0, 20.0, -20.0, 0.5])  # joints 1, 3, 4, 5 beyond their limits
    rig.publish_policy("clip", K, k, T=10, dt=0.05)
    r = rig.start("ep-clip", deterministic=True)
    assert r.success, r.message
    assert r.policy_id == "clip" and r.horizon == 10 and r.dt == pytest.approx(0.05)
    expected = np.clip(K @ rig.x + k, -LIMITS, LIMITS)
    active = rig.commands_after(lambda c: np.any(c != 0), n=20)
    np.testing.assert_allclose(active, np.tile(expected, (len(active), 1)), rtol=0, atol=1e-12)
    assert expected[1] == -80.0 and expected[3] == 40.0 and expected[4] == 9.0 and expected[5] == -9.0
    end = rig.wait_end("ep-clip")
    assert end.event == EpisodeEvent.STOP and end.reason == "horizon reached" and end.steps == 10
    ros.spin_until(lambda: len([s for s in rig.steps if s.episode_id == "ep-clip"]) == 10, 5, "10 step records")
    steps = sorted((s for s in rig.steps if s.episode_id == "ep-clip"), key=lambda s: s.time_index)
    assert [s.time_index for s in steps] == list(range(10))
    for s in steps:
        np.testing.assert_allclose(s.state, rig.x, atol=1e-12)
        np.testing.assert_allclose(s.action, expected, atol=1e-9)
        assert s.clipped and s.commands > 0
    assert np.all(rig.zero_commands() == 0.0), "zero torque after the episode"


def test_exploration_noise_is_seeded_and_constant_per_time_index(rig, ros):
    K = np.zeros((7, DX))
    k = np.array([1.0, 2.0, 0.0, -1.0, 0.5, 0.0, 0.2])
    std = 0.5
    rig.publish_policy("noisy", K, k, std=std, T=8, dt=0.05)
    r = rig.start("ep-noise", deterministic=False, seed=7)
    assert r.success, r.message
    rig.wait_end("ep-noise")
    ros.spin_until(lambda: len([s for s in rig.steps if s.episode_id == "ep-noise"]) == 8, 5, "8 step records")
    steps = sorted((s for s in rig.steps if s.episode_id == "ep-noise"), key=lambda s: s.time_index)
    eps = np.random.default_rng(7).standard_normal((8, 7))
    for s in steps:
        np.testing.assert_allclose(s.noise, eps[s.time_index], atol=1e-12)
        # Constant state and one draw per index: every command of the index equals the mean.
        np.testing.assert_allclose(s.action, np.clip(k + std * eps[s.time_index], -LIMITS, LIMITS), atol=1e-9)
    start = [e for e in rig.events if e.episode_id == "ep-noise" and e.event == EpisodeEvent.START][0]
    assert start.noise_seed == 7 and not start.deterministic and start.policy_id == "noisy"


def test_malformed_policies_are_rejected_and_the_previous_one_kept(rig, ros):
    rig.publish_policy("good", np.zeros((7, DX)), np.full(7, 0.25), T=100, dt=0.05)
    bad = policy_to_msg(PolicyPackage(LGPolicy.initial(5, DX, 7, 0.1), "truncated", 0.05, "latent+joints"),
                        LinearGaussianPolicy())
    bad.gain = bad.gain[:-1]
    rig.policy_pub.publish(bad)
    ros.spin_until(lambda: "rejected policy 'truncated'" in rig.controller.log(), 10, "the first rejection")
    wrong_source = policy_to_msg(PolicyPackage(LGPolicy.initial(5, 14, 7, 0.1), "joints-only", 0.05, "joints"),
                                 LinearGaussianPolicy())
    rig.policy_pub.publish(wrong_source)
    ros.spin_until(lambda: "rejected policy 'joints-only'" in rig.controller.log(), 10, "the second rejection")
    assert "'gain' has" in rig.controller.log()
    r = rig.start("ep-kept")
    assert r.success and r.policy_id == "good"
    assert np.all(rig.commands_after(lambda c: np.any(c != 0)) == 0.25)
    assert ros.call(rig.stop_cli, Trigger.Request()).success
    rig.wait_end("ep-kept")


def test_new_policy_is_used_only_from_the_next_episode(rig, ros):
    rig.publish_policy("A", np.zeros((7, DX)), np.full(7, 1.0), T=100, dt=0.05)
    assert rig.start("ep-A").success
    rig.publish_policy("B", np.zeros((7, DX)), np.full(7, 2.0), T=100, dt=0.05)
    cmds = rig.commands_after(lambda c: np.any(c != 0), n=60)
    assert np.all(cmds == 1.0), "a policy received mid-episode must not change the running episode"
    stop = ros.call(rig.stop_cli, Trigger.Request())
    assert stop.success
    end = rig.wait_end("ep-A")
    assert end.event == EpisodeEvent.STOP and end.reason == "stop requested"
    r = rig.start("ep-B")
    assert r.success and r.policy_id == "B"
    assert np.all(rig.commands_after(lambda c: np.any(c != 0)) == 2.0)
    assert ros.call(rig.stop_cli, Trigger.Request()).success
    rig.wait_end("ep-B")
    assert not ros.call(rig.stop_cli, Trigger.Request()).success, "stop with no episode running"


def test_stale_latent_gives_zero_torque_and_aborts(rig, ros):
    rig.publish_policy("C", np.zeros((7, DX)), np.full(7, 1.5), T=200, dt=0.05)
    assert rig.start("ep-stale").success
    assert np.all(rig.commands_after(lambda c: np.any(c != 0)) == 1.5)
    rig.feed_latent = False
    try:
        end = rig.wait_end("ep-stale", timeout=5)
        assert end.event == EpisodeEvent.ABORT and "stale" in end.reason, end.reason
        assert np.all(rig.zero_commands() == 0.0)
        assert "zero torque" in rig.controller.log()
    finally:
        rig.feed_latent = True
    ros.spin(0.1)


def test_nan_latent_gives_zero_torque_and_aborts(rig, ros):
    assert rig.start("ep-nan").success
    rig.latent_nan = True
    try:
        end = rig.wait_end("ep-nan", timeout=5)
        assert end.event == EpisodeEvent.ABORT and "NaN" in end.reason, end.reason
        assert np.all(rig.zero_commands() == 0.0)
        assert not rig.start("ep-nan-2").success, "no start while the latent is NaN"
    finally:
        rig.latent_nan = False
    ros.spin(0.1)


def test_wrong_joint_names_are_an_error_not_a_crash(rig, ros):
    assert rig.start("ep-names").success
    rig.names = [n if n != "right_j3" else "elbow" for n in SAWYER_JOINT_NAMES]
    try:
        end = rig.wait_end("ep-names", timeout=5)
        assert end.event == EpisodeEvent.ABORT and "right_j3" in end.reason, end.reason
        assert np.all(rig.zero_commands() == 0.0)
    finally:
        rig.names = list(reversed(SAWYER_JOINT_NAMES))  # another order is fine: names are mapped
    ros.spin(0.1)
    assert rig.controller.alive()
    r = rig.start("ep-names-2")
    assert r.success, r.message
    assert np.all(rig.commands_after(lambda c: np.any(c != 0)) == 1.5)
    assert ros.call(rig.stop_cli, Trigger.Request()).success
    rig.wait_end("ep-names-2")
    rig.names = list(SAWYER_JOINT_NAMES)


def test_out_of_order_joint_stamps_are_dropped(rig, ros):
    K = np.zeros((7, DX))
    K[0, LATENT_DIM + 0] = 10.0  # u0 = 10 * q0
    rig.publish_policy("D", K, np.zeros(7), T=200, dt=0.05)
    assert rig.start("ep-order").success
    rig.commands_after(lambda c: np.any(c != 0), n=5)
    rig.commands.clear()
    for _ in range(5):
        late = rig.q.copy()
        late[0] = 0.5
        rig.publish_joints(late, offset_ns=-200_000_000)  # 0.2 s older than the newest state
        ros.spin(0.03)
    u0 = np.array(rig.commands)[:, 0]
    np.testing.assert_allclose(u0, 10 * rig.q[0], atol=1e-12)
    assert "out-of-order" in rig.controller.log()
    assert ros.call(rig.stop_cli, Trigger.Request()).success
    assert rig.wait_end("ep-order").event == EpisodeEvent.STOP


def test_estop_latches_until_released(rig, ros):
    rig.publish_policy("E", np.zeros((7, DX)), np.full(7, 0.7), T=200, dt=0.05)
    assert rig.start("ep-estop").success
    assert ros.call(rig.estop_cli, SetBool.Request(data=True)).success
    end = rig.wait_end("ep-estop")
    assert end.event == EpisodeEvent.ABORT and end.reason == "e-stop"
    assert np.all(rig.zero_commands(100) == 0.0)
    refused = rig.start("ep-estop-2")
    assert not refused.success and "e-stop" in refused.message
    ros.spin(0.3)
    assert not rig.start("ep-estop-3").success, "the e-stop stays latched"
    assert ros.call(rig.estop_cli, SetBool.Request(data=False)).success
    r = rig.start("ep-estop-4")
    assert r.success, r.message
    assert np.all(rig.commands_after(lambda c: np.any(c != 0)) == 0.7)
    assert ros.call(rig.stop_cli, Trigger.Request()).success
    rig.wait_end("ep-estop-4")
