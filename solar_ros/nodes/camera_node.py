"""camera_node: camera images -> the model's input images on /solar/image.

Input: a driver's image topic (``input_topic``, default /camera/image_raw), or an OpenCV device
index / video file / image file (``source``). Each frame is centre-cropped to the output aspect
ratio, resized (INTER_AREA by default) and converted to ``rgb8`` or ``mono8``
(:mod:`solar_ros.runtime.image`), then published with sensor-data QoS and the source frame's stamp
and frame_id. ``publish_mode``:

* ``timer``: a timer at ``rate`` Hz publishes the newest frame not yet published (a fixed rate
  when the source is at least that fast);
* ``on_arrival``: each frame is published as it arrives, at most ``rate`` Hz (judged by the frame
  stamps). Lowest latency; use it when the source already runs at the model's rate (the simulator).

Bad frames (unsupported encoding, data size != step*height, empty) are counted and reported in a
throttled error; the node keeps serving good frames.
"""
from __future__ import annotations

import time

import cv2
import numpy as np
from sensor_msgs.msg import Image

from ..runtime.image import INTERPOLATIONS, OUTPUT_ENCODINGS, ImageFormatError, convert_image_message, preprocess_image
from . import contract
from .common import ConfigError, StackNode, Throttle, declare, run_node, set_stamp, stamp_to_ns

IMAGE_FILE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")


class CameraNode(StackNode):
    """Preprocesses camera frames into model input images (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("camera_node", lean=True)  # parameters are read once; fewer entities to wait on
        self.realtime_priority = self.declare_realtime_priority()
        self.source = str(declare(self, "source", "",
                                  "'' = subscribe to input_topic; a device index or a video/image file"))
        self.input_topic = declare(self, "input_topic", contract.CAMERA_RAW, "driver image topic (when source is '')")
        self.width = int(declare(self, "width", 64, "output width, pixels"))
        self.height = int(declare(self, "height", 64, "output height, pixels"))
        self.encoding = declare(self, "encoding", "rgb8", "output encoding: rgb8 or mono8")
        self.crop = declare(self, "crop", "center", "center (keep aspect ratio) or none (stretch)")
        self.interpolation = declare(self, "interpolation", "area", "area, linear or nearest")
        self.rate = float(declare(self, "rate", 20.0, "publish rate, Hz (on_arrival: the maximum)"))
        self.publish_mode = declare(self, "publish_mode", "timer", "timer or on_arrival")
        self.mono16_max = float(declare(self, "mono16_max", 65535.0, "16-bit value mapped to 255"))
        self.frame_id = declare(self, "frame_id", "camera", "frame_id for device/file sources")
        self.loop_file = bool(declare(self, "loop_file", True, "restart a video file at its end"))
        self.log_period = float(declare(self, "log_period", 10.0, "seconds between status summaries"))
        self._check_config()

        self.out_channels = OUTPUT_ENCODINGS[self.encoding]
        self.publisher = self.create_publisher(Image, contract.MODEL_IMAGE, contract.SENSOR_QOS)
        self._pending: Image | None = None
        self._last_published_stamp_ns = -1
        self._min_interval_ns = int(0.9e9 / self.rate) if self.rate > 0 else 0
        self.frames_in = self.frames_out = self.frames_bad = 0
        self._throttle = Throttle(2.0)
        self._capture = None
        self._still: np.ndarray | None = None

        if self.source == "":
            self.create_subscription(Image, self.input_topic, self._on_image, contract.SENSOR_QOS)
            where = self.input_topic
        else:
            self._open_source()
            where = self.source
        if self.publish_mode == "timer" or self.source != "":
            self.create_timer(1.0 / self.rate, self._on_timer)
        self._last_log = time.monotonic()
        self.get_logger().info(
            f"camera: {where} -> {contract.MODEL_IMAGE} {self.width}x{self.height} {self.encoding}, "
            f"{self.publish_mode} at {self.rate:g} Hz, crop={self.crop}, interpolation={self.interpolation}")

    def _check_config(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ConfigError(f"width and height must be positive, got {self.width}x{self.height}")
        if self.encoding not in OUTPUT_ENCODINGS:
            raise ConfigError(f"encoding must be one of {list(OUTPUT_ENCODINGS)}, got {self.encoding!r}")
        if self.crop not in ("center", "none"):
            raise ConfigError(f"crop must be 'center' or 'none', got {self.crop!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {list(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.publish_mode not in ("timer", "on_arrival"):
            raise ConfigError(f"publish_mode must be 'timer' or 'on_arrival', got {self.publish_mode!r}")
        if not (self.rate > 0 or (self.publish_mode == "on_arrival" and self.source == "")):
            raise ConfigError(f"rate must be > 0 Hz (0 = unlimited only for on_arrival from a topic), got {self.rate}")
        if not self.mono16_max > 0:
            raise ConfigError(f"mono16_max must be positive, got {self.mono16_max}")

    def _open_source(self) -> None:
        src = self.source
        if src.lower().endswith(IMAGE_FILE_EXTENSIONS):
            self._still = cv2.imread(src, cv2.IMREAD_COLOR)
            if self._still is None:
                raise ConfigError(f"cannot read image file {src!r}")
            return
        self._capture = cv2.VideoCapture(int(src) if src.isdigit() else src)
        if not self._capture.isOpened():
            raise ConfigError(f"cannot open camera device or video file {src!r}")

    # ---- topic input ---------------------------------------------------------------------------

    def _on_image(self, msg: Image) -> None:
        self.frames_in += 1
        if self.publish_mode == "timer":
            self._pending = msg
            return
        stamp = stamp_to_ns(msg.header.stamp)
        if self._min_interval_ns and 0 <= stamp - self._last_published_stamp_ns < self._min_interval_ns:
            return  # faster than `rate`: skip this frame
        self._convert_and_publish(msg)

    def _convert_and_publish(self, msg: Image) -> None:
        try:
            out = convert_image_message(
                msg.data, msg.height, msg.width, msg.encoding, msg.step, bool(msg.is_bigendian),
                out_width=self.width, out_height=self.height, out_encoding=self.encoding, crop=self.crop,
                interpolation=self.interpolation, mono16_max=self.mono16_max)
        except ImageFormatError as err:
            self.frames_bad += 1
            if self._throttle.ready(Throttle.key(str(err))):
                self.get_logger().error(f"dropping camera frame: {err} ({self.frames_bad} bad so far)")
            return
        self._publish(out, msg.header)
        self._last_published_stamp_ns = stamp_to_ns(msg.header.stamp)

    # ---- timer: topic latest frame, or device/file ---------------------------------------------

    def _on_timer(self) -> None:
        if self.source == "":
            msg, self._pending = self._pending, None
            if msg is not None:
                self._convert_and_publish(msg)
        else:
            self._read_source()
        now = time.monotonic()
        if now - self._last_log >= self.log_period:
            self._last_log = now
            self.get_logger().info(f"frames in {self.frames_in}, out {self.frames_out}, bad {self.frames_bad}")

    def _read_source(self) -> None:
        if self._still is not None:
            frame = self._still
        else:
            ok, frame = self._capture.read()
            if not ok and self.loop_file and not self.source.isdigit():
                self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = self._capture.read()
            if not ok:
                self.frames_bad += 1
                if self._throttle.ready("no frame"):
                    self.get_logger().error(f"no frame from {self.source!r}")
                return
        self.frames_in += 1
        encoding = "mono8" if frame.ndim == 2 or frame.shape[2] == 1 else ("bgra8" if frame.shape[2] == 4 else "bgr8")
        try:
            out = preprocess_image(frame, encoding, out_width=self.width, out_height=self.height,
                                   out_encoding=self.encoding, crop=self.crop, interpolation=self.interpolation)
        except ImageFormatError as err:
            self.frames_bad += 1
            if self._throttle.ready(Throttle.key(str(err))):
                self.get_logger().error(f"dropping frame: {err}")
            return
        header = Image().header
        set_stamp(header.stamp, self.get_clock().now().nanoseconds)
        header.frame_id = self.frame_id
        self._publish(out, header)

    def _publish(self, image: np.ndarray, header) -> None:
        msg = Image()
        msg.header = header
        msg.height, msg.width = image.shape[0], image.shape[1]
        msg.encoding = self.encoding
        msg.is_bigendian = 0
        msg.step = image.shape[1] * self.out_channels
        msg.data = image.tobytes()
        self.publisher.publish(msg)
        self.frames_out += 1

    def on_shutdown(self) -> None:
        if self._capture is not None:
            self._capture.release()


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run solar_ros camera_node``)."""
    return run_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
