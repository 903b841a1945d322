"""The inspector's channels (solar_ros.runtime.inspector) served by foxglove-sdk in this process, read
with the project's client of the Foxglove WebSocket protocol (solar_ros.runtime.foxglove_client):
ROS 2 messages decode from the advertised ros2msg schema alone, frames and the goal marker from the
advertised protobuf schema; unsubscribing stops the messages; a client that stops reading does not
make the server queue without bound."""
from __future__ import annotations

import asyncio
import json
import struct
import time

import foxglove
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image

from solar_ros.runtime.arm_frames import Transform
from solar_ros.runtime.foxglove_client import FoxgloveClient, describe
from solar_ros.runtime.inspector import (
    FRAMES_TOPIC,
    GOAL_MARKER_TOPIC,
    SubscriptionEvents,
    frames_message,
    goal_marker_message,
    ros_channel,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server():
    from foxglove.channels import FrameTransformsChannel, SceneUpdateChannel

    ctx = foxglove.Context()
    events = SubscriptionEvents()
    srv = foxglove.start_server(name="test", port=0, context=ctx, server_listener=events, message_backlog_size=8)
    channels = {"image": ros_channel("/camera/image_raw", "sensor_msgs/msg/Image", ctx),
                "frames": FrameTransformsChannel(FRAMES_TOPIC, context=ctx),
                "goal": SceneUpdateChannel(GOAL_MARKER_TOPIC, context=ctx)}
    yield srv, channels, events
    srv.stop()


def image(value: int, width: int = 8) -> bytes:
    msg = Image(height=4, width=width, encoding="rgb8", step=3 * width, data=bytes([value]) * (12 * width))
    msg.header.frame_id = "cam"
    return serialize_message(msg)


async def _until(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.02)


def test_ros_and_foxglove_messages_decode_from_the_advertised_schemas(server):
    srv, ch, events = server

    async def run():
        async with FoxgloveClient(f"ws://127.0.0.1:{srv.port}") as c:
            await c.wait_for_channels(["/camera/image_raw", FRAMES_TOPIC, GOAL_MARKER_TOPIC], timeout=5)
            assert c.server_info["op"] == "serverInfo"
            assert c.channels["/camera/image_raw"].schema_name == "sensor_msgs/msg/Image"
            assert c.channels["/camera/image_raw"].schema_encoding == "ros2msg"
            assert "MSG: std_msgs/Header" in c.channels["/camera/image_raw"].schema
            await c.subscribe(["/camera/image_raw", FRAMES_TOPIC, GOAL_MARKER_TOPIC])
            await _until(lambda: all(x.has_sinks() for x in ch.values()))
            assert events.take() == {x.id() for x in ch.values()}
            ch["image"].log(image(7), log_time=123)
            ch["frames"].log(frames_message([Transform("base", "hand", (1.0, 2.0, 3.0), (0.0, 0.0, 0.6, 0.8))],
                                            5_000_000_001))
            ch["goal"].log(goal_marker_message((0.6, 0.1, -0.2), "base", 0.05, 7))
            got = await c.collect(5, until=lambda r: len(r) == 3)
            img = c.decode(got["/camera/image_raw"][0])
            assert got["/camera/image_raw"][0].log_time == 123
            assert (img.width, img.height, img.encoding, img.header.frame_id) == (8, 4, "rgb8", "cam")
            assert bytes(img.data) == bytes([7]) * 96 and describe("sensor_msgs/msg/Image", img) == "8x4 rgb8"
            tf = c.decode(got[FRAMES_TOPIC][0]).transforms[0]
            assert (tf.parent_frame_id, tf.child_frame_id) == ("base", "hand")
            assert (tf.translation.x, tf.translation.y, tf.translation.z) == (1.0, 2.0, 3.0)
            assert (tf.rotation.z, tf.rotation.w) == (0.6, 0.8)
            assert (tf.timestamp.seconds, tf.timestamp.nanos) == (5, 1)
            entity = c.decode(got[GOAL_MARKER_TOPIC][0]).entities[0]
            sphere = entity.spheres[0]
            assert entity.frame_id == "base" and entity.id == "goal"
            assert (sphere.pose.position.x, sphere.pose.position.y, sphere.pose.position.z) == (0.6, 0.1, -0.2)
            assert sphere.size.x == pytest.approx(0.1)

            await c.unsubscribe(["/camera/image_raw"])
            await _until(lambda: not ch["image"].has_sinks())
            ch["image"].log(image(8))
            ch["frames"].log(frames_message([], 0))
            later = await c.collect(1.0, until=lambda r: FRAMES_TOPIC in r)
            assert "/camera/image_raw" not in later and FRAMES_TOPIC in later

    asyncio.run(run())


def test_a_client_that_stops_reading_loses_messages_and_the_server_stays_bounded(server):
    srv, ch, _events = server

    async def run():
        async with FoxgloveClient(f"ws://127.0.0.1:{srv.port}") as stalled, \
                FoxgloveClient(f"ws://127.0.0.1:{srv.port}") as reader:
            for c in (stalled, reader):
                await c.wait_for_channels(["/camera/image_raw"], timeout=5)
                await c.subscribe(["/camera/image_raw"])
            await _until(lambda: ch["image"].has_sinks())
            await asyncio.sleep(0.3)
            big = image(1, width=20000)  # 240 kB each: the stalled client's socket fills within a few
            n = 200
            for i in range(n):
                ch["image"].log(big)
                if i % 20 == 0:
                    await reader.collect(0.05)  # the reader keeps up; the stalled client reads nothing
            got = (await reader.collect(3.0)).get("/camera/image_raw", [])
            assert got, "the reading client still gets messages"
            stalled_got = (await stalled.collect(3.0)).get("/camera/image_raw", [])
            assert len(stalled_got) < n, f"a stalled client got all {n} messages: nothing was dropped"

    asyncio.run(run())


def test_a_subscription_refused_as_an_unknown_channel_is_sent_again():
    # A stand-in server that refuses the first subscription as the Foxglove SDK does when a client
    # subscribes to a channel it has advertised but not registered yet, then accepts the second.
    from websockets.asyncio.server import serve

    from solar_ros.runtime.foxglove_client import MESSAGE_DATA, SUBPROTOCOL

    subscribes = []

    async def handler(ws):
        await ws.send(json.dumps({"op": "advertise", "channels": [
            {"id": 7, "topic": "/t", "encoding": "json", "schemaName": "T", "schemaEncoding": "jsonschema",
             "schema": "{}"}]}))
        async for text in ws:
            msg = json.loads(text)
            subscribes.append(msg["subscriptions"])
            if len(subscribes) == 1:
                await ws.send(json.dumps({"op": "status", "level": 2, "message": "Unknown channel ID: 7"}))
            else:
                sub_id = msg["subscriptions"][0]["id"]
                await ws.send(struct.pack("<BIQ", MESSAGE_DATA, sub_id, 42) + b'{"x": 1}')

    async def run():
        async with serve(handler, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL]) as srv:
            port = srv.sockets[0].getsockname()[1]
            async with FoxgloveClient(f"ws://127.0.0.1:{port}") as c:
                await c.wait_for_channels(["/t"], timeout=5)
                await c.subscribe(["/t"])
                got = await c.collect(5, until=lambda r: "/t" in r)
                return c, got

    c, got = asyncio.run(run())
    assert [r.log_time for r in got["/t"]] == [42] and c.decode(got["/t"][0]) == {"x": 1}
    assert c.resubscribes == 1 and subscribes == [[{"id": 1, "channelId": 7}]] * 2
