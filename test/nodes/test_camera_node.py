"""camera_node in its own process: conversion and stamps on /solar/image, bad frames (wrong encoding,
truncated data, zero size, inconsistent step) are dropped without a crash, and a file source works."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import Image

from solar_ros.nodes import contract

pytestmark = [pytest.mark.ros, pytest.mark.timeout(90)]


def make_image(h, w, encoding, pixels: np.ndarray, stamp_ns: int) -> Image:
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = "cam"
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.step = pixels.strides[0] if pixels.size else 0
    msg.data = pixels.tobytes()
    return msg


@pytest.fixture(scope="module")
def camera(ros, start_node):
    node = start_node("camera_node", {"width": 32, "height": 24, "encoding": "rgb8", "publish_mode": "on_arrival",
                                      "rate": 0.0, "interpolation": "area"})
    received: list[Image] = []
    pub = ros.node.create_publisher(Image, contract.CAMERA_RAW, contract.SENSOR_QOS)
    ros.node.create_subscription(Image, contract.MODEL_IMAGE, received.append, contract.SENSOR_QOS)
    ros.wait_for_subscribers(pub, timeout=20)
    ros.wait_for_publishers(contract.MODEL_IMAGE)
    yield node, pub, received
    assert node.alive(), node.log()


def send_and_receive(ros, pub, received, msg):
    """Publish (best effort: repeat until discovery has settled) and return the converted image."""
    received.clear()
    for _ in range(50):
        pub.publish(msg)
        ros.spin(0.1)
        if received:
            return received[0]
    raise AssertionError("no converted image received")


def test_bgr_frame_is_cropped_resized_converted_and_keeps_its_stamp(ros, camera):
    node, pub, received = camera
    assert ros.topic_types()[contract.MODEL_IMAGE] == ["sensor_msgs/msg/Image"]
    # 48x128 BGR: the left and right thirds are blue, the middle is red. The centre crop to 4:3
    # keeps columns 32..96 (64 wide), i.e. only the red middle.
    img = np.zeros((48, 128, 3), np.uint8)
    img[:, :, 0] = 255              # blue (BGR)
    img[:, 32:96] = (0, 0, 255)     # red (BGR)
    out = send_and_receive(ros, pub, received, make_image(48, 128, "bgr8", img, 1_234_000_000))
    assert (out.height, out.width, out.encoding, out.step) == (24, 32, "rgb8", 96)
    assert (out.header.stamp.sec, out.header.stamp.nanosec) == (1, 234_000_000)
    assert out.header.frame_id == "cam"
    pixels = np.frombuffer(out.data, np.uint8).reshape(24, 32, 3)
    assert np.all(pixels == (255, 0, 0)), "centre crop keeps only the red middle, converted to RGB"


def test_bad_frames_are_dropped_and_good_frames_still_served(ros, camera):
    node, pub, received = camera
    good = np.full((24, 32, 3), 7, np.uint8)
    bad = [
        make_image(24, 32, "yuv422", good, 10),                                   # unsupported encoding
        make_image(24, 32, "rgb8", good[:20], 11),                               # truncated: data < step*height
        make_image(0, 0, "rgb8", np.zeros((0, 0, 3), np.uint8), 12),             # zero size
    ]
    short_step = make_image(24, 32, "rgb8", good, 13)
    short_step.step = 10                                                          # step < one row of pixels
    bad.append(short_step)
    received.clear()
    for msg in bad:
        pub.publish(msg)
    ros.spin(0.5)
    assert not received, "bad frames must not produce output images"
    out = send_and_receive(ros, pub, received, make_image(24, 32, "rgb8", good, 14))
    assert np.all(np.frombuffer(out.data, np.uint8) == 7)
    assert all(stamp.header.stamp.nanosec == 14 for stamp in received)
    log = node.log()
    assert "unsupported image encoding 'yuv422'" in log
    assert "step*height" in log
    assert "empty image" in log
    assert node.alive()


def test_mono16_and_rgba_inputs(ros, camera):
    node, pub, received = camera
    depth = np.full((24, 32), 65535, np.uint16)
    out = send_and_receive(ros, pub, received, make_image(24, 32, "16UC1", depth, 20))
    assert np.all(np.frombuffer(out.data, np.uint8) == 255)
    rgba = np.zeros((24, 32, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 9
    out = send_and_receive(ros, pub, received, make_image(24, 32, "rgba8", rgba, 21))
    np.testing.assert_array_equal(np.frombuffer(out.data, np.uint8).reshape(24, 32, 3)[0, 0], (0, 200, 0))


def test_image_file_source_publishes_at_the_rate(ros, start_node, tmp_path):
    path = tmp_path / "frame.png"
    frame = np.zeros((60, 80, 3), np.uint8)
    frame[..., 2] = 250  # red in BGR
    assert cv2.imwrite(str(path), frame)
    node = start_node("camera_node", {"source": str(path), "width": 16, "height": 16, "encoding": "mono8",
                                      "rate": 20.0}, extra_args=["-r", "/solar/image:=/file_cam/image"])
    got: list[Image] = []
    ros.node.create_subscription(Image, "/file_cam/image", got.append, contract.SENSOR_QOS)
    ros.spin_until(lambda: len(got) >= 5, 20, "5 frames from the file source")
    out = got[-1]
    assert (out.height, out.width, out.encoding) == (16, 16, "mono8")
    gray = np.frombuffer(out.data, np.uint8)
    assert np.all(np.abs(gray.astype(int) - round(0.299 * 250)) <= 1)
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in got[-5:]]
    assert np.all(np.diff(stamps) > 0.02), "frames are stamped when read, at about the 20 Hz rate"
    assert node.alive(), node.log()
