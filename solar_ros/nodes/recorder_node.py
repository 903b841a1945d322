"""recorder_node: records every controller episode to disk (see :mod:`solar_ros.runtime.episode_store`).

It follows /solar/episode: a START opens ``<output_dir>/.<episode>.partial/`` and every message
on the recorded ``topics`` goes into the episode's MCAP file (CDR, rosbag2 layout; readable by
``ros2 bag`` and Foxglove) from then on, starting with what arrived before the START since the
episode's start stamp: per topic the newest message stamped at or before it (step 0's image and
joint state; a frame-locked episode starts on a frame that may be older than the START) and the
later ones. A STOP/ABORT closes the episode once the controller's last PolicyStep records have
arrived (or after ``stop_grace`` seconds): the
training ``.npz`` is built, everything is fsynced, the directory is renamed into place and a line
is appended to ``<output_dir>/index.jsonl``. A crash (even kill -9) loses at most the episode in
flight: a restarted recorder indexes that one as ``aborted`` and completes the index for any episode
it had written but not yet indexed (:func:`~solar_ros.runtime.episode_store.recover_episodes`).

Messages that do not fit go into the bag as they came but not into the training arrays, with a
throttled warning: events of unknown kind (not even into the bag), step records of another
episode, outside the horizon, repeated, of another size than the episode's first or with NaN/Inf;
samples stamped zero or over a second before the episode's start; joint states with NaN/Inf,
missing joints or no velocities; latents whose mean, ``dim`` and covariance disagree or hold
NaN/Inf; NaN/Inf costs; images that do not decode.
Images and latents of another shape than most of the episode's are left out when it is written.
An episode whose files cannot be written is indexed as ``aborted`` with the reason.

The torque commands (``/effort_controller/commands``, 250-1000 Hz) are recorded whole, each
with the time it was received: they are read from a queue every 0.1 s and before each episode event
instead of one callback per message (:class:`~solar_ros.nodes.common.PolledSubscription`), which
keeps a fast stream cheap for this node. The goal and the robot description (transient local) go
into every episode's bag too, so a recording replays in Foxglove with the arm, its goal and its
torques.

Success labels (a person's sparse reward, SOLAR's mug pushing): the service /solar/label_success
(std_srvs/Trigger; ``ros2 service call``, rqt's service caller, the ``label_keyboard`` executable, or the
scripted ``labeller_node`` in simulation) says "success now" during an episode. The label goes to the newest
time index the controller has reported (its step records arrive as each index ends, so a press during index
t labels t - 1 at the latest), into the npz as ``success_labels`` (per time index: how many labels it got),
into the index entry as their count and into the bag (and live on /solar/success_label) as a std_msgs/Header
stamped at the press, its frame_id the episode. Outside an episode the call fails with the reason.

Index ``status``: ``complete`` (stopped at the horizon), ``stopped`` (stopped early on request),
``aborted`` (e-stop, input fault, no STOP within ``max_episode_duration``, shutdown, or fewer of the controller's
step records than its STOP counts within ``stop_grace``: a recorder starved of CPU must not hand a truncated
episode to training as complete; the trainer runs an aborted episode again).
"""
from __future__ import annotations

import importlib
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from ..msg import EpisodeEvent, PolicyStep
from ..runtime.episode_store import ABORTED, COMPLETE, EpisodeRecording, recover_episodes
from ..runtime.image import ImageFormatError, image_to_array
from ..runtime.safety import SAWYER_JOINT_NAMES, JointNameError, JointStateMapper
from . import contract
from .common import ConfigError, PolledSubscription, StackNode, declare, run_node, stamp_to_ns

STOPPED = "stopped"
EARLIEST_SAMPLE_NS = 1_000_000_000
"""Samples stamped longer than this before an episode's start are not that episode's (a stray or replayed
message): left out of its arrays."""

DEFAULT_TOPICS = [
    f"{contract.MODEL_IMAGE} sensor_msgs/msg/Image",
    f"{contract.JOINT_STATES} sensor_msgs/msg/JointState",
    f"{contract.LATENT} solar_ros/msg/LatentState",
    f"{contract.COST} solar_ros/msg/TaskCost",
    f"{contract.STEPS} solar_ros/msg/PolicyStep",
    f"{contract.EPISODE} solar_ros/msg/EpisodeEvent",
    f"{contract.POLICY} solar_ros/msg/LinearGaussianPolicy",
    f"{contract.COMMANDS} std_msgs/msg/Float64MultiArray",
    f"{contract.GOAL} geometry_msgs/msg/PointStamped",
    f"{contract.ROBOT_DESCRIPTION} std_msgs/msg/String",
]
"""``"topic type"`` pairs recorded into the MCAP bag by default. Left out: raw camera images, and the
controller's CommandInfo (its timing per command; add ``/solar/controller/command_info
solar_ros/msg/CommandInfo`` to record it, polled like the commands)."""

POLLED_TOPICS = frozenset({contract.COMMANDS, contract.COMMAND_INFO, contract.JOINT_STATES})
"""Fast streams (250-1000 Hz) read in batches (see the module docstring), never one callback per message."""
POLLED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2000, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
"""Room for 2 s of a 1 kHz stream between two reads."""
LATCHED_TOPICS = frozenset({contract.POLICY, contract.GOAL, contract.ROBOT_DESCRIPTION})

# Streams the training arrays are built from (always subscribed, recorded in the bag only if listed).
NPZ_TOPICS = {
    contract.MODEL_IMAGE: "sensor_msgs/msg/Image",
    contract.JOINT_STATES: "sensor_msgs/msg/JointState",
    contract.LATENT: "solar_ros/msg/LatentState",
    contract.COST: "solar_ros/msg/TaskCost",
    contract.STEPS: "solar_ros/msg/PolicyStep",
    contract.EPISODE: "solar_ros/msg/EpisodeEvent",
}
_BEST_EFFORT_TYPES = {"sensor_msgs/msg/Image", "sensor_msgs/msg/JointState", "solar_ros/msg/LatentState"}


def message_class(type_name: str):
    """'sensor_msgs/msg/Image' -> the generated message class (``ValueError`` if unknown)."""
    parts = type_name.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise ValueError(f"message type must look like pkg/msg/Type, got {type_name!r}")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[2])
    except (ImportError, AttributeError) as err:
        raise ValueError(f"unknown message type {type_name!r}: {err}") from err


class _Episode:
    """Bookkeeping of the episode being recorded."""

    def __init__(self, recording: EpisodeRecording, start: EpisodeEvent) -> None:
        self.recording = recording
        self.start = start
        self.stop: EpisodeEvent | None = None
        self.stop_wall = 0.0
        self.opened_wall = time.monotonic()
        self.step_indices: set[int] = set()
        self.step_sizes: tuple[int, int, int] | None = None


class RecorderNode(StackNode):
    """Writes one MCAP bag + npz per episode and an index (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("recorder_node")
        self.output_dir = Path(declare(self, "output_dir", "runs/episodes", "recording directory"))
        topics = list(declare(self, "topics", DEFAULT_TOPICS, "'topic type' pairs recorded into the MCAP bag"))
        self.write_mcap = bool(declare(self, "write_mcap", True, "write the MCAP bag (the npz is always written)"))
        self.stop_grace = float(declare(self, "stop_grace", 3.0, "s to wait for the last step records after STOP "
                                                                 "(an episode still short of them is aborted)"))
        self.max_duration = float(declare(self, "max_episode_duration", 600.0,
                                          "s (wall); an episode with no STOP by then is closed as aborted"))
        self.mapper = JointStateMapper(list(declare(self, "joint_names", list(SAWYER_JOINT_NAMES), "arm joints")))

        self.recorded: dict[str, str] = {}
        for entry in topics:
            parts = str(entry).split()
            if len(parts) != 2:
                raise ConfigError(f"topics entries must be 'topic pkg/msg/Type', got {entry!r}")
            self.recorded[parts[0]] = parts[1]
        subscribed = {**NPZ_TOPICS, **self.recorded}
        self._types: dict[str, tuple[str, type]] = {}
        for topic, type_name in subscribed.items():
            try:
                self._types[topic] = (type_name, message_class(type_name))
            except ValueError as err:
                raise ConfigError(str(err)) from err
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot create output_dir {self.output_dir}: {err}") from err

        self.episode: _Episode | None = None
        # Recent messages per topic before a START: step 0 is the frame the episode starts on, which
        # can be older than the newest image and joint states (see _begin); and recent step records:
        # the START and the first steps come from different publishers and may arrive in either order.
        self._preroll: dict[str, deque[tuple[bytes, int]]] = {
            topic: deque(maxlen=_preroll_length(topic, type_name)) for topic, (type_name, _) in self._types.items()}
        self.episodes_written = 0
        self._polled: dict[str, PolledSubscription] = {}
        for topic, (type_name, cls) in self._types.items():
            if topic in POLLED_TOPICS:
                self._polled[topic] = PolledSubscription(self, cls, topic, POLLED_QOS, raw=True)
                continue
            if topic in LATCHED_TOPICS:
                qos = contract.LATCHED_QOS
            elif type_name in _BEST_EFFORT_TYPES:
                qos = contract.RECORDING_SENSOR_QOS
            else:
                qos = contract.EVENT_QOS
            self.create_subscription(cls, topic, lambda data, topic=topic: self._on_message(topic, data), qos, raw=True)
        self.create_timer(0.1, self._on_timer)
        self.label_pub = self.create_publisher(Header, contract.SUCCESS_LABEL, contract.EVENT_QOS)
        self.create_service(Trigger, contract.LABEL_SUCCESS, self._on_label)
        try:
            recovered = recover_episodes(self.output_dir)
        except OSError as err:
            raise ConfigError(f"cannot recover the episodes in {self.output_dir}: {err}") from err
        for entry in recovered:
            self.get_logger().warning(f"episode {entry['episode_id']!r} left by an earlier recorder process indexed "
                                      f"as {entry['status']}" + (f" ({entry['reason']})" if entry['status'] != COMPLETE
                                                                 else ""))
        self.get_logger().info(f"recording episodes to {self.output_dir.resolve()} "
                               f"({len(self.recorded)} topics in the bag, mcap={'on' if self.write_mcap else 'off'})")

    # ---- messages ------------------------------------------------------------------------------

    def _drain(self) -> None:
        """The polled streams: every message received since the last call, at the time it arrived."""
        if not self._polled:
            return
        now, wall = self.get_clock().now().nanoseconds, time.time_ns()
        for topic, poll in self._polled.items():
            for data, info in poll.take_all(with_info=True):
                self._on_message(topic, bytes(data), now - max(0, wall - int(info["received_timestamp"])))

    def _on_message(self, topic: str, data: bytes, now: int | None = None) -> None:
        if now is None:
            now = self.get_clock().now().nanoseconds
        if topic == contract.EPISODE:
            self._drain()  # the commands before this event belong to the episode before it
            event = deserialize_message(data, EpisodeEvent)
            if event.event not in (EpisodeEvent.START, EpisodeEvent.STOP, EpisodeEvent.ABORT):
                self.get_logger().warning(f"ignoring an episode event of unknown kind {event.event} "
                                          f"(episode {event.episode_id!r})", throttle_duration_sec=5.0)
                return
            if event.event == EpisodeEvent.START:
                self._begin(event, now)
            if self.episode is not None:
                self._store(topic, data, now)
            if event.event in (EpisodeEvent.STOP, EpisodeEvent.ABORT):
                self._stop(event)
            return
        if self.episode is None:
            self._preroll[topic].append((data, now))
            return
        self._store(topic, data, now)
        if topic == contract.STEPS:
            self._maybe_finish()

    def _store(self, topic: str, data: bytes, now: int) -> None:
        rec = self.episode.recording
        type_name, cls = self._types[topic]
        if topic in self.recorded:
            rec.write(topic, type_name, data, now)
        if topic in NPZ_TOPICS and topic != contract.EPISODE:
            try:
                self._buffer(topic, deserialize_message(data, cls))
            except (ValueError, ImageFormatError, JointNameError) as err:
                self.get_logger().warning(f"{topic}: message left out of the npz: {err}", throttle_duration_sec=5.0)

    def _buffer(self, topic: str, msg) -> None:
        """Add one message to the episode's training arrays (ValueError: it is left out, and why)."""
        ep = self.episode
        buf = ep.recording.buffers
        if topic == contract.STEPS:
            if msg.episode_id != ep.start.episode_id:
                return
            t = int(msg.time_index)
            state, action, noise = (np.asarray(v, dtype=np.float64) for v in (msg.state, msg.action, msg.noise))
            sizes = (state.size, action.size, noise.size)
            if not 0 <= t < max(int(ep.start.horizon), 1):
                raise ValueError(f"step record with time index {t} outside the horizon {ep.start.horizon}")
            if t in ep.step_indices:
                raise ValueError(f"second step record for time index {t}")
            if ep.step_sizes is not None and sizes != ep.step_sizes:
                raise ValueError(f"step record sizes (state, action, noise) {sizes} differ from the episode's "
                                 f"{ep.step_sizes}")
            if not all(np.all(np.isfinite(v)) for v in (state, action, noise)):
                raise ValueError(f"step record {t} contains NaN or Inf")
            ep.step_indices.add(t)
            ep.step_sizes = sizes
            buf.steps.append(SimpleNamespace(
                time_index=t, start_ns=stamp_to_ns(msg.header.stamp), source_ns=stamp_to_ns(msg.source_stamp),
                state=state, action=action, noise=noise, commands=int(msg.commands), clipped=bool(msg.clipped)))
            return
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp <= 0:
            raise ValueError("message has no stamp (header.stamp is zero)")
        start = stamp_to_ns(ep.start.start_stamp)
        if start > 0 and stamp < start - EARLIEST_SAMPLE_NS:
            raise ValueError(f"stamped {(start - stamp) * 1e-9:.1f} s before the episode began")
        if topic == contract.MODEL_IMAGE:
            img = image_to_array(msg.data, msg.height, msg.width, msg.encoding, msg.step, bool(msg.is_bigendian))
            buf.images.add(stamp, img.copy())
        elif topic == contract.JOINT_STATES:
            n = len(self.mapper.joint_names)
            q, dq, effort = np.zeros(n), np.zeros(n), np.full(n, np.nan)
            if not len(msg.velocity):
                raise ValueError("joint state has no velocities")
            self.mapper.extract(msg.name, msg.position, q, "position")
            self.mapper.extract(msg.name, msg.velocity, dq, "velocity")
            if not (np.all(np.isfinite(q)) and np.all(np.isfinite(dq))):
                raise ValueError("joint state contains NaN or Inf")
            if len(msg.effort):
                self.mapper.extract(msg.name, msg.effort, effort, "effort")
            buf.joints.add(stamp, q, dq, effort)
        elif topic == contract.LATENT:
            mean = np.asarray(msg.mean, dtype=np.float64)
            cov = np.asarray(msg.covariance, dtype=np.float64)
            if mean.size == 0 or int(msg.dim) != mean.size or cov.size != mean.size ** 2:
                raise ValueError(f"latent with dim {msg.dim}, {mean.size} mean and {cov.size} covariance entries")
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
                raise ValueError("latent contains NaN or Inf")
            buf.latents.add(stamp, mean, cov.reshape(mean.size, mean.size))
        elif topic == contract.COST:
            if not (np.isfinite(msg.cost) and np.isfinite(msg.distance)):
                raise ValueError("cost or distance is NaN or Inf")
            buf.costs.add(stamp, float(msg.cost), float(msg.distance), bool(msg.success))

    # ---- success labels ------------------------------------------------------------------------

    def _on_label(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """"Success now": a label on the newest time index of the episode being recorded (module docstring)."""
        ep = self.episode
        if ep is None or ep.stop is not None:
            response.success, response.message = False, "no episode is running: the label was not recorded"
            self.get_logger().warning(response.message, throttle_duration_sec=2.0)
            return response
        t = max(ep.step_indices) if ep.step_indices else 0
        ep.recording.buffers.labels.append(t)
        now = self.get_clock().now()
        header = Header(frame_id=ep.start.episode_id)
        header.stamp = now.to_msg()
        ep.recording.write(contract.SUCCESS_LABEL, "std_msgs/msg/Header", serialize_message(header), now.nanoseconds)
        self.label_pub.publish(header)
        response.success = True
        response.message = f"success labelled at time index {t} of episode {ep.start.episode_id!r}"
        self.get_logger().info(response.message)
        return response

    # ---- episode lifecycle ---------------------------------------------------------------------

    def _begin(self, event: EpisodeEvent, now: int) -> None:
        if self.episode is not None:
            if self.episode.stop is None:
                self._finish(ABORTED, f"superseded by episode {event.episode_id!r} before its STOP arrived")
            else:
                self._finish_from_stop()
        meta = {
            "policy_id": event.policy_id, "horizon": int(event.horizon), "dt": float(event.dt),
            "state_source": event.state_source, "deterministic": bool(event.deterministic),
            "noise_seed": int(event.noise_seed), "start_stamp_ns": stamp_to_ns(event.start_stamp),
        }
        try:
            rec = EpisodeRecording(self.output_dir, event.episode_id, meta, write_mcap=self.write_mcap)
        except (OSError, ValueError) as err:
            self.get_logger().error(f"cannot record episode {event.episode_id!r}: {err}")
            return
        self.episode = _Episode(rec, event)
        start_ns = stamp_to_ns(event.start_stamp)
        for topic, queue in self._preroll.items():
            items = list(queue)
            queue.clear()
            if topic != contract.STEPS:
                items = self._from_start(topic, items, start_ns)
            for data, t in items:
                if topic == contract.STEPS and deserialize_message(data, PolicyStep).episode_id != event.episode_id:
                    continue
                self._store(topic, data, t)
        self.get_logger().info(f"recording episode {event.episode_id!r} (policy {event.policy_id!r})")

    def _from_start(self, topic: str, items: list[tuple[bytes, int]], start_ns: int) -> list[tuple[bytes, int]]:
        """The messages received before a START that belong to its episode: the newest one stamped at or
        before the episode's start stamp (the sample step 0 aligns to) and those stamped after it. Messages without
        a header stamp, or an episode without a start stamp: the newest one only."""
        if len(items) <= 1:
            return items
        if start_ns <= 0:
            return items[-1:]
        cls = self._types[topic][1]
        stamps = []
        for data, _ in items:
            try:
                header = getattr(deserialize_message(data, cls), "header", None)
            except Exception:  # noqa: BLE001 - a message that does not decode is left out here as in _store
                header = None
            stamps.append(stamp_to_ns(header.stamp) if header is not None else None)
        if any(st is None for st in stamps):
            return items[-1:]
        before = [i for i, st in enumerate(stamps) if st <= start_ns]
        first = max(before, key=lambda i: stamps[i]) if before else -1
        return [item for i, item in enumerate(items) if i == first or stamps[i] > start_ns]

    def _stop(self, event: EpisodeEvent) -> None:
        ep = self.episode
        if ep is None or event.episode_id != ep.start.episode_id:
            self.get_logger().warning(f"end of episode {event.episode_id!r} that is not being recorded (ignored)")
            return
        ep.stop = event
        ep.stop_wall = time.monotonic()
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        ep = self.episode
        if ep is None or ep.stop is None:
            return
        if len(ep.recording.buffers.steps) >= ep.stop.steps or time.monotonic() - ep.stop_wall > self.stop_grace:
            self._finish_from_stop()

    def _finish_from_stop(self) -> None:
        stop = self.episode.stop
        got = len(self.episode.recording.buffers.steps)
        reason = stop.reason
        if stop.event == EpisodeEvent.ABORT:
            status = ABORTED
        elif got < stop.steps:  # records lost or late (the recorder fell behind): not an episode to learn from
            status = ABORTED
            reason = (f"{got} of the controller's {stop.steps} step records arrived within stop_grace "
                      f"({self.stop_grace:g} s) after its STOP ({stop.reason})")
        elif stop.steps >= self.episode.start.horizon:
            status = COMPLETE
        else:
            status = STOPPED
        self._finish(status, reason, {"stop_stamp_ns": stamp_to_ns(stop.header.stamp),
                                      "controller_steps": int(stop.steps)})

    def _finish(self, status: str, reason: str, extra: dict | None = None) -> None:
        ep, self.episode = self.episode, None
        try:
            entry = ep.recording.finalize(status, reason, extra)
        except (OSError, ValueError) as err:
            self.get_logger().error(f"episode {ep.start.episode_id!r} could not be written: {err}")
            try:
                ep.recording.fail(str(err))  # indexed as aborted: nobody waits for it
            except OSError as err2:
                self.get_logger().error(f"episode {ep.start.episode_id!r} could not be indexed either: {err2}")
            return
        self.episodes_written += 1
        text = (f"episode {entry['episode_id']!r}: {status} ({entry['steps']} steps) "
                f"-> {self.output_dir / entry['path']}")
        if status == COMPLETE:
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)

    def _on_timer(self) -> None:
        self._drain()
        ep = self.episode
        if ep is None:
            return
        if ep.stop is not None:
            self._maybe_finish()
        elif time.monotonic() - ep.opened_wall > self.max_duration:
            self._finish(ABORTED, f"no STOP within max_episode_duration ({self.max_duration:g} s)")

    def on_shutdown(self) -> None:
        """Close the episode in flight (as aborted unless its STOP already arrived)."""
        self._drain()
        if self.episode is not None:
            if self.episode.stop is not None:
                self._finish_from_stop()
            else:
                self._finish(ABORTED, "recorder shutting down")


def _preroll_length(topic: str, type_name: str) -> int:
    """Messages kept per topic between episodes: every step record of an episode, a few camera frames
    (an episode starts on the newest frame the controller acted on), and half a second of 500 Hz
    joint states for the other streams."""
    if topic == contract.STEPS:
        return 1000
    return 8 if type_name in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage") else 256


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run solar_ros recorder_node``)."""
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
