#!/usr/bin/env python3
"""Does the inspector disturb the real-time path? The controller's command stream with and without it.

    python scripts/bench_inspector.py [--seconds 10] [--rate 500]

The command stream of scripts/bench_controller.py (controller_node at ``--rate`` with an episode
running on 500 Hz joint states), here with 64x64 rgb8 camera frames at 20 Hz on /camera/image_raw
as well, in three scenarios:

1. no inspector;
2. inspector_node running, no client (it only looks for topics);
3. inspector_node with a client of the Foxglove WebSocket protocol (``solar-ros inspect``, its
   own process) subscribed to every topic it offers: the torque commands, the joint states, the
   controller's CommandInfo, the camera frames, the arm's frames, ...

Printed per scenario: commands/s and inter-command gap p50/p99/max (ms, the controller's own
command stamps), CPU of the controller, the inspector, the client and this script, and the load
average; for scenario 3 also what the client received (its table: messages and rate per topic).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import Proc, load_text  # noqa: E402
from bench_controller import bench_stream  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from solar_ros.nodes import contract  # noqa: E402

SCENARIOS = ("no inspector", "inspector, no client", "inspector + client")


def start_images(b) -> None:
    """64x64 rgb8 frames at 20 Hz on /camera/image_raw, stamped with the system clock."""
    pub = b.node.create_publisher(Image, contract.CAMERA_RAW, contract.SENSOR_QOS)
    msg = Image(height=64, width=64, encoding="rgb8", step=192, data=bytes(range(192)) * 64)

    def publish():
        t = b.node.get_clock().now().nanoseconds
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t, 1_000_000_000)
        pub.publish(msg)

    b.node.create_timer(0.05, publish)


def inspector_url(b, proc: Proc, timeout: float = 30.0) -> str:
    """The server's address from the inspector's log (spinning meanwhile: the joint states keep flowing)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = re.search(r"Foxglove WebSocket server on (ws://[\d.]+:\d+)", proc.log_path.read_text())
        if m:
            return m.group(1)
        b.spin(0.2)
    raise RuntimeError(f"inspector_node did not start:\n{proc.log_path.read_text()[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per scenario")
    parser.add_argument("--rate", type=float, default=500.0, help="controller command rate, Hz")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {load_text()} at start; window {args.seconds:g} s per scenario, "
          f"controller at {args.rate:g} Hz")
    rows, client_table = [], ""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for scenario in SCENARIOS:
            started: list[Proc] = []

            def extra(b, scenario=scenario, started=started):
                start_images(b)
                if scenario != "no inspector":
                    insp = Proc.node("inspector_node", {"port": 0, "discovery_period": 1.0}, tmp)
                    started.append(insp)
                    url = inspector_url(b, insp)
                    b.spin(3.0)  # it finds the topics
                    if scenario == "inspector + client":
                        started.append(Proc(["-m", "solar_ros.cli", "inspect", "--url", url, "--seconds",
                                             f"{args.seconds + 4:g}"], "client", None, tmp))
                b.spin(4.0)  # discovery, the client's subscriptions
                return started

            try:
                r = bench_stream(args.rate, args.seconds, tmp, extra)
            finally:
                for p in reversed(started):
                    if p.name == "client":
                        try:
                            p.p.wait(20)
                        except Exception:  # noqa: BLE001 - stopped below
                            pass
                        client_table = p.log_path.read_text()
                    p.stop()
            rows.append((scenario, r, os.getloadavg()[0]))
    print(f"\n{'scenario':<22} {'sent/s':>7} | {'gap p50':>7} {'p99':>6} {'max':>6} (ms) | "
          f"CPU controller / inspector / client / bench | load (1 min)")
    for scenario, r, load in rows:
        g, cpu = r["gap"], r["cpu"]
        share = " / ".join(f"{100 * cpu[k]:.0f}%" if k in cpu else "-"
                           for k in ("controller_node", "inspector_node", "client", "bench"))
        print(f"{scenario:<22} {r['commands_per_s']:>7.1f} | {g[0]:>7.2f} {g[1]:>6.2f} {g[2]:>6.2f}      | {share} | "
              f"{load:.2f}")
    print("\nwhat the client received (scenario 3):\n" + client_table.rstrip())
    print(f"\n{load_text()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
