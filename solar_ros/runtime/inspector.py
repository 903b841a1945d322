"""The inspector's ROS-free parts: Foxglove channels for ROS topics, the arm's frames, the goal marker.

``inspector_node`` (``solar_ros/nodes/inspector_node.py``) serves the stack to the Foxglove app
and any client of its WebSocket protocol through ``foxglove-sdk``. What it sends is built here:

* :func:`ros_channel`: a channel carrying a ROS 2 topic's CDR bytes unchanged, with the type's full
  ``ros2msg`` definition as schema (the layout rosbag2 writes into MCAP files), so clients decode
  the stack's own message types.
* :func:`frames_message`: the arm's frames (:class:`~solar_ros.runtime.arm_frames.ArmFrames`) as a
  ``foxglove.FrameTransforms`` message, which Foxglove's 3D panel composes into its frame tree.
* :func:`goal_marker_message`: the goal as a sphere (``foxglove.SceneUpdate``).
* :class:`SubscriptionEvents`: the server's subscribe callbacks (from its own thread) handed to the
  node's executor thread.
"""
from __future__ import annotations

import threading

from foxglove import Channel, Context, Schema
from foxglove.messages import (
    Color,
    FrameTransform,
    FrameTransforms,
    Pose,
    Quaternion,
    SceneEntity,
    SceneUpdate,
    SpherePrimitive,
    Timestamp,
    Vector3,
)

from .arm_frames import Transform
from .msgdefs import message_definition

FRAMES_TOPIC = "/solar/arm_frames"
"""The arm's frames (foxglove.FrameTransforms), computed from /joint_states."""
GOAL_MARKER_TOPIC = "/solar/goal_marker"
"""The goal as a sphere (foxglove.SceneUpdate), from /solar/goal."""
GOAL_ENTITY_ID = "goal"
GOAL_COLOR = Color(r=0.1, g=0.8, b=0.2, a=0.6)


def ros_channel(topic: str, type_name: str, context: Context) -> Channel:
    """A channel for a ROS 2 topic: CDR messages, schema = the type's ``ros2msg`` definition.

    ``FileNotFoundError`` when the type's ``.msg`` files are not installed.
    """
    schema = Schema(name=type_name, encoding="ros2msg", data=message_definition(type_name).encode())
    return Channel(topic, schema=schema, message_encoding="cdr", context=context)


def timestamp(ns: int) -> Timestamp:
    sec, nsec = divmod(int(ns), 1_000_000_000)
    return Timestamp(sec, nsec)


def frames_message(transforms: list[Transform], stamp_ns: int) -> FrameTransforms:
    stamp = timestamp(stamp_ns)
    return FrameTransforms(transforms=[
        FrameTransform(timestamp=stamp, parent_frame_id=t.parent, child_frame_id=t.child,
                       translation=Vector3(x=t.translation[0], y=t.translation[1], z=t.translation[2]),
                       rotation=Quaternion(x=t.rotation[0], y=t.rotation[1], z=t.rotation[2], w=t.rotation[3]))
        for t in transforms])


def goal_marker_message(position: tuple[float, float, float], frame_id: str, radius: float,
                        stamp_ns: int) -> SceneUpdate:
    """A sphere of ``radius`` (m) at ``position`` in ``frame_id``; replaces the previous goal marker."""
    diameter = 2.0 * float(radius)
    sphere = SpherePrimitive(pose=Pose(position=Vector3(x=position[0], y=position[1], z=position[2]),
                                       orientation=Quaternion(w=1.0)),
                             size=Vector3(x=diameter, y=diameter, z=diameter), color=GOAL_COLOR)
    return SceneUpdate(entities=[SceneEntity(timestamp=timestamp(stamp_ns), frame_id=frame_id or "base",
                                             id=GOAL_ENTITY_ID, spheres=[sphere])])


class SubscriptionEvents:
    """``foxglove`` server listener: remembers which channels got a new subscriber.

    The server calls it from its own thread; the node takes the ids with :meth:`take` in its
    executor thread (e.g. to send a late subscriber the newest message of a latched topic).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._new: set[int] = set()
        self.subscribes = 0
        self.unsubscribes = 0

    def on_subscribe(self, client, channel) -> None:
        with self._lock:
            self._new.add(int(channel.id))
            self.subscribes += 1

    def on_unsubscribe(self, client, channel) -> None:
        with self._lock:
            self.unsubscribes += 1

    def take(self) -> set[int]:
        with self._lock:
            new, self._new = self._new, set()
        return new
