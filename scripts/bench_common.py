"""Measurement code shared by scripts/bench_controller.py and scripts/bench_node_stack.py.

* :class:`Proc`: a node in its own process with a parameter file, a log file and CPU accounting.
* :class:`Bench`: the benchmark's own rclpy node (own context, SingleThreadedExecutor): spinning,
  waiting, publishing a policy and starting an episode. The fast streams it measures (commands,
  CommandInfo at 500-1000 Hz) are polled every few ms rather than taken one callback per message:
  per-message callbacks cost this process about as much CPU as the controller itself, which on a
  2-core machine would slow down the very path being measured. Arrival times come from the
  middleware's reception stamps.
* :func:`frame_to_torque`: 64x64 rgb8 frames on /camera/image_raw through camera_node, an encoder
  and controller_node; latency = stamp of the first command computed from a frame (CommandInfo's
  source stamp) minus the frame's stamp, all processes on the system clock. Also the command
  stream seen meanwhile (commands/s, gaps between command stamps) and CPU use per process.

Importing this module sets a per-run ROS domain and localhost-only discovery before rclpy loads.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
# The stack's middleware profile (UDPv4 only, config/fastdds_profile.xml) for this process and the ones it starts,
# as `solar-ros launch` gives its nodes; a domain of their own keeps them apart (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
# would make rmw_fastrtps add shared memory back).
from solar_ros.launcher import middleware_env  # noqa: E402

os.environ.update(middleware_env())
os.environ["PYTHONUNBUFFERED"] = "1"

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from solar_ros.core.types import LinearGaussianPolicy as LGPolicy  # noqa: E402
from solar_ros.msg import CommandInfo, LatentState, LinearGaussianPolicy  # noqa: E402
from solar_ros.nodes import contract  # noqa: E402
from solar_ros.nodes.common import PolledSubscription, set_normal_scheduler, set_realtime_priority  # noqa: E402
from solar_ros.runtime.policy_msg import PolicyPackage, policy_to_msg  # noqa: E402
from solar_ros.srv import StartEpisode  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
EPISODE_STEPS = 100000
"""Horizon of the benchmark policies (5000 s at dt 0.05): the episode outlasts any measurement."""
POLLED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5000, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
"""Reliable with room for seconds of a 1 kHz stream between two polls."""


def load_text() -> str:
    """The 1/5/15-minute load averages, for the report line of each measurement."""
    return "load average {:.2f} / {:.2f} / {:.2f} (1/5/15 min)".format(*os.getloadavg())


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def pct(a, q) -> float:
    return float(np.percentile(a, q)) if len(a) else float("nan")


def p50_p99_max(a) -> tuple[float, float, float]:
    a = np.asarray(a, dtype=float)
    return pct(a, 50), pct(a, 99), float(a.max()) if a.size else float("nan")


def stamp_ns(t) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


class Proc:
    """One process (a node, or a script mode) with its parameters in a file and its output in a log."""

    def __init__(self, args: list[str], name: str, params: dict | None, tmp: Path):
        cmd = [sys.executable] + args
        if params is not None:
            f = tmp / f"{name}.yaml"
            f.write_text(yaml.safe_dump({name: {"ros__parameters": params}}))
            cmd += ["--ros-args", "--params-file", str(f)]
        self.name = name
        self.log_path = tmp / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)

    @classmethod
    def node(cls, name: str, params: dict | None, tmp: Path) -> "Proc":
        return cls(["-m", f"solar_ros.nodes.{name}"], name, params, tmp)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.p.pid) or 0.0

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


PROFILE_PRIORITY = 80
"""The controller's SCHED_FIFO priority in the sim and real_sawyer profiles; the benchmarks' default."""


def realtime_priorities(priority: int) -> dict[str, int]:
    """``--realtime-priority P`` of the benchmarks: SCHED_FIFO priority per node, as the profiles set them for
    P = 80: the controller highest, then the camera and encoder (the frame-to-torque path), then the
    simulator, whose steps are short. P = 0: every node under the normal scheduler."""
    if priority <= 0:
        return dict.fromkeys(("controller_node", "sim_arm_node", "camera_node", "encoder_node"), 0)
    return {"controller_node": priority, "sim_arm_node": max(1, priority - 5), "camera_node": max(1, priority - 2),
            "encoder_node": max(1, priority - 2)}


def camera_proc(tmp: Path, **params) -> Proc:
    """camera_node passing 64x64 rgb8 frames on as they arrive (no resize needed, no rate limit)."""
    return Proc.node("camera_node", {"publish_mode": "on_arrival", "rate": 0.0, "width": 64, "height": 64,
                                     "encoding": "rgb8", **params}, tmp)


def controller_proc(tmp: Path, state_source: str, rate: float = 500.0, **params) -> Proc:
    return Proc.node("controller_node", {"state_source": state_source, "rate": float(rate), "stats_period": 0.0,
                                         "max_latent_age": 0.5, "max_joint_age": 0.5, **params}, tmp)


class CpuWindow:
    """CPU use (fraction of one core) of each process, and of this benchmark, over a measurement window."""

    def __init__(self, procs: list[Proc]):
        self.pids = {p.name: p.p.pid for p in procs} | {"bench": os.getpid()}
        self.cpu0 = {name: cpu_seconds(pid) or 0.0 for name, pid in self.pids.items()}
        self.t0 = time.monotonic()

    def result(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.t0
        return {name: ((cpu_seconds(pid) or 0.0) - self.cpu0[name]) / elapsed for name, pid in self.pids.items()}


class Bench:
    """The benchmark's own node, in its own context."""

    def __init__(self, name: str = "bench"):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self._polled: list[tuple[PolledSubscription, Callable, bool]] = []

    def poll(self, msg_type, topic: str, handler: Callable, qos=POLLED_QOS, sent: bool = False) -> None:
        """Read ``topic`` (reliable unless ``qos`` says otherwise) by polling: ``handler(msg, received_ns)`` for
        each message (``sent``: ``handler(msg, received_ns, sent_ns)``, with the publisher's write stamp)."""
        self._polled.append((PolledSubscription(self.node, msg_type, topic, qos), handler, sent))

    def spin(self, seconds: float, until=None):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if until is not None and until():
                return True
            self.ex.spin_once(timeout_sec=0.02)  # timers still fire on time; polls at least every 20 ms
            for sub, handler, sent in self._polled:
                for msg, info in sub.take_all(with_info=True):
                    if sent:
                        handler(msg, info["received_timestamp"], info["source_timestamp"])
                    else:
                        handler(msg, info["received_timestamp"])
        return until() if until is not None else True

    def wait(self, until, timeout, what):
        if not self.spin(timeout, until):
            raise RuntimeError(f"timed out waiting for {what}")

    def start_episode(self, K: np.ndarray, state_source: str, model_id: str = "", policy_id: str = "bench"):
        """Publish a deterministic policy u = K x + 0.1 (K (7, dx)) and start an episode with it."""
        pub = self.node.create_publisher(LinearGaussianPolicy, contract.POLICY, contract.POLICY_QOS)
        T = EPISODE_STEPS
        pol = LGPolicy(np.broadcast_to(K, (T, 7, K.shape[1])).copy(), np.full((T, 7), 0.1),
                       np.tile(np.eye(7) * 0.01, (T, 1, 1)))
        pub.publish(policy_to_msg(PolicyPackage(pol, policy_id, 0.05, state_source, 0, model_id),
                                  LinearGaussianPolicy()))
        cli = self.node.create_client(StartEpisode, contract.START_EPISODE)
        self.wait(cli.service_is_ready, 20, "the start_episode service")
        for _ in range(100):  # the controller may not have the policy or a state yet
            fut = cli.call_async(StartEpisode.Request(episode_id=policy_id, deterministic=True))
            self.wait(fut.done, 10, "start_episode reply")
            if fut.result().success:
                return
            self.spin(0.2)
        raise RuntimeError(f"could not start an episode: {fut.result().message}")

    def close(self):
        self.ex.shutdown(timeout_sec=1)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


@contextmanager
def driver_priority(priority: int, all_threads: bool = False):
    """With ``priority`` > 0, this thread (the benchmark's frame publisher, which plays the camera driver: in
    the sim profile the simulator, under SCHED_FIFO), or with ``all_threads`` every thread of this process
    (a monitor whose middleware threads take the reception stamps), runs at that SCHED_FIFO priority
    meanwhile; processes it starts do not inherit it (SCHED_RESET_ON_FORK). A refusal is reported and
    changes nothing."""
    if priority <= 0:
        yield
        return
    try:
        set_realtime_priority(priority, all_threads=all_threads, reset_on_fork=True)
    except OSError as err:
        print(f"    (the benchmark stays under the normal scheduler: SCHED_FIFO refused, {err})")
        yield
        return
    try:
        yield
    finally:
        set_normal_scheduler(all_threads=all_threads)


def frame_to_torque(procs: list[Proc], latent_dim: int, model_id: str, frame_hz: float, seconds: float,
                    log_tail: Callable[[], str] | None = None, driver_level: int = 0) -> dict:
    """Frames -> torques through ``procs`` (camera, an encoder, controller with state_source latent).

    Waits until latents flow, starts an episode with u = 0.01 * sum(x) + 0.1 on every joint, then
    measures for ``seconds``. Returns frames sent, frames with a command, latency (p50, p99, max) in
    ms, the commands seen (per second, gaps p50/p99/max in ms from the controller's stamps), and CPU
    per process. The processes are stopped at the end. ``driver_level``: the frame publisher's SCHED_FIFO
    priority during the measurement (:func:`driver_priority`).
    """
    b = Bench("bench_frame_to_torque")
    try:
        image_pub = b.node.create_publisher(Image, contract.CAMERA_RAW, contract.SENSOR_QOS)
        sent: set[int] = set()
        first: dict[int, int] = {}
        command_stamps: list[int] = []
        latents: list[int] = []

        def on_info(m, _received_ns):
            if m.status != CommandInfo.ACTIVE:
                return
            t = stamp_ns(m.header.stamp)
            command_stamps.append(t)
            src = stamp_ns(m.source_stamp)
            if src in sent and src not in first:
                first[src] = t

        b.poll(CommandInfo, contract.COMMAND_INFO, on_info)
        b.node.create_subscription(LatentState, contract.LATENT, lambda m: latents.append(1), contract.SENSOR_QOS)
        rng = np.random.default_rng(0)
        frame = Image(height=64, width=64, encoding="rgb8", step=192)

        def publish_frame():
            t = b.node.get_clock().now().nanoseconds
            frame.header.stamp.sec, frame.header.stamp.nanosec = divmod(t, 1_000_000_000)
            frame.data = rng.integers(0, 256, 64 * 64 * 3, dtype=np.uint8).tobytes()
            image_pub.publish(frame)
            sent.add(t)

        b.node.create_timer(1 / frame_hz, publish_frame)
        b.wait(lambda: bool(latents), 60, "latents from the encoder")
        b.start_episode(np.full((7, latent_dim), 0.01), "latent", model_id, policy_id="bench-latency")
        b.spin(1.0)
        sent.clear()
        first.clear()
        command_stamps.clear()
        with driver_priority(driver_level):
            cpu = CpuWindow(procs)
            b.spin(seconds)
            cpu_use = cpu.result()
        n_commands = len(command_stamps)
        b.spin(0.3)  # the last frames' commands
        lat = [(first[s] - s) * 1e-6 for s in first]
        gaps = np.diff(np.sort(command_stamps[:n_commands])) * 1e-6
        return {"frames": len(sent), "matched": len(lat), "latency": p50_p99_max(lat), "cpu": cpu_use,
                "commands_per_s": n_commands / seconds, "gap": p50_p99_max(gaps),
                "log": log_tail() if log_tail else ""}
    finally:
        b.close()
        for p in procs:
            p.stop()


def print_frame_to_torque(label: str, r: dict) -> None:
    lat, gap = r["latency"], r["gap"]
    print(f"{label}: frames {r['frames']}, with a command {r['matched']}: latency p50 {lat[0]:.2f} ms, "
          f"p99 {lat[1]:.2f} ms, max {lat[2]:.2f} ms")
    print(f"{'':>4}command stream meanwhile: {r['commands_per_s']:.1f} commands/s, gap p50 {gap[0]:.2f} ms, "
          f"p99 {gap[1]:.2f} ms, max {gap[2]:.2f} ms")
    print(f"{'':>4}cpu: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in r["cpu"].items()))
    if r["log"]:
        print(f"{'':>4}{r['log']}")
    print(f"{'':>4}{load_text()}")
