#!/usr/bin/env python3
"""Benchmark of the real-time path: controller command stream and camera-frame-to-torque latency.

    python scripts/bench_controller.py [--seconds 10] [--rates 500 1000] [--skip-latency]
                                       [--during-fit [--fit-niceness 10]] [--realtime-priority P]

1. Command stream: controller_node (state_source joints, an active episode, joint states fed at
   500 Hz) at each rate in ``--rates``: commands per second and inter-command gaps p50/p99/max,
   from the controller's own command stamps (CommandInfo) and from the middleware's reception
   stamps here.
2. Latency: 64x64 rgb8 frames at 30 Hz on /camera/image_raw -> camera_node (on_arrival) ->
   a stand-in encoder (this script in ``--encoder`` mode, its own process: latent = mean colour of
   the image, stamped with the image's stamp) -> controller_node (state_source latent, 500 Hz).
   Latency = stamp of the first command computed from a frame minus the frame's stamp (all
   processes use the system clock), p50/p99.
   Also the command stream meanwhile: with ``command_on_latent`` each fresh latent gets its command
   at once, in addition to the 500 Hz ticks.
3. CPU use of each node process over each measurement window, from /proc/<pid>/stat.

``--during-fit`` measures every scenario twice: idle, and with a SOLAR model fit (as the fitting node
runs it, scripts/bench_node_stack.py's) beside it. ``--realtime-priority P`` (default 80, the
profiles') runs the controller at SCHED_FIFO priority P, the camera and the stand-in encoder at P-2
and the frame publisher at P-5 (where the OS grants it); 0 runs them all under the normal scheduler.

Measurement code shared with scripts/bench_node_stack.py lives in scripts/bench_common.py.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_node_stack  # noqa: E402
import rclpy  # noqa: E402
from bench_common import (  # noqa: E402
    PROFILE_PRIORITY,
    Bench,
    CpuWindow,
    Proc,
    camera_proc,
    controller_proc,
    frame_to_torque,
    load_text,
    p50_p99_max,
    print_frame_to_torque,
    realtime_priorities,
    stamp_ns,
)
from bench_node_stack import fit_proc  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from solar_ros.msg import CommandInfo, LatentState  # noqa: E402
from solar_ros.nodes import contract  # noqa: E402
from solar_ros.runtime.fitting import fit_threads  # noqa: E402
from solar_ros.runtime.safety import SAWYER_JOINT_NAMES  # noqa: E402


def bench_stream(rate: float, seconds: float, tmp: Path, extra=None, **params) -> dict:
    """The command stream of controller_node at ``rate`` for ``seconds``. ``extra(bench)``, called once
    the episode runs and before the window, starts what else should run meanwhile and returns those
    processes (their CPU use is reported too; the caller stops them). ``params``: more controller
    parameters."""
    ctrl = controller_proc(tmp, "joints", rate, **params)
    b = Bench("bench_controller")
    try:
        joint_pub = b.node.create_publisher(JointState, contract.JOINT_STATES, contract.RELIABLE_QOS)
        js = JointState(name=list(SAWYER_JOINT_NAMES), position=[0.1] * 7, velocity=[0.0] * 7)

        def feed():
            t = b.node.get_clock().now().nanoseconds
            js.header.stamp.sec, js.header.stamp.nanosec = divmod(t, 1_000_000_000)
            joint_pub.publish(js)

        b.node.create_timer(0.002, feed)
        arrivals, stamps = [], []
        b.poll(Float64MultiArray, contract.COMMANDS, lambda m, received_ns: arrivals.append(received_ns))
        b.poll(CommandInfo, contract.COMMAND_INFO, lambda m, received_ns: stamps.append(stamp_ns(m.header.stamp)))
        b.wait(lambda: joint_pub.get_subscription_count() > 0, 20, "the controller")
        b.spin(0.5)
        b.start_episode(np.zeros((7, 14)), "joints", policy_id="bench-joints")
        b.spin(1.0)
        others = extra(b) if extra is not None else []
        b.spin(0.2)  # what queued up while extra() started its processes is not part of the window
        arrivals.clear()
        stamps.clear()
        cpu = CpuWindow([ctrl, *others])
        b.spin(seconds)
        return {"rate": rate, "commands_per_s": len(stamps) / seconds, "received_per_s": len(arrivals) / seconds,
                "gap": p50_p99_max(np.diff(np.array(stamps)) * 1e-6),
                "arrival_gap": p50_p99_max(np.diff(np.array(arrivals)) * 1e-6), "cpu": cpu.result()}
    finally:
        b.close()
        ctrl.stop()


def bench_latency(seconds: float, tmp: Path, fit: int | None = None, priority: int = 0) -> dict:
    rt = {name: {"realtime_priority": p} for name, p in realtime_priorities(priority).items()}
    procs = [camera_proc(tmp, **rt.get("camera_node", {})),
             Proc([str(Path(__file__).resolve()), "--encoder", "--realtime-priority",
                   str(realtime_priorities(priority).get("encoder_node", 0))], "stand_in_encoder", None, tmp),
             controller_proc(tmp, "latent", **rt.get("controller_node", {}))]
    if fit is not None:
        procs.append(fit_proc(tmp, fit))
    return frame_to_torque(procs, latent_dim=3, model_id="", frame_hz=30.0, seconds=seconds,
                           driver_level=realtime_priorities(priority).get("sim_arm_node", 0))


def run_encoder(priority: int = 0) -> int:
    """Stand-in encoder: /solar/image -> /solar/latent (mean colour), keeping the image stamp."""
    from solar_ros.nodes.common import set_realtime_priority
    from solar_ros.runtime.image import image_to_array

    rclpy.init()
    if priority:
        set_realtime_priority(priority)
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
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--during-fit", action="store_true",
                        help="measure each scenario idle and again with a SOLAR model fit running beside it")
    parser.add_argument("--fit-niceness", type=int, default=10, help="CPU niceness of that fit (the fitting node's)")
    parser.add_argument("--fit-threads", type=int, default=0,
                        help="torch threads of that fit (model_fitting_node's num_threads; default 0: every core)")
    parser.add_argument("--realtime-priority", type=int, default=PROFILE_PRIORITY, metavar="P",
                        help="SCHED_FIFO priority of the controller (camera and encoder P-2; default 80, the "
                             "profiles'); 0: the normal scheduler")
    parser.add_argument("--encoder", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.encoder:
        return run_encoder(args.realtime_priority)
    if args.fit_threads < 0:
        parser.error(f"--fit-threads must be >= 0, got {args.fit_threads}")
    bench_node_stack.FIT_THREADS = args.fit_threads
    print(f"machine: {os.cpu_count()} CPUs, {load_text()} at start; window {args.seconds:g} s per scenario")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print("\ncommand stream (controller_node, active episode, joint state input)")
        if args.during_fit:
            print(f"(fit: a SOLAR model fit beside the controller at niceness {args.fit_niceness} on "
                  f"{fit_threads(args.fit_threads)} torch thread(s), as the fitting node runs it)")
        print(f"{'target':>8} {'load':>5} {'sent/s':>8} {'recv/s':>8} | {'gap p50':>8} {'p99':>7} {'max':>7}"
              f" (ms, controller stamps) | {'arrival p50':>11} {'p99':>7} {'max':>7} (ms) | cpu | load (1 min)")
        loads = [None, args.fit_niceness] if args.during_fit else [None]
        ctrl_params = {"realtime_priority": realtime_priorities(args.realtime_priority)["controller_node"]}
        for rate in args.rates:
            for fit in loads:
                fits: list[Proc] = []

                def extra(b, fit=fit, fits=fits):
                    fits.extend([] if fit is None else [fit_proc(tmp, fit, idle=lambda: b.spin(0.2))])
                    return fits

                try:
                    r = bench_stream(rate, args.seconds, tmp, extra, **ctrl_params)
                finally:
                    for f in fits:
                        f.stop()
                g, a = r["gap"], r["arrival_gap"]
                beside = "" if fit is None else f", fit {100 * r['cpu'].get('model_fit', 0):.0f}%"
                print(f"{rate:>6.0f}Hz {'idle' if fit is None else 'fit':>5} {r['commands_per_s']:>8.1f} "
                      f"{r['received_per_s']:>8.1f} | {g[0]:>8.2f} {g[1]:>7.2f} "
                      f"{g[2]:>7.2f}                     | {a[0]:>11.2f} {a[1]:>7.2f} {a[2]:>7.2f}      | "
                      f"controller {100 * r['cpu']['controller_node']:.0f}%, bench {100 * r['cpu']['bench']:.0f}%"
                      f"{beside} | {os.getloadavg()[0]:.2f}")
        if not args.skip_latency:
            print("\ncamera frame -> torque latency (64x64 rgb8 at 30 Hz: camera_node -> stand-in encoder -> "
                  "controller_node at 500 Hz)")
            for fit in loads:
                label = "stand-in" + ("" if fit is None else f", during a model fit (niceness {fit}, "
                                                   f"{fit_threads(args.fit_threads)} thread(s))")
                print_frame_to_torque(label, bench_latency(args.seconds, tmp, fit, args.realtime_priority))
    print(f"{load_text()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
