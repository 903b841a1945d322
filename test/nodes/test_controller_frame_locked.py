"""controller_node indexes a latent policy's time by camera frame (``frame_locked``, the default): the
episode begins on the first frame after the start request (zero torque until it arrives), frame t's
latent acts with step t's gains from its arrival until frame t+1's (here 30 ms after each capture), and
the episode ends when frame T arrives."""
from __future__ import annotations

import numpy as np
import pytest
from std_msgs.msg import Float64MultiArray

from solar_ros.core.types import LinearGaussianPolicy as LGPolicy
from solar_ros.msg import CommandInfo, EpisodeEvent, LatentState, LinearGaussianPolicy, PolicyStep
from solar_ros.nodes import contract
from solar_ros.runtime.policy_msg import PolicyPackage, policy_to_msg
from solar_ros.srv import StartEpisode

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

FRAME_NS = 100_000_000  # a 10 Hz camera
DELAY_NS = 30_000_000  # each latent arrives 30 ms after its frame's capture
T = 4


def ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def test_frames_drive_the_time_index(ros, start_node):
    controller = start_node("controller_node", {"state_source": "latent", "rate": 500.0, "max_latent_age": 0.3})
    n = ros.node
    latent_pub = n.create_publisher(LatentState, contract.LATENT, contract.SENSOR_QOS)
    policy_pub = n.create_publisher(LinearGaussianPolicy, contract.POLICY, contract.POLICY_QOS)
    infos: list[CommandInfo] = []
    commands: list[np.ndarray] = []
    events: list[EpisodeEvent] = []
    steps: list[PolicyStep] = []
    n.create_subscription(CommandInfo, contract.COMMAND_INFO, infos.append, contract.EVENT_QOS)
    n.create_subscription(Float64MultiArray, contract.COMMANDS, lambda m: commands.append(np.array(m.data)),
                          contract.RELIABLE_QOS)
    n.create_subscription(EpisodeEvent, contract.EPISODE, events.append, contract.EVENT_QOS)
    n.create_subscription(PolicyStep, contract.STEPS, steps.append, contract.EVENT_QOS)
    ros.wait_for_subscribers(latent_pub, timeout=20)
    ros.wait_for_publishers(contract.COMMAND_INFO)

    # The camera: frame k is captured at base + k * 100 ms; its latent, [k, 1], is published 30 ms later.
    base = n.get_clock().now().nanoseconds // FRAME_NS * FRAME_NS
    published: dict[int, int] = {}

    def camera() -> None:
        now = n.get_clock().now().nanoseconds
        k = (now - DELAY_NS - base) // FRAME_NS
        if k >= 0 and k not in published:
            published[k] = base + k * FRAME_NS
            msg = LatentState(dim=2, mean=[float(k), 1.0])
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(published[k], 1_000_000_000)
            latent_pub.publish(msg)

    n.create_timer(0.002, camera)
    # u0 = latent[0] (the frame number), u1 = k_t[1] = 2 t + 1 (the step whose gains acted)
    K = np.zeros((T, 7, 2))
    K[:, 0, 0] = 1.0
    k = np.zeros((T, 7))
    k[:, 1] = 2 * np.arange(T) + 1
    pol = LGPolicy(K, k, np.tile(np.eye(7) * 1e-4, (T, 1, 1)))
    policy_pub.publish(policy_to_msg(PolicyPackage(pol, "frames", FRAME_NS * 1e-9, "latent"), LinearGaussianPolicy()))
    ros.spin_until(lambda: "policy 'frames'" in controller.log(), 10, "the policy")
    ros.spin_until(lambda: len(published) >= 3, 5, "three frames")
    ros.spin(0.055)  # start between two frames' arrivals
    reply = ros.call(n.create_client(StartEpisode, contract.START_EPISODE),
                     StartEpisode.Request(episode_id="frames", deterministic=True))
    assert reply.success and reply.message == "episode starts on the next camera frame", reply.message
    ros.spin_until(lambda: any(e.event != EpisodeEvent.START for e in events), 5, "the end of the episode")
    ros.spin(0.2)

    start = next(e for e in events if e.event == EpisodeEvent.START)
    first = (ns(start.start_stamp) - base) // FRAME_NS
    assert ns(start.start_stamp) == published[first], "the episode starts on a frame's capture stamp"
    assert ns(start.header.stamp) >= published[first] + DELAY_NS, "announced when that frame's latent arrived"
    assert ns(start.header.stamp) < published[first] + DELAY_NS + 50_000_000
    end = next(e for e in events if e.event != EpisodeEvent.START)
    assert end.event == EpisodeEvent.STOP and end.reason == "horizon reached" and end.steps == T
    assert ns(end.header.stamp) >= published[first] + T * FRAME_NS + DELAY_NS, "ends on frame T's arrival"

    active = [m for m in infos if m.status == CommandInfo.ACTIVE]
    assert active
    for m in active:
        frame = (ns(m.source_stamp) - base) // FRAME_NS
        assert ns(m.source_stamp) == published[frame]
        assert m.time_index == frame - first, "the index is the frame's, whatever the clock says"
    # Each step's frame acted for about one whole frame interval at 500 Hz (50 commands), step 0 too, and
    # clock time past the next frame's capture included (the 30 ms before its latent arrives).
    counts = np.bincount([m.time_index for m in active], minlength=T)
    assert np.all(counts > 30), counts
    torques = {(c[0], c[1]) for c in commands if c[1] != 0.0}
    assert torques == {(float(first + t), 2.0 * t + 1) for t in range(T)}, "frame t with step t's gains only"
    records = sorted((s for s in steps if s.episode_id == "frames"), key=lambda s: s.time_index)
    assert [s.time_index for s in records] == list(range(T))
    for s in records:
        assert ns(s.source_stamp) == published[first + s.time_index] == ns(s.header.stamp)
        assert s.state[0] == first + s.time_index and s.commands > 30
    assert controller.alive(), controller.log()
