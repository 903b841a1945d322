"""inspector_node: the stack live in Foxglove (or any client of its WebSocket protocol), via foxglove-sdk.

A WebSocket server (``port``, 8765 by default, Foxglove's) offers every ROS 2 topic the node finds
(looked for every ``discovery_period`` s) as a channel in the topic's own message type: CDR bytes
as published, with the type's ``ros2msg`` definition as schema. Two more channels are computed here:
``/solar/arm_frames`` (foxglove.FrameTransforms: every joint of the robot description, posed from
the newest /joint_states, what robot_state_publisher gives rviz) and ``/solar/goal_marker``
(foxglove.SceneUpdate: a sphere at /solar/goal).

A topic is subscribed in ROS only while a client is subscribed to its channel (or to a channel
computed from it) and read by polling, ``max_rate`` times a second: only the newest message of each
topic since the previous poll is sent (a DDS queue of depth 1 holds it), so a 500 Hz stream costs
this node ``max_rate`` messages a second, not 500, and nothing piles up. A client that reads too
slowly loses its oldest messages once ``message_backlog`` are waiting for it (the server drops them;
a client that stops reading control messages is disconnected). Latched topics (transient local: the
policy, the model, the goal, the robot description) are sent again to each new subscriber.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from geometry_msgs.msg import PointStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState

from ..runtime.arm_frames import ArmFrames
from ..runtime.inspector import (
    FRAMES_TOPIC,
    GOAL_MARKER_TOPIC,
    SubscriptionEvents,
    frames_message,
    goal_marker_message,
    ros_channel,
)
from . import contract
from .common import ConfigError, PolledSubscription, StackNode, declare, run_node, stamp_to_ns
from .recorder_node import message_class

NEWEST_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
"""Best effort, depth 1: the inspector only ever sends the newest message; never slows a publisher."""


@dataclass
class _Topic:
    """One ROS topic offered to clients."""

    name: str
    type_name: str
    msg_type: type
    channel: object
    latched: bool = False
    poll: PolledSubscription | None = None
    last: bytes | None = None
    """Newest message of a latched topic, for new subscribers."""
    sent: int = 0
    users: list = field(default_factory=list)
    """Computed channels that need this topic's messages (frames need /joint_states)."""


class InspectorNode(StackNode):
    """Serves the stack over the Foxglove WebSocket protocol (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("inspector_node")
        host = str(declare(self, "host", "127.0.0.1", "address to listen on (0.0.0.0: every interface)"))
        port = int(declare(self, "port", 8765, "WebSocket port (8765 is Foxglove's default; 0: any free port)"))
        self.max_rate = float(declare(self, "max_rate", 30.0,
                                      "Hz: at most this many messages per topic go to clients (the newest each time)"))
        backlog = int(declare(self, "message_backlog", 64,
                              "messages waiting per client before the oldest are dropped"))
        self.discovery_period = float(declare(self, "discovery_period", 1.0, "s between looks for new topics"))
        self.exclude = {str(t) for t in declare(self, "exclude_topics", ["/parameter_events"],
                                                "topics never offered")}
        urdf_file = str(declare(self, "robot_description_file", "",
                                "URDF the frames are computed from (empty: the project's Sawyer description)"))
        self.goal_radius = float(declare(self, "goal_radius", 0.05, "m, radius of the goal marker"))
        if not 0 <= port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {port}")
        if not (self.max_rate > 0 and self.discovery_period > 0 and backlog > 0 and self.goal_radius > 0):
            raise ConfigError(f"max_rate ({self.max_rate}), discovery_period ({self.discovery_period}), "
                              f"message_backlog ({backlog}) and goal_radius ({self.goal_radius}) must be positive")
        try:
            if urdf_file:
                urdf = Path(urdf_file).read_text()
            else:
                from ..envs.sawyer_model import build_urdf

                urdf = build_urdf()
            self.arm = ArmFrames(urdf)
        except (OSError, ValueError) as err:
            raise ConfigError(f"robot description {urdf_file or '(built in)'}: {err}") from err

        import foxglove
        from foxglove.channels import FrameTransformsChannel, SceneUpdateChannel

        self.fox = foxglove.Context()
        self.frames_channel = FrameTransformsChannel(FRAMES_TOPIC, context=self.fox)
        self.goal_channel = SceneUpdateChannel(GOAL_MARKER_TOPIC, context=self.fox)
        self.events = SubscriptionEvents()
        try:
            self.server = foxglove.start_server(name="solar_ros", host=host, port=port, context=self.fox,
                                                server_listener=self.events, message_backlog_size=backlog)
        except Exception as err:  # noqa: BLE001 - the SDK raises its own error types (port in use, bad host)
            raise ConfigError(f"cannot serve on {host}:{port}: {err}") from err
        # the inputs of the computed channels, as remapped (real_sawyer: /robot/joint_states)
        self.joint_topic = self.resolve_topic_name(contract.JOINT_STATES)
        self.goal_topic = self.resolve_topic_name(contract.GOAL)
        self.topics: dict[str, _Topic] = {}
        self.unsupported: set[str] = set()
        self.goal_marker = None
        self.frames_sent = 0
        self.create_timer(1.0 / self.max_rate, self._forward)
        self.create_timer(self.discovery_period, self._discover)
        self._discover()
        self.get_logger().info(
            f"Foxglove WebSocket server on ws://{host}:{self.server.port} (open it in Foxglove: "
            f"Open connection > Foxglove WebSocket); topics are subscribed while a client listens, "
            f"at most {self.max_rate:g} messages/s each; frames of {len(self.arm.joints)} joints on "
            f"{FRAMES_TOPIC}")

    # ---- topics --------------------------------------------------------------------------------

    def _discover(self) -> None:
        own = {FRAMES_TOPIC, GOAL_MARKER_TOPIC}
        for name, types in self.get_topic_names_and_types():
            if name in self.topics or name in self.unsupported or name in self.exclude or name in own:
                continue
            type_name = types[0]
            try:
                channel = ros_channel(name, type_name, self.fox)
                msg_type = message_class(type_name)
            except (OSError, ValueError) as err:
                self.unsupported.add(name)
                self.get_logger().warning(f"not offering {name} ({type_name}): {err}")
                continue
            topic = _Topic(name, type_name, msg_type, channel)
            if name == self.joint_topic:
                topic.users.append(self.frames_channel)
            elif name == self.goal_topic:
                topic.users.append(self.goal_channel)
            self.topics[name] = topic
            self.get_logger().info(f"offering {name} ({type_name})")

    def _wanted(self, topic: _Topic) -> bool:
        return topic.channel.has_sinks() or any(c.has_sinks() for c in topic.users)

    def _update_subscription(self, topic: _Topic) -> None:
        wanted = self._wanted(topic)
        if wanted and topic.poll is None:
            infos = self.get_publishers_info_by_topic(topic.name)
            topic.latched = any(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
            qos = contract.LATCHED_QOS if topic.latched else NEWEST_QOS
            topic.poll = PolledSubscription(self, topic.msg_type, topic.name, qos, raw=True)
            self.get_logger().info(f"a client listens to {topic.name}: subscribed")
        elif not wanted and topic.poll is not None:
            topic.poll.destroy()
            topic.poll = None
            topic.last = None
            self.get_logger().info(f"no client listens to {topic.name} any more: unsubscribed")

    # ---- forwarding ----------------------------------------------------------------------------

    def _forward(self) -> None:
        new = self.events.take()
        for topic in self.topics.values():
            self._update_subscription(topic)
            if topic.poll is None:
                continue
            taken = topic.poll.take_all(with_info=True)
            if taken:
                data, info = taken[-1]
                data = bytes(data)
                topic.channel.log(data, log_time=int(info["received_timestamp"]))
                topic.sent += 1
                if topic.latched:
                    topic.last = data
                if topic.users:
                    self._derive(topic, data)
            elif topic.last is not None and topic.channel.id() in new:
                topic.channel.log(topic.last, log_time=time.time_ns())  # a late subscriber gets it too
        if self.goal_marker is not None and self.goal_channel.id() in new:
            self.goal_channel.log(self.goal_marker, log_time=time.time_ns())

    def _derive(self, topic: _Topic, data: bytes) -> None:
        """The computed channels: the arm's frames from a joint state, the goal marker from a goal."""
        try:
            if topic.name == self.joint_topic and self.frames_channel.has_sinks():
                msg = deserialize_message(data, JointState)
                if len(msg.position) != len(msg.name):
                    raise ValueError(f"{len(msg.name)} names but {len(msg.position)} positions")
                stamp = stamp_to_ns(msg.header.stamp) or time.time_ns()
                transforms = self.arm.transforms(dict(zip(msg.name, msg.position)))
                self.frames_channel.log(frames_message(transforms, stamp), log_time=time.time_ns())
                self.frames_sent += 1
            elif topic.name == self.goal_topic:
                msg = deserialize_message(data, PointStamped)
                p = msg.point
                self.goal_marker = goal_marker_message((p.x, p.y, p.z), msg.header.frame_id, self.goal_radius,
                                                       stamp_to_ns(msg.header.stamp))
                self.goal_channel.log(self.goal_marker, log_time=time.time_ns())
        except ValueError as err:
            what = "frames" if topic.name == self.joint_topic else "the goal marker"
            self.get_logger().warning(f"{topic.name}: cannot compute {what}: {err}", throttle_duration_sec=5.0)

    def on_shutdown(self) -> None:
        self.server.stop()


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run solar_ros inspector_node``)."""
    return run_node(InspectorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
