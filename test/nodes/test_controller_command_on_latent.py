"""controller_node acts on a fresh latent at once (``command_on_latent``), besides its fixed-rate
stream: at a 2 Hz command rate every latent still gets its command within milliseconds, through the
same checks as a tick (staleness, NaN, clipping)."""
from __future__ import annotations

import numpy as np
import pytest
from std_msgs.msg import Float64MultiArray

from solar_ros.core.types import LinearGaussianPolicy as LGPolicy
from solar_ros.msg import CommandInfo, LatentState, LinearGaussianPolicy
from solar_ros.nodes import contract
from solar_ros.runtime.policy_msg import PolicyPackage, policy_to_msg
from solar_ros.runtime.safety import SAWYER_TORQUE_LIMITS
from solar_ros.srv import StartEpisode

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

RATE = 2.0  # Hz: a tick every 500 ms, so a command within 100 ms of a latent can only be the immediate one


def stamp_ns(t) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


def test_a_fresh_latent_is_acted_on_at_once_and_still_checked(ros, start_node):
    node = start_node("controller_node", {"state_source": "latent", "rate": RATE, "max_latent_age": 5.0})
    n = ros.node
    latent_pub = n.create_publisher(LatentState, contract.LATENT, contract.SENSOR_QOS)
    policy_pub = n.create_publisher(LinearGaussianPolicy, contract.POLICY, contract.POLICY_QOS)
    infos: list[CommandInfo] = []
    commands: list[np.ndarray] = []
    n.create_subscription(CommandInfo, contract.COMMAND_INFO, infos.append, contract.EVENT_QOS)
    n.create_subscription(Float64MultiArray, contract.COMMANDS, lambda m: commands.append(np.array(m.data)),
                          contract.RELIABLE_QOS)
    ros.wait_for_subscribers(latent_pub, timeout=20)
    ros.wait_for_publishers(contract.COMMAND_INFO)

    def publish_latent(values) -> int:
        msg = LatentState(dim=2, mean=[float(v) for v in values])
        t = n.get_clock().now().nanoseconds
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t, 1_000_000_000)
        latent_pub.publish(msg)
        return t

    # K = [1, 0] on joint 0 and a bias of 100 N m on joint 1 (clipped to its 80 N m limit).
    T, K = 200, np.zeros((7, 2))
    K[0, 0] = 1.0
    k = np.zeros(7)
    k[1] = 100.0
    pol = LGPolicy(np.broadcast_to(K, (T, 7, 2)).copy(), np.broadcast_to(k, (T, 7)).copy(),
                   np.tile(np.eye(7) * 1e-4, (T, 1, 1)))
    policy_pub.publish(policy_to_msg(PolicyPackage(pol, "immediate", 0.1, "latent"), LinearGaussianPolicy()))
    ros.spin_until(lambda: "policy 'immediate'" in node.log(), 10, "the policy")
    publish_latent([0.0, 0.0])
    ros.spin(0.3)
    reply = ros.call(n.create_client(StartEpisode, contract.START_EPISODE),
                     StartEpisode.Request(episode_id="immediate", deterministic=True))
    assert reply.success, reply.message

    for i in range(6):
        ros.spin(0.13 * (i % 3) + 0.05)  # latents at various phases of the 500 ms tick
        value = 0.5 + i
        sent = publish_latent([value, 0.0])
        commands.clear()

        def acted():
            return [m for m in infos if stamp_ns(m.source_stamp) == sent and m.status == CommandInfo.ACTIVE]

        ros.spin_until(lambda: acted(), 2.0, f"a command computed from latent {i}")
        lag_ms = (stamp_ns(acted()[0].header.stamp) - sent) * 1e-6
        assert lag_ms < 100.0, f"latent {i} waited {lag_ms:.1f} ms: not acted on at once"
        ros.spin_until(lambda: any(c[0] == value for c in commands), 2.0, "its torque command")
        u = next(c for c in commands if c[0] == value)
        assert u[1] == SAWYER_TORQUE_LIMITS[1], "immediate commands are clipped like ticks"

    # A NaN latent is rejected: no command from it, and the episode aborts at the next tick.
    bad = publish_latent([float("nan"), 0.0])
    ros.spin(1.2)
    assert not [m for m in infos if stamp_ns(m.source_stamp) == bad]
    assert "latent rejected" in node.log()
    assert node.alive(), node.log()
