"""recorder_node in its own process: an episode becomes an MCAP bag (decoded with the mcap reader), a
time-aligned npz and an index line; kill -9 mid-episode loses only that episode, which the restarted
recorder indexes as aborted; ABORT is indexed as such; malformed messages stay out of the arrays."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String

from solar_ros.msg import EpisodeEvent, LatentState, PolicyStep, TaskCost
from solar_ros.nodes import contract
from solar_ros.runtime.episode_store import (
    RECORDER_KILLED,
    incomplete_episodes,
    iter_mcap_messages,
    load_episode,
    read_index,
)
from solar_ros.runtime.safety import SAWYER_JOINT_NAMES

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

S0 = 100_000_000_000  # episode start stamp, ns
DT = 100_000_000
COMMANDS_PER_STEP = 10


def stamp(msg, ns: int) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)


class Feeder:
    def __init__(self, ros):
        n = ros.node
        self.ros = ros
        self.pubs = {
            "event": n.create_publisher(EpisodeEvent, contract.EPISODE, contract.EVENT_QOS),
            "step": n.create_publisher(PolicyStep, contract.STEPS, contract.EVENT_QOS),
            "image": n.create_publisher(Image, contract.MODEL_IMAGE, contract.SENSOR_QOS),
            "joints": n.create_publisher(JointState, contract.JOINT_STATES, contract.RELIABLE_QOS),
            "latent": n.create_publisher(LatentState, contract.LATENT, contract.SENSOR_QOS),
            "cost": n.create_publisher(TaskCost, contract.COST, contract.RELIABLE_QOS),
            "commands": n.create_publisher(Float64MultiArray, contract.COMMANDS, contract.RELIABLE_QOS),
            "goal": n.create_publisher(PointStamped, contract.GOAL, contract.LATCHED_QOS),
            "description": n.create_publisher(String, contract.ROBOT_DESCRIPTION, contract.LATCHED_QOS),
        }

    def subscriber_gids(self) -> dict[str, set]:
        return {pub.topic_name: {bytes(i.endpoint_gid)
                                 for i in self.ros.node.get_subscriptions_info_by_topic(pub.topic_name)}
                for pub in self.pubs.values()}

    def wait_matched(self, before: dict[str, set] | None = None):
        """Wait until a subscriber not in ``before`` (e.g. of a killed recorder, still listed until its
        lease expires) is on every topic, then let best-effort matches settle."""
        before = before or {}
        for pub in self.pubs.values():
            old = before.get(pub.topic_name, set())
            self.ros.spin_until(lambda: self.subscriber_gids()[pub.topic_name] - old, 20,
                                f"a new subscriber on {pub.topic_name}")
            self.ros.wait_for_subscribers(pub, 1, timeout=20)
        self.ros.spin(1.0)

    def event(self, kind, episode_id, steps=0, horizon=5, reason=""):
        e = EpisodeEvent()
        stamp(e, S0 + steps * DT)
        e.event, e.episode_id, e.policy_id, e.horizon, e.dt = kind, episode_id, "pol-7", horizon, DT * 1e-9
        e.state_source, e.noise_seed, e.steps, e.reason = "latent", 3, steps, reason
        e.start_stamp.sec, e.start_stamp.nanosec = divmod(S0, 1_000_000_000)
        self.pubs["event"].publish(e)

    def image(self, ns, value):
        m = Image()
        stamp(m, ns)
        m.height, m.width, m.encoding, m.step = 4, 4, "rgb8", 12
        m.data = bytes([value]) * 48
        self.pubs["image"].publish(m)

    def joints(self, ns, q):
        m = JointState()
        stamp(m, ns)
        m.name = list(reversed(SAWYER_JOINT_NAMES)) + ["head_pan"]  # any order, extra joints ignored
        m.position = [float(q + i) for i in reversed(range(7))] + [9.0]
        m.velocity = [0.5] * 8
        m.effort = [1.0] * 8
        self.pubs["joints"].publish(m)

    def latent(self, ns, t):
        m = LatentState()
        stamp(m, ns)
        m.dim, m.mean, m.covariance = 2, [float(t), -float(t)], [1.0, 0.0, 0.0, 1.0]
        self.pubs["latent"].publish(m)

    def cost(self, ns, c):
        m = TaskCost()
        stamp(m, ns)
        m.task, m.cost, m.distance = "test", float(c), float(c) / 10
        self.pubs["cost"].publish(m)

    def step(self, episode_id, t, source_ns):
        m = PolicyStep()
        stamp(m, S0 + t * DT)
        m.episode_id, m.time_index = episode_id, t
        m.source_stamp.sec, m.source_stamp.nanosec = divmod(source_ns, 1_000_000_000)
        m.state = [float(t), -float(t)]
        m.action = [0.1 * t] * 7
        m.noise = [0.0] * 7
        m.commands = 25
        self.pubs["step"].publish(m)

    def episode_body(self, episode_id, steps):
        for t in range(steps):
            src = S0 + t * DT
            self.image(src, 10 * t)
            self.joints(src + 1_000_000, t)  # 1 ms after the image: not yet valid at step t
            self.latent(src, t)
            self.cost(src, t)
            self.step(episode_id, t, src)
            for k in range(COMMANDS_PER_STEP):
                self.pubs["commands"].publish(Float64MultiArray(data=[t + k / 100] * 7))
                self.ros.spin(0.002)
            self.ros.spin(0.02)


def index_lines(out_dir):
    path = out_dir / "index.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("episodes")


@pytest.fixture(scope="module")
def feeder(ros):
    return Feeder(ros)


@pytest.fixture(scope="module")
def shared():
    """State handed from one test of this module to the next (the recorder process)."""
    return {}


def test_episode_is_written_as_mcap_npz_and_index(ros, start_node, feeder, out_dir, shared):
    recorder = shared["recorder"] = start_node("recorder_node", {"output_dir": str(out_dir), "stop_grace": 2.0})
    feeder.wait_matched()
    # Before the START: what step 0 needs (kept as the newest message per topic).
    for _ in range(3):  # best effort: an image sent just after matching can be lost; the recorder keeps one copy
        feeder.image(S0 - 30_000_000, 99)
        feeder.image(S0 - 10_000_000, 250)
        ros.spin(0.05)
    feeder.joints(S0 - 5_000_000, -1)
    goal = PointStamped()
    goal.header.frame_id, goal.point.x = "base", 0.6
    feeder.pubs["goal"].publish(goal)
    feeder.pubs["description"].publish(String(data="<robot name='sawyer'/>"))
    ros.spin(0.3)
    feeder.event(EpisodeEvent.START, "ep1")
    ros.spin(0.2)
    feeder.episode_body("ep1", 5)
    feeder.event(EpisodeEvent.STOP, "ep1", steps=5, reason="horizon reached")
    ros.spin_until(lambda: index_lines(out_dir), 10, "the index line of ep1")

    entry = read_index(out_dir)[0]
    assert entry["episode_id"] == "ep1" and entry["status"] == "complete" and entry["steps"] == 5
    assert entry["policy_id"] == "pol-7" and entry["noise_seed"] == 3 and entry["reason"] == "horizon reached"
    data = load_episode(out_dir, "ep1")
    np.testing.assert_array_equal(data["time_index"], np.arange(5))
    # Images sampled at the step's source stamp: exactly the image of that step.
    np.testing.assert_array_equal(data["images"][:, 0, 0, 0], [0, 10, 20, 30, 40])
    assert data["images"].shape == (5, 4, 4, 3) and data["images"].dtype == np.uint8
    # Joint states are 1 ms later than the images, so step t holds the one of step t-1 (the
    # pre-roll message for step 0), reordered into right_j0..right_j6.
    np.testing.assert_array_equal(data["joint_positions"][:, 0], [-1, 0, 1, 2, 3])
    np.testing.assert_array_equal(data["joint_positions"][2], np.arange(7) + 1.0)
    np.testing.assert_array_equal(data["costs"], np.arange(5.0))
    np.testing.assert_array_equal(data["latent_mean"][:, 0], np.arange(5.0))
    assert data["latent_covariance"].shape == (5, 2, 2)
    np.testing.assert_array_equal(data["actions"][:, 0], 0.1 * np.arange(5))
    np.testing.assert_array_equal(data["states"][:, 1], -np.arange(5.0))

    bag = out_dir / entry["mcap"]
    counts: dict[str, int] = {}
    image_values, commands = [], []
    for topic, msg, _t in iter_mcap_messages(bag):
        if topic == contract.COMMANDS:
            commands.append(msg.data[0])
        if topic == contract.GOAL:
            assert msg.point.x == 0.6 and msg.header.frame_id == "base"
        if topic == contract.ROBOT_DESCRIPTION:
            assert msg.data == "<robot name='sawyer'/>"
        counts[topic] = counts.get(topic, 0) + 1
        if topic == contract.MODEL_IMAGE:
            image_values.append(msg.data[0])
        if topic == contract.JOINT_STATES:
            assert list(msg.name)[-1] == "head_pan"
    assert counts[contract.EPISODE] == 2 and counts[contract.STEPS] == 5
    assert image_values == [250, 0, 10, 20, 30, 40], "pre-roll image, then the episode's images"
    # every torque command, in order (read in batches by the recorder), and the latched goal and URDF
    assert commands == [t + k / 100 for t in range(5) for k in range(COMMANDS_PER_STEP)]
    assert counts[contract.GOAL] == 1 and counts[contract.ROBOT_DESCRIPTION] == 1
    meta = yaml.safe_load((out_dir / entry["path"] / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "mcap"
    assert meta["message_count"] == sum(counts.values())
    assert {t["topic_metadata"]["name"] for t in meta["topics_with_message_count"]} == set(counts)
    assert recorder.alive()


def test_kill9_mid_episode_keeps_previous_episodes_intact(ros, feeder, out_dir, shared):
    recorder = shared["recorder"]
    before = (out_dir / "ep1" / "ep1_0.mcap").read_bytes()
    feeder.event(EpisodeEvent.START, "ep2")
    ros.spin(0.2)
    feeder.episode_body("ep2", 3)
    ros.spin_until(lambda: (out_dir / ".ep2.partial").is_dir(), 5, "the partial directory of ep2")
    ros.spin(0.3)
    assert recorder.alive()
    recorder.kill9()

    assert [e["episode_id"] for e in read_index(out_dir, status=None)] == ["ep1"]
    assert (out_dir / "ep1" / "ep1_0.mcap").read_bytes() == before
    assert load_episode(out_dir, "ep1")["images"].shape == (5, 4, 4, 3)
    assert sum(1 for _ in iter_mcap_messages(out_dir / "ep1" / "ep1_0.mcap")) > 10
    assert [p.name for p in incomplete_episodes(out_dir)] == [".ep2.partial"]
    assert not (out_dir / "ep2").exists()


def test_restarted_recorder_indexes_the_killed_episode_as_aborted(ros, start_node, feeder, out_dir):
    before = feeder.subscriber_gids()
    recorder = start_node("recorder_node", {"output_dir": str(out_dir), "stop_grace": 0.5})
    feeder.wait_matched(before)
    ros.spin_until(lambda: "episode 'ep2' left by an earlier recorder process indexed as aborted" in recorder.log(),
                   10, "the recovery of ep2")
    assert incomplete_episodes(out_dir) == [], "the episode in flight is no longer a stray .partial directory"
    entries = read_index(out_dir, status=None)
    assert [(e["episode_id"], e["status"], e["reason"]) for e in entries] == [
        ("ep1", "complete", "horizon reached"), ("ep2", "aborted", RECORDER_KILLED)]
    assert entries[1]["policy_id"] == "pol-7", "the START's metadata is kept"
    assert (out_dir / "ep2" / "ep2_0.mcap").is_file(), "what was recorded is kept for inspection"
    with pytest.raises(ValueError, match="has no arrays"):
        load_episode(out_dir, "ep2")

    # Best-effort samples reach a subscriber that replaced a killed one only a moment after the match
    # is seen (0 s here lost every image, joint state and latent of the episode; 2 s lost none).
    ros.spin(3.0)
    feeder.event(EpisodeEvent.START, "ep3")
    ros.spin(0.2)
    feeder.episode_body("ep3", 2)
    # malformed messages during the episode stay out of its training arrays
    bad_joints = JointState()
    stamp(bad_joints, S0 + DT // 2)
    bad_joints.name, bad_joints.position, bad_joints.velocity = list(SAWYER_JOINT_NAMES), [float("nan")] * 7, [0.0] * 7
    feeder.pubs["joints"].publish(bad_joints)
    no_velocity = JointState()
    stamp(no_velocity, S0 + DT // 2)
    no_velocity.name, no_velocity.position = list(SAWYER_JOINT_NAMES), [0.0] * 7
    feeder.pubs["joints"].publish(no_velocity)
    feeder.cost(S0 + DT // 2, float("nan"))
    feeder.cost(0, 5.0)  # unstamped
    for t in (1, 7):  # a repeated index, one past the horizon
        feeder.step("ep3", t, S0 + t * DT)
    bad_step = PolicyStep()
    bad_step.episode_id, bad_step.time_index, bad_step.state = "ep3", 3, [float("nan"), 0.0]
    bad_step.action, bad_step.noise = [0.0] * 7, [0.0] * 7
    feeder.pubs["step"].publish(bad_step)
    wrong_size = LatentState()
    stamp(wrong_size, S0 + DT // 2)
    wrong_size.dim, wrong_size.mean, wrong_size.covariance = 3, [0.0, 0.0], [1.0]
    feeder.pubs["latent"].publish(wrong_size)
    odd = EpisodeEvent()
    odd.event, odd.episode_id = 7, "ep3"
    feeder.pubs["event"].publish(odd)
    ros.spin(0.3)
    feeder.event(EpisodeEvent.ABORT, "ep3", steps=2, reason="e-stop")
    ros.spin_until(lambda: len(index_lines(out_dir)) == 3, 10, "the index line of ep3")
    entries = read_index(out_dir, status=None)
    assert [(e["episode_id"], e["status"], e["reason"]) for e in entries][2] == ("ep3", "aborted", "e-stop")
    assert [e["episode_id"] for e in read_index(out_dir)] == ["ep1"], "training reads complete episodes only"
    arrays = load_episode(out_dir, "ep3")
    assert arrays["time_index"].tolist() == [0, 1]
    for key in ("states", "joint_positions", "joint_velocities", "costs", "latent_mean"):
        assert np.all(np.isfinite(arrays[key])), key
    assert arrays["costs"].tolist() == [0.0, 1.0]
    assert "left out of the npz" in recorder.log() and "unknown kind 7" in recorder.log()
    assert recorder.stop() == 0


def test_step_0_is_the_frame_the_episode_starts_on_even_if_newer_samples_came_before_the_start(
        ros, start_node, feeder, tmp_path):
    """A frame-locked episode starts on the newest frame the controller acted on: its START can come after
    a newer image and joint states (the next frame's latent not computed yet). Step 0 gets the frame at the
    start stamp, and the newer samples received before the START stay in the episode for the steps after."""
    before = feeder.subscriber_gids()
    recorder = start_node("recorder_node", {"output_dir": str(tmp_path), "stop_grace": 0.5})
    feeder.wait_matched(before)
    s1 = S0 + 10 * 1_000_000_000
    for k, value in ((-1, 5), (0, 7), (1, 9)):  # frames -1, 0 (the start) and 1, all before the START
        feeder.image(s1 + k * DT, value)
        feeder.joints(s1 + k * DT - 2_000_000, 10 * k)
        feeder.latent(s1 + k * DT, k)
        feeder.cost(s1 + k * DT, 100 + k)
    ros.spin(0.3)
    start = EpisodeEvent()
    stamp(start, s1 + DT + 5_000_000)  # the START itself is stamped after frame 1
    start.event, start.episode_id, start.policy_id, start.horizon, start.dt = EpisodeEvent.START, "epf", "p", 3, 0.1
    start.state_source = "latent"
    start.start_stamp.sec, start.start_stamp.nanosec = divmod(s1, 1_000_000_000)
    feeder.pubs["event"].publish(start)
    ros.spin(0.2)
    for t in range(3):
        if t == 2:
            feeder.image(s1 + 2 * DT, 11)
            feeder.cost(s1 + 2 * DT, 102)
        m = PolicyStep()
        stamp(m, s1 + t * DT)
        m.episode_id, m.time_index, m.commands = "epf", t, 25
        m.source_stamp.sec, m.source_stamp.nanosec = divmod(s1 + t * DT, 1_000_000_000)
        m.state, m.action, m.noise = [float(t), 0.0], [0.0] * 7, [0.0] * 7
        feeder.pubs["step"].publish(m)
        ros.spin(0.05)
    stop = EpisodeEvent()
    stamp(stop, s1 + 3 * DT)
    stop.event, stop.episode_id, stop.steps, stop.reason = EpisodeEvent.STOP, "epf", 3, "horizon reached"
    feeder.pubs["event"].publish(stop)
    ros.spin_until(lambda: index_lines(tmp_path), 10, "the index line of epf")
    data = load_episode(tmp_path, "epf")
    assert data["images"][:, 0, 0, 0].tolist() == [7, 9, 11]
    assert data["joint_positions"][:, 0].tolist() == [0, 10, 10], "the newest joint state at or before each frame"
    assert data["costs"].tolist() == [100, 101, 102]
    images = [msg.data[0] for topic, msg, _ in iter_mcap_messages(tmp_path / read_index(tmp_path)[0]["mcap"])
              if topic == contract.MODEL_IMAGE]
    assert images == [7, 9, 11], "samples older than the start frame are not the episode's"
    assert recorder.stop() == 0


def test_an_episode_short_of_the_controllers_step_records_is_aborted_not_complete(ros, start_node, feeder, tmp_path):
    """A recorder that fell behind (a starved CPU) and received fewer step records than the controller's STOP counts
    indexes the episode as aborted with the reason, so that training never takes a truncated episode."""
    before = feeder.subscriber_gids()
    recorder = start_node("recorder_node", {"output_dir": str(tmp_path), "stop_grace": 0.5})
    feeder.wait_matched(before)
    feeder.event(EpisodeEvent.START, "short", horizon=5)
    ros.spin(0.2)
    feeder.episode_body("short", 3)  # steps 3 and 4 never arrive
    feeder.event(EpisodeEvent.STOP, "short", steps=5, horizon=5, reason="horizon reached")
    ros.spin_until(lambda: index_lines(tmp_path), 10, "the index line of the short episode")
    entry = read_index(tmp_path, status=None)[0]
    assert entry["status"] == "aborted" and entry["steps"] == 3
    assert entry["reason"] == ("3 of the controller's 5 step records arrived within stop_grace (0.5 s) after its "
                               "STOP (horizon reached)")
    assert read_index(tmp_path) == [], "training reads complete episodes only"
    assert recorder.stop() == 0
