"""encoder_node: model input images (/solar/image) -> latent states (/solar/latent), plus diagnostics images.

* Model: a representation checkpoint (SOLAR's SVAE, VAE or deep spatial autoencoder; see
  :mod:`solar_ros.runtime.latent_encoder` for what the latent is for each kind). ``model_path`` ""
  means no model yet: the node says so once and publishes nothing until a model is announced.
* Hot reload: the model fitting node announces every new checkpoint on /solar/model
  (std_msgs/String holding the checkpoint path; reliable, transient local, so a late encoder
  still gets the newest one). The checkpoint is loaded in a background thread while frames keep
  being encoded with the current model, and the new model replaces the current one between two
  frames - and only between episodes (``swap_during_episode: false``), so a running episode keeps
  the latent space its policy was fitted for. The path must be readable from this machine (a
  shared directory when the fitter runs elsewhere).
* Each LatentState carries the image's stamp, the latent mean and covariance, the model id and
  whether it was filtered through the dynamics (SVAE during an episode). Episode boundaries come
  from /solar/episode: the SVAE filter restarts from its prior for every frame between episodes
  and filters with the commanded torques (mean of /effort_controller/commands since the previous
  frame) during an episode; NaN/Inf and wrong-length commands are left out of that mean with an
  error. The commands are read from their queue every ``COMMAND_POLL_PERIOD``
  and when a frame arrives, rather than one callback per 500 Hz message (see
  :class:`~solar_ros.nodes.common.PolledSubscription`).
* Diagnostics for rqt_image_view / rviz at ``diagnostics_rate`` Hz, only while someone
  subscribes: the model's reconstruction on /solar/encoder/reconstruction and, for the deep
  spatial autoencoder, the feature points drawn on the input on /solar/encoder/feature_points.
  They are drawn after the frame's latent is published, so they do not delay it.
* Bad frames (encoding or size the model does not read, inconsistent data) are dropped with a
  throttled error; the per-frame encode latency (p50/p99) goes to the log every ``stats_period`` s.
"""
from __future__ import annotations

import array
import time

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray, String

from ..msg import EpisodeEvent, LatentState
from ..runtime.fitting import check_device
from ..runtime.image import ImageFormatError, image_to_array
from ..runtime.latent_encoder import ActionAccumulator, DSAEEncoder, LatencyRing, LatentEncoder, load_encoder
from . import contract
from .common import ConfigError, PolledSubscription, StackNode, Throttle, declare, run_node, start_background_thread

# Commands queued between two polls: up to 0.4 s at 500 Hz (older ones are dropped).
COMMAND_QOS = contract.RECORDING_SENSOR_QOS
COMMAND_POLL_PERIOD = 0.02
"""s between reads of the command queue: few commands are left to read on the frame path, for 50
executor wake-ups/s instead of 500."""


class EncoderNode(StackNode):
    """Encodes every model input image into a latent state (see the module docstring)."""

    def __init__(self) -> None:
        # lean: parameters are read once here, and every entity costs time on the frame path
        super().__init__("encoder_node", lean=True)
        self.realtime_priority = self.declare_realtime_priority()
        model_path = str(declare(self, "model_path", "", "checkpoint to start with ('': wait for /solar/model)"))
        self.device = str(declare(self, "device", "cpu", "torch device ('cpu', 'cuda')"))
        num_threads = int(declare(self, "num_threads", 1, "torch intra-op threads"))
        self.diagnostics_rate = float(declare(self, "diagnostics_rate", 2.0, "Hz of diagnostics images (0: off)"))
        self.point_variance = float(declare(self, "point_variance", 1e-4, "DSAE feature-point variance"))
        self.swap_during_episode = bool(declare(self, "swap_during_episode", False,
                                                "true: a new model replaces the current one even mid-episode"))
        self.stats_period = float(declare(self, "stats_period", 10.0, "s between latency summaries (0: off)"))
        if self.diagnostics_rate < 0 or not self.point_variance > 0:
            raise ConfigError("diagnostics_rate must be >= 0 and point_variance > 0")
        import torch
        torch.set_num_threads(max(1, num_threads))
        try:
            self.device = check_device(self.device)
        except ValueError as err:
            raise ConfigError(str(err)) from err

        self.current: LatentEncoder | None = None
        self._pending: LatentEncoder | None = None  # loaded in the background, swapped in between frames
        self._loading: str | None = None
        self.episode_running = False
        self._episode_id = ""
        self._failed_loads = 0
        self._actions = ActionAccumulator(0)
        self._commands: PolledSubscription | None = None
        self._command_timer = None
        self._throttle = Throttle(2.0)
        self._said_no_model = False
        self.frames = 0
        self.bad_frames = 0
        self.latency = LatencyRing()
        self._last_stats = time.monotonic()
        self._next_diagnostics = 0.0
        self._msg = LatentState()
        self._mean = self._cov = np.zeros(0)  # numpy views of the message's preallocated arrays

        self.latent_pub = self.create_publisher(LatentState, contract.LATENT, contract.SENSOR_QOS)
        self.recon_pub = self.create_publisher(Image, contract.RECONSTRUCTION, contract.SENSOR_QOS)
        self.points_pub = self.create_publisher(Image, contract.FEATURE_POINTS, contract.SENSOR_QOS)
        self.create_subscription(Image, contract.MODEL_IMAGE, self._on_image, contract.SENSOR_QOS)
        self.create_subscription(EpisodeEvent, contract.EPISODE, self._on_episode, contract.EVENT_QOS)
        self.create_subscription(String, contract.MODEL, self._on_model, contract.MODEL_QOS)
        if model_path:
            try:
                self._use(load_encoder(model_path, self.device, self.point_variance))
            except (OSError, ValueError) as err:
                raise ConfigError(f"model_path {model_path!r}: {err}") from err
        else:
            self.get_logger().info(f"no model yet: waiting for one on {contract.MODEL}")

    # ---- models ----------------------------------------------------------------------------------

    def _use(self, encoder: LatentEncoder) -> None:
        """Make ``encoder`` current (executor thread, between frames)."""
        previous = self.current
        if self.episode_running:
            encoder.begin_episode()
        self.current = encoder
        if encoder.uses_actions and self._commands is None:
            self._commands = PolledSubscription(self, Float64MultiArray, contract.COMMANDS, COMMAND_QOS)
            self._command_timer = self.create_timer(COMMAND_POLL_PERIOD, self._read_commands)
        elif not encoder.uses_actions and self._commands is not None:
            self._commands.destroy()
            self.destroy_timer(self._command_timer)
            self._commands = self._command_timer = None
        self._actions = ActionAccumulator(getattr(encoder, "action_dim", 0))
        # The outgoing message's arrays are preallocated for this model; encode results are copied in.
        n = encoder.latent_dim
        self._msg.mean = array.array("d", bytes(8 * n))
        self._msg.covariance = array.array("d", bytes(8 * n * n))
        self._mean = np.frombuffer(self._msg.mean, dtype=np.float64)
        self._cov = np.frombuffer(self._msg.covariance, dtype=np.float64).reshape(n, n)
        self._msg.dim = n
        self._msg.model_id = encoder.model_id
        h, w, c = encoder.image_shape
        self.get_logger().info(
            f"using model {encoder.model_id} ({encoder.kind}, {w}x{h} {encoder.encoding} -> latent dim "
            f"{encoder.latent_dim}) from {encoder.path}"
            + (f"; replaced {previous.model_id}" if previous is not None else ""))

    def _on_model(self, msg: String) -> None:
        path = msg.data.strip()
        if not path or path == self._loading or (self.current is not None and self.current.path == path
                                                 and self._pending is None):
            return
        self._loading = path
        # Off the real-time scheduler: a model load must not run above the simulator and the fit.
        start_background_thread(lambda: self._load(path), "model-loader")

    def _load(self, path: str) -> None:
        t0 = time.monotonic()
        try:
            encoder = load_encoder(path, self.device, self.point_variance)
        except (OSError, ValueError, RuntimeError) as err:
            self._failed_loads += 1
            if self._throttle.ready("load " + Throttle.key(str(err))):  # a stray publisher must not flood the log
                self.get_logger().error(f"cannot load announced model {path}: {err}; keeping the current one "
                                        f"({self._failed_loads} failed so far)")
        else:
            self._pending = encoder  # one reference assignment: the frame callback swaps it in
            self.get_logger().info(f"model {encoder.model_id} loaded in {time.monotonic() - t0:.2f} s; "
                                   f"swapping it in {'now' if self.swap_during_episode else 'between episodes'}")
        finally:
            if self._loading == path:
                self._loading = None

    def _maybe_swap(self) -> None:
        pending = self._pending
        if pending is not None and (not self.episode_running or self.swap_during_episode):
            self._pending = None
            self._use(pending)

    # ---- inputs ----------------------------------------------------------------------------------

    def _on_episode(self, msg: EpisodeEvent) -> None:
        if msg.event == EpisodeEvent.START:
            self.episode_running = True
            self._episode_id = msg.episode_id
            if self.current is not None:
                self.current.begin_episode()
        elif msg.event in (EpisodeEvent.STOP, EpisodeEvent.ABORT):
            if self.episode_running and msg.episode_id != self._episode_id:
                if self._throttle.ready("event"):
                    self.get_logger().warning(f"ignoring the end of episode {msg.episode_id!r}: episode "
                                              f"{self._episode_id!r} is running")
                return
            self.episode_running = False
            if self.current is not None:
                self.current.end_episode()
            self._maybe_swap()

    def _read_commands(self) -> None:
        """Add the queued torque commands to the running sum for the next frame (NaN/Inf and
        wrong-length commands are rejected with a throttled error and left out)."""
        for msg in self._commands.take_all():
            reason = self._actions.add(msg.data)
            if reason is not None and self._throttle.ready("command " + Throttle.key(reason)):
                self.get_logger().error(f"torque command ignored for filtering: {reason} "
                                        f"({self._actions.rejected} so far)")

    def _mean_action(self) -> np.ndarray:
        """Mean of the torque commands received since the previous frame (zeros if none); resets the sum."""
        self._read_commands()
        return self._actions.take_mean()

    def _on_image(self, msg: Image) -> None:
        t0 = time.perf_counter_ns()
        self._maybe_swap()
        encoder = self.current
        if encoder is None:
            if not self._said_no_model:
                self._said_no_model = True
                self.get_logger().info("images arrive but there is no model yet: publishing no latents")
            return
        try:
            image = image_to_array(msg.data, msg.height, msg.width, msg.encoding, msg.step, bool(msg.is_bigendian))
            encoder.check_image(image, msg.encoding)
        except ImageFormatError as err:
            self.bad_frames += 1
            if self._throttle.ready("image " + Throttle.key(str(err))):
                self.get_logger().error(f"frame dropped: {err} ({self.bad_frames} so far)")
            return
        # Drained on every frame (also between episodes), so an episode's first frame sees only fresh torques.
        action = self._mean_action() if self._commands is not None else None
        try:
            encoded = encoder.encode(image, action)
        except (ValueError, RuntimeError) as err:
            self.bad_frames += 1
            if self._throttle.ready("encode " + Throttle.key(str(err))):
                self.get_logger().error(f"frame dropped: encoding failed: {err}")
            return
        out = self._msg
        out.header = msg.header
        self._mean[:] = encoded.mean
        self._cov[:] = encoded.covariance
        out.filtered = bool(encoded.filtered)
        self.latent_pub.publish(out)
        self.frames += 1
        self.latency.add(time.perf_counter_ns() - t0)
        self._diagnostics(msg, image, encoder, encoded)
        if self.stats_period > 0 and time.monotonic() - self._last_stats >= self.stats_period:
            self._last_stats = time.monotonic()
            self.get_logger().info(self.latency_summary())

    def latency_summary(self) -> str:
        p50, p99 = self.latency.percentiles_ms()
        return (f"encoder: {self.frames} frames, {self.bad_frames} dropped; encode latency p50 {p50:.2f} ms, "
                f"p99 {p99:.2f} ms (model {self.current.model_id if self.current else 'none'})")

    def _diagnostics(self, msg: Image, image: np.ndarray, encoder: LatentEncoder, encoded) -> None:
        """Decimated to ``diagnostics_rate``, and only while someone subscribes (checked at that rate too)."""
        if self.diagnostics_rate <= 0 or time.monotonic() < self._next_diagnostics:
            return
        self._next_diagnostics = time.monotonic() + 1.0 / self.diagnostics_rate
        want_recon = self.recon_pub.get_subscription_count() > 0
        want_points = isinstance(encoder, DSAEEncoder) and self.points_pub.get_subscription_count() > 0
        if not (want_recon or want_points):
            return
        try:
            if want_recon:
                recon, encoding = encoder.reconstruction(image, encoded)
                self.recon_pub.publish(_image_msg(msg.header, recon, encoding))
            if want_points:
                self.points_pub.publish(_image_msg(msg.header, encoder.feature_points_image(image, encoded), "rgb8"))
        except (ValueError, RuntimeError) as err:
            if self._throttle.ready("diagnostics"):
                self.get_logger().error(f"diagnostics image failed: {err}")


def _image_msg(header, pixels: np.ndarray, encoding: str) -> Image:
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.step = int(pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1))
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return msg


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run solar_ros encoder_node``)."""
    return run_node(EncoderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
