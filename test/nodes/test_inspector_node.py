"""inspector_node against a running stack (sim_arm_node, camera_node, encoder_node with a deep spatial
autoencoder, controller_node), read by a client of the Foxglove WebSocket protocol
(solar_ros.runtime.foxglove_client): it lists the stack's topics, and the camera image, the latent,
the feature-point overlay, the torques, the arm's frames and the goal marker arrive and decode with
the content the stack published. ROS topics are subscribed only while a client listens, and the
server survives clients that subscribe and vanish (connection dropped without a close) or stop
reading."""
from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest
import torch

from solar_ros.models import DeepSpatialAutoencoder, DSAEConfig, save_checkpoint
from solar_ros.nodes import contract
from solar_ros.runtime.arm_frames import ArmFrames
from solar_ros.runtime.foxglove_client import FoxgloveClient
from solar_ros.runtime.inspector import FRAMES_TOPIC, GOAL_MARKER_TOPIC
from solar_ros.runtime.inspector_layout import LAYOUT_PATH, topics_in

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

POINTS = 4  # feature points of the test autoencoder: latent dim 8
STACK_TOPICS = [contract.CAMERA_RAW, contract.MODEL_IMAGE, contract.LATENT, contract.COMMANDS, contract.JOINT_STATES,
                contract.COST, contract.GOAL, contract.ROBOT_DESCRIPTION, contract.FEATURE_POINTS,
                contract.RECONSTRUCTION, contract.CLOCK, FRAMES_TOPIC, GOAL_MARKER_TOPIC]


@pytest.fixture(scope="module")
def stack(start_node, tmp_path_factory):
    d = tmp_path_factory.mktemp("inspector")
    torch.manual_seed(0)
    save_checkpoint(d / "dsae.pt", DeepSpatialAutoencoder(DSAEConfig(image_size=64, conv_channels=(8, 8, POINTS))),
                    extra={"model_id": "dsae-inspector-test"})
    nodes = {
        "sim": start_node("sim_arm_node", {"seed": 3, "control_rate": 250.0, "real_time_factor": 1.0}),
        "camera": start_node("camera_node", {"publish_mode": "on_arrival"}),
        "encoder": start_node("encoder_node", {"model_path": str(d / "dsae.pt"), "diagnostics_rate": 10.0}),
        "controller": start_node("controller_node", {"state_source": "joints", "rate": 100.0, "use_sim_time": True}),
        "inspector": start_node("inspector_node", {"port": 0, "max_rate": 20.0, "discovery_period": 0.5}),
    }
    end = time.monotonic() + 60
    while not (m := re.search(r"Foxglove WebSocket server on (ws://[\d.]+:\d+)", nodes["inspector"].log())):
        assert nodes["inspector"].alive() and time.monotonic() < end, nodes["inspector"].log()
        time.sleep(0.2)
    nodes["url"] = m.group(1)
    return nodes


def inspector_subscriptions(ros, topic: str) -> int:
    return sum(i.node_name == "inspector_node" for i in ros.node.get_subscriptions_info_by_topic(topic))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_live_images_latents_torques_and_frames_decode_with_their_content(stack, ros):
    latched = [contract.GOAL, GOAL_MARKER_TOPIC, contract.ROBOT_DESCRIPTION]  # one message each
    wanted = [contract.CAMERA_RAW, contract.LATENT, contract.FEATURE_POINTS, contract.COMMANDS,
              contract.JOINT_STATES, FRAMES_TOPIC] + latched
    assert inspector_subscriptions(ros, contract.LATENT) == 0, "subscribed before any client listens"

    async def session():
        async with FoxgloveClient(stack["url"]) as c:
            await c.wait_for_channels(STACK_TOPICS, timeout=60)
            await c.wait_for_channels(sorted(topics_in(LAYOUT_PATH.read_text())), timeout=10)  # all the layout shows
            assert c.channels[contract.LATENT].schema_name == "solar_ros/msg/LatentState"
            assert c.channels[FRAMES_TOPIC].schema_name == "foxglove.FrameTransforms"
            await c.subscribe(wanted)
            got = await c.collect(60, until=lambda r: all(len(r.get(t, [])) >= (1 if t in latched else 3)
                                                          for t in wanted))
            # The client still listens; discovery of the inspector's subscription may lag its first messages.
            end = time.monotonic() + 15
            while (subscribed := inspector_subscriptions(ros, contract.LATENT)) != 1 and time.monotonic() < end:
                ros.executor.spin_once(timeout_sec=0)
                await asyncio.sleep(0.05)
            return c, got, subscribed

    c, got, subscribed = run(session())
    missing = [t for t in wanted if t not in got]
    assert not missing, f"nothing received on {missing}; got {sorted(got)}\n{stack['inspector'].log()[-3000:]}"
    assert subscribed == 1, "the inspector subscribes to /solar/latent while the client listens"

    image = c.decode(got[contract.CAMERA_RAW][-1])
    pixels = np.frombuffer(bytes(image.data), np.uint8)
    assert (image.width, image.height, image.encoding) == (64, 64, "rgb8") and pixels.size == 64 * 64 * 3
    assert pixels.std() > 5, "a rendered scene, not a blank image"

    latent = c.decode(got[contract.LATENT][-1])
    mean = np.array(latent.mean)
    assert latent.dim == 2 * POINTS and mean.shape == (2 * POINTS,) and len(latent.covariance) == (2 * POINTS) ** 2
    assert latent.model_id == "dsae-inspector-test" and np.all(np.abs(mean) <= 1.0), "feature points in [-1, 1]"

    overlay = c.decode(got[contract.FEATURE_POINTS][-1])
    assert (overlay.width, overlay.height, overlay.encoding) == (256, 256, "rgb8"), "the input x4, points drawn"

    torques = c.decode(got[contract.COMMANDS][-1])
    assert list(torques.data) == [0.0] * 7, "the idle controller streams zero torques"

    # The frames of a joint state the client also received compose to the arm's forward kinematics.
    joints = {}
    for r in got[contract.JOINT_STATES]:
        js = c.decode(r)
        joints[js.header.stamp.sec * 10**9 + js.header.stamp.nanosec] = js
    arm = ArmFrames(c.decode(got[contract.ROBOT_DESCRIPTION][-1]).data)  # the URDF the simulator serves
    checked = 0
    for r in got[FRAMES_TOPIC]:
        frames = c.decode(r)
        stamp = frames.transforms[0].timestamp.seconds * 10**9 + frames.transforms[0].timestamp.nanos
        if stamp not in joints:
            continue
        js = joints[stamp]
        expected = arm.world(dict(zip(js.name, js.position)))["right_hand"]
        assert np.allclose(_compose(frames, "right_hand")[:3, 3], expected[:3, 3], atol=1e-9)
        checked += 1
    assert checked, "no frames message matched a received joint state's stamp"
    assert {t.child_frame_id for t in c.decode(got[FRAMES_TOPIC][-1]).transforms} >= {
        f"right_l{i}" for i in range(7)} | {"right_hand"}

    goal = c.decode(got[contract.GOAL][-1])
    sphere = c.decode(got[GOAL_MARKER_TOPIC][-1]).entities[0].spheres[0]
    assert goal.header.frame_id == "base"
    assert (sphere.pose.position.x, sphere.pose.position.y, sphere.pose.position.z) == (
        goal.point.x, goal.point.y, goal.point.z)

    # The client is gone: the inspector lets go of the ROS topics.
    ros.spin_until(lambda: inspector_subscriptions(ros, contract.LATENT) == 0, 15,
                   "the inspector to unsubscribe /solar/latent")


def _compose(frames, child: str) -> np.ndarray:
    """Pose of ``child`` in the root frame from a FrameTransforms message."""
    by_child = {t.child_frame_id: t for t in frames.transforms}
    T = np.eye(4)
    while child in by_child:
        t = by_child[child]
        x, y, z, w = t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w
        local = np.eye(4)
        local[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
        local[:3, 3] = t.translation.x, t.translation.y, t.translation.z
        T = local @ T
        child = t.parent_frame_id
    return T


def test_the_bridge_survives_clients_that_subscribe_and_vanish(stack):
    topics = [contract.CAMERA_RAW, contract.LATENT, FRAMES_TOPIC, contract.COMMANDS]

    async def vanish():
        c = FoxgloveClient(stack["url"])
        await c.__aenter__()
        await c.wait_for_channels(topics, timeout=30)
        await c.subscribe(topics)
        await c.collect(0.5)
        c._ws.transport.abort()  # gone without a close handshake, mid-stream

    async def stall(seconds: float):
        async with FoxgloveClient(stack["url"]) as c:  # subscribes, then reads nothing
            await c.wait_for_channels(topics, timeout=30)
            await c.subscribe(topics)
            await asyncio.sleep(seconds)

    async def scenario():
        await asyncio.gather(*(vanish() for _ in range(3)), stall(4.0))
        for _ in range(2):
            await vanish()
        async with FoxgloveClient(stack["url"]) as c:
            await c.wait_for_channels(topics, timeout=30)
            await c.subscribe(topics)
            return await c.collect(30, until=lambda r: all(len(r.get(t, [])) >= 3 for t in topics))

    got = run(scenario())
    assert all(len(got.get(t, [])) >= 3 for t in topics), {t: len(got.get(t, [])) for t in topics}
    assert stack["inspector"].alive()
    log = stack["inspector"].log()
    assert "Traceback" not in log, log[-3000:]
