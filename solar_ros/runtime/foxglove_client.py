"""A small client of the Foxglove WebSocket protocol (subprotocol ``foxglove.sdk.v1``), without ROS.

What ``solar-ros inspect`` and the inspector's tests use to watch the stack the way the Foxglove
app does: connect, read the server's ``serverInfo`` and ``advertise`` messages, subscribe to
channels by topic, receive binary ``messageData`` frames (opcode 1: subscription id uint32, log
time uint64 ns, payload; little endian) and decode the payloads from the advertised schemas alone:
``cdr`` with a ``ros2msg`` schema (the stack's ROS 2 types) through ``mcap_ros2``'s dynamic decoder,
``protobuf`` (Foxglove's own types: frames, scene updates) through the schema's FileDescriptorSet,
``json`` as JSON.
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable

SUBPROTOCOL = "foxglove.sdk.v1"
MESSAGE_DATA = 1
"""Opcode of a binary server message carrying one message of a subscribed channel."""
UNKNOWN_CHANNEL = re.compile(r"Unknown channel ID: (\d+)")
"""The server's error status for a subscription to a channel it does not hold (yet)."""
RESUBSCRIBE_DELAY = 0.1
"""Seconds before a subscription the server refused as unknown is sent again."""


@dataclass(frozen=True)
class ChannelInfo:
    id: int
    topic: str
    encoding: str
    schema_name: str
    schema_encoding: str
    schema: str


@dataclass(frozen=True)
class Received:
    topic: str
    log_time: int
    payload: bytes


class ProtocolError(RuntimeError):
    """The server said something this client does not understand."""


def _decoder(channel: ChannelInfo) -> Callable[[bytes], Any]:
    if channel.encoding == "cdr" and channel.schema_encoding == "ros2msg":
        from mcap.records import Schema
        from mcap_ros2.decoder import DecoderFactory

        schema = Schema(id=channel.id, name=channel.schema_name, encoding="ros2msg", data=channel.schema.encode())
        return DecoderFactory().decoder_for("cdr", schema)
    if channel.encoding == "protobuf":
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        files = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(channel.schema))
        pool = descriptor_pool.DescriptorPool()
        for f in files.file:
            pool.Add(f)
        cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(channel.schema_name))
        return cls.FromString
    if channel.encoding == "json":
        return lambda data: json.loads(data)
    raise ProtocolError(f"channel {channel.topic}: cannot decode encoding {channel.encoding!r} "
                        f"with a {channel.schema_encoding!r} schema")


class FoxgloveClient:
    """One connection: ``async with FoxgloveClient(url) as c: await c.subscribe([...]); await c.collect(...)``."""

    def __init__(self, url: str, open_timeout: float = 10.0) -> None:
        self.url = url
        self.open_timeout = open_timeout
        self.server_info: dict | None = None
        self.channels: dict[str, ChannelInfo] = {}
        self._subs: dict[int, ChannelInfo] = {}
        self._decoders: dict[int, Callable[[bytes], Any]] = {}
        self._refused: set[int] = set()
        """Channel ids whose subscription the server refused as unknown, to be sent again."""
        self.resubscribes = 0
        self._ws = None

    async def __aenter__(self) -> "FoxgloveClient":
        import websockets

        self._ws = await websockets.connect(self.url, subprotocols=[SUBPROTOCOL], open_timeout=self.open_timeout,
                                            max_size=None)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._ws.close()

    def _handle_text(self, text: str) -> None:
        msg = json.loads(text)
        op = msg.get("op")
        if op == "serverInfo":
            self.server_info = msg
        elif op == "advertise":
            for c in msg["channels"]:
                info = ChannelInfo(int(c["id"]), c["topic"], c["encoding"], c.get("schemaName", ""),
                                   c.get("schemaEncoding", ""), c.get("schema", ""))
                self.channels[info.topic] = info
        elif op == "unadvertise":
            gone = set(msg["channelIds"])
            self.channels = {t: c for t, c in self.channels.items() if c.id not in gone}
        elif op == "status" and (m := UNKNOWN_CHANNEL.search(str(msg.get("message", "")))):
            # The server advertises a new channel before it accepts subscriptions to it: a client that
            # subscribes at once can be refused. Ours asks again (see collect).
            self._refused.add(int(m.group(1)))

    def _handle_binary(self, data: bytes) -> Received | None:
        if not data or data[0] != MESSAGE_DATA:
            return None  # time, service responses, ...: not used here
        if len(data) < 13:
            raise ProtocolError(f"messageData frame of {len(data)} bytes")
        sub_id, log_time = struct.unpack_from("<IQ", data, 1)
        channel = self._subs.get(sub_id)
        if channel is None:
            return None  # a message of a subscription just ended
        return Received(channel.topic, log_time, bytes(data[13:]))

    async def _receive(self, timeout: float) -> Received | None:
        frame = await asyncio.wait_for(self._ws.recv(), timeout)
        if isinstance(frame, str):
            self._handle_text(frame)
            return None
        return self._handle_binary(frame)

    async def wait_for_channels(self, topics: list[str], timeout: float) -> None:
        """Until every topic is advertised (``TimeoutError`` naming the missing ones)."""
        end = time.monotonic() + timeout
        while missing := [t for t in topics if t not in self.channels]:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"not advertised after {timeout:g} s: {missing}; advertised: "
                                   f"{sorted(self.channels)}")
            try:
                await self._receive(left)
            except asyncio.TimeoutError:
                pass

    async def subscribe(self, topics: list[str]) -> None:
        subs = []
        for topic in topics:
            channel = self.channels[topic]
            sub_id = len(self._subs) + 1
            self._subs[sub_id] = channel
            subs.append({"id": sub_id, "channelId": channel.id})
        await self._ws.send(json.dumps({"op": "subscribe", "subscriptions": subs}))

    async def _resubscribe_refused(self) -> None:
        """Send again the subscriptions the server refused as unknown channels (same subscription ids)."""
        refused, self._refused = self._refused, set()
        subs = [{"id": i, "channelId": c.id} for i, c in self._subs.items() if c.id in refused]
        if subs:
            await asyncio.sleep(RESUBSCRIBE_DELAY)
            self.resubscribes += len(subs)
            await self._ws.send(json.dumps({"op": "subscribe", "subscriptions": subs}))

    async def unsubscribe(self, topics: list[str]) -> None:
        ids = [i for i, c in self._subs.items() if c.topic in topics]
        for i in ids:
            del self._subs[i]
        await self._ws.send(json.dumps({"op": "unsubscribe", "subscriptionIds": ids}))

    async def collect(self, seconds: float, until: Callable[[dict[str, list[Received]]], bool] | None = None
                      ) -> dict[str, list[Received]]:
        """Messages of the subscribed channels for ``seconds`` (or until ``until(received)`` holds).
        Subscriptions the server refused because it did not hold the channel yet are sent again."""
        received: dict[str, list[Received]] = {}
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                r = await self._receive(left)
            except asyncio.TimeoutError:
                break
            if self._refused:
                await self._resubscribe_refused()
            if r is not None:
                received.setdefault(r.topic, []).append(r)
                if until is not None and until(received):
                    break
        return received

    def decode(self, received: Received) -> Any:
        channel = self.channels[received.topic]
        if channel.id not in self._decoders:
            self._decoders[channel.id] = _decoder(channel)
        return self._decoders[channel.id](received.payload)


def describe(schema_name: str, msg: Any) -> str:
    """A one-line summary of a decoded message (for ``solar-ros inspect``)."""
    if schema_name == "sensor_msgs/msg/Image":
        return f"{msg.width}x{msg.height} {msg.encoding}"
    if schema_name == "solar_ros/msg/LatentState":
        return f"dim {msg.dim}, mean[:3] {[round(v, 3) for v in list(msg.mean)[:3]]}, model {msg.model_id!r}"
    if schema_name == "std_msgs/msg/Float64MultiArray":
        return f"[{', '.join(f'{v:.2f}' for v in msg.data)}]"
    if schema_name == "sensor_msgs/msg/JointState":
        return f"q [{', '.join(f'{v:.2f}' for v in msg.position)}]"
    if schema_name == "foxglove.FrameTransforms":
        tips = [t for t in msg.transforms if t.child_frame_id == "right_hand"]
        return f"{len(msg.transforms)} transforms" + (f" (right_hand in {tips[0].parent_frame_id})" if tips else "")
    text = " ".join(str(msg).split())
    return text[:77] + "..." if len(text) > 80 else text


async def watch(url: str, topics: list[str] | None, seconds: float, out=print) -> int:
    """Subscribe to ``topics`` (all advertised ones if None) for ``seconds``; print a table per topic."""
    async with FoxgloveClient(url) as client:
        await client.wait_for_channels(topics or [], timeout=10.0)
        await client.collect(1.0)  # the advertisements of the topics found so far
        chosen = topics or sorted(client.channels)
        await client.subscribe(chosen)
        received = await client.collect(seconds)
        out(f"{url}: {len(client.channels)} channels advertised, {len(chosen)} subscribed for {seconds:g} s")
        out(f"{'topic':<34} {'schema':<32} {'msgs':>5} {'Hz':>6}  latest")
        for topic in chosen:
            msgs = received.get(topic, [])
            schema = client.channels[topic].schema_name
            latest = describe(schema, client.decode(msgs[-1])) if msgs else "-"
            out(f"{topic:<34} {schema:<32} {len(msgs):>5} {len(msgs) / seconds:>6.1f}  {latest}")
    return 0
