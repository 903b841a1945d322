#!/usr/bin/env python3
"""Benchmark of the real-time path: controller command stream and camera-frame-to-torque latency.

    python scripts/bench_controller.py [--seconds 10] [--rates 500 1000]

1. Command stream: controller_node (state_source joints, an active episode, joint states fed at
   500 Hz) at each rate in ``--rates``: commands per second and inter-command gaps p50/p99/max,
   from the controller's own command stamps (CommandInfo) and from arrival times here.
2. Latency: 64x64 rgb8 frames at 30 Hz on /camera/image_raw -> camera_node (on_arrival) ->
   a stand-in encoder (this script in ``--encoder`` mode, its own process: latent = mean colour of
   the image, stamped with the image's stamp) -> controller_node (state_source latent, 500 Hz).
   Latency = stamp of the first command computed from a frame minus the frame's stamp (all
   processes use the system clock), p50/p99.
3. CPU use of each node process over each measurement window, from /proc/<pid>/stat.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ["PYTHONUNBUFFERED"] = "1"

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from solar_ros.core.types import LinearGaussianPolicy as LGPolicy  # noqa: E402
from solar_ros.msg import CommandInfo, LatentState, LinearGaussianPolicy  # noqa: E402
from solar_ros.nodes import contract  # noqa: E402
from solar_ros.runtime.policy_msg import PolicyPackage, policy_to_msg  # noqa: E402
from solar_ros.runtime.safety import SAWYER_JOINT_NAMES  # noqa: E402
from solar_ros.srv import StartEpisode  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


class Proc:
    def __init__(self, args: list[str], name: str, params: dict | None, tmp: Path):
        cmd = [sys.executable] + args
        if params is not None:
            f = tmp / f"{name}.yaml"
            f.write_text(yaml.safe_dump({name: {"ros__parameters": params}}))
            cmd += ["--ros-args", "--params-file", str(f)]
        self.name = name
        self.log = open(tmp / f"{name}.log", "w")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


class Bench:
    def __init__(self):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("bench_controller", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)

    def spin(self, seconds: float, until=None):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if until is not None and until():
                return True
            self.ex.spin_once(timeout_sec=0.005)
        return until() if until is not None else True

    def wait(self, until, timeout, what):
        if not self.spin(timeout, until):
            raise RuntimeError(f"timed out waiting for {what}")

    def start_episode(self, T: int, dx: int, state_source: str, K: np.ndarray | None = None):
        pub = self.node.create_publisher(LinearGaussianPolicy, contract.POLICY, contract.POLICY_QOS)
        Kt = np.zeros((T, 7, dx)) if K is None else np.broadcast_to(K, (T, 7, dx)).copy()
        pol = LGPolicy(Kt, np.full((T, 7), 0.1), np.tile(np.eye(7) * 0.01, (T, 1, 1)))
        pub.publish(policy_to_msg(PolicyPackage(pol, f"bench-{state_source}", 0.05, state_source), LinearGaussianPolicy()))
        cli = self.node.create_client(StartEpisode, contract.START_EPISODE)
        self.wait(cli.service_is_ready, 20, "the start_episode service")
        for _ in range(50):
            fut = cli.call_async(StartEpisode.Request(episode_id=f"bench-{state_source}", deterministic=True))
            self.wait(fut.done, 10, "start_episode reply")
            if fut.result().success:
                return
            self.spin(0.2)
        raise RuntimeError(f"could not start an episode: {fut.result().message}")

    def close(self):
        self.ex.shutdown(timeout_sec=1)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def pct(a, q):
    return float(np.percentile(a, q)) if len(a) else float("nan")


def bench_stream(rate: float, seconds: float, tmp: Path) -> dict:
    ctrl = Proc(["-m", "solar_ros.nodes.controller_node"], "controller_node",
                {"state_source": "joints", "rate": float(rate), "max_joint_age": 0.5, "stats_period": 0.0}, tmp)
    b = Bench()
    try:
        joint_pub = b.node.create_publisher(JointState, contract.JOINT_STATES, contract.RELIABLE_QOS)
        js = JointState(name=list(SAWYER_JOINT_NAMES), position=[0.1] * 7, velocity=[0.0] * 7)

        def feed():
            t = b.node.get_clock().now().nanoseconds
            js.header.stamp.sec, js.header.stamp.nanosec = divmod(t, 1_000_000_000)
            joint_pub.publish(js)

        b.node.create_timer(0.002, feed)
        arrivals, stamps = [], []
        b.node.create_subscription(Float64MultiArray, contract.COMMANDS, lambda m: arrivals.append(time.perf_counter()),
                                   contract.RELIABLE_QOS)
        b.node.create_subscription(CommandInfo, contract.COMMAND_INFO,
                                   lambda m: stamps.append(m.header.stamp.sec * 1e9 + m.header.stamp.nanosec),
                                   contract.EVENT_QOS)
        b.wait(lambda: joint_pub.get_subscription_count() > 0, 20, "the controller")
        b.spin(0.5)
        b.start_episode(T=100000, dx=14, state_source="joints")
        b.spin(1.0)
        arrivals.clear()
        stamps.clear()
        cpu0, t0 = ctrl.cpu_seconds(), time.monotonic()
        b.spin(seconds)
        cpu = (ctrl.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        node_gaps = np.diff(np.array(stamps)) * 1e-6
        arr_gaps = np.diff(np.array(arrivals)) * 1e3
        return {"rate": rate, "commands_per_s": len(stamps) / seconds, "received_per_s": len(arrivals) / seconds,
                "gap": (pct(node_gaps, 50), pct(node_gaps, 99), node_gaps.max() if node_gaps.size else np.nan),
                "arrival_gap": (pct(arr_gaps, 50), pct(arr_gaps, 99), arr_gaps.max() if arr_gaps.size else np.nan),
                "cpu": {"controller_node": cpu}}
    finally:
        b.close()
        ctrl.stop()


def bench_latency(seconds: float, tmp: Path) -> dict:
    procs = [
        Proc(["-m", "solar_ros.nodes.camera_node"], "camera_node",
             {"publish_mode": "on_arrival", "rate": 0.0, "width": 64, "height": 64, "encoding": "rgb8"}, tmp),
        Proc([str(Path(__file__).resolve()), "--encoder"], "stand_in_encoder", None, tmp),
        Proc(["-m", "solar_ros.nodes.controller_node"], "controller_node",
             {"state_source": "latent", "rate": 500.0, "max_latent_age": 0.5, "stats_period": 0.0}, tmp),
    ]
    b = Bench()
    try:
        image_pub = b.node.create_publisher(Image, contract.CAMERA_RAW, contract.SENSOR_QOS)
        sent: dict[int, float] = {}
        first: dict[int, int] = {}

        def on_info(m):
            src = m.source_stamp.sec * 1_000_000_000 + m.source_stamp.nanosec
            if src in sent and src not in first and m.status == CommandInfo.ACTIVE:
                first[src] = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec

        b.node.create_subscription(CommandInfo, contract.COMMAND_INFO, on_info, contract.EVENT_QOS)
        rng = np.random.default_rng(0)
        frame = Image(height=64, width=64, encoding="rgb8", step=192)

        def publish_frame():
            t = b.node.get_clock().now().nanoseconds
            frame.header.stamp.sec, frame.header.stamp.nanosec = divmod(t, 1_000_000_000)
            frame.data = rng.integers(0, 256, 64 * 64 * 3, dtype=np.uint8).tobytes()
            image_pub.publish(frame)
            sent[t] = time.perf_counter()

        b.node.create_timer(1 / 30, publish_frame)
        b.wait(lambda: b.node.count_subscribers(contract.LATENT) > 0 and image_pub.get_subscription_count() > 0,
               30, "camera node, stand-in encoder and controller")
        b.spin(1.5)
        b.start_episode(T=100000, dx=3, state_source="latent", K=np.ones((7, 3)))
        b.spin(1.0)
        sent.clear()
        first.clear()
        cpu0 = {p.name: p.cpu_seconds() for p in procs}
        t0 = time.monotonic()
        b.spin(seconds)
        elapsed = time.monotonic() - t0
        cpu = {p.name: (p.cpu_seconds() - cpu0[p.name]) / elapsed for p in procs}
        b.spin(0.3)
        lat = np.array([(first[s] - s) * 1e-6 for s in first])
        return {"frames": len(sent), "matched": len(lat), "latency": (pct(lat, 50), pct(lat, 99),
                                                                     lat.max() if lat.size else np.nan), "cpu": cpu}
    finally:
        b.close()
        for p in procs:
            p.stop()


def run_encoder() -> int:
    """Stand-in encoder: /solar/image -> /solar/latent (mean colour), keeping the image stamp."""
    from solar_ros.runtime.image import image_to_array

    rclpy.init()
    node = rclpy.create_node("stand_in_encoder")
    pub = node.create_publisher(LatentState, contract.LATENT, contract.SENSOR_QOS)
    latent = LatentState(dim=3, model_id="")

    def on_image(msg):
        img = image_to_array(msg.data, msg.height, msg.width, msg.encoding, msg.step)
        latent.header = msg.header
        latent.mean = (img.reshape(-1, 3).mean(axis=0) / 255.0).tolist()
        pub.publish(latent)

    node.create_subscription(Image, contract.MODEL_IMAGE, on_image, contract.SENSOR_QOS)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    while not stop:
        ex.spin_once(timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per scenario")
    parser.add_argument("--rates", type=float, nargs="+", default=[500.0, 1000.0])
    parser.add_argument("--encoder", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.encoder:
        return run_encoder()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
          f"window {args.seconds:g} s per scenario")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print("\ncommand stream (controller_node, active episode, joint state input)")
        print(f"{'target':>8} {'sent/s':>8} {'recv/s':>8} | {'gap p50':>8} {'p99':>7} {'max':>7} (ms, controller stamps)"
              f" | {'arrival p50':>11} {'p99':>7} {'max':>7} (ms) | cpu")
        for rate in args.rates:
            r = bench_stream(rate, args.seconds, tmp)
            g, a = r["gap"], r["arrival_gap"]
            print(f"{rate:>6.0f}Hz {r['commands_per_s']:>8.1f} {r['received_per_s']:>8.1f} | {g[0]:>8.2f} {g[1]:>7.2f} "
                  f"{g[2]:>7.2f}                     | {a[0]:>11.2f} {a[1]:>7.2f} {a[2]:>7.2f}      | "
                  f"controller {100 * r['cpu']['controller_node']:.0f}%")
        print("\ncamera frame -> torque latency (64x64 rgb8 at 30 Hz: camera_node -> stand-in encoder -> "
              "controller_node at 500 Hz)")
        r = bench_latency(args.seconds, tmp)
        lat = r["latency"]
        print(f"frames {r['frames']}, with a command computed from them {r['matched']}: "
              f"latency p50 {lat[0]:.2f} ms, p99 {lat[1]:.2f} ms, max {lat[2]:.2f} ms")
        print("cpu: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in r["cpu"].items()))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
